//! One claimed mail's way to the server: rendered from its facts (or found no longer worth
//! sending), opened with the server (MAIL, RCPT, DATA), handed over once a send slot is free,
//! and its outcome decided (sent, retried later with backoff on a 4xx, failed for good on a
//! 5xx).

use chrono::{DateTime, Utc};
use lettre::Address;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Deliverer, Delivery, OutboxError};
use crate::domain::SubscriptionContext;
use crate::domain::{EmailAddress, SubscriptionId};
use crate::mail::{OutgoingMail, SendError};
use crate::notify::{
    MailContext, MailFacts, NotificationKind, ReminderFacts, StalledFacts, message_id,
};
use crate::retry::Backoff;
use crate::store::{AttemptOutcome, FinishedAttempt, StoreError};

/// How one mail of a batch ended before its record.
pub(super) enum MailEnd<'a> {
    /// Handed to the server or failed; to be recorded. `slot` is its send slot, held until
    /// the record commits: a mail the server took but not yet recorded is one a crash would
    /// send again, so counting those against `worker.concurrency` bounds a crash's duplicates
    /// by it.
    Finished {
        slot: Option<tokio::sync::SemaphorePermit<'a>>,
        attempt: Box<FinishedAttempt>,
        delivery: Delivery,
        kind: String,
        span: tracing::Span,
    },
    /// No longer worth sending; recorded as skipped already.
    Skipped { id: i64, reason: String },
    /// Not sent: to be given back, its attempt uncounted; `relay` when the relay was down
    /// (or said "too many") rather than the batch's deadline passed.
    Released { id: i64, attempt: u32, relay: bool },
}

enum Prepared {
    Send(Box<lettre::Message>),
    Stale(String),
}

/// Why a reminder recorded earlier should no longer go out, if it should not: mail about a
/// renewal that can no longer be stopped, or that will not happen, is worse than none.
fn stale_reminder(
    facts: &ReminderFacts,
    ctx: &SubscriptionContext,
    now: DateTime<Utc>,
) -> Option<String> {
    let s = &ctx.subscription;
    if !s.auto_renew || s.renewal.disable_effective_term_end.is_some() {
        return Some("auto-renew was turned off before it went out".into());
    }
    if facts.term_end != s.term_end {
        return Some(format!(
            "it was for the term ending {}, which is over",
            facts.term_end
        ));
    }
    let cutoff = facts.cutoff_at;
    (now >= cutoff).then(|| format!("the cutoff {cutoff} passed before it went out"))
}

/// Why a mail about a stalled order should no longer go out, if it should not: the order
/// moved on (a later step came, it was activated or abandoned) while the mail waited, and an
/// alert about a stall that is over would send operations chasing nothing.
fn stale_stall(facts: &StalledFacts, ctx: &SubscriptionContext) -> Option<String> {
    let p = &ctx.subscription.provisioning;
    if !p.in_flight {
        return Some(match (p.activated_at, p.abandoned_at) {
            (Some(_), _) => "the order was activated before it went out".into(),
            (_, Some(_)) => "the order was abandoned before it went out".into(),
            _ => "the order is no longer in flight".into(),
        });
    }
    let state = p.state();
    (state.as_str() != facts.last_step).then(|| {
        format!(
            "the order moved on from {} to {} before it went out",
            facts.last_step, state
        )
    })
}

impl Deliverer {
    /// Renders a mail of `kind` for a subscription with `details` (the facts of that kind but in
    /// a preview), as it would be sent.
    pub fn compose(
        &self,
        kind: NotificationKind,
        ctx: &SubscriptionContext,
        details: MailFacts,
        recipients: &[String],
        key: &str,
    ) -> Result<(OutgoingMail, lettre::Message), String> {
        let to = recipients
            .iter()
            .map(|r| {
                r.parse::<Address>()
                    .map_err(|e| format!("recipient {r:?} is not an address: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cc = details.cc().iter().map(EmailAddress::to_address).collect();
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

    /// One claimed mail's way to the server: rendered, opened with the server in one of the
    /// daemon's conversations, handed over once a send slot is free (or given back if the
    /// batch's deadline passed meanwhile), its outcome decided.
    pub(super) async fn send_one(
        &self,
        claim: crate::store::Claimed,
        started_at: DateTime<Utc>,
        deadline: std::time::Instant,
    ) -> Result<MailEnd<'_>, OutboxError> {
        let crate::store::Claimed { row, context } = claim;
        let outbox_id = row.id;
        let span = info_span!("deliver", outbox_id, key = %row.key, subscription = %row.subscription_id, attempt = row.attempts);
        async {
            let mut slot = None;
            let result = match self.prepare(&row, context) {
                Ok(Prepared::Send(message)) => {
                    // Never closed: an error cannot happen, and would only mean "go on now".
                    let talking = self.conversations.acquire().await.ok();
                    self.rate.ready().await;
                    let relay = self.relay.is_open();
                    if relay || std::time::Instant::now() >= deadline {
                        return Ok(MailEnd::Released {
                            id: outbox_id,
                            attempt: row.attempts,
                            relay,
                        });
                    }
                    let t = std::time::Instant::now();
                    let (talked, r) = match self.mailer.begin(*message).await {
                        Ok(handover) => {
                            // From its final dot on, the server may have taken the mail.
                            let talked = t.elapsed();
                            slot = self.send_permits.acquire().await.ok();
                            if std::time::Instant::now() >= deadline {
                                return Ok(MailEnd::Released {
                                    id: outbox_id,
                                    attempt: row.attempts,
                                    relay: false,
                                });
                            }
                            let t = std::time::Instant::now();
                            let r = handover.finish().await;
                            (talked + t.elapsed(), r)
                        }
                        Err(e) => (t.elapsed(), Err(e)),
                    };
                    drop(talking);
                    self.metrics.smtp_seconds.observe(talked.as_secs_f64());
                    match r {
                        Err(SendError::Relay {
                            code,
                            detail,
                            throttled,
                        }) => {
                            // Not this mail's fault: owed again, its attempt uncounted.
                            debug!(code, %detail, throttled, "relay unavailable; mail given back");
                            if throttled {
                                self.rate.slow_down();
                            }
                            self.relay.on_fault(&detail);
                            return Ok(MailEnd::Released {
                                id: outbox_id,
                                attempt: row.attempts,
                                relay: true,
                            });
                        }
                        // An answer about the message: the relay is up.
                        r => {
                            self.relay.on_answer();
                            r
                        }
                    }
                }
                Ok(Prepared::Stale(reason)) => {
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
                    let after = Backoff::new(retry.initial_backoff, retry.max_backoff)
                        .delay_with_jitter(attempt, rand::random::<f64>());
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
                // (A relay fault never reaches here: the mail was given back above.)
                Err(
                    SendError::Permanent { code, detail } | SendError::Relay { code, detail, .. },
                ) => {
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
                slot,
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

    /// Renders the mail of `row` from its facts (its payload), or says why it is no longer
    /// worth sending. Facts that are not those of its kind fail it for good, as a broken row.
    fn prepare(
        &self,
        row: &crate::store::OutboxRow,
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
        let details = MailFacts::parse(kind, &row.payload).map_err(|e| permanent(e.to_string()))?;
        if let MailFacts::RenewalReminder(reminder) = &details
            && let Some(reason) = stale_reminder(reminder, &ctx, self.clock.now())
        {
            return Ok(Prepared::Stale(reason));
        }
        if let MailFacts::OrderStalled(stall) = &details
            && let Some(reason) = stale_stall(stall, &ctx)
        {
            return Ok(Prepared::Stale(reason));
        }
        let (_, message) = self
            .compose(kind, &ctx, details, &row.recipients, &row.key)
            .map_err(permanent)?;
        Ok(Prepared::Send(Box::new(message)))
    }
}
