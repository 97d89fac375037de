//! The outbox is the queue of mail: this module is its pipeline. Send lanes ([`lane`]) wait
//! for owed mail, claim a batch of it, send each mail ([`send`]) and record what the server
//! took ([`record`]); claims whose daemon died are given back ([`rescue`]). A mail is owed
//! once per outbox key, so whatever repeats upstream, each goes out once (at least once across
//! a crash, with the same Message-ID).

mod lane;
mod rate;
mod record;
mod relay;
mod rescue;
mod send;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tracing::{info, warn};

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::mail::{MailError, Mailer};
use crate::notify::{Renderer, TemplateError};
use crate::store::{Store, StoreError};

pub use lane::{lane_count, spawn_lanes};
pub use rate::RateGate;
pub use relay::{RelayBreaker, RelayState, RelayStatus, spawn_prober};
pub use rescue::spawn_rescuer;
use send::MailEnd;

/// What can stop the pipeline: its parts failing to load, or the store failing under it. A
/// mail's own failure is not one of these: it is recorded with the mail (see [`Delivery`]).
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Calendar(#[from] crate::calendar::CalendarError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Mail(#[from] MailError),
}

/// The pipeline's parts and settings, shared (behind an `Arc`) by the daemon's lanes, jobs
/// and HTTP API.
#[derive(Debug)]
pub struct Deliverer {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub mailer: Mailer,
    pub renderer: Renderer,
    pub clock: SharedClock,
    pub worker_name: String,
    pub calendars: crate::calendar::CalendarRegistry,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Mails being handed to the server at once, across all of the daemon's send lanes
    /// (`worker.concurrency`).
    send_permits: tokio::sync::Semaphore,
    /// Whether the relay is up (see [`relay`]); lanes claim nothing while it is down.
    pub relay: RelayBreaker,
    /// `mail.rate_limit`, across all of the daemon's send lanes.
    pub rate: RateGate,
}

/// What `run --once` delivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    pub sent: u32,
    pub failed: u32,
    pub retry_later: u32,
    pub skipped: u32,
}

/// What became of one delivery job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    RetryScheduled {
        after: Duration,
    },
    Failed {
        reason: String,
    },
    /// No longer worth sending (a reminder past its cutoff, or whose renewal was called off).
    Skipped {
        reason: String,
    },
    /// Sent or not, the claim was lost meanwhile (lease expired); the outcome is recorded as an
    /// attempt only.
    ClaimLost,
    /// Given back unsent and owed again, its attempt uncounted: its batch ran out of time
    /// before a send slot came free, or the relay was down (or said "too many").
    Released,
}

impl Deliverer {
    pub fn build(
        settings: Arc<Settings>,
        store: Store,
        clock: SharedClock,
        worker_name: String,
    ) -> Result<Self, OutboxError> {
        let renderer = Renderer::load(&settings.templates.dir, &settings.marketplace)?;
        let mailer = Mailer::from_settings(&settings.mail)?;
        let calendars = crate::calendar::CalendarRegistry::new(&settings.calendar.custom)?;
        let mail = &settings.mail;
        Ok(Self {
            relay: RelayBreaker::new(mail.breaker.clone(), clock.clone()),
            rate: RateGate::new(mail.rate_limit, mail.rate_burst, mail.rate_slowdown),
            send_permits: tokio::sync::Semaphore::new(settings.worker.concurrency),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            calendars,
            settings,
            store,
            mailer,
            renderer,
            clock,
            worker_name,
        })
    }

    /// Takes up to `n` owed mails that are due (see [`Store::claim_due`]), sends them, at
    /// most `worker.concurrency` at a time across the daemon, and records them in one
    /// transaction. Mail failures are handled here (retry with backoff, or give up); only
    /// store errors are returned. Returns what became of each mail taken, in the order taken;
    /// empty when none was due.
    pub async fn deliver_due(&self, n: u32) -> Result<Vec<(i64, Delivery)>, OutboxError> {
        // The relay is down: claim nothing (the prober will say when it is back).
        if self.relay.is_open() {
            return Ok(Vec::new());
        }
        let started_at = self.clock.now();
        let claimed = std::time::Instant::now();
        let claims = self
            .store
            .claim_due(n, &self.worker_name, started_at)
            .await?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        // A send not begun by then is given back unsent: the batch's last mails, waiting for a
        // free send slot behind a slow server, must not outlive the claim's lease or the job.
        let w = &self.settings.worker;
        let deadline = claimed + w.job_timeout.min(w.sending_lease) / 2;
        // The batch's mails go as one stream, as many at once as the daemon has send slots
        // (the slots are shared by every lane, so that bound holds across the daemon).
        let ends: Vec<_> = futures::stream::iter(claims)
            .map(|c| self.send_one(c, started_at, deadline))
            .buffered(w.concurrency.max(1))
            .collect()
            .await;

        // What became of each mail, in the order taken.
        let mut out: Vec<(i64, Option<Delivery>)> = Vec::with_capacity(ends.len());
        let mut finished = Vec::new();
        let mut finished_how = Vec::new();
        let mut released = Vec::new();
        let mut first_error = None;
        let mut given_back_for_relay = 0;
        for end in ends {
            match end {
                Ok(MailEnd::Finished {
                    attempt,
                    delivery,
                    kind,
                    span,
                }) => {
                    finished_how.push((out.len(), delivery, kind, span));
                    out.push((attempt.outbox_id, None));
                    finished.push(*attempt);
                }
                Ok(MailEnd::Skipped { id, reason }) => {
                    out.push((id, Some(Delivery::Skipped { reason })));
                }
                Ok(MailEnd::Released { id, attempt, relay }) => {
                    released.push((id, attempt));
                    given_back_for_relay += usize::from(relay);
                    out.push((id, Some(Delivery::Released)));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Everything sent is recorded before any error is reported.
        if !finished.is_empty() {
            let kept = self.record_attempts(&finished, claimed).await?;
            for ((slot, delivery, kind, span), kept) in finished_how.into_iter().zip(kept) {
                let _in = span.enter();
                if !kept {
                    warn!(
                        "claim lost while sending (lease expired); outcome kept as an attempt only"
                    );
                    out[slot].1 = Some(Delivery::ClaimLost);
                    continue;
                }
                let how = match &delivery {
                    Delivery::Sent => {
                        info!("mail sent");
                        "sent"
                    }
                    Delivery::RetryScheduled { .. } => "retry",
                    Delivery::Failed { reason } => {
                        info!(%reason, "mail failed for good");
                        "failed"
                    }
                    _ => "failed",
                };
                self.metrics.mail(&kind, how);
                out[slot].1 = Some(delivery);
            }
        }
        if !released.is_empty() {
            let n = self
                .store
                .release_claims(&released, self.clock.now())
                .await?;
            // Mail given back because the relay is down says nothing new: the breaker logs.
            if released.len() > given_back_for_relay {
                warn!(
                    count = n,
                    "mails given back unsent: no send slot came free before the batch's deadline"
                );
            } else {
                tracing::debug!(
                    count = n,
                    "mails given back unsent: the relay is unavailable"
                );
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out
                .into_iter()
                .filter_map(|(id, d)| d.map(|d| (id, d)))
                .collect()),
        }
    }

    /// Delivers every owed mail that is due now, here, without the daemon; mail whose retry
    /// is scheduled later stays owed. For `run --once`.
    pub async fn drain(&self) -> Result<DrainReport, OutboxError> {
        let mut report = DrainReport::default();
        loop {
            let taken = self.deliver_due(self.settings.worker.send_batch).await?;
            if taken.is_empty() {
                return Ok(report);
            }
            for (_, delivery) in taken {
                match delivery {
                    Delivery::Sent => report.sent += 1,
                    Delivery::Failed { .. } => report.failed += 1,
                    Delivery::RetryScheduled { .. } => report.retry_later += 1,
                    Delivery::Skipped { .. } => report.skipped += 1,
                    Delivery::ClaimLost | Delivery::Released => {}
                }
            }
        }
    }
}
