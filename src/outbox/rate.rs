//! The rate limit: at most `mail.rate_limit` mails a second leave this daemon (a token bucket
//! of `mail.rate_burst`, by the `governor` crate), because relays cap mails per second and
//! answer 421/451 above the cap. A relay that says "too many" anyway halves the rate for
//! `mail.rate_slowdown` (one that says it again once the halved rate has had a second halves
//! it again, down to an eighth).

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota};
use tracing::{info, warn};

/// Halvings a run of "too many" replies can stack: down to an eighth of the rate.
const MAX_HALVINGS: usize = 3;

#[derive(Debug, Default, Clone, Copy)]
struct Slowed {
    halvings: usize,
    until: Option<Instant>,
    /// When the rate was last halved: the sends already in flight then may meet the same
    /// "too many" and must not halve it again.
    halved_at: Option<Instant>,
}

/// How long a halved rate is given before another "too many" halves it again.
const SETTLE: Duration = Duration::from_secs(1);

/// Paces sends across the daemon's lanes.
#[derive(Debug)]
pub struct RateGate {
    /// The bucket at the full rate, then at a half, a quarter, an eighth of it; empty when the
    /// rate is unlimited.
    buckets: Vec<DefaultDirectRateLimiter>,
    rate: u32,
    slowdown: Duration,
    slowed: Mutex<Slowed>,
}

impl RateGate {
    /// `rate` mails a second (0: unlimited) with a bucket of `burst`.
    pub fn new(rate: u32, burst: u32, slowdown: Duration) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let buckets = if rate == 0 {
            Vec::new()
        } else {
            (0..=MAX_HALVINGS)
                .filter_map(|k| {
                    let period = Duration::from_secs_f64(f64::from(1u32 << k) / f64::from(rate));
                    Quota::with_period(period)
                        .map(|q| DefaultDirectRateLimiter::direct(q.allow_burst(burst)))
                })
                .collect()
        };
        Self {
            buckets,
            rate,
            slowdown,
            slowed: Mutex::new(Slowed::default()),
        }
    }

    /// The mails a second allowed now (0: unlimited).
    pub fn current_rate(&self) -> f64 {
        if self.buckets.is_empty() {
            return 0.0;
        }
        let halvings = self.halvings(Instant::now());
        f64::from(self.rate) / f64::from(1u32 << halvings)
    }

    fn halvings(&self, now: Instant) -> usize {
        let mut slowed = self.slowed.lock().unwrap_or_else(|e| e.into_inner());
        match slowed.until {
            Some(until) if now >= until => {
                info!(
                    rate = self.rate,
                    "relay rate back to the full mail.rate_limit"
                );
                *slowed = Slowed::default();
                0
            }
            _ => slowed.halvings,
        }
    }

    /// Waits until one more mail may go.
    pub async fn ready(&self) {
        let Some(full) = self.buckets.first() else {
            return;
        };
        take(full).await;
        let halvings = self.halvings(Instant::now());
        if halvings > 0
            && let Some(slow) = self.buckets.get(halvings)
        {
            take(slow).await;
        }
    }

    /// The relay said "too many": halve the rate (again) for a while. Without a rate limit
    /// there is nothing to halve; the breaker and the mail's return to owed handle it.
    pub fn slow_down(&self) {
        if self.buckets.is_empty() {
            return;
        }
        let mut slowed = self.slowed.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let settled = slowed.halved_at.is_none_or(|at| now >= at + SETTLE);
        let halvings = if settled {
            (slowed.halvings + 1).min(MAX_HALVINGS)
        } else {
            slowed.halvings
        };
        let halved_at = if halvings != slowed.halvings {
            warn!(
                rate = f64::from(self.rate) / f64::from(1u32 << halvings),
                for_ = %humantime::format_duration(self.slowdown),
                "the relay says too many: slowing down"
            );
            Some(now)
        } else {
            slowed.halved_at
        };
        *slowed = Slowed {
            halvings,
            until: Some(now + self.slowdown),
            halved_at,
        };
    }
}

/// Takes a token from `bucket`, waiting on the runtime's timer until it has one.
async fn take(bucket: &DefaultDirectRateLimiter) {
    loop {
        match bucket.check() {
            Ok(()) => return,
            Err(not_until) => {
                let wait = not_until.wait_time_from(bucket.clock().now());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unlimited_never_waits_and_cannot_be_slowed() {
        let gate = RateGate::new(0, 1, Duration::from_secs(60));
        gate.slow_down();
        let t = Instant::now();
        for _ in 0..10_000 {
            gate.ready().await;
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(gate.current_rate(), 0.0);
    }

    #[tokio::test]
    async fn paces_at_the_rate_after_the_burst_and_halves_when_told() {
        let gate = RateGate::new(100, 5, Duration::from_millis(400));
        let t = Instant::now();
        // The burst of 5 at once, then 20 more at 10 ms each: about 200 ms.
        for _ in 0..25 {
            gate.ready().await;
        }
        // Never faster than the rate (how much slower depends on the machine).
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(180), "{took:?}");
        gate.slow_down();
        // Sends in flight meet the same "too many": the rate is halved once for them.
        gate.slow_down();
        assert_eq!(gate.current_rate(), 50.0);
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(
            gate.current_rate(),
            100.0,
            "back to full after the slowdown"
        );
    }
}
