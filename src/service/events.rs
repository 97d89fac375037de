//! Provisioning events (ready, order processed, activated): each owes one mail, queued in the
//! outbox once per (subscription, event) however often the event arrives.

use chrono::{DateTime, Utc};
use tracing::info;

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
/// (subscription, event) however often the event arrives.
pub async fn record_event(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
    subscription: &SubscriptionId,
    event: ProvisioningEvent,
    download_url: Option<&DownloadUrl>,
) -> Result<EventOutcome, ServiceError> {
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
