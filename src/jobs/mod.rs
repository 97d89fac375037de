//! apalis jobs: what each job carries, the queue it lives on, and the worker that runs them.
//! A job only points at outbox state; the outbox decides what is owed, so a duplicate or stale
//! job is harmless.

mod worker;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::RetrySettings;
use crate::store::QueuedJob;

pub use worker::{WorkerError, run_worker};

/// Queue names are pinned: apalis would otherwise use the Rust type name, which changes when a
/// type is renamed or moved and would strand queued jobs.
pub const SEND_QUEUE: &str = "renewal-worker.send";
/// Disable-auto-renew requests handed over by the marketplace.
pub const DISABLE_QUEUE: &str = "renewal-worker.disable-auto-renew";
/// Polls asked for by an operator (`enqueue poll`), besides the daemon's own schedule.
pub const POLL_QUEUE: &str = "renewal-worker.poll";

/// How often apalis itself retries a job whose handler errored (a database error; mail
/// failures are retried by the outbox with backoff, not here).
pub const HANDLER_ATTEMPTS: usize = 5;

/// Send the mail of one outbox row, as attempt `attempts + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMail {
    pub outbox_id: i64,
    /// Attempts already started when this job was queued; the job may only claim the row
    /// while that is still true.
    pub attempts: u32,
}

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

/// The idempotency key of an outbox row's send job, as SQL over `outbox o`: the twin of the key
/// [`send_job`] gives, so the store can find rows whose job is missing.
pub const SEND_JOB_KEY_SQL: &str = "('send:' || o.id || ':' || o.attempts)";

pub fn send_job(outbox_id: i64, attempts: u32, run_after: Duration) -> QueuedJob {
    QueuedJob {
        queue: SEND_QUEUE,
        args: serde_json::json!(SendMail {
            outbox_id,
            attempts
        }),
        idempotency_key: format!("send:{outbox_id}:{attempts}"),
        run_after,
        max_attempts: HANDLER_ATTEMPTS,
    }
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

    #[test]
    fn send_job_keys_follow_the_attempt() {
        let a = send_job(7, 0, Duration::ZERO);
        let b = send_job(7, 1, Duration::ZERO);
        assert_eq!(a.idempotency_key, "send:7:0");
        assert_ne!(a.idempotency_key, b.idempotency_key);
        assert_eq!(a.queue, SEND_QUEUE);
    }
}
