//! Holiday rules and the built-in calendars. A rule yields at most one date a year; observance
//! (a holiday on a weekend taken on a weekday) is applied per calendar, because the US and
//! England shift differently.

use chrono::{Datelike, Days, NaiveDate, Weekday};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// A fixed day of a month.
    Fixed { month: u32, day: u32 },
    /// The n-th (1-based) weekday of a month, or the last one when `n` is 0.
    NthWeekday {
        month: u32,
        weekday: Weekday,
        n: u32,
    },
    /// Days after (or, negative, before) Western Easter Sunday.
    Easter { offset: i64 },
    /// One date, once.
    Once { year: i32, month: u32, day: u32 },
}

/// How a holiday that falls on a weekend is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Not moved: lost if on a weekend.
    Never,
    /// US federal: Saturday → the Friday before, Sunday → the Monday after (so a Saturday
    /// New Year's Day is taken on Dec 31 of the year before).
    NearestWeekday,
    /// England and Wales: the next weekday not already a holiday ("substitute day").
    NextFreeWeekday,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub when: When,
    pub observed: Observed,
    pub from: i32,
    pub until: i32,
    /// Years in which the rule does not apply (a one-off moved it).
    pub except: &'static [i32],
}

impl Rule {
    const fn new(name: &'static str, when: When, observed: Observed) -> Self {
        Self {
            name,
            when,
            observed,
            from: i32::MIN,
            until: i32::MAX,
            except: &[],
        }
    }

    const fn from(mut self, year: i32) -> Self {
        self.from = year;
        self
    }

    const fn except(mut self, years: &'static [i32]) -> Self {
        self.except = years;
        self
    }

    /// The nominal (unshifted) date in `year`, if the rule applies that year.
    pub fn date_in(&self, year: i32) -> Option<NaiveDate> {
        if year < self.from || year > self.until || self.except.contains(&year) {
            return None;
        }
        match self.when {
            When::Fixed { month, day } => NaiveDate::from_ymd_opt(year, month, day),
            When::NthWeekday { month, weekday, n } => {
                if n == 0 {
                    let next_month = if month == 12 {
                        NaiveDate::from_ymd_opt(year + 1, 1, 1)
                    } else {
                        NaiveDate::from_ymd_opt(year, month + 1, 1)
                    }?;
                    let last = next_month.pred_opt()?;
                    let back = (7 + last.weekday().num_days_from_monday()
                        - weekday.num_days_from_monday())
                        % 7;
                    last.checked_sub_days(Days::new(u64::from(back)))
                } else {
                    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n as u8)
                }
            }
            When::Easter { offset } => {
                let easter = easter_sunday(year)?;
                easter.checked_add_signed(chrono::Duration::days(offset))
            }
            When::Once {
                year: y,
                month,
                day,
            } => (y == year)
                .then(|| NaiveDate::from_ymd_opt(y, month, day))
                .flatten(),
        }
    }
}

/// Western (Gregorian) Easter Sunday: the anonymous Gregorian algorithm (Meeus/Jones/Butcher).
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32)
}

use Observed::{NearestWeekday, Never, NextFreeWeekday};
use Weekday::{Mon, Thu};

const fn fixed(month: u32, day: u32) -> When {
    When::Fixed { month, day }
}
const fn nth(month: u32, weekday: Weekday, n: u32) -> When {
    When::NthWeekday { month, weekday, n }
}
const fn last(month: u32, weekday: Weekday) -> When {
    When::NthWeekday {
        month,
        weekday,
        n: 0,
    }
}
const fn easter(offset: i64) -> When {
    When::Easter { offset }
}
const fn once(year: i32, month: u32, day: u32) -> When {
    When::Once { year, month, day }
}

/// US federal holidays (5 U.S.C. 6103), as OPM publishes them.
pub const US: &[Rule] = &[
    Rule::new("New Year's Day", fixed(1, 1), NearestWeekday),
    Rule::new(
        "Birthday of Martin Luther King, Jr.",
        nth(1, Mon, 3),
        NearestWeekday,
    )
    .from(1986),
    Rule::new("Washington's Birthday", nth(2, Mon, 3), NearestWeekday).from(1971),
    Rule::new("Memorial Day", last(5, Mon), NearestWeekday).from(1971),
    Rule::new(
        "Juneteenth National Independence Day",
        fixed(6, 19),
        NearestWeekday,
    )
    .from(2021),
    Rule::new("Independence Day", fixed(7, 4), NearestWeekday),
    Rule::new("Labor Day", nth(9, Mon, 1), NearestWeekday),
    Rule::new("Columbus Day", nth(10, Mon, 2), NearestWeekday).from(1971),
    Rule::new("Veterans Day", fixed(11, 11), NearestWeekday),
    Rule::new("Thanksgiving Day", nth(11, Thu, 4), NearestWeekday),
    Rule::new("Christmas Day", fixed(12, 25), NearestWeekday),
];

/// Bank holidays in England and Wales, as gov.uk publishes them, with the one-off moves and
/// additions since 1995.
pub const GB_ENG: &[Rule] = &[
    Rule::new("New Year's Day", fixed(1, 1), NextFreeWeekday).from(1974),
    Rule::new("Good Friday", easter(-2), Never),
    Rule::new("Easter Monday", easter(1), Never),
    Rule::new("Early May bank holiday", nth(5, Mon, 1), NextFreeWeekday)
        .from(1978)
        .except(&[1995, 2020]),
    Rule::new("Early May bank holiday (VE day)", once(1995, 5, 8), Never),
    Rule::new("Early May bank holiday (VE day)", once(2020, 5, 8), Never),
    Rule::new("Spring bank holiday", last(5, Mon), Never)
        .from(1971)
        .except(&[2002, 2012, 2022]),
    Rule::new("Spring bank holiday", once(2002, 6, 4), Never),
    Rule::new("Spring bank holiday", once(2012, 6, 4), Never),
    Rule::new("Spring bank holiday", once(2022, 6, 2), Never),
    Rule::new("Summer bank holiday", last(8, Mon), Never).from(1971),
    Rule::new("Christmas Day", fixed(12, 25), NextFreeWeekday),
    Rule::new("Boxing Day", fixed(12, 26), NextFreeWeekday),
    Rule::new("Millennium Celebrations", once(1999, 12, 31), Never),
    Rule::new("Golden Jubilee of Elizabeth II", once(2002, 6, 3), Never),
    Rule::new(
        "Wedding of Prince William and Catherine Middleton",
        once(2011, 4, 29),
        Never,
    ),
    Rule::new("Diamond Jubilee of Elizabeth II", once(2012, 6, 5), Never),
    Rule::new("Platinum Jubilee of Elizabeth II", once(2022, 6, 3), Never),
    Rule::new(
        "State Funeral of Queen Elizabeth II",
        once(2022, 9, 19),
        Never,
    ),
    Rule::new("Coronation of King Charles III", once(2023, 5, 8), Never),
];

/// German public holidays observed in every Land (bundeseinheitliche Feiertage).
pub const DE: &[Rule] = &[
    Rule::new("Neujahr", fixed(1, 1), Never),
    Rule::new("Karfreitag", easter(-2), Never),
    Rule::new("Ostermontag", easter(1), Never),
    Rule::new("Tag der Arbeit", fixed(5, 1), Never),
    Rule::new("Christi Himmelfahrt", easter(39), Never),
    Rule::new("Pfingstmontag", easter(50), Never),
    Rule::new("Tag der Deutschen Einheit", fixed(10, 3), Never).from(1990),
    Rule::new(
        "Reformationstag (500. Jahrestag)",
        once(2017, 10, 31),
        Never,
    ),
    Rule::new("1. Weihnachtstag", fixed(12, 25), Never),
    Rule::new("2. Weihnachtstag", fixed(12, 26), Never),
];

/// TARGET (T2) closing days, as the ECB publishes them (the current set since 2002).
pub const TARGET: &[Rule] = &[
    Rule::new("New Year's Day", fixed(1, 1), Never).from(2002),
    Rule::new("Good Friday", easter(-2), Never).from(2002),
    Rule::new("Easter Monday", easter(1), Never).from(2002),
    Rule::new("Labour Day", fixed(5, 1), Never).from(2002),
    Rule::new("Christmas Day", fixed(12, 25), Never).from(2002),
    Rule::new("Christmas Holiday", fixed(12, 26), Never).from(2002),
];

pub const BUILT_IN: &[(&str, &[Rule])] = &[
    ("us", US),
    ("gb-eng", GB_ENG),
    ("de", DE),
    ("target", TARGET),
    ("none", &[]),
];

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The days off that `rules` give in `year`, after observance, sorted, with names. Rules of
/// the neighbouring years are evaluated too: a US New Year's Day on a Saturday is a day off on
/// Dec 31 of the year before.
pub fn days_off(rules: &[Rule], year: i32) -> Vec<(NaiveDate, String)> {
    let mut out: Vec<(NaiveDate, String)> = Vec::new();
    for y in [year - 1, year, year + 1] {
        // Substitute days are placed after every holiday that falls on its own weekday, so a
        // weekend Christmas never takes Boxing Day's Monday.
        let mut on_weekdays: Vec<(NaiveDate, String)> = Vec::new();
        let mut to_substitute: Vec<(NaiveDate, &'static str)> = Vec::new();
        for rule in rules {
            let Some(date) = rule.date_in(y) else {
                continue;
            };
            match (rule.observed, date.weekday()) {
                (_, wd) if !matches!(wd, Weekday::Sat | Weekday::Sun) => {
                    on_weekdays.push((date, rule.name.to_owned()));
                }
                (Never, _) => on_weekdays.push((date, rule.name.to_owned())),
                (NearestWeekday, Weekday::Sat) => on_weekdays.push((
                    date.pred_opt().unwrap_or(date),
                    format!("{} (observed)", rule.name),
                )),
                (NearestWeekday, _) => on_weekdays.push((
                    date.succ_opt().unwrap_or(date),
                    format!("{} (observed)", rule.name),
                )),
                (NextFreeWeekday, _) => to_substitute.push((date, rule.name)),
            }
        }
        to_substitute.sort();
        for (date, name) in to_substitute {
            let mut d = date;
            while is_weekend(d) || on_weekdays.iter().any(|(o, _)| *o == d) {
                d = match d.succ_opt() {
                    Some(n) => n,
                    None => break,
                };
            }
            on_weekdays.push((d, format!("{name} (substitute day)")));
        }
        out.extend(on_weekdays.into_iter().filter(|(d, _)| d.year() == year));
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}
