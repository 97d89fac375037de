//! Crash recovery: mail claimed by a daemon that died goes back to owed. Each daemon keeps a
//! heartbeat row (beaten every `worker.heartbeat_interval`); a daemon silent for
//! `missed_heartbeats x heartbeat_interval` is taken for dead and its claims are given back
//! by whichever daemon notices first, and a daemon restarted on the same host gives back its
//! predecessor's claims at once when it can tell that process is gone. The sending lease
//! (`worker.sending_lease`) stays as the last guard, for claims whose claimant has no row
//! (`run --once`, a daemon whose row was never written).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Deliverer, OutboxError};
use crate::config::WorkerSettings;
use crate::store::DaemonRow;

/// How long a daemon may go without a beat before it is taken for dead.
pub fn silence_limit(w: &WorkerSettings) -> Duration {
    w.heartbeat_interval
        .saturating_mul(u32::try_from(w.missed_heartbeats).unwrap_or(u32::MAX))
}

/// Of the daemons `rows`, those silent for longer than `limit` at `now` (never `me`), and the
/// instant the next of the others will have been silent that long, if one is left.
pub fn silent_daemons<'a>(
    rows: &'a [DaemonRow],
    me: &str,
    now: DateTime<Utc>,
    limit: Duration,
) -> (Vec<&'a DaemonRow>, Option<DateTime<Utc>>) {
    let limit = chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX);
    let mut silent = Vec::new();
    let mut next = None::<DateTime<Utc>>;
    for row in rows.iter().filter(|r| r.name != me) {
        let dead_at = row.last_beat_at.checked_add_signed(limit);
        match dead_at {
            Some(at) if at >= now => next = Some(next.map_or(at, |n| n.min(at))),
            None => {}
            Some(_) => silent.push(row),
        }
    }
    (silent, next)
}

/// Whether `row` stands for a predecessor of daemon `me` that is gone: a daemon of the same
/// name on the same host (instance names are `<name>-<pid>`) whose process is no longer
/// alive, or a row under `me`'s own instance name (same host, same pid: that process is
/// this one now). `alive` says whether a process id of this host is alive (`None`: cannot
/// tell, and then only the heartbeat decides).
pub fn is_gone_predecessor(
    row: &DaemonRow,
    me: &DaemonRow,
    alive: impl Fn(u32) -> Option<bool>,
) -> bool {
    if row.host != me.host {
        return false;
    }
    if row.name == me.name {
        return true;
    }
    let Some(base) = me.name.strip_suffix(&format!("-{}", me.pid)) else {
        return false;
    };
    row.name == format!("{base}-{}", row.pid) && row.pid != me.pid && alive(row.pid) == Some(false)
}

/// Whether process `pid` of this host is alive, where `/proc` tells (Linux); `None`
/// elsewhere. A process id reused by another program reads as alive: the heartbeat then
/// decides, only later.
fn pid_alive(pid: u32) -> Option<bool> {
    let proc = std::path::Path::new("/proc");
    proc.join("self")
        .exists()
        .then(|| proc.join(pid.to_string()).exists())
}

/// Beats this daemon's row every `worker.heartbeat_interval`, gives back the claims of
/// daemons that stopped beating (checked at each beat and when the next of them would run
/// out) and expired claims every `worker.redrive_interval`, until `stop` is cancelled.
pub fn spawn_rescuer(
    deliverer: &Arc<Deliverer>,
    me: DaemonRow,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let deliverer = deliverer.clone();
    let w = &deliverer.settings.worker;
    let (beat_every, redrive_every) = (w.heartbeat_interval, w.redrive_interval);
    tokio::spawn(async move {
        let mut me = me;
        let mut beat = tokio::time::interval(beat_every);
        let mut redrive = tokio::time::interval(redrive_every);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        redrive.tick().await;
        // When the next daemon we know of would run out of beats (none: at the next beat).
        let mut next_check: Option<DateTime<Utc>> = None;
        loop {
            let until_check = next_check
                .map(|at| (at - deliverer.clock.now()).to_std().unwrap_or_default())
                .unwrap_or(Duration::MAX)
                // A millisecond past the limit: the rule is "older than".
                .saturating_add(Duration::from_millis(1))
                .min(beat_every);
            tokio::select! {
                _ = beat.tick() => {
                    me.last_beat_at = deliverer.clock.now();
                    if let Err(e) = deliverer.store.beat(&me).await {
                        warn!(error = %e, "heartbeat failed; will retry");
                    }
                    next_check = deliverer.rescue_silent().await;
                }
                _ = tokio::time::sleep(until_check), if next_check.is_some() => {
                    next_check = deliverer.rescue_silent().await;
                }
                _ = redrive.tick() => {
                    if let Err(e) = deliverer.redrive().await {
                        warn!(error = %e, "checking claims failed; will retry");
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
    })
}

impl Deliverer {
    /// This daemon's heartbeat row as of `now`.
    pub fn identity(&self, now: DateTime<Utc>) -> DaemonRow {
        DaemonRow {
            name: self.worker_name.clone(),
            host: crate::config::host_name(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: now,
            last_beat_at: now,
        }
    }

    /// Registers this daemon's heartbeat row, first giving back the claims of predecessors
    /// it can tell are gone (see [`is_gone_predecessor`]). Returns the row, to beat.
    pub async fn register(&self) -> Result<DaemonRow, OutboxError> {
        let me = self.identity(self.clock.now());
        for row in self.store.daemons().await? {
            if !is_gone_predecessor(&row, &me, pid_alive) {
                continue;
            }
            let why = format!(
                "claimed by daemon {:?} (pid {}), which is gone; a successor took over",
                row.name, row.pid
            );
            if let Some(n) = self
                .store
                .bury_daemon(&row.name, None, me.started_at, &why)
                .await?
            {
                info!(daemon = %row.name, pid = row.pid, mails = n, "predecessor gone; its claimed mail is owed again");
            }
        }
        self.store.beat(&me).await?;
        Ok(me)
    }

    /// Gives back the claims of daemons silent for longer than
    /// `missed_heartbeats x heartbeat_interval` (see [`silent_daemons`]). Returns when the next
    /// of the others would run out; `None` when none is left, or when the store failed (the
    /// next beat looks again).
    pub async fn rescue_silent(&self) -> Option<DateTime<Utc>> {
        let limit = silence_limit(&self.settings.worker);
        let result = async {
            let rows = self.store.daemons().await?;
            let now = self.clock.now();
            let (silent, next) = silent_daemons(&rows, &self.worker_name, now, limit);
            for row in silent {
                let why = format!(
                    "claimed by daemon {:?}, silent since {}; presumed dead",
                    row.name, row.last_beat_at
                );
                let cutoff = now - chrono::Duration::from_std(limit).unwrap_or_default();
                if let Some(n) = self
                    .store
                    .bury_daemon(&row.name, Some(cutoff), now, &why)
                    .await?
                {
                    warn!(daemon = %row.name, host = %row.host, last_beat_at = %row.last_beat_at, mails = n,
                        "daemon stopped beating; its claimed mail is owed again");
                }
            }
            Ok::<_, OutboxError>(next)
        }
        .await;
        result.unwrap_or_else(|e| {
            warn!(error = %e, "checking heartbeats failed; will retry");
            None
        })
    }

    /// Crash recovery, the last guard: mails claimed longer than `worker.sending_lease` ago are
    /// owed again (see [`Store::expire_claims`]). Returns how many.
    pub async fn redrive(&self) -> Result<u64, OutboxError> {
        let expired = self
            .store
            .expire_claims(self.clock.now(), self.settings.worker.sending_lease)
            .await?;
        if expired > 0 {
            warn!(count = expired, "claims expired; mail will be sent again");
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn row(name: &str, host: &str, pid: u32, beat: &str) -> DaemonRow {
        DaemonRow {
            name: name.into(),
            host: host.into(),
            pid,
            version: "0".into(),
            started_at: at("2026-12-01T00:00:00Z"),
            last_beat_at: at(beat),
        }
    }

    #[test]
    fn a_daemon_is_silent_only_once_its_beat_is_older_than_the_limit() {
        let rows = [
            row("a-1", "h", 1, "2026-12-07T10:00:00Z"),
            row("b-2", "h", 2, "2026-12-07T10:00:30Z"),
            row("me-3", "h", 3, "2026-12-07T09:00:00Z"),
        ];
        let limit = Duration::from_secs(60);
        // Exactly 60 s after a's beat: not yet.
        let (silent, next) = silent_daemons(&rows, "me-3", at("2026-12-07T10:01:00Z"), limit);
        assert!(silent.is_empty());
        assert_eq!(next, Some(at("2026-12-07T10:01:00Z")));
        // A millisecond later a is silent, b runs out 30 s later; never oneself.
        let (silent, next) = silent_daemons(&rows, "me-3", at("2026-12-07T10:01:00.001Z"), limit);
        assert_eq!(
            silent.iter().map(|r| &r.name[..]).collect::<Vec<_>>(),
            ["a-1"]
        );
        assert_eq!(next, Some(at("2026-12-07T10:01:30Z")));
    }

    #[test]
    fn the_limit_is_missed_heartbeats_times_the_interval() {
        let mut s = crate::config::Settings::from_toml_overlay("")
            .unwrap()
            .worker;
        assert_eq!(silence_limit(&s), Duration::from_secs(60));
        s.heartbeat_interval = Duration::from_secs(2);
        s.missed_heartbeats = 3;
        assert_eq!(silence_limit(&s), Duration::from_secs(6));
    }

    #[test]
    fn a_predecessor_is_gone_only_on_this_host_under_this_name_with_its_process_gone() {
        let me = row("mail-20", "h1", 20, "2026-12-07T10:00:00Z");
        let dead = |_| Some(false);
        let alive = |_| Some(true);
        let unknown = |_| None;
        let old = row("mail-10", "h1", 10, "2026-12-07T09:59:00Z");
        assert!(is_gone_predecessor(&old, &me, dead));
        assert!(!is_gone_predecessor(&old, &me, alive), "its process lives");
        assert!(!is_gone_predecessor(&old, &me, unknown), "cannot tell");
        let elsewhere = row("mail-10", "h2", 10, "2026-12-07T09:59:00Z");
        assert!(!is_gone_predecessor(&elsewhere, &me, dead), "another host");
        let other_name = row("bulk-10", "h1", 10, "2026-12-07T09:59:00Z");
        assert!(
            !is_gone_predecessor(&other_name, &me, dead),
            "another daemon"
        );
        // Our own name on our host: our pid, so that process is this one now.
        let same = row("mail-20", "h1", 20, "2026-12-07T09:59:00Z");
        assert!(is_gone_predecessor(&same, &me, alive));
    }
}
