//! The operator's use cases behind the console, the API's pause switch and the CLI's
//! `pause`/`resume`: pausing sending, retrying and cancelling mail (each written with its
//! audit row in one transaction), the renewals in a window, and a mail as it would be sent.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration as Span, NaiveDate, Utc};

use super::ServiceError;
use super::timeline::{TimelineReport, timeline_reports};
use crate::calendar::{Calendar, CalendarRegistry};
use crate::domain::SubscriptionId;
use crate::notify::{MailFacts, NotificationKind};
use crate::outbox::Deliverer;
use crate::renewal;
use crate::store::{AuditEntry, MailTarget, OutboxRow, OutboxState, Store};

/// Renewals shown at most per page, each with its timeline.
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
/// their timelines (at most [`RENEWALS_LIMIT`]).
///
/// Subscriptions are read in term-end order from the first term end whose cutoff can still
/// be to come, their cutoffs worked out from the term end, calendar and zone alone, and the
/// timelines read only for those whose cutoff is in the window, together
/// ([`timeline_reports`]). Term ends just past that first one may still have their cutoff
/// behind (another calendar, another zone): at most [`RENEWALS_SCAN`] are looked at.
pub async fn renewals(
    deliverer: &Deliverer,
    window: Span,
) -> Result<Vec<TimelineReport>, ServiceError> {
    let d = deliverer;
    let now = d.clock.now();
    let until = now + window;
    let business_days = d.settings.renewal.cutoff_business_days;
    let (from, to) = term_end_bounds(&d.calendars, business_days, now, until);
    let mut calendars: HashMap<String, Arc<Calendar>> = HashMap::new();
    let mut chosen: Vec<String> = Vec::new();
    let mut after = None;
    let mut read = 0;
    'scan: while read < RENEWALS_SCAN {
        let rows = d
            .store
            .term_ends_between(from, to, after.as_ref(), SCAN_BATCH)
            .await?;
        read += rows.len();
        for row in &rows {
            let name = row
                .calendar
                .as_deref()
                .unwrap_or(&d.settings.calendar.default);
            let cal = match calendars.get(name) {
                Some(c) => c.clone(),
                None => {
                    let c = d.calendars.get(name)?;
                    calendars.insert(name.to_owned(), c.clone());
                    c
                }
            };
            let cutoff = renewal::cutoff_instant(
                renewal::cutoff_date(row.term_end, &cal, business_days)?,
                row.timezone.tz(),
            );
            if cutoff >= now && cutoff < until {
                chosen.push(row.subscription_id.clone());
                if chosen.len() >= RENEWALS_LIMIT as usize {
                    break 'scan;
                }
            }
        }
        if rows.len() < SCAN_BATCH as usize {
            break;
        }
        after = rows.last().map(|r| (r.term_end, r.subscription_id.clone()));
    }
    let ids: Vec<&str> = chosen.iter().map(String::as_str).collect();
    let ctxs = d.store.subscription_contexts(&ids).await?;
    let mut out = timeline_reports(&d.store, &d.settings, &d.calendars, ctxs, now).await?;
    out.retain(|r| r.timeline.cutoff_at >= now && r.timeline.cutoff_at < until);
    out.sort_by(|a, b| {
        (a.timeline.cutoff_at, a.ctx.subscription.id.as_str())
            .cmp(&(b.timeline.cutoff_at, b.ctx.subscription.id.as_str()))
    });
    Ok(out)
}

/// Subscriptions looked at most (term end, calendar and zone) for one list of renewals.
pub const RENEWALS_SCAN: usize = 20_000;
/// Subscriptions read at once while looking.
const SCAN_BATCH: u32 = 2_000;

/// The term ends between which every cutoff in `[now, until)` lies, on any of `calendars`
/// and in any zone. A cutoff is the start of the day after the cutoff date, in the
/// reseller's zone, and a zone's date is within a day of UTC's: so a cutoff at or after `now`
/// has its date on or after UTC's date less two days, one before `until` on or before
/// `until`'s UTC date plus one; and the cutoff date grows with the term end.
fn term_end_bounds(
    calendars: &CalendarRegistry,
    business_days: u32,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (NaiveDate, NaiveDate) {
    let earliest = now.date_naive() - Span::days(2);
    let latest = until.date_naive() + Span::days(1);
    // N business days span at most a few times N calendar days (weekends, holidays).
    let reach = i64::from(business_days) * 3 + 31;
    let days = |start: NaiveDate| (0..=reach).map(move |i| start + Span::days(i));
    let mut from: Option<NaiveDate> = None;
    let mut to: Option<NaiveDate> = None;
    for name in calendars.names() {
        let cutoff = |end: NaiveDate| {
            calendars
                .get(&name)
                .and_then(|cal| renewal::cutoff_date(end, &cal, business_days))
        };
        // A calendar that cannot answer bounds nothing: the widest bounds then.
        let first = days(earliest)
            .find(|end| cutoff(*end).map_or(true, |c| c >= earliest))
            .unwrap_or(earliest);
        let last = days(latest)
            .take_while(|end| cutoff(*end).is_ok_and(|c| c <= latest))
            .last()
            .unwrap_or(latest + Span::days(reach));
        from = Some(from.map_or(first, |f| f.min(first)));
        to = Some(to.map_or(last, |t| t.max(last)));
    }
    (
        from.unwrap_or(earliest),
        to.unwrap_or(latest + Span::days(reach)),
    )
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
