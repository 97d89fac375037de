//! Notifications: which mails exist, what identifies each one (its outbox key), who gets it,
//! and what its templates see.

mod render;
pub use render::sample_context;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::MarketplaceSettings;
use crate::domain::{EmailAddress, ProvisioningEvent};
use crate::model::SubscriptionContext;

pub use render::{Rendered, Renderer, TemplateError};

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
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 8] = [
        Self::Ready,
        Self::OrderProcessed,
        Self::Activated,
        Self::RenewalReminder,
        Self::SubscriptionRenewed,
        Self::SubscriptionEnded,
        Self::AutoRenewDisabled,
        Self::DisableRejected,
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
    /// to the reseller.
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
        }
    }

    /// Facts a template of this kind may use beyond the subscription itself, as sample
    /// values: used to check every template at start and to preview.
    pub fn sample_details(self) -> Value {
        match self {
            Self::Activated => json!({"download_url": "https://manage.autodesk.com/products"}),
            Self::Ready | Self::OrderProcessed => json!({}),
            Self::RenewalReminder => json!({
                "term_end": "2026-12-28", "offset": "10bd", "cutoff_date": "2026-12-18",
                "cutoff_at": "2026-12-19T00:00:00-05:00",
                "cutoff_deadline": "Friday 2026-12-18, 23:59 EST (America/New_York)",
                "timezone": "America/New_York", "cc": []
            }),
            Self::SubscriptionRenewed => json!({
                "term_end": "2026-12-28", "new_term_start": "2026-12-28",
                "new_term_end": "2027-12-28", "renews_again": true
            }),
            Self::SubscriptionEnded => json!({"term_end": "2026-12-28"}),
            Self::AutoRenewDisabled => json!({
                "effective_term_end": "2027-12-28", "renews_once_more": true,
                "term_end": "2026-12-28", "requested_by": "buyer@acme.example",
                "cutoff_at": "2026-12-19T00:00:00-05:00"
            }),
            Self::DisableRejected => json!({
                "assigned_licenses": 3, "requested_by": "buyer@acme.example",
                "term_end": "2026-12-28"
            }),
        }
    }
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

/// The outbox key of a provisioning mail: one per (subscription, event), forever.
pub fn provisioning_key(subscription_id: &str, kind: NotificationKind) -> String {
    format!("{subscription_id}/{}", kind.as_str())
}

/// The outbox key of a renewal reminder: one per (subscription, term end, offset).
pub fn reminder_key(subscription_id: &str, term_end: chrono::NaiveDate, offset: &str) -> String {
    format!("{subscription_id}/renewal_reminder/{term_end}/{offset}")
}

/// The outbox key of a once-per-term mail (renewed, ended).
pub fn term_key(
    subscription_id: &str,
    kind: NotificationKind,
    term_end: chrono::NaiveDate,
) -> String {
    format!("{subscription_id}/{}/{term_end}", kind.as_str())
}

/// A Message-ID derived from the outbox key alone, so a resend after a crash carries the same
/// id and the receiving side can drop the duplicate.
pub fn message_id(key: &str, domain: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{domain}>")
}

/// What templates see. Field names are part of the template contract: add, don't rename.
#[derive(Debug, Clone, Serialize)]
pub struct MailContext {
    pub kind: &'static str,
    pub marketplace: MarketplaceView,
    pub subscription: SubscriptionView,
    pub reseller: ResellerView,
    pub customer: CustomerView,
    /// Facts particular to this mail (e.g. `download_url` for `activated`).
    pub details: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct MarketplaceView {
    pub name: String,
    pub support_email: String,
    pub vendor_name: String,
    pub vendor_portal_url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    pub id: String,
    /// Dashed 5-6-4 form, as people read it.
    pub product_id: String,
    pub plan: String,
    pub billing: String,
    pub seats: u16,
    pub assigned_licenses: u16,
    /// Start of the current term.
    pub term_start: String,
    pub term_end: String,
    /// Start of the first term.
    pub first_term_start: String,
    pub auto_renew: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResellerView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub csn: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CustomerView {
    pub id: String,
    pub name: String,
    pub email: String,
}

impl MailContext {
    pub fn new(
        kind: NotificationKind,
        ctx: &SubscriptionContext,
        marketplace: &MarketplaceSettings,
        details: Value,
    ) -> Self {
        let s = &ctx.subscription;
        Self {
            kind: kind.as_str(),
            marketplace: MarketplaceView {
                name: marketplace.name.clone(),
                support_email: marketplace.support_email.clone(),
                vendor_name: marketplace.vendor_name.clone(),
                vendor_portal_url: marketplace.vendor_portal_url.clone(),
            },
            subscription: SubscriptionView {
                id: s.id.as_str().to_owned(),
                product_id: s.product_id.dashed(),
                plan: s.plan.clone(),
                billing: s.billing.label().to_owned(),
                seats: s.seats.get(),
                assigned_licenses: s.assigned_licenses.get(),
                term_start: current_term_start(s.term_start, s.term_end).to_string(),
                term_end: s.term_end.to_string(),
                first_term_start: s.term_start.to_string(),
                auto_renew: s.auto_renew,
            },
            reseller: ResellerView {
                id: ctx.reseller.id.as_str().to_owned(),
                name: ctx.reseller.name.clone(),
                email: ctx.reseller.email.as_str().to_owned(),
                csn: ctx.reseller.csn.as_ref().map(|c| c.as_str().to_owned()),
            },
            customer: CustomerView {
                id: ctx.customer.id.as_str().to_owned(),
                name: ctx.customer.name.clone(),
                email: ctx.customer.email.as_str().to_owned(),
            },
            details,
        }
    }
}

fn current_term_start(first: chrono::NaiveDate, term_end: chrono::NaiveDate) -> chrono::NaiveDate {
    let k = crate::renewal::term_index_at(first, term_end.pred_opt().unwrap_or(term_end));
    if k <= 1 {
        first
    } else {
        crate::renewal::term_end(first, k - 1).unwrap_or(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_term_starts_at_the_previous_anniversary() {
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            current_term_start(d("2024-02-29"), d("2026-02-28")),
            d("2025-02-28")
        );
        assert_eq!(
            current_term_start(d("2025-12-28"), d("2026-12-28")),
            d("2025-12-28")
        );
    }

    #[test]
    fn message_ids_depend_on_the_key_only() {
        let a = message_id("S1/ready", "example.org");
        assert_eq!(a, message_id("S1/ready", "example.org"));
        assert_ne!(a, message_id("S1/activated", "example.org"));
        assert!(a.starts_with('<') && a.ends_with("@example.org>"));
        assert_eq!(a.len(), 1 + 32 + 1 + "example.org".len() + 1);
    }

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
}
