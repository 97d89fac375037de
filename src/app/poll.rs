//! The periodic poll: for every subscription whose next due instant has come, plan what is due
//! (reminders, renewal, end), record it in the outbox with its jobs, and set the next due
//! instant. Safe to run on several hosts at once and to repeat: the plan depends only on the
//! subscription and the instant, the outbox keys make a second recording a no-op, and the
//! term-end guard lets only one poll move a term.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;
use tracing::{info, warn};

use super::AppError;
use crate::calendar::{Calendar, CalendarRegistry};
use crate::config::Settings;
use crate::jobs::send_job;
use crate::model::SubscriptionContext;
use crate::notify::{NotificationKind, message_id, reminder_key, term_key};
use crate::renewal::plan::{Action, SkipReason, plan, term_end_instant};
use crate::renewal::{self, RenewalPolicy, TimelineInput};
use crate::store::{Backend, NewNotification, RenewalUpdate, Store, TermChange};

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

/// Subscriptions a poll handles at once on PostgreSQL.
const POLL_PARALLELISM: usize = 8;

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
        // Subscriptions are independent (each is written in a transaction of its own, guarded
        // by its term end), so on PostgreSQL several are handled at once and their round trips
        // and commits overlap. SQLite has one writer at a time: there they go one by one.
        let parallel = match store.backend() {
            Backend::Postgres => POLL_PARALLELISM,
            Backend::Sqlite => 1,
        };
        let mut handled = futures::stream::iter(due)
            .map(|ctx| poll_subscription(store, settings, calendars, ctx, now))
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

/// Plans and records one subscription's due work; its report.
async fn poll_subscription(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    ctx: SubscriptionContext,
    now: DateTime<Utc>,
) -> Result<PollReport, AppError> {
    let mut report = PollReport::default();
    let id = ctx.subscription.id.as_str().to_owned();
    match poll_one(store, settings, calendars, &ctx, now, &mut report).await {
        Ok(()) => Ok(report),
        // One subscription's bad data (an unknown calendar) must not stop the others; it is
        // retried in an hour and reported each time.
        Err(AppError::Calendar(e)) => {
            warn!(subscription = %id, error = %e, "cannot plan renewal; retrying in 1 h");
            store
                .apply_renewal(
                    &RenewalUpdate {
                        subscription_id: id.clone(),
                        expected_term_end: ctx.subscription.term_end,
                        notifications: Vec::new(),
                        change: TermChange::None,
                        cancel_pending_reminders: None,
                        next_due_at: Some(now + chrono::Duration::hours(1)),
                    },
                    now,
                    |i, a| send_job(i, a, Duration::ZERO),
                )
                .await?;
            Ok(report)
        }
        Err(e) => Err(e),
    }
}

async fn poll_one(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    ctx: &SubscriptionContext,
    now: DateTime<Utc>,
    report: &mut PollReport,
) -> Result<(), AppError> {
    let calendar_name = ctx
        .reseller
        .calendar
        .as_deref()
        .unwrap_or(&settings.calendar.default);
    let calendar = calendars.get(calendar_name)?;
    let policy = &settings.renewal;
    let sid = ctx.subscription.id.as_str();
    let mut input = timeline_input(ctx);
    report.subscriptions += 1;
    for _ in 0..MAX_TERMS_PER_POLL {
        let actions = plan(&input, &calendar, policy, now)?;
        let mut notifications = Vec::new();
        let mut change = TermChange::None;
        let domain = &settings.mail.message_id_domain;
        let owed =
            |key: String, kind: NotificationKind, payload: serde_json::Value| NewNotification {
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
            let cutoff = renewal::cutoff_date(term_end, &calendar, policy.cutoff_business_days)?;
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
        let auto_renew_off = !input.auto_renew || input.disable_effective_term_end.is_some();
        if auto_renew_off && now < term_end_instant(&input) {
            // Reminders not yet due will never be sent either: record them as skipped now, so
            // the outbox shows why, and nothing later re-plans them.
            for r in renewal::reminders(input.term_end, &calendar, input.tz, policy)? {
                let offset = r.offset.to_string();
                notifications.push((
                    owed(
                        reminder_key(sid, input.term_end, &offset),
                        NotificationKind::RenewalReminder,
                        reminder_payload(input.term_end, offset)?,
                    ),
                    Some(reason_text(SkipReason::AutoRenewOff).to_owned()),
                ));
            }
        }
        for action in &actions {
            match action {
                Action::SendReminder {
                    term_end, offset, ..
                } => {
                    let offset = offset.to_string();
                    notifications.push((
                        owed(
                            reminder_key(sid, *term_end, &offset),
                            NotificationKind::RenewalReminder,
                            reminder_payload(*term_end, offset)?,
                        ),
                        None,
                    ));
                }
                Action::SkipReminder {
                    term_end,
                    offset,
                    reason,
                } => {
                    let offset = offset.to_string();
                    notifications.push((
                        owed(
                            reminder_key(sid, *term_end, &offset),
                            NotificationKind::RenewalReminder,
                            reminder_payload(*term_end, offset)?,
                        ),
                        Some(reason_text(*reason).to_owned()),
                    ));
                }
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
            _ => Some(next_due(&next, &calendar, policy, now)?),
        };
        let applied = store
            .apply_renewal(
                &RenewalUpdate {
                    subscription_id: sid.to_owned(),
                    expected_term_end: input.term_end,
                    notifications,
                    change,
                    cancel_pending_reminders: auto_renew_off
                        .then(|| reason_text(SkipReason::AutoRenewOff).to_owned()),
                    next_due_at,
                },
                now,
                |i, a| send_job(i, a, Duration::ZERO),
            )
            .await?;
        if !applied.applied {
            report.conflicts += 1;
            return Ok(());
        }
        report.mails_queued += applied.queued;
        report.reminders_skipped += applied.skipped + applied.cancelled;
        match change {
            TermChange::Renew(_) => report.renewed += 1,
            TermChange::End => report.ended += 1,
            TermChange::None => {}
        }
        // A renewal may leave the new term's work due already (a long downtime): go on.
        match next_due_at {
            Some(t) if t <= now && matches!(change, TermChange::Renew(_)) => input = next,
            _ => return Ok(()),
        }
    }
    Ok(())
}
