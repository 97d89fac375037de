//! `disable-auto-renew SUBSCRIPTION`: a request to stop a subscription renewing, decided now
//! on the vendor's rules; exit code 3 when rejected.

use std::io::Write;
use std::process::ExitCode;

use super::{CliError, EXIT_REJECTED, input_error};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::SubscriptionId;
use crate::jobs;
use crate::service::{self, DisableOutcome};

/// Decides and records the request, and prints the decision.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    subscription: String,
    requested_by: String,
    request_id: Option<String>,
    json: bool,
    now: Option<chrono::DateTime<chrono::Utc>>,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let id = SubscriptionId::parse(&subscription).map_err(|e| input_error("subscription", e))?;
    let by = crate::domain::EmailAddress::parse(&requested_by)
        .map_err(|e| input_error("--requested-by", e))?;
    let key = request_id.unwrap_or_else(|| jobs::new_request_key("cli"));
    let store = service::open_existing_store(&settings).await?;
    let calendars = settings.calendars()?;
    let at = now.unwrap_or_else(|| clock.now());
    let outcome =
        service::request_disable(&store, &settings, &calendars, &id, &by, at, at, "cli", &key)
            .await?;
    store.close().await;
    if json {
        super::print_json(out, &outcome)?;
    } else {
        writeln!(out, "{}", describe_disable(&outcome))?;
    }
    if !outcome.accepted() {
        return Ok(ExitCode::from(EXIT_REJECTED));
    }
    Ok(ExitCode::SUCCESS)
}

/// The decision as operators read it.
fn describe_disable(o: &DisableOutcome) -> String {
    let end = o
        .effective_term_end
        .map(|d| d.to_string())
        .unwrap_or_default();
    if o.repeated {
        return format!(
            "accepted before (request #{}): auto-renew of {} is off and it ends on {end}; a request cannot be revoked",
            o.request_id, o.subscription
        );
    }
    match (o.decision.as_str(), o.reason.as_deref()) {
        ("rejected", _) => format!(
            "rejected: {} still assigned to users on {}; un-assign them first, then ask again",
            super::count(o.assigned_licenses as usize, "license is", "licenses are"),
            o.subscription
        ),
        (_, Some("after_cutoff")) => format!(
            "accepted for the next term: the cutoff ({}) has passed, so {} renews once more and ends on {end}",
            o.cutoff_at.as_deref().unwrap_or("?"),
            o.subscription
        ),
        (_, Some("already_disabled")) => format!(
            "auto-renew of {} was already off; it ends on {end}",
            o.subscription
        ),
        _ => format!(
            "accepted: {} will not renew; it ends on {end}, paid until then, no refunds",
            o.subscription
        ),
    }
}
