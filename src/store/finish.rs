//! How a delivery attempt ended, recorded: the mail's row moved on (sent, retried later,
//! failed for good) and, for every end but a mail sent under a claim still held, a row in
//! `delivery_attempts`. The record of a batch of mails sent is one statement per backend.

use std::borrow::Borrow;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, SqlitePool};

use super::sql::{millis, numbered_placeholders, trusted};
use super::{Backend, Db, Store, StoreError, db};

/// How one delivery attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    Sent,
    /// Worth retrying; `retry` is when the next attempt is due, or `None` when attempts are
    /// spent.
    Transient {
        code: Option<u16>,
        detail: String,
        retry: Option<DateTime<Utc>>,
    },
    Permanent {
        code: Option<u16>,
        detail: String,
    },
}

#[derive(Debug, Clone)]
pub struct FinishedAttempt {
    pub outbox_id: i64,
    pub attempt: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
}

impl Store {
    /// Records how attempts ended and moves their mails on, in one transaction (one commit),
    /// as a job that sent many mails records them. One flag per attempt, in order: false when
    /// the claim had been lost meanwhile (lease expired and another worker took over), and
    /// then only the attempt itself is recorded.
    pub async fn finish_attempts(&self, fs: &[FinishedAttempt]) -> Result<Vec<bool>, StoreError> {
        self.finish_attempts_on(None, fs).await
    }

    /// As [`Store::finish_attempts`], the usual record (every mail sent) on PostgreSQL going
    /// through `line` when given: see [`RecordLine`].
    pub async fn finish_attempts_on(
        &self,
        line: Option<&mut RecordLine>,
        fs: &[FinishedAttempt],
    ) -> Result<Vec<bool>, StoreError> {
        const RECORD_HEAD: &str = "INSERT INTO delivery_attempts (outbox_id, attempt, worker,
               started_at, finished_at, outcome, smtp_code, detail) VALUES";
        const RECORD_TAIL: &str = "ON CONFLICT (outbox_id, attempt) DO NOTHING";
        const ONE_RECORD: &str = "(?, ?, ?, ?, ?, ?, ?, ?)";
        const GUARD: &str = "WHERE id = ? AND state = 'sending' AND attempts = ?";
        // The row's next state.
        fn update_of(f: &FinishedAttempt) -> String {
            match &f.outcome {
                AttemptOutcome::Sent => format!(
                    "UPDATE outbox SET state = 'sent', sent_at = ?, last_error = NULL {GUARD}"
                ),
                AttemptOutcome::Transient { retry: Some(_), .. } => format!(
                    "UPDATE outbox SET state = 'pending', next_attempt_at = ?,
                       claimed_by = NULL, last_error = ? {GUARD}"
                ),
                AttemptOutcome::Transient { retry: None, .. }
                | AttemptOutcome::Permanent { .. } => format!(
                    "UPDATE outbox SET state = 'failed', claimed_by = NULL, last_error = ?
                       {GUARD}"
                ),
            }
        }
        fn recorded(f: &FinishedAttempt) -> (&'static str, Option<u16>, Option<&str>) {
            match &f.outcome {
                AttemptOutcome::Sent => ("sent", None, None),
                AttemptOutcome::Transient { code, detail, .. } => {
                    ("transient", *code, Some(detail.as_str()))
                }
                AttemptOutcome::Permanent { code, detail } => {
                    ("permanent", *code, Some(detail.as_str()))
                }
            }
        }
        macro_rules! bind_record {
            ($q:expr, $f:expr) => {{
                let f = $f;
                let (outcome, code, detail) = recorded(f);
                $q.bind(f.outbox_id)
                    .bind(i64::from(f.attempt))
                    .bind(&f.worker)
                    .bind(millis(f.started_at))
                    .bind(millis(f.finished_at))
                    .bind(outcome)
                    .bind(code.map(i64::from))
                    .bind(detail)
            }};
        }
        macro_rules! bind_update {
            ($q:expr, $f:expr) => {{
                let f = $f;
                match &f.outcome {
                    AttemptOutcome::Sent => $q.bind(millis(f.finished_at)),
                    AttemptOutcome::Transient {
                        detail,
                        retry: Some(at),
                        ..
                    } => $q.bind(millis(*at)).bind(detail.clone()),
                    AttemptOutcome::Transient { detail, .. }
                    | AttemptOutcome::Permanent { detail, .. } => $q.bind(detail.clone()),
                }
                .bind(f.outbox_id)
                .bind(i64::from(f.attempt))
            }};
        }
        // The statement inserting the attempt rows of `$fs` (not empty), bound.
        macro_rules! records {
            ($stmt:ident, $fs:expr) => {{
                let fs = $fs;
                let mut q = sqlx::query($stmt(&format!(
                    "{RECORD_HEAD} {} {RECORD_TAIL}",
                    vec![ONE_RECORD; fs.len()].join(", ")
                )));
                for f in fs {
                    q = bind_record!(q, f);
                }
                q
            }};
        }
        if fs.is_empty() {
            return Ok(Vec::new());
        }
        let retried = |f: &FinishedAttempt| {
            matches!(f.outcome, AttemptOutcome::Transient { retry: Some(_), .. })
        };
        let is_sent = |f: &FinishedAttempt| matches!(f.outcome, AttemptOutcome::Sent);
        // The attempts that need a row: all but the mails sent under a claim still held.
        let unrecorded = |kept: &[bool]| -> Vec<&FinishedAttempt> {
            fs.iter()
                .zip(kept)
                .filter(|(f, kept)| !(is_sent(f) && **kept))
                .map(|(f, _)| f)
                .collect()
        };
        let one_record = format!("{RECORD_HEAD} {ONE_RECORD} {RECORD_TAIL}");
        // A mail sent (the usual end) is recorded on its row alone: its claimant and the
        // claim's instant stay as the attempt's worker and start, `sent_at` is its end (see
        // [`Store::attempts`]). Other ends, and a mail sent whose claim was lost meanwhile,
        // get a row of their own in `delivery_attempts`.
        if fs.iter().all(is_sent) {
            // All sent: one statement, its own transaction. The rare send whose claim was
            // lost gets its attempt row afterwards; that row only informs.
            let kept_ids: HashSet<i64> = match &self.db {
                Db::Sqlite(p) => p.mark_sent(fs).fetch_all(p).await?.into_iter().collect(),
                Db::Postgres(p) => match line {
                    Some(line) => line.mark_sent(p, fs).await?.into_iter().collect(),
                    None => p.mark_sent(fs).fetch_all(p).await?.into_iter().collect(),
                },
            };
            let kept: Vec<bool> = fs.iter().map(|f| kept_ids.contains(&f.outbox_id)).collect();
            let lost = unrecorded(&kept);
            if !lost.is_empty() {
                db!(self, |p, stmt| {
                    records!(stmt, lost).execute(p).await?;
                });
            }
            return Ok(kept);
        }
        if let ([f], Db::Postgres(p)) = (fs, &self.db)
            && !retried(f)
        {
            // On PostgreSQL a mail that failed for good is one statement: the attempt row
            // rides along in a data-modifying WITH, saving the round trips of a transaction.
            // SQLite has no such WITH; its round trips are cheap.
            let sql =
                numbered_placeholders(&format!("WITH recorded AS ({one_record}) {}", update_of(f)));
            let q = bind_record!(sqlx::query(trusted(sql)), f);
            return Ok(vec![
                bind_update!(q, f).execute(p).await?.rows_affected() == 1,
            ]);
        }
        // Mixed ends, in one transaction: the mails sent in one statement, then each other
        // end, then the attempt rows (of the other ends and of sends whose claim was lost) in
        // one more; each statement is a round trip (on SQLite a hop to its thread).
        let sent: Vec<&FinishedAttempt> = fs.iter().filter(|f| is_sent(f)).collect();
        let kept = db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            let mut sent_kept = HashSet::new();
            if !sent.is_empty() {
                sent_kept.extend(p.mark_sent(&sent).fetch_all(&mut *tx).await?);
            }
            let mut kept = Vec::with_capacity(fs.len());
            for f in fs {
                if is_sent(f) {
                    kept.push(sent_kept.contains(&f.outbox_id));
                    continue;
                }
                let updated = bind_update!(sqlx::query(stmt(&update_of(f))), f)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                kept.push(updated);
            }
            let unrecorded = unrecorded(&kept);
            if !unrecorded.is_empty() {
                records!(stmt, unrecorded).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(kept)
        })?;
        // A retry is owed later: a waiting send lane learns when.
        if fs.iter().zip(&kept).any(|(f, &k)| k && retried(f)) {
            self.owed_changed();
        }
        Ok(kept)
    }
}

/// The daemon's recorder's own connection to PostgreSQL, opened on first use and again after
/// an error. A send slot waits for its record's commit (the crash bound), so that commit's
/// latency is on every mail's path: on this connection it is one round trip, where the pool
/// adds a check of the connection on the way out and on the way back, and it does not wait
/// for the WAL flush, which costs several times a send to a nearby relay. Not waiting for the
/// disk loses nothing to a daemon crash; a database server crash may roll back the last
/// fraction of a second of these records, whose mails are then sent again (as SQLite's
/// synchronous=NORMAL does on power loss). Its one statement runs on a generic plan (see
/// [`RECORD_LINE_SETTINGS`]). On SQLite the pool serves.
#[derive(Debug, Default)]
pub struct RecordLine(Option<sqlx::PgConnection>);

/// The session settings of the recorder's connection ([`RecordLine`]). Left to choose,
/// PostgreSQL planned the record anew at every commit (a custom plan for each batch of ids
/// looked cheaper than the generic one), a large part of a commit that every mail waits for;
/// the generic plan probes the primary key for any batch (checked by the delivery tests).
pub const RECORD_LINE_SETTINGS: [(&str, &str); 2] = [
    ("synchronous_commit", "off"),
    ("plan_cache_mode", "force_generic_plan"),
];

impl RecordLine {
    /// Marks the mails `fs` sent, in a commit of their own; the ids marked.
    async fn mark_sent(
        &mut self,
        pool: &PgPool,
        fs: &[FinishedAttempt],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let conn = match &mut self.0 {
            Some(conn) => conn,
            None => {
                let options = (*pool.connect_options())
                    .clone()
                    .options(RECORD_LINE_SETTINGS);
                let timeout = pool.options().get_acquire_timeout();
                let conn = tokio::time::timeout(timeout, sqlx::ConnectOptions::connect(&options))
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??;
                self.0.insert(conn)
            }
        };
        let marked = pool.mark_sent(fs).fetch_all(&mut *conn).await;
        if marked.is_err() {
            // Broken or not, a fresh connection for the next try.
            self.0 = None;
        }
        marked
    }
}

/// The record of a batch of mail sent, on PostgreSQL (see `mark_sent_sql`); binds: the ids,
/// the attempts and the instants sent (ms), one array each, in step. `outbox.id = ANY($1)`
/// gives the planner the primary key to probe: joined by id alone, a table of up to tens of
/// thousands of rows looked cheaper to read whole and hash, until a generic plan took over.
const MARK_SENT_POSTGRES: &str = "UPDATE outbox SET state = 'sent', last_error = NULL,
       sent_at = u.sent_at
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u (id, attempts, sent_at)
     WHERE outbox.id = ANY($1) AND outbox.id = u.id AND outbox.attempts = u.attempts
       AND (outbox.state = 'sending') IS TRUE
     RETURNING outbox.id";

/// Marks `n` mails sent, each only if still claimed by the same attempt; binds: (id, sent_at)
/// for each, then (id, attempt) for each. Returns the ids marked.
///
/// The rows are found by their ids: the state test is written so that no index on the state
/// serves it, which leaves the planner no plan that reads every row of a state instead (as
/// PostgreSQL chooses for `state = 'pending'` while its statistics lag a burst of owed mail).
///
/// On PostgreSQL the batch comes as three arrays instead (`MARK_SENT_POSTGRES`): one
/// prepared statement for every size of batch. With four parameters per mail, as below,
/// PostgreSQL planned each size of batch anew until it settled on a generic plan, and bound
/// that plan slowly after; the arrays spare both.
fn mark_sent_sql(n: usize) -> String {
    format!(
        "UPDATE outbox SET state = 'sent', last_error = NULL,
           sent_at = CASE id {} END
         WHERE (state = 'sending') IS TRUE AND (id, attempts) IN (VALUES {})
         RETURNING id",
        "WHEN ? THEN ? ".repeat(n),
        vec!["(?, ?)"; n].join(", ")
    )
}

/// A mail to mark sent: its outbox id, its attempt and the instant it was sent (ms).
type SentMail = (i64, i64, i64);

fn sent_mails<F: Borrow<FinishedAttempt>>(sent: &[F]) -> Vec<SentMail> {
    sent.iter()
        .map(Borrow::borrow)
        .map(|f| (f.outbox_id, i64::from(f.attempt), millis(f.finished_at)))
        .collect()
}

/// `mark_sent_sql`'s binds, in its order: each mail's id and instant, then each one's id and
/// attempt.
fn mark_sent_binds_sqlite(sent: &[SentMail]) -> Vec<i64> {
    let mut binds = Vec::with_capacity(sent.len() * 4);
    binds.extend(sent.iter().flat_map(|&(id, _, at)| [id, at]));
    binds.extend(sent.iter().flat_map(|&(id, attempt, _)| [id, attempt]));
    binds
}

/// `MARK_SENT_POSTGRES`'s binds: the ids, the attempts and the instants, one array each.
fn mark_sent_arrays(sent: &[SentMail]) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let mut arrays = (
        Vec::with_capacity(sent.len()),
        Vec::with_capacity(sent.len()),
        Vec::with_capacity(sent.len()),
    );
    for &(id, attempt, at) in sent {
        arrays.0.push(id);
        arrays.1.push(attempt);
        arrays.2.push(at);
    }
    arrays
}

/// The record of a batch of mails sent as one backend runs it, for checking its plan.
pub enum MarkSentStatement {
    /// The statement and its binds, in order.
    Sqlite(String, Vec<i64>),
    /// The statement and its binds: the ids, the attempts and the instants, an array each.
    Postgres(&'static str, (Vec<i64>, Vec<i64>, Vec<i64>)),
}

/// The record of the mails `sent` (each: outbox id, attempt, instant sent in ms) on `backend`.
pub fn mark_sent_statement(backend: Backend, sent: &[(i64, i64, i64)]) -> MarkSentStatement {
    match backend {
        Backend::Sqlite => {
            MarkSentStatement::Sqlite(mark_sent_sql(sent.len()), mark_sent_binds_sqlite(sent))
        }
        Backend::Postgres => {
            MarkSentStatement::Postgres(MARK_SENT_POSTGRES, mark_sent_arrays(sent))
        }
    }
}

/// The bound statement marking a batch of mails sent, for each backend (the pool only names
/// it: the statement runs wherever the caller runs it, a transaction's connection included);
/// its rows are the ids marked.
trait MarkSent {
    type Db: sqlx::Database;
    fn mark_sent<F: Borrow<FinishedAttempt>>(
        &self,
        sent: &[F],
    ) -> sqlx::query::QueryScalar<'static, Self::Db, i64, <Self::Db as sqlx::Database>::Arguments>;
}

impl MarkSent for SqlitePool {
    type Db = sqlx::Sqlite;
    fn mark_sent<F: Borrow<FinishedAttempt>>(
        &self,
        sent: &[F],
    ) -> sqlx::query::QueryScalar<'static, sqlx::Sqlite, i64, sqlx::sqlite::SqliteArguments> {
        let mut q = sqlx::query_scalar(trusted(mark_sent_sql(sent.len())));
        for b in mark_sent_binds_sqlite(&sent_mails(sent)) {
            q = q.bind(b);
        }
        q
    }
}

impl MarkSent for PgPool {
    type Db = sqlx::Postgres;
    fn mark_sent<F: Borrow<FinishedAttempt>>(
        &self,
        sent: &[F],
    ) -> sqlx::query::QueryScalar<'static, sqlx::Postgres, i64, sqlx::postgres::PgArguments> {
        let (ids, attempts, at) = mark_sent_arrays(&sent_mails(sent));
        sqlx::query_scalar(sqlx::AssertSqlSafe(MARK_SENT_POSTGRES))
            .bind(ids)
            .bind(attempts)
            .bind(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The record of mail sent runs once per batch; reading a whole table there costs time in
    // proportion to every mail ever owed. It finds the primary key through its row-value IN
    // on the SQLite we build with (older ones scan), and must go on doing so.
    #[tokio::test]
    async fn the_record_of_a_batch_sent_probes_the_primary_key() {
        let sent = super::super::sqlite_plan(&mark_sent_sql(3)).await;
        assert!(
            sent.iter()
                .any(|d| d.starts_with("SEARCH outbox USING INTEGER PRIMARY KEY")),
            "{sent:?}"
        );
        assert!(
            !sent.iter().any(|d| d.starts_with("SCAN outbox")),
            "{sent:?}"
        );
    }
}
