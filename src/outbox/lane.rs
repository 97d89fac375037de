//! Send lanes: the outbox is the queue of mail. Each lane of a daemon takes the next batch of
//! due mail from it (`worker.send_batch` at a time), sends it (each mail recorded as the
//! server answers, by the daemon's recorder), and goes on at once
//! while batches come full. When less is due it waits: until the next owed mail comes due,
//! until this process records more, or for `worker.poll_interval` (mail recorded by another
//! process: the CLI, another daemon). A mail needs no queue job of its own, so owing one is a
//! single insert, and a batch costs its claim and a share of the recorder's commits, and no
//! queue traffic.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

use super::Deliverer;
use crate::config::WorkerSettings;
use crate::retry::Backoff;
use crate::store::Backend;

/// Lanes a daemon runs: enough batches in hand to keep `worker.concurrency` mails in flight,
/// plus a few, because a lane's mails hold no send slot while it claims or records its batch,
/// and the slots stay busy only if other lanes have mail waiting meanwhile. SQLite takes two
/// more (claims and records queue at its one write lock, so further lanes only wait there);
/// PostgreSQL four (a claim and a record are round trips to another process). With
/// one mail a batch, one lane per send slot. (Figures: docs/PERFORMANCE.md.)
pub fn lane_count(w: &WorkerSettings, backend: Backend) -> usize {
    let batch = usize::try_from(w.send_batch).unwrap_or(1).max(1);
    let more = match (batch, backend) {
        (1, _) => 0,
        (_, Backend::Sqlite) => 2,
        (_, Backend::Postgres) => 4,
    };
    w.concurrency.div_ceil(batch) + more
}

/// Starts the daemon's lanes, and the prober of its relay breaker; they stop once `stop` is
/// cancelled, each lane after the batch in hand.
pub fn spawn_lanes(deliverer: &Arc<Deliverer>, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    (0..lane_count(&deliverer.settings.worker, deliverer.store.backend()))
        .map(|n| {
            let (deliverer, stop) = (deliverer.clone(), stop.clone());
            tokio::spawn(lane(deliverer, stop).instrument(info_span!("send lane", lane = n)))
        })
        .chain([super::spawn_prober(deliverer, stop.clone())])
        .collect()
}

/// The pause after consecutive store errors: a database that is away is asked again soon but
/// not hammered.
const ERROR_PAUSE: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

async fn lane(deliverer: Arc<Deliverer>, stop: CancellationToken) {
    let w = &deliverer.settings.worker;
    let (batch, poll) = (w.send_batch, w.poll_interval);
    let full = usize::try_from(batch).unwrap_or(usize::MAX);
    let mut errors = 0u32;
    while !stop.is_cancelled() {
        // The relay is down: claim nothing until the prober finds it back.
        if !deliverer.relay.wait_closed(&stop).await {
            break;
        }
        // Listening before the claim: mail recorded while it runs wakes the wait below.
        let woken = deliverer.store.owed_signal().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();

        // Paused by an operator: the flag is in the database, so every daemon holds until
        // it is lifted (a resume in this process wakes the wait at once).
        match deliverer.store.sending_paused().await {
            Ok(true) => {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            Ok(false) => {}
            // The claim below meets the same store and takes the error path.
            Err(e) => warn!(error = %e, "reading the pause flag failed"),
        }

        // The batch is a task of its own, so that one that has begun finishes (and records
        // what the server took) however this lane ends.
        let batch_task = {
            let deliverer = deliverer.clone();
            tokio::spawn(async move { deliverer.deliver_due(batch).await }.in_current_span())
        };
        let wait = match batch_task.await {
            Ok(Ok(taken)) => {
                errors = 0;
                if !taken.is_empty() {
                    deliverer.metrics.job("send", true);
                }
                // `send_batch = 1` keeps one mail per batch: a full batch says nothing of
                // what else is due, so look rather than go on blindly.
                if taken.len() >= full && full > 1 {
                    continue;
                }
                let idle = taken.is_empty();
                match deliverer.store.next_owed_at().await {
                    Ok(Some(at)) => {
                        let until = (at - deliverer.clock.now()).to_std().unwrap_or_default();
                        // Owed now and yet none taken: other daemons hold those rows for the
                        // moment of their claim. Look again shortly, not in a spin.
                        if until.is_zero() && idle {
                            Duration::from_millis(10)
                        } else {
                            until.min(poll)
                        }
                    }
                    Ok(None) => poll,
                    Err(e) => {
                        warn!(error = %e, "looking for owed mail failed; will retry");
                        poll
                    }
                }
            }
            Ok(Err(e)) => {
                deliverer.metrics.job("send", false);
                errors += 1;
                let pause = ERROR_PAUSE.delay(errors);
                warn!(error = %e, retry_in = ?pause, "sending a batch failed; will retry");
                pause
            }
            Err(e) => {
                // A panic in a batch (a bug): its mails' claims run out and they are sent
                // again; the lane goes on.
                deliverer.metrics.job("send", false);
                errors += 1;
                error!(error = %e, "a batch of mail panicked");
                ERROR_PAUSE.delay(errors)
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
    }
}
