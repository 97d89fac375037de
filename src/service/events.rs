//! Provisioning events (ready, order processed, activated): each owes one mail, queued in the
//! outbox once per (subscription, event) however often the event arrives. An activation's
//! download link can be corrected on purpose: the new link goes out in a mail of its own,
//! audited.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::ServiceError;
use crate::config::Settings;
use crate::domain::{DownloadUrl, ProvisioningEvent, SubscriptionId};
use crate::notify::{
    ActivatedFacts, MailFacts, NotificationKind, activation_correction_key, address_list,
    message_id, provisioning_key,
};
use crate::store::{Enqueued, NewNotification, OutboxRow, Store, UrlCorrection};

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
    /// A new download link replaced the one recorded: a corrected activation mail is queued.
    Corrected {
        outbox_id: i64,
        key: String,
        recipients: Vec<String>,
        old_url: String,
    },
}

/// Records a provisioning event: the mail it owes goes into the outbox, once per
/// (subscription, event) however often the event arrives; the order's step is recorded with
/// its first instant (see [`record_step`]). An `activated` event whose link differs from the
/// one recorded is refused ([`ServiceError::Conflict`]): see [`record_event_correcting`].
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
    let mut overlapping = None;
    let outcome = record(
        store,
        settings,
        now,
        (subscription, event, download_url),
        None,
        &mut overlapping,
    )
    .await?;
    Ok((outcome, overlapping))
}

/// As [`record_event`]; with `corrected_by` (who asks, for the audit), an `activated` event
/// whose link differs from the last one recorded records the new link and queues one corrected
/// activation mail (`S/activated/2`, then `/3`...). The same link again changes nothing.
pub async fn record_event_correcting(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
    subscription: &SubscriptionId,
    event: ProvisioningEvent,
    download_url: Option<&DownloadUrl>,
    corrected_by: Option<&str>,
) -> Result<EventOutcome, ServiceError> {
    let what = (subscription, event, download_url);
    record(store, settings, now, what, corrected_by, &mut None).await
}

/// The one path of every provisioning event; `overlapping` is set to the reseller's other order
/// in flight when this step came first while it was.
async fn record(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
    (subscription, event, download_url): (&SubscriptionId, ProvisioningEvent, Option<&DownloadUrl>),
    corrected_by: Option<&str>,
    overlapping: &mut Option<String>,
) -> Result<EventOutcome, ServiceError> {
    let details = match (event, download_url) {
        (ProvisioningEvent::Activated, Some(url)) => {
            MailFacts::Activated(ActivatedFacts::first(url.clone()))
        }
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
    *overlapping = recorded.overlapping;
    let (id, state) = match recorded.mail {
        Enqueued::Created { id } => {
            info!(
                subscription = subscription.as_str(),
                kind = kind.as_str(),
                outbox_id = id,
                "mail queued"
            );
            return Ok(EventOutcome::Queued {
                outbox_id: id,
                recipients,
            });
        }
        Enqueued::AlreadyRecorded { id, state } => (id, state.as_str().to_owned()),
    };
    let Some(url) = download_url.filter(|_| event == ProvisioningEvent::Activated) else {
        return Ok(EventOutcome::AlreadyRecorded {
            outbox_id: id,
            state,
        });
    };
    let (n, Some(last)) = last_activation(store, subscription).await? else {
        return Ok(EventOutcome::AlreadyRecorded {
            outbox_id: id,
            state,
        });
    };
    let last_url = match MailFacts::parse(kind, &last.payload) {
        Ok(MailFacts::Activated(f)) => f.download_url,
        Ok(other) => {
            return Err(ServiceError::Invalid(format!(
                "outbox row {} holds {:?} facts, not an activation's",
                last.key,
                other.kind()
            )));
        }
        Err(e) => return Err(ServiceError::Invalid(e.to_string())),
    };
    if last_url == *url {
        return Ok(EventOutcome::AlreadyRecorded {
            outbox_id: last.id,
            state: last.state.as_str().to_owned(),
        });
    }
    let sid = subscription.as_str();
    let Some(corrected_by) = corrected_by else {
        return Err(ServiceError::Conflict(format!(
            "{sid} was activated with the download URL {:?}, not {:?}; to replace it and send \
             a corrected activation mail, run `renewal-worker event {sid} activated \
             --download-url {} --correct` (HTTP: add \"correct\": true to the event)",
            last_url.as_str(),
            url.as_str(),
            url.as_str()
        )));
    };
    let key = activation_correction_key(sid, n + 1);
    let facts = MailFacts::Activated(ActivatedFacts {
        download_url: url.clone(),
        correction: Some(n + 1),
        replaces_url: Some(last_url.clone()),
    });
    let new = NewNotification {
        message_id: message_id(&key, &settings.mail.message_id_domain),
        key: key.clone(),
        kind: kind.as_str().to_owned(),
        subscription_id: sid.to_owned(),
        recipients: recipients.clone(),
        payload: facts.to_payload(),
    };
    let audit = UrlCorrection {
        subscription_id: sid.to_owned(),
        outbox_key: key.clone(),
        old_url: last_url.as_str().to_owned(),
        new_url: url.as_str().to_owned(),
        corrected_by: corrected_by.to_owned(),
        corrected_at: now,
    };
    match store.record_url_correction(&new, &audit).await? {
        Some(outbox_id) => {
            info!(
                subscription = sid,
                key = %key,
                outbox_id,
                corrected_by,
                "download link corrected; corrected activation mail queued"
            );
            Ok(EventOutcome::Corrected {
                outbox_id,
                key,
                recipients,
                old_url: last_url.as_str().to_owned(),
            })
        }
        None => Err(ServiceError::Conflict(format!(
            "another correction of {sid}'s download URL was recorded at the same time \
             ({key}); check `renewal-worker notifications --subscription {sid}` and run again \
             if needed"
        ))),
    }
}

/// The number of the last activation mail recorded for the subscription (1 for the first,
/// `S/activated`) and its row; `(0, None)` if none is.
async fn last_activation(
    store: &Store,
    subscription: &SubscriptionId,
) -> Result<(u32, Option<OutboxRow>), ServiceError> {
    let sid = subscription.as_str();
    let Some(mut last) = store
        .outbox_by_key(&provisioning_key(sid, NotificationKind::Activated))
        .await?
    else {
        return Ok((0, None));
    };
    let mut n = 1;
    // Corrections are rare and few: one read each is cheaper than a pattern query that must
    // also parse the numbers back out of the keys.
    while let Some(row) = store
        .outbox_by_key(&activation_correction_key(sid, n + 1))
        .await?
    {
        last = row;
        n += 1;
    }
    Ok((n, Some(last)))
}
