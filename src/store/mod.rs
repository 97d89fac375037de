//! Persistence. Every SQL statement of the project lives under this module, and so does every
//! difference between database backends; callers see plain Rust values.

mod jobs;
mod rows;
mod ticker;

use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use apalis::prelude::{BackendExt, TaskBuilder};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

use crate::domain::SubscriptionId;
use crate::model::{Customer, Reseller, Subscription, SubscriptionContext};
use ticker::Ticker;

pub use jobs::JobRow;
pub use rows::OutboxRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {url:?} is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("could not open the database at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("job queue error: {0}")]
    Queue(String),
    #[error("stored {table} row {id:?} is unreadable: {detail}")]
    Corrupt {
        table: &'static str,
        id: String,
        detail: String,
    },
}

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

/// What a caller wants recorded as owed.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub key: String,
    pub kind: String,
    pub subscription_id: String,
    pub recipients: Vec<String>,
    pub payload: serde_json::Value,
    pub message_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    Created {
        id: i64,
    },
    /// The key was already owed or delivered; nothing was written.
    AlreadyRecorded {
        id: i64,
        state: OutboxState,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    Pending,
    Sending,
    Sent,
    Failed,
    Skipped,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

impl FromStr for OutboxState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => Self::Pending,
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            "skipped" => Self::Skipped,
            other => return Err(format!("unknown outbox state {other:?}")),
        })
    }
}

/// A term-end change the poll makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermChange {
    None,
    /// The subscription renewed: its current term now ends on this date.
    Renew(chrono::NaiveDate),
    /// The subscription stopped at its term end.
    End,
}

/// Everything one poll decided for one subscription, applied in one transaction.
#[derive(Debug, Clone)]
pub struct RenewalUpdate {
    pub subscription_id: String,
    /// The term end the decisions were made for: if another poll moved it meanwhile, nothing
    /// is applied.
    pub expected_term_end: chrono::NaiveDate,
    /// Mails to owe (with a job), or, with a reason, to record as skipped.
    pub notifications: Vec<(NewNotification, Option<String>)>,
    pub change: TermChange,
    /// Reminders still pending in the outbox are skipped with this reason.
    pub cancel_pending_reminders: Option<String>,
    /// When the poll next has something to do for it; `None`: never (ended).
    pub next_due_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// False when another poll had moved the term meanwhile (nothing was written).
    pub applied: bool,
    pub queued: u32,
    pub skipped: u32,
    pub cancelled: u32,
}

/// A decided request to disable auto-renew, as it is to be recorded.
#[derive(Debug, Clone)]
pub struct DisableRecord {
    pub request_key: String,
    pub subscription_id: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub via: String,
    pub seen_assigned: u32,
    pub seen_term_end: chrono::NaiveDate,
    pub seen_auto_renew: bool,
    pub accepted: bool,
    pub reason: Option<String>,
    pub cutoff_at: Option<DateTime<Utc>>,
    pub effective_term_end: Option<chrono::NaiveDate>,
    pub renews_once_more: bool,
    /// Switch auto-renew off now, to stop at this term end: only while no license is assigned
    /// and nothing changed since the decision (checked in the same statement).
    pub switch_off: bool,
}

/// A recorded decision, as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DisableRow {
    pub id: i64,
    pub request_key: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
    pub via: String,
    pub seen_assigned: u32,
    pub seen_term_end: chrono::NaiveDate,
    pub decision: String,
    pub reason: Option<String>,
    pub cutoff_at: Option<DateTime<Utc>>,
    pub effective_term_end: Option<chrono::NaiveDate>,
    pub renews_once_more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisableRecorded {
    Recorded(DisableRow),
    /// The subscription changed between decision and commit (a license was assigned, another
    /// request won): nothing written; decide again.
    Conflict,
    /// This request key was decided before: its decision.
    Duplicate(DisableRow),
}

/// What a license-count update saw, for callers that must order it against other writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LicenseUpdate {
    pub previous: u32,
    pub auto_renew_was_on: bool,
}

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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: String,
    pub smtp_code: Option<u16>,
    pub detail: Option<String>,
}

// Queries for owed rows repeat the `outbox_owed` index's condition, `state IN ('pending',
// 'sending')`, beside their own `state = ...`: SQLite uses a partial index only when the query
// names its condition, and otherwise scans the whole outbox, sent mail included.

/// How a claim moves a row on: to sending, its attempt counted, its claimant noted; binds:
/// the worker, the claim's instant (ms).
const CLAIM_SET: &str = "UPDATE outbox SET state = 'sending', attempts = attempts + 1,
       claimed_by = ?, claimed_at = ?";
/// The ids of the owed mails due at an instant, soonest first; binds: the instant (ms), how
/// many. Read through `outbox_owed` in its order (its rows end in the id), stopping at the
/// limit.
const DUE_IDS: &str = "SELECT id FROM outbox
       WHERE state = 'pending' AND state IN ('pending', 'sending') AND next_attempt_at <= ?
       ORDER BY next_attempt_at, id LIMIT ?";
/// [`Store::claim_due`] on SQLite. The rows were read as pending in the same statement: the
/// state test only guards (`+` keeps it off the index choices, so the ids are probed).
static CLAIM_DUE_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{CLAIM_SET} WHERE id IN ({DUE_IDS}) AND +state = 'pending' RETURNING {}",
        rows::OUTBOX_COLUMNS
    )
});
/// The record of a batch of mail sent, on PostgreSQL (see `mark_sent_sql`); binds: the ids,
/// the attempts and the instants sent (ms), one array each, in step. `outbox.id = ANY($1)`
/// gives the planner the primary key to probe: joined by id alone, a table of up to tens of
/// thousands of rows looked cheaper to read whole and hash (10,000 rows read per batch,
/// 2.5-3.2 ms instead of 0.6-1.0 ms, until a generic plan took over).
const MARK_SENT_POSTGRES: &str = "UPDATE outbox SET state = 'sent', last_error = NULL,
       sent_at = u.sent_at
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u (id, attempts, sent_at)
     WHERE outbox.id = ANY($1) AND outbox.id = u.id AND outbox.attempts = u.attempts
       AND (outbox.state = 'sending') IS TRUE
     RETURNING outbox.id";
/// [`Store::claim_due`] on PostgreSQL: the claim and the subscriptions of the mails claimed,
/// in one statement. The due rows are locked as they are read, skipping rows other daemons
/// hold; the claim then probes their ids (`= ANY(ARRAY(...))` and `IS TRUE` keep the planner
/// from reading the owed index again to filter by id, which it does when its statistics
/// lag a burst of owed mail).
static CLAIM_DUE_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    numbered_placeholders(&format!(
        "WITH claimed AS (
           {CLAIM_SET}
           WHERE id = ANY(ARRAY({DUE_IDS} FOR UPDATE SKIP LOCKED))
             AND (state = 'pending') IS TRUE
           RETURNING {outbox})
         SELECT claimed.*, {context}
         FROM claimed
         LEFT JOIN subscriptions s ON s.id = claimed.subscription_id
         LEFT JOIN resellers r ON r.id = s.reseller_id
         LEFT JOIN customers c ON c.id = s.customer_id",
        outbox = rows::OUTBOX_COLUMNS,
        context = rows::CONTEXT_COLUMNS,
    ))
});

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportCounts {
    pub resellers: usize,
    pub customers: usize,
    pub subscriptions: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub pending_jobs: i64,
    pub oldest_pending_seconds: i64,
    pub owed_mails: i64,
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

/// Which database the store is on (chosen by the URL's scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::BadUrl {
                url: url.to_owned(),
                reason: "the scheme must be sqlite:// or postgres://".into(),
            })
        }
    }
}

#[derive(Clone, Debug)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the typed pool and `$stmt` turning SQL written with `?`
/// placeholders into the backend's form. The body is compiled once per backend, so one text
/// of each query serves both: the differences are confined to the few places that match on
/// the backend themselves.
macro_rules! db {
    ($self:expr, |$p:ident, $stmt:ident| $body:block) => {
        match &$self.db {
            Db::Sqlite($p) => {
                #[allow(unused_variables)]
                let $stmt = |sql: &str| $crate::store::trusted(sql.to_owned());
                $body
            }
            Db::Postgres($p) => {
                #[allow(unused_variables)]
                let $stmt =
                    |sql: &str| $crate::store::trusted($crate::store::numbered_placeholders(sql));
                $body
            }
        }
    };
}
pub(crate) use db;

/// A mail taken for sending, with what its message is made from.
#[derive(Debug)]
pub struct Claimed {
    pub row: OutboxRow,
    /// The subscription with its parties; `None` when it no longer exists.
    pub context: Result<Option<SubscriptionContext>, StoreError>,
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// Told whenever this process commits mail that is owed (new, retried, given back, or
    /// back from an expired claim): the daemon's send lanes wait on it when nothing is due.
    owed: std::sync::Arc<tokio::sync::Notify>,
}

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Store {
    fn on(db: Db) -> Self {
        Self {
            db,
            owed: std::sync::Arc::default(),
        }
    }

    /// Woken when this process commits mail owed now or later (see [`Store::next_owed_at`]).
    /// Mail that another process records is not seen here: look again now and then.
    pub fn owed_signal(&self) -> &tokio::sync::Notify {
        &self.owed
    }

    fn owed_changed(&self) {
        self.owed.notify_waiters();
    }

    /// Opens the database named by `url` (`sqlite://FILE`, created if needed, or
    /// `postgres://...`) and brings its schema up to date: ours and the job queue's. When the
    /// database is not reachable, keeps trying for `connect_timeout` before giving up.
    pub async fn open(
        url: &str,
        max_connections: u32,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let store = Self::connect(url, max_connections, busy_timeout).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens without touching the schema.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        match Backend::of_url(url)? {
            Backend::Sqlite => Self::open_sqlite(url, max_connections, busy_timeout).await,
            Backend::Postgres => Self::open_postgres(url, max_connections, busy_timeout).await,
        }
    }

    async fn open_postgres(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        // Lazy: a database that is down at start (or drops later) is retried on every use
        // instead of failing the start; the daemon keeps going and resumes when it is back.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout.max(Duration::from_secs(1)))
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Ok(Self::on(Db::Postgres(pool)))
    }

    async fn open_sqlite(
        url: &str,
        max_connections: u32,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let filename = options.get_filename().to_owned();
        if let Some(dir) = filename.parent()
            && !dir.as_os_str().is_empty()
            && filename != Path::new(":memory:")
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::BadUrl {
                url: url.to_owned(),
                reason: format!("cannot create folder {}: {e}", dir.display()),
            })?;
        }
        // apalis's own setup would set synchronous=OFF, which can lose owed mail on power
        // loss; we open the file ourselves with WAL + NORMAL and run its migrations directly.
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(Self::on(Db::Sqlite(pool)))
    }

    /// Applies our migrations and the job queue's, each with its own ledger so the two sets
    /// never see each other as "missing" migrations. Mail was once queued as a job per mail;
    /// the outbox is its queue now, and jobs of that kind left from then are removed (none
    /// would ever run).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(p) => {
                sqlx::migrate!("./migrations/sqlite").run(p).await?;
                let mut queue = apalis_sqlite::SqliteStorage::migrations();
                queue.dangerous_set_table_name("_apalis_migrations");
                queue.run(p).await?;
                sqlx::query("DELETE FROM Jobs WHERE job_type = 'renewal-worker.send'")
                    .execute(p)
                    .await?;
            }
            Db::Postgres(p) => {
                // Several daemons may start at once: migrations take a database lock, so one
                // applies them and the others find them applied.
                sqlx::migrate!("./migrations/postgres").run(p).await?;
                let mut queue = apalis_postgres::PostgresStorage::<()>::migrations();
                queue.dangerous_set_table_name("_apalis_migrations");
                queue.run(p).await?;
                sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'renewal-worker.send'")
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
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

    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }

    // ---------------------------------------------------------------- marketplace records

    /// Writes every record in one transaction: all of them or none.
    pub async fn upsert_records(
        &self,
        resellers: &[Reseller],
        customers: &[Customer],
        subscriptions: &[Subscription],
        now: DateTime<Utc>,
        mut progress: impl FnMut(usize),
    ) -> Result<ImportCounts, StoreError> {
        db!(self, |p, stmt| {
            let now = millis(now);
            let mut tx = p.begin().await?;
            for r in resellers {
                sqlx::query(stmt(
                    "INSERT INTO resellers (id, name, email, csn, timezone, calendar, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
                   csn = excluded.csn, timezone = excluded.timezone,
                   calendar = excluded.calendar, updated_at = excluded.updated_at",
                ))
                .bind(r.id.as_str())
                .bind(&r.name)
                .bind(r.email.as_str())
                .bind(r.csn.as_ref().map(|c| c.as_str()))
                .bind(r.timezone.as_str())
                .bind(r.calendar.as_deref())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                // A new time zone or calendar moves every date of its subscriptions.
                sqlx::query(stmt(
                    "UPDATE subscriptions SET next_due_at = 0 WHERE reseller_id = ?",
                ))
                .bind(r.id.as_str())
                .execute(&mut *tx)
                .await?;
                progress(1);
            }
            for c in customers {
                sqlx::query(stmt(
                    "INSERT INTO customers (id, reseller_id, name, email, updated_at)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET reseller_id = excluded.reseller_id,
                   name = excluded.name, email = excluded.email, updated_at = excluded.updated_at",
                ))
                .bind(c.id.as_str())
                .bind(c.reseller_id.as_str())
                .bind(&c.name)
                .bind(c.email.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                progress(1);
            }
            for s in subscriptions {
                sqlx::query(
                stmt("INSERT INTO subscriptions (id, reseller_id, customer_id, product_id, plan, billing,
                   seats, assigned_licenses, term_start, term_end, auto_renew, notify_email,
                   updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET reseller_id = excluded.reseller_id,
                   customer_id = excluded.customer_id, product_id = excluded.product_id,
                   plan = excluded.plan, billing = excluded.billing, seats = excluded.seats,
                   assigned_licenses = excluded.assigned_licenses,
                   term_start = excluded.term_start, term_end = excluded.term_end,
                   auto_renew = excluded.auto_renew, notify_email = excluded.notify_email,
                   updated_at = excluded.updated_at, next_due_at = 0"),
            )
            .bind(s.id.as_str())
            .bind(s.reseller_id.as_str())
            .bind(s.customer_id.as_str())
            .bind(s.product_id.as_str())
            .bind(&s.plan)
            .bind(s.billing.as_str())
            .bind(i64::from(s.seats.get()))
            .bind(i64::from(s.assigned_licenses.get()))
            .bind(s.term_start)
            .bind(s.term_end)
            .bind(s.auto_renew)
            .bind(s.notify_email.as_ref().map(|e| e.as_str()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
                progress(1);
            }
            tx.commit().await?;
            Ok(ImportCounts {
                resellers: resellers.len(),
                customers: customers.len(),
                subscriptions: subscriptions.len(),
            })
        })
    }

    /// Which of these reseller ids exist already (for validating a file that refers to them).
    pub async fn existing_resellers(&self, ids: &[&str]) -> Result<Vec<String>, StoreError> {
        self.existing_ids("resellers", ids).await
    }

    /// Customers (id, reseller id) among these ids that exist already.
    pub async fn existing_customers(
        &self,
        ids: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        db!(self, |p, stmt| {
            let mut found = Vec::new();
            for chunk in ids.chunks(500) {
                let sql = format!(
                    "SELECT id, reseller_id FROM customers WHERE id IN ({})",
                    placeholders(chunk.len())
                );
                let mut q = sqlx::query(stmt(&sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                for row in q.fetch_all(p).await? {
                    found.push((row.try_get("id")?, row.try_get("reseller_id")?));
                }
            }
            Ok(found)
        })
    }

    async fn existing_ids(&self, table: &str, ids: &[&str]) -> Result<Vec<String>, StoreError> {
        db!(self, |p, stmt| {
            let mut found = Vec::new();
            for chunk in ids.chunks(500) {
                let sql = format!(
                    "SELECT id FROM {table} WHERE id IN ({})",
                    placeholders(chunk.len())
                );
                let mut q = sqlx::query_scalar::<_, String>(stmt(&sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                found.extend(q.fetch_all(p).await?);
            }
            Ok(found)
        })
    }

    /// Adds `n` synthetic subscriptions (ids `BENCH-00000000`…) of an existing reseller and
    /// customer, `due` of them due at the next poll and the rest not before `later`: load for
    /// benchmarks, generated inside the database so that a million rows take seconds.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_synthetic_subscriptions(
        &self,
        reseller: &str,
        customer: &str,
        n: u64,
        due: u64,
        term_start: chrono::NaiveDate,
        term_end: chrono::NaiveDate,
        later: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        db!(self, |p, stmt| {
            // The row numbers come first in both forms, so the placeholders keep their order.
            let (seq, id) = match self.db {
                Db::Sqlite(_) => (
                    "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?)",
                    "printf('BENCH-%08d', i)",
                ),
                Db::Postgres(_) => (
                    "WITH seq(i) AS (SELECT generate_series(0, ? - 1))",
                    "'BENCH-' || lpad(i::TEXT, 8, '0')",
                ),
            };
            sqlx::query(stmt(&format!(
                "{seq}
             INSERT INTO subscriptions (id, reseller_id, customer_id, product_id, plan, billing,
               seats, assigned_licenses, term_start, term_end, auto_renew, notify_email,
               updated_at, next_due_at)
             SELECT {id}, ?, ?, '057O1WW6525L347', 'AutoCAD LT',
               'annual_prepaid', 10, 0, ?, ?, TRUE, NULL, 0,
               CASE WHEN i < ? THEN 0 ELSE ? END
             FROM seq"
            )))
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .bind(reseller)
            .bind(customer)
            .bind(term_start)
            .bind(term_end)
            .bind(i64::try_from(due).unwrap_or(i64::MAX))
            .bind(millis(later))
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// How the database answers the poll's query: it must read the next-due index, never
    /// scan the table.
    pub async fn explain_due_query(&self) -> Result<String, StoreError> {
        let due = DUE_CONTEXTS.as_str();
        match &self.db {
            Db::Sqlite(p) => Ok(sqlite_plan(p, due, &[0, 1]).await?.join("; ")),
            Db::Postgres(p) => {
                // Planned as for a small result, as the poll's is; without statistics the
                // planner would not know the table is large.
                let mut tx = p.begin().await?;
                sqlx::query("SET LOCAL enable_seqscan = off")
                    .execute(&mut *tx)
                    .await?;
                let rows: Vec<String> =
                    sqlx::query_scalar(trusted(numbered_placeholders(&format!("EXPLAIN {due}"))))
                        .bind(0i64)
                        .bind(1i64)
                        .fetch_all(&mut *tx)
                        .await?;
                Ok(rows.join("; "))
            }
        }
    }

    /// How the database would run [`Store::claim_due`] of `n` mails (its steps joined by
    /// "; "; nothing is claimed). The due mail must be read through the owed index in order,
    /// stopping at the limit, and claimed by id, whatever the planner's statistics say.
    pub async fn explain_claim(&self, n: u32) -> Result<String, StoreError> {
        match &self.db {
            Db::Sqlite(p) => Ok(sqlite_plan(p, &CLAIM_DUE_SQLITE, &[0, 0, 0, i64::from(n)])
                .await?
                .join("; ")),
            Db::Postgres(p) => {
                let mut tx = p.begin_with("BEGIN; SET LOCAL enable_sort = off").await?;
                let plan: Vec<String> =
                    sqlx::query_scalar(trusted(format!("EXPLAIN {}", CLAIM_DUE_POSTGRES.as_str())))
                        .bind("explain")
                        .bind(0i64)
                        .bind(0i64)
                        .bind(i64::from(n))
                        .fetch_all(&mut *tx)
                        .await?;
                tx.rollback().await?;
                Ok(plan.join("; "))
            }
        }
    }

    /// How the database would run the record of `n` mails sent (see [`MarkSent`]; steps
    /// joined by "; "; nothing is written). The rows must be found through the primary key,
    /// whatever the planner's statistics say.
    pub async fn explain_mark_sent(&self, n: u32) -> Result<String, StoreError> {
        // Mails 1..=n, each on its first attempt, sent at instant 0.
        let sent: Vec<SentMail> = (1..=i64::from(n)).map(|id| (id, 1, 0)).collect();
        match &self.db {
            Db::Sqlite(p) => Ok(sqlite_plan(
                p,
                &mark_sent_sql(sent.len()),
                &mark_sent_binds_sqlite(&sent),
            )
            .await?
            .join("; ")),
            Db::Postgres(p) => {
                let (ids, attempts, at) = mark_sent_arrays(&sent);
                let plan: Vec<String> =
                    sqlx::query_scalar(trusted(format!("EXPLAIN {MARK_SENT_POSTGRES}")))
                        .bind(ids)
                        .bind(attempts)
                        .bind(at)
                        .fetch_all(p)
                        .await?;
                Ok(plan.join("; "))
            }
        }
    }

    /// Every active subscription with its parties, for whole-book views (`simulate`).
    pub async fn active_subscription_contexts(
        &self,
    ) -> Result<Vec<SubscriptionContext>, StoreError> {
        db!(self, |p, stmt| {
            let sql = rows::context_select("WHERE s.status = 'active' ORDER BY s.id");
            let rows = sqlx::query(stmt(&sql)).fetch_all(p).await?;
            rows.iter().map(rows::context_from_row).collect()
        })
    }

    pub async fn subscription_context(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionContext>, StoreError> {
        self.context_of(id.as_str()).await
    }

    /// The context of the subscription with this id as stored (checked when it was written).
    async fn context_of(&self, id: &str) -> Result<Option<SubscriptionContext>, StoreError> {
        db!(self, |p, stmt| {
            let row = sqlx::query(stmt(&rows::context_select("WHERE s.id = ?")))
                .bind(id)
                .fetch_optional(p)
                .await?;
            row.map(|r| rows::context_from_row(&r)).transpose()
        })
    }

    // ---------------------------------------------------------------- outbox

    /// Records a mail as owed, due now. A key already recorded changes nothing.
    pub async fn enqueue_notification(
        &self,
        new: &NewNotification,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StoreError> {
        db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            let recipients = serde_json::to_string(&new.recipients).unwrap_or_else(|_| "[]".into());
            let inserted: Option<i64> = sqlx::query_scalar(stmt(
                "INSERT INTO outbox (key, kind, subscription_id, recipients, payload, message_id,
               state, attempts, next_attempt_at, created_at)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)
             ON CONFLICT (key) DO NOTHING
             RETURNING id",
            ))
            .bind(&new.key)
            .bind(&new.kind)
            .bind(&new.subscription_id)
            .bind(recipients)
            .bind(new.payload.to_string())
            .bind(&new.message_id)
            .bind(millis(now))
            .bind(millis(now))
            .fetch_optional(&mut *tx)
            .await?;
            let result = match inserted {
                Some(id) => Enqueued::Created { id },
                None => {
                    let row = sqlx::query(stmt("SELECT id, state FROM outbox WHERE key = ?"))
                        .bind(&new.key)
                        .fetch_one(&mut *tx)
                        .await?;
                    let id: i64 = row.try_get("id")?;
                    let state: String = row.try_get("state")?;
                    Enqueued::AlreadyRecorded {
                        id,
                        state: state.parse().map_err(|detail| StoreError::Corrupt {
                            table: "outbox",
                            id: id.to_string(),
                            detail,
                        })?,
                    }
                }
            };
            tx.commit().await?;
            if matches!(result, Enqueued::Created { .. }) {
                self.owed_changed();
            }
            Ok(result)
        })
    }

    /// Puts a job on the queue by itself; returns its idempotency key.
    pub async fn enqueue_job(&self, job: &QueuedJob) -> Result<String, StoreError> {
        db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            push_job(&mut tx, job).await?;
            tx.commit().await?;
            Ok(job.idempotency_key.clone())
        })
    }

    /// Records a decision on a disable request in one transaction: the switch-off (guarded),
    /// the audit row, and its mails (built from the audit row's id).
    pub async fn record_disable(
        &self,
        r: &DisableRecord,
        now: DateTime<Utc>,
        mails: impl FnOnce(i64) -> Vec<NewNotification>,
    ) -> Result<DisableRecorded, StoreError> {
        db!(self, |p, stmt| {
            if let Some(existing) = self.disable_by_key(&r.request_key).await? {
                return Ok(DisableRecorded::Duplicate(existing));
            }
            let mut tx = p.begin().await?;
            if r.switch_off {
                let changed = sqlx::query(stmt(
                    "UPDATE subscriptions SET auto_renew = FALSE, disable_effective_term_end = ?,
                   next_due_at = 0
                 WHERE id = ? AND assigned_licenses = 0 AND auto_renew = TRUE
                   AND disable_effective_term_end IS NULL AND term_end = ? AND status = 'active'",
                ))
                .bind(r.effective_term_end)
                .bind(&r.subscription_id)
                .bind(r.seen_term_end)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Ok(DisableRecorded::Conflict);
                }
                sqlx::query(stmt(
                    "UPDATE outbox SET state = 'skipped', last_error = 'auto-renew was disabled'
                 WHERE subscription_id = ? AND kind = 'renewal_reminder' AND state = 'pending'",
                ))
                .bind(&r.subscription_id)
                .execute(&mut *tx)
                .await?;
            }
            let id: Option<i64> = sqlx::query_scalar(stmt(
                "INSERT INTO disable_requests (request_key, subscription_id, requested_by,
               requested_at, decided_at, via, seen_assigned, seen_term_end, seen_auto_renew,
               decision, reason, cutoff_at, effective_term_end, renews_once_more)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (request_key) DO NOTHING RETURNING id",
            ))
            .bind(&r.request_key)
            .bind(&r.subscription_id)
            .bind(&r.requested_by)
            .bind(millis(r.requested_at))
            .bind(millis(now))
            .bind(&r.via)
            .bind(i64::from(r.seen_assigned))
            .bind(r.seen_term_end)
            .bind(r.seen_auto_renew)
            .bind(if r.accepted { "accepted" } else { "rejected" })
            .bind(r.reason.as_deref())
            .bind(r.cutoff_at.map(millis))
            .bind(r.effective_term_end)
            .bind(r.renews_once_more)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(id) = id else {
                // Decided concurrently under the same key: that decision stands.
                drop(tx);
                return match self.disable_by_key(&r.request_key).await? {
                    Some(row) => Ok(DisableRecorded::Duplicate(row)),
                    None => Ok(DisableRecorded::Conflict),
                };
            };
            let mut owed = false;
            for n in mails(id) {
                let recipients =
                    serde_json::to_string(&n.recipients).unwrap_or_else(|_| "[]".into());
                let inserted: Option<i64> = sqlx::query_scalar(
                stmt("INSERT INTO outbox (key, kind, subscription_id, recipients, payload, message_id,
                   state, attempts, next_attempt_at, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)
                 ON CONFLICT (key) DO NOTHING RETURNING id"),
            )
            .bind(&n.key)
            .bind(&n.kind)
            .bind(&n.subscription_id)
            .bind(recipients)
            .bind(n.payload.to_string())
            .bind(&n.message_id)
            .bind(millis(now))
            .bind(millis(now))
            .fetch_optional(&mut *tx)
            .await?;
                owed |= inserted.is_some();
            }
            tx.commit().await?;
            if owed {
                self.owed_changed();
            }
            match self.disable_by_key(&r.request_key).await? {
                Some(row) => Ok(DisableRecorded::Recorded(row)),
                None => Err(StoreError::Corrupt {
                    table: "disable_requests",
                    id: id.to_string(),
                    detail: "missing right after it was written".into(),
                }),
            }
        })
    }

    async fn disable_rows(&self, filter: &str, value: &str) -> Result<Vec<DisableRow>, StoreError> {
        db!(self, |p, stmt| {
            let rows = sqlx::query(stmt(&format!(
            "SELECT id, request_key, requested_by, requested_at, decided_at, via, seen_assigned,
               seen_term_end, decision, reason, cutoff_at, effective_term_end, renews_once_more
             FROM disable_requests WHERE {filter} = ? ORDER BY id"
        )))
            .bind(value)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(DisableRow {
                        id: r.try_get("id")?,
                        request_key: r.try_get("request_key")?,
                        requested_by: r.try_get("requested_by")?,
                        requested_at: from_millis(r.try_get("requested_at")?),
                        decided_at: from_millis(r.try_get("decided_at")?),
                        via: r.try_get("via")?,
                        seen_assigned: u32::try_from(r.col::<i64>("seen_assigned")?).unwrap_or(0),
                        seen_term_end: r.try_get("seen_term_end")?,
                        decision: r.try_get("decision")?,
                        reason: r.try_get("reason")?,
                        cutoff_at: r.col::<Option<i64>>("cutoff_at")?.map(from_millis),
                        effective_term_end: r.try_get("effective_term_end")?,
                        renews_once_more: r.try_get("renews_once_more")?,
                    })
                })
                .collect()
        })
    }

    pub async fn disable_by_key(&self, key: &str) -> Result<Option<DisableRow>, StoreError> {
        Ok(self.disable_rows("request_key", key).await?.pop())
    }

    /// Every decision on the subscription's disable requests, oldest first.
    pub async fn disable_requests(
        &self,
        subscription: &str,
    ) -> Result<Vec<DisableRow>, StoreError> {
        self.disable_rows("subscription_id", subscription).await
    }

    /// Ids among these whose auto-renew was disabled by an accepted request (irrevocable).
    pub async fn irrevocably_disabled(&self, ids: &[&str]) -> Result<Vec<String>, StoreError> {
        db!(self, |p, stmt| {
            let mut found = Vec::new();
            for chunk in ids.chunks(500) {
                let sql = format!(
                    "SELECT id FROM subscriptions
                 WHERE disable_effective_term_end IS NOT NULL AND id IN ({})",
                    placeholders(chunk.len())
                );
                let mut q = sqlx::query_scalar::<_, String>(stmt(&sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                found.extend(q.fetch_all(p).await?);
            }
            Ok(found)
        })
    }

    /// Sets the licenses assigned to end users (the marketplace un-assigns or assigns them).
    /// `None` when the subscription does not exist.
    pub async fn set_assigned_licenses(
        &self,
        subscription: &str,
        assigned: u32,
    ) -> Result<Option<LicenseUpdate>, StoreError> {
        db!(self, |p, stmt| {
            let previous: Option<i64> = sqlx::query_scalar(stmt(
                "SELECT assigned_licenses FROM subscriptions WHERE id = ?",
            ))
            .bind(subscription)
            .fetch_optional(p)
            .await?;
            let Some(previous) = previous else {
                return Ok(None);
            };
            // One statement: the auto-renew state it returns is the one it wrote against, under
            // the write lock, which is what orders it against a concurrent disable. (A read first
            // in the same transaction would make SQLite refuse the write when another writer got
            // in between.)
            let after: Option<bool> = sqlx::query_scalar(stmt(
                "UPDATE subscriptions SET assigned_licenses = ? WHERE id = ? RETURNING auto_renew",
            ))
            .bind(i64::from(assigned))
            .bind(subscription)
            .fetch_optional(p)
            .await?;
            Ok(after.map(|auto_renew_was_on| LicenseUpdate {
                previous: u32::try_from(previous).unwrap_or(0),
                auto_renew_was_on,
            }))
        })
    }

    /// The cursor a pulling source left off at.
    pub async fn source_cursor(&self, source: &str) -> Result<Option<String>, StoreError> {
        db!(self, |p, stmt| {
            Ok(
                sqlx::query_scalar(stmt("SELECT cursor FROM source_cursors WHERE source = ?"))
                    .bind(source)
                    .fetch_optional(p)
                    .await?,
            )
        })
    }

    pub async fn set_source_cursor(
        &self,
        source: &str,
        cursor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        db!(self, |p, stmt| {
            sqlx::query(stmt(
                "INSERT INTO source_cursors (source, cursor, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor,
               updated_at = excluded.updated_at",
            ))
            .bind(source)
            .bind(cursor)
            .bind(millis(now))
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        db!(self, |p, stmt| {
            sqlx::query(stmt("SELECT 1")).execute(p).await?;
            Ok(())
        })
    }

    /// Queue gauges: jobs waiting (the queue's, and mail due, the outbox being the queue of
    /// mail), how long the oldest has waited, mail owed (due or not).
    pub async fn queue_stats(&self, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        db!(self, |p, stmt| {
            let jobs = match self.db {
                Db::Sqlite(_) => {
                    "SELECT COUNT(*), MIN(run_at) FROM Jobs WHERE status = 'Pending' AND run_at <= ?"
                }
                Db::Postgres(_) => {
                    "SELECT COUNT(*), MIN(EXTRACT(EPOCH FROM run_at))::BIGINT FROM apalis.jobs
                 WHERE status = 'Pending' AND run_at <= to_timestamp(?)"
                }
            };
            let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(stmt(jobs))
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

    /// Makes a subscription due at the next poll; false if it does not exist.
    pub async fn mark_due(&self, subscription: &str) -> Result<bool, StoreError> {
        db!(self, |p, stmt| {
            Ok(sqlx::query(stmt(
                "UPDATE subscriptions SET next_due_at = 0 WHERE id = ?",
            ))
            .bind(subscription)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// The active subscriptions due at `now`, soonest first, with their parties: the poll's
    /// batch read in one query rather than one per subscription.
    pub async fn due_subscription_contexts(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<SubscriptionContext>, StoreError> {
        db!(self, |p, stmt| {
            let rows = sqlx::query(stmt(&DUE_CONTEXTS))
                .bind(millis(now))
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?;
            rows.iter().map(rows::context_from_row).collect()
        })
    }

    /// Applies one poll's decisions for one subscription: term change, owed and skipped mail,
    /// cancelled reminders and the next due instant, all or nothing.
    pub async fn apply_renewal(
        &self,
        u: &RenewalUpdate,
        now: DateTime<Utc>,
    ) -> Result<Applied, StoreError> {
        let mut applied = self.apply_renewals(std::slice::from_ref(u), now).await?;
        Ok(applied.pop().unwrap_or_default())
    }

    /// [`Store::apply_renewal`] for several subscriptions in one transaction, so that they
    /// share one commit; what was applied to each, in order. Any error rolls back all of them.
    pub async fn apply_renewals(
        &self,
        updates: &[RenewalUpdate],
        now: DateTime<Utc>,
    ) -> Result<Vec<Applied>, StoreError> {
        db!(self, |p, stmt| {
            let move_term = sqlx::SqlSafeStr::into_sql_str(stmt(
                "UPDATE subscriptions SET term_end = ?, status = ?, next_due_at = ?
                 WHERE id = ? AND term_end = ? AND status = 'active'",
            ));
            let cancel = sqlx::SqlSafeStr::into_sql_str(stmt(
                "UPDATE outbox SET state = 'skipped', last_error = ?
                 WHERE subscription_id = ? AND kind = 'renewal_reminder' AND state = 'pending'",
            ));
            let insert = sqlx::SqlSafeStr::into_sql_str(stmt(
                "INSERT INTO outbox (key, kind, subscription_id, recipients, payload, message_id,
                   state, attempts, next_attempt_at, created_at, last_error)
                 VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)
                 ON CONFLICT (key) DO NOTHING
                 RETURNING id",
            ));
            let mut tx = p.begin().await?;
            let mut out = Vec::with_capacity(updates.len());
            for u in updates {
                let next_due = u.next_due_at.map(millis).unwrap_or(i64::MAX);
                let (term_end, status) = match u.change {
                    TermChange::None => (u.expected_term_end, "active"),
                    TermChange::Renew(end) => (end, "active"),
                    TermChange::End => (u.expected_term_end, "ended"),
                };
                let moved = sqlx::query(move_term.clone())
                    .bind(term_end)
                    .bind(status)
                    .bind(next_due)
                    .bind(&u.subscription_id)
                    .bind(u.expected_term_end)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if moved == 0 {
                    // Another poll moved the term meanwhile: nothing of this one applies.
                    out.push(Applied::default());
                    continue;
                }
                let mut applied = Applied {
                    applied: true,
                    ..Applied::default()
                };
                if let Some(reason) = &u.cancel_pending_reminders {
                    applied.cancelled = sqlx::query(cancel.clone())
                        .bind(reason)
                        .bind(&u.subscription_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected() as u32;
                }
                for (n, skip) in &u.notifications {
                    let recipients =
                        serde_json::to_string(&n.recipients).unwrap_or_else(|_| "[]".into());
                    let inserted: Option<i64> = sqlx::query_scalar(insert.clone())
                        .bind(&n.key)
                        .bind(&n.kind)
                        .bind(&n.subscription_id)
                        .bind(recipients)
                        .bind(n.payload.to_string())
                        .bind(&n.message_id)
                        .bind(if skip.is_some() { "skipped" } else { "pending" })
                        .bind(millis(now))
                        .bind(millis(now))
                        .bind(skip.as_deref())
                        .fetch_optional(&mut *tx)
                        .await?;
                    match (inserted, skip) {
                        (Some(_), None) => applied.queued += 1,
                        (Some(_), Some(_)) => applied.skipped += 1,
                        (None, _) => {}
                    }
                }
                out.push(applied);
            }
            tx.commit().await?;
            if out.iter().any(|a| a.queued > 0) {
                self.owed_changed();
            }
            Ok(out)
        })
    }

    /// Gives up a claimed mail that is no longer worth sending (e.g. a reminder whose cutoff
    /// passed while it waited for a retry).
    pub async fn skip_claimed(
        &self,
        outbox_id: i64,
        attempt: u32,
        reason: &str,
    ) -> Result<bool, StoreError> {
        db!(self, |p, stmt| {
            Ok(sqlx::query(stmt(
                "UPDATE outbox SET state = 'skipped', claimed_by = NULL, last_error = ?
             WHERE id = ? AND state = 'sending' AND attempts = ?",
            ))
            .bind(reason)
            .bind(outbox_id)
            .bind(i64::from(attempt))
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// Takes up to `n` owed mails that are due at `now` for sending, the soonest due first:
    /// each moves to sending for its next attempt, claimed by `worker`, and comes with what its
    /// message is made from. A mail is claimed by one taker only: on SQLite the claim is one
    /// statement under the database's write lock; on PostgreSQL rows another daemon has
    /// locked are skipped (`SKIP LOCKED`), so daemons take disjoint batches instead of
    /// waiting on each other. Due is the outbox's instant, to the millisecond.
    ///
    /// On PostgreSQL the claim's commit does not wait for the disk: a database crash that
    /// loses it leaves the mails owed and sent again, just as a crash between a durable claim
    /// and its record does, and the record's durable commit flushes the claim before it (the
    /// log is written in order), so a mail sent is never left unrecorded because of it.
    pub async fn claim_due(
        &self,
        n: u32,
        worker: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut claims = match &self.db {
            Db::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                // One statement, so one write transaction: its read of the due rows cannot be
                // overtaken by another writer, and a busy database is waited for.
                let mut taken = Vec::new();
                for r in sqlx::query(sqlx::AssertSqlSafe(CLAIM_DUE_SQLITE.as_str()))
                    .bind(worker)
                    .bind(millis(now))
                    .bind(millis(now))
                    .bind(i64::from(n))
                    .fetch_all(&mut *conn)
                    .await?
                {
                    taken.push(rows::outbox_from_row(&r)?);
                }
                if taken.is_empty() {
                    return Ok(Vec::new());
                }
                // Their subscriptions, each read once, after the claim: the write lock is
                // held for the claim alone.
                let mut subscriptions: Vec<&str> =
                    taken.iter().map(|r| r.subscription_id.as_str()).collect();
                subscriptions.sort_unstable();
                subscriptions.dedup();
                let mut read = sqlx::query(trusted(rows::context_select(&format!(
                    "WHERE s.id IN ({})",
                    placeholders(subscriptions.len())
                ))));
                for s in &subscriptions {
                    read = read.bind(*s);
                }
                let mut contexts = std::collections::HashMap::new();
                for r in read.fetch_all(&mut *conn).await? {
                    let id: String = r.try_get("s_id")?;
                    contexts.insert(id, rows::context_from_row(&r).map_err(|e| e.to_string()));
                }
                taken
                    .into_iter()
                    .map(|row| {
                        let context = match contexts.get(&row.subscription_id) {
                            None => Ok(None),
                            Some(Ok(ctx)) => Ok(Some(ctx.clone())),
                            Some(Err(detail)) => Err(StoreError::Corrupt {
                                table: "subscriptions",
                                id: row.subscription_id.clone(),
                                detail: detail.clone(),
                            }),
                        };
                        Claimed { row, context }
                    })
                    .collect::<Vec<_>>()
            }
            Db::Postgres(p) => {
                // Sorting off for the read of due mail: right after a burst of owed mail (an
                // import, a backlog) the table's statistics still say the outbox is small, and
                // PostgreSQL would read every pending row to sort them (tens of ms per batch
                // at 100,000 owed) instead of walking the `outbox_owed` index in order and
                // stopping at the limit. Both settings ride along with `BEGIN`, in one round
                // trip; the claim and its subscriptions are one statement.
                let mut tx = p
                    .begin_with(
                        "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL enable_sort = off",
                    )
                    .await?;
                let found = sqlx::query(sqlx::AssertSqlSafe(CLAIM_DUE_POSTGRES.as_str()))
                    .bind(worker)
                    .bind(millis(now))
                    .bind(millis(now))
                    .bind(i64::from(n))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let mut claims = Vec::with_capacity(found.len());
                for r in &found {
                    let row = rows::outbox_from_row(r)?;
                    let context = match r.try_get::<Option<String>, _>("s_id")? {
                        None => Ok(None),
                        Some(_) => rows::context_from_row(r).map(Some),
                    };
                    claims.push(Claimed { row, context });
                }
                claims
            }
        };
        claims.sort_by_key(|c| (c.row.next_attempt_at, c.row.id));
        Ok(claims)
    }

    /// The soonest instant at which owed mail is due (now or in the past if some is due
    /// already); `None` when none is owed.
    pub async fn next_owed_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        db!(self, |p, stmt| {
            let at: Option<i64> = sqlx::query_scalar(stmt(
                "SELECT next_attempt_at FROM outbox
                 WHERE state = 'pending' AND state IN ('pending', 'sending')
                 ORDER BY next_attempt_at LIMIT 1",
            ))
            .fetch_optional(p)
            .await?;
            Ok(at.map(from_millis))
        })
    }

    /// Gives claimed mails that were never handed to the server back, owed as they were
    /// before the claim: the attempt is not counted.
    pub async fn release_claims(
        &self,
        claims: &[(i64, u32)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let released = db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            let mut released = 0;
            for &(id, attempt) in claims {
                released += sqlx::query(stmt(
                    "UPDATE outbox SET state = 'pending', attempts = attempts - 1,
                       next_attempt_at = ?, claimed_by = NULL, claimed_at = NULL
                     WHERE id = ? AND state = 'sending' AND attempts = ?",
                ))
                .bind(millis(now))
                .bind(id)
                .bind(i64::from(attempt))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            released
        });
        if released > 0 {
            self.owed_changed();
        }
        Ok(released)
    }

    /// Records how an attempt ended and moves the mail on, in one transaction. Returns false
    /// when the claim had been lost meanwhile (lease expired and another worker took over):
    /// then only the attempt itself is recorded.
    pub async fn finish_attempt(&self, f: &FinishedAttempt) -> Result<bool, StoreError> {
        Ok(self
            .finish_attempts(std::slice::from_ref(f))
            .await?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// [`Store::finish_attempt`] for many attempts in one transaction (one commit), as a job
    /// that sent many mails records them. One flag per attempt, in order.
    pub async fn finish_attempts(&self, fs: &[FinishedAttempt]) -> Result<Vec<bool>, StoreError> {
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
            let kept_ids: std::collections::HashSet<i64> = db!(self, |p, stmt| {
                p.mark_sent(fs).fetch_all(p).await?.into_iter().collect()
            });
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
            let mut sent_kept = std::collections::HashSet::new();
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

    /// Crash recovery, run at start and periodically: mails claimed longer than `lease` ago
    /// (their daemon presumably died mid-send) are owed again, due now. Returns how many.
    pub async fn expire_claims(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let expired = db!(self, |p, stmt| {
            sqlx::query(stmt(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, claimed_by = NULL,
                   last_error = 'claim lease expired; worker presumed lost'
                 WHERE state = 'sending' AND state IN ('pending', 'sending') AND claimed_at < ?",
            ))
            .bind(millis(now))
            .bind(millis(now).saturating_sub(lease_ms))
            .execute(p)
            .await?
            .rows_affected()
        });
        if expired > 0 {
            self.owed_changed();
        }
        Ok(expired)
    }

    pub async fn outbox_by_id(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        db!(self, |p, stmt| {
            let row = sqlx::query(stmt(&format!(
                "SELECT {} FROM outbox WHERE id = ?",
                rows::OUTBOX_COLUMNS
            )))
            .bind(id)
            .fetch_optional(p)
            .await?;
            row.map(|r| rows::outbox_from_row(&r)).transpose()
        })
    }

    pub async fn outbox_by_key(&self, key: &str) -> Result<Option<OutboxRow>, StoreError> {
        db!(self, |p, stmt| {
            let row = sqlx::query(stmt(&format!(
                "SELECT {} FROM outbox WHERE key = ?",
                rows::OUTBOX_COLUMNS
            )))
            .bind(key)
            .fetch_optional(p)
            .await?;
            row.map(|r| rows::outbox_from_row(&r)).transpose()
        })
    }

    pub async fn outbox_for_subscription(
        &self,
        subscription: Option<&str>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        db!(self, |p, stmt| {
            let rows = sqlx::query(stmt(&format!(
                "SELECT {} FROM outbox WHERE (? IS NULL OR subscription_id = ?) ORDER BY id",
                rows::OUTBOX_COLUMNS
            )))
            .bind(subscription)
            .bind(subscription)
            .fetch_all(p)
            .await?;
            rows.iter().map(rows::outbox_from_row).collect()
        })
    }

    /// Every delivery attempt of a mail, in order: those recorded in `delivery_attempts`, and
    /// the one that sent it, which lives on the mail's row (see [`Store::finish_attempts`]).
    pub async fn attempts(&self, outbox_id: i64) -> Result<Vec<DeliveryAttempt>, StoreError> {
        db!(self, |p, stmt| {
            let rows = sqlx::query(stmt(
                "SELECT attempt, worker, started_at, finished_at, outcome, smtp_code, detail
                 FROM delivery_attempts WHERE outbox_id = ?
                 UNION ALL
                 SELECT o.attempts, o.claimed_by, o.claimed_at, o.sent_at, 'sent', NULL, NULL
                 FROM outbox o
                 WHERE o.id = ? AND o.state = 'sent' AND o.claimed_by IS NOT NULL
                   AND o.claimed_at IS NOT NULL AND o.sent_at IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM delivery_attempts d
                     WHERE d.outbox_id = o.id AND d.attempt = o.attempts)
                 ORDER BY 1",
            ))
            .bind(outbox_id)
            .bind(outbox_id)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(DeliveryAttempt {
                        attempt: u32::try_from(r.col::<i64>("attempt")?).unwrap_or(0),
                        worker: r.try_get("worker")?,
                        started_at: from_millis(r.try_get("started_at")?),
                        finished_at: from_millis(r.try_get("finished_at")?),
                        outcome: r.try_get("outcome")?,
                        smtp_code: r
                            .col::<Option<i64>>("smtp_code")?
                            .and_then(|c| u16::try_from(c).ok()),
                        detail: r.try_get("detail")?,
                    })
                })
                .collect()
        })
    }
}

/// The poll's query: due subscriptions with their parties, read through the next-due index.
static DUE_CONTEXTS: LazyLock<String> = LazyLock::new(|| {
    rows::context_select(
        "WHERE s.status = 'active' AND s.next_due_at <= ? ORDER BY s.next_due_at LIMIT ?",
    )
});

/// Marks SQL assembled in this module from constant fragments (column lists, guards,
/// placeholders): never from input, which is always bound.
pub(crate) fn trusted(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// How SQLite would run `sql` with `binds` bound in order: EXPLAIN QUERY PLAN's steps.
async fn sqlite_plan(p: &SqlitePool, sql: &str, binds: &[i64]) -> Result<Vec<String>, StoreError> {
    let mut q =
        sqlx::query_as::<_, (i64, i64, i64, String)>(trusted(format!("EXPLAIN QUERY PLAN {sql}")));
    for b in binds {
        q = q.bind(*b);
    }
    Ok(q.fetch_all(p).await?.into_iter().map(|r| r.3).collect())
}

/// Marks `n` mails sent, each only if still claimed by the same attempt; binds: (id, sent_at)
/// for each, then (id, attempt) for each. Returns the ids marked.
///
/// The rows are found by their ids: the state test is written so that no index on the state
/// serves it, which leaves the planner no plan that reads every row of a state instead (as
/// PostgreSQL chooses for `state = 'pending'` while its statistics lag a burst of owed mail).
///
/// On PostgreSQL the batch comes as three arrays instead (`MARK_SENT_POSTGRES`): one
/// prepared statement for every size of batch. With four parameters per mail, as below,
/// PostgreSQL spent 0.5-0.6 ms planning each batch of 32 until it settled on a generic plan,
/// and 0.25 ms binding that plan after; with the arrays, 0.02 ms (its `EXPLAIN ANALYZE`).
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

fn sent_mails<F: std::borrow::Borrow<FinishedAttempt>>(sent: &[F]) -> Vec<SentMail> {
    sent.iter()
        .map(std::borrow::Borrow::borrow)
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

/// The bound statement marking a batch of mails sent, for each backend (the pool only names
/// it: the statement runs wherever the caller runs it, a transaction's connection included);
/// its rows are the ids marked.
trait MarkSent {
    type Db: sqlx::Database;
    fn mark_sent<F: std::borrow::Borrow<FinishedAttempt>>(
        &self,
        sent: &[F],
    ) -> sqlx::query::QueryScalar<'static, Self::Db, i64, <Self::Db as sqlx::Database>::Arguments>;
}

impl MarkSent for SqlitePool {
    type Db = sqlx::Sqlite;
    fn mark_sent<F: std::borrow::Borrow<FinishedAttempt>>(
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
    fn mark_sent<F: std::borrow::Borrow<FinishedAttempt>>(
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

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `?` placeholders as PostgreSQL wants them: `$1`, `$2`, ... in order. Question marks inside
/// quoted literals are left alone.
pub(crate) fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
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

/// A transaction jobs can be pushed in, so that a job commits with the outbox change that
/// owes it. Pushing a job whose idempotency key is taken is a no-op on every backend.
trait PushJob {
    fn push(
        &mut self,
        job: &QueuedJob,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

impl PushJob for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn push(&mut self, job: &QueuedJob) -> Result<(), StoreError> {
        let args = serde_json::to_vec(&job.args).map_err(|e| StoreError::Queue(e.to_string()))?;
        let task = TaskBuilder::new(args)
            .idempotency_key(&job.idempotency_key)
            .max_attempts(job.max_attempts)
            .run_at_timestamp(run_at_seconds(job.run_after))
            .build();
        apalis_sqlite::queries::push_tasks(&mut **self, job.queue, &[task])
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))
    }
}

impl PushJob for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn push(&mut self, job: &QueuedJob) -> Result<(), StoreError> {
        let args = serde_json::to_vec(&job.args).map_err(|e| StoreError::Queue(e.to_string()))?;
        // apalis's own push fails on a taken idempotency key, which would abort the whole
        // transaction; this is the same row, with the key conflict a no-op as on SQLite.
        sqlx::query(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at,
               priority, metadata, idempotency_key)
             VALUES (apalis.generate_ulid(), $1, $2, 'Pending', 0, $3, to_timestamp($4), 0,
               ''::hstore, $5)
             ON CONFLICT (job_type, idempotency_key) DO NOTHING",
        )
        .bind(job.queue)
        .bind(args)
        .bind(i32::try_from(job.max_attempts).unwrap_or(i32::MAX))
        .bind(i64::try_from(run_at_seconds(job.run_after)).unwrap_or(i64::MAX))
        .bind(&job.idempotency_key)
        .execute(&mut **self)
        .await?;
        Ok(())
    }
}

async fn push_job<T: PushJob>(tx: &mut T, job: &QueuedJob) -> Result<(), StoreError> {
    tx.push(job).await
}

/// A column value readable on every backend.
pub(crate) trait Col: Sized {
    fn sqlite(row: &sqlx::sqlite::SqliteRow, col: &str) -> Result<Self, sqlx::Error>;
    fn postgres(row: &sqlx::postgres::PgRow, col: &str) -> Result<Self, sqlx::Error>;
}

impl<T> Col for T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>,
{
    fn sqlite(row: &sqlx::sqlite::SqliteRow, col: &str) -> Result<Self, sqlx::Error> {
        row.try_get(col)
    }
    fn postgres(row: &sqlx::postgres::PgRow, col: &str) -> Result<Self, sqlx::Error> {
        row.try_get(col)
    }
}

/// A result row of either backend, for code that turns rows into values once for both.
pub(crate) trait DbRow {
    fn col<T: Col>(&self, col: &str) -> Result<T, sqlx::Error>;
}

impl DbRow for sqlx::sqlite::SqliteRow {
    fn col<T: Col>(&self, col: &str) -> Result<T, sqlx::Error> {
        T::sqlite(self, col)
    }
}

impl DbRow for sqlx::postgres::PgRow {
    fn col<T: Col>(&self, col: &str) -> Result<T, sqlx::Error> {
        T::postgres(self, col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`sqlite_plan`] of `sql` with every parameter bound.
    async fn plan_of(store: &Store, sql: &str) -> Vec<String> {
        let Db::Sqlite(pool) = &store.db else {
            panic!("a SQLite store");
        };
        sqlite_plan(pool, sql, &vec![1; sql.matches('?').count()])
            .await
            .expect("plan")
    }

    // Both statements run once per batch of mail; reading a whole table there costs time in
    // proportion to every mail ever owed. The claim must walk the owed index in its order and
    // then probe the ids it found; the record of mail sent finds the primary key through its
    // row-value IN on the SQLite we build with (older ones scan), and must go on doing so.
    #[tokio::test]
    async fn a_batch_s_statements_probe_indexes_instead_of_reading_whole_tables() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("plans.db").display());
        let store = Store::connect(&url, 2, Duration::from_secs(5))
            .await
            .expect("open");
        store.migrate().await.expect("migrate");

        let sent = plan_of(&store, &mark_sent_sql(3)).await;
        assert!(
            sent.iter()
                .any(|d| d.starts_with("SEARCH outbox USING INTEGER PRIMARY KEY")),
            "{sent:?}"
        );
        assert!(
            !sent.iter().any(|d| d.starts_with("SCAN outbox")),
            "{sent:?}"
        );

        let claim = plan_of(&store, &CLAIM_DUE_SQLITE).await;
        assert!(
            claim
                .iter()
                .any(|d| d.starts_with("SEARCH outbox USING INTEGER PRIMARY KEY")),
            "{claim:?}"
        );
        assert!(
            claim
                .iter()
                .any(|d| d.starts_with("SEARCH outbox USING COVERING INDEX outbox_owed")),
            "{claim:?}"
        );
        assert!(
            !claim
                .iter()
                .any(|d| d.starts_with("SCAN outbox") || d.contains("TEMP B-TREE")),
            "no whole-table read, no sort: {claim:?}"
        );
        store.close().await;
    }
}
