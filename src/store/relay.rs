//! Relay breakers: while a daemon's relay is down, a row says so, for the processes that are
//! not that daemon (`jobs`, `check`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::sql::{from_millis, millis};
use super::{Store, StoreError, db};

/// A daemon's relay breaker while its relay is not up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayRecord {
    /// The daemon instance (`worker.name` or the host, with its process id).
    pub daemon: String,
    /// Where its mail goes (no secrets: host, port and TLS mode).
    pub relay: String,
    /// "down", or "trial" (a probe got through; sending again to confirm).
    pub state: String,
    pub down_since: DateTime<Utc>,
    pub probes_failed: u32,
    pub last_error: Option<String>,
    /// When the daemon last wrote it (at least at every failed probe).
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Records (or replaces) `r.daemon`'s breaker.
    pub async fn record_relay_breaker(&self, r: &RelayRecord) -> Result<(), StoreError> {
        db!(self, |p, stmt| {
            sqlx::query(stmt(
                "INSERT INTO relay_breakers (daemon, relay, state, down_since, probes_failed,
                   last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (daemon) DO UPDATE SET relay = excluded.relay,
                   state = excluded.state, down_since = excluded.down_since,
                   probes_failed = excluded.probes_failed, last_error = excluded.last_error,
                   updated_at = excluded.updated_at",
            ))
            .bind(&r.daemon)
            .bind(&r.relay)
            .bind(&r.state)
            .bind(millis(r.down_since))
            .bind(i64::from(r.probes_failed))
            .bind(r.last_error.as_deref())
            .bind(millis(r.updated_at))
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// The relay of `daemon` is up again (or the daemon stops).
    pub async fn forget_relay_breaker(&self, daemon: &str) -> Result<(), StoreError> {
        db!(self, |p, stmt| {
            sqlx::query(stmt("DELETE FROM relay_breakers WHERE daemon = ?"))
                .bind(daemon)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// Every daemon's breaker whose relay is not up, the longest down first.
    pub async fn relay_breakers(&self) -> Result<Vec<RelayRecord>, StoreError> {
        db!(self, |p, stmt| {
            let rows = sqlx::query(stmt(
                "SELECT daemon, relay, state, down_since, probes_failed, last_error, updated_at
                 FROM relay_breakers ORDER BY down_since, daemon",
            ))
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(RelayRecord {
                        daemon: r.try_get("daemon")?,
                        relay: r.try_get("relay")?,
                        state: r.try_get("state")?,
                        down_since: from_millis(r.try_get("down_since")?),
                        probes_failed: u32::try_from(r.try_get::<i64, _>("probes_failed")?)
                            .unwrap_or(u32::MAX),
                        last_error: r.try_get("last_error")?,
                        updated_at: from_millis(r.try_get("updated_at")?),
                    })
                })
                .collect()
        })
    }
}
