//! `order abandon SUBSCRIPTION --reason TEXT` and `order-check RESELLER`: an operator's
//! abandon of an order that will not complete, and whether a reseller may start a new order
//! now (exit code 3 when it may not). Bad input exits 2, naming the argument and its value.

use std::io::Write;
use std::process::ExitCode;

use super::{CliError, EXIT_REJECTED, OrderCommand, usage_error as bad};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::{ResellerId, SubscriptionId};
use crate::service::{self, ServiceError};

pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    command: OrderCommand,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    match command {
        OrderCommand::Abandon {
            subscription,
            reason,
        } => {
            let id = SubscriptionId::parse(&subscription).map_err(|e| bad("subscription", e))?;
            let store = service::open_store(&settings).await?;
            let done = service::abandon_order(&store, &id, &reason, "cli", clock.now()).await;
            store.close().await;
            match done {
                Ok(()) => {
                    writeln!(
                        out,
                        "order of {} abandoned: no longer in flight; its reseller may order again",
                        id.as_str()
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(ServiceError::Field { field, message }) => {
                    Err(bad(&format!("--{field}"), message))
                }
                Err(e @ (ServiceError::UnknownSubscription(_) | ServiceError::Conflict(_))) => {
                    Err(bad("subscription", e))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Prints whether the reseller may order now; exit code 3 when it may not.
pub(super) async fn check(
    settings: Settings,
    reseller: String,
    json: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let id = ResellerId::parse(&reseller).map_err(|e| bad("reseller", e))?;
    let store = service::open_store(&settings).await?;
    let check = service::order_check(&store, &id).await;
    store.close().await;
    let check = match check {
        Ok(c) => c,
        Err(e @ ServiceError::UnknownReseller(_)) => return Err(bad("reseller", e)),
        Err(e) => return Err(e.into()),
    };
    if json {
        super::print_json(out, &check)?;
    } else {
        match &check.in_flight {
            None => writeln!(out, "{} may start a new order: none in flight", id.as_str())?,
            Some(f) => writeln!(
                out,
                "{} may not start a new order: {} is in flight, {}{}",
                id.as_str(),
                f.subscription,
                f.state,
                f.since
                    .map(|t| format!(
                        " since {}",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                    .unwrap_or_default()
            )?,
        }
    }
    Ok(if check.can_order {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REJECTED)
    })
}
