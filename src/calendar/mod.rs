//! Business-day calendars on chrono. A business day is a weekday of the calendar's week mask
//! that is not a holiday. Holidays come from rules (built-in calendars), explicit dates
//! (config `add`/`remove`) or an iCalendar file.
//!
//! Stepping and counting are per-year table look-ups: each year's business days are computed
//! once (a bitmap and running counts), cached, and shared across threads, so stepping N
//! business days costs O(N / 250) table reads, never a day-by-day walk.

mod ics;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use rules::Rule;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("unknown calendar {name:?}: known calendars are {}", known.join(", "))]
    Unknown { name: String, known: Vec<String> },
    #[error(
        "calendar {name:?}: base {base:?} is not a built-in calendar (us, gb-eng, de, target, none)"
    )]
    UnknownBase { name: String, base: String },
    #[error("calendar {name:?} would hide the built-in calendar of that name: choose another name")]
    Shadows { name: String },
    #[error("calendar {name:?}: cannot read {path}: {reason}")]
    Ics {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("calendar {name:?}: the week needs at least one business day")]
    NoBusinessDays { name: String },
    #[error("{date} is outside the supported years {}..={}", MIN_YEAR, MAX_YEAR)]
    OutOfRange { date: NaiveDate },
}

/// Years a calendar can answer for; far beyond any subscription, and a bound that keeps a
/// typo'd year from filling the cache.
pub const MIN_YEAR: i32 = 1900;
pub const MAX_YEAR: i32 = 2200;

/// A day off, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holiday {
    pub date: NaiveDate,
    pub name: String,
}

/// A calendar defined in configuration: a built-in base plus explicit changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarSpec {
    /// Built-in calendar to start from; `none` (weekends only) when absent.
    pub base: Option<String>,
    /// An iCalendar file of holidays (all-day events) to add.
    pub ics: Option<PathBuf>,
    /// Extra days off (one-off closures).
    pub add: Vec<NaiveDate>,
    /// Days that are business days after all.
    pub remove: Vec<NaiveDate>,
    /// Non-business weekdays; Saturday and Sunday when absent.
    pub weekend: Option<Vec<Weekday>>,
}

/// One year's business days, computed once.
#[derive(Debug)]
struct Year {
    /// `counts[i]` = business days strictly before day-of-year `i` (0-based); one entry more
    /// than the year has days.
    counts: Vec<u16>,
}

impl Year {
    fn total(&self) -> u32 {
        u32::from(*self.counts.last().unwrap_or(&0))
    }

    fn is_business(&self, ordinal0: usize) -> bool {
        self.counts[ordinal0 + 1] > self.counts[ordinal0]
    }

    /// Day-of-year (0-based) of the k-th (0-based) business day of the year.
    fn nth_business_day(&self, k: u32) -> usize {
        // The first i with counts[i + 1] > k.
        self.counts[1..].partition_point(|&c| u32::from(c) <= k)
    }
}

#[derive(Debug)]
pub struct Calendar {
    name: String,
    weekend: [bool; 7],
    rules: &'static [Rule],
    /// Explicit days off with their names (config `add`, iCalendar events).
    extra: BTreeMap<NaiveDate, String>,
    removed: BTreeSet<NaiveDate>,
    years: RwLock<HashMap<i32, Arc<Year>>>,
}

fn ordinal0(d: NaiveDate) -> usize {
    d.ordinal0() as usize
}

fn first_of_year(year: i32) -> NaiveDate {
    NaiveDate::from_yo_opt(year, 1).unwrap_or(NaiveDate::MIN)
}

impl Calendar {
    fn build(
        name: &str,
        rules: &'static [Rule],
        weekend: &[Weekday],
        extra: BTreeMap<NaiveDate, String>,
        removed: BTreeSet<NaiveDate>,
    ) -> Result<Self, CalendarError> {
        let mut mask = [false; 7];
        for wd in weekend {
            mask[wd.num_days_from_monday() as usize] = true;
        }
        if mask.iter().all(|w| *w) {
            return Err(CalendarError::NoBusinessDays {
                name: name.to_owned(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            weekend: mask,
            rules,
            extra,
            removed,
            years: RwLock::new(HashMap::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn is_weekend(&self, d: NaiveDate) -> bool {
        self.weekend[d.weekday().num_days_from_monday() as usize]
    }

    /// Every day off in `year` (rules after observance, plus explicit ones, minus removed),
    /// weekends not included unless a holiday falls there.
    pub fn holidays(&self, year: i32) -> Vec<Holiday> {
        let mut days: BTreeMap<NaiveDate, String> =
            rules::days_off(self.rules, year).into_iter().collect();
        for (d, name) in self
            .extra
            .range(first_of_year(year)..first_of_year(year + 1))
        {
            days.entry(*d).or_insert_with(|| name.clone());
        }
        days.into_iter()
            .filter(|(d, _)| !self.removed.contains(d))
            .map(|(date, name)| Holiday { date, name })
            .collect()
    }

    fn year(&self, year: i32) -> Arc<Year> {
        if let Some(y) = self
            .years
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&year)
        {
            return y.clone();
        }
        let first = first_of_year(year);
        let days = if NaiveDate::from_ymd_opt(year, 2, 29).is_some() {
            366
        } else {
            365
        };
        let mut off = vec![false; days];
        for h in self.holidays(year) {
            off[ordinal0(h.date)] = true;
        }
        let mut counts = Vec::with_capacity(days + 1);
        counts.push(0u16);
        let mut n = 0u16;
        let mut d = first;
        for is_off in off {
            if !is_off && !self.is_weekend(d) {
                n += 1;
            }
            counts.push(n);
            d = d.succ_opt().unwrap_or(d);
        }
        let y = Arc::new(Year { counts });
        self.years
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(year, y.clone());
        y
    }

    fn check(d: NaiveDate) -> Result<(), CalendarError> {
        if (MIN_YEAR..=MAX_YEAR).contains(&d.year()) {
            Ok(())
        } else {
            Err(CalendarError::OutOfRange { date: d })
        }
    }

    pub fn is_business_day(&self, d: NaiveDate) -> Result<bool, CalendarError> {
        Self::check(d)?;
        Ok(self.year(d.year()).is_business(ordinal0(d)))
    }

    /// The k-th (0-based) business day of `year`, or the remainder to carry into later years.
    fn nth_in_year(&self, year: i32, k: u32) -> Result<NaiveDate, u32> {
        let y = self.year(year);
        if k < y.total() {
            let ord = y.nth_business_day(k);
            Ok(first_of_year(year) + chrono::Days::new(ord as u64))
        } else {
            Err(k - y.total())
        }
    }

    /// N business days before `d`, counting only days strictly before it: `d` itself never
    /// counts, business day or not. `n = 0` gives `d`.
    pub fn business_days_before(&self, d: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        Self::check(d)?;
        if n == 0 {
            return Ok(d);
        }
        let mut year = d.year();
        // Business days of d's year strictly before d.
        let before = u32::from(self.year(year).counts[ordinal0(d)]);
        if n <= before {
            return self
                .nth_in_year(year, before - n)
                .map_err(|_| CalendarError::OutOfRange { date: d });
        }
        let mut left = n - before;
        loop {
            year -= 1;
            if year < MIN_YEAR {
                return Err(CalendarError::OutOfRange { date: d });
            }
            let total = self.year(year).total();
            if left <= total {
                return self
                    .nth_in_year(year, total - left)
                    .map_err(|_| CalendarError::OutOfRange { date: d });
            }
            left -= total;
        }
    }

    /// N business days after `d`, counting only days strictly after it. `n = 0` gives `d`.
    pub fn business_days_after(&self, d: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        Self::check(d)?;
        if n == 0 {
            return Ok(d);
        }
        let mut year = d.year();
        // Index (0-based, within d's year) of the first business day after d.
        let mut k = u32::from(self.year(year).counts[ordinal0(d) + 1]) + n - 1;
        loop {
            match self.nth_in_year(year, k) {
                Ok(date) => return Ok(date),
                Err(rest) => {
                    k = rest;
                    year += 1;
                    if year > MAX_YEAR {
                        return Err(CalendarError::OutOfRange { date: d });
                    }
                }
            }
        }
    }

    /// Steps `n` business days from `d`: forward when positive, back when negative; the start
    /// day is never counted.
    pub fn add_business_days(&self, d: NaiveDate, n: i64) -> Result<NaiveDate, CalendarError> {
        let steps =
            u32::try_from(n.unsigned_abs()).map_err(|_| CalendarError::OutOfRange { date: d })?;
        if n >= 0 {
            self.business_days_after(d, steps)
        } else {
            self.business_days_before(d, steps)
        }
    }

    /// Business days in `[from, to)`; negative when `to` is before `from`.
    pub fn business_days_between(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<i64, CalendarError> {
        Self::check(from)?;
        Self::check(to)?;
        if to < from {
            return self.business_days_between(to, from).map(|n| -n);
        }
        let prefix = |d: NaiveDate| i64::from(self.year(d.year()).counts[ordinal0(d)]);
        let mut total = prefix(to) - prefix(from);
        for y in from.year()..to.year() {
            total += i64::from(self.year(y).total());
        }
        Ok(total)
    }

    /// The first business day strictly after `d`.
    pub fn next_business_day(&self, d: NaiveDate) -> Result<NaiveDate, CalendarError> {
        self.business_days_after(d, 1)
    }

    /// The last business day strictly before `d`.
    pub fn previous_business_day(&self, d: NaiveDate) -> Result<NaiveDate, CalendarError> {
        self.business_days_before(d, 1)
    }

    /// `d` if it is a business day, else the business day before it.
    pub fn roll_back(&self, d: NaiveDate) -> Result<NaiveDate, CalendarError> {
        if self.is_business_day(d)? {
            Ok(d)
        } else {
            self.previous_business_day(d)
        }
    }
}

/// The calendars a process knows: the built-in ones and those named in configuration.
#[derive(Debug, Clone)]
pub struct CalendarRegistry {
    calendars: BTreeMap<String, Arc<Calendar>>,
}

const DEFAULT_WEEKEND: [Weekday; 2] = [Weekday::Sat, Weekday::Sun];

impl CalendarRegistry {
    pub fn builtin() -> Self {
        let mut calendars = BTreeMap::new();
        for (name, rules) in rules::BUILT_IN {
            let cal = Calendar::build(
                name,
                rules,
                &DEFAULT_WEEKEND,
                BTreeMap::new(),
                BTreeSet::new(),
            )
            .unwrap_or_else(|_| unreachable!("built-in calendars have business days"));
            calendars.insert((*name).to_owned(), Arc::new(cal));
        }
        Self { calendars }
    }

    /// Built-in calendars plus the configured ones, each checked now (unknown base, unreadable
    /// or invalid iCalendar file) so a bad one stops the start rather than a reminder.
    pub fn new(custom: &BTreeMap<String, CalendarSpec>) -> Result<Self, CalendarError> {
        let mut registry = Self::builtin();
        for (name, spec) in custom {
            if registry.calendars.contains_key(name) {
                return Err(CalendarError::Shadows { name: name.clone() });
            }
            let base = spec.base.as_deref().unwrap_or("none");
            let rules = rules::BUILT_IN
                .iter()
                .find(|(n, _)| *n == base)
                .map(|(_, r)| *r)
                .ok_or_else(|| CalendarError::UnknownBase {
                    name: name.clone(),
                    base: base.to_owned(),
                })?;
            let mut extra = BTreeMap::new();
            if let Some(path) = &spec.ics {
                for (date, summary) in ics::load(path).map_err(|reason| CalendarError::Ics {
                    name: name.clone(),
                    path: path.clone(),
                    reason,
                })? {
                    extra.insert(date, summary);
                }
            }
            for d in &spec.add {
                extra.insert(*d, "Closure (configured)".to_owned());
            }
            let weekend = spec.weekend.as_deref().unwrap_or(&DEFAULT_WEEKEND);
            let cal = Calendar::build(
                name,
                rules,
                weekend,
                extra,
                spec.remove.iter().copied().collect(),
            )?;
            registry.calendars.insert(name.clone(), Arc::new(cal));
        }
        Ok(registry)
    }

    pub fn get(&self, name: &str) -> Result<Arc<Calendar>, CalendarError> {
        self.calendars
            .get(name)
            .cloned()
            .ok_or_else(|| CalendarError::Unknown {
                name: name.to_owned(),
                known: self.names(),
            })
    }

    pub fn names(&self) -> Vec<String> {
        self.calendars.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
