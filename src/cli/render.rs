//! `render KIND --subscription S [--at INSTANT]`: the mail the daemon would send, rendered
//! through the send lanes' own path (facts, context, templates, message); nothing is sent or
//! recorded.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use clap::builder::PossibleValue;

use super::{CliError, input_error};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::{DownloadUrl, SubscriptionId};
use crate::notify::NotificationKind;
use crate::outbox::Deliverer;
use crate::service;

/// A kind of mail as the command line names it (`order-processed`, or `order_processed`):
/// every kind there is, so `--help` lists each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindArg(pub NotificationKind);

/// Each kind with its dashed name, made once: clap wants them for the life of the program.
static KINDS: LazyLock<Vec<(KindArg, &'static str)>> = LazyLock::new(|| {
    NotificationKind::ALL
        .into_iter()
        .map(|k| {
            let dashed: &'static str = Box::leak(k.as_str().replace('_', "-").into_boxed_str());
            (KindArg(k), dashed)
        })
        .collect()
});
static VARIANTS: LazyLock<Vec<KindArg>> = LazyLock::new(|| KINDS.iter().map(|k| k.0).collect());

impl clap::ValueEnum for KindArg {
    fn value_variants<'a>() -> &'a [Self] {
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let (_, dashed) = KINDS.iter().find(|(k, _)| k == self)?;
        let mut value = PossibleValue::new(*dashed);
        if *dashed != self.0.as_str() {
            value = value.alias(self.0.as_str());
        }
        Some(value)
    }
}

/// Renders the mail of `kind` for the subscription as of `at` (default now): readable, or the
/// raw message with `eml`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    kind: KindArg,
    subscription: String,
    at: Option<DateTime<Utc>>,
    download_url: Option<String>,
    eml: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let kind = kind.0;
    let id = SubscriptionId::parse(&subscription).map_err(|e| input_error("--subscription", e))?;
    let url = download_url
        .map(|u| DownloadUrl::parse(&u))
        .transpose()
        .map_err(|e| input_error("--download-url", e))?;
    let at = at.unwrap_or_else(|| clock.now());
    let store = service::open_existing_store(&settings).await?;
    let deliverer = Deliverer::build(Arc::new(settings), store, clock, "preview".into())?;
    let preview = service::preview(&deliverer, &id, kind, at, url.as_ref()).await?;
    if eml {
        out.write_all(&preview.message.formatted())?;
    } else {
        let mail = &preview.mail;
        let source = match &preview.recorded {
            Some((id, state)) => format!("mail #{id} ({state})"),
            None => format!(
                "not recorded; worked out as of {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        };
        writeln!(out, "Key: {} ({source})", preview.key)?;
        writeln!(out, "To: {}", preview.recipients.join(", "))?;
        if !mail.cc.is_empty() {
            let cc: Vec<String> = mail.cc.iter().map(ToString::to_string).collect();
            writeln!(out, "Cc: {}", cc.join(", "))?;
        }
        writeln!(out, "Subject: {}", mail.subject)?;
        writeln!(out, "Message-ID: {}", mail.message_id)?;
        writeln!(out, "\n--- text/plain ---\n{}", mail.text.trim_end())?;
        writeln!(out, "\n--- text/html ---\n{}", mail.html.trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}
