//! The one backoff rule every retry loop of the daemon uses: waits that double from a first
//! value up to a cap, optionally with "equal jitter". Each caller brings its own values (a
//! mail's retry, the store at start-up, a batch's record, a lane's pause, a restarted worker,
//! the pulling source); the shape is the same everywhere, so it is written once.

use std::time::Duration;

/// A doubling wait: `first`, `2 × first`, … up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The wait after the `failures`-th failure in a row (1-based; 0 counts as 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.first.saturating_mul(1u32 << exp).min(self.max)
    }

    /// [`Backoff::delay`] with "equal jitter": half of it fixed, half random (`random_unit`
    /// in 0..=1), so that many callers failing together do not retry together, yet none
    /// retries at once.
    pub fn delay_with_jitter(&self, failures: u32, random_unit: f64) -> Duration {
        let half = self.delay(failures) / 2;
        half + half.mul_f64(random_unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn delays_double_from_the_first_and_stop_at_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let ms: Vec<u128> = (0..=8).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn equal_jitter_stays_within_the_upper_half() {
        let b = Backoff::new(Duration::from_secs(30), Duration::from_secs(3600));
        assert_eq!(b.delay_with_jitter(2, 0.0), Duration::from_secs(30));
        assert_eq!(b.delay_with_jitter(2, 1.0), Duration::from_secs(60));
        let mid = b.delay_with_jitter(2, 0.5);
        assert!(mid > Duration::from_secs(30) && mid < Duration::from_secs(60));
        assert_eq!(b.delay_with_jitter(2, 7.0), Duration::from_secs(60));
    }
}
