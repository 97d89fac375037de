//! Taking owed mail for sending: the claim of a batch of due outbox rows, one statement per
//! backend, and the subscriptions their messages are made from.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::sql::{millis, numbered_placeholders, placeholders, trusted};
use super::{Backend, Db, OutboxRow, Store, StoreError, rows};
use crate::domain::SubscriptionContext;

/// A mail taken for sending, with what its message is made from.
#[derive(Debug)]
pub struct Claimed {
    pub row: OutboxRow,
    /// The subscription with its parties; `None` when it no longer exists.
    pub context: Result<Option<SubscriptionContext>, StoreError>,
}

/// How a claim moves a row on: to sending, its attempt counted, its claimant noted; binds:
/// the worker, the claim's instant (ms).
const CLAIM_SET: &str = "UPDATE outbox SET state = 'sending', attempts = attempts + 1,
       claimed_by = ?, claimed_at = ?";
/// The ids of the owed mails due at an instant, soonest first; binds: the instant (ms), how
/// many. Read through `outbox_owed` in its order (its rows end in the id), stopping at the
/// limit.
const DUE_IDS: &str = "SELECT id FROM outbox
       WHERE state = 'pending' AND state IN ('pending', 'sending') AND next_attempt_at <= ?
       ORDER BY next_attempt_at, id LIMIT ?";
/// [`Store::claim_due`] on SQLite. The rows were read as pending in the same statement: the
/// state test only guards (`+` keeps it off the index choices, so the ids are probed).
static CLAIM_DUE_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{CLAIM_SET} WHERE id IN ({DUE_IDS}) AND +state = 'pending' RETURNING {}",
        rows::OUTBOX_COLUMNS
    )
});
/// [`Store::claim_due`] on PostgreSQL: the claim and the subscriptions of the mails claimed,
/// in one statement. The due rows are locked as they are read, skipping rows other daemons
/// hold; the claim then probes their ids (`= ANY(ARRAY(...))` and `IS TRUE` keep the planner
/// from reading the owed index again to filter by id, which it does when its statistics
/// lag a burst of owed mail).
static CLAIM_DUE_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    numbered_placeholders(&format!(
        "WITH claimed AS (
           {CLAIM_SET}
           WHERE id = ANY(ARRAY({DUE_IDS} FOR UPDATE SKIP LOCKED))
             AND (state = 'pending') IS TRUE
           RETURNING {outbox})
         SELECT claimed.*, {context}
         FROM claimed
         LEFT JOIN subscriptions s ON s.id = claimed.subscription_id
         LEFT JOIN resellers r ON r.id = s.reseller_id
         LEFT JOIN customers c ON c.id = s.customer_id",
        outbox = rows::OUTBOX_COLUMNS,
        context = rows::CONTEXT_COLUMNS,
    ))
});

/// [`Store::claim_due`]'s statement on `backend`, for checking its plan; binds: the worker,
/// the instant (ms) twice, how many.
pub fn claim_due_statement(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => CLAIM_DUE_SQLITE.as_str(),
        Backend::Postgres => CLAIM_DUE_POSTGRES.as_str(),
    }
}

impl Store {
    /// Takes up to `n` owed mails that are due at `now` for sending, the soonest due first:
    /// each moves to sending for its next attempt, claimed by `worker`, and comes with what its
    /// message is made from. A mail is claimed by one taker only: on SQLite the claim is one
    /// statement under the database's write lock; on PostgreSQL rows another daemon has
    /// locked are skipped (`SKIP LOCKED`), so daemons take disjoint batches instead of
    /// waiting on each other. Due is the outbox's instant, to the millisecond.
    ///
    /// On PostgreSQL the claim's commit does not wait for the disk: a database crash that
    /// loses it leaves the mails owed and sent again, just as a crash between a durable claim
    /// and its record does, and the record's durable commit flushes the claim before it (the
    /// log is written in order), so a mail sent is never left unrecorded because of it.
    pub async fn claim_due(
        &self,
        n: u32,
        worker: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut claims = match &self.db {
            Db::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                // One statement, so one write transaction: its read of the due rows cannot be
                // overtaken by another writer, and a busy database is waited for.
                let mut taken = Vec::new();
                for r in sqlx::query(sqlx::AssertSqlSafe(CLAIM_DUE_SQLITE.as_str()))
                    .bind(worker)
                    .bind(millis(now))
                    .bind(millis(now))
                    .bind(i64::from(n))
                    .fetch_all(&mut *conn)
                    .await?
                {
                    taken.push(rows::outbox_from_row(&r)?);
                }
                if taken.is_empty() {
                    return Ok(Vec::new());
                }
                // Their subscriptions, each read once, after the claim: the write lock is
                // held for the claim alone.
                let mut subscriptions: Vec<&str> =
                    taken.iter().map(|r| r.subscription_id.as_str()).collect();
                subscriptions.sort_unstable();
                subscriptions.dedup();
                let mut read = sqlx::query(trusted(rows::context_select(&format!(
                    "WHERE s.id IN ({})",
                    placeholders(subscriptions.len())
                ))));
                for s in &subscriptions {
                    read = read.bind(*s);
                }
                let mut contexts = std::collections::HashMap::new();
                for r in read.fetch_all(&mut *conn).await? {
                    let id: String = r.try_get("s_id")?;
                    contexts.insert(id, rows::context_from_row(&r).map_err(|e| e.to_string()));
                }
                taken
                    .into_iter()
                    .map(|row| {
                        let context = match contexts.get(&row.subscription_id) {
                            None => Ok(None),
                            Some(Ok(ctx)) => Ok(Some(ctx.clone())),
                            Some(Err(detail)) => Err(StoreError::Corrupt {
                                table: "subscriptions",
                                id: row.subscription_id.clone(),
                                detail: detail.clone(),
                            }),
                        };
                        Claimed { row, context }
                    })
                    .collect::<Vec<_>>()
            }
            Db::Postgres(p) => {
                // Sorting off for the read of due mail: right after a burst of owed mail (an
                // import, a backlog) the table's statistics still say the outbox is small, and
                // PostgreSQL would read every pending row to sort them instead of walking
                // the `outbox_owed` index in order and stopping at the limit. Both settings ride along with `BEGIN`, in one round
                // trip; the claim and its subscriptions are one statement.
                let mut tx = p
                    .begin_with(
                        "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL enable_sort = off",
                    )
                    .await?;
                let found = sqlx::query(sqlx::AssertSqlSafe(CLAIM_DUE_POSTGRES.as_str()))
                    .bind(worker)
                    .bind(millis(now))
                    .bind(millis(now))
                    .bind(i64::from(n))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let mut claims = Vec::with_capacity(found.len());
                for r in &found {
                    let row = rows::outbox_from_row(r)?;
                    let context = match r.try_get::<Option<String>, _>("s_id")? {
                        None => Ok(None),
                        Some(_) => rows::context_from_row(r).map(Some),
                    };
                    claims.push(Claimed { row, context });
                }
                claims
            }
        };
        claims.sort_by_key(|c| (c.row.next_attempt_at, c.row.id));
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The claim runs once per batch of mail; reading a whole table there costs time in
    // proportion to every mail ever owed. It must walk the owed index in its order and then
    // probe the ids it found.
    #[tokio::test]
    async fn a_claim_walks_the_owed_index_and_probes_the_ids_it_found() {
        let claim = super::super::sqlite_plan(&CLAIM_DUE_SQLITE).await;
        assert!(
            claim
                .iter()
                .any(|d| d.starts_with("SEARCH outbox USING INTEGER PRIMARY KEY")),
            "{claim:?}"
        );
        assert!(
            claim
                .iter()
                .any(|d| d.starts_with("SEARCH outbox USING COVERING INDEX outbox_owed")),
            "{claim:?}"
        );
        assert!(
            !claim
                .iter()
                .any(|d| d.starts_with("SCAN outbox") || d.contains("TEMP B-TREE")),
            "no whole-table read, no sort: {claim:?}"
        );
    }
}
