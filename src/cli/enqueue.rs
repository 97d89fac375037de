//! `enqueue poll | event | remind | rollover | disable-auto-renew`: work handed to the running
//! daemon(s) through the job queue (or, for an event, its mail through the outbox).

use std::io::Write;
use std::process::ExitCode;

use super::{CliError, EnqueueCommand, event, input_error};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::{EmailAddress, SubscriptionId};
use crate::jobs;
use crate::service::{self, EventOutcome};

/// Queues the job (or the event's mail) and prints what was queued.
pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    job: EnqueueCommand,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    match job {
        EnqueueCommand::Poll => {
            let store = service::open_existing_store(&settings).await?;
            let key = store.enqueue_job(&jobs::poll_job("cli")).await?;
            store.close().await;
            writeln!(out, "queued poll job {key}")?;
        }
        EnqueueCommand::Event {
            subscription,
            event,
            download_url,
        } => {
            let (id, event, url) = event::parse(&subscription, &event, download_url)?;
            let store = service::open_existing_store(&settings).await?;
            let outcome =
                service::record_event(&store, &settings, clock.now(), &id, event, url.as_ref())
                    .await?;
            store.close().await;
            match outcome {
                // The outbox is the mail's queue: a running daemon's send lanes take it from there.
                EventOutcome::Queued { outbox_id, .. } => writeln!(
                    out,
                    "queued mail #{outbox_id} ({}) for {id} in the outbox",
                    event.as_str()
                )?,
                EventOutcome::Corrected { outbox_id, key, .. } => writeln!(
                    out,
                    "queued corrected activation mail #{outbox_id} ({key}) for {id} in the outbox"
                )?,
                EventOutcome::AlreadyRecorded { outbox_id, state } => writeln!(
                    out,
                    "nothing queued: {} for {id} was recorded before (mail #{outbox_id} is {state})",
                    event.as_str()
                )?,
            }
        }
        EnqueueCommand::Remind { subscription } | EnqueueCommand::Rollover { subscription } => {
            let id =
                SubscriptionId::parse(&subscription).map_err(|e| input_error("subscription", e))?;
            let store = service::open_existing_store(&settings).await?;
            service::subscription(&store, &id).await?;
            let key = store
                .enqueue_job(&jobs::poll_subscription_job("cli", Some(id.as_str())))
                .await?;
            store.close().await;
            writeln!(out, "queued poll job {key} for {id}")?;
        }
        EnqueueCommand::DisableAutoRenew {
            subscription,
            requested_by,
            request_id,
        } => {
            let id =
                SubscriptionId::parse(&subscription).map_err(|e| input_error("subscription", e))?;
            let by =
                EmailAddress::parse(&requested_by).map_err(|e| input_error("--requested-by", e))?;
            let store = service::open_existing_store(&settings).await?;
            service::subscription(&store, &id).await?;
            let request = jobs::DisableRequest {
                subscription: id.as_str().to_owned(),
                requested_by: by.as_str().to_owned(),
                requested_at: clock.now(),
                request_key: request_id.unwrap_or_else(|| jobs::new_request_key("queued")),
            };
            let key = store.enqueue_job(&jobs::disable_job(&request)).await?;
            store.close().await;
            writeln!(out, "queued disable-auto-renew job {key} for {id}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
