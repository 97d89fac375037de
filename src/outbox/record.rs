//! Recording what became of each mail: the one write that keeps a mail the server took from
//! being sent again. One recorder per daemon (per [`Deliverer`]) commits whatever records are
//! waiting, together, in one transaction (a group commit, as River's job completer does): a
//! mail's record goes into the next commit after the server answered, never waiting for the
//! rest of its batch, and a busy daemon still makes few commits, because records pile up
//! while the previous commit runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, info_span, warn};

use super::{Deliverer, OutboxError};
use crate::retry::Backoff;
use crate::store::{FinishedAttempt, RecordLine, Store, StoreError};

/// The most records one commit takes: every statement stays far under the backends' limits
/// on bound parameters.
const MOST_PER_COMMIT: usize = 256;

/// Whether a record kept its claim (see [`Store::finish_attempts`]), once committed.
pub(super) type Recorded = oneshot::Receiver<Result<bool, Arc<StoreError>>>;

struct Waiting {
    attempt: FinishedAttempt,
    /// When its mail was claimed: its record is retried until its lease is nearly over.
    claimed: Instant,
    done: oneshot::Sender<Result<bool, Arc<StoreError>>>,
}

/// The handle lanes hand records to; the committing task ends when the handle is dropped,
/// after committing what it was given.
#[derive(Debug)]
pub(super) struct Recorder {
    tx: mpsc::UnboundedSender<Waiting>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("outbox_id", &self.attempt.outbox_id)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts the committing task on the current runtime.
    pub(super) fn start(store: Store, lease: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        // A span of its own: it serves every lane, whichever started it.
        tokio::spawn(
            commit_loop(store, lease, rx).instrument(info_span!(parent: None, "recorder")),
        );
        Self { tx }
    }

    /// Hands a finished attempt over for the next commit; the receiver learns whether its
    /// claim was still held. `Err` gives the attempt back when the committing task is gone
    /// (its runtime shut down): the caller records it itself.
    fn submit(
        &self,
        attempt: FinishedAttempt,
        claimed: Instant,
    ) -> Result<Recorded, FinishedAttempt> {
        let (done, recorded) = oneshot::channel();
        self.tx
            .send(Waiting {
                attempt,
                claimed,
                done,
            })
            .map(|()| recorded)
            .map_err(|e| e.0.attempt)
    }
}

async fn commit_loop(store: Store, lease: Duration, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    let mut group: Vec<Waiting> = Vec::new();
    let mut line = RecordLine::default();
    while rx.recv_many(&mut group, MOST_PER_COMMIT).await > 0 {
        let attempts: Vec<FinishedAttempt> = group.iter().map(|w| w.attempt.clone()).collect();
        let claimed = group
            .iter()
            .map(|w| w.claimed)
            .min()
            .unwrap_or_else(Instant::now);
        let result = record_patiently(&store, Some(&mut line), &attempts, claimed, lease).await;
        match result {
            Ok(kept) => {
                for (w, kept) in group.drain(..).zip(kept) {
                    let _ = w.done.send(Ok(kept));
                }
            }
            Err(e) => {
                // Every record of the group shares the failure.
                let e = Arc::new(e);
                for w in group.drain(..) {
                    let _ = w.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Records finished attempts in one transaction. The mails may already be with the server,
/// and only this record keeps them from being sent again once their claim is given back: so
/// store errors (SQLite still busy after its timeout, a lost connection) are retried until the
/// lease of the oldest claim is nearly over.
async fn record_patiently(
    store: &Store,
    mut line: Option<&mut RecordLine>,
    attempts: &[FinishedAttempt],
    claimed: Instant,
    lease: Duration,
) -> Result<Vec<bool>, StoreError> {
    let give_up = claimed + lease.saturating_sub(lease / 10);
    const WAIT: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut failures = 0;
    loop {
        let wait = WAIT.delay(failures + 1);
        match store
            .finish_attempts_on(line.as_deref_mut(), attempts)
            .await
        {
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

impl Deliverer {
    /// Hands one finished attempt to the daemon's recorder (started on first use); await the
    /// receiver for whether its claim was still held.
    pub(super) fn record(&self, attempt: FinishedAttempt, claimed: Instant) -> RecordPending<'_> {
        let lease = self.settings.worker.sending_lease;
        let recorder = self
            .recorder
            .get_or_init(|| Recorder::start(self.store.clone(), lease));
        match recorder.submit(attempt, claimed) {
            Ok(recorded) => RecordPending::Queued(recorded),
            Err(attempt) => RecordPending::Here {
                deliverer: self,
                attempt: Box::new(attempt),
                claimed,
            },
        }
    }
}

/// A record handed over, or to be made here when the recorder is gone.
pub(super) enum RecordPending<'a> {
    Queued(Recorded),
    Here {
        deliverer: &'a Deliverer,
        attempt: Box<FinishedAttempt>,
        claimed: Instant,
    },
}

impl RecordPending<'_> {
    /// Whether the claim was still held when the record committed.
    pub(super) async fn committed(self) -> Result<bool, OutboxError> {
        match self {
            RecordPending::Queued(recorded) => match recorded.await {
                Ok(kept) => Ok(kept?),
                // The committing task ended without an answer: only its runtime shutting down
                // does that, and then nothing awaits this either.
                Err(_) => Err(OutboxError::RecorderStopped),
            },
            RecordPending::Here {
                deliverer,
                attempt,
                claimed,
            } => {
                let lease = deliverer.settings.worker.sending_lease;
                let kept = record_patiently(
                    &deliverer.store,
                    None,
                    std::slice::from_ref(&*attempt),
                    claimed,
                    lease,
                )
                .await?;
                Ok(kept.first().copied().unwrap_or(false))
            }
        }
    }
}
