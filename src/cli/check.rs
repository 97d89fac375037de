//! `check [--json]`: whether this installation can work, one line per part with OK or FAIL
//! and the fix; exit code 0 only if every part passes. It runs before any other part of the
//! program is set up, so that a configuration that does not load is one FAIL line too.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{Settings, value_sources};
use crate::service::check::{self, CheckLine};

/// Loads the configuration and runs every check, on a runtime of its own (the settings that
/// size the usual one may not load); prints the report to stdout.
pub fn main(config: Option<&Path>, json: bool) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(config, json, &mut std::io::stdout().lock())),
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every check and prints the report to `out`.
pub async fn run(config: Option<&Path>, json: bool, out: &mut dyn Write) -> ExitCode {
    let lines = all(config).await;
    let printed = if json {
        super::print_json(
            out,
            &serde_json::json!({
                "ok": lines.iter().all(|l| l.ok),
                "checks": lines,
            }),
        )
        .is_ok()
    } else {
        print_lines(out, &lines).is_ok()
    };
    if !printed || lines.iter().any(|l| !l.ok) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn print_lines(out: &mut dyn Write, lines: &[CheckLine]) -> std::io::Result<()> {
    for l in lines {
        let verdict = if l.ok { "OK  " } else { "FAIL" };
        match &l.fix {
            Some(fix) => writeln!(out, "{verdict}  {}: {}; fix: {fix}", l.check, l.detail)?,
            None => writeln!(out, "{verdict}  {}: {}", l.check, l.detail)?,
        }
    }
    Ok(())
}

async fn all(config: Option<&Path>) -> Vec<CheckLine> {
    let loaded = match Settings::load_with_sources(config) {
        Ok(l) => l,
        // Nothing else can be checked without settings.
        Err(e) => {
            return vec![CheckLine::fail(
                "configuration",
                e.to_string(),
                "fix the setting named (defaults and every key: config/default.toml)",
            )];
        }
    };
    let settings = &loaded.settings;
    let mut lines = vec![check::configuration(
        loaded.file.as_deref(),
        &value_sources(&loaded.figment),
    )];
    lines.push(check::database(settings).await);
    lines.push(check::templates(settings));
    lines.push(check::calendars(settings));
    lines.push(check::relay(settings).await);
    lines.push(check::http_bind(settings).await);
    lines.push(source(settings).await);
    lines
}

/// The pulling source answers a request for one row.
async fn source(settings: &Settings) -> CheckLine {
    let Some(url) = &settings.source.url else {
        return CheckLine::pass("source", "off (source.url is empty)");
    };
    let shown = crate::config::redacted_url(url.as_str());
    match crate::source::probe(settings).await {
        Ok(()) => CheckLine::pass("source", format!("{shown} answers with a page")),
        Err(e) => CheckLine::fail(
            "source",
            e.to_string(),
            "check source.url and source.token, and that the marketplace is reachable",
        ),
    }
}
