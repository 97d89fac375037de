//! Corrected activation links: the corrected mail and its audit row, written together.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::outbox::{INSERT_OWED, insert_owed};
use super::sql::{from_millis, millis};
use super::{NewNotification, Store, StoreError, db};

/// One correction of a subscription's download link, as audited.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UrlCorrection {
    pub subscription_id: String,
    /// The key of the corrected activation mail it owed.
    pub outbox_key: String,
    pub old_url: String,
    pub new_url: String,
    pub corrected_by: String,
    pub corrected_at: DateTime<Utc>,
}

impl Store {
    /// Records the corrected activation mail `new` as owed and audits `correction`, both or
    /// neither; `None` when the mail's key was recorded meanwhile (another correction won).
    pub async fn record_url_correction(
        &self,
        new: &NewNotification,
        correction: &UrlCorrection,
    ) -> Result<Option<i64>, StoreError> {
        db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            let Some(id) = insert_owed!(stmt(INSERT_OWED), new, None, correction.corrected_at)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(None);
            };
            sqlx::query(stmt(
                "INSERT INTO download_url_corrections
                   (subscription_id, outbox_key, old_url, new_url, corrected_by, corrected_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            ))
            .bind(&correction.subscription_id)
            .bind(&correction.outbox_key)
            .bind(&correction.old_url)
            .bind(&correction.new_url)
            .bind(&correction.corrected_by)
            .bind(millis(correction.corrected_at))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.owed_changed();
            Ok(Some(id))
        })
    }

    /// The corrections of a subscription's download link, oldest first.
    pub async fn url_corrections(
        &self,
        subscription: &str,
    ) -> Result<Vec<UrlCorrection>, StoreError> {
        db!(self, |p, stmt| {
            let rows = sqlx::query(stmt(
                "SELECT subscription_id, outbox_key, old_url, new_url, corrected_by, corrected_at
                 FROM download_url_corrections WHERE subscription_id = ? ORDER BY id",
            ))
            .bind(subscription)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(UrlCorrection {
                        subscription_id: r.try_get("subscription_id")?,
                        outbox_key: r.try_get("outbox_key")?,
                        old_url: r.try_get("old_url")?,
                        new_url: r.try_get("new_url")?,
                        corrected_by: r.try_get("corrected_by")?,
                        corrected_at: from_millis(r.try_get("corrected_at")?),
                    })
                })
                .collect()
        })
    }
}
