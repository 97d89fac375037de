//! Daemons' heartbeats: one row per running daemon, beaten while it lives, and the claims of
//! one that stopped beating (or whose successor knows it is gone) given back.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::sql::{from_millis, millis};
use super::{Store, StoreError, db};

/// A daemon as its heartbeat row shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonRow {
    /// The claimant named in `outbox.claimed_by`.
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_beat_at: DateTime<Utc>,
}

impl Store {
    /// Writes daemon `d`'s row, beaten at `d.last_beat_at`: inserted if missing (at its
    /// start, or after another daemon took it for dead), else its beat moved on.
    pub async fn beat(&self, d: &DaemonRow) -> Result<(), StoreError> {
        db!(self, |p, stmt| {
            sqlx::query(stmt(
                "INSERT INTO daemons (name, host, pid, version, started_at, last_beat_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                   version = excluded.version, started_at = excluded.started_at,
                   last_beat_at = excluded.last_beat_at",
            ))
            .bind(&d.name)
            .bind(&d.host)
            .bind(i64::from(d.pid))
            .bind(&d.version)
            .bind(millis(d.started_at))
            .bind(millis(d.last_beat_at))
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Every daemon's row, by name.
    pub async fn daemons(&self) -> Result<Vec<DaemonRow>, StoreError> {
        db!(self, |p, stmt| {
            let rows = sqlx::query(stmt(
                "SELECT name, host, pid, version, started_at, last_beat_at FROM daemons
                 ORDER BY name",
            ))
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    let name: String = r.try_get("name")?;
                    let pid: i64 = r.try_get("pid")?;
                    Ok(DaemonRow {
                        pid: u32::try_from(pid).map_err(|_| StoreError::Corrupt {
                            table: "daemons",
                            id: name.clone(),
                            detail: format!("pid {pid} is out of range"),
                        })?,
                        host: r.try_get("host")?,
                        version: r.try_get("version")?,
                        started_at: from_millis(r.try_get("started_at")?),
                        last_beat_at: from_millis(r.try_get("last_beat_at")?),
                        name,
                    })
                })
                .collect()
        })
    }

    /// Takes daemon `name` for dead: removes its row and gives the mails it holds claimed back,
    /// owed at `now` (their attempt stays counted: the server may have taken them). With
    /// `beaten_before`, only if its last beat is still older than that (a beat that lands
    /// meanwhile keeps it alive). Returns the mails given back, or `None` when the daemon was
    /// not taken for dead (no such row, or it beat meanwhile).
    pub async fn bury_daemon(
        &self,
        name: &str,
        beaten_before: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<Option<u64>, StoreError> {
        let released = db!(self, |p, stmt| {
            let mut tx = p.begin().await?;
            // The row goes first: on PostgreSQL its delete waits for (or re-reads after) a
            // concurrent beat, so a daemon that beat meanwhile keeps its claims.
            let gone = sqlx::query(stmt(
                "DELETE FROM daemons WHERE name = ? AND last_beat_at < ?",
            ))
            .bind(name)
            .bind(beaten_before.map_or(i64::MAX, millis))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !gone {
                return Ok(None);
            }
            let released = sqlx::query(stmt(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, claimed_by = NULL,
                   last_error = ?
                 WHERE state = 'sending' AND state IN ('pending', 'sending') AND claimed_by = ?",
            ))
            .bind(millis(now))
            .bind(why)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            released
        });
        if released > 0 {
            self.owed_changed();
        }
        Ok(Some(released))
    }

    /// Removes daemon `name`'s row (it stopped cleanly, holding no claim).
    pub async fn remove_daemon(&self, name: &str) -> Result<(), StoreError> {
        db!(self, |p, stmt| {
            sqlx::query(stmt("DELETE FROM daemons WHERE name = ?"))
                .bind(name)
                .execute(p)
                .await?;
            Ok(())
        })
    }
}
