//! Orders: each provisioning step recorded with its first instant, its mail and its audit row
//! in one transaction; an operator's abandon; which order of a reseller is in flight.
//!
//! Every write here first touches the reseller's row: on PostgreSQL that row lock makes two
//! steps of one reseller's orders wait for each other, so the second sees the first in flight
//! (and is flagged as overlapping); on SQLite the write takes the database's write lock before
//! anything is read, so the reads cannot go stale before the transaction's writes.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::outbox::{INSERT_OWED, NewNotification, insert_owed, owe_in};
use super::sql::{DbRow, FromDbRow, from_millis, millis};
use super::{Enqueued, OutboxState, Store, StoreError, db, rows};
use crate::domain::{Provisioning, ProvisioningEvent};

/// The flag of a step that came while another order of the same reseller was in flight.
pub const OVERLAPPING_ORDER: &str = "overlapping_order";

/// What recording a provisioning step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecorded {
    /// The step's mail.
    pub mail: Enqueued,
    /// False when this step was recorded before (its first instant stays).
    pub first_time: bool,
    /// The reseller's other order in flight when this step came, if any: the step is audited
    /// with the flag [`OVERLAPPING_ORDER`].
    pub overlapping: Option<String>,
}

/// An order in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderInFlight {
    pub subscription: String,
    pub provisioning: Provisioning,
}

/// What an abandon did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abandoned {
    Done,
    /// Nothing written: no such subscription.
    UnknownSubscription,
    /// Nothing written: the order is activated, which is final.
    Activated {
        at: DateTime<Utc>,
    },
    /// Nothing written: it was abandoned before.
    AlreadyAbandoned {
        at: DateTime<Utc>,
    },
    /// Nothing written: nothing of an order was ever recorded for it.
    NoOrder,
}

/// One audit row of an order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProvisioningAuditRow {
    pub id: i64,
    pub subscription_id: String,
    pub reseller_id: String,
    pub action: String,
    pub at: DateTime<Utc>,
    pub via: String,
    pub reason: Option<String>,
    pub flag: Option<String>,
    pub overlapping: Option<String>,
}

const PROVISIONING_COLUMNS: &str = "id, provisioning_opened_at, ready_at, order_processed_at, \
     activated_at, order_abandoned_at, order_abandon_reason, order_in_flight";

const LOCK_RESELLER: &str = "UPDATE resellers SET updated_at = updated_at
     WHERE id = (SELECT reseller_id FROM subscriptions WHERE id = ?)";

fn step_column(step: ProvisioningEvent) -> &'static str {
    match step {
        ProvisioningEvent::Ready => "ready_at",
        ProvisioningEvent::OrderProcessed => "order_processed_at",
        ProvisioningEvent::Activated => "activated_at",
    }
}

impl Store {
    /// Records a provisioning step of `subscription` at `now` (its first instant is kept if it
    /// came before), owes its mail, and audits it the first time, flagged if another order of
    /// the reseller is in flight. Makes the subscription due, so the poll plans its watchdog
    /// anew. `None`: no such subscription (nothing written).
    pub async fn record_provisioning_step(
        &self,
        subscription: &str,
        step: ProvisioningEvent,
        via: &str,
        mail: &NewNotification,
        now: DateTime<Utc>,
    ) -> Result<Option<StepRecorded>, StoreError> {
        let column = step_column(step);
        let recorded = db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            let locked = sqlx::query(stmt(LOCK_RESELLER))
                .bind(subscription)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if locked == 0 {
                return Ok(None);
            }
            let row = sqlx::query(stmt(&format!(
                "SELECT reseller_id, {column} AS step_at FROM subscriptions WHERE id = ?"
            )))
            .bind(subscription)
            .fetch_one(&mut *tx)
            .await?;
            let reseller: String = row.try_get("reseller_id")?;
            let first_time = row.try_get::<Option<i64>, _>("step_at")?.is_none();
            let overlapping: Option<String> = sqlx::query_scalar(stmt(
                "SELECT id FROM subscriptions
                 WHERE reseller_id = ? AND order_in_flight = TRUE AND id <> ?
                 ORDER BY id LIMIT 1",
            ))
            .bind(&reseller)
            .bind(subscription)
            .fetch_optional(&mut *tx)
            .await?;
            let in_flight = match step {
                ProvisioningEvent::Activated => "FALSE",
                _ => "(activated_at IS NULL AND order_abandoned_at IS NULL)",
            };
            sqlx::query(stmt(&format!(
                "UPDATE subscriptions SET {column} = COALESCE({column}, ?),
                   order_in_flight = {in_flight}, next_due_at = 0
                 WHERE id = ?"
            )))
            .bind(millis(now))
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
            let enqueued = owe_in!(tx, stmt, mail, now).await?;
            let overlapping = overlapping.filter(|_| first_time);
            if first_time {
                sqlx::query(stmt(
                    "INSERT INTO provisioning_audit (subscription_id, reseller_id, action, at, via,
                       reason, flag, overlapping)
                     VALUES (?, ?, ?, ?, ?, NULL, ?, ?)",
                ))
                .bind(subscription)
                .bind(&reseller)
                .bind(step.key())
                .bind(millis(now))
                .bind(via)
                .bind(overlapping.as_ref().map(|_| OVERLAPPING_ORDER))
                .bind(overlapping.as_deref())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(Some(StepRecorded {
                mail: enqueued,
                first_time,
                overlapping,
            }))
        })?;
        if matches!(
            recorded,
            Some(StepRecorded {
                mail: Enqueued::Created { .. },
                ..
            })
        ) {
            self.owed_changed();
        }
        Ok(recorded)
    }

    /// Marks the order of `subscription` abandoned (it is then no longer in flight), with the
    /// operator's reason, audited; or says why nothing was written.
    pub async fn abandon_order(
        &self,
        subscription: &str,
        reason: &str,
        via: &str,
        now: DateTime<Utc>,
    ) -> Result<Abandoned, StoreError> {
        db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            let locked = sqlx::query(stmt(LOCK_RESELLER))
                .bind(subscription)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if locked == 0 {
                return Ok(Abandoned::UnknownSubscription);
            }
            let row = sqlx::query(stmt(&format!(
                "SELECT reseller_id, {PROVISIONING_COLUMNS} FROM subscriptions WHERE id = ?"
            )))
            .bind(subscription)
            .fetch_one(&mut *tx)
            .await?;
            let reseller: String = row.try_get("reseller_id")?;
            let order = rows::provisioning_from_row(&row)?;
            if let Some(at) = order.activated_at {
                return Ok(Abandoned::Activated { at });
            }
            if let Some(at) = order.abandoned_at {
                return Ok(Abandoned::AlreadyAbandoned { at });
            }
            if order.last_step().is_none() && !order.in_flight {
                return Ok(Abandoned::NoOrder);
            }
            sqlx::query(stmt(
                "UPDATE subscriptions SET order_abandoned_at = ?, order_abandon_reason = ?,
                   order_in_flight = FALSE, next_due_at = 0
                 WHERE id = ?",
            ))
            .bind(millis(now))
            .bind(reason)
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
            sqlx::query(stmt(
                "INSERT INTO provisioning_audit (subscription_id, reseller_id, action, at, via,
                   reason, flag, overlapping)
                 VALUES (?, ?, 'abandoned', ?, ?, ?, NULL, NULL)",
            ))
            .bind(subscription)
            .bind(&reseller)
            .bind(millis(now))
            .bind(via)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Abandoned::Done)
        })
    }

    /// The reseller's order in flight (the first by subscription id if, bypassing the check,
    /// there are several).
    pub async fn order_in_flight(
        &self,
        reseller: &str,
    ) -> Result<Option<OrderInFlight>, StoreError> {
        db!(self, |p, stmt| {
            let row = sqlx::query(stmt(&format!(
                "SELECT {PROVISIONING_COLUMNS} FROM subscriptions
                 WHERE reseller_id = ? AND order_in_flight = TRUE ORDER BY id LIMIT 1"
            )))
            .bind(reseller)
            .fetch_optional(p)
            .await?;
            row.map(|r| {
                Ok(OrderInFlight {
                    subscription: r.col("id")?,
                    provisioning: rows::provisioning_from_row(&r)?,
                })
            })
            .transpose()
        })
    }

    /// The audit of one subscription's order, oldest first.
    pub async fn provisioning_audit(
        &self,
        subscription: &str,
    ) -> Result<Vec<ProvisioningAuditRow>, StoreError> {
        self.provisioning_audits(&[subscription]).await
    }

    /// The provisioning audit of each of `subscriptions`, in one read per 500: rows in id
    /// order, each naming its subscription.
    pub async fn provisioning_audits(
        &self,
        subscriptions: &[&str],
    ) -> Result<Vec<ProvisioningAuditRow>, StoreError> {
        self.rows_among(
            |list| {
                format!(
                    "SELECT id, subscription_id, reseller_id, action, at, via, reason, flag,
                       overlapping
                     FROM provisioning_audit WHERE subscription_id IN ({list}) ORDER BY id"
                )
            },
            subscriptions,
        )
        .await
    }

    /// Provisioning steps recorded while another order of the same reseller was in flight.
    pub async fn overlapping_orders(&self) -> Result<i64, StoreError> {
        db!(self, |p, stmt| {
            Ok(sqlx::query_scalar(stmt(
                "SELECT COUNT(*) FROM provisioning_audit WHERE flag = 'overlapping_order'",
            ))
            .fetch_one(p)
            .await?)
        })
    }

    /// Whether the reseller exists.
    pub async fn reseller_exists(&self, reseller: &str) -> Result<bool, StoreError> {
        Ok(!self
            .ids_among("SELECT id FROM resellers WHERE", &[reseller])
            .await?
            .is_empty())
    }
}

impl FromDbRow for ProvisioningAuditRow {
    fn from_row(r: &impl DbRow) -> Result<Self, StoreError> {
        audit_from_row(r)
    }
}

fn audit_from_row(r: &impl DbRow) -> Result<ProvisioningAuditRow, StoreError> {
    Ok(ProvisioningAuditRow {
        id: r.col("id")?,
        subscription_id: r.col("subscription_id")?,
        reseller_id: r.col("reseller_id")?,
        action: r.col("action")?,
        at: from_millis(r.col("at")?),
        via: r.col("via")?,
        reason: r.col("reason")?,
        flag: r.col("flag")?,
        overlapping: r.col("overlapping")?,
    })
}
