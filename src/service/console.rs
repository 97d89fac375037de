//! The operator's use cases behind the console, the API's pause switch and the CLI's
//! `pause`/`resume`: pausing sending, retrying and cancelling mail (each written with its
//! audit row in one transaction), the renewals in a window, and a mail as it would be sent.

use chrono::{DateTime, Duration as Span, Utc};

use super::ServiceError;
use super::timeline::{TimelineReport, timeline_report};
use crate::domain::SubscriptionId;
use crate::notify::{MailFacts, NotificationKind};
use crate::outbox::Deliverer;
use crate::store::{AuditEntry, MailTarget, OutboxRow, OutboxState, Store};

/// Renewals read at most per page: the rules run on each.
pub const RENEWALS_LIMIT: u32 = 200;

/// Pauses (`true`) or resumes sending on every daemon of this database. Returns whether the
/// flag changed (pausing twice is no error).
pub async fn set_paused(
    store: &Store,
    paused: bool,
    who: &str,
    now: DateTime<Utc>,
) -> Result<bool, ServiceError> {
    let audit = AuditEntry {
        who: who.to_owned(),
        action: if paused {
            "pause sending"
        } else {
            "resume sending"
        }
        .into(),
        target: "sending".into(),
        detail: None,
    };
    Ok(store.set_sending_paused(paused, &audit, now).await?)
}

/// Owes again, due now, the failed mails `target` names; returns how many.
pub async fn retry_mails(
    store: &Store,
    target: &MailTarget,
    who: &str,
    now: DateTime<Utc>,
) -> Result<u64, ServiceError> {
    let audit = AuditEntry {
        who: who.to_owned(),
        action: "retry mail".into(),
        target: describe(target),
        detail: None,
    };
    Ok(store.retry_mails(target, &audit, now).await?)
}

/// Calls off the owed mails `target` names; returns how many.
pub async fn cancel_mails(
    store: &Store,
    target: &MailTarget,
    who: &str,
    now: DateTime<Utc>,
) -> Result<u64, ServiceError> {
    let audit = AuditEntry {
        who: who.to_owned(),
        action: "cancel mail".into(),
        target: describe(target),
        detail: None,
    };
    Ok(store.cancel_mails(target, &audit, now).await?)
}

fn describe(target: &MailTarget) -> String {
    match target {
        MailTarget::Ids(ids) if ids.len() <= 10 => ids
            .iter()
            .map(|i| format!("mail {i}"))
            .collect::<Vec<_>>()
            .join(", "),
        MailTarget::Ids(ids) => format!("{} selected mails", ids.len()),
        MailTarget::Matching { filter, newest } => {
            format!("mails matching {filter:?} up to id {newest}")
        }
    }
}

/// A poll asked for by an operator: run now, with its audit row.
pub async fn poll_now_by(
    deliverer: &Deliverer,
    who: &str,
) -> Result<super::PollReport, ServiceError> {
    let report = super::poll_now(deliverer).await?;
    deliverer
        .store
        .record_audit(
            &AuditEntry {
                who: who.to_owned(),
                action: "poll now".into(),
                target: "poll".into(),
                detail: Some(format!("{report:?}")),
            },
            deliverer.clock.now(),
        )
        .await?;
    Ok(report)
}

/// The active subscriptions whose cutoff falls in `[now, now + window)`, soonest first, with
/// their timelines (at most [`RENEWALS_LIMIT`] read).
pub async fn renewals(
    deliverer: &Deliverer,
    window: Span,
) -> Result<Vec<TimelineReport>, ServiceError> {
    let now = deliverer.clock.now();
    let until = now + window;
    // The cutoff precedes the term end by business days (a few weeks at most), so term ends
    // from today to a month past the window hold every cutoff in it.
    let rows = deliverer
        .store
        .term_ends_between(
            now.date_naive(),
            (until + Span::days(31)).date_naive(),
            RENEWALS_LIMIT,
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let Ok(id) = SubscriptionId::parse(&row.subscription_id) else {
            continue;
        };
        let report = timeline_report(
            &deliverer.store,
            &deliverer.settings,
            &deliverer.calendars,
            &id,
            now,
        )
        .await?;
        let cutoff = report.timeline.cutoff_at;
        if cutoff >= now && cutoff < until {
            out.push(report);
        }
    }
    out.sort_by_key(|r| r.timeline.cutoff_at);
    Ok(out)
}

/// Renewals whose cutoff is within `window` and one of whose reminders, due by now, was not
/// sent: the customer may not know the renewal is coming.
pub async fn unreminded_cutoffs(
    deliverer: &Deliverer,
    window: Span,
) -> Result<Vec<TimelineReport>, ServiceError> {
    let now = deliverer.clock.now();
    Ok(renewals(deliverer, window)
        .await?
        .into_iter()
        .filter(|r| {
            r.timeline.auto_renew
                && r.timeline
                    .reminders
                    .iter()
                    .zip(&r.states)
                    .any(|(rem, s)| rem.due_at <= now && *s != Some(OutboxState::Sent))
        })
        .collect())
}

/// A mail as it would be sent now: subject, text, HTML and the raw message (.eml), rendered
/// from its facts and the subscription's current records.
pub struct MailPreview {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub eml: Vec<u8>,
}

pub async fn preview(deliverer: &Deliverer, row: &OutboxRow) -> Result<MailPreview, ServiceError> {
    let kind = NotificationKind::parse(&row.kind).map_err(ServiceError::Invalid)?;
    let facts = MailFacts::parse(kind, &row.payload)
        .map_err(|e| ServiceError::Invalid(format!("mail {}: {e}", row.id)))?;
    let id = SubscriptionId::parse(&row.subscription_id)
        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let ctx = super::subscription(&deliverer.store, &id).await?;
    let (mail, message) = deliverer
        .compose(kind, &ctx, facts, &row.recipients, &row.key)
        .map_err(ServiceError::Invalid)?;
    Ok(MailPreview {
        subject: mail.subject,
        text: mail.text,
        html: mail.html,
        eml: message.formatted(),
    })
}

/// Puts a dead queue job (a poll, a disable request) back to run now, with its audit row.
/// Returns whether it was dead.
pub async fn retry_job(
    store: &Store,
    id: &str,
    who: &str,
    now: DateTime<Utc>,
) -> Result<bool, ServiceError> {
    let Some(job) = store.retry_job(id, now).await? else {
        return Ok(false);
    };
    store
        .record_audit(
            &AuditEntry {
                who: who.to_owned(),
                action: "retry job".into(),
                target: job,
                detail: None,
            },
            now,
        )
        .await?;
    Ok(true)
}
