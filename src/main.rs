use std::process::ExitCode;

use clap::Parser;
use renewal_worker::cli::{self, Cli};
use renewal_worker::config::Settings;
use renewal_worker::telemetry;

/// mimalloc rather than the system's allocator: a mail's rendering and sending allocate
/// hundreds of small buffers, which glibc's malloc serves markedly slower (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<cli::CliError>() {
            // The reader went away (`simulate ... | head`): it has what it wanted.
            Some(cli) if cli.is_closed_pipe() => ExitCode::SUCCESS,
            Some(cli) => {
                eprintln!("error: {e:#}");
                ExitCode::from(cli.exit_code())
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `check` reports a configuration that does not load as one of its lines.
    if let cli::Command::Check { json } = cli.command {
        return Ok(cli::check::main(cli.config.as_deref(), json));
    }
    // The settings come first: they say how many threads the runtime gets.
    let settings = Settings::load(cli.config.as_deref())?;
    let runtime = renewal_worker::runtime(&settings)?;
    runtime.block_on(async {
        telemetry::init(&settings.log, cli.command.is_daemon());
        Ok(cli::dispatch(cli, settings).await?)
    })
}
