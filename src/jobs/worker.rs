//! The daemon's worker: apalis on the SQLite queue, plus the periodic redrive that re-queues
//! owed mail after a crash. Shutdown: stop fetching, let jobs in flight finish within the grace
//! period, then return.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use apalis::prelude::*;
use tracing::{Instrument, error, info, warn};

use std::str::FromStr;

use apalis_cron::{CronScheduler, Tick};

use super::{
    DISABLE_QUEUE, DisableRequest, HANDLER_ATTEMPTS, POLL_QUEUE, PollNow, SEND_QUEUE, SendMail,
};
use crate::app::Deliverer;
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

/// Set once the daemon is stopping: a send job then finishes the batch in hand and takes no
/// further one.
#[derive(Default)]
struct Stopping(AtomicBool);

impl Stopping {
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

async fn handle_send(
    job: SendMail,
    deliverer: Data<Arc<Deliverer>>,
    stopping: Data<Arc<Stopping>>,
) -> Result<(), BoxDynError> {
    let batch = deliverer.settings.worker.send_batch;
    // A job that found a full batch due goes on to the next one itself: going back through
    // the queue (fetch, lock, ack) for every batch costs more than the batch's own claim.
    // Later batches start only in the first quarter of the job's time, since each may spend
    // half of it (its send deadline) and then record.
    let go_on_until = std::time::Instant::now() + deliverer.settings.worker.job_timeout / 4;
    let mut own = Some((job.outbox_id, job.attempts));
    let result = loop {
        // Each batch is a task of its own, so that it finishes even if the job is dropped
        // (the job timeout; a queue worker that stops on a database error drops the jobs it
        // runs): a mail handed to the server is then still recorded, not left to be sent
        // again when its claim's lease runs out. A dropped job starts no further batch.
        let delivery = {
            let deliverer = Arc::clone(&deliverer);
            tokio::spawn(
                async move {
                    match own {
                        Some((id, attempts)) => {
                            deliverer
                                .deliver_batch(id, attempts, batch.saturating_sub(1))
                                .await
                        }
                        None => deliverer.deliver_due(batch).await,
                    }
                }
                .in_current_span(),
            )
        };
        let taken = match delivery.await {
            Ok(Ok(taken)) => taken.len(),
            Ok(Err(e)) => break Err(e),
            // Never aborted: only a panic ends it early, and it is this job's panic.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        own = None;
        // `send_batch = 1` keeps one mail per job, as configured.
        let full = batch > 1 && taken >= usize::try_from(batch).unwrap_or(usize::MAX);
        if !full || stopping.is_set() || std::time::Instant::now() >= go_on_until {
            break Ok(());
        }
    };
    deliverer.metrics.job("send", result.is_ok());
    // Mail failures are recorded in the outbox; only store trouble fails the job, for apalis
    // to retry it (the claim guard keeps that single).
    result.map_err(|e| Box::new(e) as BoxDynError)
}

async fn handle_tick(_tick: Tick, deliverer: Data<Arc<Deliverer>>) -> Result<(), BoxDynError> {
    let result = deliverer.poll().await;
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
    let result = deliverer.poll().await;
    deliverer.metrics.job("poll", result.is_ok());
    let report = result?;
    info!(requested_by = %job.requested_by, ?report, "poll on request done");
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
    let outcome = match crate::app::request_disable(
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
    const FIRST: std::time::Duration = std::time::Duration::from_millis(100);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);
    const CALM: std::time::Duration = std::time::Duration::from_secs(60);

    fn next(&self, now: std::time::Instant) -> std::time::Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let streak = match *state {
            Some((last, streak)) if now.duration_since(last) < Self::CALM => streak + 1,
            _ => 0,
        };
        *state = Some((now, streak));
        Self::FIRST
            .saturating_mul(1u32 << streak.min(16))
            .min(Self::MAX)
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

/// Runs the worker until `shutdown` resolves.
pub async fn run_worker(
    deliverer: Arc<Deliverer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let settings = deliverer.settings.clone();
    let w = &settings.worker;

    // Owed mail whose job went missing (crash between steps, expired claim) is found here
    // before the first job is fetched, then again every redrive_interval.
    match deliverer.redrive().await {
        Ok(r) => info!(
            owed = r.jobs_pushed,
            expired_claims = r.leases_expired,
            "owed mail checked at start"
        ),
        Err(e) => warn!(error = %e, "owed-mail check at start failed; will retry"),
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let redrive = {
        let deliverer = deliverer.clone();
        let every = w.redrive_interval;
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = deliverer.redrive().await {
                            warn!(error = %e, "owed-mail check failed; will retry");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };

    let store = deliverer.store.clone();
    let base_name = deliverer.worker_name.clone();
    // Send jobs at once: enough to keep `concurrency` mails in flight, and with batches two
    // more: a job spends about half its time on the database (claiming a batch, recording
    // it), and the send slots stay busy only if others have rendered mail waiting meanwhile.
    // (One more measured 0.40-0.44 of the raw send rate at 4 and 16 at once; two, 0.43-0.49.)
    let send_batch = usize::try_from(w.send_batch).unwrap_or(1).max(1);
    let concurrency = w.concurrency.div_ceil(send_batch) + if send_batch > 1 { 2 } else { 0 };
    let queue_options = QueueOptions {
        // Fetch no more than can run at once, so a busy worker never sits on jobs that an idle
        // one could take.
        batch_size: concurrency,
        poll_interval: w.poll_interval,
        heartbeat_interval: w.heartbeat_interval,
        missed_heartbeats: w.missed_heartbeats,
    };
    let job_timeout = w.job_timeout;
    let restarts = Arc::new(AtomicUsize::new(0));
    let schedule = cron::Schedule::from_str(&settings.poll.schedule)
        .map_err(|e| WorkerError::Monitor(format!("poll.schedule: {e}")))?;
    let poll_options = QueueOptions {
        batch_size: 1,
        ..queue_options
    };

    let send_deliverer = deliverer.clone();
    let stopping = Arc::new(Stopping::default());
    let send_stopping = stopping.clone();
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
    let monitor = register_queue!(
        monitor,
        store,
        SendMail,
        SEND_QUEUE,
        queue_options,
        |_n, queue| {
            // apalis refuses a name seen alive within one heartbeat, so a restarted worker
            // takes a fresh one; the jobs of the old name are re-queued as orphans.
            let n = restarts.fetch_add(1, Ordering::SeqCst);
            let name = if n == 0 {
                base_name.clone()
            } else {
                format!("{base_name}-r{n}")
            };
            WorkerBuilder::new(name)
                .backend(queue)
                .data(send_deliverer.clone())
                .data(send_stopping.clone())
                .concurrency(concurrency)
                .retry(RetryPolicy::retries(HANDLER_ATTEMPTS - 1))
                .timeout(job_timeout)
                .catch_panic()
                .build(handle_send)
        }
    );

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
            poll_options,
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
            poll_options,
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

    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            stopping.set();
            info!("shutting down: finishing jobs in flight");
            Ok(())
        })
        .await;
    let _ = stop_tx.send(true);
    let _ = redrive.await;
    result.map_err(|e| WorkerError::Monitor(e.to_string()))
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
