use std::process::ExitCode;

use clap::Parser;
use renewal_worker::cli::{self, Cli};
use renewal_worker::config::Settings;
use renewal_worker::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(&settings.log, cli.command.is_daemon());
    Ok(cli::dispatch(cli, settings).await?)
}
