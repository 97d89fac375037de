//! Holidays from an iCalendar file: every all-day VEVENT is a day off (multi-day events cover
//! DTSTART up to, not including, DTEND). Recurring events are refused rather than guessed at:
//! holiday feeds list each date.

use std::path::Path;

use chrono::NaiveDate;
use icalendar::{Component, DatePerhapsTime};

pub fn load(path: &Path) -> Result<Vec<(NaiveDate, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<Vec<(NaiveDate, String)>, String> {
    let calendar: icalendar::Calendar = text
        .parse()
        .map_err(|e: String| format!("not iCalendar: {e}"))?;
    let mut days = Vec::new();
    for (i, event) in calendar
        .components
        .iter()
        .filter_map(|c| c.as_event())
        .enumerate()
    {
        let summary = event.get_summary().unwrap_or("Holiday").to_owned();
        let which = || format!("event {} ({summary:?})", i + 1);
        if event.property_value("RRULE").is_some() {
            return Err(format!(
                "{} repeats (RRULE); list each holiday as its own event",
                which()
            ));
        }
        let start = match event.get_start() {
            Some(DatePerhapsTime::Date(d)) => d,
            Some(DatePerhapsTime::DateTime(_)) => {
                return Err(format!("{} is not an all-day event", which()));
            }
            None => return Err(format!("{} has no DTSTART", which())),
        };
        let end = match event.get_end() {
            Some(DatePerhapsTime::Date(d)) if d > start => d,
            Some(DatePerhapsTime::Date(_)) | None => start.succ_opt().unwrap_or(start),
            Some(DatePerhapsTime::DateTime(_)) => {
                return Err(format!("{} ends at a time, not a date", which()));
            }
        };
        let mut d = start;
        while d < end {
            days.push((d, summary.clone()));
            d = match d.succ_opt() {
                Some(n) => n,
                None => break,
            };
        }
    }
    Ok(days)
}
