use super::*;
use crate::calendar::CalendarRegistry;
use proptest::prelude::*;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn cal(name: &str) -> std::sync::Arc<Calendar> {
    CalendarRegistry::builtin().get(name).unwrap()
}

#[test]
fn terms_from_feb_29_end_on_feb_28_and_on_feb_29_in_leap_years() {
    let start = date("2024-02-29");
    let ends: Vec<NaiveDate> = (1..=4).map(|k| term_end(start, k).unwrap()).collect();
    assert_eq!(
        ends,
        ["2025-02-28", "2026-02-28", "2027-02-28", "2028-02-29"].map(date)
    );
    // Chaining from the previous end would have lost the 29th for good.
    let chained = (0..4).fold(start, |d, _| d.checked_add_months(Months::new(12)).unwrap());
    assert_eq!(chained, date("2028-02-28"));
    assert_eq!(term_end(start, 8).unwrap(), date("2032-02-29"));
}

#[test]
fn terms_from_the_31st_keep_the_31st() {
    let start = date("2025-01-31");
    for k in 1..=30 {
        assert_eq!(
            term_end(start, k).unwrap(),
            NaiveDate::from_ymd_opt(2025 + k as i32, 1, 31).unwrap()
        );
    }
    assert!(is_anniversary(start, date("2027-01-31")));
    assert!(!is_anniversary(start, date("2027-01-30")));
    assert!(is_anniversary(date("2024-02-29"), date("2026-02-28")));
    assert!(!is_anniversary(date("2024-02-29"), date("2024-02-29")));
}

#[test]
fn the_worked_cutoff_examples() {
    let us = cal("us");
    assert_eq!(
        cutoff_date(date("2026-12-28"), &us, 5).unwrap(),
        date("2026-12-18")
    );
    assert_eq!(
        cutoff_date(date("2026-12-26"), &us, 5).unwrap(),
        date("2026-12-18")
    );
    assert_eq!(
        cutoff_date(date("2026-05-25"), &us, 5).unwrap(),
        date("2026-05-18")
    );
    // Holidays push the cutoff back: England's Christmas and Boxing Day substitute.
    assert_eq!(
        cutoff_date(date("2026-12-30"), &cal("none"), 5).unwrap(),
        date("2026-12-23")
    );
    assert_eq!(
        cutoff_date(date("2026-12-30"), &cal("gb-eng"), 5).unwrap(),
        date("2026-12-21")
    );
}

#[test]
fn the_cutoff_instant_is_the_start_of_the_next_local_day() {
    let ny: Tz = "America/New_York".parse().unwrap();
    assert_eq!(
        cutoff_instant(date("2026-12-18"), ny),
        utc("2026-12-19T05:00:00Z")
    );
    let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
    assert_eq!(
        cutoff_instant(date("2026-12-18"), tokyo),
        utc("2026-12-18T15:00:00Z")
    );
}

#[test]
fn a_day_that_begins_in_a_dst_gap_starts_when_the_clocks_resume() {
    // São Paulo, 2018-11-04: 00:00 became 01:00 (-02:00).
    let sp: Tz = "America/Sao_Paulo".parse().unwrap();
    assert_eq!(
        cutoff_instant(date("2018-11-03"), sp),
        utc("2018-11-04T03:00:00Z")
    );
    // Santiago, 2022-09-11: likewise, 01:00 at -03:00.
    let scl: Tz = "America/Santiago".parse().unwrap();
    assert_eq!(
        start_of_day(date("2022-09-11"), scl),
        utc("2022-09-11T04:00:00Z")
    );
    // The instant before belongs to the cutoff day.
    let before = utc("2022-09-11T03:59:59Z").with_timezone(&scl);
    assert_eq!(before.date_naive(), date("2022-09-10"));
    // A whole day skipped: Samoa went from Dec 29 straight to Dec 31 in 2011.
    let apia: Tz = "Pacific/Apia".parse().unwrap();
    assert_eq!(
        start_of_day(date("2011-12-30"), apia),
        start_of_day(date("2011-12-31"), apia)
    );
}

#[test]
fn an_ambiguous_local_time_is_taken_at_its_first_occurrence() {
    let ny: Tz = "America/New_York".parse().unwrap();
    let t = NaiveTime::from_hms_opt(1, 30, 0).unwrap();
    // 2026-11-01 01:30 happens at -04:00 and again at -05:00.
    assert_eq!(
        local_instant(date("2026-11-01"), t, ny),
        utc("2026-11-01T05:30:00Z")
    );
    // Havana falls back at 01:00 to 00:00: its midnight happens twice.
    let havana: Tz = "America/Havana".parse().unwrap();
    assert_eq!(
        start_of_day(date("2023-11-05"), havana),
        utc("2023-11-05T04:00:00Z")
    );
}

#[test]
fn reminders_fall_on_business_days_at_the_local_time() {
    let ny: Tz = "America/New_York".parse().unwrap();
    let us = cal("us");
    let policy = RenewalPolicy::default();
    let r = reminders(date("2026-12-28"), &us, ny, &policy).unwrap();
    let got: Vec<(String, NaiveDate, DateTime<Utc>)> = r
        .iter()
        .map(|r| (r.offset.to_string(), r.date, r.due_at))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "30d".into(),
                date("2026-11-18"),
                utc("2026-11-18T14:00:00Z")
            ),
            (
                "10bd".into(),
                date("2026-12-04"),
                utc("2026-12-04T14:00:00Z")
            ),
            (
                "1bd".into(),
                date("2026-12-17"),
                utc("2026-12-17T14:00:00Z")
            ),
        ]
    );

    // Calendar-day offsets that land on Thanksgiving or a Saturday move back.
    let policy = RenewalPolicy {
        reminder_offsets: vec!["22d".parse().unwrap(), "20d".parse().unwrap()],
        ..RenewalPolicy::default()
    };
    let r = reminders(date("2026-12-28"), &us, ny, &policy).unwrap();
    let dates: Vec<NaiveDate> = r.iter().map(|r| r.date).collect();
    assert_eq!(dates, vec![date("2026-11-25"), date("2026-11-27")]);
    for r in &r {
        assert!(us.is_business_day(r.date).unwrap());
    }
}

#[test]
fn reminder_times_follow_the_local_clock_across_dst_changes() {
    let ny: Tz = "America/New_York".parse().unwrap();
    let none = cal("none");
    let policy = RenewalPolicy {
        cutoff_business_days: 0,
        reminder_offsets: vec!["1bd".parse().unwrap(), "3bd".parse().unwrap()],
        ..RenewalPolicy::default()
    };
    // Cutoff Tue 2026-03-10: reminders Mon 03-09 (EDT) and Thu 03-05 (EST).
    let r = reminders(date("2026-03-10"), &none, ny, &policy).unwrap();
    assert_eq!(r[0].due_at, utc("2026-03-05T14:00:00Z"));
    assert_eq!(r[1].due_at, utc("2026-03-09T13:00:00Z"));
    // November: back to standard time.
    let r = reminders(date("2026-11-04"), &none, ny, &policy).unwrap();
    assert_eq!(r[0].due_at, utc("2026-10-30T13:00:00Z"));
    assert_eq!(r[1].due_at, utc("2026-11-03T14:00:00Z"));
}

fn input(tz: &str) -> TimelineInput {
    TimelineInput {
        term_start: date("2025-12-28"),
        term_end: date("2026-12-28"),
        tz: tz.parse().unwrap(),
        auto_renew: true,
        assigned_licenses: 0,
        disable_effective_term_end: None,
    }
}

#[test]
fn disable_before_the_cutoff_stops_this_term_after_it_the_next() {
    let us = cal("us");
    let policy = RenewalPolicy::default();
    let i = input("America/New_York");
    // Last minute of Fri 2026-12-18 in New York.
    let last = utc("2026-12-19T04:59:00Z");
    assert_eq!(
        decide_disable(&i, &us, &policy, last).unwrap(),
        DisableDecision::Accepted {
            effective_term_end: date("2026-12-28"),
            renews_once_more: false,
            cutoff_at: utc("2026-12-19T05:00:00Z"),
        }
    );
    // First minute of Sat 2026-12-19: one more renewal.
    let first = utc("2026-12-19T05:00:00Z");
    assert_eq!(
        decide_disable(&i, &us, &policy, first).unwrap(),
        DisableDecision::Accepted {
            effective_term_end: date("2027-12-28"),
            renews_once_more: true,
            cutoff_at: utc("2026-12-19T05:00:00Z"),
        }
    );
    // The same instant is still the cutoff day in Los Angeles.
    let la = input("America/Los_Angeles");
    assert!(matches!(
        decide_disable(&la, &us, &policy, first).unwrap(),
        DisableDecision::Accepted {
            renews_once_more: false,
            ..
        }
    ));
}

#[test]
fn assigned_licenses_reject_and_an_accepted_request_is_final() {
    let us = cal("us");
    let policy = RenewalPolicy::default();
    let mut i = input("Europe/Berlin");
    i.assigned_licenses = 3;
    assert_eq!(
        decide_disable(&i, &us, &policy, utc("2026-11-01T00:00:00Z")).unwrap(),
        DisableDecision::Rejected {
            reason: Reason::LicensesAssigned,
            assigned_licenses: 3
        }
    );
    i.assigned_licenses = 0;
    i.auto_renew = false;
    i.disable_effective_term_end = Some(date("2027-12-28"));
    assert_eq!(
        decide_disable(&i, &us, &policy, utc("2026-11-01T00:00:00Z")).unwrap(),
        DisableDecision::AlreadyDisabled {
            effective_term_end: date("2027-12-28")
        }
    );
}

#[test]
fn the_timeline_says_what_a_disable_would_do_now() {
    let us = cal("us");
    let policy = RenewalPolicy::default();
    let i = input("America/New_York");
    let t = timeline(&i, &us, &policy, utc("2026-12-01T12:00:00Z")).unwrap();
    assert_eq!(t.term_index, 1);
    assert_eq!(t.term_start, date("2025-12-28"));
    assert_eq!(t.cutoff_date, date("2026-12-18"));
    assert!(t.can_disable);
    assert_eq!(t.reason, None);
    assert_eq!(t.reminders.len(), 3);

    let late = timeline(&i, &us, &policy, utc("2026-12-20T12:00:00Z")).unwrap();
    assert!(!late.can_disable);
    assert_eq!(late.reason, Some(Reason::AfterCutoff));
    assert!(late.renews_once_more);
    assert_eq!(late.effective_term_end, date("2027-12-28"));

    let mut busy = i.clone();
    busy.assigned_licenses = 2;
    let t = timeline(&busy, &us, &policy, utc("2026-12-01T12:00:00Z")).unwrap();
    assert!(!t.can_disable);
    assert_eq!(t.reason, Some(Reason::LicensesAssigned));

    // Later terms are found from the original start.
    let mut third = i.clone();
    third.term_end = date("2028-12-28");
    let t = timeline(&third, &us, &policy, utc("2028-06-01T00:00:00Z")).unwrap();
    assert_eq!((t.term_index, t.term_start), (3, date("2027-12-28")));
}

proptest! {
    #[test]
    fn term_ends_are_anniversaries_of_the_start(y in 1990i32..2100, o in 1u32..=366, k in 1u32..60) {
        let Some(start) = NaiveDate::from_yo_opt(y, o) else { return Ok(()) };
        let end = term_end(start, k).unwrap();
        prop_assert_eq!(end.year(), start.year() + k as i32);
        prop_assert_eq!(end.month(), start.month());
        let want_day = if start.month() == 2 && start.day() == 29 && NaiveDate::from_ymd_opt(end.year(), 2, 29).is_none() { 28 } else { start.day() };
        prop_assert_eq!(end.day(), want_day);
        prop_assert!(is_anniversary(start, end));
    }

    #[test]
    fn the_term_index_brackets_the_date(y in 1990i32..2090, o in 1u32..=365, days in 0i64..20_000) {
        let start = NaiveDate::from_yo_opt(y, o).unwrap();
        let d = start + chrono::Duration::days(days);
        let k = term_index_at(start, d);
        let prev = if k == 1 { start } else { term_end(start, k - 1).unwrap() };
        prop_assert!(prev <= d && d < term_end(start, k).unwrap());
    }

    #[test]
    fn local_instants_read_back_as_the_asked_time_or_just_after_a_gap(
        y in 1990i32..2040, o in 1u32..=365, h in 0u32..24, m in 0u32..60, zone in 0usize..6
    ) {
        let tz: Tz = ["America/New_York", "America/Santiago", "America/Sao_Paulo", "Europe/London", "Australia/Lord_Howe", "America/Havana"][zone].parse().unwrap();
        let d = NaiveDate::from_yo_opt(y, o).unwrap();
        let t = NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let at = local_instant(d, t, tz);
        let local = at.with_timezone(&tz).naive_local();
        let asked = NaiveDateTime::new(d, t);
        prop_assert!(local >= asked);
        if local != asked {
            // Only in a gap: the instant before reads earlier than asked.
            let before = (at - chrono::Duration::seconds(1)).with_timezone(&tz).naive_local();
            prop_assert!(before < asked);
        } else {
            // The earliest of the instants that read so.
            let earlier = (at - chrono::Duration::hours(1)).with_timezone(&tz).naive_local();
            prop_assert!(earlier != asked);
        }
    }
}
