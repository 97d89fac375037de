//! The daemon's work: apalis jobs (what each carries, the queue it lives on), the send lanes
//! that take owed mail from the outbox, and the worker that runs both.

mod lanes;
mod worker;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::RetrySettings;
use crate::store::QueuedJob;

pub use worker::{WorkerError, run_worker};

/// Queue names are pinned: apalis would otherwise use the Rust type name, which changes when a
/// type is renamed or moved and would strand queued jobs.
///
/// Mail has no queue jobs: the outbox is its queue (see [`lanes`]). Operators still see each
/// mail as a send job of this queue (`renewal-worker jobs`).
pub const SEND_QUEUE: &str = "renewal-worker.send";
/// Disable-auto-renew requests handed over by the marketplace.
pub const DISABLE_QUEUE: &str = "renewal-worker.disable-auto-renew";
/// Polls asked for by an operator (`enqueue poll`), besides the daemon's own schedule.
pub const POLL_QUEUE: &str = "renewal-worker.poll";

/// How often apalis itself retries a job whose handler errored (a database error).
pub const HANDLER_ATTEMPTS: usize = 5;

/// Run one poll now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollNow {
    pub requested_by: String,
    /// Plan this subscription now, whatever its next due instant (a reminder or rollover
    /// asked for by hand); the poll then handles everything due as usual.
    #[serde(default)]
    pub subscription: Option<String>,
}

pub fn poll_job(requested_by: &str) -> QueuedJob {
    poll_subscription_job(requested_by, None)
}

pub fn poll_subscription_job(requested_by: &str, subscription: Option<&str>) -> QueuedJob {
    QueuedJob {
        queue: POLL_QUEUE,
        args: serde_json::json!(PollNow {
            requested_by: requested_by.to_owned(),
            subscription: subscription.map(str::to_owned),
        }),
        // Every request is its own job: two operators asking twice get two (harmless) polls.
        idempotency_key: format!("poll:{}", ulid_like()),
        run_after: Duration::ZERO,
        max_attempts: HANDLER_ATTEMPTS,
    }
}

/// Decide a request to disable auto-renew, as made at `requested_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisableRequest {
    pub subscription: String,
    pub requested_by: String,
    pub requested_at: chrono::DateTime<chrono::Utc>,
    pub request_key: String,
}

pub fn disable_job(request: &DisableRequest) -> QueuedJob {
    QueuedJob {
        queue: DISABLE_QUEUE,
        args: serde_json::json!(request),
        idempotency_key: format!("disable:{}", request.request_key),
        run_after: Duration::ZERO,
        max_attempts: HANDLER_ATTEMPTS,
    }
}

/// A fresh request key, for requests that come without one.
pub fn new_request_key(prefix: &str) -> String {
    format!("{prefix}-{}", ulid_like())
}

fn ulid_like() -> String {
    format!(
        "{:x}-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        rand::random::<u64>()
    )
}

/// Backoff before the retry that follows failed attempt `attempt` (1-based): exponential from
/// `initial_backoff`, capped at `max_backoff`, with "equal jitter" (half fixed, half random) so
/// that many mails failing together do not retry together, yet none retries at once.
pub fn backoff(retry: &RetrySettings, attempt: u32, random_unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let base = retry
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(retry.max_backoff);
    let half = base / 2;
    half + half.mul_f64(random_unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> RetrySettings {
        RetrySettings {
            max_attempts: 8,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(3600),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let r = retry();
        assert_eq!(backoff(&r, 1, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(&r, 2, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(&r, 3, 1.0), Duration::from_secs(120));
        assert_eq!(backoff(&r, 9, 1.0), Duration::from_secs(3600));
        assert_eq!(backoff(&r, 1000, 1.0), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        let r = retry();
        assert_eq!(backoff(&r, 2, 0.0), Duration::from_secs(30));
        let mid = backoff(&r, 2, 0.5);
        assert!(mid > Duration::from_secs(30) && mid < Duration::from_secs(60));
    }
}
