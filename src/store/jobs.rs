//! The job queue as operators see it: apalis's jobs (polls, disable requests), and the mail
//! owed, whose queue is the outbox: each mail is a send job `send:<outbox id>` (pending,
//! running while claimed, failed while a retry waits, done once sent or skipped, dead once it
//! failed for good; retrying a dead one owes the mail again).

use chrono::{DateTime, Utc};

use super::{Db, DbRow, OutboxRow, OutboxState, Store, StoreError, db, millis, rows};

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

/// The queue's jobs with the operator's status, on SQLite (`Jobs`: JSON args as a blob,
/// instants in seconds). Mail is not among them (see [`mail_job`]).
fn select_sqlite() -> String {
    format!(
        "SELECT j.id, j.idempotency_key, j.job_type, {STATUS} AS op_status, j.attempts,
           j.max_attempts, j.run_at, j.done_at, j.lock_by, j.last_result,
           CAST(j.job AS TEXT) AS args
         FROM Jobs j WHERE j.job_type <> '{SEND_QUEUE}'"
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
         FROM apalis.jobs j WHERE j.job_type <> '{SEND_QUEUE}'"
    )
}

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

impl Store {
    /// Jobs, newest first (by when they run or ran), optionally of one operator status: the
    /// queue's and the mail's. `mail_attempts` is `mail.retry.max_attempts`.
    pub async fn jobs(
        &self,
        status: Option<&str>,
        limit: u32,
        mail_attempts: u32,
    ) -> Result<Vec<JobRow>, StoreError> {
        let mut all = db!(self, |p, stmt| {
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
            rows.iter()
                .map(job_from_row)
                .collect::<Result<Vec<_>, _>>()?
        });
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
        let queued = db!(self, |p, stmt| {
            let select = match self.db {
                Db::Sqlite(_) => select_sqlite(),
                Db::Postgres(_) => select_postgres(),
            };
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
        db!(self, |p, stmt| {
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
                .execute(p)
                .await?;
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
