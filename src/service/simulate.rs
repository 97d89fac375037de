//! `simulate`: every mail the current data would produce in a date range — reminders,
//! renewals, ends, and the watchdog's mail about an order in flight that stalls — assuming a daemon that runs throughout. Reads only; sends and records
//! nothing. Pure per subscription, so the whole book runs in memory.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::{calendar_for, timeline_input};
use crate::calendar::{CalendarError, CalendarRegistry};
use crate::config::Settings;
use crate::domain::SubscriptionContext;
use crate::notify::NotificationKind;
use crate::renewal::plan::term_end_instant;
use crate::renewal::stall;
use crate::renewal::{self, TimelineInput};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimulatedMail {
    pub at: DateTime<Utc>,
    /// The instant in the reseller's time zone, to the second.
    pub local_at: String,
    /// The day in the reseller's time zone.
    pub local_date: NaiveDate,
    pub subscription: String,
    pub kind: &'static str,
    pub offset: Option<String>,
    pub term_end: NaiveDate,
    pub to: String,
}

/// Terms simulated per subscription at most: a year's range crosses at most two term ends.
const MAX_TERMS: usize = 50;

/// The mails of one subscription with `at` in `[from, to)`.
pub fn simulate_one(
    ctx: &SubscriptionContext,
    settings: &Settings,
    calendars: &CalendarRegistry,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    out: &mut Vec<SimulatedMail>,
) -> Result<(), CalendarError> {
    let calendar = calendar_for(settings, calendars, &ctx.reseller)?;
    let policy = &settings.renewal;
    let mut input: TimelineInput = timeline_input(ctx);
    let to_addr = ctx.reseller.email.as_str().to_owned();
    let push = |out: &mut Vec<SimulatedMail>,
                at: DateTime<Utc>,
                kind: NotificationKind,
                offset: Option<String>,
                term_end| {
        if at >= from && at < to {
            out.push(SimulatedMail {
                at,
                local_at: super::timeline::local(at, input_tz(ctx)),
                local_date: at.with_timezone(&input_tz(ctx)).date_naive(),
                subscription: ctx.subscription.id.as_str().to_owned(),
                kind: kind.as_str(),
                offset,
                term_end,
                to: to_addr.clone(),
            });
        }
    };
    // The watchdog: an order in flight that no later step reaches stalls once, at its instant.
    if let Some(stall) = stall::stall(
        &ctx.subscription.provisioning,
        settings.provisioning.stall_after,
        &calendar,
        input.tz,
    )? && stall.at >= from
        && stall.at < to
    {
        out.push(SimulatedMail {
            at: stall.at,
            local_at: super::timeline::local(stall.at, input.tz),
            local_date: stall.at.with_timezone(&input.tz).date_naive(),
            subscription: ctx.subscription.id.as_str().to_owned(),
            kind: NotificationKind::OrderStalled.as_str(),
            offset: None,
            term_end: input.term_end,
            to: settings.marketplace.operations_email.clone(),
        });
    }
    for _ in 0..MAX_TERMS {
        let end_at = term_end_instant(&input);
        if end_at >= from && input.auto_renew && input.disable_effective_term_end.is_none() {
            for r in renewal::reminders(input.term_end, &calendar, input.tz, policy)? {
                push(
                    out,
                    r.due_at,
                    NotificationKind::RenewalReminder,
                    Some(r.offset.to_string()),
                    input.term_end,
                );
            }
        }
        let stops = match input.disable_effective_term_end {
            Some(end) => end <= input.term_end,
            None => !input.auto_renew,
        };
        if stops {
            push(
                out,
                end_at,
                NotificationKind::SubscriptionEnded,
                None,
                input.term_end,
            );
            return Ok(());
        }
        push(
            out,
            end_at,
            NotificationKind::SubscriptionRenewed,
            None,
            input.term_end,
        );
        if end_at >= to {
            return Ok(());
        }
        let k = renewal::term_index_at(
            input.term_start,
            input.term_end.pred_opt().unwrap_or(input.term_end),
        );
        input.term_end =
            renewal::term_end(input.term_start, k + 1).ok_or(CalendarError::OutOfRange {
                date: input.term_end,
            })?;
    }
    Ok(())
}

fn input_tz(ctx: &SubscriptionContext) -> chrono_tz::Tz {
    ctx.reseller.timezone.tz()
}

/// Every mail the subscriptions `subs` would produce on the days `from..=to` (each in its
/// reseller's time zone), in the order they would go out. `progress` is told of each
/// subscription done.
pub fn simulate(
    subs: &[SubscriptionContext],
    settings: &Settings,
    calendars: &CalendarRegistry,
    from: NaiveDate,
    to: NaiveDate,
    mut progress: impl FnMut(),
) -> Result<Vec<SimulatedMail>, CalendarError> {
    // A window wide enough for every time zone; the local date decides.
    let window_from = from
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default()
        - chrono::Duration::days(1);
    let window_to = to
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default()
        + chrono::Duration::days(2);
    let mut mails = Vec::new();
    for ctx in subs {
        simulate_one(ctx, settings, calendars, window_from, window_to, &mut mails)?;
        progress();
    }
    mails.retain(|m| m.local_date >= from && m.local_date <= to);
    mails.sort_by(|a, b| {
        (a.local_date, a.at)
            .cmp(&(b.local_date, b.at))
            .then_with(|| natural_order(&a.subscription, &b.subscription))
    });
    Ok(mails)
}

/// Ids as people count them: runs of digits compare as numbers, so S2 comes before S10.
pub fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut digits = None;
        for (i, c) in s.char_indices() {
            let d = c.is_ascii_digit();
            if digits.is_some_and(|was| was != d) {
                out.push((digits == Some(true), &s[start..i]));
                start = i;
            }
            digits = Some(d);
        }
        if start < s.len() {
            out.push((digits == Some(true), &s[start..]));
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, x), (db, y)) in ca.iter().zip(&cb) {
        let ord = if *da && *db {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::natural_order;

    #[test]
    fn ids_sort_as_people_count() {
        let mut ids = vec!["S10", "S2", "S1", "T1", "S02", "S", "S2a", "S2b10", "S2b9"];
        ids.sort_by(|a, b| natural_order(a, b));
        assert_eq!(
            ids,
            ["S", "S1", "S02", "S2", "S2a", "S2b9", "S2b10", "S10", "T1"]
        );
    }
}
