//! Logging: human-readable or JSON lines on stderr (stdout carries command output), filtered by
//! `RUST_LOG` when set, else by `log.level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Targets capped whatever the filter asks, because of what they would print.
const QUIET: &str = "handlebars=info";

/// `daemon` is false for one-shot commands, whose output is their answer: they log warnings
/// and errors only, unless RUST_LOG asks for more.
pub fn init(settings: &LogSettings, daemon: bool) {
    let level = if daemon {
        settings.level.as_str()
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| {
            // Dependencies are noisy at debug; keep them at warn unless RUST_LOG says otherwise.
            EnvFilter::new(format!("warn,renewal_worker={level}"))
        })
        // Whatever RUST_LOG says: handlebars logs the values it renders at debug, and those
        // are customers' names and addresses.
        .add_directive(
            QUIET
                .parse()
                .unwrap_or_else(|_| unreachable!("a fixed directive")),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Colour codes only for a person at a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (https://no-color.org): in a file or a journal they are noise.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(super::colour(true, None));
        assert!(super::colour(true, Some("".into())));
        assert!(!super::colour(true, Some("1".into())));
        assert!(!super::colour(false, None));
    }
}
