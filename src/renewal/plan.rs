//! What is due for one subscription at one instant: the decisions the periodic poll turns into
//! outbox rows and state changes. Pure: the same input and instant always give the same plan,
//! so a poll that runs twice (two hosts, a restart) plans the same keys and the outbox's
//! uniqueness makes the second one a no-op.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::{
    ReminderOffset, RenewalPolicy, TimelineInput, cutoff_date, cutoff_instant, reminders,
    start_of_day, term_end, term_index_at,
};
use crate::calendar::{Calendar, CalendarError};

/// Why a reminder is recorded as skipped instead of sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A later reminder of the same term is due too (the worker was down): only the latest goes.
    Superseded,
    /// The cutoff instant has passed: no reminder is sent after it.
    AfterCutoff,
    /// Auto-renew is off: there is nothing to remind of.
    AutoRenewOff,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    SendReminder {
        term_end: NaiveDate,
        offset: ReminderOffset,
        due_at: DateTime<Utc>,
        cutoff_at: DateTime<Utc>,
    },
    SkipReminder {
        term_end: NaiveDate,
        offset: ReminderOffset,
        reason: SkipReason,
    },
    /// The term ended with auto-renew on: the subscription continues to `new_term_end`.
    Renew {
        term_end: NaiveDate,
        new_term_end: NaiveDate,
    },
    /// The term ended and the subscription stops.
    End { term_end: NaiveDate },
}

/// The instant a term ends (and renews or stops): the start of the term end date in the
/// reseller's time zone.
pub fn term_end_instant(input: &TimelineInput) -> DateTime<Utc> {
    start_of_day(input.term_end, input.tz)
}

/// Whether the subscription stops at its current term end rather than renewing.
fn stops_at_current_end(input: &TimelineInput) -> bool {
    match input.disable_effective_term_end {
        Some(end) => end <= input.term_end,
        None => !input.auto_renew,
    }
}

/// Everything due at `now` for the current term. Reminders of a term whose end has passed are
/// not planned: the term-end action comes first, and the poll plans again for the new term.
pub fn plan(
    input: &TimelineInput,
    calendar: &Calendar,
    policy: &RenewalPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<Action>, CalendarError> {
    let mut actions = Vec::new();
    let reminding = input.auto_renew && input.disable_effective_term_end.is_none();
    if now >= term_end_instant(input) {
        // Reminders of the ending term that no poll saw (the daemon was down through it) are
        // recorded as skipped, so the outbox accounts for every one.
        for r in reminders(input.term_end, calendar, input.tz, policy)? {
            actions.push(Action::SkipReminder {
                term_end: input.term_end,
                offset: r.offset,
                reason: if reminding {
                    SkipReason::AfterCutoff
                } else {
                    SkipReason::AutoRenewOff
                },
            });
        }
        if stops_at_current_end(input) {
            actions.push(Action::End {
                term_end: input.term_end,
            });
        } else {
            let k = term_index_at(
                input.term_start,
                input.term_end.pred_opt().unwrap_or(input.term_end),
            );
            let next = term_end(input.term_start, k + 1).ok_or(CalendarError::OutOfRange {
                date: input.term_end,
            })?;
            actions.push(Action::Renew {
                term_end: input.term_end,
                new_term_end: next,
            });
        }
        return Ok(actions);
    }
    let cutoff_at = cutoff_instant(
        cutoff_date(input.term_end, calendar, policy.cutoff_business_days)?,
        input.tz,
    );
    let due: Vec<_> = reminders(input.term_end, calendar, input.tz, policy)?
        .into_iter()
        .filter(|r| r.due_at <= now)
        .collect();
    // Reminders remind of a renewal that can still be stopped; a subscription that will stop
    // (or whose request came after the cutoff) gets none.
    for (i, r) in due.iter().enumerate() {
        let latest = i + 1 == due.len();
        let skip = if !reminding {
            Some(SkipReason::AutoRenewOff)
        } else if now >= cutoff_at {
            Some(SkipReason::AfterCutoff)
        } else if !latest {
            Some(SkipReason::Superseded)
        } else {
            None
        };
        actions.push(match skip {
            Some(reason) => Action::SkipReminder {
                term_end: input.term_end,
                offset: r.offset,
                reason,
            },
            None => Action::SendReminder {
                term_end: input.term_end,
                offset: r.offset,
                due_at: r.due_at,
                cutoff_at,
            },
        });
    }
    Ok(actions)
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

    fn run(i: &TimelineInput, at: &str) -> Vec<Action> {
        let us = CalendarRegistry::builtin().get("us").unwrap();
        plan(i, &us, &RenewalPolicy::default(), utc(at)).unwrap()
    }

    /// The renew/end decisions of a plan, without the reminder bookkeeping.
    fn term(actions: Vec<Action>) -> Vec<Action> {
        actions
            .into_iter()
            .filter(|a| matches!(a, Action::Renew { .. } | Action::End { .. }))
            .collect()
    }

    fn sent(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendReminder { offset, .. } => Some(offset.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reminder_is_due_at_its_local_time_and_not_a_minute_before() {
        // 30d reminder: Wed 2026-11-18 09:00 New York = 14:00Z.
        assert!(run(&input(), "2026-11-18T13:59:00Z").is_empty());
        assert_eq!(sent(&run(&input(), "2026-11-18T14:00:00Z")), ["30d"]);
    }

    #[test]
    fn after_downtime_only_the_latest_due_reminder_goes() {
        let actions = run(&input(), "2026-12-17T15:00:00Z");
        assert_eq!(sent(&actions), ["1bd"]);
        let skipped: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::SkipReminder { offset, reason, .. } => Some((offset.to_string(), *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            skipped,
            [
                ("30d".to_owned(), SkipReason::Superseded),
                ("10bd".to_owned(), SkipReason::Superseded)
            ]
        );
    }

    #[test]
    fn nothing_is_sent_after_the_cutoff_instant() {
        // Cutoff instant: 2026-12-19T05:00Z.
        assert_eq!(sent(&run(&input(), "2026-12-19T04:59:59Z")), ["1bd"]);
        let after = run(&input(), "2026-12-19T05:00:00Z");
        assert!(sent(&after).is_empty());
        assert!(after.iter().all(|a| matches!(
            a,
            Action::SkipReminder {
                reason: SkipReason::AfterCutoff,
                ..
            }
        )));
    }

    #[test]
    fn auto_renew_off_means_no_reminders_and_an_end() {
        let mut i = input();
        i.auto_renew = false;
        let actions = run(&i, "2026-12-01T00:00:00Z");
        assert!(sent(&actions).is_empty());
        assert!(actions.iter().all(|a| matches!(
            a,
            Action::SkipReminder {
                reason: SkipReason::AutoRenewOff,
                ..
            }
        )));
        let at_end = run(&i, "2026-12-28T05:00:00Z");
        assert_eq!(
            at_end.len(),
            4,
            "three reminders accounted for as skipped, then the end"
        );
        assert_eq!(
            term(at_end),
            [Action::End {
                term_end: date("2026-12-28")
            }]
        );
    }

    #[test]
    fn the_term_end_renews_from_the_original_start_at_local_midnight() {
        let i = input();
        assert!(
            !run(&i, "2026-12-28T04:59:59Z")
                .iter()
                .any(|a| matches!(a, Action::Renew { .. }))
        );
        assert_eq!(
            term(run(&i, "2026-12-28T05:00:00Z")),
            [Action::Renew {
                term_end: date("2026-12-28"),
                new_term_end: date("2027-12-28")
            }]
        );
        let mut leap = input();
        leap.term_start = date("2024-02-29");
        leap.term_end = date("2027-02-28");
        assert_eq!(
            term(run(&leap, "2027-03-01T00:00:00Z")),
            [Action::Renew {
                term_end: date("2027-02-28"),
                new_term_end: date("2028-02-29")
            }]
        );
    }

    #[test]
    fn a_late_disable_renews_once_more_then_ends() {
        let mut i = input();
        i.auto_renew = false;
        i.disable_effective_term_end = Some(date("2027-12-28"));
        assert_eq!(
            term(run(&i, "2026-12-28T05:00:00Z")),
            [Action::Renew {
                term_end: date("2026-12-28"),
                new_term_end: date("2027-12-28")
            }]
        );
        i.term_end = date("2027-12-28");
        // No reminders in the last term: it will not renew.
        assert!(sent(&run(&i, "2027-12-10T15:00:00Z")).is_empty());
        assert_eq!(
            term(run(&i, "2027-12-28T05:00:00Z")),
            [Action::End {
                term_end: date("2027-12-28")
            }]
        );
    }

    #[test]
    fn planning_twice_gives_the_same_plan() {
        let i = input();
        for at in [
            "2026-11-18T14:00:00Z",
            "2026-12-17T15:00:00Z",
            "2026-12-28T06:00:00Z",
        ] {
            assert_eq!(run(&i, at), run(&i, at));
        }
    }
}
