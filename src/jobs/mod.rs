//! apalis jobs: what each carries, the queue it lives on, and the worker that runs them (the
//! cron poll, polls asked for by an operator, disable-auto-renew requests). Mail is not a job:
//! the outbox is its queue (see [`crate::outbox`]).

mod worker;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::QueuedJob;

pub use worker::{WorkerError, run_jobs};

/// Queue names are pinned: apalis would otherwise use the Rust type name, which changes when a
/// type is renamed or moved and would strand queued jobs.
///
/// Mail has no queue jobs: the outbox is its queue (see [`crate::outbox`]). Operators still
/// see each mail as a send job of this queue (`renewal-worker jobs`).
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
        idempotency_key: format!("poll:{}", ulid::Ulid::generate()),
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
    format!("{prefix}-{}", ulid::Ulid::generate())
}
