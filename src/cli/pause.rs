//! `pause` / `resume`: the switch that holds every daemon's send lanes, stored in the
//! database so that it holds across daemons and restarts; written to the operators' audit.

use std::io::Write;
use std::process::ExitCode;

use super::CliError;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::service;

pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    paused: bool,
    by: Option<String>,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let who = by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let store = service::open_store(&settings).await?;
    let changed =
        service::console::set_paused(&store, paused, &format!("{who} (cli)"), clock.now()).await;
    store.close().await;
    let word = if paused { "paused" } else { "resumed" };
    if changed? {
        writeln!(out, "sending {word}")?;
    } else {
        writeln!(out, "sending was already {word}")?;
    }
    Ok(ExitCode::SUCCESS)
}
