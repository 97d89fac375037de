use super::*;
use proptest::prelude::*;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn days_off(cal: &str, year: i32) -> Vec<String> {
    CalendarRegistry::builtin()
        .get(cal)
        .unwrap()
        .holidays(year)
        .into_iter()
        .filter(|h| !matches!(h.date.weekday(), Weekday::Sat | Weekday::Sun))
        .map(|h| h.date.format("%m-%d").to_string())
        .collect()
}

fn list(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// OPM's published federal holiday dates (the day off, after the observed-day rule).
#[test]
fn us_federal_holidays_match_opm() {
    let expected = [
        (
            2020,
            "01-01 01-20 02-17 05-25 07-03 09-07 10-12 11-11 11-26 12-25",
        ),
        (
            2021,
            "01-01 01-18 02-15 05-31 06-18 07-05 09-06 10-11 11-11 11-25 12-24 12-31",
        ),
        (
            2022,
            "01-17 02-21 05-30 06-20 07-04 09-05 10-10 11-11 11-24 12-26",
        ),
        (
            2023,
            "01-02 01-16 02-20 05-29 06-19 07-04 09-04 10-09 11-10 11-23 12-25",
        ),
        (
            2024,
            "01-01 01-15 02-19 05-27 06-19 07-04 09-02 10-14 11-11 11-28 12-25",
        ),
        (
            2025,
            "01-01 01-20 02-17 05-26 06-19 07-04 09-01 10-13 11-11 11-27 12-25",
        ),
        (
            2026,
            "01-01 01-19 02-16 05-25 06-19 07-03 09-07 10-12 11-11 11-26 12-25",
        ),
        (
            2027,
            "01-01 01-18 02-15 05-31 06-18 07-05 09-06 10-11 11-11 11-25 12-24 12-31",
        ),
    ];
    for (year, days) in expected {
        assert_eq!(days_off("us", year), list(days), "us {year}");
    }
}

#[test]
fn new_years_day_on_a_saturday_is_taken_the_year_before() {
    let us = CalendarRegistry::builtin().get("us").unwrap();
    let h = us.holidays(2021);
    let last = h.last().unwrap();
    assert_eq!(last.date, date("2021-12-31"));
    assert_eq!(last.name, "New Year's Day (observed)");
    assert!(!us.is_business_day(date("2021-12-31")).unwrap());
    assert!(us.is_business_day(date("2022-01-03")).unwrap());
}

/// gov.uk's bank holidays for England and Wales, substitute days included.
#[test]
fn england_and_wales_bank_holidays_match_gov_uk() {
    let expected = [
        (2020, "01-01 04-10 04-13 05-08 05-25 08-31 12-25 12-28"),
        (2021, "01-01 04-02 04-05 05-03 05-31 08-30 12-27 12-28"),
        (
            2022,
            "01-03 04-15 04-18 05-02 06-02 06-03 08-29 09-19 12-26 12-27",
        ),
        (
            2023,
            "01-02 04-07 04-10 05-01 05-08 05-29 08-28 12-25 12-26",
        ),
        (2024, "01-01 03-29 04-01 05-06 05-27 08-26 12-25 12-26"),
        (2025, "01-01 04-18 04-21 05-05 05-26 08-25 12-25 12-26"),
        (2026, "01-01 04-03 04-06 05-04 05-25 08-31 12-25 12-28"),
        (2027, "01-01 03-26 03-29 05-03 05-31 08-30 12-27 12-28"),
    ];
    for (year, days) in expected {
        assert_eq!(days_off("gb-eng", year), list(days), "gb-eng {year}");
    }
}

#[test]
fn german_national_holidays() {
    let expected = [
        (
            2017,
            "04-14 04-17 05-01 05-25 06-05 10-03 10-31 12-25 12-26",
        ),
        (
            2024,
            "01-01 03-29 04-01 05-01 05-09 05-20 10-03 12-25 12-26",
        ),
        (2026, "01-01 04-03 04-06 05-01 05-14 05-25 12-25"),
    ];
    // 2017-01-01 was a Sunday (lost, no substitute in Germany): 01-02 is a working day.
    let de = CalendarRegistry::builtin().get("de").unwrap();
    assert!(de.is_business_day(date("2017-01-02")).unwrap());
    for (year, days) in expected {
        assert_eq!(days_off("de", year), list(days), "de {year}");
    }
    // Weekend holidays are still listed by name.
    let all = de.holidays(2026);
    assert!(
        all.iter()
            .any(|h| h.date == date("2026-10-03") && h.name == "Tag der Deutschen Einheit")
    );
}

#[test]
fn target_closing_days() {
    assert_eq!(
        days_off("target", 2025),
        list("01-01 04-18 04-21 05-01 12-25 12-26")
    );
    assert_eq!(
        days_off("target", 2026),
        list("01-01 04-03 04-06 05-01 12-25")
    );
    assert!(days_off("none", 2026).is_empty());
}

#[test]
fn easter_sundays() {
    for (y, d) in [
        (2000, "2000-04-23"),
        (2008, "2008-03-23"),
        (2019, "2019-04-21"),
        (2024, "2024-03-31"),
        (2026, "2026-04-05"),
        (2038, "2038-04-25"),
    ] {
        assert_eq!(rules::easter_sunday(y).unwrap(), date(d));
    }
}

#[test]
fn the_worked_examples_of_n_business_days_before() {
    let us = CalendarRegistry::builtin().get("us").unwrap();
    // D itself never counts, business day or not.
    assert_eq!(
        us.business_days_before(date("2026-12-28"), 5).unwrap(),
        date("2026-12-18")
    );
    assert_eq!(
        us.business_days_before(date("2026-12-26"), 5).unwrap(),
        date("2026-12-18")
    );
    assert_eq!(
        us.business_days_before(date("2026-05-25"), 5).unwrap(),
        date("2026-05-18")
    );
    // Across a year boundary and the observed New Year's Eve of 2021.
    assert_eq!(
        us.business_days_before(date("2022-01-04"), 2).unwrap(),
        date("2021-12-30")
    );
    assert_eq!(
        us.business_days_after(date("2021-12-30"), 1).unwrap(),
        date("2022-01-03")
    );
    assert_eq!(
        us.add_business_days(date("2026-12-18"), 5).unwrap(),
        date("2026-12-28")
    );
    assert_eq!(
        us.add_business_days(date("2026-12-28"), -5).unwrap(),
        date("2026-12-18")
    );
    assert_eq!(
        us.add_business_days(date("2026-12-26"), 0).unwrap(),
        date("2026-12-26")
    );
    assert_eq!(
        us.business_days_between(date("2026-12-18"), date("2026-12-28"))
            .unwrap(),
        5
    );
    assert_eq!(
        us.business_days_between(date("2026-12-28"), date("2026-12-18"))
            .unwrap(),
        -5
    );
    assert_eq!(
        us.next_business_day(date("2026-12-24")).unwrap(),
        date("2026-12-28")
    );
    assert_eq!(
        us.previous_business_day(date("2026-12-28")).unwrap(),
        date("2026-12-24")
    );
    // Long spans: a few thousand business days without walking day by day.
    let far = us.business_days_before(date("2026-12-28"), 5000).unwrap();
    assert_eq!(
        us.business_days_between(far, date("2026-12-28")).unwrap(),
        5000
    );
}

#[test]
fn out_of_range_dates_are_refused_with_the_date() {
    let us = CalendarRegistry::builtin().get("us").unwrap();
    let err = us.is_business_day(date("2301-01-01")).unwrap_err();
    assert!(err.to_string().contains("2301-01-01"), "{err}");
    assert!(us.business_days_before(date("1900-01-03"), 10).is_err());
}

#[test]
fn config_adds_and_removes_days_and_checks_names() {
    let mut custom = BTreeMap::new();
    custom.insert(
        "acme".to_owned(),
        CalendarSpec {
            base: Some("us".into()),
            add: vec![date("2026-12-24"), date("2026-12-31")],
            remove: vec![date("2026-11-11")],
            ..CalendarSpec::default()
        },
    );
    let reg = CalendarRegistry::new(&custom).unwrap();
    let acme = reg.get("acme").unwrap();
    assert!(!acme.is_business_day(date("2026-12-24")).unwrap());
    assert!(acme.is_business_day(date("2026-11-11")).unwrap());
    // Two closures before Christmas push the cutoff back two more days than `us`.
    assert_eq!(
        acme.business_days_before(date("2026-12-28"), 5).unwrap(),
        date("2026-12-17")
    );

    let err = reg.get("acme-typo").unwrap_err();
    assert!(err.to_string().contains("\"acme-typo\"") && err.to_string().contains("gb-eng"));

    let mut bad = BTreeMap::new();
    bad.insert(
        "x".to_owned(),
        CalendarSpec {
            base: Some("fr".into()),
            ..Default::default()
        },
    );
    assert!(
        CalendarRegistry::new(&bad)
            .unwrap_err()
            .to_string()
            .contains("\"fr\"")
    );
    let mut shadow = BTreeMap::new();
    shadow.insert("us".to_owned(), CalendarSpec::default());
    assert!(matches!(
        CalendarRegistry::new(&shadow),
        Err(CalendarError::Shadows { .. })
    ));
    let mut all_weekend = BTreeMap::new();
    all_weekend.insert(
        "never".to_owned(),
        CalendarSpec {
            weekend: Some(vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ]),
            ..Default::default()
        },
    );
    assert!(CalendarRegistry::new(&all_weekend).is_err());
}

#[test]
fn a_custom_week_mask() {
    let mut custom = BTreeMap::new();
    custom.insert(
        "fri-sat".to_owned(),
        CalendarSpec {
            weekend: Some(vec![Weekday::Fri, Weekday::Sat]),
            ..Default::default()
        },
    );
    let reg = CalendarRegistry::new(&custom).unwrap();
    let cal = reg.get("fri-sat").unwrap();
    assert!(cal.is_business_day(date("2026-11-29")).unwrap()); // Sunday
    assert!(!cal.is_business_day(date("2026-11-27")).unwrap()); // Friday
}

#[test]
fn ics_holidays_are_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("closures.ics");
    std::fs::write(
        &path,
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
         BEGIN:VEVENT\r\nUID:1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261224\r\nSUMMARY:Christmas Eve closure\r\nEND:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:2\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261229\r\nDTEND;VALUE=DATE:20261232\r\nSUMMARY:broken\r\nEND:VEVENT\r\n\
         END:VCALENDAR\r\n",
    )
    .unwrap();
    // An impossible DTEND is treated as a one-day event, not a crash.
    let mut custom = BTreeMap::new();
    custom.insert(
        "office".to_owned(),
        CalendarSpec {
            base: Some("us".into()),
            ics: Some(path.clone()),
            ..Default::default()
        },
    );
    let reg = CalendarRegistry::new(&custom).unwrap();
    let office = reg.get("office").unwrap();
    assert!(!office.is_business_day(date("2026-12-24")).unwrap());
    assert!(
        office
            .holidays(2026)
            .iter()
            .any(|h| h.name == "Christmas Eve closure")
    );

    std::fs::write(
        &path,
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
         BEGIN:VEVENT\r\nUID:1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261228\r\nDTEND;VALUE=DATE:20261231\r\nSUMMARY:Year-end\r\nEND:VEVENT\r\n\
         END:VCALENDAR\r\n",
    )
    .unwrap();
    let reg = CalendarRegistry::new(&custom).unwrap();
    let office = reg.get("office").unwrap();
    for d in ["2026-12-28", "2026-12-29", "2026-12-30"] {
        assert!(!office.is_business_day(date(d)).unwrap(), "{d}");
    }
    assert!(
        office.is_business_day(date("2026-12-31")).unwrap(),
        "DTEND is exclusive"
    );

    std::fs::write(
        &path,
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260101\r\nRRULE:FREQ=YEARLY\r\nSUMMARY:NY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    .unwrap();
    let err = CalendarRegistry::new(&custom).unwrap_err().to_string();
    assert!(
        err.contains("RRULE") && err.contains("closures.ics"),
        "{err}"
    );

    custom.insert(
        "gone".to_owned(),
        CalendarSpec {
            ics: Some(dir.path().join("missing.ics")),
            ..Default::default()
        },
    );
    custom.remove("office");
    let err = CalendarRegistry::new(&custom).unwrap_err().to_string();
    assert!(err.contains("missing.ics"), "{err}");
}

/// The obvious, slow definition: walk day by day.
fn naive_before(cal: &Calendar, d: NaiveDate, n: u32) -> NaiveDate {
    let mut left = n;
    let mut day = d;
    while left > 0 {
        day = day.pred_opt().unwrap();
        if cal.is_business_day(day).unwrap() {
            left -= 1;
        }
    }
    day
}

fn naive_between(cal: &Calendar, a: NaiveDate, b: NaiveDate) -> i64 {
    let mut n = 0;
    let mut d = a;
    while d < b {
        if cal.is_business_day(d).unwrap() {
            n += 1;
        }
        d = d.succ_opt().unwrap();
    }
    n
}

fn naive_is_business(cal_name: &str, d: NaiveDate) -> bool {
    let weekend = matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
    let reg = CalendarRegistry::builtin();
    let cal = reg.get(cal_name).unwrap();
    !weekend && !cal.holidays(d.year()).iter().any(|h| h.date == d)
}

fn calendars() -> Vec<Arc<Calendar>> {
    let mut custom = BTreeMap::new();
    custom.insert(
        "custom".to_owned(),
        CalendarSpec {
            base: Some("gb-eng".into()),
            add: vec![date("2030-03-04"), date("2031-12-29")],
            remove: vec![date("2030-12-25")],
            weekend: Some(vec![Weekday::Sun]),
            ..Default::default()
        },
    );
    let reg = CalendarRegistry::new(&custom).unwrap();
    reg.names().iter().map(|n| reg.get(n).unwrap()).collect()
}

fn any_date() -> impl Strategy<Value = NaiveDate> {
    (1990i32..2100, 1u32..=366).prop_map(|(y, o)| {
        NaiveDate::from_yo_opt(y, o).unwrap_or_else(|| NaiveDate::from_yo_opt(y, 365).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn stepping_back_then_counting_gives_n(d in any_date(), n in 0u32..2000, which in 0usize..6) {
        let cals = calendars();
        let cal = &cals[which % cals.len()];
        let back = cal.business_days_before(d, n).unwrap();
        prop_assert_eq!(cal.business_days_between(back, d).unwrap(), i64::from(n));
        if n > 0 {
            prop_assert!(cal.is_business_day(back).unwrap());
            prop_assert!(back < d);
        }
        let fwd = cal.business_days_after(d, n).unwrap();
        if n > 0 {
            prop_assert!(cal.is_business_day(fwd).unwrap());
            // (d, fwd] holds n business days.
            prop_assert_eq!(
                cal.business_days_between(d.succ_opt().unwrap(), fwd.succ_opt().unwrap()).unwrap(),
                i64::from(n)
            );
        }
    }

    #[test]
    fn stepping_is_monotone_in_n(d in any_date(), n in 0u32..1500, which in 0usize..6) {
        let cals = calendars();
        let cal = &cals[which % cals.len()];
        prop_assert!(cal.business_days_before(d, n + 1).unwrap() < cal.business_days_before(d, n).unwrap());
        prop_assert!(cal.business_days_after(d, n + 1).unwrap() > cal.business_days_after(d, n).unwrap());
    }

    #[test]
    fn agrees_with_a_day_by_day_reference(d in any_date(), n in 0u32..400, span in 0i64..900, which in 0usize..6) {
        let cals = calendars();
        let cal = &cals[which % cals.len()];
        prop_assert_eq!(cal.business_days_before(d, n).unwrap(), naive_before(cal, d, n));
        let e = d + chrono::Duration::days(span);
        prop_assert_eq!(cal.business_days_between(d, e).unwrap(), naive_between(cal, d, e));
    }

    #[test]
    fn business_days_are_weekdays_that_are_not_listed_holidays(d in any_date(), which in 0usize..5) {
        let name = ["us", "gb-eng", "de", "target", "none"][which];
        let reg = CalendarRegistry::builtin();
        prop_assert_eq!(reg.get(name).unwrap().is_business_day(d).unwrap(), naive_is_business(name, d));
    }
}
