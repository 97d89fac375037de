//! Source cursors: where each pulling source left off, so that the next pull resumes there.

use chrono::{DateTime, Utc};

use super::sql::millis;
use super::{Store, StoreError, db};

impl Store {
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
}
