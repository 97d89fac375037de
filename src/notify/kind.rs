//! The kinds of mail and who receives each.

use serde::Serialize;

use crate::config::MarketplaceSettings;
use crate::domain::SubscriptionContext;
use crate::domain::{EmailAddress, ProvisioningEvent};

/// Every kind of mail the worker sends. The text form names the template folder and is stored
/// in the outbox, so it never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Ready,
    OrderProcessed,
    Activated,
    /// Before the auto-renew cutoff: the renewal can still be stopped.
    RenewalReminder,
    /// The term ended with auto-renew on: a new term began.
    SubscriptionRenewed,
    /// The term ended with auto-renew off: the subscription stopped.
    SubscriptionEnded,
    /// A request to disable auto-renew was accepted.
    AutoRenewDisabled,
    /// A request to disable auto-renew was rejected (licenses still assigned).
    DisableRejected,
    /// An order in flight waited too long on its next step: to the marketplace's operations.
    OrderStalled,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 9] = [
        Self::Ready,
        Self::OrderProcessed,
        Self::Activated,
        Self::RenewalReminder,
        Self::SubscriptionRenewed,
        Self::SubscriptionEnded,
        Self::AutoRenewDisabled,
        Self::DisableRejected,
        Self::OrderStalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::OrderProcessed => "order_processed",
            Self::Activated => "activated",
            Self::RenewalReminder => "renewal_reminder",
            Self::SubscriptionRenewed => "subscription_renewed",
            Self::SubscriptionEnded => "subscription_ended",
            Self::AutoRenewDisabled => "auto_renew_disabled",
            Self::DisableRejected => "disable_rejected",
            Self::OrderStalled => "order_stalled",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == norm)
            .ok_or_else(|| {
                format!(
                    "unknown notification kind {s:?}: expected one of {}",
                    Self::ALL.map(|k| k.as_str().replace('_', "-")).join(", ")
                )
            })
    }

    /// Who receives it. The "ready" mail goes to the address entered on the order (which a
    /// reseller may have set to its own), falling back to the customer; the vendor's mails go
    /// to the reseller. The answer to a disable request also goes to whoever asked: see
    /// [`answer_recipients`].
    pub fn recipients(self, ctx: &SubscriptionContext) -> Vec<EmailAddress> {
        match self {
            Self::Ready => vec![
                ctx.subscription
                    .notify_email
                    .clone()
                    .unwrap_or_else(|| ctx.customer.email.clone()),
            ],
            Self::OrderProcessed
            | Self::Activated
            | Self::RenewalReminder
            | Self::SubscriptionRenewed
            | Self::SubscriptionEnded
            | Self::AutoRenewDisabled
            | Self::DisableRejected => vec![ctx.reseller.email.clone()],
            // Not a party of the subscription: see [`NotificationKind::addressees`].
            Self::OrderStalled => Vec::new(),
        }
    }

    /// Who receives it, the marketplace's own addresses included: an order that stalled
    /// goes to `marketplace.operations_email` (checked when the settings load), every other
    /// kind to [`NotificationKind::recipients`].
    pub fn addressees(
        self,
        ctx: &SubscriptionContext,
        marketplace: &MarketplaceSettings,
    ) -> Vec<EmailAddress> {
        match self {
            Self::OrderStalled => EmailAddress::parse(&marketplace.operations_email)
                .into_iter()
                .collect(),
            other => other.recipients(ctx),
        }
    }
}

/// Who receives the answer to a request to disable auto-renew (accepted or rejected): whoever
/// asked, and the reseller if someone else did.
pub fn answer_recipients(
    requested_by: &EmailAddress,
    ctx: &SubscriptionContext,
) -> Vec<EmailAddress> {
    let mut to = vec![requested_by.clone()];
    if ctx.reseller.email != *requested_by {
        to.push(ctx.reseller.email.clone());
    }
    to
}

/// Addresses as the outbox stores them.
pub fn address_list(addresses: &[EmailAddress]) -> Vec<String> {
    addresses.iter().map(|e| e.as_str().to_owned()).collect()
}

impl From<ProvisioningEvent> for NotificationKind {
    fn from(e: ProvisioningEvent) -> Self {
        match e {
            ProvisioningEvent::Ready => Self::Ready,
            ProvisioningEvent::OrderProcessed => Self::OrderProcessed,
            ProvisioningEvent::Activated => Self::Activated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_in_either_spelling() {
        assert_eq!(
            NotificationKind::parse("order-processed").unwrap(),
            NotificationKind::OrderProcessed
        );
        assert_eq!(
            NotificationKind::parse("order_processed").unwrap(),
            NotificationKind::OrderProcessed
        );
        let err = NotificationKind::parse("shipped").unwrap_err();
        assert!(
            err.contains("shipped") && err.contains("order-processed"),
            "{err}"
        );
    }

    #[test]
    fn the_answer_to_a_request_goes_to_the_requester_and_the_reseller_once() {
        let ctx = super::super::sample_context();
        let buyer = EmailAddress::parse("buyer@acme.example").unwrap();
        assert_eq!(
            address_list(&answer_recipients(&buyer, &ctx)),
            ["buyer@acme.example", "ops@acme.example"]
        );
        assert_eq!(
            address_list(&answer_recipients(&ctx.reseller.email, &ctx)),
            ["ops@acme.example"]
        );
    }
}
