//! What every table's statements share: instants as milliseconds, placeholders in each
//! backend's form, SQL marked as assembled from constants, and reading a column of a row of
//! either backend.

use chrono::{DateTime, Utc};
use sqlx::Row;

/// An instant as stored: milliseconds since the epoch.
pub(super) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored instant back; one out of range reads as the earliest instant.
pub(super) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Marks SQL assembled in this module from constant fragments (column lists, guards,
/// placeholders): never from input, which is always bound.
pub(super) fn trusted(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// `n` placeholders, comma-separated, for an `IN (...)` list.
pub(super) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `?` placeholders as PostgreSQL wants them: `$1`, `$2`, ... in order. Question marks inside
/// quoted literals are left alone.
pub(super) fn numbered_placeholders(sql: &str) -> String {
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

/// A column value readable on every backend.
pub(super) trait Col: Sized {
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
pub(super) trait DbRow {
    fn col<T: Col>(&self, col: &str) -> Result<T, sqlx::Error>;
}

/// A value made from one result row of either backend (see [`Store::rows_among`]).
///
/// [`Store::rows_among`]: super::Store::rows_among
pub(super) trait FromDbRow: Sized {
    fn from_row(r: &impl DbRow) -> Result<Self, super::StoreError>;
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

    #[test]
    fn numbered_placeholders_skip_quoted_question_marks() {
        assert_eq!(
            numbered_placeholders("SELECT ? WHERE a = '?' AND b IN (?, ?)"),
            "SELECT $1 WHERE a = '?' AND b IN ($2, $3)"
        );
    }
}
