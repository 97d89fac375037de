//! `licenses SUBSCRIPTION --assigned N`: the licenses assigned to end users.

use std::io::Write;
use std::process::ExitCode;

use super::{CliError, input_error};
use crate::config::Settings;
use crate::domain::SubscriptionId;
use crate::service::{self, ServiceError};

/// Sets the assigned licenses and prints the change.
pub(super) async fn run(
    settings: Settings,
    subscription: String,
    assigned: i64,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let id = SubscriptionId::parse(&subscription).map_err(|e| input_error("subscription", e))?;
    let store = service::open_existing_store(&settings).await?;
    let change = match service::set_assigned_licenses(&store, &id, assigned).await {
        Err(ServiceError::Licenses(e)) => return Err(input_error("--assigned", e)),
        other => other?,
    };
    store.close().await;
    writeln!(
        out,
        "{}: assigned licenses {} -> {} (of {} seats)",
        id, change.previous, change.assigned, change.seats
    )?;
    Ok(ExitCode::SUCCESS)
}
