//! `check`: whether this installation can work, part by part, each with what to do about a
//! failure. Nothing is written: no database is created or migrated, no mail is sent.

use std::path::Path;

use serde::Serialize;

use crate::config::{Settings, TransportKind, ValueSource, redacted_url};
use crate::notify::{NotificationKind, Renderer};
use crate::store::{Backend, Store, StoreError};

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckLine {
    pub fn pass(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The configuration line: valid, and where the values that are not defaults came from (keys
/// and variable names only: values may be secrets).
pub fn configuration(file: Option<&Path>, sources: &[ValueSource]) -> CheckLine {
    let from = |source: &str| -> Vec<&str> {
        sources
            .iter()
            .filter(|s| s.source == source)
            .map(|s| {
                if source == "env" {
                    s.origin.as_str()
                } else {
                    s.key.as_str()
                }
            })
            .collect()
    };
    let (file_keys, env_vars) = (from("file"), from("env"));
    let mut detail = String::from("valid");
    match file {
        Some(f) if file_keys.is_empty() => {
            detail.push_str(&format!("; {} sets nothing", f.display()))
        }
        Some(f) => detail.push_str(&format!("; from {}: {}", f.display(), file_keys.join(", "))),
        None => detail.push_str("; no --config file"),
    }
    if !env_vars.is_empty() {
        detail.push_str(&format!("; from the environment: {}", env_vars.join(", ")));
    }
    detail.push_str("; every other setting is its default");
    CheckLine::pass("configuration", detail)
}

/// The database: there, reachable, and migrated; which backend. Creates nothing.
pub async fn database(settings: &Settings) -> CheckLine {
    const NAME: &str = "database";
    let url = &settings.database.url;
    let shown = redacted_url(url);
    let fix_migrate = "run `renewal-worker migrate` (or start `renewal-worker run`), or point \
                       database.url at the existing database";
    match Store::missing_sqlite_file(url) {
        Ok(Some(path)) => {
            return CheckLine::fail(
                NAME,
                format!("no SQLite database at {} (database.url)", path.display()),
                fix_migrate,
            );
        }
        Ok(None) => {}
        Err(e) => return CheckLine::fail(NAME, e.to_string(), "fix database.url"),
    }
    let db = &settings.database;
    let store = match Store::connect(url, db.max_connections, db.busy_timeout).await {
        Ok(s) => s,
        Err(e) => return unreachable(&shown, &e),
    };
    let backend = match store.backend() {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    let line = match store.ping().await {
        Err(e) => unreachable(&shown, &e),
        Ok(()) => match store.pending_migrations().await {
            Ok(pending) if pending.is_empty() => CheckLine::pass(
                NAME,
                format!("{backend} at {shown}: reachable and migrated"),
            ),
            Ok(pending) => CheckLine::fail(
                NAME,
                format!(
                    "{backend} at {shown}: reachable, {} migration(s) not applied ({})",
                    pending.len(),
                    pending
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "run `renewal-worker migrate`",
            ),
            Err(e) => unreachable(&shown, &e),
        },
    };
    store.close().await;
    line
}

fn unreachable(shown: &str, e: &StoreError) -> CheckLine {
    CheckLine::fail(
        "database",
        format!("{shown}: {e}"),
        "start the database server or fix database.url (host, port, user, database name)",
    )
}

/// Every kind's templates compile and render with sample data.
pub fn templates(settings: &Settings) -> CheckLine {
    let dir = &settings.templates.dir;
    let origin = if dir.as_os_str().is_empty() {
        "built-in".to_owned()
    } else {
        format!("built-in, overridden by files in {}", dir.display())
    };
    match Renderer::load(dir, &settings.marketplace) {
        Ok(_) => CheckLine::pass(
            "templates",
            format!(
                "all {} kinds render with sample data ({origin})",
                NotificationKind::ALL.len()
            ),
        ),
        Err(e) => CheckLine::fail(
            "templates",
            e.to_string(),
            "fix the template named, or remove it from templates.dir to use the built-in one",
        ),
    }
}

/// The built-in and custom calendars load (an .ics file is read), and the default exists.
pub fn calendars(settings: &Settings) -> CheckLine {
    match settings.calendars() {
        Ok(_) => CheckLine::pass(
            "calendars",
            format!(
                "default {:?}; {} custom calendar(s) load",
                settings.calendar.default,
                settings.calendar.custom.len()
            ),
        ),
        Err(e) => CheckLine::fail(
            "calendars",
            e.to_string(),
            "fix [calendar.custom] (its .ics paths and dates)",
        ),
    }
}

/// The SMTP relay answers as configured (nothing is sent), or the file transport's folder
/// can be written.
pub async fn relay(settings: &Settings) -> CheckLine {
    const NAME: &str = "mail relay";
    let mail = &settings.mail;
    match mail.transport {
        TransportKind::File => {
            let dir = &mail.file_dir;
            // The folder, or the folder it will be created in: a file written there and
            // removed at once says whether mail can be written, and leaves nothing behind.
            let existing = dir.ancestors().find(|a| a.is_dir()).unwrap_or(dir);
            let probe = existing.join(format!(".renewal-worker-check-{}", std::process::id()));
            let writable = std::fs::write(&probe, b"").and_then(|()| std::fs::remove_file(&probe));
            match writable {
                Ok(()) => CheckLine::pass(
                    NAME,
                    format!("file transport: mail is written to {}", dir.display()),
                ),
                Err(e) => CheckLine::fail(
                    NAME,
                    format!("file transport: {} is not writable: {e}", dir.display()),
                    "fix mail.file_dir or the folder's permissions",
                ),
            }
        }
        TransportKind::Smtp => {
            let s = &mail.smtp;
            let tls = match s.tls {
                crate::config::SmtpTls::None => "none",
                crate::config::SmtpTls::Starttls => "starttls",
                crate::config::SmtpTls::Tls => "tls",
            };
            let relay = format!("{}:{} (tls = {tls})", s.host, s.port);
            match crate::mail::probe_relay(s).await {
                Ok(steps) => CheckLine::pass(
                    NAME,
                    format!("SMTP relay {relay} answers: {steps}; nothing sent"),
                ),
                Err(e) => CheckLine::fail(
                    NAME,
                    format!("SMTP relay {relay}: {e}"),
                    "check mail.smtp.host, mail.smtp.port and mail.smtp.tls (and the \
                     credentials), and that the relay accepts connections from this host",
                ),
            }
        }
    }
}

/// The HTTP API's address is free to listen on (it is not while a daemon runs with it).
pub async fn http_bind(settings: &Settings) -> CheckLine {
    let Some(bind) = settings.http.bind else {
        return CheckLine::pass("http", "off (http.bind is empty)");
    };
    match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => {
            drop(listener);
            CheckLine::pass("http", format!("{bind} is free to listen on"))
        }
        Err(e) => CheckLine::fail(
            "http",
            format!("cannot listen on {bind} (http.bind): {e}"),
            "stop what listens there (a running daemon?) or change http.bind",
        ),
    }
}
