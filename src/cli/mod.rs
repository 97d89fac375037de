//! Command line: the argument definitions, and a dispatch that hands each command to its file.
//! Handlers parse their arguments, call [`crate::service`] and print; they build no SQL and
//! send no mail themselves.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod calendar;
pub mod check;
mod disable;
mod enqueue;
mod event;
mod import;
mod jobs;
mod licenses;
mod migrate;
mod notifications;
mod order;
mod pause;
mod pull;
mod render;
mod run;
mod simulate;
mod templates;
mod timeline;

pub use calendar::CalendarCommand;

use crate::calendar::CalendarError;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{ConfigError, Settings};
use crate::import::ImportError;
use crate::jobs::WorkerError;
use crate::service::ServiceError;
use crate::store::StoreError;

#[derive(Debug, Parser)]
#[command(
    name = "renewal-worker",
    version,
    about = "Sends the lifecycle mail of marketplace subscriptions: provisioning notices, renewal reminders, renewals and ends.",
    after_help = "Exit codes: 0 success; 1 error (unknown subscription, database or mail trouble); 2 bad command-line usage or input refused (a bad value, an import file that fails the checks; nothing was written); 3 disable-auto-renew request rejected, or `order-check`: the reseller may not order now."
)]
pub struct Cli {
    /// A TOML file with settings that override config/default.toml (env vars
    /// RENEWAL_WORKER__SECTION__KEY override both).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll for due renewal work on `poll.schedule` and deliver owed mail,
    /// until Ctrl-C / SIGTERM.
    Run {
        /// Poll once, deliver what is owed now, and exit (for cron-style deployments and
        /// rehearsals).
        #[arg(long)]
        once: bool,
        /// Rehearsal: run as if the time were TIMESTAMP (RFC 3339); the clock then moves on
        /// from there. Never use it against a database whose mail goes to customers.
        #[arg(long, value_name = "TIMESTAMP", value_parser = timeline::parse_instant)]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// The job queue: list jobs, show one with its delivery attempts, retry a dead one, purge
    /// finished ones.
    Jobs {
        #[command(subcommand)]
        command: Option<JobsCommand>,
        /// pending | running | done | failed | dead
        #[arg(long, value_parser = ["pending", "running", "done", "failed", "dead"])]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Put a job on the queue for the running daemon(s) to pick up; prints the job's key.
    Enqueue {
        #[command(subcommand)]
        job: EnqueueCommand,
    },
    /// Create or update the database schema, then exit.
    Migrate,
    /// Load resellers, customers and subscriptions from a JSON file (or subscriptions from a
    /// CSV file), as an upsert. Any invalid row rejects the whole file.
    Import {
        /// `.json` with `resellers`, `customers`, `subscriptions`; or `.csv` of subscriptions.
        file: PathBuf,
    },
    /// Record a provisioning event; its mail is sent once, however often it is recorded.
    Event {
        /// Subscription id.
        subscription: String,
        /// ready | order-processed | activated
        event: String,
        /// Link to the vendor portal download; required for `activated`.
        #[arg(long, value_name = "HTTPS_URL")]
        download_url: Option<String>,
        /// Replace a wrong download link recorded before: records the new one (audited) and
        /// sends one corrected activation mail. Without it a different link is refused.
        #[arg(long, requires = "download_url")]
        correct: bool,
    },
    /// Print the mail of KIND the daemon would send for the subscription, from its real data
    /// (the recorded mail of that kind if there is one), without sending or recording anything.
    Render {
        kind: render::KindArg,
        #[arg(long)]
        subscription: String,
        /// Render it as of this instant instead of now (RFC 3339).
        #[arg(long, value_name = "TIMESTAMP", value_parser = timeline::parse_instant)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// Download link to show in an `activated` preview (default: the last one recorded).
        #[arg(long, value_name = "HTTPS_URL")]
        download_url: Option<String>,
        /// Print the raw RFC 5322 message instead of a readable summary.
        #[arg(long)]
        eml: bool,
    },
    /// Set the number of licenses assigned to end users (0..=seats), as the marketplace does
    /// when licenses are un-assigned.
    Licenses {
        subscription: String,
        #[arg(long, value_name = "N")]
        assigned: i64,
    },
    /// Ask to stop a subscription from renewing. Decided on the vendor's rules and final.
    /// Exit code 0: accepted; 3: rejected (licenses still assigned); 1: error.
    DisableAutoRenew {
        subscription: String,
        #[arg(long, value_name = "EMAIL")]
        requested_by: String,
        /// The marketplace's id of the request: the same id is decided once.
        #[arg(long, value_name = "KEY")]
        request_id: Option<String>,
        #[arg(long)]
        json: bool,
        /// Rehearsal: decide as if it were TIMESTAMP (RFC 3339).
        #[arg(long, value_name = "TIMESTAMP", value_parser = timeline::parse_instant)]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Business-day calendar: cutoff dates, stepping, holiday lists.
    Calendar {
        #[command(subcommand)]
        command: CalendarCommand,
    },
    /// The current term of a subscription: term end, cutoff, reminders, and whether auto-renew
    /// can be disabled now (and if not, why).
    Timeline {
        subscription: String,
        /// Show it as of this instant instead of now (RFC 3339, e.g. 2026-12-18T23:59:00-05:00).
        #[arg(long, alias = "now", value_name = "TIMESTAMP", value_parser = timeline::parse_instant)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        json: bool,
    },
    /// Pull changes from the marketplace's feed (`source.url`) now, from the stored cursor.
    Pull {
        #[arg(long)]
        json: bool,
    },
    /// Print, day by day, every mail the current data would produce between two dates
    /// (reminders, renewals, ends, stalled orders), as if the daemon ran throughout. Sends and
    /// records nothing.
    Simulate {
        /// First day (in each reseller's time zone), YYYY-MM-DD.
        #[arg(long, value_parser = calendar::parse_date)]
        from: chrono::NaiveDate,
        /// Last day, included.
        #[arg(long, value_parser = calendar::parse_date)]
        to: chrono::NaiveDate,
        /// Only this subscription.
        #[arg(long)]
        subscription: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Orders: abandon one that will not complete (it is then no longer in flight).
    Order {
        #[command(subcommand)]
        command: OrderCommand,
    },
    /// Whether a reseller may start a new order now (one order in flight per reseller).
    /// Exit code 0: it may; 3: it may not (the order in flight is named); 2: bad input.
    OrderCheck {
        /// Reseller id.
        reseller: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop every daemon on this database from sending: their send lanes claim no new mail
    /// until `resume` (mail being sent finishes). Recorded in the operators' audit.
    Pause {
        /// Who pauses, for the audit (default: the user running the command).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Let the daemons send again after `pause`.
    Resume {
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// List the outbox: every mail owed or sent, with its state.
    Notifications {
        #[arg(long)]
        subscription: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check this installation, one line each with OK or FAIL and the fix: configuration
    /// (where each value came from), database (reachable, migrated), templates, calendars, the
    /// mail relay (connect, EHLO, TLS, AUTH, QUIT; nothing sent), the HTTP address, the pulling
    /// source. Creates and sends nothing. Exit code 0 only if every check passes.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// The mail templates built into the binary.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Write the built-in templates into DIR (created if missing; no file there is
    /// overwritten), as a starting point: point `templates.dir` at DIR and keep only the files
    /// you change.
    Export { dir: PathBuf },
}

impl Command {
    /// Whether this command keeps running (and so logs at the configured level).
    pub fn is_daemon(&self) -> bool {
        matches!(self, Command::Run { .. })
    }
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// One job, with the mail it carries and every delivery attempt (SMTP code and reply).
    Show {
        /// Job id or key.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Put a dead job back to pending (for a mail that failed for good: send it again).
    Retry { id: String },
    /// Delete done jobs finished longer ago than this (e.g. 30d).
    Purge {
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: std::time::Duration,
    },
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not an age like 30d or 12h: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Mark the order of a subscription abandoned (audited): it is no longer in flight, so
    /// its reseller may order again and the watchdog stops. An activated order cannot be.
    Abandon {
        subscription: String,
        /// Why (kept in the audit).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnqueueCommand {
    /// Ask for a poll now (reminders, renewals and ends that are due), besides the schedule.
    Poll,
    /// Record a provisioning event and queue its mail (same as `event`).
    Event {
        subscription: String,
        /// ready | order-processed | activated
        event: String,
        #[arg(long, value_name = "HTTPS_URL")]
        download_url: Option<String>,
    },
    /// Plan one subscription now: the reminder that is due, if any.
    Remind { subscription: String },
    /// Plan one subscription now: its renewal or end, if the term end has come.
    Rollover { subscription: String },
    /// Hand a disable-auto-renew request to the daemon; it is decided as made now.
    DisableAutoRenew {
        subscription: String,
        #[arg(long, value_name = "EMAIL")]
        requested_by: String,
        /// The marketplace's id of the request: the same id is decided once.
        #[arg(long, value_name = "KEY")]
        request_id: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    App(#[from] ServiceError),
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error("{0}")]
    Input(String),
    /// The command line asks for something that does not exist (an unknown event or kind) or
    /// leaves out a flag the command needs: exit code 2, as clap's own usage errors.
    #[error("{0}")]
    Usage(String),
    /// A command-line value refused by its checks (a control character, a malformed id,
    /// URL or address); the message names the argument. Exit code 2.
    #[error("{0}")]
    Refused(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The exit code the README promises for this error: 2 for bad usage and for input
    /// refused for what it holds (nothing was written), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_)
            | Self::Refused(_)
            | Self::Import(_)
            | Self::App(
                ServiceError::Records(_) | ServiceError::Invalid(_) | ServiceError::Licenses(_),
            ) => EXIT_USAGE,
            _ => 1,
        }
    }

    /// Whether the reader of the output went away (`simulate ... | head`): not a failure of
    /// the command, which ends quietly.
    pub fn is_closed_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Exit code of a rejected disable-auto-renew request, and of an order check that says no.
pub const EXIT_REJECTED: u8 = 3;
/// Exit code of bad command-line usage (clap's own, and ours).
pub const EXIT_USAGE: u8 = 2;

/// `n` and the noun that goes with it: "1 subscription", "2 subscriptions".
pub(super) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(super) fn input_error(field: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Refused(format!("{field}: {e}"))
}

pub(super) fn usage_error(field: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("{field}: {e}"))
}

/// Runs one command; what it prints goes to stdout, and its exit code is returned.
pub async fn dispatch(cli: Cli, settings: Settings) -> Result<ExitCode, CliError> {
    let clock: SharedClock = Arc::new(SystemClock);
    let out = &mut std::io::stdout().lock();
    match cli.command {
        Command::Run { once, now } => run::run(settings, clock, once, now, out).await,
        Command::Jobs {
            command,
            status,
            limit,
            json,
        } => jobs::run(settings, clock, command, status, limit, json, out).await,
        Command::Licenses {
            subscription,
            assigned,
        } => licenses::run(settings, subscription, assigned, out).await,
        Command::DisableAutoRenew {
            subscription,
            requested_by,
            request_id,
            json,
            now,
        } => {
            disable::run(
                settings,
                clock,
                subscription,
                requested_by,
                request_id,
                json,
                now,
                out,
            )
            .await
        }
        Command::Enqueue { job } => enqueue::run(settings, clock, job, out).await,
        Command::Migrate => migrate::run(settings, out).await,
        Command::Pause { by } => pause::run(settings, clock, true, by, out).await,
        Command::Resume { by } => pause::run(settings, clock, false, by, out).await,
        Command::Import { file } => import::run(settings, clock, file, out).await,
        Command::Event {
            subscription,
            event,
            download_url,
            correct,
        } => {
            event::run(
                settings,
                clock,
                subscription,
                event,
                download_url,
                correct,
                out,
            )
            .await
        }
        Command::Render {
            kind,
            subscription,
            at,
            download_url,
            eml,
        } => {
            render::run(
                settings,
                clock,
                kind,
                subscription,
                at,
                download_url,
                eml,
                out,
            )
            .await
        }
        Command::Calendar { command } => calendar::command(&settings, &command, out),
        Command::Timeline {
            subscription,
            at,
            json,
        } => timeline::run(settings, clock, subscription, at, json, out).await,
        Command::Pull { json } => pull::run(settings, clock, json, out).await,
        Command::Simulate {
            from,
            to,
            subscription,
            json,
        } => simulate::run(settings, from, to, subscription, json, out).await,
        Command::Order { command } => order::run(settings, clock, command, out).await,
        Command::OrderCheck { reseller, json } => order::check(settings, reseller, json, out).await,
        Command::Notifications { subscription, json } => {
            notifications::run(settings, subscription, json, out).await
        }
        // The binary runs it before settings are loaded (see `check::main`).
        Command::Check { json } => Ok(check::run(cli.config.as_deref(), json, out).await),
        Command::Templates {
            command: TemplatesCommand::Export { dir },
        } => templates::export(&dir, out),
    }
}

/// Prints `value` as pretty JSON, one document followed by a newline.
pub(super) fn print_json(
    out: &mut dyn Write,
    value: &impl serde::Serialize,
) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
    writeln!(out)?;
    Ok(())
}

/// A progress bar on stderr for long imports and simulations, hidden when nobody watches.
pub(super) fn progress_bar(len: u64) -> indicatif::ProgressBar {
    // Only people watching a terminal want a bar; scripts and logs get the summary line.
    if !std::io::stderr().is_terminal() || len < 1000 {
        // (Small jobs finish before a bar would be read.)
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("importing");
    bar
}
