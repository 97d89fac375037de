//! `pull`: the marketplace's changes feed, read now from the stored cursor.

use std::io::Write;
use std::process::ExitCode;

use super::CliError;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::service;

/// Pulls every page from the stored cursor on and prints what was applied and skipped.
pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    json: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let store = service::open_store(&settings).await?;
    let calendars = settings.calendars()?;
    let report = crate::source::pull(&store, &settings, &calendars, clock.now())
        .await
        .map_err(|e| CliError::Input(e.to_string()))?;
    store.close().await;
    if json {
        super::print_json(out, &report)?;
    } else {
        writeln!(
            out,
            "pulled {}: {}, {}, {}, {} ({} recorded before); {} skipped; cursor {}",
            super::count(report.pages as usize, "page", "pages"),
            super::count(report.resellers as usize, "reseller", "resellers"),
            super::count(report.customers as usize, "customer", "customers"),
            super::count(
                report.subscriptions as usize,
                "subscription",
                "subscriptions"
            ),
            super::count(report.events_recorded as usize, "event", "events"),
            report.events_already_recorded,
            report.skipped.len(),
            report.cursor.as_deref().unwrap_or("-")
        )?;
        for s in &report.skipped {
            writeln!(out, "  skipped {s}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
