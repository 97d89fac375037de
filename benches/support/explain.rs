//! How the database plans the statements that run once per poll or per batch of mail, and the
//! console's list of a subscription's mail, read with `EXPLAIN` on a connection of its own to
//! the store's database: the statements are the store's own
//! (`renewal_worker::store::statements`). Each plan comes as its steps joined by "; "; nothing
//! is written. Shared by the benchmarks and the integration tests.

use renewal_worker::store::{Backend, MailFilter, statements};
use sqlx::{Connection, PgConnection, SqliteConnection};

/// The poll's query: it must read the next-due index, never scan the table.
pub async fn due_query(url: &str) -> Result<String, sqlx::Error> {
    let backend = backend(url)?;
    let due = statements::due_contexts(backend);
    match backend {
        Backend::Sqlite => {
            let mut conn = SqliteConnection::connect(url).await?;
            Ok(sqlite_plan(&mut conn, &due, &[0, 1]).await?.join("; "))
        }
        Backend::Postgres => {
            let mut conn = PgConnection::connect(url).await?;
            // Planned as for a small result, as the poll's is; without statistics the
            // planner would not know the table is large.
            let mut tx = conn
                .begin_with("BEGIN; SET LOCAL enable_seqscan = off")
                .await?;
            let rows: Vec<String> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {due}")))
                    .bind(0i64)
                    .bind(1i64)
                    .fetch_all(&mut *tx)
                    .await?;
            Ok(rows.join("; "))
        }
    }
}

/// A claim of `n` due mails: the due mail must be read through the owed index in order,
/// stopping at the limit, and claimed by id, whatever the planner's statistics say.
pub async fn claim(url: &str, n: u32) -> Result<String, sqlx::Error> {
    let backend = backend(url)?;
    let claim = statements::claim_due(backend);
    match backend {
        Backend::Sqlite => {
            let mut conn = SqliteConnection::connect(url).await?;
            Ok(sqlite_plan(&mut conn, claim, &[0, 0, 0, i64::from(n)])
                .await?
                .join("; "))
        }
        Backend::Postgres => {
            let mut conn = PgConnection::connect(url).await?;
            // As the claim runs.
            let mut tx = conn
                .begin_with("BEGIN; SET LOCAL enable_sort = off")
                .await?;
            let plan: Vec<String> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {claim}")))
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

/// The record of `n` mails sent: the rows must be found through the primary key, whatever
/// the planner's statistics say.
pub async fn mark_sent(url: &str, n: u32) -> Result<String, sqlx::Error> {
    // Mails 1..=n, each on its first attempt, sent at instant 0.
    let sent: Vec<(i64, i64, i64)> = (1..=i64::from(n)).map(|id| (id, 1, 0)).collect();
    match statements::mark_sent(backend(url)?, &sent) {
        statements::MarkSentStatement::Sqlite(sql, binds) => {
            let mut conn = SqliteConnection::connect(url).await?;
            Ok(sqlite_plan(&mut conn, &sql, &binds).await?.join("; "))
        }
        statements::MarkSentStatement::Postgres(sql, (ids, attempts, at)) => {
            let mut conn = PgConnection::connect(url).await?;
            let plan: Vec<String> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                    .bind(ids)
                    .bind(attempts)
                    .bind(at)
                    .fetch_all(&mut conn)
                    .await?;
            Ok(plan.join("; "))
        }
    }
}

/// The record of `n` mails sent as the daemon's recorder runs it on PostgreSQL: on a
/// connection with its session settings, the plan kept for every batch (a generic one).
/// `None` on SQLite, where the pool's connections record.
pub async fn mark_sent_on_record_line(url: &str, n: u32) -> Result<Option<String>, sqlx::Error> {
    if backend(url)? == Backend::Sqlite {
        return Ok(None);
    }
    // PostgreSQL's statement is the same for every batch: its text alone is needed.
    let statements::MarkSentStatement::Postgres(sql, _) =
        statements::mark_sent(Backend::Postgres, &[])
    else {
        unreachable!("asked for PostgreSQL's statement");
    };
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .options(statements::RECORD_LINE_SETTINGS);
    let mut conn = PgConnection::connect_with(&options).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE record AS {sql}")))
        .execute(&mut conn)
        .await?;
    let array = |f: fn(i64) -> i64| {
        let items: Vec<String> = (1..=i64::from(n)).map(|i| f(i).to_string()).collect();
        format!("'{{{}}}'", items.join(","))
    };
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN EXECUTE record({}, {}, {})",
        array(|id| id),
        array(|_| 1),
        array(|_| 0)
    )))
    .fetch_all(&mut conn)
    .await?;
    Ok(Some(plan.join("; ")))
}

/// A console list of mail for `filter`, one an index serves (a subscription, a state): it
/// must read that index, not the table from its newest mail down.
pub async fn console_mails(url: &str, filter: &MailFilter) -> Result<String, sqlx::Error> {
    let backend = backend(url)?;
    let (sql, binds) = statements::console_mails(backend, filter);
    macro_rules! bound {
        ($q:expr) => {{
            let mut q = $q;
            for b in &binds {
                q = match b {
                    statements::Bind::Text(t) => q.bind(t.clone()),
                    statements::Bind::Int(i) => q.bind(*i),
                };
            }
            q
        }};
    }
    match backend {
        Backend::Sqlite => {
            let mut conn = SqliteConnection::connect(url).await?;
            let q = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN {sql}"
            )));
            let rows = bound!(q).fetch_all(&mut conn).await?;
            Ok(rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; "))
        }
        Backend::Postgres => {
            let mut conn = PgConnection::connect(url).await?;
            let q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
            Ok(bound!(q).fetch_all(&mut conn).await?.join("; "))
        }
    }
}

fn backend(url: &str) -> Result<Backend, sqlx::Error> {
    Backend::of_url(url).map_err(|e| sqlx::Error::Configuration(e.into()))
}

/// How SQLite would run `sql` with `binds` bound in order: EXPLAIN QUERY PLAN's steps.
async fn sqlite_plan(
    conn: &mut SqliteConnection,
    sql: &str,
    binds: &[i64],
) -> Result<Vec<String>, sqlx::Error> {
    let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {sql}"
    )));
    for b in binds {
        q = q.bind(*b);
    }
    Ok(q.fetch_all(conn).await?.into_iter().map(|r| r.3).collect())
}
