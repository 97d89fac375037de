//! `notifications`: the outbox, every mail owed or sent, with its state.

use std::io::Write;
use std::process::ExitCode;

use super::CliError;
use crate::config::Settings;
use crate::service;

/// Lists the outbox, of one subscription or all.
pub(super) async fn run(
    settings: Settings,
    subscription: Option<String>,
    json: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let store = service::open_existing_store(&settings).await?;
    let rows = store
        .outbox_for_subscription(subscription.as_deref())
        .await?;
    if json {
        super::print_json(out, &rows)?;
    } else {
        writeln!(
            out,
            "{:>6}  {:<8}  {:>8}  {:<30}  LAST ERROR",
            "ID", "STATE", "ATTEMPTS", "KEY"
        )?;
        for r in rows {
            writeln!(
                out,
                "{:>6}  {:<8}  {:>8}  {:<30}  {}",
                r.id,
                r.state.as_str(),
                r.attempts,
                r.key,
                r.last_error.unwrap_or_default()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
