//! `timeline SUBSCRIPTION`: the current term, cutoff, reminders and what a disable request
//! would do now, in the reseller's time zone.

use std::io::Write;

use chrono::{DateTime, Utc};

use super::CliError;
use crate::renewal;
use crate::service::timeline::{TimelineReport, local};

/// A timestamp on the command line: RFC 3339 with an offset, so it means one instant.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!("{s:?} is not a timestamp: expected RFC 3339 with an offset, like 2026-12-18T23:59:00-05:00")
        })
}

pub fn render(report: &TimelineReport, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let view = report.view();
    let t = &report.timeline;
    let tz = report.ctx.reseller.timezone.tz();
    let shown = report;
    if json {
        super::print_json(out, &view)?;
        return Ok(());
    }
    let s = &shown.ctx.subscription;
    writeln!(
        out,
        "subscription  {}  {} ({}), {}, reseller {}",
        s.id,
        s.plan,
        s.product_id,
        super::count(usize::from(s.seats.get()), "seat", "seats"),
        shown.ctx.reseller.name
    )?;
    writeln!(
        out,
        "as of         {}  (calendar {}, {})",
        view.at, view.calendar, view.timezone
    )?;
    writeln!(
        out,
        "term          {} of 12 months: {} to {}",
        t.term_index, t.term_start, t.term_end
    )?;
    writeln!(
        out,
        "cutoff        {}; auto-renew can be disabled until {}",
        t.cutoff_date.format("%a %Y-%m-%d"),
        view.cutoff_at
    )?;
    for (i, r) in view.reminders.iter().enumerate() {
        writeln!(
            out,
            "{}{:<5} {}  {}",
            if i == 0 {
                "reminders     "
            } else {
                "              "
            },
            r.offset,
            r.due_at,
            r.state
        )?;
    }
    writeln!(
        out,
        "auto-renew    {}",
        if t.auto_renew { "on" } else { "off" }
    )?;
    let verdict = match t.reason {
        None => format!("yes: the subscription would end at {}", t.term_end),
        Some(renewal::Reason::AfterCutoff) => format!(
            "not for this term: past the cutoff, it renews once more and ends at {}",
            t.effective_term_end
        ),
        Some(renewal::Reason::LicensesAssigned) => format!(
            "no: {} still assigned; un-assign them first{}",
            super::count(
                usize::from(s.assigned_licenses.get()),
                "license is",
                "licenses are"
            ),
            if t.renews_once_more {
                format!(
                    " (past the cutoff: it would then end at {})",
                    t.effective_term_end
                )
            } else {
                String::new()
            }
        ),
        Some(renewal::Reason::AlreadyDisabled) => {
            format!("already disabled: ends at {}", t.effective_term_end)
        }
    };
    writeln!(out, "disable now   {verdict}")?;
    let p = &view.provisioning;
    let step = |name: &str, at: &Option<String>| at.as_ref().map(|t| format!("{name} {t}"));
    let steps: Vec<String> = [
        step("opened", &p.opened_at),
        step("ready", &p.ready_at),
        step("order_processed", &p.order_processed_at),
        step("activated", &p.activated_at),
        step("abandoned", &p.abandoned_at),
    ]
    .into_iter()
    .flatten()
    .collect();
    writeln!(
        out,
        "provisioning  {}{}{}",
        p.state,
        if p.in_flight {
            " (order in flight)"
        } else {
            ""
        },
        if steps.is_empty() {
            String::new()
        } else {
            format!(": {}", steps.join(", "))
        }
    )?;
    if let (Some(at), Some(missing)) = (&p.stalls_at, p.missing_step) {
        writeln!(out, "watchdog      stalls at {at} unless {missing} comes")?;
    }
    if let Some(reason) = p.abandon_reason {
        writeln!(out, "abandoned     {reason}")?;
    }
    for a in p.audit.iter().filter(|a| a.flag.is_some()) {
        writeln!(
            out,
            "flagged       {} at {}: {} ({} was in flight)",
            a.action,
            local(a.at, tz),
            a.flag.as_deref().unwrap_or_default(),
            a.overlapping.as_deref().unwrap_or("?")
        )?;
    }
    for (i, r) in shown.requests.iter().enumerate() {
        writeln!(
            out,
            "{}{}  by {} via {}: {}{} (saw {} assigned, term end {}){}",
            if i == 0 {
                "requests      "
            } else {
                "              "
            },
            local(r.requested_at, tz),
            r.requested_by,
            r.via,
            r.decision,
            r.reason
                .as_deref()
                .map(|x| format!(", {x}"))
                .unwrap_or_default(),
            super::count(r.seen_assigned as usize, "license", "licenses"),
            r.seen_term_end,
            r.effective_term_end
                .map(|d| format!(" -> ends {d}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// Gathers the timeline of the subscription as of `at` (default now) and prints it.
pub(super) async fn run(
    settings: crate::config::Settings,
    clock: crate::clock::SharedClock,
    subscription: String,
    at: Option<DateTime<Utc>>,
    json: bool,
    out: &mut dyn Write,
) -> Result<std::process::ExitCode, CliError> {
    let id = crate::domain::SubscriptionId::parse(&subscription)
        .map_err(|e| super::input_error("subscription", e))?;
    let store = crate::service::open_existing_store(&settings).await?;
    let calendars = settings.calendars()?;
    let at = at.unwrap_or_else(|| clock.now());
    let report =
        crate::service::timeline::timeline_report(&store, &settings, &calendars, &id, at).await?;
    store.close().await;
    render(&report, json, out)?;
    Ok(std::process::ExitCode::SUCCESS)
}
