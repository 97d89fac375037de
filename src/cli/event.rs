//! `event SUBSCRIPTION EVENT`: a provisioning event recorded, its mail queued once.

use std::io::Write;
use std::process::ExitCode;

use super::{CliError, input_error, usage_error};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::{DownloadUrl, ProvisioningEvent, SubscriptionId};
use crate::service::{self, EventOutcome, ServiceError};

/// The event's arguments, parsed; each error names its argument.
pub(super) fn parse(
    subscription: &str,
    event: &str,
    download_url: Option<String>,
) -> Result<(SubscriptionId, ProvisioningEvent, Option<DownloadUrl>), CliError> {
    let id = SubscriptionId::parse(subscription).map_err(|e| input_error("subscription", e))?;
    let event = ProvisioningEvent::parse(event).map_err(|e| usage_error("event", e))?;
    // The flag goes with `activated` only; the service checks it too, for every caller.
    match (event, &download_url) {
        (ProvisioningEvent::Activated, None) => {
            return Err(usage_error(
                "--download-url",
                "`activated` needs --download-url (an https:// link to the vendor portal)",
            ));
        }
        (e, Some(_)) if e != ProvisioningEvent::Activated => {
            return Err(usage_error(
                "--download-url",
                format!("only goes with the `activated` event, not `{}`", e.as_str()),
            ));
        }
        _ => {}
    }
    let url = download_url
        .map(|u| DownloadUrl::parse(&u))
        .transpose()
        .map_err(|e| input_error("--download-url", e))?;
    Ok((id, event, url))
}

/// Records the event and says whether its mail was queued or had been before.
pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    subscription: String,
    event: String,
    download_url: Option<String>,
    correct: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let (id, event, url) = parse(&subscription, &event, download_url)?;
    let store = service::open_existing_store(&settings).await?;
    let who = correct.then(operator);
    let outcome = match service::record_event_correcting(
        &store,
        &settings,
        clock.now(),
        &id,
        event,
        url.as_ref(),
        who.as_deref(),
    )
    .await
    {
        Ok(outcome) => outcome,
        // A different link without --correct is a usage error: the message says the flag.
        Err(ServiceError::Conflict(msg)) => return Err(CliError::Usage(msg)),
        Err(e) => return Err(e.into()),
    };
    match outcome {
        EventOutcome::Corrected {
            outbox_id,
            key,
            recipients,
            old_url,
        } => writeln!(
            out,
            "corrected the download URL of {} (was {old_url}): corrected activation mail #{outbox_id} ({key}) to {} queued",
            id.as_str(),
            recipients.join(", ")
        )?,
        EventOutcome::Queued {
            outbox_id,
            recipients,
        } => writeln!(
            out,
            "recorded {} for {}: mail #{outbox_id} to {} queued",
            event.as_str(),
            id.as_str(),
            recipients.join(", ")
        )?,
        EventOutcome::AlreadyRecorded { outbox_id, state } => writeln!(
            out,
            "{} for {} was recorded before: mail #{outbox_id} is {state}; nothing new sent",
            event.as_str(),
            id.as_str()
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Who corrects, for the audit: the operator's login as the shell knows it.
fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}
