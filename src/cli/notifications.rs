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
        // Columns as wide as their longest value, so long keys keep the table aligned.
        let id_w = rows
            .iter()
            .map(|r| r.id.to_string().len())
            .chain([2])
            .max()
            .unwrap_or(2);
        let key_w = rows
            .iter()
            .map(|r| r.key.chars().count())
            .chain([3])
            .max()
            .unwrap_or(3);
        let line = |id: &str, state: &str, attempts: &str, key: &str, error: &str| {
            format!("{id:>id_w$}  {state:<8}  {attempts:>8}  {key:<key_w$}  {error}")
                .trim_end()
                .to_owned()
        };
        writeln!(
            out,
            "{}",
            line("ID", "STATE", "ATTEMPTS", "KEY", "LAST ERROR")
        )?;
        for r in rows {
            writeln!(
                out,
                "{}",
                line(
                    &r.id.to_string(),
                    r.state.as_str(),
                    &r.attempts.to_string(),
                    &r.key,
                    r.last_error.as_deref().unwrap_or_default()
                )
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
