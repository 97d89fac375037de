//! The timeline of one subscription as operators and the marketplace read it: the renewal
//! rules' view, the outbox state of its reminders, its disable requests, and its order's
//! provisioning.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::{ServiceError, calendar_for, calendar_name, subscription, timeline_input};
use crate::calendar::CalendarRegistry;
use crate::config::Settings;
use crate::domain::SubscriptionId;
use crate::domain::{ProvisioningState, SubscriptionContext};
use crate::notify::reminder_key;
use crate::renewal::stall::{self, Stall};
use crate::renewal::{self, Timeline};
use crate::store::{DisableRow, OutboxState, ProvisioningAuditRow, Store};

#[derive(Debug, Serialize)]
pub struct ReminderView {
    pub offset: String,
    pub date: chrono::NaiveDate,
    pub due_at: String,
    pub state: &'static str,
}

#[derive(Debug, Serialize)]
pub struct TimelineView<'a> {
    pub subscription: &'a str,
    pub at: String,
    pub calendar: &'a str,
    pub timezone: &'a str,
    pub term_index: u32,
    pub term_start: chrono::NaiveDate,
    pub term_end: chrono::NaiveDate,
    pub cutoff_date: chrono::NaiveDate,
    pub cutoff_at: String,
    pub reminders: Vec<ReminderView>,
    pub auto_renew: bool,
    pub assigned_licenses: u16,
    pub can_disable: bool,
    pub reason: Option<&'static str>,
    pub renews_once_more: bool,
    pub effective_term_end: chrono::NaiveDate,
    pub disable_requests: &'a [DisableRow],
    pub provisioning: ProvisioningView<'a>,
}

/// The order's provisioning: its state (the furthest step), each step's instant, whether it
/// is in flight, when the watchdog would call it stalled, and its audit.
#[derive(Debug, Serialize)]
pub struct ProvisioningView<'a> {
    pub state: ProvisioningState,
    pub in_flight: bool,
    /// Instants in the reseller's time zone; `null` for a step not recorded.
    pub opened_at: Option<String>,
    pub ready_at: Option<String>,
    pub order_processed_at: Option<String>,
    pub activated_at: Option<String>,
    pub abandoned_at: Option<String>,
    pub abandon_reason: Option<&'a str>,
    /// While in flight: when it stalls (or stalled) waiting for `missing_step`.
    pub stalls_at: Option<String>,
    pub missing_step: Option<ProvisioningState>,
    pub audit: &'a [ProvisioningAuditRow],
}

pub struct TimelineReport {
    pub ctx: SubscriptionContext,
    pub calendar: String,
    pub timeline: Timeline,
    pub at: DateTime<Utc>,
    /// Outbox state of each reminder, when one was recorded.
    pub states: Vec<Option<OutboxState>>,
    /// Every decided disable-auto-renew request.
    pub requests: Vec<DisableRow>,
    /// The watchdog's plan for the order, while it is in flight.
    pub stall: Option<Stall>,
    /// The order's audit (steps recorded first, abandon).
    pub audit: Vec<ProvisioningAuditRow>,
}

pub fn local(t: DateTime<Utc>, tz: Tz) -> String {
    // To the second: nobody acts on a cutoff's nanoseconds.
    t.with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Gathers the timeline of `id` as of `at`.
pub async fn timeline_report(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    id: &SubscriptionId,
    at: DateTime<Utc>,
) -> Result<TimelineReport, ServiceError> {
    let ctx = subscription(store, id).await?;
    let mut reports = timeline_reports(store, settings, calendars, vec![ctx], at).await?;
    Ok(reports.remove(0))
}

/// The timelines of `ctxs` as of `at`, in their order: the outbox, the disable requests and
/// the provisioning audit read once for all of them (a list page of renewals would otherwise
/// read them once per subscription).
pub async fn timeline_reports(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    ctxs: Vec<SubscriptionContext>,
    at: DateTime<Utc>,
) -> Result<Vec<TimelineReport>, ServiceError> {
    let planned = ctxs
        .into_iter()
        .map(|ctx| Planned::new(settings, calendars, ctx, at))
        .collect::<Result<Vec<_>, _>>()?;
    let keys: Vec<String> = planned.iter().flat_map(|p| p.keys.clone()).collect();
    let states: HashMap<String, OutboxState> =
        store.outbox_states(&keys).await?.into_iter().collect();
    let ids: Vec<&str> = planned
        .iter()
        .map(|p| p.ctx.subscription.id.as_str())
        .collect();
    let mut requests: HashMap<String, Vec<DisableRow>> = HashMap::new();
    for (sub, row) in store.disable_requests_of(&ids).await? {
        requests.entry(sub).or_default().push(row);
    }
    let mut audits: HashMap<String, Vec<ProvisioningAuditRow>> = HashMap::new();
    for row in store.provisioning_audits(&ids).await? {
        audits
            .entry(row.subscription_id.clone())
            .or_default()
            .push(row);
    }
    Ok(planned
        .into_iter()
        .map(|p| {
            let id = p.ctx.subscription.id.as_str();
            let requests = requests.remove(id).unwrap_or_default();
            let audit = audits.remove(id).unwrap_or_default();
            let states = p.keys.iter().map(|k| states.get(k).copied()).collect();
            p.report(at, states, requests, audit)
        })
        .collect())
}

/// What the rules say of one subscription, before its records are read: its timeline, its
/// order's stall, and the outbox keys of its reminders.
struct Planned {
    ctx: SubscriptionContext,
    calendar: String,
    timeline: Timeline,
    stall: Option<Stall>,
    keys: Vec<String>,
}

impl Planned {
    fn new(
        settings: &Settings,
        calendars: &CalendarRegistry,
        ctx: SubscriptionContext,
        at: DateTime<Utc>,
    ) -> Result<Self, ServiceError> {
        let calendar = calendar_name(settings, &ctx.reseller).to_owned();
        let cal = calendar_for(settings, calendars, &ctx.reseller)?;
        let input = timeline_input(&ctx);
        let timeline = renewal::timeline(&input, &cal, &settings.renewal, at)?;
        let keys = timeline
            .reminders
            .iter()
            .map(|r| {
                reminder_key(
                    ctx.subscription.id.as_str(),
                    timeline.term_end,
                    &r.offset.to_string(),
                )
            })
            .collect();
        let stall = stall::stall(
            &ctx.subscription.provisioning,
            settings.provisioning.stall_after,
            &cal,
            input.tz,
        )?;
        Ok(Self {
            ctx,
            calendar,
            timeline,
            stall,
            keys,
        })
    }

    fn report(
        self,
        at: DateTime<Utc>,
        states: Vec<Option<OutboxState>>,
        requests: Vec<DisableRow>,
        audit: Vec<ProvisioningAuditRow>,
    ) -> TimelineReport {
        TimelineReport {
            ctx: self.ctx,
            calendar: self.calendar,
            timeline: self.timeline,
            at,
            states,
            requests,
            stall: self.stall,
            audit,
        }
    }
}

impl TimelineReport {
    pub fn view(&self) -> TimelineView<'_> {
        let t = &self.timeline;
        let tz = self.ctx.reseller.timezone.tz();
        let reminders = t
            .reminders
            .iter()
            .zip(&self.states)
            .map(|(r, state)| ReminderView {
                offset: r.offset.to_string(),
                date: r.date,
                due_at: local(r.due_at, tz),
                state: match state {
                    Some(s) => s.as_str(),
                    None if !t.auto_renew => "skipped",
                    None if self.at < r.due_at => "pending",
                    None if self.at >= t.cutoff_at => "skipped",
                    None => "due",
                },
            })
            .collect();
        TimelineView {
            subscription: self.ctx.subscription.id.as_str(),
            at: local(self.at, tz),
            calendar: &self.calendar,
            timezone: tz.name(),
            term_index: t.term_index,
            term_start: t.term_start,
            term_end: t.term_end,
            cutoff_date: t.cutoff_date,
            cutoff_at: local(t.cutoff_at, tz),
            reminders,
            auto_renew: t.auto_renew,
            assigned_licenses: self.ctx.subscription.assigned_licenses.get(),
            can_disable: t.can_disable,
            reason: t.reason.map(|r| r.as_str()),
            renews_once_more: t.renews_once_more,
            effective_term_end: t.effective_term_end,
            disable_requests: &self.requests,
            provisioning: self.provisioning_view(),
        }
    }

    fn provisioning_view(&self) -> ProvisioningView<'_> {
        let p = &self.ctx.subscription.provisioning;
        let tz = self.ctx.reseller.timezone.tz();
        let shown = |t: Option<DateTime<Utc>>| t.map(|t| local(t, tz));
        ProvisioningView {
            state: p.state(),
            in_flight: p.in_flight,
            opened_at: shown(p.opened_at),
            ready_at: shown(p.ready_at),
            order_processed_at: shown(p.order_processed_at),
            activated_at: shown(p.activated_at),
            abandoned_at: shown(p.abandoned_at),
            abandon_reason: p.abandon_reason.as_deref(),
            stalls_at: shown(self.stall.map(|s| s.at)),
            missing_step: self.stall.map(|s| s.missing_step),
            audit: &self.audit,
        }
    }
}
