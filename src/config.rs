//! Configuration: `config/default.toml` (compiled in, so the binary always has sane defaults),
//! then an optional `--config FILE`, then `RENEWAL_WORKER__SECTION__KEY` environment variables.
//! Everything is validated once at start; an error names the key and the value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use lettre::message::Mailbox;
use secrecy::SecretString;
use serde::Deserialize;

use crate::calendar::{CalendarRegistry, CalendarSpec};
use crate::renewal::RenewalPolicy;

mod sources;
pub use sources::{ValueSource, value_sources};

/// The checked-in defaults, documented key by key in the file itself.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
pub const ENV_PREFIX: &str = "RENEWAL_WORKER__";

/// The settings that hold a secret (a whole value, or a password inside it): read from the
/// environment exactly as given, never echoed in an error.
pub const SECRET_KEYS: &[&str] = &[
    "database.url",
    "mail.smtp.password",
    "http.token",
    "source.token",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The reason is text, not a source error: the message already says it, once.
    #[error("config file {path} (--config) could not be read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value the checks refused, with where it was set (the file or the variable).
    #[error("{error} (set {origin})")]
    Set {
        error: Box<ConfigError>,
        origin: String,
    },
    /// Only where the error is: the text around it may be a password.
    #[error("config file {path} is not valid TOML: line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid configuration: `{key}` = {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub mail: MailSettings,
    pub worker: WorkerSettings,
    pub templates: TemplateSettings,
    pub log: LogSettings,
    pub marketplace: MarketplaceSettings,
    pub calendar: CalendarSettings,
    pub renewal: RenewalPolicy,
    pub poll: PollSettings,
    pub http: HttpSettings,
    pub source: SourceSettings,
    pub provisioning: ProvisioningSettings,
}

/// `[provisioning]`: the watchdog of orders in flight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningSettings {
    /// An order in flight this long after its last step stalls: `"2bd"` business days on the
    /// reseller's calendar (at the same local time), or `"3d"` calendar days.
    pub stall_after: crate::renewal::ReminderOffset,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// The marketplace's changes feed; empty: no pulling.
    #[serde(deserialize_with = "parse::optional_http_url")]
    pub url: Option<url::Url>,
    #[serde(deserialize_with = "parse::secret")]
    pub token: SecretString,
    #[serde(deserialize_with = "parse::duration")]
    pub interval: Duration,
    pub page_size: u32,
    pub max_attempts: u32,
    #[serde(deserialize_with = "parse::duration")]
    pub initial_backoff: Duration,
    #[serde(deserialize_with = "parse::duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on; empty: no HTTP API.
    #[serde(deserialize_with = "parse::optional_socket_addr")]
    pub bind: Option<std::net::SocketAddr>,
    #[serde(deserialize_with = "parse::secret")]
    pub token: SecretString,
    #[serde(deserialize_with = "parse::bytes")]
    pub body_limit: usize,
    /// Wrong bearer tokens from one address before it is locked out.
    pub max_auth_failures: u32,
    /// How long a lockout lasts, and how long a failure is remembered.
    #[serde(deserialize_with = "parse::duration")]
    pub auth_lockout: Duration,
    /// A second token that may see the console and change nothing (the API does not take
    /// it); empty: none.
    #[serde(default = "no_secret")]
    pub read_only_token: SecretString,
    /// Marks the console's session cookie `Secure` (set when a TLS proxy fronts the daemon).
    #[serde(default)]
    pub secure_cookies: bool,
}

fn no_secret() -> SecretString {
    SecretString::from(String::new())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSettings {
    #[serde(deserialize_with = "parse::cron_schedule")]
    pub schedule: cron::Schedule,
    pub batch_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSettings {
    pub default: String,
    #[serde(default)]
    pub custom: BTreeMap<String, CalendarSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    #[serde(deserialize_with = "parse::duration")]
    pub busy_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    File,
    Smtp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    pub transport: TransportKind,
    #[serde(deserialize_with = "parse::mailbox")]
    pub from: Mailbox,
    #[serde(default, deserialize_with = "parse::optional_mailbox")]
    pub reply_to: Option<Mailbox>,
    pub file_dir: PathBuf,
    pub message_id_domain: String,
    pub smtp: SmtpSettings,
    pub retry: RetrySettings,
    /// Mails per second this daemon hands to the relay; 0: unlimited.
    pub rate_limit: u32,
    /// Mails that may go at once above the rate after a quiet spell (at least 1).
    pub rate_burst: u32,
    /// How long a relay's "too many" reply halves the rate.
    #[serde(deserialize_with = "parse::duration")]
    pub rate_slowdown: Duration,
    pub breaker: BreakerSettings,
}

/// When the relay counts as down, and how it is probed meanwhile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Relay faults in a row (no mail accepted between them) that open the breaker.
    pub failures: u32,
    #[serde(deserialize_with = "parse::duration")]
    pub probe_initial: Duration,
    #[serde(deserialize_with = "parse::duration")]
    pub probe_max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    #[serde(default, deserialize_with = "parse::optional_secret")]
    pub password: Option<SecretString>,
    #[serde(deserialize_with = "parse::duration")]
    pub timeout: Duration,
    pub pool_max_size: u32,
    #[serde(deserialize_with = "parse::duration")]
    pub pool_idle_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_attempts: u32,
    #[serde(deserialize_with = "parse::duration")]
    pub initial_backoff: Duration,
    #[serde(deserialize_with = "parse::duration")]
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub name: Option<String>,
    pub concurrency: usize,
    /// Runtime threads for the daemon's asynchronous work; none: one per CPU core.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Owed mails one send lane takes, sends and records together.
    pub send_batch: u32,
    #[serde(deserialize_with = "parse::duration")]
    pub poll_interval: Duration,
    #[serde(deserialize_with = "parse::duration")]
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: usize,
    #[serde(deserialize_with = "parse::duration")]
    pub job_timeout: Duration,
    #[serde(deserialize_with = "parse::duration")]
    pub sending_lease: Duration,
    #[serde(deserialize_with = "parse::duration")]
    pub redrive_interval: Duration,
    #[serde(deserialize_with = "parse::duration")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketplaceSettings {
    pub name: String,
    pub support_email: String,
    /// Where the marketplace's own alerts go (an order that stalled).
    pub operations_email: String,
    pub vendor_name: String,
    pub vendor_portal_url: String,
    /// Where a reseller acts on one subscription (turns auto-renew off, un-assigns licenses):
    /// an https URL in which `{subscription}` stands for the subscription's id.
    pub manage_url: String,
}

impl MarketplaceSettings {
    /// [`MarketplaceSettings::manage_url`] for one subscription, its id percent-encoded.
    pub fn manage_url_for(&self, subscription: &str) -> String {
        let id: String = url::form_urlencoded::byte_serialize(subscription.as_bytes()).collect();
        self.manage_url.replace("{subscription}", &id)
    }
}

/// The settings with the layers they came from, for `check` (which tells where each value
/// was set).
pub struct Loaded {
    pub settings: Settings,
    pub figment: Figment,
    /// The config file, absolute, if one was given.
    pub file: Option<PathBuf>,
}

impl Settings {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// As [`Settings::load`] with the environment provider given, so tests do not depend on
    /// (or mutate) the process environment.
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        Self::load_layers(file, env).map(|l| l.settings)
    }

    /// As [`Settings::load`], keeping the layers.
    pub fn load_with_sources(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_layers(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn load_layers(file: Option<&Path>, env: Env) -> Result<Loaded, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        let file = file.map(absolute).transpose()?;
        if let Some(path) = &file {
            // Toml::file silently ignores a missing file; an operator who names one means it.
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            check_toml_syntax(path, &text)?;
            figment = figment.merge(Toml::file_exact(path));
        }
        // Secrets are taken from the environment as the exact text given (EnvLists).
        let figment = figment.merge(sources::EnvLists::new(env, DEFAULT_TOML));
        let settings = Self::extract(&figment)?;
        Ok(Loaded {
            settings,
            figment,
            file,
        })
    }

    /// Defaults plus a TOML overlay: what tests and embedders use.
    pub fn from_toml_overlay(overlay: &str) -> Result<Self, ConfigError> {
        Self::extract(&Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(overlay)))
    }

    /// Every problem figment finds (each names its key and where it was set), then our own
    /// checks; then relative paths made absolute.
    fn extract(figment: &Figment) -> Result<Self, ConfigError> {
        let mut settings: Settings = figment.extract().map_err(|e| {
            ConfigError::Parse(
                e.into_iter()
                    .map(|e| sources::describe_error(&e))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        settings.validate().map_err(|e| match &e {
            ConfigError::Invalid { key, .. } => match sources::origin(figment, key) {
                Some(origin) => ConfigError::Set {
                    error: Box::new(e),
                    origin,
                },
                None => e,
            },
            _ => e,
        })?;
        sources::resolve_paths(&mut settings, figment)?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, value: impl ToString, reason: &str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                reason: reason.to_owned(),
            }
        }
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                redacted_url(db),
                "expected sqlite://FILE (e.g. sqlite://data/renewal-worker.db) or \
                 postgres://USER@HOST/DATABASE",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", 0, "must be at least 1"));
        }
        let domain = &self.mail.message_id_domain;
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(invalid(
                "mail.message_id_domain",
                domain,
                "expected a host name (letters, digits, dots, dashes)",
            ));
        }
        if self.mail.transport == TransportKind::Smtp && self.mail.smtp.host.trim().is_empty() {
            return Err(invalid(
                "mail.smtp.host",
                "",
                "required when mail.transport = \"smtp\"",
            ));
        }
        if self.mail.smtp.username.is_some() != self.mail.smtp.password.is_some() {
            return Err(invalid(
                "mail.smtp.username",
                self.mail.smtp.username.clone().unwrap_or_default(),
                "username and password go together: set both or neither",
            ));
        }
        if self.mail.smtp.pool_max_size == 0 {
            return Err(invalid("mail.smtp.pool_max_size", 0, "must be at least 1"));
        }
        let retry = &self.mail.retry;
        if retry.max_attempts == 0 {
            return Err(invalid("mail.retry.max_attempts", 0, "must be at least 1"));
        }
        if retry.initial_backoff.is_zero() {
            return Err(invalid(
                "mail.retry.initial_backoff",
                "0s",
                "must be positive",
            ));
        }
        if retry.max_backoff < retry.initial_backoff {
            return Err(invalid(
                "mail.retry.max_backoff",
                humantime::format_duration(retry.max_backoff),
                "must not be shorter than mail.retry.initial_backoff",
            ));
        }
        if self.mail.rate_burst == 0 {
            return Err(invalid("mail.rate_burst", 0, "must be at least 1"));
        }
        if self.mail.rate_limit > 0 && self.mail.rate_slowdown.is_zero() {
            return Err(invalid(
                "mail.rate_slowdown",
                "0s",
                "must be positive when mail.rate_limit is set",
            ));
        }
        let breaker = &self.mail.breaker;
        if breaker.failures == 0 {
            return Err(invalid("mail.breaker.failures", 0, "must be at least 1"));
        }
        if breaker.probe_initial.is_zero() {
            return Err(invalid(
                "mail.breaker.probe_initial",
                "0s",
                "must be positive",
            ));
        }
        if breaker.probe_max < breaker.probe_initial {
            return Err(invalid(
                "mail.breaker.probe_max",
                humantime::format_duration(breaker.probe_max),
                "must not be shorter than mail.breaker.probe_initial",
            ));
        }
        let w = &self.worker;
        if let Some(name) = &w.name
            && (name.is_empty() || name.len() > 64)
        {
            return Err(invalid("worker.name", name, "must be 1 to 64 characters"));
        }
        if w.concurrency == 0 {
            return Err(invalid("worker.concurrency", 0, "must be at least 1"));
        }
        if let Some(threads) = w.threads
            && !(1..=256).contains(&threads)
        {
            return Err(invalid("worker.threads", threads, "must be 1 to 256"));
        }
        if !(1..=1000).contains(&w.send_batch) {
            return Err(invalid(
                "worker.send_batch",
                w.send_batch,
                "must be 1 to 1000",
            ));
        }
        for (key, d) in [
            ("worker.poll_interval", w.poll_interval),
            ("worker.heartbeat_interval", w.heartbeat_interval),
            ("worker.job_timeout", w.job_timeout),
            ("worker.redrive_interval", w.redrive_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "0s", "must be positive"));
            }
        }
        if w.missed_heartbeats == 0 {
            return Err(invalid("worker.missed_heartbeats", 0, "must be at least 1"));
        }
        // A claimed mail is presumed lost only after the job that claimed it must have timed
        // out; a shorter lease would hand a slow-but-alive send to a second worker.
        if w.sending_lease <= w.job_timeout {
            return Err(invalid(
                "worker.sending_lease",
                humantime::format_duration(w.sending_lease),
                "must be longer than worker.job_timeout",
            ));
        }
        let calendars = self.calendars()?;
        if let Err(e) = calendars.get(&self.calendar.default) {
            return Err(invalid(
                "calendar.default",
                &self.calendar.default,
                &e.to_string(),
            ));
        }
        if self.http.bind.is_some() {
            use secrecy::ExposeSecret;
            if self.http.token.expose_secret().len() < 16 {
                return Err(invalid(
                    "http.token",
                    "(hidden)",
                    "required when http.bind is set: at least 16 characters (set RENEWAL_WORKER__HTTP__TOKEN)",
                ));
            }
            let ro = self.http.read_only_token.expose_secret();
            if !ro.is_empty() && (ro.len() < 16 || ro == self.http.token.expose_secret()) {
                return Err(invalid(
                    "http.read_only_token",
                    "(hidden)",
                    "when set: at least 16 characters, and not the same as http.token",
                ));
            }
        }
        if self.source.url.is_some()
            && (self.source.page_size == 0 || self.source.max_attempts == 0)
        {
            return Err(invalid(
                "source.page_size",
                self.source.page_size,
                "page_size and max_attempts must be at least 1",
            ));
        }
        if self.http.body_limit < 1024 {
            return Err(invalid(
                "http.body_limit",
                self.http.body_limit,
                "must be at least 1024 bytes",
            ));
        }
        if self.http.max_auth_failures == 0 {
            return Err(invalid("http.max_auth_failures", 0, "must be at least 1"));
        }
        if self.http.auth_lockout.is_zero() {
            return Err(invalid("http.auth_lockout", "0s", "must be positive"));
        }
        if self.poll.batch_size == 0 {
            return Err(invalid("poll.batch_size", 0, "must be at least 1"));
        }
        if self.renewal.cutoff_business_days > 60 {
            return Err(invalid(
                "renewal.cutoff_business_days",
                self.renewal.cutoff_business_days,
                "must be at most 60",
            ));
        }
        if !matches!(
            self.log.level.as_str(),
            "trace" | "debug" | "info" | "warn" | "error"
        ) {
            return Err(invalid(
                "log.level",
                &self.log.level,
                "expected one of trace, debug, info, warn, error",
            ));
        }
        if url::Url::parse(&self.marketplace.vendor_portal_url)
            .map(|u| u.scheme() != "https")
            .unwrap_or(true)
        {
            return Err(invalid(
                "marketplace.vendor_portal_url",
                &self.marketplace.vendor_portal_url,
                "expected an https:// URL",
            ));
        }
        let manage = &self.marketplace.manage_url;
        let placeholders_known = manage
            .replace("{subscription}", "")
            .chars()
            .all(|c| c != '{' && c != '}');
        if !placeholders_known
            || url::Url::parse(&self.marketplace.manage_url_for("S1"))
                .map(|u| u.scheme() != "https")
                .unwrap_or(true)
        {
            return Err(invalid(
                "marketplace.manage_url",
                manage,
                "expected an https:// URL, where {subscription} may stand for the subscription's id (e.g. https://manage.autodesk.com/subscriptions/{subscription})",
            ));
        }
        if self
            .marketplace
            .support_email
            .parse::<lettre::Address>()
            .is_err()
        {
            return Err(invalid(
                "marketplace.support_email",
                &self.marketplace.support_email,
                "expected an email address",
            ));
        }
        if crate::domain::EmailAddress::parse(&self.marketplace.operations_email).is_err() {
            return Err(invalid(
                "marketplace.operations_email",
                &self.marketplace.operations_email,
                "expected an email address",
            ));
        }
        if self.provisioning.stall_after == crate::renewal::ReminderOffset::Days(0)
            || self.provisioning.stall_after == crate::renewal::ReminderOffset::BusinessDays(0)
        {
            return Err(invalid(
                "provisioning.stall_after",
                self.provisioning.stall_after,
                "must be at least one day (\"1d\") or business day (\"1bd\")",
            ));
        }
        Ok(())
    }

    /// The built-in calendars and those of `[calendar.custom]`, each checked (an iCalendar
    /// file is read now).
    pub fn calendars(&self) -> Result<CalendarRegistry, ConfigError> {
        CalendarRegistry::new(&self.calendar.custom).map_err(|e| ConfigError::Invalid {
            key: "calendar.custom",
            value: self
                .calendar
                .custom
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            reason: e.to_string(),
        })
    }

    /// The worker's name in the queue: unique per live process (apalis refuses a second
    /// registration of a name seen alive within one heartbeat), recognisable per host.
    pub fn worker_instance_name(&self) -> String {
        let base = self.worker.name.clone().unwrap_or_else(host_name);
        format!("{base}-{}", std::process::id())
    }
}

/// `path` made absolute against the working directory, without resolving links.
fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path)
        .map(|p| sources::normalize(&p))
        .map_err(|e| ConfigError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// A config file's TOML syntax, checked before figment reads it: figment's own message quotes
/// the line at fault, which may be the one holding a password. Only the place and the kind
/// of error are told.
fn check_toml_syntax(path: &Path, text: &str) -> Result<(), ConfigError> {
    let Err(e) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let before = &text[..text.floor_char_boundary(at)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Err(ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message: e.message().trim().to_owned(),
    })
}

/// This machine's name (`HOSTNAME`, else /etc/hostname, else "renewal-worker").
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "renewal-worker".to_owned())
}

/// Settings given as text and parsed once, as they are read: a bad value is refused with what
/// was expected (figment adds the key), and nothing re-parses the text later.
mod parse {
    use std::str::FromStr;

    use serde::Deserialize;
    use serde::de::{Deserializer, Error};

    fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        String::deserialize(d)
    }

    fn refuse<E: Error>(value: &str, expected: &str) -> E {
        E::custom(format!("{value:?}: expected {expected}"))
    }

    /// Text or a bare number, so that either is answered with the expected format rather
    /// than a type name.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Number(u64),
    }

    const DURATION: &str = "a duration with its unit, like \"30s\", \"5m\" or \"1h 30m\"";

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        match TextOrNumber::deserialize(d)? {
            TextOrNumber::Text(s) => {
                humantime::parse_duration(s.trim()).map_err(|_| refuse(&s, DURATION))
            }
            TextOrNumber::Number(n) => Err(refuse(&n.to_string(), DURATION)),
        }
    }

    const SIZE: &str = "a size in bytes, like 65536 or \"64KiB\" (units B, KiB, MiB)";

    /// A number of bytes, or text with a binary unit.
    pub fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let s = match TextOrNumber::deserialize(d)? {
            TextOrNumber::Number(n) => {
                return usize::try_from(n).map_err(|_| refuse(&n.to_string(), SIZE));
            }
            TextOrNumber::Text(s) => s,
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let unit = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1024,
            "MiB" => 1024 * 1024,
            _ => return Err(refuse(&s, SIZE)),
        };
        digits
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .ok_or_else(|| refuse(&s, SIZE))
    }

    pub fn cron_schedule<'de, D: Deserializer<'de>>(d: D) -> Result<cron::Schedule, D::Error> {
        let s = text(d)?;
        cron::Schedule::from_str(&s).map_err(|_| {
            refuse(
                &s,
                "a cron expression with seconds, like \"0 * * * * *\" (every minute)",
            )
        })
    }

    pub fn mailbox<'de, D: Deserializer<'de>>(d: D) -> Result<lettre::message::Mailbox, D::Error> {
        let s = text(d)?;
        s.parse()
            .map_err(|_| refuse(&s, "a mailbox such as `Renewals <renewals@example.com>`"))
    }

    /// A secret is text; a TOML file may give an all-digit one unquoted, taken as its
    /// digits. Nothing else is accepted, and the value never appears in the error.
    pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<secrecy::SecretString, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_string<E: Error>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u128<E: Error>(self, v: u128) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i128<E: Error>(self, v: i128) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_any(Text).map(secrecy::SecretString::from)
    }

    pub fn optional_secret<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<secrecy::SecretString>, D::Error> {
        secret(d).map(Some)
    }

    pub fn optional_mailbox<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<lettre::message::Mailbox>, D::Error> {
        mailbox(d).map(Some)
    }

    /// Empty: none.
    pub fn optional_socket_addr<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<std::net::SocketAddr>, D::Error> {
        let s = text(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| refuse(&s, "an address and port like 127.0.0.1:8080"))
    }

    /// Empty: none.
    pub fn optional_http_url<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<url::Url>, D::Error> {
        let s = text(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        match url::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Some(u)),
            _ => Err(refuse(
                &s,
                "an http(s):// URL of the marketplace's changes feed",
            )),
        }
    }
}

/// A database URL fit for logs and messages: any password replaced by `***`, in the user
/// part or as a `password` parameter. A URL that does not parse keeps its scheme, user name
/// and host, and everything after a `:` in its authority is hidden, since that is where a
/// password (or what a malformed URL holds where a password would be) sits.
pub fn redacted_url(raw: &str) -> String {
    if let Ok(mut u) = url::Url::parse(raw) {
        if u.password().is_some() {
            let _ = u.set_password(Some("***"));
        }
        if u.query_pairs().any(|(k, _)| is_password_param(&k)) {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_password_param(&k) {
                        "***".to_owned()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return u.to_string();
    }
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    // A password may hold `/`, `?` or `@`: with an `@` anywhere, all before the last one is
    // the user part.
    let (user, rest) = match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let name = userinfo
                .split([':', '/', '?', '#'])
                .next()
                .unwrap_or_default();
            (format!("{name}:***@"), host)
        }
        None => (String::new(), rest),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(end);
    // The parameters of an unparsable URL are not read: all of them go.
    let tail = match tail.find(['?', '#']) {
        Some(i) => format!("{}?***", &tail[..i]),
        None => tail.to_owned(),
    };
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}{user}{}{tail}", hide_after_colon(host))
}

fn is_password_param(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("passwd")
}

fn hide_after_colon(s: &str) -> String {
    match s.split_once(':') {
        Some((before, _)) => format!("{before}:***"),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = Settings::from_toml_overlay("").unwrap();
        assert_eq!(s.mail.transport, TransportKind::File);
        assert!(s.database.url.starts_with("sqlite:"));
    }

    #[test]
    fn worker_threads_are_one_to_256() {
        assert_eq!(
            Settings::from_toml_overlay("").unwrap().worker.threads,
            None
        );
        for bad in [0, 257] {
            let err = Settings::from_toml_overlay(&format!("[worker]\nthreads = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`worker.threads` = ") && err.contains(&format!("\"{bad}\"")),
                "{err}"
            );
        }
        let s = Settings::from_toml_overlay("[worker]\nthreads = 256\n").unwrap();
        assert_eq!(s.worker.threads, Some(256));
    }

    #[test]
    fn the_manage_url_takes_the_subscription_and_is_checked() {
        let s = Settings::from_toml_overlay(
            "[marketplace]\nmanage_url = \"https://portal.example/subs/{subscription}/renewal\"\n",
        )
        .unwrap();
        assert_eq!(
            s.marketplace.manage_url_for("S 1/x"),
            "https://portal.example/subs/S+1%2Fx/renewal"
        );
        for bad in [
            "http://portal.example/",
            "https://portal.example/{id}",
            "portal",
        ] {
            let err =
                Settings::from_toml_overlay(&format!("[marketplace]\nmanage_url = \"{bad}\"\n"))
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains("marketplace.manage_url") && err.contains(bad),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = Settings::from_toml_overlay("[mail]\ntransprot = \"smtp\"\n").unwrap_err();
        assert!(err.to_string().contains("transprot"), "{err}");
    }

    #[test]
    fn a_bad_value_names_key_and_value() {
        let err = Settings::from_toml_overlay("[mail]\ntransport = \"pigeon\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pigeon") && msg.contains("transport"), "{msg}");

        let err = Settings::from_toml_overlay("[mail]\nfrom = \"not a mailbox\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("mail.from") && msg.contains("not a mailbox"),
            "{msg}"
        );

        let err = Settings::from_toml_overlay("[mail.retry]\nmax_attempts = 0\n").unwrap_err();
        assert!(err.to_string().contains("mail.retry.max_attempts"), "{err}");
    }

    #[test]
    fn breaker_and_rate_settings_are_checked_naming_the_key() {
        for (toml, key) in [
            ("[mail.breaker]\nfailures = 0\n", "mail.breaker.failures"),
            (
                "[mail.breaker]\nprobe_initial = \"0s\"\n",
                "mail.breaker.probe_initial",
            ),
            (
                "[mail.breaker]\nprobe_initial = \"1m\"\nprobe_max = \"10s\"\n",
                "mail.breaker.probe_max",
            ),
            ("[mail]\nrate_burst = 0\n", "mail.rate_burst"),
            (
                "[mail]\nrate_limit = 10\nrate_slowdown = \"0s\"\n",
                "mail.rate_slowdown",
            ),
        ] {
            let err = Settings::from_toml_overlay(toml).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        let s = Settings::from_toml_overlay("[mail]\nrate_limit = 200\n").unwrap();
        assert_eq!((s.mail.rate_limit, s.mail.rate_burst), (200, 5));
        assert_eq!(s.mail.breaker.failures, 3);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn environment_overrides_nested_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RENEWAL_WORKER__MAIL__TRANSPORT", "smtp");
            jail.set_env("RENEWAL_WORKER__MAIL__SMTP__PORT", "2525");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.mail.transport, TransportKind::Smtp);
            assert_eq!(s.mail.smtp.port, 2525);
            Ok(())
        });
    }

    #[test]
    fn calendars_and_renewal_settings_are_checked() {
        let s = Settings::from_toml_overlay(
            "[calendar]\ndefault = \"acme\"\n[calendar.custom.acme]\nbase = \"us\"\nadd = [\"2026-12-24\"]\nweekend = [\"Sat\", \"Sun\"]\n",
        )
        .unwrap();
        assert_eq!(s.calendar.default, "acme");
        assert_eq!(s.renewal.cutoff_business_days, 5);
        let err = Settings::from_toml_overlay("[calendar]\ndefault = \"mars\"\n").unwrap_err();
        assert!(
            err.to_string().contains("calendar.default") && err.to_string().contains("mars"),
            "{err}"
        );
        let err = Settings::from_toml_overlay("[calendar.custom.x]\nbase = \"fr\"\n").unwrap_err();
        assert!(err.to_string().contains("\"fr\""), "{err}");
        let err = Settings::from_toml_overlay("[renewal]\nreminder_offsets = [\"30d\", \"2w\"]\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("\"2w\"") && err.to_string().contains("reminder_offsets"),
            "{err}"
        );
        let err =
            Settings::from_toml_overlay("[renewal]\nreminder_time = \"25:00\"\n").unwrap_err();
        assert!(err.to_string().contains("25:00"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn secrets_from_the_environment_are_taken_exactly_as_given() {
        use secrecy::ExposeSecret;
        figment::Jail::expect_with(|jail| {
            jail.set_env("RENEWAL_WORKER__MAIL__SMTP__USERNAME", "relay");
            jail.set_env("RENEWAL_WORKER__MAIL__SMTP__PASSWORD", "0012345678");
            jail.set_env("RENEWAL_WORKER__HTTP__BIND", "127.0.0.1:0");
            jail.set_env("RENEWAL_WORKER__HTTP__TOKEN", "12345678901234567890");
            jail.set_env("RENEWAL_WORKER__SOURCE__TOKEN", "\"quoted\"");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            let password = s.mail.smtp.password.as_ref().map(|p| p.expose_secret());
            assert_eq!(password, Some("0012345678"));
            assert_eq!(s.http.token.expose_secret(), "12345678901234567890");
            assert_eq!(s.source.token.expose_secret(), "\"quoted\"");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("RENEWAL_WORKER__SOURCE__TOKEN", "true");
            jail.set_env("RENEWAL_WORKER__HTTP__TOKEN", "[1, 2]");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.source.token.expose_secret(), "true");
            assert_eq!(s.http.token.expose_secret(), "[1, 2]");
            Ok(())
        });
    }

    #[test]
    fn a_secret_of_the_wrong_type_in_a_file_is_not_echoed() {
        use secrecy::ExposeSecret;
        let s = Settings::from_toml_overlay("[source]\ntoken = 987654321\n").unwrap();
        assert_eq!(s.source.token.expose_secret(), "987654321");
        let err = Settings::from_toml_overlay("[http]\ntoken = 98765.4321\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http.token") && !err.contains("98765"),
            "{err}"
        );
        let err = Settings::from_toml_overlay("[mail.smtp]\npassword = [\"hunter2\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mail.smtp.password") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn a_toml_syntax_error_names_the_place_not_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("renewal.toml");
        std::fs::write(
            &path,
            "[mail.smtp]\nusername = \"relay\"\npassword = \"s3cr3t-pw\n",
        )
        .unwrap();
        let err = Settings::load_from(Some(&path), Env::prefixed("RENEWAL_WORKER_TEST_UNUSED__"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(
            err.contains(&path.display().to_string()) && err.contains("line 3, column"),
            "{err}"
        );
    }

    #[test]
    fn database_urls_lose_their_passwords_parsable_or_not() {
        for (raw, shown) in [
            (
                "postgres://rw:s3cr3t@db.example:5432/renewals",
                "postgres://rw:***@db.example:5432/renewals",
            ),
            (
                "postgres://rw@db.example/renewals?password=s3cr3t&sslmode=require",
                "postgres://rw@db.example/renewals?password=***&sslmode=require",
            ),
            // Unparsable: a bad port, a password with `/`, no `@`, a bad parameter.
            (
                "postgres://rw:s3cr3t@db.example:54x32/renewals",
                "postgres://rw:***@db.example:***/renewals",
            ),
            (
                "postgres://rw:s3/cr3t@db.example:x/renewals",
                "postgres://rw:***@db.example:***/renewals",
            ),
            ("postgres://rw:s3cr3t", "postgres://rw:***"),
            (
                "postgres://rw:s3cr3t@[db/renewals?password=s3cr3t",
                "postgres://rw:***@[db/renewals?***",
            ),
            ("sqlite://data/rw.db", "sqlite://data/rw.db"),
        ] {
            assert_eq!(redacted_url(raw), shown, "{raw}");
        }
        let err = Settings::from_toml_overlay("[database]\nurl = \"mysql://rw:s3cr3t@h/db\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database.url") && !err.contains("s3cr3t"),
            "{err}"
        );
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let err = Settings::load_from(
            Some(Path::new("/nonexistent/renewal.toml")),
            Env::prefixed("RENEWAL_WORKER_TEST_UNUSED__"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/renewal.toml"));
    }
}
