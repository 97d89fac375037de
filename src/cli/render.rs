//! `render KIND --subscription`: the mail that would be sent, rendered as it would go out;
//! nothing is sent or recorded.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use super::{CliError, input_error, usage_error};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::{DownloadUrl, SubscriptionId};
use crate::notify::{
    ActivatedFacts, MailFacts, NotificationKind, address_list, provisioning_key, stalled_key,
};
use crate::outbox::Deliverer;
use crate::service;

/// Renders the mail of `kind` for the subscription: readable, or the raw message with `eml`.
pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    kind: String,
    subscription: String,
    download_url: Option<String>,
    eml: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let kind = NotificationKind::parse(&kind).map_err(|e| usage_error("kind", e))?;
    let id = SubscriptionId::parse(&subscription).map_err(|e| input_error("--subscription", e))?;
    let url = download_url
        .map(|u| DownloadUrl::parse(&u))
        .transpose()
        .map_err(|e| input_error("--download-url", e))?;
    let store = service::open_existing_store(&settings).await?;
    let ctx = service::subscription(&store, &id).await?;
    let key = match kind {
        // The watchdog's mail about the order's current step, if it was recorded.
        NotificationKind::OrderStalled => {
            stalled_key(id.as_str(), ctx.subscription.provisioning.state().as_str())
        }
        _ => provisioning_key(id.as_str(), kind),
    };
    let recorded = store.outbox_by_key(&key).await?;
    // A given download URL is previewed with any kind, as it would be recorded for
    // `activated`; only that kind's templates show it.
    let details = match (url, &recorded) {
        (Some(u), _) => MailFacts::Activated(ActivatedFacts { download_url: u }),
        (None, Some(row)) => {
            MailFacts::parse(kind, &row.payload).map_err(|e| CliError::Input(e.to_string()))?
        }
        (None, None) => MailFacts::sample(kind),
    };
    let recipients = address_list(&kind.addressees(&ctx, &settings.marketplace));
    let settings = Arc::new(settings);
    let deliverer = Deliverer::build(settings, store, clock, "preview".into())?;
    let (mail, message) = deliverer
        .compose(kind, &ctx, details, &recipients, &key)
        .map_err(CliError::Input)?;
    if eml {
        out.write_all(&message.formatted())?;
    } else {
        writeln!(out, "To: {}", recipients.join(", "))?;
        writeln!(out, "Subject: {}", mail.subject)?;
        writeln!(out, "Message-ID: {}", mail.message_id)?;
        writeln!(out, "\n--- text/plain ---\n{}", mail.text.trim_end())?;
        writeln!(out, "\n--- text/html ---\n{}", mail.html.trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}
