//! Provisioning events (ready, order processed, activated): each owes one mail, queued in the
//! outbox once per (subscription, event) however often the event arrives.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::ServiceError;
use crate::config::Settings;
use crate::domain::{DownloadUrl, ProvisioningEvent, SubscriptionId};
use crate::notify::{
    ActivatedFacts, MailFacts, NotificationKind, address_list, message_id, provisioning_key,
};
use crate::store::{Enqueued, NewNotification, Store};

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
/// (subscription, event) however often the event arrives; the order's step is recorded with
/// its first instant (see [`record_step`]).
pub async fn record_event(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
    subscription: &SubscriptionId,
    event: ProvisioningEvent,
    download_url: Option<&DownloadUrl>,
) -> Result<EventOutcome, ServiceError> {
    record_step(store, settings, now, subscription, event, download_url)
        .await
        .map(|(outcome, _)| outcome)
}

/// [`record_event`], also saying which other order of the reseller was in flight when this
/// step came for the first time, if one was: the step is still recorded and mailed (the vendor
/// decided), and audited with the flag `overlapping_order`.
pub async fn record_step(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
    subscription: &SubscriptionId,
    event: ProvisioningEvent,
    download_url: Option<&DownloadUrl>,
) -> Result<(EventOutcome, Option<String>), ServiceError> {
    let details = match (event, download_url) {
        (ProvisioningEvent::Activated, Some(url)) => MailFacts::Activated(ActivatedFacts {
            download_url: url.clone(),
        }),
        (ProvisioningEvent::Activated, None) => {
            return Err(ServiceError::Invalid(
                "`activated` needs --download-url (an https:// link to the vendor portal)".into(),
            ));
        }
        (_, Some(url)) => {
            return Err(ServiceError::Invalid(format!(
                "--download-url {:?} only goes with the `activated` event, not `{}`",
                url.as_str(),
                event.as_str()
            )));
        }
        (ProvisioningEvent::Ready, None) => MailFacts::Ready {},
        (ProvisioningEvent::OrderProcessed, None) => MailFacts::OrderProcessed {},
    };
    let ctx = super::subscription(store, subscription).await?;
    let kind = NotificationKind::from(event);
    let key = provisioning_key(subscription.as_str(), kind);
    let recipients = address_list(&kind.recipients(&ctx));
    let new = NewNotification {
        message_id: message_id(&key, &settings.mail.message_id_domain),
        key,
        kind: kind.as_str().to_owned(),
        subscription_id: subscription.as_str().to_owned(),
        recipients: recipients.clone(),
        payload: details.to_payload(),
    };
    let recorded = store
        .record_provisioning_step(subscription.as_str(), event, "event", &new, now)
        .await?
        .ok_or_else(|| ServiceError::UnknownSubscription(subscription.as_str().to_owned()))?;
    if let Some(other) = &recorded.overlapping {
        warn!(
            subscription = subscription.as_str(),
            reseller = ctx.reseller.id.as_str(),
            in_flight = other.as_str(),
            step = event.key(),
            "overlapping order: the reseller had another order in flight"
        );
    }
    let outcome = match recorded.mail {
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
    };
    Ok((outcome, recorded.overlapping))
}
