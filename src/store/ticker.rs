//! The timer that wakes a queue's worker to look for jobs nobody announced: retries scheduled
//! for later, jobs pushed by another process.
//!
//! apalis's own `IntervalStrategy` re-arms its timer after a tick without polling the new one,
//! so nothing is set to wake the worker until the next time the queue is polled. When a tick
//! lands while a fetch is in flight (the fetch's answer then comes back empty), that next time
//! is the worker's heartbeat: a retry due in 100 ms waited 10 s, seen on a loaded machine.
//! This one polls the re-armed timer at once, so a wake-up is always pending.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{PollSnapshot, PollStrategy};
use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct Ticker {
    every: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Ticker {
    pub fn new(every: Duration) -> Self {
        Self { every, sleep: None }
    }
}

impl Clone for Ticker {
    /// A clone starts its own timer when first polled.
    fn clone(&self) -> Self {
        Self::new(self.every)
    }
}

impl PollStrategy for Ticker {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let every = self.every;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Re-arm from now (not from the missed deadline: a late poll must not cause a burst),
        // and poll the new timer so that it holds this task's waker.
        sleep.as_mut().reset(Instant::now() + every);
        let _ = sleep.as_mut().poll(cx);
        Poll::Ready(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::task::{ArcWake, waker};

    use super::*;

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);
    impl ArcWake for CountingWaker {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task context whose wake-ups are counted.
    fn counted() -> (Arc<CountingWaker>, std::task::Waker) {
        let counter = Arc::new(CountingWaker::default());
        (counter.clone(), waker(counter))
    }

    async fn woken_within(counter: &CountingWaker, before: usize, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if counter.0.load(Ordering::SeqCst) > before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_tick_leaves_the_next_one_armed() {
        let (counter, w) = counted();
        let mut cx = Context::from_waker(&w);
        let mut ticker = Ticker::new(Duration::from_millis(20));
        let snapshot = PollSnapshot::default();

        assert!(ticker.poll_drive(&mut cx, &snapshot).is_pending());
        assert!(
            woken_within(&counter, 0, Duration::from_secs(5)).await,
            "first tick wakes"
        );
        // The tick is consumed by a poll (as when the worker polls its queue), and then the
        // worker is not polled again: the next tick must still wake it.
        assert_eq!(ticker.poll_drive(&mut cx, &snapshot), Poll::Ready(Some(())));
        let before = counter.0.load(Ordering::SeqCst);
        assert!(
            woken_within(&counter, before, Duration::from_secs(5)).await,
            "the re-armed timer wakes the worker without another poll"
        );
    }

    #[tokio::test]
    async fn a_late_poll_gives_one_tick_not_a_burst() {
        let (_counter, w) = counted();
        let mut cx = Context::from_waker(&w);
        let mut ticker = Ticker::new(Duration::from_millis(500));
        let snapshot = PollSnapshot::default();
        assert!(ticker.poll_drive(&mut cx, &snapshot).is_pending());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(ticker.poll_drive(&mut cx, &snapshot), Poll::Ready(Some(())));
        assert!(ticker.poll_drive(&mut cx, &snapshot).is_pending());
    }
}
