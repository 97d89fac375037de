//! `simulate --from --to`: every mail the current data would produce, day by day.

use std::io::Write;
use std::process::ExitCode;

use chrono::NaiveDate;

use super::{CliError, progress_bar};
use crate::config::Settings;
use crate::service;

/// Simulates the active subscriptions over the days `from..=to` and prints the mails.
pub(super) async fn run(
    settings: Settings,
    from: NaiveDate,
    to: NaiveDate,
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
    let subs = store.active_subscription_contexts().await?;
    store.close().await;
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
            writeln!(
                out,
                "  {}  {:<12} {:<22} {:<5} term end {}  to {}",
                m.at.format("%H:%MZ"),
                m.subscription,
                m.kind,
                m.offset.as_deref().unwrap_or(""),
                m.term_end,
                m.to
            )?;
        }
        let count = |k: &str| mails.iter().filter(|m| m.kind == k).count();
        let stalled = count("order_stalled");
        write!(
            out,
            "{} mails for {} subscriptions from {from} to {to}: {} reminders, {} renewals, {} ends",
            mails.len(),
            subs.len(),
            count("renewal_reminder"),
            count("subscription_renewed"),
            count("subscription_ended")
        )?;
        if stalled > 0 {
            write!(out, ", {stalled} stalled orders")?;
        }
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}
