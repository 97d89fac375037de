//! The job queue: apalis's queues (polls, disable requests) on the store's database, ready
//! for a worker, and putting a job on one; and the queue as operators see it, where the mail
//! owed is a queue too, the outbox: each mail is a send job `send:<outbox id>` (pending,
//! running while claimed, failed while a retry waits, done once sent or skipped, dead once it
//! failed for good; retrying a dead one owes the mail again).
//!
//! apalis keeps its jobs in a table of each backend's own shape: SQLite's `Jobs` holds
//! instants in seconds and the args as a blob, PostgreSQL's `apalis.jobs` holds timestamptz,
//! bytea and jsonb. The statements on it are written per backend ([`JobTable`]).

use std::time::Duration;

use apalis::prelude::{BackendExt, TaskBuilder};
use chrono::{DateTime, Utc};

use super::sql::{DbRow, millis};
use super::ticker::Ticker;
use super::{Db, OutboxRow, OutboxState, Store, StoreError, db, rows};

/// A job to put on the queue (a poll, a disable request). Mail needs none: the outbox is its
/// queue.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub queue: &'static str,
    pub args: serde_json::Value,
    /// Pushing a second job with the same key is a no-op.
    pub idempotency_key: String,
    pub run_after: Duration,
    pub max_attempts: usize,
}

/// How a worker uses the job queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Jobs fetched at once; keep it at most the worker's concurrency.
    pub batch_size: usize,
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: usize,
}

/// The job queue of a SQLite store, ready for an apalis worker.
pub type SqliteQueue<T> = apalis::prelude::PollWith<apalis_sqlite::SqliteStorage<T>, Ticker>;
/// The job queue of a PostgreSQL store, ready for an apalis worker.
pub type PostgresQueue<T> = apalis::prelude::PollWith<apalis_postgres::PostgresStorage<T>, Ticker>;

/// A job queue on whichever backend the store uses.
pub enum JobQueue<T> {
    Sqlite(SqliteQueue<T>),
    Postgres(PostgresQueue<T>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub pending_jobs: i64,
    pub oldest_pending_seconds: i64,
    pub owed_mails: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobRow {
    pub id: String,
    pub key: Option<String>,
    pub queue: String,
    /// pending | running | done | failed (will retry) | dead (gave up)
    pub status: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub last_result: Option<String>,
    pub args: serde_json::Value,
}

const SEND_QUEUE: &str = "renewal-worker.send";

/// The operator's status of a queue job.
const STATUS: &str = "CASE
    WHEN j.status = 'Killed' OR (j.status = 'Failed' AND j.attempts >= j.max_attempts) THEN 'dead'
    WHEN j.status = 'Done' THEN 'done'
    WHEN j.status = 'Failed' THEN 'failed'
    WHEN j.status IN ('Queued', 'Running') THEN 'running'
    ELSE 'pending' END";

/// apalis's job table on one backend: the statements on it that differ by backend, each
/// with the same binds and result columns on both.
struct JobTable {
    /// The queue's jobs with the operator's status, in the same column types on both (args
    /// as JSON text, instants in seconds). Mail is not among them (see [`mail_job`]).
    select: fn() -> String,
    /// How many jobs are pending and due at an instant (s), and the soonest's instant (s).
    due: &'static str,
    /// A job put back to pending, to run at an instant (s); binds: the instant, the job's id.
    requeue: &'static str,
    /// Deletes the jobs done before an instant (s).
    purge: &'static str,
}

const SQLITE_JOBS: JobTable = JobTable {
    select: || {
        format!(
            "SELECT j.id, j.idempotency_key, j.job_type, {STATUS} AS op_status, j.attempts,
               j.max_attempts, j.run_at, j.done_at, j.lock_by, j.last_result,
               CAST(j.job AS TEXT) AS args
             FROM Jobs j WHERE j.job_type <> '{SEND_QUEUE}'"
        )
    },
    due: "SELECT COUNT(*), MIN(run_at) FROM Jobs WHERE status = 'Pending' AND run_at <= ?",
    requeue: "UPDATE Jobs SET status = 'Pending', attempts = 0, run_at = ?, lock_by = NULL,
         lock_at = NULL, done_at = NULL
       WHERE id = ?",
    purge: "DELETE FROM Jobs WHERE status = 'Done' AND done_at < ?",
};

const POSTGRES_JOBS: JobTable = JobTable {
    select: || {
        format!(
            "SELECT j.id, j.idempotency_key, j.job_type, {STATUS} AS op_status,
               j.attempts::BIGINT AS attempts, j.max_attempts::BIGINT AS max_attempts,
               EXTRACT(EPOCH FROM j.run_at)::BIGINT AS run_at,
               EXTRACT(EPOCH FROM j.done_at)::BIGINT AS done_at, j.lock_by,
               j.last_result::TEXT AS last_result, convert_from(j.job, 'UTF8') AS args
             FROM apalis.jobs j WHERE j.job_type <> '{SEND_QUEUE}'"
        )
    },
    due: "SELECT COUNT(*), MIN(EXTRACT(EPOCH FROM run_at))::BIGINT FROM apalis.jobs
       WHERE status = 'Pending' AND run_at <= to_timestamp(?)",
    requeue: "UPDATE apalis.jobs SET status = 'Pending', attempts = 0,
         run_at = to_timestamp(?), lock_by = NULL, lock_at = NULL, done_at = NULL
       WHERE id = ?",
    purge: "DELETE FROM apalis.jobs WHERE status = 'Done' AND done_at < to_timestamp(?)",
};

/// The outbox rows of mail jobs in an operator status (`None`: any), as SQL over `outbox`.
fn mail_status_filter(status: Option<&str>) -> &'static str {
    match status {
        None => "TRUE",
        Some("pending") => "state = 'pending' AND attempts = 0",
        Some("failed") => "state = 'pending' AND attempts > 0",
        Some("running") => "state = 'sending'",
        Some("done") => "state IN ('sent', 'skipped')",
        Some("dead") => "state = 'failed'",
        Some(_) => "FALSE",
    }
}

/// The id of the send job of outbox row `id`.
fn mail_job_id(id: i64) -> String {
    format!("send:{id}")
}

/// An owed or sent mail as a send job; `max_attempts` is `mail.retry.max_attempts`.
fn mail_job(o: OutboxRow, max_attempts: u32) -> JobRow {
    let status = match o.state {
        OutboxState::Failed => "dead",
        OutboxState::Sent | OutboxState::Skipped => "done",
        OutboxState::Sending => "running",
        OutboxState::Pending if o.attempts > 0 => "failed",
        OutboxState::Pending => "pending",
    };
    JobRow {
        id: mail_job_id(o.id),
        key: Some(o.key),
        queue: SEND_QUEUE.to_owned(),
        status: status.to_owned(),
        attempts: o.attempts,
        max_attempts,
        run_at: Some(o.next_attempt_at),
        done_at: o.sent_at,
        worker: o.claimed_by,
        last_result: o.last_error,
        args: serde_json::json!({
            "outbox_id": o.id,
            "kind": o.kind,
            "subscription": o.subscription_id,
        }),
    }
}

fn seconds(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(|s| DateTime::from_timestamp(s, 0))
}

fn job_from_row(r: &impl DbRow) -> Result<JobRow, StoreError> {
    let args: String = r.col("args")?;
    Ok(JobRow {
        id: r.col("id")?,
        key: r.col("idempotency_key")?,
        queue: r.col("job_type")?,
        status: r.col("op_status")?,
        attempts: u32::try_from(r.col::<i64>("attempts")?).unwrap_or(0),
        max_attempts: u32::try_from(r.col::<i64>("max_attempts")?).unwrap_or(0),
        run_at: seconds(r.col("run_at")?),
        done_at: seconds(r.col("done_at")?),
        worker: r.col("lock_by")?,
        last_result: r.col("last_result")?,
        args: serde_json::from_str(&args).unwrap_or(serde_json::Value::String(args)),
    })
}

/// When a job may run, in whole seconds since the epoch: the queue schedules in seconds and
/// would round down, so round up, so a job never runs before its delay is over (a retry never
/// comes before its backoff).
fn run_at_seconds(run_after: Duration) -> u64 {
    let due = std::time::SystemTime::now() + run_after;
    due.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .unwrap_or(0)
}

impl Store {
    /// apalis's job table on this store's backend.
    fn job_table(&self) -> &'static JobTable {
        match self.db {
            Db::Sqlite(_) => &SQLITE_JOBS,
            Db::Postgres(_) => &POSTGRES_JOBS,
        }
    }

    /// The job queue `queue` on this store's database, polled every `poll_interval` (neither
    /// SQLite's update hooks nor PostgreSQL's notifications see every job that becomes due:
    /// jobs pushed by another process, jobs scheduled for later).
    pub fn job_queue<T>(&self, queue: &str, options: QueueOptions) -> JobQueue<T> {
        match &self.db {
            Db::Sqlite(p) => {
                let config = apalis_sqlite::Config::default()
                    .queue(queue)
                    .batch_size(options.batch_size.max(1))
                    .heartbeat_interval(options.heartbeat_interval)
                    .missed_heartbeats(options.missed_heartbeats);
                JobQueue::Sqlite(
                    apalis_sqlite::SqliteStorage::new(p)
                        .with_config(config)
                        .poll_with_strategy(Ticker::new(options.poll_interval)),
                )
            }
            Db::Postgres(p) => {
                let config = apalis_postgres::Config::default()
                    .queue(queue)
                    .batch_size(options.batch_size.max(1))
                    .heartbeat_interval(options.heartbeat_interval)
                    .missed_heartbeats(options.missed_heartbeats);
                JobQueue::Postgres(
                    apalis_postgres::PostgresStorage::new(p)
                        .with_config(config)
                        .poll_with_strategy(Ticker::new(options.poll_interval)),
                )
            }
        }
    }

    /// Puts a job on the queue; returns its idempotency key. Pushing a job whose key is taken
    /// is a no-op on every backend.
    pub async fn enqueue_job(&self, job: &QueuedJob) -> Result<String, StoreError> {
        let args = serde_json::to_vec(&job.args).map_err(|e| StoreError::Queue(e.to_string()))?;
        let run_at = run_at_seconds(job.run_after);
        match &self.db {
            Db::Sqlite(p) => {
                let task = TaskBuilder::new(args)
                    .idempotency_key(&job.idempotency_key)
                    .max_attempts(job.max_attempts)
                    .run_at_timestamp(run_at)
                    .build();
                let mut conn = p.acquire().await?;
                apalis_sqlite::queries::push_tasks(&mut *conn, job.queue, &[task])
                    .await
                    .map_err(|e| StoreError::Queue(e.to_string()))?;
            }
            Db::Postgres(p) => {
                // apalis's own push fails on a taken idempotency key; this is the same row,
                // with the key conflict a no-op as on SQLite.
                sqlx::query(
                    "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts,
                       run_at, priority, metadata, idempotency_key)
                     VALUES (apalis.generate_ulid(), $1, $2, 'Pending', 0, $3, to_timestamp($4),
                       0, ''::hstore, $5)
                     ON CONFLICT (job_type, idempotency_key) DO NOTHING",
                )
                .bind(job.queue)
                .bind(args)
                .bind(i32::try_from(job.max_attempts).unwrap_or(i32::MAX))
                .bind(i64::try_from(run_at).unwrap_or(i64::MAX))
                .bind(&job.idempotency_key)
                .execute(p)
                .await?;
            }
        }
        Ok(job.idempotency_key.clone())
    }

    /// Queue gauges: jobs waiting (the queue's, and mail due, the outbox being the queue of
    /// mail), how long the oldest has waited, mail owed (due or not).
    pub async fn queue_stats(&self, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        let table = self.job_table();
        db!(self, |p, stmt| {
            let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(stmt(table.due))
                .bind(now.timestamp())
                .fetch_one(p)
                .await?;
            let (due, oldest_due): (i64, Option<i64>) = sqlx::query_as(stmt(
                "SELECT COUNT(*), MIN(next_attempt_at) FROM outbox
                 WHERE state = 'pending' AND state IN ('pending', 'sending')
                   AND next_attempt_at <= ?",
            ))
            .bind(millis(now))
            .fetch_one(p)
            .await?;
            let owed: i64 = sqlx::query_scalar(stmt(
                "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')",
            ))
            .fetch_one(p)
            .await?;
            let oldest = [oldest, oldest_due.map(|ms| ms.div_euclid(1000))]
                .into_iter()
                .flatten()
                .min();
            Ok(QueueStats {
                pending_jobs: pending + due,
                oldest_pending_seconds: oldest.map(|t| (now.timestamp() - t).max(0)).unwrap_or(0),
                owed_mails: owed,
            })
        })
    }

    /// Jobs, newest first (by when they run or ran), optionally of one operator status: the
    /// queue's and the mail's. `mail_attempts` is `mail.retry.max_attempts`.
    pub async fn jobs(
        &self,
        status: Option<&str>,
        limit: u32,
        mail_attempts: u32,
    ) -> Result<Vec<JobRow>, StoreError> {
        let mut all = self.queue_jobs(status, limit).await?;
        let mail = db!(self, |p, stmt| {
            let sql = format!(
                "SELECT {} FROM outbox WHERE {} ORDER BY next_attempt_at DESC, id DESC LIMIT ?",
                rows::OUTBOX_COLUMNS,
                mail_status_filter(status)
            );
            let rows = sqlx::query(stmt(&sql))
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(rows::outbox_from_row)
                .collect::<Result<Vec<_>, _>>()?
        });
        all.extend(mail.into_iter().map(|o| mail_job(o, mail_attempts)));
        all.sort_by(|a, b| b.run_at.cmp(&a.run_at).then_with(|| b.id.cmp(&a.id)));
        all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(all)
    }

    /// The queue's jobs alone (polls, disable requests; no mail), newest first (by when they
    /// run or ran), optionally of one operator status. Reads the job table only: the outbox,
    /// a table of a million mails, is left out (the console lists its mail apart).
    pub async fn queue_jobs(
        &self,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRow>, StoreError> {
        let select = (self.job_table().select)();
        db!(self, |p, stmt| {
            let sql = format!(
                "SELECT * FROM ({select}) js
             WHERE (? IS NULL OR op_status = ?) ORDER BY run_at DESC, id DESC LIMIT ?"
            );
            let rows = sqlx::query(stmt(&sql))
                .bind(status)
                .bind(status)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?;
            rows.iter().map(job_from_row).collect()
        })
    }

    /// One job by its id or its key: a queue job, or a mail's send job (`send:<outbox id>`,
    /// or the mail's outbox key).
    pub async fn job(
        &self,
        id_or_key: &str,
        mail_attempts: u32,
    ) -> Result<Option<JobRow>, StoreError> {
        if let Some(outbox_id) = id_or_key
            .strip_prefix("send:")
            .and_then(|n| n.parse::<i64>().ok())
        {
            let row = self.outbox_by_id(outbox_id).await?;
            return Ok(row.map(|o| mail_job(o, mail_attempts)));
        }
        let select = (self.job_table().select)();
        let queued = db!(self, |p, stmt| {
            let sql = format!("{select} AND (j.id = ? OR j.idempotency_key = ?)");
            let row = sqlx::query(stmt(&sql))
                .bind(id_or_key)
                .bind(id_or_key)
                .fetch_optional(p)
                .await?;
            row.map(|r| job_from_row(&r)).transpose()?
        });
        match queued {
            Some(job) => Ok(Some(job)),
            None => Ok(self
                .outbox_by_key(id_or_key)
                .await?
                .map(|o| mail_job(o, mail_attempts))),
        }
    }

    /// Puts a dead job back to pending. For a mail that failed for good, the mail is owed
    /// again, due now, for its next attempt. Returns the id of the job that will run, or
    /// `None` if the job is not dead.
    pub async fn retry_job(
        &self,
        id_or_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let Some(job) = self.job(id_or_key, 0).await? else {
            return Ok(None);
        };
        if job.status != "dead" {
            return Ok(None);
        }
        if job.queue == SEND_QUEUE {
            let Some(outbox_id) = job.args["outbox_id"].as_i64() else {
                return Ok(None);
            };
            let owed = db!(self, |p, stmt| {
                sqlx::query(stmt(
                    "UPDATE outbox SET state = 'pending', next_attempt_at = ?, last_error = NULL
                     WHERE id = ? AND state = 'failed'",
                ))
                .bind(millis(now))
                .bind(outbox_id)
                .execute(p)
                .await?
                .rows_affected()
                    == 1
            });
            if owed {
                self.owed_changed();
            }
            return Ok(owed.then_some(job.id));
        }
        let table = self.job_table();
        db!(self, |p, stmt| {
            sqlx::query(stmt(table.requeue))
                .bind(now.timestamp())
                .bind(&job.id)
                .execute(p)
                .await?;
            Ok(Some(job.key.unwrap_or(job.id)))
        })
    }

    /// Deletes finished jobs done before `before` (the queue slows down as they pile up).
    /// Only jobs that are done: pending, failed and dead ones stay for operators to see.
    pub async fn purge_done_jobs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let table = self.job_table();
        db!(self, |p, stmt| {
            Ok(sqlx::query(stmt(table.purge))
                .bind(before.timestamp())
                .execute(p)
                .await?
                .rows_affected())
        })
    }
}
