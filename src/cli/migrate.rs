//! `migrate`: creates or updates the database schema.

use std::io::Write;
use std::process::ExitCode;

use super::CliError;
use crate::config::Settings;
use crate::service;

/// Opens the store, which migrates it, and says where it is.
pub(super) async fn run(settings: Settings, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let store = service::open_store(&settings).await?;
    store.close().await;
    writeln!(
        out,
        "database is up to date: {}",
        crate::config::redacted_url(&settings.database.url)
    )?;
    Ok(ExitCode::SUCCESS)
}
