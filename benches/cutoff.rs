//! Cutoff computation over one million (term end, calendar) pairs, against a day-by-day
//! reference. Run: `cargo bench --bench cutoff`. Prints figures; asserts nothing about time.

use std::hint::black_box;
use std::time::Instant;

use chrono::{Datelike, NaiveDate};
use renewal_worker::calendar::{Calendar, CalendarRegistry};
use renewal_worker::renewal::cutoff_date;

const PAIRS: usize = 1_000_000;
const NAIVE_PAIRS: usize = 100_000;
const CALENDARS: [&str; 5] = ["us", "gb-eng", "de", "target", "none"];

/// A small deterministic generator, so every run measures the same inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn naive_cutoff(cal: &Calendar, term_end: NaiveDate, n: u32) -> NaiveDate {
    let mut left = n;
    let mut d = term_end;
    while left > 0 {
        d = d.pred_opt().expect("in range");
        if cal.is_business_day(d).expect("in range") {
            left -= 1;
        }
    }
    d
}

fn main() {
    let registry = CalendarRegistry::builtin();
    let calendars: Vec<_> = CALENDARS
        .iter()
        .map(|n| registry.get(n).expect("built-in"))
        .collect();
    let start = NaiveDate::from_ymd_opt(2000, 1, 1).expect("date");
    let span = NaiveDate::from_ymd_opt(2099, 12, 31).expect("date") - start;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let pairs: Vec<(NaiveDate, usize)> = (0..PAIRS)
        .map(|_| {
            let days = rng.next() % (span.num_days() as u64 + 1);
            (
                start + chrono::Days::new(days),
                (rng.next() % CALENDARS.len() as u64) as usize,
            )
        })
        .collect();

    // First pass: includes building each calendar's year tables (100 years x 5 calendars).
    let t = Instant::now();
    let mut check = 0i64;
    for (d, c) in &pairs {
        check += black_box(cutoff_date(*d, &calendars[*c], 5).expect("cutoff")).num_days_from_ce()
            as i64;
    }
    let cold = t.elapsed();

    let t = Instant::now();
    let mut check2 = 0i64;
    for (d, c) in &pairs {
        check2 += black_box(cutoff_date(*d, &calendars[*c], 5).expect("cutoff")).num_days_from_ce()
            as i64;
    }
    let warm = t.elapsed();
    assert_eq!(check, check2);

    let t = Instant::now();
    for (d, c) in pairs.iter().take(NAIVE_PAIRS) {
        let fast = cutoff_date(*d, &calendars[*c], 5).expect("cutoff");
        assert_eq!(
            black_box(naive_cutoff(&calendars[*c], *d, 5)),
            fast,
            "{d} {}",
            CALENDARS[*c]
        );
    }
    let naive = t.elapsed();

    // A long step shows the per-year tables at work: 2,500 business days is about ten years.
    let t = Instant::now();
    for (d, c) in pairs.iter().take(NAIVE_PAIRS) {
        black_box(calendars[*c].business_days_before(*d, 2500).ok());
    }
    let long = t.elapsed();

    let per = |d: std::time::Duration, n: usize| d.as_nanos() as f64 / n as f64;
    println!(
        "cutoff (5 business days before), {PAIRS} random (term end 2000-2099, calendar) pairs"
    );
    println!(
        "  first pass (builds year tables): {:>8.1} ms  {:>7.1} ns/op  {:>12.0} ops/s",
        cold.as_secs_f64() * 1e3,
        per(cold, PAIRS),
        PAIRS as f64 / cold.as_secs_f64()
    );
    println!(
        "  warm:                            {:>8.1} ms  {:>7.1} ns/op  {:>12.0} ops/s",
        warm.as_secs_f64() * 1e3,
        per(warm, PAIRS),
        PAIRS as f64 / warm.as_secs_f64()
    );
    println!(
        "  day-by-day reference ({NAIVE_PAIRS} pairs, checked equal): {:>7.1} ns/op",
        per(naive, NAIVE_PAIRS)
    );
    println!(
        "  2,500 business days back ({NAIVE_PAIRS} pairs):        {:>7.1} ns/op",
        per(long, NAIVE_PAIRS)
    );
}
