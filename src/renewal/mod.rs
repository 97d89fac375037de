//! The renewal timeline, as pure functions of (subscription terms, calendar, policy, now): no
//! I/O and no clock of its own, so every rule can be checked on exact dates.
//!
//! - Term k (k ≥ 1) ends on the k-th anniversary of the original start, always computed from
//!   that start (a Feb 29 start gives Feb 28 ends, and Feb 29 again in leap years).
//! - The cutoff date is N business days before the term end; disabling auto-renew is allowed
//!   until the end of that day in the reseller's time zone.
//! - Reminders fall a configured number of calendar or business days before the cutoff date,
//!   always on a business day, at a configured local time.

mod offset;
pub mod plan;
pub mod stall;
pub mod steps;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::calendar::{Calendar, CalendarError};

pub use offset::ReminderOffset;

/// End of term `k` (k ≥ 1) of a subscription that started on `term_start`; `None` only past
/// chrono's range.
pub fn term_end(term_start: NaiveDate, k: u32) -> Option<NaiveDate> {
    term_start.checked_add_months(Months::new(12u32.checked_mul(k)?))
}

/// The term that contains `date`: the k ≥ 1 with term_end(k - 1) ≤ date < term_end(k), where
/// term_end(0) is the start. Dates before the start belong to term 1.
pub fn term_index_at(term_start: NaiveDate, date: NaiveDate) -> u32 {
    let years = (date.year() - term_start.year()).max(0) as u32;
    // The anniversary count is `years` or one off; check the neighbours.
    let mut k = years.max(1);
    while k > 1 && term_end(term_start, k - 1).is_some_and(|e| e > date) {
        k -= 1;
    }
    while term_end(term_start, k).is_some_and(|e| e <= date) {
        k += 1;
    }
    k
}

/// Whether `end` is one of the anniversaries of `start` (a well-formed term end).
pub fn is_anniversary(start: NaiveDate, end: NaiveDate) -> bool {
    end > start && term_end(start, term_index_at(start, end.pred_opt().unwrap_or(end))) == Some(end)
}

/// The wall-clock `time` on `date` in `tz` as an instant. A time that does not exist (the
/// clocks jump over it) gives the first instant after the jump; a time that happens twice
/// (clocks fall back) gives the earlier.
pub fn local_instant(date: NaiveDate, time: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let local = NaiveDateTime::new(date, time);
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        chrono::LocalResult::None => first_instant_at_or_after(local, tz),
    }
}

/// The earliest instant whose local time in `tz` is at or after `local`, found by bisection
/// (gaps are at most a day long, e.g. Samoa skipping 2011-12-30).
fn first_instant_at_or_after(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    let local_of = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .map(|t| t.with_timezone(&tz).naive_local())
            .unwrap_or(NaiveDateTime::MAX)
    };
    let guess = local.and_utc().timestamp();
    let (mut lo, mut hi) = (guess - 2 * 86_400, guess + 2 * 86_400);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local_of(mid) >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Start of the day in `tz` (midnight, or the first instant of a day that begins in a gap).
pub fn start_of_day(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    local_instant(date, NaiveTime::MIN, tz)
}

/// The last day on which auto-renew may still be disabled for a term ending on `term_end`.
pub fn cutoff_date(
    term_end: NaiveDate,
    calendar: &Calendar,
    business_days: u32,
) -> Result<NaiveDate, CalendarError> {
    calendar.business_days_before(term_end, business_days)
}

/// The first instant at which disabling no longer affects this term: the start of the day
/// after the cutoff date in the reseller's time zone (an exclusive bound).
pub fn cutoff_instant(cutoff_date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    start_of_day(cutoff_date.succ_opt().unwrap_or(cutoff_date), tz)
}

/// Renewal settings (`[renewal]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenewalPolicy {
    /// Auto-renew may be disabled until this many business days before the term end.
    pub cutoff_business_days: u32,
    /// Reminders before the cutoff date: `"30d"` calendar days, `"10bd"` business days.
    pub reminder_offsets: Vec<ReminderOffset>,
    /// Local time of day (reseller's zone) at which reminders are due, `"HH:MM"`.
    #[serde(with = "hhmm")]
    pub reminder_time: NaiveTime,
    /// Send reminders to the customer too, in Cc.
    pub reminder_cc_customer: bool,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            cutoff_business_days: 5,
            reminder_offsets: vec![
                ReminderOffset::Days(30),
                ReminderOffset::BusinessDays(10),
                ReminderOffset::BusinessDays(1),
            ],
            reminder_time: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or(NaiveTime::MIN),
            reminder_cc_customer: false,
        }
    }
}

mod hhmm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let s = String::deserialize(d)?;
        NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?} is not a time of day (expected HH:MM, like 09:00)"
            ))
        })
    }
}

/// One reminder of one term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledReminder {
    pub offset: ReminderOffset,
    pub date: NaiveDate,
    pub due_at: DateTime<Utc>,
}

/// The reminders of the term ending on `term_end`, by due time. Each is keyed by its offset,
/// so two offsets landing on the same day are two reminders (the poller may fold them).
pub fn reminders(
    term_end: NaiveDate,
    calendar: &Calendar,
    tz: Tz,
    policy: &RenewalPolicy,
) -> Result<Vec<ScheduledReminder>, CalendarError> {
    let cutoff = cutoff_date(term_end, calendar, policy.cutoff_business_days)?;
    let mut out = Vec::with_capacity(policy.reminder_offsets.len());
    for offset in &policy.reminder_offsets {
        let date = match *offset {
            ReminderOffset::Days(n) => {
                let d = cutoff
                    .checked_sub_days(chrono::Days::new(u64::from(n)))
                    .ok_or(CalendarError::OutOfRange { date: cutoff })?;
                // Never on a non-business day: move back to the business day before.
                calendar.roll_back(d)?
            }
            ReminderOffset::BusinessDays(n) => calendar.business_days_before(cutoff, n)?,
        };
        out.push(ScheduledReminder {
            offset: *offset,
            date,
            due_at: local_instant(date, policy.reminder_time, tz),
        });
    }
    out.sort_by_key(|r| (r.due_at, r.offset));
    Ok(out)
}

/// What the timeline needs to know of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineInput {
    /// Start of the first term.
    pub term_start: NaiveDate,
    /// End of the current term, as stored.
    pub term_end: NaiveDate,
    pub tz: Tz,
    pub auto_renew: bool,
    pub assigned_licenses: u32,
    /// Set once a disable request was accepted: the term end at which the subscription stops.
    pub disable_effective_term_end: Option<NaiveDate>,
}

/// Why a disable request at this moment would not stop the renewal at this term end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Licenses are still assigned to end users; they must be un-assigned first.
    LicensesAssigned,
    /// Past the cutoff: a request now is taken for the next term (one more renewal).
    AfterCutoff,
    /// Auto-renew is off already.
    AlreadyDisabled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LicensesAssigned => "licenses_assigned",
            Self::AfterCutoff => "after_cutoff",
            Self::AlreadyDisabled => "already_disabled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub term_index: u32,
    pub term_start: NaiveDate,
    pub term_end: NaiveDate,
    pub cutoff_date: NaiveDate,
    /// Exclusive: disabling at or after this instant applies to the next term.
    pub cutoff_at: DateTime<Utc>,
    pub reminders: Vec<ScheduledReminder>,
    pub auto_renew: bool,
    /// Whether a disable request now would stop the renewal at this term end.
    pub can_disable: bool,
    pub reason: Option<Reason>,
    /// Whether a disable request now would still let the subscription renew once more.
    pub renews_once_more: bool,
    /// The term end at which a disable request now (or the accepted one) takes effect.
    pub effective_term_end: NaiveDate,
}

/// The outcome of a request to disable auto-renew, decided on the state and the clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DisableDecision {
    Accepted {
        effective_term_end: NaiveDate,
        renews_once_more: bool,
        cutoff_at: DateTime<Utc>,
    },
    Rejected {
        reason: Reason,
        assigned_licenses: u32,
    },
    AlreadyDisabled {
        effective_term_end: NaiveDate,
    },
}

fn current_term(input: &TimelineInput) -> (u32, NaiveDate) {
    let k = term_index_at(
        input.term_start,
        input.term_end.pred_opt().unwrap_or(input.term_end),
    );
    let start = if k <= 1 {
        input.term_start
    } else {
        term_end(input.term_start, k - 1).unwrap_or(input.term_start)
    };
    (k, start)
}

/// Decides a disable request at `now`: licenses still assigned reject it; before the cutoff
/// instant it takes effect at this term end; at or after, at the next one (one more renewal);
/// an accepted request is final and answered the same way again.
pub fn decide_disable(
    input: &TimelineInput,
    calendar: &Calendar,
    policy: &RenewalPolicy,
    now: DateTime<Utc>,
) -> Result<DisableDecision, CalendarError> {
    if let Some(effective_term_end) = input.disable_effective_term_end {
        return Ok(DisableDecision::AlreadyDisabled { effective_term_end });
    }
    if !input.auto_renew {
        return Ok(DisableDecision::AlreadyDisabled {
            effective_term_end: input.term_end,
        });
    }
    if input.assigned_licenses > 0 {
        return Ok(DisableDecision::Rejected {
            reason: Reason::LicensesAssigned,
            assigned_licenses: input.assigned_licenses,
        });
    }
    let cutoff = cutoff_date(input.term_end, calendar, policy.cutoff_business_days)?;
    let cutoff_at = cutoff_instant(cutoff, input.tz);
    if now < cutoff_at {
        Ok(DisableDecision::Accepted {
            effective_term_end: input.term_end,
            renews_once_more: false,
            cutoff_at,
        })
    } else {
        let (k, _) = current_term(input);
        let next = term_end(input.term_start, k + 1).ok_or(CalendarError::OutOfRange {
            date: input.term_end,
        })?;
        Ok(DisableDecision::Accepted {
            effective_term_end: next,
            renews_once_more: true,
            cutoff_at,
        })
    }
}

/// The current term as of `now`: its dates, cutoff, reminders, and what a disable request now
/// would do.
pub fn timeline(
    input: &TimelineInput,
    calendar: &Calendar,
    policy: &RenewalPolicy,
    now: DateTime<Utc>,
) -> Result<Timeline, CalendarError> {
    let (term_index, term_start) = current_term(input);
    let cutoff = cutoff_date(input.term_end, calendar, policy.cutoff_business_days)?;
    let cutoff_at = cutoff_instant(cutoff, input.tz);
    let reminders = reminders(input.term_end, calendar, input.tz, policy)?;
    let decision = decide_disable(input, calendar, policy, now)?;
    let (can_disable, reason, renews_once_more, effective_term_end) = match decision {
        DisableDecision::Accepted {
            effective_term_end,
            renews_once_more,
            ..
        } => (
            !renews_once_more,
            renews_once_more.then_some(Reason::AfterCutoff),
            renews_once_more,
            effective_term_end,
        ),
        DisableDecision::Rejected { reason, .. } => {
            // Once the licenses are un-assigned, the cutoff still decides.
            let late = now >= cutoff_at;
            let effective = if late {
                term_end(input.term_start, term_index + 1).unwrap_or(input.term_end)
            } else {
                input.term_end
            };
            (false, Some(reason), late, effective)
        }
        DisableDecision::AlreadyDisabled { effective_term_end } => (
            false,
            Some(Reason::AlreadyDisabled),
            false,
            effective_term_end,
        ),
    };
    Ok(Timeline {
        term_index,
        term_start,
        term_end: input.term_end,
        cutoff_date: cutoff,
        cutoff_at,
        reminders,
        auto_renew: input.auto_renew,
        can_disable,
        reason,
        renews_once_more,
        effective_term_end,
    })
}
