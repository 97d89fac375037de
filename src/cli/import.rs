//! `import FILE`: resellers, customers and subscriptions from a JSON or CSV file, all or
//! nothing.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{CliError, progress_bar};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::import;
use crate::service;

/// Reads the file, then checks and upserts its rows (see [`service::check_and_upsert`]).
pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    file: PathBuf,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let store = service::open_store(&settings).await?;
    let raw = import::read_file(&file)?;
    let bar = progress_bar(raw.rows() as u64 * 2);
    let calendars = settings.calendars()?;
    let counts =
        service::check_and_upsert(&store, &calendars, &raw, clock.now(), |n| bar.inc(n as u64))
            .await;
    let counts = match counts {
        Ok(c) => c,
        Err(e) => {
            bar.finish_and_clear();
            return Err(e.into());
        }
    };
    bar.finish_and_clear();
    writeln!(
        out,
        "imported {}, {}, {} from {}",
        super::count(counts.resellers as usize, "reseller", "resellers"),
        super::count(counts.customers as usize, "customer", "customers"),
        super::count(
            counts.subscriptions as usize,
            "subscription",
            "subscriptions"
        ),
        file.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
