//! Recording what became of a batch's mails: the one write that keeps a mail the server took
//! from being sent again.

use std::time::{Duration, Instant};

use tracing::warn;

use super::Deliverer;
use crate::retry::Backoff;
use crate::store::{FinishedAttempt, StoreError};

impl Deliverer {
    /// Records finished attempts in one transaction. The mails may already be with the
    /// server, and only this record keeps them from being sent again once the claim's lease
    /// runs out: so store errors (SQLite still busy after its timeout, a lost connection) are
    /// retried until the lease is nearly over.
    pub(super) async fn record_attempts(
        &self,
        attempts: &[FinishedAttempt],
        claimed: Instant,
    ) -> Result<Vec<bool>, StoreError> {
        let lease = self.settings.worker.sending_lease;
        let give_up = claimed + lease.saturating_sub(lease / 10);
        const WAIT: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut failures = 0;
        loop {
            let wait = WAIT.delay(failures + 1);
            match self.store.finish_attempts(attempts).await {
                Ok(kept) => return Ok(kept),
                Err(e) if Instant::now() + wait < give_up => {
                    warn!(error = %e, retry_in = ?wait, "recording the attempts failed; retrying");
                    tokio::time::sleep(wait).await;
                    failures += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
