//! What the operator's console reads and changes: the outbox filtered and paged by keyset,
//! counts for the overview, the flag that pauses sending, operator actions on mail (each in
//! one transaction with its audit row), and the audit itself.
//!
//! Every read is bounded (a `LIMIT`, a time window or a partial index's few rows): the
//! console must stay quick on a book of a million subscriptions and mails.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;

use super::sql::{DbRow, from_millis, millis, placeholders};
use super::{Backend, OutboxRow, OutboxState, Store, StoreError, db, rows};
use crate::domain::TimeZoneName;

/// Inserts an audit row for `$audit` at `$now` on the executor `$ex`.
macro_rules! insert_audit {
    ($stmt:ident, $ex:expr, $audit:expr, $now:expr) => {{
        let audit: &AuditEntry = $audit;
        sqlx::query($stmt(
            "INSERT INTO operator_audit (at, who, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(millis($now))
        .bind(&audit.who)
        .bind(&audit.action)
        .bind(&audit.target)
        .bind(audit.detail.as_deref())
        .execute($ex)
        .await?;
    }};
}

/// The flag that holds every daemon's send lanes (see [`Store::sending_paused`]).
const PAUSED: &str = "sending_paused";

/// Mails a list page reads at most, newest first below where it starts, when no index
/// narrows its filter (a recipient, a kind, a reseller, a time range): the page then says
/// which ids it searched and goes on below them.
pub const MAIL_SCAN: i64 = 100_000;

/// Which mails a console page or a bulk action is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailFilter {
    pub state: Option<OutboxState>,
    pub kind: Option<String>,
    pub subscription: Option<String>,
    pub reseller: Option<String>,
    /// Part of a recipient's address.
    pub recipient: Option<String>,
    /// Owed at or after this instant.
    pub after: Option<DateTime<Utc>>,
    /// Owed before this instant.
    pub before: Option<DateTime<Utc>>,
}

/// A bound value of a statement assembled from a filter.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Int(i64),
}

impl MailFilter {
    /// Whether an index bounds the mails this filter can match: one subscription's, or the
    /// failed or owed ones (partial indexes). Any other filter is read through the newest
    /// [`MAIL_SCAN`] mails at a time.
    pub fn indexed(&self) -> bool {
        self.subscription.is_some()
            || matches!(
                self.state,
                Some(OutboxState::Failed | OutboxState::Pending | OutboxState::Sending)
            )
    }

    /// The filter's conditions (each ANDed, `TRUE` when none) and their binds, in order.
    fn clause(&self, backend: Backend) -> (String, Vec<Bind>) {
        let mut sql = vec!["1 = 1".to_owned()];
        let mut binds = Vec::new();
        if let Some(s) = self.state {
            // Named as the partial indexes name them, so that SQLite picks them.
            match s {
                OutboxState::Pending | OutboxState::Sending => sql.push(format!(
                    "state = '{}' AND state IN ('pending', 'sending')",
                    s.as_str()
                )),
                _ => sql.push(format!("state = '{}'", s.as_str())),
            }
        }
        if let Some(k) = &self.kind {
            sql.push("kind = ?".into());
            binds.push(Bind::Text(k.clone()));
        }
        if let Some(s) = &self.subscription {
            sql.push(match backend {
                Backend::Sqlite => "subscription_id = ?".into(),
                // PostgreSQL's index by subscription leaves out mail being sent (a claim would
                // add an entry to it for every mail): those few are found by state, each arm
                // through its own index.
                Backend::Postgres => "subscription_id = ?
                    AND (state <> 'sending' OR state = 'sending')"
                    .into(),
            });
            binds.push(Bind::Text(s.clone()));
        }
        if let Some(r) = &self.reseller {
            sql.push(
                "subscription_id IN (SELECT id FROM subscriptions WHERE reseller_id = ?)".into(),
            );
            binds.push(Bind::Text(r.clone()));
        }
        if let Some(r) = &self.recipient {
            sql.push("recipients LIKE ? ESCAPE '\\'".into());
            let escaped = r
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            binds.push(Bind::Text(format!("%{escaped}%")));
        }
        if let Some(t) = self.after {
            sql.push("created_at >= ?".into());
            binds.push(Bind::Int(millis(t)));
        }
        if let Some(t) = self.before {
            sql.push("created_at < ?".into());
            binds.push(Bind::Int(millis(t)));
        }
        (sql.join(" AND "), binds)
    }
}

/// Binds `$binds` to `$q` in order.
macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        q
    }};
}

/// The list page's statement: mails matching `clause` with ids in `[from, to)`, newest
/// first, at most a limit (binds: the clause's, `to`, `from`, the limit).
fn mails_sql(clause: &str) -> String {
    format!(
        "SELECT {} FROM outbox WHERE {clause} AND id < ? AND id >= ? ORDER BY id DESC LIMIT ?",
        rows::OUTBOX_COLUMNS
    )
}

/// The statement [`Store::console_mails`] runs for a filter an index serves (from the
/// newest, a page of 50), in `backend`'s form, with its binds: for plans.
#[doc(hidden)]
pub fn console_mails_statement(backend: Backend, filter: &MailFilter) -> (String, Vec<Bind>) {
    let (clause, mut binds) = filter.clause(backend);
    binds.extend([Bind::Int(i64::MAX), Bind::Int(i64::MIN), Bind::Int(50)]);
    let sql = mails_sql(&clause);
    let sql = match backend {
        Backend::Sqlite => sql,
        Backend::Postgres => super::sql::numbered_placeholders(&sql),
    };
    (sql, binds)
}

/// A page of mails, newest first.
#[derive(Debug, Clone, Default)]
pub struct MailPage {
    pub rows: Vec<OutboxRow>,
    /// The ids searched, `[from, to)`, when the filter is not [`MailFilter::indexed`]: at
    /// most [`MAIL_SCAN`] mails were read.
    pub searched: Option<(i64, i64)>,
    /// Where the next, older page starts (its `before_id`), when there may be one.
    pub older: Option<i64>,
}

/// Mail counted by what operators ask of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MailCounts {
    /// Owed and never tried.
    pub owed: i64,
    pub sending: i64,
    /// Owed again after a failed attempt.
    pub retrying: i64,
    /// Failed for good (dead).
    pub failed: i64,
    /// Sent in the window the overview shows.
    pub sent_recently: i64,
}

/// Who did what to what: one operator action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub who: String,
    pub action: String,
    pub target: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Whether sending is paused, by whom and since when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PauseState {
    pub paused: bool,
    pub by: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// An active subscription's term end and what its cutoff depends on besides, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermEndRow {
    pub subscription_id: String,
    pub term_end: NaiveDate,
    /// The reseller's business-day calendar; `None`: the configured default.
    pub calendar: Option<String>,
    pub timezone: TimeZoneName,
}

impl Store {
    /// Up to `limit` mails matching `filter`, newest first, older than the mail `before_id`
    /// when given (keyset paging: a page costs the same however deep it is). A filter no index
    /// serves reads at most [`MAIL_SCAN`] mails, from `before_id` down, or without it from the
    /// mail owed at `filter.before` (found by id, instants growing with ids) or the newest.
    pub async fn console_mails(
        &self,
        filter: &MailFilter,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<MailPage, StoreError> {
        self.console_mails_scanning(filter, before_id, limit, MAIL_SCAN)
            .await
    }

    /// [`Store::console_mails`], reading at most `scan` mails for a filter no index serves
    /// (tests page through a small outbox with a small one).
    #[doc(hidden)]
    pub async fn console_mails_scanning(
        &self,
        filter: &MailFilter,
        before_id: Option<i64>,
        limit: u32,
        scan: i64,
    ) -> Result<MailPage, StoreError> {
        let (clause, mut binds) = filter.clause(self.backend());
        let mut searched = None;
        if filter.indexed() {
            binds.push(Bind::Int(before_id.unwrap_or(i64::MAX)));
            binds.push(Bind::Int(i64::MIN));
        } else {
            let Some((first, last)) = self.outbox_ids().await? else {
                return Ok(MailPage::default());
            };
            let to = match (before_id, filter.before) {
                (Some(id), _) => id.min(last + 1),
                (None, Some(t)) => self.first_owed_from(t, first, last).await?,
                (None, None) => last + 1,
            };
            let from = to.saturating_sub(scan.max(1)).max(first);
            binds.push(Bind::Int(to));
            binds.push(Bind::Int(from));
            searched = Some((from, to, first));
        }
        binds.push(Bind::Int(i64::from(limit)));
        let rows: Vec<OutboxRow> = db!(self, |p, stmt| {
            let sql = mails_sql(&clause);
            let rows = bind_all!(sqlx::query(stmt(&sql)), binds)
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(rows::outbox_from_row)
                .collect::<Result<_, _>>()?
        });
        let full = rows.len() == usize::try_from(limit).unwrap_or(usize::MAX);
        let older = match (rows.last(), searched) {
            (Some(r), _) if full => Some(r.id),
            (_, Some((from, _, first))) if from > first => Some(from),
            _ => None,
        };
        Ok(MailPage {
            rows,
            searched: searched.map(|(from, to, _)| (from, to)),
            older,
        })
    }

    /// The outbox's first and last ids, if it holds any mail.
    async fn outbox_ids(&self) -> Result<Option<(i64, i64)>, StoreError> {
        db!(self, |p, stmt| {
            // One aggregate each, so that both read one end of the primary key.
            let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(stmt(
                "SELECT (SELECT MIN(id) FROM outbox), (SELECT MAX(id) FROM outbox)",
            ))
            .fetch_one(p)
            .await?;
            Ok(first.zip(last))
        })
    }

    /// The first id in `[first, last]` of a mail owed at or after `t` (`last + 1` when none
    /// is), found by halving on the primary key: mail is owed as its id is given, so instants
    /// grow with ids (up to the odd transaction that commits late; the list page says which
    /// ids it searched, so nothing is hidden, only placed a page lower).
    async fn first_owed_from(
        &self,
        t: DateTime<Utc>,
        first: i64,
        last: i64,
    ) -> Result<i64, StoreError> {
        let t = millis(t);
        let (mut lo, mut hi) = (first, last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let next: Option<(i64, i64)> = db!(self, |p, stmt| {
                sqlx::query_as(stmt(
                    "SELECT id, created_at FROM outbox WHERE id >= ? ORDER BY id LIMIT 1",
                ))
                .bind(mid)
                .fetch_optional(p)
                .await?
            });
            match next {
                Some((id, at)) if at < t => lo = id + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// How many mails match `filter` (at most `cap`, so a count never reads without bound),
    /// and the newest one's id: a bulk action confirmed afterwards is held to the mails
    /// counted (`id <= newest`). Bulk actions are on failed or owed mail, which their partial
    /// indexes bound.
    pub async fn console_count(
        &self,
        filter: &MailFilter,
        cap: u32,
    ) -> Result<(i64, Option<i64>), StoreError> {
        let (clause, mut binds) = filter.clause(self.backend());
        binds.push(Bind::Int(i64::from(cap)));
        db!(self, |p, stmt| {
            let sql = format!(
                "SELECT COUNT(*), MAX(id) FROM
                   (SELECT id FROM outbox WHERE {clause} ORDER BY id DESC LIMIT ?) m"
            );
            let (n, newest): (i64, Option<i64>) = bind_all!(sqlx::query_as(stmt(&sql)), binds)
                .fetch_one(p)
                .await?;
            Ok((n, newest))
        })
    }

    /// The overview's counts; `sent_since` bounds the sent mails counted.
    pub async fn console_counts(
        &self,
        sent_since: DateTime<Utc>,
    ) -> Result<MailCounts, StoreError> {
        db!(self, |p, stmt| {
            let owed: Vec<(String, bool, i64)> = sqlx::query_as(stmt(
                "SELECT state, attempts > 0, COUNT(*) FROM outbox
                 WHERE state IN ('pending', 'sending') GROUP BY state, attempts > 0",
            ))
            .fetch_all(p)
            .await?;
            let failed: i64 =
                sqlx::query_scalar(stmt("SELECT COUNT(*) FROM outbox WHERE state = 'failed'"))
                    .fetch_one(p)
                    .await?;
            let sent: i64 = sqlx::query_scalar(stmt(
                "SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND sent_at IS NOT NULL
                   AND sent_at >= ?",
            ))
            .bind(millis(sent_since))
            .fetch_one(p)
            .await?;
            let mut c = MailCounts {
                failed,
                sent_recently: sent,
                ..MailCounts::default()
            };
            for (state, tried, n) in owed {
                match (state.as_str(), tried) {
                    ("sending", _) => c.sending += n,
                    (_, true) => c.retrying += n,
                    _ => c.owed += n,
                }
            }
            Ok(c)
        })
    }

    /// Mails sent per hour since `since` (truncated to the hour): `(hour start, count)`, hours
    /// without mail left out.
    pub async fn sent_per_hour(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, i64)>, StoreError> {
        const HOUR: i64 = 3_600_000;
        db!(self, |p, stmt| {
            let rows: Vec<(i64, i64)> = sqlx::query_as(stmt(
                "SELECT (sent_at / 3600000) * 3600000 AS hour, COUNT(*) FROM outbox
                 WHERE state = 'sent' AND sent_at IS NOT NULL AND sent_at >= ?
                 GROUP BY (sent_at / 3600000) * 3600000 ORDER BY 1",
            ))
            .bind(millis(since).div_euclid(HOUR) * HOUR)
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().map(|(h, n)| (from_millis(h), n)).collect())
        })
    }

    /// Active subscriptions whose term ends in `[from, to]`, in (term end, id) order, after
    /// `after` when given (keyset paging), at most `limit`.
    pub async fn term_ends_between(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        after: Option<&(NaiveDate, String)>,
        limit: u32,
    ) -> Result<Vec<TermEndRow>, StoreError> {
        let (after_end, after_id) = after.cloned().unwrap_or((from, String::new()));
        db!(self, |p, stmt| {
            type Row = (String, NaiveDate, Option<String>, String, String);
            let rows: Vec<Row> = sqlx::query_as(stmt(
                "SELECT s.id, s.term_end, r.calendar, r.timezone, r.id
                 FROM subscriptions s JOIN resellers r ON r.id = s.reseller_id
                 WHERE s.status = 'active' AND s.term_end >= ? AND s.term_end <= ?
                   AND (s.term_end > ? OR s.id > ?)
                 ORDER BY s.term_end, s.id LIMIT ?",
            ))
            .bind(after_end.max(from))
            .bind(to)
            .bind(after_end)
            .bind(&after_id)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
            rows.into_iter()
                .map(|(subscription_id, term_end, calendar, tz, reseller)| {
                    let timezone = TimeZoneName::parse(&tz).map_err(|e| StoreError::Corrupt {
                        table: "resellers",
                        id: reseller,
                        detail: format!("timezone: {e}"),
                    })?;
                    Ok(TermEndRow {
                        subscription_id,
                        term_end,
                        calendar,
                        timezone,
                    })
                })
                .collect()
        })
    }

    /// The outbox state of each of `keys` that is recorded.
    pub async fn outbox_states(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, OutboxState)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        db!(self, |p, stmt| {
            let sql = format!(
                "SELECT key, state FROM outbox WHERE key IN ({})",
                placeholders(keys.len())
            );
            let mut q = sqlx::query_as::<_, (String, String)>(stmt(&sql));
            for k in keys {
                q = q.bind(k);
            }
            let rows = q.fetch_all(p).await?;
            rows.into_iter()
                .map(|(k, s)| {
                    let state = s.parse().map_err(|detail| StoreError::Corrupt {
                        table: "outbox",
                        id: k.clone(),
                        detail,
                    })?;
                    Ok((k, state))
                })
                .collect()
        })
    }

    /// Whether sending is paused: send lanes ask before each claim.
    pub async fn sending_paused(&self) -> Result<bool, StoreError> {
        Ok(self.pause_state().await?.paused)
    }

    pub async fn pause_state(&self) -> Result<PauseState, StoreError> {
        db!(self, |p, stmt| {
            let row: Option<(String, String, i64)> = sqlx::query_as(stmt(
                "SELECT value, updated_by, updated_at FROM console_flags WHERE name = ?",
            ))
            .bind(PAUSED)
            .fetch_optional(p)
            .await?;
            Ok(match row {
                Some((v, by, at)) if v == "on" => PauseState {
                    paused: true,
                    by: Some(by),
                    since: Some(from_millis(at)),
                },
                _ => PauseState {
                    paused: false,
                    by: None,
                    since: None,
                },
            })
        })
    }

    /// Pauses or resumes sending, with its audit row, in one transaction. Returns whether
    /// the flag changed.
    pub async fn set_sending_paused(
        &self,
        paused: bool,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let value = if paused { "on" } else { "off" };
        let changed = db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            let changed = sqlx::query(stmt(
                "INSERT INTO console_flags (name, value, updated_by, updated_at)
                 VALUES (?, ?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                   updated_by = excluded.updated_by, updated_at = excluded.updated_at
                 WHERE console_flags.value <> excluded.value",
            ))
            .bind(PAUSED)
            .bind(value)
            .bind(&audit.who)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if changed {
                insert_audit!(stmt, &mut *tx, audit, now);
            }
            tx.commit().await?;
            changed
        });
        if changed && !paused {
            self.owed_changed();
        }
        Ok(changed)
    }

    /// Owes again, due now, the failed mails among `ids` (or all failed mails matching
    /// `filter` up to the id `newest`), with one audit row; returns how many.
    pub async fn retry_mails(
        &self,
        target: &MailTarget,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let n = self
            .act_on_mails(
                target,
                OutboxState::Failed,
                "state = 'pending', next_attempt_at = ?, last_error = NULL",
                Bind::Int(millis(now)),
                audit,
                now,
            )
            .await?;
        if n > 0 {
            self.owed_changed();
        }
        Ok(n)
    }

    /// Calls off the owed mails among `ids` (or matching `filter`): they become skipped,
    /// with the operator named as the reason; one audit row. Mail being sent is left alone.
    pub async fn cancel_mails(
        &self,
        target: &MailTarget,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.act_on_mails(
            target,
            OutboxState::Pending,
            "state = 'skipped', last_error = ?",
            Bind::Text(format!("cancelled by {}", audit.who)),
            audit,
            now,
        )
        .await
    }

    async fn act_on_mails(
        &self,
        target: &MailTarget,
        from: OutboxState,
        set: &str,
        set_bind: Bind,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let guard = match from {
            OutboxState::Pending => "state = 'pending' AND state IN ('pending', 'sending')",
            _ => "state = 'failed'",
        };
        let mut binds = vec![set_bind];
        let which = match target {
            MailTarget::Ids(ids) => {
                if ids.is_empty() {
                    return Ok(0);
                }
                binds.extend(ids.iter().map(|i| Bind::Int(*i)));
                format!("id IN ({})", placeholders(ids.len()))
            }
            MailTarget::Matching { filter, newest } => {
                let (clause, fbinds) = filter.clause(self.backend());
                binds.extend(fbinds);
                binds.push(Bind::Int(*newest));
                format!("{clause} AND id <= ?")
            }
        };
        db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            let sql = format!("UPDATE outbox SET {set} WHERE {guard} AND {which}");
            let n = bind_all!(sqlx::query(stmt(&sql)), binds)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n > 0 {
                let audit = AuditEntry {
                    detail: Some(match &audit.detail {
                        Some(d) => format!("{d}; {n} mail(s)"),
                        None => format!("{n} mail(s)"),
                    }),
                    ..audit.clone()
                };
                insert_audit!(stmt, &mut *tx, &audit, now);
            }
            tx.commit().await?;
            Ok(n)
        })
    }

    /// Records an operator action that changes nothing stored by itself (a poll asked for,
    /// a job retried through the queue).
    pub async fn record_audit(
        &self,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        db!(self, |p, stmt| {
            insert_audit!(stmt, p, audit, now);
            Ok(())
        })
    }

    /// The newest audit rows, older than `before_id` when given.
    pub async fn audit(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        db!(self, |p, stmt| {
            let rows = sqlx::query(stmt(
                "SELECT id, at, who, action, target, detail FROM operator_audit
                 WHERE id < ? ORDER BY id DESC LIMIT ?",
            ))
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(AuditRow {
                        id: r.col("id")?,
                        at: from_millis(r.col("at")?),
                        entry: AuditEntry {
                            who: r.try_get("who")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            detail: r.try_get("detail")?,
                        },
                    })
                })
                .collect()
        })
    }

    /// The newest decided disable requests of every subscription, at most `limit`:
    /// `(subscription, decision)`.
    pub async fn recent_disable_requests(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, super::DisableRow)>, StoreError> {
        db!(self, |p, stmt| {
            let rows = sqlx::query(stmt(
                "SELECT id, subscription_id, request_key, requested_by, requested_at, decided_at,
                   via, seen_assigned, seen_term_end, decision, reason, cutoff_at,
                   effective_term_end, renews_once_more
                 FROM disable_requests ORDER BY id DESC LIMIT ?",
            ))
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.col("subscription_id")?,
                        super::disable::disable_from_row(r)?,
                    ))
                })
                .collect()
        })
    }
}

/// Which mails a bulk action is about: some chosen by id, or all matching a filter that
/// were counted (ids up to `newest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTarget {
    Ids(Vec<i64>),
    Matching { filter: MailFilter, newest: i64 },
}
