//! Application services: the steps the CLI and the jobs share. Each takes its time from the
//! injected clock and its I/O from the store and the mailer.

mod disable;
mod poll;
mod simulate;
pub mod timeline;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::info;

use crate::config::Settings;
use crate::domain::{DownloadUrl, ProvisioningEvent, SubscriptionId};
use crate::mail::MailError;
use crate::notify::{NotificationKind, TemplateError, message_id, provisioning_key};
use crate::retry::Backoff;
use crate::store::{Enqueued, NewNotification, Store, StoreError};

pub use crate::outbox::{Deliverer, Delivery, DrainReport, OutboxError};
pub use disable::{DisableOutcome, request_disable};
pub use poll::{PollReport, next_due, poll, timeline_input};
pub use simulate::{SimulatedMail, simulate_one};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Calendar(#[from] crate::calendar::CalendarError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("unknown subscription {0:?}")]
    UnknownSubscription(String),
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

/// What recording a provisioning event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// A mail is now owed and queued.
    Queued {
        outbox_id: i64,
        recipients: Vec<String>,
    },
    /// This event was recorded before; its mail is (or was) handled already.
    AlreadyRecorded { outbox_id: i64, state: String },
}

/// Records a provisioning event: the mail it owes goes into the outbox, once per
/// (subscription, event) however often the event arrives.
pub async fn record_event(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
    subscription: &SubscriptionId,
    event: ProvisioningEvent,
    download_url: Option<&DownloadUrl>,
) -> Result<EventOutcome, AppError> {
    let details = match (event, download_url) {
        (ProvisioningEvent::Activated, Some(url)) => json!({"download_url": url.as_str()}),
        (ProvisioningEvent::Activated, None) => {
            return Err(AppError::Invalid(
                "`activated` needs --download-url (an https:// link to the vendor portal)".into(),
            ));
        }
        (_, Some(url)) => {
            return Err(AppError::Invalid(format!(
                "--download-url {:?} only goes with the `activated` event, not `{}`",
                url.as_str(),
                event.as_str()
            )));
        }
        (_, None) => json!({}),
    };
    let ctx = store
        .subscription_context(subscription)
        .await?
        .ok_or_else(|| AppError::UnknownSubscription(subscription.as_str().to_owned()))?;
    let kind = NotificationKind::from(event);
    let key = provisioning_key(subscription.as_str(), kind);
    let recipients: Vec<String> = kind
        .recipients(&ctx)
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    let new = NewNotification {
        message_id: message_id(&key, &settings.mail.message_id_domain),
        key,
        kind: kind.as_str().to_owned(),
        subscription_id: subscription.as_str().to_owned(),
        recipients: recipients.clone(),
        payload: details,
    };
    let outcome = store.enqueue_notification(&new, now).await?;
    Ok(match outcome {
        Enqueued::Created { id } => {
            info!(
                subscription = subscription.as_str(),
                kind = kind.as_str(),
                outbox_id = id,
                "mail queued"
            );
            EventOutcome::Queued {
                outbox_id: id,
                recipients,
            }
        }
        Enqueued::AlreadyRecorded { id, state } => EventOutcome::AlreadyRecorded {
            outbox_id: id,
            state: state.as_str().to_owned(),
        },
    })
}

impl Deliverer {
    /// One poll at the clock's current time: plans and records due renewal work, then gives
    /// claims whose lease ran out back (see [`Deliverer::redrive`]).
    pub async fn poll(&self) -> Result<PollReport, AppError> {
        let started = std::time::Instant::now();
        let report = poll(
            &self.store,
            &self.settings,
            &self.calendars,
            self.clock.now(),
        )
        .await?;
        self.metrics
            .poll_seconds
            .observe(started.elapsed().as_secs_f64());
        self.redrive().await?;
        Ok(report)
    }
}
