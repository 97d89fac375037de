//! The apalis monitor: the cron poll, polls asked for by an operator and disable-auto-renew
//! requests, each a worker restarted with a pause if the database takes it down.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use apalis::prelude::*;
use tracing::{error, info, warn};

use apalis_cron::{CronScheduler, Tick};

use super::{DISABLE_QUEUE, DisableRequest, HANDLER_ATTEMPTS, POLL_QUEUE, PollNow};
use crate::outbox::Deliverer;
use crate::retry::Backoff;
use crate::store::{Backend, JobQueue, QueueOptions};

/// Registers a worker on `$monitor` for the store's backend: `$build` is compiled once per
/// backend with `$queue` bound to that backend's queue of `$args` jobs (made anew on every
/// restart of the worker).
macro_rules! register_queue {
    ($monitor:expr, $store:expr, $args:ty, $name:expr, $options:expr, |$n:ident, $queue:ident| $build:expr) => {{
        let store = $store.clone();
        match store.backend() {
            Backend::Sqlite => $monitor.register(move |$n| {
                let JobQueue::Sqlite($queue) = store.job_queue::<$args>($name, $options) else {
                    unreachable!("a SQLite store makes SQLite queues")
                };
                $build
            }),
            Backend::Postgres => $monitor.register(move |$n| {
                let JobQueue::Postgres($queue) = store.job_queue::<$args>($name, $options) else {
                    unreachable!("a PostgreSQL store makes PostgreSQL queues")
                };
                $build
            }),
        }
    }};
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the job queue stopped: {0}")]
    Monitor(String),
}

async fn handle_tick(_tick: Tick, deliverer: Data<Arc<Deliverer>>) -> Result<(), BoxDynError> {
    let result = crate::service::poll_now(&deliverer).await;
    deliverer.metrics.job("poll", result.is_ok());
    result.map(|_| ()).map_err(|e| {
        warn!(error = %e, "scheduled poll failed; the next tick retries");
        Box::new(e) as BoxDynError
    })
}

async fn handle_poll_now(job: PollNow, deliverer: Data<Arc<Deliverer>>) -> Result<(), BoxDynError> {
    if let Some(sub) = &job.subscription {
        deliverer.store.mark_due(sub).await?;
    }
    let result = crate::service::poll_now(&deliverer).await;
    deliverer.metrics.job("poll", result.is_ok());
    let report = result?;
    report.log("poll on request done", Some(&job.requested_by.to_string()));
    Ok(())
}

async fn handle_disable(
    job: DisableRequest,
    deliverer: Data<Arc<Deliverer>>,
) -> Result<(), BoxDynError> {
    let (Ok(id), Ok(by)) = (
        crate::domain::SubscriptionId::parse(&job.subscription),
        crate::domain::EmailAddress::parse(&job.requested_by),
    ) else {
        // Checked when queued; a bad job cannot get better by retrying.
        warn!(?job, "disable request with invalid fields dropped");
        return Err(Box::new(AbortError::new("invalid disable request")));
    };
    let d = &deliverer;
    let outcome = match crate::service::request_disable(
        &d.store,
        &d.settings,
        &d.calendars,
        &id,
        &by,
        job.requested_at,
        d.clock.now(),
        "job",
        &job.request_key,
    )
    .await
    {
        Ok(o) => {
            d.metrics.job("disable_auto_renew", true);
            o
        }
        Err(e) => {
            d.metrics.job("disable_auto_renew", false);
            return Err(Box::new(e));
        }
    };
    info!(subscription = %job.subscription, decision = %outcome.decision, reason = ?outcome.reason, "disable request decided");
    Ok(())
}

/// How long to wait before restarting a stopped worker. While the database is unreachable every
/// restart fails at once; without a pause the monitor would spin and flood the log. The pause
/// doubles from 100 ms up to 5 s across consecutive stops and starts over once the workers have
/// run for a minute without one.
#[derive(Default)]
struct RestartBackoff {
    state: std::sync::Mutex<Option<(std::time::Instant, u32)>>,
}

impl RestartBackoff {
    const WAIT: Backoff = Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(5),
    );
    const CALM: std::time::Duration = std::time::Duration::from_secs(60);

    fn next(&self, now: std::time::Instant) -> std::time::Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let streak = match *state {
            Some((last, streak)) if now.duration_since(last) < Self::CALM => streak + 1,
            _ => 0,
        };
        *state = Some((now, streak));
        Self::WAIT.delay(streak + 1)
    }
}

/// Waits inside apalis's (synchronous) restart callback. On the multi-threaded runtime the
/// thread's other tasks move elsewhere meanwhile; the monitor itself waits, which is what a
/// restart backoff is for.
fn pause(d: std::time::Duration) {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| std::thread::sleep(d));
        }
        _ => std::thread::sleep(d),
    }
}

/// Runs the queue's jobs (the cron poll, polls asked for, disable requests) until `shutdown`
/// resolves, then lets the jobs in hand finish within `worker.shutdown_grace`.
pub async fn run_jobs(
    deliverer: Arc<Deliverer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let settings = deliverer.settings.clone();
    let w = &settings.worker;
    let schedule = settings.poll.schedule.clone();

    let queue_options = QueueOptions {
        batch_size: 1,
        poll_interval: w.poll_interval,
        heartbeat_interval: w.heartbeat_interval,
        missed_heartbeats: w.missed_heartbeats,
    };
    let job_timeout = w.job_timeout;

    let monitor = Monitor::new()
        // A database blip must not leave the daemon running without a worker.
        .should_restart({
            let backoff = RestartBackoff::default();
            move |ctx, err| {
                let wait = backoff.next(std::time::Instant::now());
                error!(worker = ctx.name(), error = %err, retry_in = ?wait, "worker stopped; restarting");
                pause(wait);
                true
            }
        })
        .shutdown_timeout(w.shutdown_grace);
    let monitor = {
        let deliverer = deliverer.clone();
        let base_name = deliverer.worker_name.clone();
        monitor.register(move |n| {
            WorkerBuilder::new(format!(
                "{base_name}-cron{}",
                if n == 0 {
                    String::new()
                } else {
                    format!("-{n}")
                }
            ))
            .backend(CronScheduler::new(schedule.clone()))
            .data(deliverer.clone())
            .catch_panic()
            .build(handle_tick)
        })
    };
    let monitor = {
        let deliverer = deliverer.clone();
        let restarts = Arc::new(AtomicUsize::new(0));
        register_queue!(
            monitor,
            deliverer.store,
            PollNow,
            POLL_QUEUE,
            queue_options,
            |_n, queue| {
                let n = restarts.fetch_add(1, Ordering::SeqCst);
                WorkerBuilder::new(format!("{}-poll-r{n}", deliverer.worker_name))
                    .backend(queue)
                    .data(deliverer.clone())
                    .concurrency(1)
                    .timeout(job_timeout.max(std::time::Duration::from_secs(600)))
                    .catch_panic()
                    .build(handle_poll_now)
            }
        )
    };

    let monitor = {
        let deliverer = deliverer.clone();
        let restarts = Arc::new(AtomicUsize::new(0));
        register_queue!(
            monitor,
            deliverer.store,
            DisableRequest,
            DISABLE_QUEUE,
            queue_options,
            |_n, queue| {
                let n = restarts.fetch_add(1, Ordering::SeqCst);
                WorkerBuilder::new(format!("{}-disable-r{n}", deliverer.worker_name))
                    .backend(queue)
                    .data(deliverer.clone())
                    .concurrency(1)
                    .retry(RetryPolicy::retries(HANDLER_ATTEMPTS - 1))
                    .timeout(job_timeout)
                    .catch_panic()
                    .build(handle_disable)
            }
        )
    };

    monitor
        .run_with_signal(async move {
            shutdown.await;
            info!("shutting down: finishing the work in hand");
            Ok(())
        })
        .await
        .map_err(|e| WorkerError::Monitor(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::RestartBackoff;
    use std::time::{Duration, Instant};

    #[test]
    fn restart_pauses_double_up_to_five_seconds_and_start_over_after_a_calm_minute() {
        let b = RestartBackoff::default();
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..8)
            .map(|i| b.next(t0 + Duration::from_secs(i)))
            .collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(
            b.next(t0 + Duration::from_secs(7 + 61)),
            Duration::from_millis(100)
        );
    }
}
