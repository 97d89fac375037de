//! A book of synthetic subscriptions (ids `BENCH-00000000`…), generated inside the database
//! so that a million rows take seconds: load for the benchmarks and for the tests that need a
//! large book. Written with a connection of its own to the store's database.

use chrono::{DateTime, NaiveDate, Utc};
use renewal_worker::store::Backend;
use sqlx::Connection;

/// Adds `n` synthetic subscriptions of an existing reseller and customer to the database at
/// `url`, `due` of them due at the next poll and the rest not before `later`.
#[allow(clippy::too_many_arguments)]
pub async fn insert_synthetic_subscriptions(
    url: &str,
    reseller: &str,
    customer: &str,
    n: u64,
    due: u64,
    term_start: NaiveDate,
    term_end: NaiveDate,
    later: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let backend = Backend::of_url(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    // The row numbers come first in both forms, so the placeholders keep their order.
    let (seq, id) = match backend {
        Backend::Sqlite => (
            "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?)",
            "printf('BENCH-%08d', i)",
        ),
        Backend::Postgres => (
            "WITH seq(i) AS (SELECT generate_series(0, ? - 1))",
            "'BENCH-' || lpad(i::TEXT, 8, '0')",
        ),
    };
    let sql = format!(
        "{seq}
         INSERT INTO subscriptions (id, reseller_id, customer_id, product_id, plan, billing,
           seats, assigned_licenses, term_start, term_end, auto_renew, notify_email,
           updated_at, next_due_at)
         SELECT {id}, ?, ?, '057O1WW6525L347', 'AutoCAD LT',
           'annual_prepaid', 10, 0, ?, ?, TRUE, NULL, 0,
           CASE WHEN i < ? THEN 0 ELSE ? END
         FROM seq"
    );
    macro_rules! bound {
        ($sql:expr) => {
            sqlx::query(sqlx::AssertSqlSafe($sql))
                .bind(i64::try_from(n).unwrap_or(i64::MAX))
                .bind(reseller)
                .bind(customer)
                .bind(term_start)
                .bind(term_end)
                .bind(i64::try_from(due).unwrap_or(i64::MAX))
                .bind(later.timestamp_millis())
        };
    }
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            bound!(sql).execute(&mut conn).await?;
            conn.close().await
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            bound!(numbered(&sql)).execute(&mut conn).await?;
            conn.close().await
        }
    }
}

/// `sql`'s `?` placeholders as PostgreSQL's `$1`, `$2`, ... (none is quoted here).
fn numbered(sql: &str) -> String {
    let mut parts = sql.split('?');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for (i, part) in parts.enumerate() {
        out.push_str(&format!("${}{part}", i + 1));
    }
    out
}
