//! The job queue as operators see it: apalis's `Jobs` table, with send jobs judged by the mail
//! they carry (a job whose mail failed for good is "dead", and retrying it retries the mail).

use chrono::{DateTime, Utc};

use super::{Db, DbRow, QueuedJob, Store, StoreError, db, millis, push_job};

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

/// The operator's status, from the queue's status and (for send jobs of the last attempt)
/// the mail's.
const STATUS: &str = "CASE
    WHEN j.status = 'Killed' OR (j.status = 'Failed' AND j.attempts >= j.max_attempts) THEN 'dead'
    WHEN j.status = 'Done' AND o.state = 'failed' THEN 'dead'
    WHEN j.status = 'Done' THEN 'done'
    WHEN j.status = 'Failed' THEN 'failed'
    WHEN j.status IN ('Queued', 'Running') THEN 'running'
    ELSE 'pending' END";

/// The queue's jobs with the operator's status, on SQLite (`Jobs`: JSON args as a blob,
/// instants in seconds).
fn select_sqlite() -> String {
    format!(
        "SELECT j.id, j.idempotency_key, j.job_type, {STATUS} AS op_status, j.attempts,
           j.max_attempts, j.run_at, j.done_at, j.lock_by, j.last_result,
           CAST(j.job AS TEXT) AS args
         FROM Jobs j
         LEFT JOIN outbox o ON j.job_type = '{SEND_QUEUE}'
           AND o.id = json_extract(CAST(j.job AS TEXT), '$.outbox_id')
           AND o.attempts = json_extract(CAST(j.job AS TEXT), '$.attempts') + 1"
    )
}

/// The same on PostgreSQL (`apalis.jobs`: args as bytea, instants as timestamptz, the last
/// result as jsonb), in the same column types as on SQLite.
fn select_postgres() -> String {
    format!(
        "SELECT j.id, j.idempotency_key, j.job_type, {STATUS} AS op_status,
           j.attempts::BIGINT AS attempts, j.max_attempts::BIGINT AS max_attempts,
           EXTRACT(EPOCH FROM j.run_at)::BIGINT AS run_at,
           EXTRACT(EPOCH FROM j.done_at)::BIGINT AS done_at, j.lock_by,
           j.last_result::TEXT AS last_result, convert_from(j.job, 'UTF8') AS args
         FROM apalis.jobs j
         LEFT JOIN outbox o ON j.job_type = '{SEND_QUEUE}'
           AND o.id = (convert_from(j.job, 'UTF8')::jsonb ->> 'outbox_id')::BIGINT
           AND o.attempts = (convert_from(j.job, 'UTF8')::jsonb ->> 'attempts')::BIGINT + 1"
    )
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

impl Store {
    /// Jobs, newest first, optionally of one operator status.
    pub async fn jobs(&self, status: Option<&str>, limit: u32) -> Result<Vec<JobRow>, StoreError> {
        db!(self, |p, stmt| {
            let select = match self.db {
                Db::Sqlite(_) => select_sqlite(),
                Db::Postgres(_) => select_postgres(),
            };
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

    /// One job by its id or its key.
    pub async fn job(&self, id_or_key: &str) -> Result<Option<JobRow>, StoreError> {
        db!(self, |p, stmt| {
            let select = match self.db {
                Db::Sqlite(_) => select_sqlite(),
                Db::Postgres(_) => select_postgres(),
            };
            let sql = format!("{select} WHERE j.id = ? OR j.idempotency_key = ?");
            let row = sqlx::query(stmt(&sql))
                .bind(id_or_key)
                .bind(id_or_key)
                .fetch_optional(p)
                .await?;
            row.map(|r| job_from_row(&r)).transpose()
        })
    }

    /// Puts a dead job back to pending. For a send job whose mail failed for good, the mail
    /// is owed again and a fresh job is queued for it (the next attempt number). Returns the
    /// key of the job that will run, or `None` if the job is not dead.
    pub async fn retry_job(
        &self,
        id_or_key: &str,
        now: DateTime<Utc>,
        send_job: impl Fn(i64, u32) -> QueuedJob,
    ) -> Result<Option<String>, StoreError> {
        db!(self, |p, stmt| {
            let Some(job) = self.job(id_or_key).await? else {
                return Ok(None);
            };
            if job.status != "dead" {
                return Ok(None);
            }
            let mut tx = p.begin().await?;
            if job.queue == SEND_QUEUE
                && let Some(outbox_id) = job.args["outbox_id"].as_i64()
            {
                let attempts: Option<i64> = sqlx::query_scalar(stmt(
                    "UPDATE outbox SET state = 'pending', next_attempt_at = ?, last_error = NULL
                 WHERE id = ? AND state = 'failed' RETURNING attempts",
                ))
                .bind(millis(now))
                .bind(outbox_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(attempts) = attempts {
                    let next = send_job(outbox_id, u32::try_from(attempts).unwrap_or(0));
                    push_job(&mut tx, &next).await?;
                    tx.commit().await?;
                    return Ok(Some(next.idempotency_key));
                }
            }
            let requeue = match self.db {
                Db::Sqlite(_) => {
                    "UPDATE Jobs SET status = 'Pending', attempts = 0, run_at = ?, lock_by = NULL,
                   lock_at = NULL, done_at = NULL
                 WHERE id = ?"
                }
                Db::Postgres(_) => {
                    "UPDATE apalis.jobs SET status = 'Pending', attempts = 0,
                   run_at = to_timestamp(?), lock_by = NULL, lock_at = NULL, done_at = NULL
                 WHERE id = ?"
                }
            };
            sqlx::query(stmt(requeue))
                .bind(now.timestamp())
                .bind(&job.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(job.key.unwrap_or(job.id)))
        })
    }

    /// Deletes finished jobs done before `before` (the queue slows down as they pile up).
    /// Only jobs that are done: pending, failed and dead ones stay for operators to see.
    pub async fn purge_done_jobs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        db!(self, |p, stmt| {
            Ok(sqlx::query(stmt(match self.db {
                Db::Sqlite(_) => "DELETE FROM Jobs WHERE status = 'Done' AND done_at < ?",
                Db::Postgres(_) => {
                    "DELETE FROM apalis.jobs WHERE status = 'Done' AND done_at < to_timestamp(?)"
                }
            }))
            .bind(before.timestamp())
            .execute(p)
            .await?
            .rows_affected())
        })
    }
}
