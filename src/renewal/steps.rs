//! One step of a subscription's timeline as the poll records it: the mails owed (or recorded
//! as skipped, with why), the term change, and the next instant the poll has work for it.
//! Pure, like [`plan`](super::plan): a function of the terms, the calendar, the policy and
//! the instant; the poll turns a step into outbox rows and writes it.

use chrono::{DateTime, NaiveDate, Utc};

use super::plan::{Action, SkipReason, plan, term_end_instant};
use super::{RenewalPolicy, TimelineInput, cutoff_date, cutoff_instant, reminders};
use crate::calendar::{Calendar, CalendarError};

/// A mail one step owes, or records as skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepMail {
    /// A reminder of the term ending `term_end`; `skip` says why it is recorded unsent.
    Reminder {
        term_end: NaiveDate,
        offset: String,
        cutoff_date: NaiveDate,
        cutoff_at: DateTime<Utc>,
        skip: Option<SkipReason>,
    },
    /// The term ending `term_end` renewed until `new_term_end`.
    Renewed {
        term_end: NaiveDate,
        new_term_end: NaiveDate,
        /// Whether the new term renews in turn.
        renews_again: bool,
    },
    /// The subscription ended with the term ending `term_end`.
    Ended { term_end: NaiveDate },
}

/// What happens to the current term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepChange {
    None,
    Renew(NaiveDate),
    End,
}

/// One planned step of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub mails: Vec<StepMail>,
    pub change: StepChange,
    /// Auto-renew is off: reminders still pending are to be cancelled.
    pub cancel_pending_reminders: bool,
    /// When the poll has work for it next; `None` once it ended.
    pub next_due_at: Option<DateTime<Utc>>,
    /// Where its timeline goes on from if the step is recorded and more is due at once (a
    /// renewal after a long downtime).
    pub then: Option<TimelineInput>,
}

/// Why a reminder is recorded as skipped, as the outbox shows it.
pub fn reason_text(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::Superseded => "superseded: a later reminder of this term was due as well",
        SkipReason::AfterCutoff => "after the cutoff: no reminder is sent once it has passed",
        SkipReason::AutoRenewOff => "auto-renew is off",
    }
}

/// The next instant strictly after `now` at which the poll has something to do.
pub fn next_due(
    input: &TimelineInput,
    calendar: &Calendar,
    policy: &RenewalPolicy,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, CalendarError> {
    let end = term_end_instant(input);
    if input.auto_renew && input.disable_effective_term_end.is_none() {
        let next_reminder = reminders(input.term_end, calendar, input.tz, policy)?
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

/// Plans one step of one subscription's timeline as of `now`: the mail owed or skipped, the
/// term change and the next due instant.
pub fn step(
    input: &TimelineInput,
    calendar: &Calendar,
    policy: &RenewalPolicy,
    now: DateTime<Utc>,
) -> Result<Step, CalendarError> {
    let actions = plan(input, calendar, policy, now)?;
    let mut mails = Vec::new();
    let mut change = StepChange::None;
    let reminder = |term_end: NaiveDate,
                    offset: String,
                    skip: Option<SkipReason>|
     -> Result<StepMail, CalendarError> {
        let cutoff = cutoff_date(term_end, calendar, policy.cutoff_business_days)?;
        Ok(StepMail::Reminder {
            term_end,
            offset,
            cutoff_date: cutoff,
            cutoff_at: cutoff_instant(cutoff, input.tz),
            skip,
        })
    };
    let auto_renew_off = !input.auto_renew || input.disable_effective_term_end.is_some();
    if auto_renew_off && now < term_end_instant(input) {
        // Reminders not yet due will never be sent either: record them as skipped now, so
        // the outbox shows why, and nothing later re-plans them.
        for r in reminders(input.term_end, calendar, input.tz, policy)? {
            mails.push(reminder(
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
            } => mails.push(reminder(*term_end, offset.to_string(), None)?),
            Action::SkipReminder {
                term_end,
                offset,
                reason,
            } => mails.push(reminder(*term_end, offset.to_string(), Some(*reason))?),
            Action::Renew {
                term_end,
                new_term_end,
            } => {
                let renews_again = match input.disable_effective_term_end {
                    Some(stop) => stop > *new_term_end,
                    None => input.auto_renew,
                };
                mails.push(StepMail::Renewed {
                    term_end: *term_end,
                    new_term_end: *new_term_end,
                    renews_again,
                });
                change = StepChange::Renew(*new_term_end);
            }
            Action::End { term_end } => {
                mails.push(StepMail::Ended {
                    term_end: *term_end,
                });
                change = StepChange::End;
            }
        }
    }
    let mut next = input.clone();
    if let StepChange::Renew(end) = change {
        next.term_end = end;
    }
    let next_due_at = match change {
        StepChange::End => None,
        _ => Some(next_due(&next, calendar, policy, now)?),
    };
    let then = match next_due_at {
        Some(t) if t <= now && matches!(change, StepChange::Renew(_)) => Some(next),
        _ => None,
    };
    Ok(Step {
        mails,
        change,
        cancel_pending_reminders: auto_renew_off,
        next_due_at,
        then,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::CalendarRegistry;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn input() -> TimelineInput {
        TimelineInput {
            term_start: date("2025-12-28"),
            term_end: date("2026-12-28"),
            tz: "America/New_York".parse().unwrap(),
            auto_renew: true,
            assigned_licenses: 0,
            disable_effective_term_end: None,
        }
    }

    fn at(i: &TimelineInput, t: &str) -> Step {
        let us = CalendarRegistry::builtin().get("us").unwrap();
        step(i, &us, &RenewalPolicy::default(), utc(t)).unwrap()
    }

    #[test]
    fn with_auto_renew_off_every_reminder_is_recorded_as_skipped() {
        let off = TimelineInput {
            auto_renew: false,
            ..input()
        };
        let s = at(&off, "2026-10-01T00:00:00Z");
        assert!(s.cancel_pending_reminders);
        assert_eq!(s.change, StepChange::None);
        assert!(!s.mails.is_empty());
        assert!(s.mails.iter().all(|m| matches!(
            m,
            StepMail::Reminder {
                skip: Some(SkipReason::AutoRenewOff),
                ..
            }
        )));
    }

    #[test]
    fn a_renewal_long_overdue_goes_on_with_the_next_term() {
        // Two terms past: the first step renews once and leaves the next term due already.
        let s = at(&input(), "2028-01-15T00:00:00Z");
        assert_eq!(s.change, StepChange::Renew(date("2027-12-28")));
        assert!(s.mails.iter().any(|m| matches!(
            m,
            StepMail::Renewed {
                renews_again: true,
                ..
            }
        )));
        let then = s.then.expect("more is due at once");
        assert_eq!(then.term_end, date("2027-12-28"));
        assert!(s.next_due_at.unwrap() <= utc("2028-01-15T00:00:00Z"));
    }

    #[test]
    fn an_ended_subscription_is_never_due_again() {
        let off = TimelineInput {
            auto_renew: false,
            ..input()
        };
        let s = at(&off, "2026-12-29T12:00:00Z");
        assert_eq!(s.change, StepChange::End);
        assert_eq!(s.next_due_at, None);
        assert_eq!(s.then, None);
    }
}
