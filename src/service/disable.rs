//! Requests to disable auto-renew: decided by the vendor's rules on the subscription's state
//! at the request's instant, recorded with what was seen, answered by mail, and final.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ServiceError, calendar_for, subscription as context_of, timeline_input};
use crate::calendar::CalendarRegistry;
use crate::config::Settings;
use crate::domain::{EmailAddress, SubscriptionId};
use crate::notify::{
    DisabledFacts, MailFacts, RejectedFacts, address_list, answer_recipients, disabled_key,
    message_id, rejected_key,
};
use crate::renewal::{DisableDecision, decide_disable};
use crate::store::{DisableRecord, DisableRecorded, DisableRow, NewNotification, Store};

/// The answer to a request, as printed and as the marketplace reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisableOutcome {
    pub subscription: String,
    pub request_id: i64,
    /// `accepted` or `rejected`.
    pub decision: String,
    /// `licenses_assigned` (rejected), `after_cutoff` (accepted for the next term),
    /// `already_disabled` (an earlier request stands), or null (accepted for this term).
    pub reason: Option<String>,
    pub assigned_licenses: u32,
    pub cutoff_at: Option<String>,
    pub effective_term_end: Option<chrono::NaiveDate>,
    pub renews_once_more: bool,
    pub requested_by: String,
    /// True when auto-renew had been disabled by an earlier request, whose decision this is.
    pub repeated: bool,
}

impl DisableOutcome {
    pub fn accepted(&self) -> bool {
        self.decision == "accepted"
    }

    fn from_row(subscription: &str, row: &DisableRow, tz: chrono_tz::Tz) -> Self {
        Self {
            subscription: subscription.to_owned(),
            request_id: row.id,
            decision: row.decision.clone(),
            reason: row.reason.clone(),
            assigned_licenses: row.seen_assigned,
            cutoff_at: row.cutoff_at.map(|t| t.with_timezone(&tz).to_rfc3339()),
            effective_term_end: row.effective_term_end,
            renews_once_more: row.renews_once_more,
            requested_by: row.requested_by.clone(),
            repeated: false,
        }
    }
}

/// Decides and records one request, on the state now and the cutoff at `requested_at` (a
/// request queued before the cutoff counts as made before it). `request_key` identifies the
/// request: the same key is decided once, and asking again returns that decision.
#[allow(clippy::too_many_arguments)]
pub async fn request_disable(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    subscription: &SubscriptionId,
    requested_by: &EmailAddress,
    requested_at: DateTime<Utc>,
    now: DateTime<Utc>,
    via: &str,
    request_key: &str,
) -> Result<DisableOutcome, ServiceError> {
    // A concurrent change (a license assigned between decision and commit) makes the guarded
    // write fail; deciding again on the new state is then the right answer.
    for _ in 0..10 {
        let ctx = context_of(store, subscription).await?;
        let tz = ctx.reseller.timezone.tz();
        let calendar = calendar_for(settings, calendars, &ctx.reseller)?;
        let input = timeline_input(&ctx);
        let decision = decide_disable(&input, &calendar, &settings.renewal, requested_at)?;
        let sid = subscription.as_str();
        let mut record = DisableRecord {
            request_key: request_key.to_owned(),
            subscription_id: sid.to_owned(),
            requested_by: requested_by.as_str().to_owned(),
            requested_at,
            via: via.to_owned(),
            seen_assigned: input.assigned_licenses,
            seen_term_end: input.term_end,
            seen_auto_renew: input.auto_renew,
            accepted: true,
            reason: None,
            cutoff_at: None,
            effective_term_end: None,
            renews_once_more: false,
            switch_off: false,
        };
        let recipients = address_list(&answer_recipients(requested_by, &ctx));
        let domain = settings.mail.message_id_domain.clone();
        let mut mail: Option<(String, MailFacts)> = None;
        let mut original: Option<DisableRow> = None;
        match decision {
            DisableDecision::Accepted {
                effective_term_end,
                renews_once_more,
                cutoff_at,
            } => {
                record.switch_off = true;
                record.cutoff_at = Some(cutoff_at);
                record.effective_term_end = Some(effective_term_end);
                record.renews_once_more = renews_once_more;
                record.reason = renews_once_more.then(|| "after_cutoff".to_owned());
                // One confirmation per subscription: a request is final.
                mail = Some((
                    disabled_key(sid),
                    MailFacts::AutoRenewDisabled(DisabledFacts {
                        effective_term_end,
                        renews_once_more,
                        term_end: input.term_end,
                        requested_by: requested_by.clone(),
                        cutoff_at: cutoff_at.with_timezone(&tz).fixed_offset(),
                    }),
                ));
            }
            DisableDecision::Rejected {
                reason,
                assigned_licenses,
            } => {
                record.accepted = false;
                record.reason = Some(reason.as_str().to_owned());
                mail = Some((
                    rejected_key(sid, request_key),
                    MailFacts::DisableRejected(RejectedFacts {
                        assigned_licenses,
                        requested_by: requested_by.clone(),
                        term_end: input.term_end,
                    }),
                ));
            }
            DisableDecision::AlreadyDisabled { effective_term_end } => {
                // The earlier decision is the answer; this request is recorded, nothing is sent.
                original = store.disable_requests(sid).await?.into_iter().find(|r| {
                    r.decision == "accepted" && r.reason.as_deref() != Some("already_disabled")
                });
                if let Some(first) = &original {
                    record.cutoff_at = first.cutoff_at;
                    record.renews_once_more = first.renews_once_more;
                }
                record.reason = Some("already_disabled".to_owned());
                record.effective_term_end = Some(effective_term_end);
            }
        }
        let recorded = store
            .record_disable(&record, now, |_| {
                mail.map(|(key, facts)| NewNotification {
                    message_id: message_id(&key, &domain),
                    key,
                    kind: facts.kind().as_str().to_owned(),
                    subscription_id: sid.to_owned(),
                    recipients,
                    payload: facts.to_payload(),
                })
                .into_iter()
                .collect()
            })
            .await?;
        match recorded {
            DisableRecorded::Recorded(row) | DisableRecorded::Duplicate(row) => {
                let repeated = row.reason.as_deref() == Some("already_disabled");
                let shown = match (&original, repeated) {
                    (Some(first), true) => first,
                    _ => &row,
                };
                let mut outcome = DisableOutcome::from_row(sid, shown, tz);
                outcome.repeated = repeated;
                return Ok(outcome);
            }
            DisableRecorded::Conflict => continue,
        }
    }
    Err(ServiceError::Invalid(format!(
        "subscription {:?} kept changing while the request was decided; try again",
        subscription.as_str()
    )))
}
