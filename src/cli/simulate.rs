//! `simulate --from --to`: every mail the current data would produce, day by day.

use std::io::Write;
use std::process::ExitCode;

use chrono::NaiveDate;

use super::{CliError, count, input_error, progress_bar};
use crate::config::Settings;
use crate::domain::SubscriptionId;
use crate::service;

/// Simulates the active subscriptions over the days `from..=to` and prints the mails.
pub(super) async fn run(
    settings: Settings,
    from: NaiveDate,
    to: NaiveDate,
    subscription: Option<String>,
    json: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    if to < from {
        return Err(CliError::Input(format!(
            "--to {to} is before --from {from}"
        )));
    }
    let store = service::open_existing_store(&settings).await?;
    let calendars = settings.calendars()?;
    let mut subs = store.active_subscription_contexts().await?;
    store.close().await;
    if let Some(wanted) = &subscription {
        let id = SubscriptionId::parse(wanted).map_err(|e| input_error("--subscription", e))?;
        subs.retain(|c| c.subscription.id == id);
        if subs.is_empty() {
            return Err(CliError::Input(format!(
                "--subscription: no active subscription {:?}",
                id.as_str()
            )));
        }
    }
    let bar = progress_bar(subs.len() as u64);
    bar.set_message("simulating");
    let mails = service::simulate(&subs, &settings, &calendars, from, to, || bar.inc(1))?;
    bar.finish_and_clear();
    if json {
        super::print_json(out, &mails)?;
    } else {
        let mut day = None;
        for m in &mails {
            if day != Some(m.local_date) {
                writeln!(out, "{}", m.local_date.format("%a %Y-%m-%d"))?;
                day = Some(m.local_date);
            }
            // The reseller's local time, as `timeline` shows it.
            writeln!(
                out,
                "  {}  {:<12} {:<22} {:<5} term end {}  to {}",
                m.local_at,
                m.subscription,
                m.kind,
                m.offset.as_deref().unwrap_or(""),
                m.term_end,
                m.to
            )?;
        }
        let of = |k: &str| mails.iter().filter(|m| m.kind == k).count();
        let stalled = of("order_stalled");
        write!(
            out,
            "{} for {} from {from} to {to}: {}, {}, {}",
            count(mails.len(), "mail", "mails"),
            count(subs.len(), "subscription", "subscriptions"),
            count(of("renewal_reminder"), "reminder", "reminders"),
            count(of("subscription_renewed"), "renewal", "renewals"),
            count(of("subscription_ended"), "end", "ends")
        )?;
        if stalled > 0 {
            write!(
                out,
                ", {}",
                count(stalled, "stalled order", "stalled orders")
            )?;
        }
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}
