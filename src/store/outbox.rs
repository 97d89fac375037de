//! The outbox: the mail owed, keyed by what it is about, which is also the queue of mail.
//! Recording a mail as owed, reading rows and their delivery attempts, and the moves of a
//! claimed row that are not its attempt's end: skipped, given back, or back from an expired
//! claim. Taking rows for sending is in `claim`, recording how an attempt ended in `finish`.
//!
//! Queries for owed rows repeat the `outbox_owed` index's condition, `state IN ('pending',
//! 'sending')`, beside their own `state = ...`: SQLite uses a partial index only when the
//! query names its condition, and otherwise scans the whole outbox, sent mail included.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::sql::{DbRow, from_millis, millis};
use super::{OutboxRow, Store, StoreError, db, rows};

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

/// Records a mail as owed, or with a reason as skipped, unless its key is recorded already;
/// returns the new row's id. Binds: see [`insert_owed`].
pub(super) const INSERT_OWED: &str =
    "INSERT INTO outbox (key, kind, subscription_id, recipients, payload, message_id,
       state, attempts, next_attempt_at, created_at, last_error)
     VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)
     ON CONFLICT (key) DO NOTHING
     RETURNING id";

/// [`INSERT_OWED`] as `$sql` (in the backend's form), bound for the mail `$n` (a
/// [`NewNotification`]) owed from `$now`, or skipped with the reason `$skip` (`Some`): a query
/// of the new row's id. A macro because the query's type is the backend's.
macro_rules! insert_owed {
    ($sql:expr, $n:expr, $skip:expr, $now:expr) => {{
        let n: &$crate::store::NewNotification = $n;
        let skip: Option<&str> = $skip;
        let now = $crate::store::sql::millis($now);
        sqlx::query_scalar::<_, i64>($sql)
            .bind(&n.key)
            .bind(&n.kind)
            .bind(&n.subscription_id)
            .bind(serde_json::to_string(&n.recipients).unwrap_or_else(|_| "[]".into()))
            .bind(n.payload.to_string())
            .bind(&n.message_id)
            .bind(if skip.is_some() { "skipped" } else { "pending" })
            .bind(now)
            .bind(now)
            .bind(skip)
    }};
}
pub(super) use insert_owed;

/// Owes the mail `$n` from `$now` within the transaction `$tx`, or says how the key was
/// recorded before: a `Result<Enqueued, StoreError>`. A macro for the same reason as
/// [`insert_owed`].
macro_rules! owe_in {
    ($tx:expr, $stmt:expr, $n:expr, $now:expr) => {
        async {
            let inserted = insert_owed!($stmt(INSERT_OWED), $n, None, $now)
                .fetch_optional(&mut *$tx)
                .await?;
            Ok::<_, StoreError>(match inserted {
                Some(id) => Enqueued::Created { id },
                None => {
                    let row = sqlx::query($stmt("SELECT id, state FROM outbox WHERE key = ?"))
                        .bind(&$n.key)
                        .fetch_one(&mut *$tx)
                        .await?;
                    let id: i64 = row.try_get("id")?;
                    let state: String = row.try_get("state")?;
                    Enqueued::AlreadyRecorded {
                        id,
                        state: state.parse::<OutboxState>().map_err(|detail| {
                            StoreError::Corrupt {
                                table: "outbox",
                                id: id.to_string(),
                                detail,
                            }
                        })?,
                    }
                }
            })
        }
    };
}
pub(super) use owe_in;

impl Store {
    /// Records a mail as owed, due now. A key already recorded changes nothing.
    pub async fn enqueue_notification(
        &self,
        new: &NewNotification,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StoreError> {
        db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            let result = owe_in!(tx, stmt, new, now).await?;
            tx.commit().await?;
            if matches!(result, Enqueued::Created { .. }) {
                self.owed_changed();
            }
            Ok(result)
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
