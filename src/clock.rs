//! Time is injected: business rules ask a [`Clock`], never `Utc::now()`, so every rule can be
//! exercised on an exact date (a holiday, a DST edge) in tests and in rehearsals (`--now`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Starts at a chosen instant and then advances with real time. This is what `--now` gives:
/// a rehearsal "as if it were" some date, in which retries and timeouts still behave normally.
#[derive(Debug, Clone)]
pub struct ShiftedClock {
    start: DateTime<Utc>,
    started: Instant,
}

impl ShiftedClock {
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            start,
            started: Instant::now(),
        }
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = Duration::from_std(self.started.elapsed()).unwrap_or(Duration::zero());
        self.start + elapsed
    }
}

/// A clock that only moves when told to; for tests that step through a term.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *guard += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_clock_starts_at_the_given_instant_and_moves_forward() {
        let start = DateTime::parse_from_rfc3339("2026-12-18T09:00:00Z")
            .unwrap()
            .to_utc();
        let clock = ShiftedClock::starting_at(start);
        let a = clock.now();
        let b = clock.now();
        assert!(a >= start && a - start < Duration::seconds(5));
        assert!(b >= a);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-03-08T06:59:00Z")
            .unwrap()
            .to_utc();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::minutes(2));
        assert_eq!(clock.now(), start + Duration::minutes(2));
    }
}
