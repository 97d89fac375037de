//! `calendar cutoff | offset | holidays`: the business-day calendar, for operators checking a
//! date before they promise it to a reseller.

use std::io::Write;

use chrono::{Datelike, NaiveDate};
use clap::Subcommand;
use serde_json::json;

use super::CliError;
use crate::calendar::CalendarRegistry;
use crate::renewal;

/// A calendar date on the command line; an impossible one (2026-02-30) is refused by name.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is not a date: expected YYYY-MM-DD, a day that exists"))
}

#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// The last day on which auto-renew can be disabled for a term ending on DATE.
    Cutoff {
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        term_end: NaiveDate,
        /// Calendar name (default: `calendar.default` from config).
        #[arg(long)]
        calendar: Option<String>,
        /// Business days before the term end (default: `renewal.cutoff_business_days`).
        #[arg(long, value_name = "N")]
        business_days: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Step N business days from DATE (N < 0 steps back); DATE itself never counts.
    Offset {
        #[arg(value_parser = parse_date)]
        date: NaiveDate,
        #[arg(allow_negative_numbers = true)]
        n: i64,
        #[arg(long)]
        calendar: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The days off of a calendar in a year.
    Holidays {
        #[arg(long)]
        calendar: Option<String>,
        #[arg(long, value_parser = clap::value_parser!(i32).range(1900..=2200))]
        year: i32,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(
    cmd: &CalendarCommand,
    registry: &CalendarRegistry,
    default_calendar: &str,
    default_business_days: u32,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let pick = |name: &Option<String>| registry.get(name.as_deref().unwrap_or(default_calendar));
    match cmd {
        CalendarCommand::Cutoff {
            term_end,
            calendar,
            business_days,
            json,
        } => {
            let cal = pick(calendar)?;
            let n = business_days.unwrap_or(default_business_days);
            let cutoff = renewal::cutoff_date(*term_end, &cal, n)?;
            if *json {
                writeln!(
                    out,
                    "{}",
                    json!({"term_end": term_end, "calendar": cal.name(), "business_days": n,
                           "cutoff_date": cutoff})
                )?;
            } else {
                writeln!(
                    out,
                    "cutoff  {}  ({n} business days before {}, calendar {})",
                    cutoff.format("%a %Y-%m-%d"),
                    term_end.format("%a %Y-%m-%d"),
                    cal.name()
                )?;
            }
        }
        CalendarCommand::Offset {
            date,
            n,
            calendar,
            json,
        } => {
            let cal = pick(calendar)?;
            let result = cal.add_business_days(*date, *n)?;
            if *json {
                writeln!(
                    out,
                    "{}",
                    json!({"date": date, "business_days": n, "calendar": cal.name(),
                           "result": result, "is_business_day": cal.is_business_day(result)?})
                )?;
            } else {
                let dir = if *n < 0 { "before" } else { "after" };
                writeln!(
                    out,
                    "{}  ({} business days {dir} {}, calendar {})",
                    result.format("%a %Y-%m-%d"),
                    n.unsigned_abs(),
                    date.format("%a %Y-%m-%d"),
                    cal.name()
                )?;
            }
        }
        CalendarCommand::Holidays {
            calendar,
            year,
            json,
        } => {
            let cal = pick(calendar)?;
            let days = cal.holidays(*year);
            if *json {
                writeln!(
                    out,
                    "{}",
                    json!({"calendar": cal.name(), "year": year, "holidays": days})
                )?;
            } else {
                writeln!(out, "{} holidays in {year}:", cal.name())?;
                for h in days {
                    let weekend = matches!(
                        h.date.weekday(),
                        chrono::Weekday::Sat | chrono::Weekday::Sun
                    );
                    writeln!(
                        out,
                        "  {}  {}{}",
                        h.date.format("%a %Y-%m-%d"),
                        h.name,
                        if weekend { "  (weekend)" } else { "" }
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Answers the calendar question with the configured calendars and defaults.
pub(super) fn command(
    settings: &crate::config::Settings,
    command: &CalendarCommand,
    out: &mut dyn Write,
) -> Result<std::process::ExitCode, CliError> {
    let registry = settings.calendars()?;
    run(
        command,
        &registry,
        &settings.calendar.default,
        settings.renewal.cutoff_business_days,
        out,
    )?;
    Ok(std::process::ExitCode::SUCCESS)
}
