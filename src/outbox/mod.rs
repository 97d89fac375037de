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
pub use rescue::{silence_limit, spawn_rescuer};
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
    /// A record shares its commit with others, and so its failure.
    #[error(transparent)]
    Record(#[from] Arc<StoreError>),
    #[error("the recorder stopped before committing a record")]
    RecorderStopped,
}

/// How one mail of a batch ended, its record handed over.
enum Ended {
    Finished {
        id: i64,
        /// Whether its claim was still held when its record committed.
        kept: Result<bool, OutboxError>,
        delivery: Delivery,
        kind: String,
        span: tracing::Span,
    },
    Skipped {
        id: i64,
        reason: String,
    },
    Released {
        id: i64,
        attempt: u32,
        relay: bool,
    },
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
    /// Conversations with the server at once, across all of the daemon's send lanes
    /// (`worker.concurrency`).
    conversations: tokio::sync::Semaphore,
    /// Mails the server may have taken whose record has not committed, across the daemon
    /// (`worker.concurrency`): a slot is taken before a mail's final dot and given back when
    /// its record commits, so a crash sends again at most that many.
    send_permits: tokio::sync::Semaphore,
    /// The daemon's one recorder, started on first use (on the runtime that sends).
    recorder: std::sync::OnceLock<record::Recorder>,
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
            conversations: tokio::sync::Semaphore::new(settings.worker.concurrency),
            send_permits: tokio::sync::Semaphore::new(settings.worker.concurrency),
            recorder: std::sync::OnceLock::new(),
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
    /// most `worker.concurrency` at a time across the daemon, and records each as soon as the
    /// server has answered (with whatever other records are waiting, see [`record`]). Mail failures are handled here (retry with backoff, or give up); only
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
        // (the slots are shared by every lane, so that bound holds across the daemon). Each
        // mail's outcome goes to the recorder the moment the server has answered, so its
        // record never waits for the rest of the batch; its slot comes free once the record
        // has committed (see [`MailEnd::Finished`]).
        let ends: Vec<_> = futures::stream::iter(claims)
            .map(|c| async move {
                Ok::<_, OutboxError>(match self.send_one(c, started_at, deadline).await? {
                    MailEnd::Finished {
                        slot,
                        attempt,
                        delivery,
                        kind,
                        span,
                    } => {
                        let id = attempt.outbox_id;
                        let answered = std::time::Instant::now();
                        let kept = self.record(*attempt, claimed).committed().await;
                        drop(slot);
                        self.metrics
                            .record_wait_seconds
                            .observe(answered.elapsed().as_secs_f64());
                        Ended::Finished {
                            id,
                            kept,
                            delivery,
                            kind,
                            span,
                        }
                    }
                    MailEnd::Skipped { id, reason } => Ended::Skipped { id, reason },
                    MailEnd::Released { id, attempt, relay } => {
                        Ended::Released { id, attempt, relay }
                    }
                })
            })
            .buffered(w.concurrency.max(1))
            .collect()
            .await;

        // What became of each mail, in the order taken.
        let mut out: Vec<(i64, Delivery)> = Vec::with_capacity(ends.len());
        let mut released = Vec::new();
        let mut first_error = None;
        let mut given_back_for_relay = 0;
        for end in ends {
            match end {
                Ok(Ended::Finished {
                    id,
                    kept,
                    delivery,
                    kind,
                    span,
                }) => {
                    let kept = match kept {
                        Ok(kept) => kept,
                        Err(e) => {
                            first_error.get_or_insert(e);
                            continue;
                        }
                    };
                    let _in = span.enter();
                    if !kept {
                        warn!(
                            "claim lost while sending (lease expired); outcome kept as an attempt only"
                        );
                        out.push((id, Delivery::ClaimLost));
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
                    out.push((id, delivery));
                }
                Ok(Ended::Skipped { id, reason }) => {
                    out.push((id, Delivery::Skipped { reason }));
                }
                Ok(Ended::Released { id, attempt, relay }) => {
                    released.push((id, attempt));
                    given_back_for_relay += usize::from(relay);
                    out.push((id, Delivery::Released));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
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
            None => Ok(out),
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
