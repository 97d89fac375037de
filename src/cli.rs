//! Command line: argument definitions and their handlers. Handlers call the application layer;
//! they build no SQL and send no mail themselves.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod calendar;
mod timeline;

pub use calendar::CalendarCommand;

use crate::app::Deliverer;
use crate::calendar::CalendarError;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{ConfigError, Settings};
use crate::domain::{DownloadUrl, ProvisioningEvent, SubscriptionId};
use crate::import::{self, ImportError};
use crate::jobs::{self, WorkerError};
use crate::notify::{NotificationKind, provisioning_key};
use crate::service::{self as app, EventOutcome, ServiceError as AppError};
use crate::store::StoreError;

#[derive(Debug, Parser)]
#[command(
    name = "renewal-worker",
    version,
    about = "Sends the lifecycle mail of marketplace subscriptions: provisioning notices, renewal reminders, renewals and ends.",
    after_help = "Exit codes: 0 success; 1 error (bad input, unknown subscription, database or mail trouble); 2 bad command-line usage; 3 disable-auto-renew request rejected."
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
    },
    /// Print the mail that would be sent, without sending or recording anything.
    Render {
        /// ready | order-processed | activated
        kind: String,
        #[arg(long)]
        subscription: String,
        /// Download link to show in an `activated` preview (default: the recorded one, else a
        /// sample).
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
    /// (reminders, renewals, ends), as if the daemon ran throughout. Sends and records nothing.
    Simulate {
        /// First day (in each reseller's time zone), YYYY-MM-DD.
        #[arg(long, value_parser = calendar::parse_date)]
        from: chrono::NaiveDate,
        /// Last day, included.
        #[arg(long, value_parser = calendar::parse_date)]
        to: chrono::NaiveDate,
        #[arg(long)]
        json: bool,
    },
    /// List the outbox: every mail owed or sent, with its state.
    Notifications {
        #[arg(long)]
        subscription: Option<String>,
        #[arg(long)]
        json: bool,
    },
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
    App(#[from] AppError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error("{0}")]
    Input(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Exit code of a rejected disable-auto-renew request.
pub const EXIT_REJECTED: u8 = 3;

fn describe_disable(o: &app::DisableOutcome) -> String {
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
            "rejected: {} licenses are still assigned to users on {}; un-assign them first, then ask again",
            o.assigned_licenses, o.subscription
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

fn input_error(field: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Input(format!("{field}: {e}"))
}

pub async fn dispatch(cli: Cli, settings: Settings) -> Result<ExitCode, CliError> {
    let clock: SharedClock = Arc::new(SystemClock);
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Run { once, now } => {
            let clock: SharedClock = match now {
                Some(t) => Arc::new(crate::clock::ShiftedClock::starting_at(t)),
                None => clock,
            };
            if once {
                let settings = Arc::new(settings);
                let store = app::open_store(&settings).await?;
                let name = settings.worker_instance_name();
                let deliverer = Deliverer::build(settings, store, clock, name)?;
                let polled = deliverer.poll().await?;
                let drained = deliverer.drain().await?;
                deliverer.store.close().await;
                writeln!(
                    out,
                    "polled {} subscriptions: {} mails queued, {} reminders skipped, {} renewed, {} ended; \
                     delivered {} sent, {} failed, {} to retry later, {} skipped",
                    polled.subscriptions,
                    polled.mails_queued,
                    polled.reminders_skipped,
                    polled.renewed,
                    polled.ended,
                    drained.sent,
                    drained.failed,
                    drained.retry_later,
                    drained.skipped
                )?;
            } else {
                run_daemon(settings, clock, shutdown_signal()).await?;
            }
        }
        Command::Jobs {
            command,
            status,
            limit,
            json,
        } => {
            let store = app::open_store(&settings).await?;
            let listing = JobListing {
                status,
                limit,
                json,
                mail_attempts: settings.mail.retry.max_attempts,
            };
            let code = jobs_command(&store, command, listing, clock.now(), &mut out).await?;
            store.close().await;
            return Ok(code);
        }
        Command::Licenses {
            subscription,
            assigned,
        } => {
            let id =
                SubscriptionId::parse(&subscription).map_err(|e| input_error("subscription", e))?;
            let store = app::open_store(&settings).await?;
            let change = match app::set_assigned_licenses(&store, &id, assigned).await {
                Err(AppError::Licenses(e)) => return Err(input_error("--assigned", e)),
                other => other?,
            };
            store.close().await;
            writeln!(
                out,
                "{}: assigned licenses {} -> {} (of {} seats)",
                id, change.previous, change.assigned, change.seats
            )?;
        }
        Command::DisableAutoRenew {
            subscription,
            requested_by,
            request_id,
            json,
            now,
        } => {
            let id =
                SubscriptionId::parse(&subscription).map_err(|e| input_error("subscription", e))?;
            let by = crate::domain::EmailAddress::parse(&requested_by)
                .map_err(|e| input_error("--requested-by", e))?;
            let key = request_id.unwrap_or_else(|| jobs::new_request_key("cli"));
            let store = app::open_store(&settings).await?;
            let calendars = settings.calendars()?;
            let at = now.unwrap_or_else(|| clock.now());
            let outcome =
                app::request_disable(&store, &settings, &calendars, &id, &by, at, at, "cli", &key)
                    .await?;
            store.close().await;
            if json {
                serde_json::to_writer_pretty(&mut out, &outcome).map_err(std::io::Error::other)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", describe_disable(&outcome))?;
            }
            if !outcome.accepted() {
                return Ok(ExitCode::from(EXIT_REJECTED));
            }
        }
        Command::Enqueue { job } => match job {
            EnqueueCommand::Poll => {
                let store = app::open_store(&settings).await?;
                let key = store.enqueue_job(&jobs::poll_job("cli")).await?;
                store.close().await;
                writeln!(out, "queued poll job {key}")?;
            }
            EnqueueCommand::Event {
                subscription,
                event,
                download_url,
            } => {
                let id = SubscriptionId::parse(&subscription)
                    .map_err(|e| input_error("subscription", e))?;
                let event =
                    ProvisioningEvent::parse(&event).map_err(|e| input_error("event", e))?;
                let url = download_url
                    .map(|u| DownloadUrl::parse(&u))
                    .transpose()
                    .map_err(|e| input_error("--download-url", e))?;
                let store = app::open_store(&settings).await?;
                let outcome =
                    app::record_event(&store, &settings, clock.now(), &id, event, url.as_ref())
                        .await?;
                store.close().await;
                match outcome {
                    EventOutcome::Queued { outbox_id, .. } => writeln!(
                        out,
                        "queued send job send:{outbox_id} for mail #{outbox_id}"
                    )?,
                    EventOutcome::AlreadyRecorded { outbox_id, state } => writeln!(
                        out,
                        "nothing queued: {} for {id} was recorded before (mail #{outbox_id} is {state})",
                        event.as_str()
                    )?,
                }
            }
            EnqueueCommand::Remind { subscription } | EnqueueCommand::Rollover { subscription } => {
                let id = SubscriptionId::parse(&subscription)
                    .map_err(|e| input_error("subscription", e))?;
                let store = app::open_store(&settings).await?;
                if store.subscription_context(&id).await?.is_none() {
                    return Err(AppError::UnknownSubscription(id.as_str().to_owned()).into());
                }
                let key = store
                    .enqueue_job(&jobs::poll_subscription_job("cli", Some(id.as_str())))
                    .await?;
                store.close().await;
                writeln!(out, "queued poll job {key} for {id}")?;
            }
            EnqueueCommand::DisableAutoRenew {
                subscription,
                requested_by,
                request_id,
            } => {
                let id = SubscriptionId::parse(&subscription)
                    .map_err(|e| input_error("subscription", e))?;
                let by = crate::domain::EmailAddress::parse(&requested_by)
                    .map_err(|e| input_error("--requested-by", e))?;
                let store = app::open_store(&settings).await?;
                if store.subscription_context(&id).await?.is_none() {
                    return Err(AppError::UnknownSubscription(id.as_str().to_owned()).into());
                }
                let request = jobs::DisableRequest {
                    subscription: id.as_str().to_owned(),
                    requested_by: by.as_str().to_owned(),
                    requested_at: clock.now(),
                    request_key: request_id.unwrap_or_else(|| jobs::new_request_key("queued")),
                };
                let key = store.enqueue_job(&jobs::disable_job(&request)).await?;
                store.close().await;
                writeln!(out, "queued disable-auto-renew job {key} for {id}")?;
            }
        },
        Command::Migrate => {
            let store = app::open_store(&settings).await?;
            store.close().await;
            writeln!(
                out,
                "database is up to date: {}",
                crate::config::redacted_url(&settings.database.url)
            )?;
        }
        Command::Import { file } => {
            let store = app::open_store(&settings).await?;
            let raw = import::read_file(&file)?;
            let bar = progress_bar(raw.rows() as u64 * 2);
            let calendars = settings.calendars()?;
            let counts =
                app::check_and_upsert(&store, &calendars, &raw, clock.now(), |n| bar.inc(n as u64))
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
                "imported {} resellers, {} customers, {} subscriptions from {}",
                counts.resellers,
                counts.customers,
                counts.subscriptions,
                file.display()
            )?;
        }
        Command::Event {
            subscription,
            event,
            download_url,
        } => {
            let id =
                SubscriptionId::parse(&subscription).map_err(|e| input_error("subscription", e))?;
            let event = ProvisioningEvent::parse(&event).map_err(|e| input_error("event", e))?;
            let url = download_url
                .map(|u| DownloadUrl::parse(&u))
                .transpose()
                .map_err(|e| input_error("--download-url", e))?;
            let store = app::open_store(&settings).await?;
            let outcome =
                app::record_event(&store, &settings, clock.now(), &id, event, url.as_ref()).await?;
            match outcome {
                EventOutcome::Queued {
                    outbox_id,
                    recipients,
                } => writeln!(
                    out,
                    "recorded {} for {}: mail #{outbox_id} to {} queued",
                    event.as_str(),
                    id.as_str(),
                    recipients.join(", ")
                )?,
                EventOutcome::AlreadyRecorded { outbox_id, state } => writeln!(
                    out,
                    "{} for {} was recorded before: mail #{outbox_id} is {state}; nothing new sent",
                    event.as_str(),
                    id.as_str()
                )?,
            }
        }
        Command::Render {
            kind,
            subscription,
            download_url,
            eml,
        } => {
            let kind = NotificationKind::parse(&kind).map_err(|e| input_error("kind", e))?;
            let id = SubscriptionId::parse(&subscription)
                .map_err(|e| input_error("--subscription", e))?;
            let url = download_url
                .map(|u| DownloadUrl::parse(&u))
                .transpose()
                .map_err(|e| input_error("--download-url", e))?;
            let store = app::open_store(&settings).await?;
            let ctx = store
                .subscription_context(&id)
                .await?
                .ok_or_else(|| AppError::UnknownSubscription(id.as_str().to_owned()))?;
            let key = provisioning_key(id.as_str(), kind);
            let recorded = store.outbox_by_key(&key).await?;
            let details = match (url, &recorded) {
                (Some(u), _) => serde_json::json!({"download_url": u.as_str()}),
                (None, Some(row)) => row.payload.clone(),
                (None, None) => kind.sample_details(),
            };
            let recipients: Vec<String> = kind
                .recipients(&ctx)
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect();
            let settings = Arc::new(settings);
            let deliverer = Deliverer::build(settings, store, clock, "preview".into())?;
            let (mail, message) = deliverer
                .compose(kind, &ctx, details, &recipients, &key)
                .map_err(CliError::Input)?;
            if eml {
                out.write_all(&message.formatted())?;
            } else {
                writeln!(out, "To: {}", recipients.join(", "))?;
                writeln!(out, "Subject: {}", mail.subject)?;
                writeln!(out, "Message-ID: {}", mail.message_id)?;
                writeln!(out, "\n--- text/plain ---\n{}", mail.text.trim_end())?;
                writeln!(out, "\n--- text/html ---\n{}", mail.html.trim_end())?;
            }
        }
        Command::Calendar { command } => {
            let registry = settings.calendars()?;
            calendar::run(
                &command,
                &registry,
                &settings.calendar.default,
                settings.renewal.cutoff_business_days,
                &mut out,
            )?;
        }
        Command::Timeline {
            subscription,
            at,
            json,
        } => {
            let id =
                SubscriptionId::parse(&subscription).map_err(|e| input_error("subscription", e))?;
            let store = app::open_store(&settings).await?;
            let calendars = settings.calendars()?;
            let at = at.unwrap_or_else(|| clock.now());
            let report =
                app::timeline::timeline_report(&store, &settings, &calendars, &id, at).await?;
            store.close().await;
            timeline::render(&report, json, &mut out)?;
        }
        Command::Pull { json } => {
            let store = app::open_store(&settings).await?;
            let calendars = settings.calendars()?;
            let report = crate::source::pull(&store, &settings, &calendars, clock.now())
                .await
                .map_err(|e| CliError::Input(e.to_string()))?;
            store.close().await;
            if json {
                serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::other)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "pulled {} pages: {} resellers, {} customers, {} subscriptions, {} events ({} recorded before); {} skipped; cursor {}",
                    report.pages,
                    report.resellers,
                    report.customers,
                    report.subscriptions,
                    report.events_recorded,
                    report.events_already_recorded,
                    report.skipped.len(),
                    report.cursor.as_deref().unwrap_or("-")
                )?;
                for s in &report.skipped {
                    writeln!(out, "  skipped {s}")?;
                }
            }
        }
        Command::Simulate { from, to, json } => {
            if to < from {
                return Err(CliError::Input(format!(
                    "--to {to} is before --from {from}"
                )));
            }
            let store = app::open_store(&settings).await?;
            let calendars = settings.calendars()?;
            let subs = store.active_subscription_contexts().await?;
            store.close().await;
            let bar = progress_bar(subs.len() as u64);
            bar.set_message("simulating");
            let mails = app::simulate(&subs, &settings, &calendars, from, to, || bar.inc(1))?;
            bar.finish_and_clear();
            if json {
                serde_json::to_writer_pretty(&mut out, &mails).map_err(std::io::Error::other)?;
                writeln!(out)?;
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
                writeln!(
                    out,
                    "{} mails for {} subscriptions from {from} to {to}: {} reminders, {} renewals, {} ends",
                    mails.len(),
                    subs.len(),
                    count("renewal_reminder"),
                    count("subscription_renewed"),
                    count("subscription_ended")
                )?;
            }
        }
        Command::Notifications { subscription, json } => {
            let store = app::open_store(&settings).await?;
            let rows = store
                .outbox_for_subscription(subscription.as_deref())
                .await?;
            if json {
                serde_json::to_writer_pretty(&mut out, &rows).map_err(std::io::Error::other)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:>6}  {:<8}  {:>8}  {:<30}  LAST ERROR",
                    "ID", "STATE", "ATTEMPTS", "KEY"
                )?;
                for r in rows {
                    writeln!(
                        out,
                        "{:>6}  {:<8}  {:>8}  {:<30}  {}",
                        r.id,
                        r.state.as_str(),
                        r.attempts,
                        r.key,
                        r.last_error.unwrap_or_default()
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `jobs` was asked to list, and how many attempts a mail has.
struct JobListing {
    status: Option<String>,
    limit: u32,
    json: bool,
    mail_attempts: u32,
}

async fn jobs_command(
    store: &crate::store::Store,
    command: Option<JobsCommand>,
    listing: JobListing,
    now: chrono::DateTime<chrono::Utc>,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let JobListing {
        status,
        limit,
        json,
        mail_attempts,
    } = listing;
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into())
    };
    match command {
        None => {
            let rows = store.jobs(status.as_deref(), limit, mail_attempts).await?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &rows).map_err(std::io::Error::other)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<26}  {:<34}  {:<8}  {:>8}  {:<20}  KEY",
                    "ID", "QUEUE", "STATUS", "ATTEMPTS", "RUN AT"
                )?;
                for j in rows {
                    writeln!(
                        out,
                        "{:<26}  {:<34}  {:<8}  {:>4}/{:<3}  {:<20}  {}",
                        j.id,
                        j.queue,
                        j.status,
                        j.attempts,
                        j.max_attempts,
                        time(j.run_at),
                        j.key.unwrap_or_default()
                    )?;
                }
            }
        }
        Some(JobsCommand::Show { id, json }) => {
            let job = store
                .job(&id, mail_attempts)
                .await?
                .ok_or_else(|| CliError::Input(format!("no job {id:?}")))?;
            let mail = match job.args["outbox_id"].as_i64() {
                Some(outbox) => Some((
                    store.outbox_by_id(outbox).await?,
                    store.attempts(outbox).await?,
                )),
                None => None,
            };
            if json {
                let (row, attempts) = mail.unwrap_or_default();
                serde_json::to_writer_pretty(
                    &mut *out,
                    &serde_json::json!({"job": job, "mail": row, "attempts": attempts}),
                )
                .map_err(std::io::Error::other)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "job        {} ({})",
                    job.id,
                    job.key.as_deref().unwrap_or("-")
                )?;
                writeln!(out, "queue      {}", job.queue)?;
                writeln!(
                    out,
                    "status     {} (attempts {}/{})",
                    job.status, job.attempts, job.max_attempts
                )?;
                writeln!(out, "run at     {}", time(job.run_at))?;
                writeln!(out, "done at    {}", time(job.done_at))?;
                writeln!(out, "args       {}", job.args)?;
                if let Some(result) = &job.last_result {
                    writeln!(out, "result     {result}")?;
                }
                if let Some((row, attempts)) = mail {
                    if let Some(row) = row {
                        writeln!(
                            out,
                            "mail       #{} {} ({}), {} attempts{}",
                            row.id,
                            row.key,
                            row.state.as_str(),
                            row.attempts,
                            row.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                        )?;
                    }
                    for a in attempts {
                        writeln!(
                            out,
                            "  attempt {}  {}  {:<9} {}  {}",
                            a.attempt,
                            a.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
                            a.outcome,
                            a.smtp_code
                                .map(|c| c.to_string())
                                .unwrap_or_else(|| "-".into()),
                            a.detail.unwrap_or_default()
                        )?;
                    }
                }
            }
        }
        Some(JobsCommand::Retry { id }) => match store.retry_job(&id, now).await? {
            Some(key) => writeln!(out, "job {id} back to pending as {key}")?,
            None => {
                return Err(CliError::Input(format!(
                    "job {id:?} is not dead (only dead jobs can be retried; see `jobs show {id}`)"
                )));
            }
        },
        Some(JobsCommand::Purge { older_than }) => {
            let before =
                now - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::zero());
            let n = store.purge_done_jobs(before).await?;
            writeln!(
                out,
                "deleted {n} done jobs finished before {}",
                time(Some(before))
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
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

/// Starts the daemon and runs it until `shutdown` resolves.
pub async fn run_daemon(
    settings: Settings,
    clock: SharedClock,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    let settings = Arc::new(settings);
    let store = app::open_store_patiently(&settings).await?;
    let name = settings.worker_instance_name();
    let deliverer = Arc::new(Deliverer::build(
        settings.clone(),
        store,
        clock,
        name.clone(),
    )?);
    tracing::info!(
        worker = %name,
        database = %settings.database.url,
        mail = deliverer.mailer.describe(),
        templates = %settings.templates.dir.display(),
        "renewal-worker started"
    );
    // One stop signal for the worker and the HTTP server.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let http = if settings.http.bind.is_empty() {
        None
    } else {
        use secrecy::ExposeSecret;
        let listener = tokio::net::TcpListener::bind(&settings.http.bind)
            .await
            .map_err(|e| CliError::Input(format!("http.bind {}: {e}", settings.http.bind)))?;
        tracing::info!(bind = %settings.http.bind, "HTTP API listening");
        let state = Arc::new(crate::http::HttpState {
            deliverer: deliverer.clone(),
            token: settings.http.token.expose_secret().to_owned(),
        });
        Some(tokio::spawn(crate::http::serve(
            listener,
            state,
            settings.http.body_limit,
            stopped(stop_rx.clone()),
        )))
    };
    let puller = (!settings.source.url.is_empty()).then(|| {
        let d = deliverer.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(d.settings.source.interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = crate::source::pull(&d.store, &d.settings, &d.calendars, d.clock.now()).await {
                            tracing::warn!(error = %e, "pull from the marketplace failed; next try at the next interval");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    });
    jobs::run_worker(deliverer.clone(), stopped(stop_rx)).await?;
    if let Some(p) = puller {
        let _ = p.await;
    }
    if let Some(server) = http
        && let Ok(Err(e)) = server.await
    {
        tracing::warn!(error = %e, "HTTP server stopped with an error");
    }
    deliverer.store.close().await;
    tracing::info!("renewal-worker stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
