//! The watchdog's rule: when an order in flight has waited too long on its next step. Pure,
//! like the rest of the renewal rules: the order's last step, the calendar, the setting.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{ReminderOffset, local_instant};
use crate::calendar::{Calendar, CalendarError};
use crate::domain::{Provisioning, ProvisioningState};

/// An order that stalls: at which instant, waiting since which step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// The furthest step reached (`pending`: opened, no notice yet).
    pub last_step: ProvisioningState,
    pub last_step_at: DateTime<Utc>,
    /// The step that did not come.
    pub missing_step: ProvisioningState,
    pub at: DateTime<Utc>,
}

/// The instant an order whose last step came at `last_at` stalls: `after` later, counted from
/// the reseller's local date of that step, at the same local time. Business days skip the
/// calendar's weekends and holidays; a step taken on a day off counts from that day.
pub fn stall_instant(
    last_at: DateTime<Utc>,
    after: ReminderOffset,
    calendar: &Calendar,
    tz: Tz,
) -> Result<DateTime<Utc>, CalendarError> {
    let local = last_at.with_timezone(&tz).naive_local();
    let date = match after {
        ReminderOffset::BusinessDays(n) => calendar.business_days_after(local.date(), n)?,
        ReminderOffset::Days(n) => local
            .date()
            .checked_add_days(chrono::Days::new(u64::from(n)))
            .ok_or(CalendarError::OutOfRange { date: local.date() })?,
    };
    Ok(local_instant(date, local.time(), tz))
}

/// When the order `p` stalls, if it is in flight: the watchdog's plan for it. (Whether that
/// instant has come is the caller's question: a stall is planned before it is due.)
pub fn stall(
    p: &Provisioning,
    after: ReminderOffset,
    calendar: &Calendar,
    tz: Tz,
) -> Result<Option<Stall>, CalendarError> {
    if !p.in_flight {
        return Ok(None);
    }
    let Some((last_step, last_step_at)) = p.last_step() else {
        return Ok(None);
    };
    let Some(missing_step) = last_step.next() else {
        return Ok(None);
    };
    Ok(Some(Stall {
        last_step,
        last_step_at,
        missing_step,
        at: stall_instant(last_step_at, after, calendar, tz)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::CalendarRegistry;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn two_business_days_skip_the_weekend_and_a_holiday() {
        let us = CalendarRegistry::builtin().get("us").unwrap();
        let ny: Tz = "America/New_York".parse().unwrap();
        // Friday 2026-01-16, 10:30 in New York; Monday the 19th is Martin Luther King Day.
        let at = stall_instant(
            utc("2026-01-16T15:30:00Z"),
            ReminderOffset::BusinessDays(2),
            &us,
            ny,
        )
        .unwrap();
        assert_eq!(at, utc("2026-01-21T15:30:00Z"), "Wednesday 10:30 New York");
        // Calendar days do not skip anything.
        let at = stall_instant(
            utc("2026-01-16T15:30:00Z"),
            ReminderOffset::Days(2),
            &us,
            ny,
        )
        .unwrap();
        assert_eq!(at, utc("2026-01-18T15:30:00Z"));
    }

    #[test]
    fn only_orders_in_flight_stall_and_they_miss_the_next_step() {
        let none = CalendarRegistry::builtin().get("none").unwrap();
        let tz: Tz = "UTC".parse().unwrap();
        let mut p = Provisioning {
            ready_at: Some(utc("2026-03-02T08:00:00Z")),
            ..Provisioning::default()
        };
        let after = ReminderOffset::BusinessDays(1);
        assert_eq!(stall(&p, after, &none, tz).unwrap(), None, "not in flight");
        p.in_flight = true;
        let s = stall(&p, after, &none, tz).unwrap().unwrap();
        assert_eq!(s.last_step, ProvisioningState::Ready);
        assert_eq!(s.missing_step, ProvisioningState::OrderProcessed);
        assert_eq!(s.at, utc("2026-03-03T08:00:00Z"));
    }
}
