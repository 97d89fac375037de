//! Orders as a whole: whether a reseller may start a new one now (one order in flight per
//! reseller, the vendor's rule), and an operator's abandon of an order that will not complete.
//! The steps themselves come in as provisioning events (see [`super::events`]); the watchdog
//! of stalled orders is planned by the poll (see [`super::poll`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::info;

use super::ServiceError;
use crate::domain::{ProvisioningState, ResellerId, SubscriptionId};
use crate::store::{Abandoned, Store};

/// The order a reseller has in flight, as the order check shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlight {
    pub subscription: String,
    pub state: ProvisioningState,
    /// When it reached that state (or was opened, for `pending`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// Whether a reseller may start a new order now: `{"can_order": true}`, or
/// `{"can_order": false, "in_flight": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderCheck {
    pub can_order: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
}

/// Whether `reseller` may start a new order now; [`ServiceError::UnknownReseller`] if there is
/// no such reseller.
pub async fn order_check(store: &Store, reseller: &ResellerId) -> Result<OrderCheck, ServiceError> {
    if !store.reseller_exists(reseller.as_str()).await? {
        return Err(ServiceError::UnknownReseller(reseller.as_str().to_owned()));
    }
    Ok(match store.order_in_flight(reseller.as_str()).await? {
        None => OrderCheck {
            can_order: true,
            in_flight: None,
        },
        Some(order) => {
            let state = order.provisioning.state();
            OrderCheck {
                can_order: false,
                in_flight: Some(InFlight {
                    subscription: order.subscription,
                    state,
                    since: order.provisioning.at(state),
                }),
            }
        }
    })
}

/// Marks the order of `subscription` abandoned: it is no longer in flight, so its reseller may
/// order again and the watchdog stops watching it. The reason is required and audited with
/// `via` (who asked: `cli`, `http`). Refused, with nothing written, for an unknown
/// subscription, an activated order (final), one abandoned before, or one never started.
pub async fn abandon_order(
    store: &Store,
    subscription: &SubscriptionId,
    reason: &str,
    via: &str,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ServiceError::Field {
            field: "reason",
            message: "an empty reason is refused: say why the order is abandoned".into(),
        });
    }
    if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(ServiceError::Field {
            field: "reason",
            message: format!(
                "{reason:?} is refused: at most 500 characters, on one line, without control characters"
            ),
        });
    }
    let sid = subscription.as_str();
    match store.abandon_order(sid, reason, via, now).await? {
        Abandoned::Done => {
            info!(subscription = sid, via, "order abandoned");
            Ok(())
        }
        Abandoned::UnknownSubscription => Err(ServiceError::UnknownSubscription(sid.to_owned())),
        Abandoned::Activated { at } => Err(ServiceError::Conflict(format!(
            "the order of subscription {sid:?} was activated at {}: an activated order is complete and cannot be abandoned",
            at.to_rfc3339()
        ))),
        Abandoned::AlreadyAbandoned { at } => Err(ServiceError::Conflict(format!(
            "the order of subscription {sid:?} was abandoned already, at {}",
            at.to_rfc3339()
        ))),
        Abandoned::NoOrder => Err(ServiceError::Conflict(format!(
            "subscription {sid:?} has no order to abandon: no provisioning step was recorded and it was not created pending"
        ))),
    }
}
