//! The periodic poll: for every subscription whose next due instant has come, plan what is due
//! (reminders, renewal, end, the watchdog of a stalled order), record it in the outbox, and set
//! the next due instant. Safe to run on several hosts at once and to repeat: the plan depends only on the
//! subscription and the instant, the outbox keys make a second recording a no-op, and the
//! term-end guard lets only one poll move a term.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tracing::{info, warn};

use super::{ServiceError, calendar_for, timeline_input};
use crate::calendar::CalendarRegistry;
use crate::config::Settings;
use crate::domain::SubscriptionContext;
use crate::domain::TimeZoneName;
use crate::notify::{
    EndedFacts, MailFacts, NotificationKind, ReminderFacts, RenewedFacts, StalledFacts,
    address_list, message_id, reminder_key, stalled_key, term_key,
};
use crate::outbox::Deliverer;
use crate::renewal::TimelineInput;
use crate::renewal::plan::SkipReason;
use crate::renewal::stall::{self, Stall};
use crate::renewal::steps::{self, Step, StepChange, StepMail, reason_text};
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
    /// Logs the report as named fields (what a log search filters on), at info.
    pub fn log(&self, message: &str, requested_by: Option<&str>) {
        info!(
            requested_by,
            subscriptions = self.subscriptions,
            mails_queued = self.mails_queued,
            reminders_skipped = self.reminders_skipped,
            renewed = self.renewed,
            ended = self.ended,
            conflicts = self.conflicts,
            "{message}"
        );
    }

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

/// The daemon's poll at its clock's current time: plans and records due renewal work (see
/// [`poll`]), then gives claims whose lease ran out back (see [`Deliverer::redrive`]).
pub async fn poll_now(deliverer: &Deliverer) -> Result<PollReport, ServiceError> {
    let d = deliverer;
    let started = std::time::Instant::now();
    let report = poll(&d.store, &d.settings, &d.calendars, d.clock.now()).await?;
    d.metrics
        .poll_seconds
        .observe(started.elapsed().as_secs_f64());
    d.redrive().await?;
    Ok(report)
}

/// Plans and records the due work of every subscription whose next due instant has come.
pub async fn poll(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    now: DateTime<Utc>,
) -> Result<PollReport, ServiceError> {
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
        report.log("poll done", None);
    }
    Ok(report)
}

/// One subscription's step as the store records it, and where its timeline goes on from.
struct Planned {
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
) -> Result<PollReport, ServiceError> {
    // Polls on other hosts may hold some of these subscriptions in their own groups: taking
    // the row locks in one order everywhere means they wait for each other, never deadlock.
    group.sort_by(|a, b| a.subscription.id.cmp(&b.subscription.id));
    let mut report = PollReport::default();
    let mut steps = Vec::with_capacity(group.len());
    for ctx in &group {
        let (mut step, planned) =
            plan_or_retry(settings, calendars, ctx, &timeline_input(ctx), now)?;
        if planned {
            watch_order(settings, calendars, ctx, now, &mut step.update);
        }
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
) -> Result<(Planned, bool), ServiceError> {
    let planned = calendar_for(settings, calendars, &ctx.reseller)
        .and_then(|calendar| steps::step(input, &calendar, &settings.renewal, now));
    match planned {
        Ok(step) => Ok((recorded_as(settings, ctx, input, step), true)),
        Err(error) => {
            warn!(subscription = %ctx.subscription.id, %error, "cannot plan renewal; retrying in 1 h");
            let update = RenewalUpdate {
                subscription_id: ctx.subscription.id.as_str().to_owned(),
                expected_term_end: input.term_end,
                notifications: Vec::new(),
                change: TermChange::None,
                cancel_pending_reminders: None,
                next_due_at: Some(now + chrono::Duration::hours(1)),
            };
            Ok((Planned { update, then: None }, false))
        }
    }
}

/// A planned step as the store records it: its mails as outbox rows, keyed by what they are
/// about, with the facts their templates show.
fn recorded_as(
    settings: &Settings,
    ctx: &SubscriptionContext,
    input: &TimelineInput,
    step: Step,
) -> Planned {
    let sid = ctx.subscription.id.as_str();
    let domain = &settings.mail.message_id_domain;
    let tz = input.tz;
    let owed = |key: String, facts: MailFacts| {
        let kind = facts.kind();
        NewNotification {
            message_id: message_id(&key, domain),
            key,
            kind: kind.as_str().to_owned(),
            subscription_id: sid.to_owned(),
            recipients: address_list(&kind.recipients(ctx)),
            payload: facts.to_payload(),
        }
    };
    let notifications = step
        .mails
        .into_iter()
        .map(|mail| match mail {
            StepMail::Reminder {
                term_end,
                offset,
                cutoff_date,
                cutoff_at,
                skip,
            } => {
                let key = reminder_key(sid, term_end, &offset);
                let facts = MailFacts::RenewalReminder(reminder_facts(
                    settings,
                    ctx,
                    tz,
                    term_end,
                    offset,
                    cutoff_date,
                    cutoff_at,
                ));
                (owed(key, facts), skip.map(|r| reason_text(r).to_owned()))
            }
            StepMail::Renewed {
                term_end,
                new_term_end,
                renews_again,
            } => (
                owed(
                    term_key(sid, NotificationKind::SubscriptionRenewed, term_end),
                    MailFacts::SubscriptionRenewed(RenewedFacts {
                        term_end,
                        new_term_start: term_end,
                        new_term_end,
                        renews_again,
                    }),
                ),
                None,
            ),
            StepMail::Ended { term_end } => (
                owed(
                    term_key(sid, NotificationKind::SubscriptionEnded, term_end),
                    MailFacts::SubscriptionEnded(EndedFacts { term_end }),
                ),
                None,
            ),
        })
        .collect();
    let update = RenewalUpdate {
        subscription_id: sid.to_owned(),
        expected_term_end: input.term_end,
        notifications,
        change: match step.change {
            StepChange::None => TermChange::None,
            StepChange::Renew(end) => TermChange::Renew(end),
            StepChange::End => TermChange::End,
        },
        cancel_pending_reminders: step
            .cancel_pending_reminders
            .then(|| reason_text(SkipReason::AutoRenewOff).to_owned()),
        next_due_at: step.next_due_at,
    };
    Planned {
        update,
        then: step.then,
    }
}

/// The facts of a reminder of the term ending `term_end`, with its cutoff shown in the
/// reseller's zone `tz`: what the poll records, and what `render` previews.
pub(super) fn reminder_facts(
    settings: &Settings,
    ctx: &SubscriptionContext,
    tz: chrono_tz::Tz,
    term_end: chrono::NaiveDate,
    offset: String,
    cutoff_date: chrono::NaiveDate,
    cutoff_at: DateTime<Utc>,
) -> ReminderFacts {
    let last_minute = (cutoff_at - chrono::Duration::minutes(1)).with_timezone(&tz);
    let cc = if settings.renewal.reminder_cc_customer {
        vec![ctx.customer.email.clone()]
    } else {
        vec![]
    };
    ReminderFacts {
        term_end,
        offset,
        cutoff_date,
        cutoff_at: cutoff_at.with_timezone(&tz).fixed_offset(),
        cutoff_deadline: format!(
            "{} ({})",
            last_minute.format("%A %Y-%m-%d, %H:%M %Z"),
            tz.name()
        ),
        timezone: TimeZoneName::from(tz),
        cc,
    }
}

/// The watchdog's part of a subscription's step: an order in flight whose stall instant has
/// come owes one `order_stalled` mail, keyed by its last step (so a catch-up after downtime
/// owes one, and only a later step then a new stall owes another); one still waiting makes the
/// subscription due again at that instant. A calendar that cannot answer leaves the order
/// unwatched this time, reported.
///
/// A provisioning event makes the subscription due at once (`next_due_at` 0); a poll that read
/// it just before may write its own, later, due instant over that, but never one after the
/// new step's stall, which comes after the old step's: the poll then plans the new step.
fn watch_order(
    settings: &Settings,
    calendars: &CalendarRegistry,
    ctx: &SubscriptionContext,
    now: DateTime<Utc>,
    update: &mut RenewalUpdate,
) {
    let tz = ctx.reseller.timezone.tz();
    let planned = calendar_for(settings, calendars, &ctx.reseller).and_then(|calendar| {
        stall::stall(
            &ctx.subscription.provisioning,
            settings.provisioning.stall_after,
            &calendar,
            tz,
        )
    });
    let stall = match planned {
        Ok(Some(stall)) => stall,
        Ok(None) => return,
        Err(error) => {
            warn!(subscription = %ctx.subscription.id, %error, "cannot plan the order's watchdog");
            return;
        }
    };
    if stall.at > now {
        update.next_due_at = Some(match update.next_due_at {
            Some(t) => t.min(stall.at),
            None => stall.at,
        });
        return;
    }
    let sid = ctx.subscription.id.as_str();
    let key = stalled_key(sid, stall.last_step.as_str());
    let kind = NotificationKind::OrderStalled;
    let facts = MailFacts::OrderStalled(stalled_facts(&stall, settings, tz));
    let mail = NewNotification {
        message_id: message_id(&key, &settings.mail.message_id_domain),
        key,
        kind: kind.as_str().to_owned(),
        subscription_id: sid.to_owned(),
        recipients: address_list(&kind.addressees(ctx, &settings.marketplace)),
        payload: facts.to_payload(),
    };
    update.notifications.push((mail, None));
}

/// The facts of the mail about a stall, its instants in the reseller's time zone.
pub fn stalled_facts(stall: &Stall, settings: &Settings, tz: chrono_tz::Tz) -> StalledFacts {
    let when = |t: DateTime<Utc>| {
        format!(
            "{} ({})",
            t.with_timezone(&tz).format("%A %Y-%m-%d, %H:%M %Z"),
            tz.name()
        )
    };
    StalledFacts {
        last_step: stall.last_step.as_str().to_owned(),
        last_step_at: stall.last_step_at.with_timezone(&tz).fixed_offset(),
        last_step_when: when(stall.last_step_at),
        missing_step: stall.missing_step.as_str().to_owned(),
        stalled_at: stall.at.with_timezone(&tz).fixed_offset(),
        stalled_when: when(stall.at),
        stall_after: settings.provisioning.stall_after.to_string(),
        timezone: TimeZoneName::from(tz),
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

/// Goes on with a subscription after a recorded renewal, one step (one term) at a time.
async fn poll_on(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    ctx: &SubscriptionContext,
    mut input: TimelineInput,
    now: DateTime<Utc>,
    report: &mut PollReport,
) -> Result<(), ServiceError> {
    // The first term was the group's step.
    for _ in 1..MAX_TERMS_PER_POLL {
        let (mut step, planned) = plan_or_retry(settings, calendars, ctx, &input, now)?;
        if planned {
            // Each step sets the next due instant: the order's stall keeps its place in it
            // (its mail, if owed, was recorded by the first step; recording it again is a no-op).
            watch_order(settings, calendars, ctx, now, &mut step.update);
        }
        let applied = store.apply_renewal(&step.update, now).await?;
        count(report, &step.update, applied);
        match (applied.applied, step.then) {
            (true, Some(next)) => input = next,
            _ => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};
    use serde_json::json;

    use super::*;
    use crate::notify::sample_context;

    // New rows store their facts exactly as the previous release's `json!` objects did.
    #[test]
    fn recorded_mails_store_their_facts_as_before() {
        let settings =
            Settings::from_toml_overlay("[renewal]\nreminder_cc_customer = true\n").unwrap();
        let ctx = sample_context();
        let input = timeline_input(&ctx);
        let tz = input.tz;
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let cutoff_at = Utc.with_ymd_and_hms(2026, 12, 19, 5, 0, 0).unwrap();
        let step = Step {
            mails: vec![
                StepMail::Reminder {
                    term_end: d(2026, 12, 28),
                    offset: "10bd".into(),
                    cutoff_date: d(2026, 12, 18),
                    cutoff_at,
                    skip: None,
                },
                StepMail::Renewed {
                    term_end: d(2026, 12, 28),
                    new_term_end: d(2027, 12, 28),
                    renews_again: true,
                },
                StepMail::Ended {
                    term_end: d(2027, 12, 28),
                },
            ],
            change: StepChange::None,
            cancel_pending_reminders: false,
            next_due_at: None,
            then: None,
        };
        let planned = recorded_as(&settings, &ctx, &input, step);
        let last_minute = (cutoff_at - chrono::Duration::minutes(1)).with_timezone(&tz);
        let before = [
            json!({
                "term_end": d(2026, 12, 28),
                "offset": "10bd",
                "cutoff_date": d(2026, 12, 18),
                "cutoff_at": cutoff_at.with_timezone(&tz).to_rfc3339(),
                "cutoff_deadline": format!("{} ({})", last_minute.format("%A %Y-%m-%d, %H:%M %Z"), tz.name()),
                "timezone": tz.name(),
                "cc": [ctx.customer.email.as_str()],
            }),
            json!({"term_end": d(2026, 12, 28), "new_term_start": d(2026, 12, 28),
                   "new_term_end": d(2027, 12, 28), "renews_again": true}),
            json!({"term_end": d(2027, 12, 28)}),
        ];
        let stored: Vec<String> = planned
            .update
            .notifications
            .iter()
            .map(|(n, _)| n.payload.to_string())
            .collect();
        assert_eq!(stored, before.map(|v| v.to_string()));
        assert!(stored[0].contains(r#""cutoff_at":"2026-12-19T00:00:00-05:00""#));
    }
}
