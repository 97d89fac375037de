//! `run [--once] [--now]`: the daemon, or one poll and delivery of what is owed now.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use super::CliError;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::daemon::{run_daemon, shutdown_signal};
use crate::outbox::Deliverer;
use crate::service;

/// Runs the daemon until a stop signal; with `once`, polls, delivers and prints what it did.
pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    once: bool,
    now: Option<chrono::DateTime<chrono::Utc>>,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let clock: SharedClock = match now {
        Some(t) => Arc::new(crate::clock::ShiftedClock::starting_at(t)),
        None => clock,
    };
    if once {
        let settings = Arc::new(settings);
        let store = service::open_store(&settings).await?;
        let name = settings.worker_instance_name();
        let deliverer = Deliverer::build(settings, store, clock, name)?;
        let polled = crate::service::poll_now(&deliverer).await?;
        let drained = deliverer.drain().await?;
        deliverer.store.close().await;
        writeln!(
            out,
            "polled {}: {} queued, {} skipped, {} renewed, {} ended; \
             delivered {} sent, {} failed, {} to retry later, {} skipped",
            super::count(
                polled.subscriptions as usize,
                "subscription",
                "subscriptions"
            ),
            super::count(polled.mails_queued as usize, "mail", "mails"),
            super::count(polled.reminders_skipped as usize, "reminder", "reminders"),
            polled.renewed,
            polled.ended,
            drained.sent,
            drained.failed,
            drained.retry_later,
            drained.skipped
        )?;
    } else {
        run_daemon(settings, clock, shutdown_signal()).await?;
    }
    Ok(ExitCode::SUCCESS)
}
