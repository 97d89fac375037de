//! What templates see: the subscription, its parties and the marketplace as views whose field
//! names are the template contract, and the mail's own facts as `details`.

use serde::Serialize;

use super::{MailFacts, NotificationKind};
use crate::config::MarketplaceSettings;
use crate::domain::SubscriptionContext;

/// What templates see. Field names are part of the template contract: add, don't rename.
#[derive(Debug, Clone, Serialize)]
pub struct MailContext {
    pub kind: &'static str,
    pub marketplace: MarketplaceView,
    pub subscription: SubscriptionView,
    pub reseller: ResellerView,
    pub customer: CustomerView,
    /// Facts particular to this mail (e.g. `download_url` for `activated`).
    pub details: MailFacts,
}

#[derive(Debug, Clone, Serialize)]
pub struct MarketplaceView {
    pub name: String,
    pub support_email: String,
    pub vendor_name: String,
    pub vendor_portal_url: String,
    /// `marketplace.manage_url` for this subscription.
    pub manage_url: String,
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
    /// The person to greet, when known (else templates greet the reseller by name).
    pub contact_name: Option<String>,
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
        details: MailFacts,
    ) -> Self {
        let s = &ctx.subscription;
        Self {
            kind: kind.as_str(),
            marketplace: MarketplaceView {
                name: marketplace.name.clone(),
                support_email: marketplace.support_email.clone(),
                vendor_name: marketplace.vendor_name.clone(),
                vendor_portal_url: marketplace.vendor_portal_url.clone(),
                manage_url: marketplace.manage_url_for(s.id.as_str()),
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
                contact_name: ctx.reseller.contact_name.clone(),
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
}
