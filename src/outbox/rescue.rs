//! Crash recovery: mail claimed by a daemon that died goes back to owed.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Deliverer, OutboxError};

/// Gives back expired claims every `worker.redrive_interval` until `stop` is cancelled.
pub fn spawn_rescuer(deliverer: &Arc<Deliverer>, stop: CancellationToken) -> JoinHandle<()> {
    let deliverer = deliverer.clone();
    let every = deliverer.settings.worker.redrive_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = deliverer.redrive().await {
                        warn!(error = %e, "checking claims failed; will retry");
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
    })
}

impl Deliverer {
    /// Crash recovery: mails claimed longer than `worker.sending_lease` ago are owed again
    /// (see [`Store::expire_claims`]). Returns how many.
    pub async fn redrive(&self) -> Result<u64, OutboxError> {
        let expired = self
            .store
            .expire_claims(self.clock.now(), self.settings.worker.sending_lease)
            .await?;
        if expired > 0 {
            warn!(count = expired, "claims expired; mail will be sent again");
        }
        Ok(expired)
    }
}
