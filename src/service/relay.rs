//! Whether the running daemons' mail relay is up, as other processes (`jobs`, `check`) can
//! tell: each daemon whose relay breaker is open keeps a row saying so.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ServiceError;
use crate::store::{RelayRecord, Store};

/// The relay as the daemons see it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayReport {
    /// True when no daemon finds its relay down.
    pub up: bool,
    /// The daemons whose relay is down (or on trial after a probe got through).
    pub breakers: Vec<RelayRecord>,
}

impl RelayReport {
    /// One line per daemon whose relay is not up, or "relay: up"; `now` to say for how long.
    pub fn lines(&self, now: DateTime<Utc>) -> Vec<String> {
        if self.breakers.is_empty() {
            return vec!["relay: up (no daemon finds it down)".to_owned()];
        }
        self.breakers
            .iter()
            .map(|b| {
                let down = (now - b.down_since).to_std().unwrap_or_default();
                let down = std::time::Duration::from_secs(down.as_secs());
                format!(
                    "relay: {} for {} ({}, daemon {}, since {}, {} probes failed{}; as of {})",
                    b.state.to_uppercase(),
                    humantime::format_duration(down),
                    b.relay,
                    b.daemon,
                    b.down_since.format("%Y-%m-%d %H:%M:%SZ"),
                    b.probes_failed,
                    b.last_error
                        .as_deref()
                        .map(|e| format!(", last error: {e}"))
                        .unwrap_or_default(),
                    b.updated_at.format("%Y-%m-%d %H:%M:%SZ"),
                )
            })
            .collect()
    }
}

/// Whether the relay is up, as the running daemons found it.
pub async fn relay_status(store: &Store) -> Result<RelayReport, ServiceError> {
    let breakers = store.relay_breakers().await?;
    Ok(RelayReport {
        up: breakers.is_empty(),
        breakers,
    })
}
