//! The marketplace's records: resellers, customers and subscriptions. Writing them (an
//! import, a license count, a subscription made due), reading a subscription with its
//! parties, and the poll's side: the due subscriptions and applying what it decided for them.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::outbox::{NewNotification, insert_owed};
use super::sql::{FromDbRow, millis, numbered_placeholders, placeholders};
use super::{Backend, Store, StoreError, db, rows};
use crate::domain::SubscriptionId;
use crate::domain::{Customer, Reseller, Subscription, SubscriptionContext};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportCounts {
    pub resellers: usize,
    pub customers: usize,
    pub subscriptions: usize,
}

/// What a license-count update saw, for callers that must order it against other writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LicenseUpdate {
    pub previous: u32,
    pub auto_renew_was_on: bool,
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

/// The poll's query: due subscriptions with their parties, read through the next-due index;
/// binds: the instant (ms), how many.
static DUE_CONTEXTS: LazyLock<String> = LazyLock::new(|| {
    rows::context_select(
        "WHERE s.status = 'active' AND s.next_due_at <= ? ORDER BY s.next_due_at LIMIT ?",
    )
});

/// [`Store::due_subscription_contexts`]'s statement on `backend`, for checking its plan.
pub fn due_contexts_statement(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => DUE_CONTEXTS.clone(),
        Backend::Postgres => numbered_placeholders(&DUE_CONTEXTS),
    }
}

impl Store {
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
                    "INSERT INTO resellers (id, name, email, csn, timezone, calendar, contact_name,
                   updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
                   csn = excluded.csn, timezone = excluded.timezone,
                   calendar = excluded.calendar, contact_name = excluded.contact_name,
                   updated_at = excluded.updated_at",
                ))
                .bind(r.id.as_str())
                .bind(&r.name)
                .bind(r.email.as_str())
                .bind(r.csn.as_ref().map(|c| c.as_str()))
                .bind(r.timezone.as_str())
                .bind(r.calendar.as_deref())
                .bind(r.contact_name.as_deref())
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
                if s.open_order {
                    // Opens the order only if nothing was ever recorded of it: a second
                    // "pending" (a re-import) neither restarts nor reopens it.
                    sqlx::query(stmt(
                        "UPDATE subscriptions SET provisioning_opened_at = ?, order_in_flight = TRUE
                         WHERE id = ? AND provisioning_opened_at IS NULL AND ready_at IS NULL
                           AND order_processed_at IS NULL AND activated_at IS NULL
                           AND order_abandoned_at IS NULL",
                    ))
                    .bind(now)
                    .bind(s.id.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
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
        self.ids_among("SELECT id FROM resellers WHERE", ids).await
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

    /// The ids among `ids` that `select` finds: `select` is a query of ids up to its `WHERE`
    /// and any conditions joined by `AND`, to which `id IN (...)` is added. Asked 500 at a
    /// time, under every backend's limit on parameters.
    pub(super) async fn ids_among(
        &self,
        select: &str,
        ids: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        db!(self, |p, stmt| {
            let mut found = Vec::new();
            for chunk in ids.chunks(500) {
                let sql = format!("{select} id IN ({})", placeholders(chunk.len()));
                let mut q = sqlx::query_scalar::<_, String>(stmt(&sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                found.extend(q.fetch_all(p).await?);
            }
            Ok(found)
        })
    }

    /// The rows `select` reads for `ids`, in one read per 500: `select` is given the list of
    /// placeholders for its `IN (...)`; each row becomes a `T`.
    pub(super) async fn rows_among<T: FromDbRow>(
        &self,
        select: impl Fn(&str) -> String,
        ids: &[&str],
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            db!(self, |p, stmt| {
                let mut q = sqlx::query(stmt(&select(&placeholders(chunk.len()))));
                for id in chunk {
                    q = q.bind(*id);
                }
                for r in q.fetch_all(p).await? {
                    out.push(T::from_row(&r)?);
                }
            });
        }
        Ok(out)
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

    /// The subscriptions among `ids` that exist, with their parties, in one read per 500 (in
    /// no particular order).
    pub async fn subscription_contexts(
        &self,
        ids: &[&str],
    ) -> Result<Vec<SubscriptionContext>, StoreError> {
        self.rows_among(
            |list| rows::context_select(&format!("WHERE s.id IN ({list})")),
            ids,
        )
        .await
    }

    /// The subscription with this id and its parties, as stored (checked when written).
    pub async fn subscription_context(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionContext>, StoreError> {
        db!(self, |p, stmt| {
            let row = sqlx::query(stmt(&rows::context_select("WHERE s.id = ?")))
                .bind(id.as_str())
                .fetch_optional(p)
                .await?;
            row.map(|r| rows::context_from_row(&r)).transpose()
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
            let insert = sqlx::SqlSafeStr::into_sql_str(stmt(super::outbox::INSERT_OWED));
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
                    let inserted = insert_owed!(insert.clone(), n, skip.as_deref(), now)
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
}
