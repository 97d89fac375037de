//! Disable requests: each decision on a request to switch auto-renew off, recorded once per
//! request key with the switch-off itself (guarded against a change since the decision) and
//! its mails, and read back for operators.

use chrono::{DateTime, Utc};

use super::outbox::{INSERT_OWED, NewNotification, insert_owed};
use super::sql::{DbRow, FromDbRow, from_millis, millis};
use super::{Store, StoreError, db};

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

impl Store {
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
                let inserted = insert_owed!(stmt(INSERT_OWED), &n, None, now)
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

    /// The decisions whose `filter` column is `value`, oldest first.
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
            rows.iter().map(disable_from_row).collect()
        })
    }

    /// The decision on this request key, if there is one.
    async fn disable_by_key(&self, key: &str) -> Result<Option<DisableRow>, StoreError> {
        Ok(self.disable_rows("request_key", key).await?.pop())
    }

    /// Every decision on the subscription's disable requests, oldest first.
    pub async fn disable_requests(
        &self,
        subscription: &str,
    ) -> Result<Vec<DisableRow>, StoreError> {
        self.disable_rows("subscription_id", subscription).await
    }

    /// Every decision on the disable requests of each of `subscriptions`, in one read per
    /// 500: `(subscription, decision)` in id order.
    pub async fn disable_requests_of(
        &self,
        subscriptions: &[&str],
    ) -> Result<Vec<(String, DisableRow)>, StoreError> {
        self.rows_among(
            |list| {
                format!(
                    "SELECT id, subscription_id, request_key, requested_by, requested_at,
                       decided_at, via, seen_assigned, seen_term_end, decision, reason,
                       cutoff_at, effective_term_end, renews_once_more
                     FROM disable_requests WHERE subscription_id IN ({list}) ORDER BY id"
                )
            },
            subscriptions,
        )
        .await
    }

    /// Ids among these whose auto-renew was disabled by an accepted request (irrevocable).
    pub async fn irrevocably_disabled(&self, ids: &[&str]) -> Result<Vec<String>, StoreError> {
        self.ids_among(
            "SELECT id FROM subscriptions WHERE disable_effective_term_end IS NOT NULL AND",
            ids,
        )
        .await
    }
}

/// A decision with the subscription it is about.
impl FromDbRow for (String, DisableRow) {
    fn from_row(r: &impl DbRow) -> Result<Self, StoreError> {
        Ok((r.col("subscription_id")?, disable_from_row(r)?))
    }
}

/// A `disable_requests` row (the columns [`Store::disable_rows`] selects) as operators see it.
pub(super) fn disable_from_row(r: &impl DbRow) -> Result<DisableRow, StoreError> {
    Ok(DisableRow {
        id: r.col("id")?,
        request_key: r.col("request_key")?,
        requested_by: r.col("requested_by")?,
        requested_at: from_millis(r.col("requested_at")?),
        decided_at: from_millis(r.col("decided_at")?),
        via: r.col("via")?,
        seen_assigned: u32::try_from(r.col::<i64>("seen_assigned")?).unwrap_or(0),
        seen_term_end: r.col("seen_term_end")?,
        decision: r.col("decision")?,
        reason: r.col("reason")?,
        cutoff_at: r.col::<Option<i64>>("cutoff_at")?.map(from_millis),
        effective_term_end: r.col("effective_term_end")?,
        renews_once_more: r.col("renews_once_more")?,
    })
}
