//! The periodic poll: for every subscription whose next due instant has come, plan what is due
//! (reminders, renewal, end), record it in the outbox, and set the next due
//! instant. Safe to run on several hosts at once and to repeat: the plan depends only on the
//! subscription and the instant, the outbox keys make a second recording a no-op, and the
//! term-end guard lets only one poll move a term.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;
use tracing::{info, warn};

use super::AppError;
use crate::calendar::{Calendar, CalendarRegistry};
use crate::config::Settings;
use crate::model::SubscriptionContext;
use crate::notify::{NotificationKind, message_id, reminder_key, term_key};
use crate::renewal::plan::{Action, SkipReason, plan, term_end_instant};
use crate::renewal::{self, RenewalPolicy, TimelineInput};
use crate::store::{Applied, Backend, NewNotification, RenewalUpdate, Store, TermChange};

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PollReport {
    pub subscriptions: u32,
    pub mails_queued: u32,
    pub reminders_skipped: u32,
    pub renewed: u32,
    pub ended: u32,
    /// Subscriptions another poll had just handled (nothing written by this one).
    pub conflicts: u32,
}

impl PollReport {
    fn add(&mut self, o: &PollReport) {
        self.subscriptions += o.subscriptions;
        self.mails_queued += o.mails_queued;
        self.reminders_skipped += o.reminders_skipped;
        self.renewed += o.renewed;
        self.ended += o.ended;
        self.conflicts += o.conflicts;
    }
}

/// Groups of subscriptions a poll records at once on PostgreSQL.
const POLL_PARALLELISM: usize = 8;

/// Subscriptions recorded in one transaction (one commit): enough that commits stop
/// mattering, few enough that a group holds its row locks briefly.
const POLL_GROUP: usize = 50;

/// Upper bound of terms caught up for one subscription in one poll (a daemon down for years).
const MAX_TERMS_PER_POLL: usize = 20;

pub fn timeline_input(ctx: &SubscriptionContext) -> TimelineInput {
    let s = &ctx.subscription;
    TimelineInput {
        term_start: s.term_start,
        term_end: s.term_end,
        tz: ctx.reseller.timezone.tz(),
        auto_renew: s.auto_renew,
        assigned_licenses: u32::from(s.assigned_licenses.get()),
        disable_effective_term_end: s.renewal.disable_effective_term_end,
    }
}

/// The next instant strictly after `now` at which the poll has something to do.
pub fn next_due(
    input: &TimelineInput,
    calendar: &Calendar,
    policy: &RenewalPolicy,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, crate::calendar::CalendarError> {
    let end = term_end_instant(input);
    if input.auto_renew && input.disable_effective_term_end.is_none() {
        let next_reminder = renewal::reminders(input.term_end, calendar, input.tz, policy)?
            .into_iter()
            .map(|r| r.due_at)
            .filter(|t| *t > now)
            .min();
        if let Some(t) = next_reminder {
            return Ok(t.min(end));
        }
    }
    Ok(end)
}

fn reason_text(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::Superseded => "superseded: a later reminder of this term was due as well",
        SkipReason::AfterCutoff => "after the cutoff: no reminder is sent once it has passed",
        SkipReason::AutoRenewOff => "auto-renew is off",
    }
}

pub async fn poll(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    now: DateTime<Utc>,
) -> Result<PollReport, AppError> {
    let mut report = PollReport::default();
    loop {
        let due = store
            .due_subscription_contexts(now, settings.poll.batch_size)
            .await?;
        if due.is_empty() {
            break;
        }
        let batch = due.len();
        // Subscriptions are independent (each one's writes are guarded by its term end), so
        // they are recorded in groups that share a transaction and its commit. On PostgreSQL
        // several groups are in flight at once, overlapping their round trips; SQLite has one
        // writer at a time: there they go one after the other.
        let parallel = match store.backend() {
            Backend::Postgres => POLL_PARALLELISM,
            Backend::Sqlite => 1,
        };
        let mut due = due.into_iter();
        let groups = std::iter::from_fn(|| {
            let group: Vec<_> = due.by_ref().take(POLL_GROUP).collect();
            (!group.is_empty()).then_some(group)
        });
        let mut handled = futures::stream::iter(groups)
            .map(|group| poll_group(store, settings, calendars, group, now))
            .buffer_unordered(parallel);
        while let Some(one) = handled.next().await {
            report.add(&one?);
        }
        if batch < settings.poll.batch_size as usize {
            break;
        }
    }
    if report != PollReport::default() {
        info!(?report, "poll done");
    }
    Ok(report)
}

/// One planned step of one subscription: what to record, and where its timeline goes on from
/// if the step is recorded and more is due at once.
struct Step {
    update: RenewalUpdate,
    then: Option<TimelineInput>,
}

/// Plans, then records in one transaction, the due work of a group of subscriptions.
async fn poll_group(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    mut group: Vec<SubscriptionContext>,
    now: DateTime<Utc>,
) -> Result<PollReport, AppError> {
    // Polls on other hosts may hold some of these subscriptions in their own groups: taking
    // the row locks in one order everywhere means they wait for each other, never deadlock.
    group.sort_by(|a, b| a.subscription.id.cmp(&b.subscription.id));
    let mut report = PollReport::default();
    let mut steps = Vec::with_capacity(group.len());
    for ctx in &group {
        let (step, planned) = plan_or_retry(settings, calendars, ctx, &timeline_input(ctx), now)?;
        report.subscriptions += u32::from(planned);
        steps.push(step);
    }
    let (updates, thens): (Vec<RenewalUpdate>, Vec<_>) =
        steps.into_iter().map(|s| (s.update, s.then)).unzip();
    let applied = match store.apply_renewals(&updates, now).await {
        Ok(applied) => applied,
        Err(e) => {
            // A conflict with a concurrent poll (a deadlock between two groups) or one bad row
            // must not hold back the rest: one at a time, each in its own transaction.
            warn!(error = %e, subscriptions = updates.len(), "recording a group failed; one at a time");
            let mut applied = Vec::with_capacity(updates.len());
            for u in &updates {
                applied.push(store.apply_renewal(u, now).await?);
            }
            applied
        }
    };
    for (((update, then), applied), ctx) in updates.iter().zip(thens).zip(applied).zip(group) {
        count(&mut report, update, applied);
        if let (true, Some(input)) = (applied.applied, then) {
            // A renewal left the new term's work due already (a long downtime): go on.
            poll_on(store, settings, calendars, &ctx, input, now, &mut report).await?;
        }
    }
    Ok(report)
}

/// Plans a subscription's step from `input`, and says whether it was planned. One whose
/// calendar cannot answer (unknown, or not for that date) gets nothing but a new try in an
/// hour, reported each time, so that one subscription's bad data never stops the others.
fn plan_or_retry(
    settings: &Settings,
    calendars: &CalendarRegistry,
    ctx: &SubscriptionContext,
    input: &TimelineInput,
    now: DateTime<Utc>,
) -> Result<(Step, bool), AppError> {
    let planned = calendar_of(settings, calendars, ctx)
        .and_then(|calendar| plan_step(settings, &calendar, ctx, input, now));
    match planned {
        Ok(step) => Ok((step, true)),
        Err(AppError::Calendar(error)) => {
            warn!(subscription = %ctx.subscription.id, %error, "cannot plan renewal; retrying in 1 h");
            let update = RenewalUpdate {
                subscription_id: ctx.subscription.id.as_str().to_owned(),
                expected_term_end: input.term_end,
                notifications: Vec::new(),
                change: TermChange::None,
                cancel_pending_reminders: None,
                next_due_at: Some(now + chrono::Duration::hours(1)),
            };
            Ok((Step { update, then: None }, false))
        }
        Err(e) => Err(e),
    }
}

fn count(report: &mut PollReport, update: &RenewalUpdate, applied: Applied) {
    if !applied.applied {
        report.conflicts += 1;
        return;
    }
    report.mails_queued += applied.queued;
    report.reminders_skipped += applied.skipped + applied.cancelled;
    match update.change {
        TermChange::Renew(_) => report.renewed += 1,
        TermChange::End => report.ended += 1,
        TermChange::None => {}
    }
}

fn calendar_of(
    settings: &Settings,
    calendars: &CalendarRegistry,
    ctx: &SubscriptionContext,
) -> Result<std::sync::Arc<Calendar>, AppError> {
    let name = ctx
        .reseller
        .calendar
        .as_deref()
        .unwrap_or(&settings.calendar.default);
    Ok(calendars.get(name)?)
}

/// Goes on with a subscription after a recorded renewal, one step (one term) at a time.
async fn poll_on(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    ctx: &SubscriptionContext,
    mut input: TimelineInput,
    now: DateTime<Utc>,
    report: &mut PollReport,
) -> Result<(), AppError> {
    // The first term was the group's step.
    for _ in 1..MAX_TERMS_PER_POLL {
        let (step, _) = plan_or_retry(settings, calendars, ctx, &input, now)?;
        let applied = store.apply_renewal(&step.update, now).await?;
        count(report, &step.update, applied);
        match (applied.applied, step.then) {
            (true, Some(next)) => input = next,
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Plans one step of one subscription's timeline as of `now`: the mail owed or skipped, the
/// term change and the next due instant. Pure: nothing is read or written.
fn plan_step(
    settings: &Settings,
    calendar: &Calendar,
    ctx: &SubscriptionContext,
    input: &TimelineInput,
    now: DateTime<Utc>,
) -> Result<Step, AppError> {
    let policy = &settings.renewal;
    let sid = ctx.subscription.id.as_str();
    let actions = plan(input, calendar, policy, now)?;
    let mut notifications = Vec::new();
    let mut change = TermChange::None;
    let domain = &settings.mail.message_id_domain;
    let owed = |key: String, kind: NotificationKind, payload: serde_json::Value| NewNotification {
        message_id: message_id(&key, domain),
        key,
        kind: kind.as_str().to_owned(),
        subscription_id: sid.to_owned(),
        recipients: kind
            .recipients(ctx)
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect(),
        payload,
    };
    let reminder_payload = |term_end: chrono::NaiveDate,
                            offset: String|
     -> Result<serde_json::Value, AppError> {
        let cutoff = renewal::cutoff_date(term_end, calendar, policy.cutoff_business_days)?;
        let cutoff_at = renewal::cutoff_instant(cutoff, input.tz);
        let last_minute = (cutoff_at - chrono::Duration::minutes(1)).with_timezone(&input.tz);
        let cc: Vec<&str> = if policy.reminder_cc_customer {
            vec![ctx.customer.email.as_str()]
        } else {
            vec![]
        };
        Ok(json!({
            "term_end": term_end,
            "offset": offset,
            "cutoff_date": cutoff,
            "cutoff_at": cutoff_at.with_timezone(&input.tz).to_rfc3339(),
            "cutoff_deadline": format!("{} ({})", last_minute.format("%A %Y-%m-%d, %H:%M %Z"), input.tz.name()),
            "timezone": input.tz.name(),
            "cc": cc,
        }))
    };
    // A reminder of a term, owed, or recorded as skipped for a reason.
    let reminder = |term_end: chrono::NaiveDate,
                    offset: String,
                    skip: Option<SkipReason>|
     -> Result<(NewNotification, Option<String>), AppError> {
        Ok((
            owed(
                reminder_key(sid, term_end, &offset),
                NotificationKind::RenewalReminder,
                reminder_payload(term_end, offset)?,
            ),
            skip.map(|r| reason_text(r).to_owned()),
        ))
    };
    let auto_renew_off = !input.auto_renew || input.disable_effective_term_end.is_some();
    if auto_renew_off && now < term_end_instant(input) {
        // Reminders not yet due will never be sent either: record them as skipped now, so
        // the outbox shows why, and nothing later re-plans them.
        for r in renewal::reminders(input.term_end, calendar, input.tz, policy)? {
            notifications.push(reminder(
                input.term_end,
                r.offset.to_string(),
                Some(SkipReason::AutoRenewOff),
            )?);
        }
    }
    for action in &actions {
        match action {
            Action::SendReminder {
                term_end, offset, ..
            } => notifications.push(reminder(*term_end, offset.to_string(), None)?),
            Action::SkipReminder {
                term_end,
                offset,
                reason,
            } => notifications.push(reminder(*term_end, offset.to_string(), Some(*reason))?),
            Action::Renew {
                term_end,
                new_term_end,
            } => {
                let renews_again = match input.disable_effective_term_end {
                    Some(stop) => stop > *new_term_end,
                    None => input.auto_renew,
                };
                notifications.push((
                    owed(
                        term_key(sid, NotificationKind::SubscriptionRenewed, *term_end),
                        NotificationKind::SubscriptionRenewed,
                        json!({"term_end": term_end, "new_term_start": term_end,
                                   "new_term_end": new_term_end, "renews_again": renews_again}),
                    ),
                    None,
                ));
                change = TermChange::Renew(*new_term_end);
            }
            Action::End { term_end } => {
                notifications.push((
                    owed(
                        term_key(sid, NotificationKind::SubscriptionEnded, *term_end),
                        NotificationKind::SubscriptionEnded,
                        json!({"term_end": term_end}),
                    ),
                    None,
                ));
                change = TermChange::End;
            }
        }
    }
    let mut next = input.clone();
    if let TermChange::Renew(end) = change {
        next.term_end = end;
    }
    let next_due_at = match change {
        TermChange::End => None,
        _ => Some(next_due(&next, calendar, policy, now)?),
    };
    let update = RenewalUpdate {
        subscription_id: sid.to_owned(),
        expected_term_end: input.term_end,
        notifications,
        change,
        cancel_pending_reminders: auto_renew_off
            .then(|| reason_text(SkipReason::AutoRenewOff).to_owned()),
        next_due_at,
    };
    let then = match next_due_at {
        Some(t) if t <= now && matches!(change, TermChange::Renew(_)) => Some(next),
        _ => None,
    };
    Ok(Step { update, then })
}
