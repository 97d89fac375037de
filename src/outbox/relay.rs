//! The relay breaker: a relay that is down is one fault of the relay, not of each mail owed.
//!
//! Faults of the relay (see [`crate::mail::classify`]: no connection, TLS, a timeout, 421)
//! on `mail.breaker.failures` sends in a row, with no answer from the relay between them, open
//! the breaker: the send lanes stop claiming, mails in hand are given back unsent (their
//! attempt uncounted), and one probe connection is tried after `probe_initial`, then at
//! doubling intervals up to `probe_max`. A probe that is answered lets the lanes send again on
//! trial: the first answer about a message (or a quiet spell with no fault) closes the
//! breaker; more faults in a row reopen it without a new "open" line, the trial counting as a
//! failed probe. So an outage of hours logs a handful of lines (open, probes failed 1, 2, 4,
//! 8… times, closed) and no mail spends an attempt on it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Deliverer;
use crate::clock::SharedClock;
use crate::config::BreakerSettings;
use crate::retry::Backoff;
use crate::store::RelayRecord;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayState {
    /// Mail goes.
    Up,
    /// The relay is down: no lane claims, a probe is tried now and then.
    Down,
    /// A probe was answered: mail goes again, and the next answer (or fault) decides.
    Trial,
}

impl RelayState {
    fn of(s: &str) -> Self {
        match s {
            "down" => Self::Down,
            "trial" => Self::Trial,
            _ => Self::Up,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Trial => "trial",
        }
    }
}

/// The breaker's state as operators see it (`/readyz`, `/metrics`, the CLI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayStatus {
    pub state: RelayState,
    /// When the relay was found down (the breaker opened), while it is not up.
    pub down_since: Option<DateTime<Utc>>,
    /// Whole seconds since then (0 while up).
    pub down_seconds: i64,
    /// Probes (and trials) that failed since it opened.
    pub probes_failed: u32,
    /// Relay faults in a row, with no answer from the relay between them.
    pub faults_in_row: u32,
    /// The last fault seen (an SMTP reply or a connection error; no secret is part of either).
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
struct Outage {
    since: DateTime<Utc>,
    probes_failed: u32,
    trial: bool,
}

#[derive(Debug, Clone, Default)]
struct Inner {
    faults_in_row: u32,
    outage: Option<Outage>,
    last_error: Option<String>,
}

impl Inner {
    fn state(&self) -> RelayState {
        match &self.outage {
            None => RelayState::Up,
            Some(o) if o.trial => RelayState::Trial,
            Some(_) => RelayState::Down,
        }
    }
}

/// One per daemon, shared by its send lanes and its prober.
#[derive(Debug)]
pub struct RelayBreaker {
    settings: BreakerSettings,
    clock: SharedClock,
    inner: watch::Sender<Inner>,
}

/// Whether a count deserves a log line: 1, 2, 4, 8… (a failing probe every few minutes for
/// hours is a few lines, not one per probe).
fn worth_logging(n: u32) -> bool {
    n.is_power_of_two()
}

impl RelayBreaker {
    pub fn new(settings: BreakerSettings, clock: SharedClock) -> Self {
        Self {
            settings,
            clock,
            inner: watch::Sender::new(Inner::default()),
        }
    }

    /// Whether lanes should hold back: the relay is down and not on trial.
    pub fn is_open(&self) -> bool {
        self.inner.borrow().state() == RelayState::Down
    }

    pub fn status(&self) -> RelayStatus {
        let now = self.clock.now();
        let inner = self.inner.borrow();
        let down_since = inner.outage.as_ref().map(|o| o.since);
        RelayStatus {
            state: inner.state(),
            down_since,
            down_seconds: down_since.map_or(0, |s| (now - s).num_seconds().max(0)),
            probes_failed: inner.outage.as_ref().map_or(0, |o| o.probes_failed),
            faults_in_row: inner.faults_in_row,
            last_error: inner.last_error.clone(),
        }
    }

    /// The relay answered (a mail accepted, or an answer about the message itself): it is up.
    pub fn on_answer(&self) {
        {
            let inner = self.inner.borrow();
            if inner.faults_in_row == 0 && inner.outage.is_none() {
                return;
            }
        }
        let now = self.clock.now();
        self.inner.send_if_modified(|inner| {
            if inner.faults_in_row == 0 && inner.outage.is_none() {
                return false;
            }
            inner.faults_in_row = 0;
            if let Some(o) = inner.outage.take() {
                info!(
                    down_for = %humantime::format_duration(down_for(o.since, now)),
                    probes_failed = o.probes_failed,
                    "relay back: breaker closed, mail goes again"
                );
                inner.last_error = None;
                return true;
            }
            false
        });
    }

    /// A send failed because of the relay. Returns whether the breaker is (now) open.
    pub fn on_fault(&self, detail: &str) -> bool {
        let now = self.clock.now();
        let failures = self.settings.failures;
        let mut open = false;
        self.inner.send_if_modified(|inner| {
            inner.faults_in_row = inner.faults_in_row.saturating_add(1);
            inner.last_error = Some(detail.to_owned());
            let reached = inner.faults_in_row >= failures;
            match &mut inner.outage {
                None if reached => {
                    warn!(
                        faults = inner.faults_in_row,
                        error = detail,
                        "relay down: breaker open; no mail is claimed until a probe gets through \
                         (mail in hand goes back unsent, no attempt counted)"
                    );
                    inner.outage = Some(Outage {
                        since: now,
                        probes_failed: 0,
                        trial: false,
                    });
                    open = true;
                    true
                }
                Some(o) if o.trial && reached => {
                    o.trial = false;
                    o.probes_failed += 1;
                    if worth_logging(o.probes_failed) {
                        warn!(
                            probes_failed = o.probes_failed,
                            down_for = %humantime::format_duration(down_for(o.since, now)),
                            error = detail,
                            "relay still down: a probe got through but sending failed again"
                        );
                    }
                    open = true;
                    true
                }
                Some(o) => {
                    open = !o.trial;
                    false
                }
                None => false,
            }
        });
        open
    }

    /// Waits until lanes may claim (the breaker is not open); false if `stop` came first.
    pub async fn wait_closed(&self, stop: &CancellationToken) -> bool {
        let mut rx = self.inner.subscribe();
        tokio::select! {
            r = rx.wait_for(|i| i.state() != RelayState::Down) => r.is_ok(),
            _ = stop.cancelled() => false,
        }
    }

    /// The wait before the next probe of an open breaker.
    fn probe_delay(&self, probes_failed: u32) -> Duration {
        Backoff::new(self.settings.probe_initial, self.settings.probe_max).delay(probes_failed + 1)
    }

    fn probe_failed(&self, error: &str) {
        let now = self.clock.now();
        self.inner.send_modify(|inner| {
            inner.last_error = Some(error.to_owned());
            if let Some(o) = &mut inner.outage {
                o.probes_failed += 1;
                if worth_logging(o.probes_failed) {
                    warn!(
                        probes_failed = o.probes_failed,
                        down_for = %humantime::format_duration(down_for(o.since, now)),
                        error,
                        "relay still down"
                    );
                }
            }
        });
    }

    fn probe_answered(&self) {
        self.inner.send_modify(|inner| {
            inner.faults_in_row = 0;
            if let Some(o) = &mut inner.outage {
                o.trial = true;
            }
        });
        debug!("probe answered: sending again on trial");
    }

    /// Ends a trial that met no fault: the relay answered its probe and nothing since failed.
    fn end_quiet_trial(&self) {
        let now = self.clock.now();
        self.inner.send_if_modified(|inner| match &inner.outage {
            Some(o) if o.trial && inner.faults_in_row == 0 => {
                info!(
                    down_for = %humantime::format_duration(down_for(o.since, now)),
                    probes_failed = o.probes_failed,
                    "relay back: breaker closed"
                );
                inner.outage = None;
                inner.last_error = None;
                true
            }
            _ => false,
        });
    }
}

fn down_for(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    // Whole seconds: the log says how long, not to the nanosecond.
    Duration::from_secs((now - since).num_seconds().max(0).unsigned_abs())
}

/// Starts the daemon's prober: while the breaker is open, one probe connection at a time, on a
/// growing interval; and the breaker's row in the store, for other processes (`jobs`, `check`)
/// to see while the relay is not up. Both stop once `stop` is cancelled.
pub fn spawn_prober(deliverer: &Arc<Deliverer>, stop: CancellationToken) -> JoinHandle<()> {
    let d = deliverer.clone();
    tokio::spawn(
        async move {
            tokio::join!(probe(&d, &stop), keep_record(&d, &stop));
        }
        .instrument(info_span!("relay prober")),
    )
}

async fn probe(d: &Deliverer, stop: &CancellationToken) {
    let breaker = &d.relay;
    let mut rx = breaker.inner.subscribe();
    loop {
        let probes_failed = tokio::select! {
            r = rx.wait_for(|i| i.state() == RelayState::Down) => match r {
                Ok(i) => i.outage.as_ref().map_or(0, |o| o.probes_failed),
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        let wait = breaker.probe_delay(probes_failed);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        match d.mailer.check(d.settings.mail.smtp.timeout).await {
            Ok(()) => {
                breaker.probe_answered();
                // A trial with no fault for the first probe interval ends the outage, even
                // when no mail is owed to prove it.
                tokio::select! {
                    _ = tokio::time::sleep(breaker.settings.probe_initial) => {}
                    _ = stop.cancelled() => return,
                }
                breaker.end_quiet_trial();
            }
            Err(e) => {
                debug!(error = %e, "probe failed");
                breaker.probe_failed(&e);
            }
        }
    }
}

/// Keeps the breaker's row in step with it: written when it opens and at each failed probe,
/// removed when the relay is back and when the daemon stops. A store error is retried at the
/// next change (the row only informs).
async fn keep_record(d: &Deliverer, stop: &CancellationToken) {
    let mut rx = d.relay.inner.subscribe();
    let mut written: Option<(RelayState, u32)> = None;
    loop {
        let record = {
            let inner = rx.borrow_and_update();
            inner.outage.as_ref().map(|o| RelayRecord {
                daemon: d.worker_name.clone(),
                relay: d.mailer.describe().to_owned(),
                state: inner.state().as_str().to_owned(),
                down_since: o.since,
                probes_failed: o.probes_failed,
                last_error: inner.last_error.clone(),
                updated_at: d.clock.now(),
            })
        };
        let want = record
            .as_ref()
            .map(|r| (RelayState::of(&r.state), r.probes_failed));
        if want != written {
            let saved = match &record {
                Some(r) => d.store.record_relay_breaker(r).await,
                None => d.store.forget_relay_breaker(&d.worker_name).await,
            };
            match saved {
                Ok(()) => written = want,
                Err(e) => debug!(error = %e, "the relay breaker's row was not written"),
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = stop.cancelled() => break,
        }
    }
    if written.is_some()
        && let Err(e) = d.store.forget_relay_breaker(&d.worker_name).await
    {
        debug!(error = %e, "the relay breaker's row was left");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn breaker(clock: &ManualClock) -> RelayBreaker {
        RelayBreaker::new(
            BreakerSettings {
                failures: 3,
                probe_initial: Duration::from_secs(5),
                probe_max: Duration::from_secs(300),
            },
            Arc::new(clock.clone()),
        )
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn faults_in_a_row_open_it_and_an_answer_between_them_resets_the_count() {
        let clock = ManualClock::new(at("2026-12-07T10:00:00Z"));
        let b = breaker(&clock);
        assert!(!b.on_fault("refused") && !b.on_fault("refused"));
        b.on_answer();
        assert_eq!(b.status().faults_in_row, 0);
        assert!(!b.on_fault("refused") && !b.on_fault("refused"));
        assert!(b.on_fault("refused"));
        assert!(b.is_open());
        clock.advance(chrono::Duration::hours(6));
        let s = b.status();
        assert_eq!(
            (s.state, s.down_since, s.down_seconds),
            (RelayState::Down, Some(at("2026-12-07T10:00:00Z")), 6 * 3600)
        );
        assert_eq!(s.last_error.as_deref(), Some("refused"));
    }

    #[test]
    fn a_trial_closes_on_an_answer_and_reopens_on_faults_counting_a_failed_probe() {
        let clock = ManualClock::new(at("2026-12-07T10:00:00Z"));
        let b = breaker(&clock);
        for _ in 0..3 {
            b.on_fault("421 closing");
        }
        b.probe_answered();
        assert_eq!(b.status().state, RelayState::Trial);
        assert!(!b.is_open());
        for _ in 0..3 {
            b.on_fault("421 closing");
        }
        let s = b.status();
        assert_eq!((s.state, s.probes_failed), (RelayState::Down, 1));
        b.probe_failed("refused");
        assert_eq!(b.status().probes_failed, 2);
        b.probe_answered();
        b.on_answer();
        let s = b.status();
        assert_eq!(
            (s.state, s.down_since, s.probes_failed),
            (RelayState::Up, None, 0)
        );
        // A quiet trial ends the outage too.
        for _ in 0..3 {
            b.on_fault("refused");
        }
        b.probe_answered();
        b.end_quiet_trial();
        assert_eq!(b.status().state, RelayState::Up);
    }

    #[test]
    fn probes_wait_longer_each_time_up_to_the_cap_and_log_on_powers_of_two() {
        let clock = ManualClock::new(at("2026-12-07T10:00:00Z"));
        let b = breaker(&clock);
        let secs: Vec<u64> = (0..9).map(|n| b.probe_delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // A six-hour outage at these settings: how many probes, how many lines.
        let (mut t, mut n) = (0u64, 0u32);
        while t < 6 * 3600 {
            t += b.probe_delay(n).as_secs();
            n += 1;
        }
        let lines = (1..=n).filter(|&k| worth_logging(k)).count();
        assert!(n > 60 && lines <= 8, "{n} probes, {lines} lines");
    }
}
