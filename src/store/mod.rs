//! Persistence. Every SQL statement of the project lives under this module, and so does every
//! difference between database backends; callers see plain Rust values.
//!
//! This file owns the connection: [`Store`], which database it is on ([`Backend`]), opening,
//! migrating and closing it, and the signal of mail owed. Each table family has a file of
//! its own: `records` (resellers, customers, subscriptions), `outbox` with `claim` and
//! `finish` (the mail owed, its claims and its attempts), `disable` (disable requests),
//! `provisioning` (orders: their steps, abandons and audit), `daemons` (their heartbeats),
//! `cursor` (where a pulling source left off) and `queue` (apalis's job queue). `sql` holds
//! what their statements share.

mod claim;
mod console;
mod corrections;
mod cursor;
mod daemons;
mod disable;
mod finish;
mod outbox;
mod provisioning;
mod queue;
mod records;
mod relay;
mod rows;
mod sql;
mod ticker;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use claim::Claimed;
pub use console::{
    AuditEntry, AuditRow, MAIL_SCAN, MailCounts, MailFilter, MailPage, MailTarget, PauseState,
    TermEndRow,
};
pub use corrections::UrlCorrection;
pub use daemons::DaemonRow;
pub use disable::{DisableRecord, DisableRecorded, DisableRow};
pub use finish::{AttemptOutcome, FinishedAttempt, RecordLine};
pub use outbox::{DeliveryAttempt, Enqueued, NewNotification, OutboxState};
pub use provisioning::{
    Abandoned, OVERLAPPING_ORDER, OrderInFlight, ProvisioningAuditRow, StepRecorded,
};
pub use queue::{
    JobQueue, JobRow, PostgresQueue, QueueOptions, QueueStats, QueuedJob, SqliteQueue,
};
pub use records::{Applied, ImportCounts, LicenseUpdate, RenewalUpdate, TermChange};
pub use relay::RelayRecord;
pub use rows::OutboxRow;

/// The text of the statements whose query plans tests and benchmarks check with `EXPLAIN`
/// on a connection of their own: exactly what the store runs, in the backend's placeholder
/// form. Not an API.
#[doc(hidden)]
pub mod statements {
    pub use super::claim::claim_due_statement as claim_due;
    pub use super::console::{Bind, console_mails_statement as console_mails};
    pub use super::finish::{
        MarkSentStatement, RECORD_LINE_SETTINGS, mark_sent_statement as mark_sent,
    };
    pub use super::records::due_contexts_statement as due_contexts;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {url:?} is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("could not open the database at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    /// A command that only reads found no database file: it creates none.
    #[error(
        "no database at {} (database.url): create it with `renewal-worker migrate` (or `renewal-worker run`), or point database.url (or --config) at the existing one",
        path.display()
    )]
    Missing { path: std::path::PathBuf },
    /// A command that only reads found a database with none of our tables: it creates none.
    #[error(
        "the database named by database.url has no renewal-worker tables: create them with `renewal-worker migrate` (or `renewal-worker run`), or point database.url at the database in use"
    )]
    Empty,
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

impl StoreError {
    fn bad_url(url: &str, reason: impl std::fmt::Display) -> Self {
        Self::BadUrl {
            url: crate::config::redacted_url(url),
            reason: reason.to_string(),
        }
    }
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
            Err(StoreError::bad_url(
                url,
                "the scheme must be sqlite:// or postgres://",
            ))
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
            $crate::store::Db::Sqlite($p) => {
                #[allow(unused_variables)]
                let $stmt = |sql: &str| $crate::store::sql::trusted(sql.to_owned());
                $body
            }
            $crate::store::Db::Postgres($p) => {
                #[allow(unused_variables)]
                let $stmt = |sql: &str| {
                    $crate::store::sql::trusted($crate::store::sql::numbered_placeholders(sql))
                };
                $body
            }
        }
    };
}
use db;

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// Told whenever this process commits mail that is owed (new, retried, given back, or
    /// back from an expired claim): the daemon's send lanes wait on it when nothing is due.
    owed: std::sync::Arc<tokio::sync::Notify>,
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

    /// As [`Store::open`], for commands that only read: a SQLite file that does not exist is
    /// [`StoreError::Missing`], not created.
    pub async fn open_existing(
        url: &str,
        max_connections: u32,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        if let Some(path) = Self::missing_sqlite_file(url)? {
            return Err(StoreError::Missing { path });
        }
        let store = Self::connect(url, max_connections, busy_timeout).await?;
        // A schema of an earlier release is brought up to date, as every command always did;
        // an empty database is left as it is.
        if store.pending_migrations().await?.len() >= store.migrator().iter().count() {
            store.close().await;
            return Err(StoreError::Empty);
        }
        store.migrate().await?;
        Ok(store)
    }

    /// The file of a SQLite URL when it does not exist; none for PostgreSQL or in-memory.
    pub fn missing_sqlite_file(url: &str) -> Result<Option<std::path::PathBuf>, StoreError> {
        if Backend::of_url(url)? != Backend::Sqlite {
            return Ok(None);
        }
        let options =
            SqliteConnectOptions::from_str(url).map_err(|e| StoreError::bad_url(url, e))?;
        let file = options.get_filename();
        if file == Path::new(":memory:") || file.exists() {
            return Ok(None);
        }
        Ok(Some(
            std::path::absolute(file).unwrap_or_else(|_| file.to_owned()),
        ))
    }

    /// Our migrations that are not applied yet (their versions); all of them on an empty
    /// database.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let applied: Result<Vec<i64>, sqlx::Error> = db!(self, |p, stmt| {
            sqlx::query_scalar::<_, i64>(stmt("SELECT version FROM _sqlx_migrations WHERE success"))
                .fetch_all(p)
                .await
        });
        let applied = match applied {
            Ok(versions) => versions,
            // No ledger yet: nothing applied.
            Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(self
            .migrator()
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    /// Our migrations for this store's backend, as compiled in.
    fn migrator(&self) -> sqlx::migrate::Migrator {
        match self.backend() {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        }
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
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::bad_url(url, e))?;
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
        let options =
            SqliteConnectOptions::from_str(url).map_err(|e| StoreError::bad_url(url, e))?;
        let filename = options.get_filename().to_owned();
        if let Some(dir) = filename.parent()
            && !dir.as_os_str().is_empty()
            && filename != Path::new(":memory:")
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::bad_url(url, format!("cannot create folder {}: {e}", dir.display()))
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
                url: crate::config::redacted_url(url),
                source,
            })?;
        Ok(Self::on(Db::Sqlite(pool)))
    }

    /// Applies our migrations and the job queue's, each with its own ledger so the two sets
    /// never see each other as "missing" migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            // The queue's tables first: a migration of ours may read or clean them.
            Db::Sqlite(p) => {
                let mut queue = apalis_sqlite::SqliteStorage::migrations();
                queue.dangerous_set_table_name("_apalis_migrations");
                queue.run(p).await?;
                sqlx::migrate!("./migrations/sqlite").run(p).await?;
            }
            Db::Postgres(p) => {
                // Several daemons may start at once: migrations take a database lock, so one
                // applies them and the others find them applied.
                let mut queue = apalis_postgres::PostgresStorage::<()>::migrations();
                queue.dangerous_set_table_name("_apalis_migrations");
                queue.run(p).await?;
                sqlx::migrate!("./migrations/postgres").run(p).await?;
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

    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        db!(self, |p, stmt| {
            sqlx::query(stmt("SELECT 1")).execute(p).await?;
            Ok(())
        })
    }
}

/// How SQLite plans `sql` on a freshly migrated database, each parameter bound to 1:
/// EXPLAIN QUERY PLAN's steps.
#[cfg(test)]
async fn sqlite_plan(sql: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("plans.db").display());
    let store = Store::open(&url, 2, Duration::from_secs(5))
        .await
        .expect("open");
    let Db::Sqlite(pool) = &store.db else {
        panic!("a SQLite store");
    };
    let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(sql::trusted(format!(
        "EXPLAIN QUERY PLAN {sql}"
    )));
    for _ in 0..sql.matches('?').count() {
        q = q.bind(1i64);
    }
    let plan = q.fetch_all(pool).await.expect("plan");
    store.close().await;
    plan.into_iter().map(|r| r.3).collect()
}
