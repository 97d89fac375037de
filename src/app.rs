//! The delivery engine: claims owed mail that is due, renders and sends it, and records each
//! mail as the server takes it. The use cases it runs (the poll) live in [`crate::service`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::Address;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::SubscriptionId;
use crate::jobs::backoff;
use crate::mail::{Mailer, OutgoingMail, SendError};
use crate::model::SubscriptionContext;
use crate::notify::{MailContext, NotificationKind, Renderer, message_id};
use crate::service::ServiceError as AppError;
use crate::service::poll::{PollReport, poll};
use crate::store::{AttemptOutcome, FinishedAttempt, Store, StoreError};

enum Prepared {
    Send(Box<lettre::Message>),
    Stale(String),
}

/// Why a reminder recorded earlier should no longer go out, if it should not: mail about a
/// renewal that can no longer be stopped, or that will not happen, is worse than none.
fn stale_reminder(
    payload: &serde_json::Value,
    ctx: &SubscriptionContext,
    now: DateTime<Utc>,
) -> Option<String> {
    let s = &ctx.subscription;
    if !s.auto_renew || s.renewal.disable_effective_term_end.is_some() {
        return Some("auto-renew was turned off before it went out".into());
    }
    let term_end = payload["term_end"].as_str().unwrap_or_default();
    if term_end != s.term_end.to_string() {
        return Some(format!(
            "it was for the term ending {term_end}, which is over"
        ));
    }
    match payload["cutoff_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    {
        Some(cutoff) if now >= cutoff => {
            Some(format!("the cutoff {cutoff} passed before it went out"))
        }
        Some(_) => None,
        None => Some("it carries no cutoff".into()),
    }
}

/// Everything a running worker needs; cheap to clone (one shared [`Services`]), so that each
/// mail of a batch can go out as a task of its own.
#[derive(Debug, Clone)]
pub struct Deliverer(Arc<Services>);

impl std::ops::Deref for Deliverer {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What a [`Deliverer`] shares between its clones.
#[derive(Debug)]
pub struct Services {
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
    /// Given back unsent and owed again: its batch ran out of time before a send slot came free.
    Released,
}

/// How one mail of a batch ended before the batch's record.
enum MailEnd {
    /// Handed to the server or failed; to be recorded.
    Finished {
        attempt: Box<FinishedAttempt>,
        delivery: Delivery,
        kind: String,
        span: tracing::Span,
    },
    /// No longer worth sending; recorded as skipped already.
    Skipped { id: i64, reason: String },
    /// Not sent: to be given back.
    Released { id: i64, attempt: u32 },
}

impl Deliverer {
    pub fn build(
        settings: Arc<Settings>,
        store: Store,
        clock: SharedClock,
        worker_name: String,
    ) -> Result<Self, AppError> {
        let renderer = Renderer::load(&settings.templates.dir, &settings.marketplace)?;
        let mailer = Mailer::from_settings(&settings.mail)?;
        let calendars = crate::calendar::CalendarRegistry::new(&settings.calendar.custom)?;
        Ok(Self(Arc::new(Services {
            send_permits: tokio::sync::Semaphore::new(settings.worker.concurrency),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            calendars,
            settings,
            store,
            mailer,
            renderer,
            clock,
            worker_name,
        })))
    }

    /// Renders a mail of `kind` for a subscription, as it would be sent.
    pub fn compose(
        &self,
        kind: NotificationKind,
        ctx: &SubscriptionContext,
        details: serde_json::Value,
        recipients: &[String],
        key: &str,
    ) -> Result<(OutgoingMail, lettre::Message), String> {
        let parse = |r: &str| {
            r.parse::<Address>()
                .map_err(|e| format!("recipient {r:?} is not an address: {e}"))
        };
        let to = recipients
            .iter()
            .map(|r| parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        let cc = details["cc"]
            .as_array()
            .map(|list| list.iter().filter_map(|v| v.as_str()).map(parse).collect())
            .transpose()?
            .unwrap_or_default();
        let mail_ctx = MailContext::new(kind, ctx, &self.settings.marketplace, details);
        let rendered = self
            .renderer
            .render(kind, &mail_ctx)
            .map_err(|e| e.to_string())?;
        let mail = OutgoingMail {
            to,
            cc,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            message_id: message_id(key, &self.settings.mail.message_id_domain),
        };
        let message = self
            .mailer
            .build_message(&mail)
            .map_err(|e| e.to_string())?;
        Ok((mail, message))
    }

    /// Records finished attempts in one transaction. The mails may already be with the
    /// server, and only this record keeps them from being sent again once the claim's lease
    /// runs out: so store errors (SQLite still busy after its timeout, a lost connection) are
    /// retried until the lease is nearly over.
    async fn record_attempts(
        &self,
        attempts: &[FinishedAttempt],
        claimed: std::time::Instant,
    ) -> Result<Vec<bool>, StoreError> {
        let lease = self.settings.worker.sending_lease;
        let give_up = claimed + lease.saturating_sub(lease / 10);
        let mut wait = std::time::Duration::from_millis(50);
        loop {
            match self.store.finish_attempts(attempts).await {
                Ok(kept) => return Ok(kept),
                Err(e) if std::time::Instant::now() + wait < give_up => {
                    warn!(error = %e, retry_in = ?wait, "recording the attempts failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes up to `n` owed mails that are due (see [`Store::claim_due`]), sends them, at
    /// most `worker.concurrency` at a time across the daemon, and records them in one
    /// transaction. Mail failures are handled here (retry with backoff, or give up); only
    /// store errors are returned. Returns what became of each mail taken, in the order taken;
    /// empty when none was due.
    pub async fn deliver_due(&self, n: u32) -> Result<Vec<(i64, Delivery)>, AppError> {
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
        // Each mail is a task of its own: with `worker.threads` above one, rendering and the
        // SMTP conversations then spread over the runtime's threads. (With two threads this was
        // also faster at 1 at once than the batch's mails as futures of this one task.)
        let mut after = None;
        let ends = futures::future::join_all(claims.into_iter().map(|c| {
            let this = self.clone();
            let (then, next) = tokio::sync::oneshot::channel();
            let after = after.replace(next);
            tokio::spawn(
                async move { this.send_one(c, started_at, deadline, after, then).await }
                    .in_current_span(),
            )
        }))
        .await
        .into_iter()
        .map(|joined| match joined {
            Ok(end) => end,
            // Never aborted: only a panic ends one early, and it is this batch's panic.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        });

        // What became of each mail, in the order taken.
        let mut out: Vec<(i64, Option<Delivery>)> = Vec::with_capacity(ends.len());
        let mut finished = Vec::new();
        let mut finished_how = Vec::new();
        let mut released = Vec::new();
        let mut first_error = None;
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
                Ok(MailEnd::Released { id, attempt }) => {
                    released.push((id, attempt));
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
            warn!(
                count = n,
                "mails given back unsent: no send slot came free before the batch's deadline"
            );
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out
                .into_iter()
                .filter_map(|(id, d)| d.map(|d| (id, d)))
                .collect()),
        }
    }

    /// One claimed mail's way to the server: rendered, sent once a send slot is free (or
    /// given back if the batch's deadline passed meanwhile), its outcome decided.
    ///
    /// The batch's mails take send slots in the order they were taken: each waits for
    /// `after` (the mail before it has its slot, or needs none) and then lets `then` go. A
    /// mail is rendered only once it is its turn, while the one before it is with the server:
    /// rendered all at once, a batch's messages waited for their slots in memory, and the
    /// cores spent more per mail (measured: 0.40-0.54 of the raw send rate on PostgreSQL at 4
    /// and 16 at once, 0.46-0.52 rendered in turn; less CPU per mail on both stores).
    async fn send_one(
        &self,
        claim: crate::store::Claimed,
        started_at: DateTime<Utc>,
        deadline: std::time::Instant,
        after: Option<tokio::sync::oneshot::Receiver<()>>,
        then: tokio::sync::oneshot::Sender<()>,
    ) -> Result<MailEnd, AppError> {
        let crate::store::Claimed { mut row, context } = claim;
        let outbox_id = row.id;
        let span = info_span!("deliver", outbox_id, key = %row.key, subscription = %row.subscription_id, attempt = row.attempts);
        async {
            if let Some(after) = after {
                // Sent or dropped: either way it is this mail's turn.
                let _ = after.await;
            }
            // (`then` goes when this mail has its slot, or at once if it needs none.)
            // The mail's facts go into its rendering; nothing reads them afterwards.
            let details = std::mem::take(&mut row.payload);
            let result = match self.prepare(&row, details, context) {
                Ok(Prepared::Send(message)) => {
                    // Never closed: an error cannot happen, and would only mean "send now".
                    let _slot = self.send_permits.acquire().await.ok();
                    drop(then);
                    if std::time::Instant::now() >= deadline {
                        return Ok(MailEnd::Released {
                            id: outbox_id,
                            attempt: row.attempts,
                        });
                    }
                    let t = std::time::Instant::now();
                    let r = self.mailer.send(*message).await;
                    self.metrics.smtp_seconds.observe(t.elapsed().as_secs_f64());
                    r
                }
                Ok(Prepared::Stale(reason)) => {
                    // Needs no send slot: the next mail goes at once, not after the record.
                    drop(then);
                    info!(%reason, "not sent: no longer relevant");
                    self.store
                        .skip_claimed(outbox_id, row.attempts, &reason)
                        .await?;
                    return Ok(MailEnd::Skipped {
                        id: outbox_id,
                        reason,
                    });
                }
                Err(e) => Err(e),
            };
            let finished_at = self.clock.now();
            let attempt = row.attempts;
            let retry = &self.settings.mail.retry;
            let (outcome, delivery) = match result {
                Ok(()) => {
                    debug!(recipients = ?row.recipients, "mail handed to the server");
                    (AttemptOutcome::Sent, Delivery::Sent)
                }
                Err(SendError::Transient { code, detail }) if attempt < retry.max_attempts => {
                    let after = backoff(retry, attempt, rand::random::<f64>());
                    let at = finished_at
                        + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::zero());
                    warn!(code, %detail, retry_in = ?after, "transient failure; will retry");
                    (
                        AttemptOutcome::Transient {
                            code,
                            detail,
                            retry: Some(at),
                        },
                        Delivery::RetryScheduled { after },
                    )
                }
                Err(SendError::Transient { code, detail }) => {
                    let reason = format!("gave up after {attempt} attempts: {detail}");
                    warn!(code, %reason, "transient failure; attempts spent");
                    (
                        AttemptOutcome::Transient {
                            code,
                            detail: reason.clone(),
                            retry: None,
                        },
                        Delivery::Failed { reason },
                    )
                }
                Err(SendError::Permanent { code, detail }) => {
                    warn!(code, %detail, "permanent failure; not retrying");
                    (
                        AttemptOutcome::Permanent {
                            code,
                            detail: detail.clone(),
                        },
                        Delivery::Failed { reason: detail },
                    )
                }
            };
            Ok(MailEnd::Finished {
                attempt: Box::new(FinishedAttempt {
                    outbox_id,
                    attempt,
                    worker: self.worker_name.clone(),
                    started_at,
                    finished_at,
                    outcome,
                }),
                delivery,
                kind: row.kind.clone(),
                span: tracing::Span::current(),
            })
        }
        .instrument(span)
        .await
    }

    /// Renders the mail of `row` from its facts (`details`, its payload), or says why it is
    /// no longer worth sending.
    fn prepare(
        &self,
        row: &crate::store::OutboxRow,
        details: serde_json::Value,
        context: Result<Option<SubscriptionContext>, StoreError>,
    ) -> Result<Prepared, SendError> {
        let permanent = |detail: String| SendError::Permanent { code: None, detail };
        let kind = NotificationKind::parse(&row.kind).map_err(permanent)?;
        SubscriptionId::parse(&row.subscription_id).map_err(|e| permanent(e.to_string()))?;
        let ctx = context
            .map_err(|e| SendError::Transient {
                code: None,
                detail: e.to_string(),
            })?
            .ok_or_else(|| {
                permanent(format!(
                    "subscription {:?} no longer exists",
                    row.subscription_id
                ))
            })?;
        if kind == NotificationKind::RenewalReminder
            && let Some(reason) = stale_reminder(&details, &ctx, self.clock.now())
        {
            return Ok(Prepared::Stale(reason));
        }
        let (_, message) = self
            .compose(kind, &ctx, details, &row.recipients, &row.key)
            .map_err(permanent)?;
        Ok(Prepared::Send(Box::new(message)))
    }

    /// One poll at the clock's current time: plans and records due renewal work, then gives
    /// claims whose lease ran out back (see [`Deliverer::redrive`]).
    pub async fn poll(&self) -> Result<PollReport, AppError> {
        let started = std::time::Instant::now();
        let report = poll(
            &self.store,
            &self.settings,
            &self.calendars,
            self.clock.now(),
        )
        .await?;
        self.metrics
            .poll_seconds
            .observe(started.elapsed().as_secs_f64());
        self.redrive().await?;
        Ok(report)
    }

    /// Delivers every owed mail that is due now, here, without the daemon; mail whose retry
    /// is scheduled later stays owed. For `run --once`.
    pub async fn drain(&self) -> Result<DrainReport, AppError> {
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

    /// Crash recovery: mails claimed longer than `worker.sending_lease` ago are owed again
    /// (see [`Store::expire_claims`]). Returns how many.
    pub async fn redrive(&self) -> Result<u64, AppError> {
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
