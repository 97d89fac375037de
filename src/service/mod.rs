//! The use cases the CLI, the HTTP API, the jobs and the pulling source share, each written
//! once: records in, provisioning events, orders, license counts, disable requests, the poll,
//! the timeline and the simulation. Each takes its time as an argument and its I/O from the store;
//! all fail with one [`ServiceError`].

pub mod check;
pub mod console;
pub mod disable;
pub mod events;
pub mod licenses;
pub mod orders;
pub mod poll;
pub mod preview;
pub mod records;
pub mod relay;
pub mod simulate;
pub mod timeline;

use std::sync::Arc;
use std::time::Duration;

use crate::calendar::{Calendar, CalendarError, CalendarRegistry};
use crate::config::Settings;
use crate::domain::DomainError;
use crate::domain::{Reseller, SubscriptionContext};
use crate::import::ImportError;
use crate::outbox::OutboxError;
use crate::renewal::TimelineInput;
use crate::retry::Backoff;
use crate::store::{Store, StoreError};

pub use disable::{DisableOutcome, request_disable};
pub use events::{EventOutcome, record_event, record_event_correcting, record_step};
pub use licenses::{LicenseChange, set_assigned_licenses};
pub use orders::{InFlight, OrderCheck, abandon_order, order_check};
pub use poll::{PollReport, poll, poll_now};
pub use preview::{Preview, preview};
pub use records::{check_and_upsert, known_for};
pub use relay::{RelayReport, relay_status};
pub use simulate::{SimulatedMail, simulate, simulate_one};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Rows that did not pass the checks; nothing was written.
    #[error(transparent)]
    Records(#[from] ImportError),
    /// A license count out of range for the subscription's seats.
    #[error(transparent)]
    Licenses(DomainError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("unknown subscription {0:?}")]
    UnknownSubscription(String),
    #[error("unknown reseller {0:?}")]
    UnknownReseller(String),
    /// A value of the request that is refused; names the field.
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// The request is understood but the state forbids it (nothing was written); the message
    /// says how to do it on purpose where there is a way.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

/// Opens the store as configured.
pub async fn open_store(settings: &Settings) -> Result<Store, StoreError> {
    Store::open(
        &settings.database.url,
        settings.database.max_connections,
        settings.database.busy_timeout,
    )
    .await
}

/// As [`open_store`], for commands that only read: a missing SQLite file is an error naming
/// it and the command that creates it, and no file is created.
pub async fn open_existing_store(settings: &Settings) -> Result<Store, StoreError> {
    Store::open_existing(
        &settings.database.url,
        settings.database.max_connections,
        settings.database.busy_timeout,
    )
    .await
}

/// As [`open_store`], for the daemon: while the database cannot be reached (PostgreSQL not
/// up yet, a network blip), keeps trying with doubling waits up to 30 s instead of giving up.
/// Errors that waiting cannot fix (a bad URL, a failed migration) end it at once.
pub async fn open_store_patiently(settings: &Settings) -> Result<Store, StoreError> {
    const WAIT: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut failures = 0;
    loop {
        let unreachable = match open_store(settings).await {
            Err(e @ (StoreError::Connect { .. } | StoreError::Db(_))) => e.to_string(),
            Err(StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)))
                if is_connection(&e) =>
            {
                e.to_string()
            }
            other => return other,
        };
        failures += 1;
        let wait = WAIT.delay(failures);
        tracing::warn!(error = %unreachable, retry_in = ?wait, "database not reachable; retrying");
        tokio::time::sleep(wait).await;
    }
}

fn is_connection(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    )
}

/// The name of a reseller's business-day calendar: its own, else `calendar.default`.
pub fn calendar_name<'a>(settings: &'a Settings, reseller: &'a Reseller) -> &'a str {
    reseller
        .calendar
        .as_deref()
        .unwrap_or(&settings.calendar.default)
}

/// The business-day calendar that applies to a reseller and its subscriptions.
pub fn calendar_for(
    settings: &Settings,
    calendars: &CalendarRegistry,
    reseller: &Reseller,
) -> Result<Arc<Calendar>, CalendarError> {
    calendars.get(calendar_name(settings, reseller))
}

/// What the renewal rules need to know of a subscription.
pub fn timeline_input(ctx: &SubscriptionContext) -> TimelineInput {
    let s = &ctx.subscription;
    TimelineInput {
        term_start: s.term_start,
        term_end: s.term_end,
        tz: ctx.reseller.timezone.tz(),
        auto_renew: s.auto_renew,
        assigned_licenses: u32::from(s.assigned_licenses.get()),
        disable_effective_term_end: s.renewal.disable_effective_term_end,
    }
}

/// The subscription `id`, or [`ServiceError::UnknownSubscription`].
pub async fn subscription(
    store: &Store,
    id: &crate::domain::SubscriptionId,
) -> Result<SubscriptionContext, ServiceError> {
    store
        .subscription_context(id)
        .await?
        .ok_or_else(|| ServiceError::UnknownSubscription(id.as_str().to_owned()))
}
