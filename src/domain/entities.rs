//! The entities the marketplace tells us about, built only from parsed domain values.

use chrono::NaiveDate;
use serde::Serialize;

use super::{
    AssignedLicenses, Billing, Csn, CustomerId, EmailAddress, ProductId, Provisioning, ResellerId,
    Seats, SubscriptionId, TimeZoneName,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reseller {
    pub id: ResellerId,
    pub name: String,
    pub email: EmailAddress,
    pub csn: Option<Csn>,
    pub timezone: TimeZoneName,
    /// Business-day calendar name; `None` means the configured default.
    pub calendar: Option<String>,
    /// The person mail to the reseller greets, when the marketplace names one.
    pub contact_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    pub id: CustomerId,
    pub reseller_id: ResellerId,
    pub name: String,
    pub email: EmailAddress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub reseller_id: ResellerId,
    pub customer_id: CustomerId,
    pub product_id: ProductId,
    pub plan: String,
    pub billing: Billing,
    pub seats: Seats,
    pub assigned_licenses: AssignedLicenses,
    /// Start of the first term: every later term end is an anniversary of this date.
    pub term_start: NaiveDate,
    /// End of the current term.
    pub term_end: NaiveDate,
    pub auto_renew: bool,
    /// Address entered on the order for the "ready" mail; the reseller may have put its own.
    pub notify_email: Option<EmailAddress>,
    /// The worker's renewal state (not imported): whether the subscription has ended, and the
    /// term end at which an accepted disable request takes effect.
    pub renewal: RenewalState,
    /// Created with `provisioning: "pending"`: its order is in flight from its creation (as
    /// imported; stored as the instant it was first stored, in `provisioning.opened_at`).
    pub open_order: bool,
    /// The worker's record of its order (not imported).
    pub provisioning: Provisioning,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RenewalState {
    pub ended: bool,
    pub disable_effective_term_end: Option<NaiveDate>,
}

/// A subscription with the parties it belongs to: everything a mail about it may mention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionContext {
    pub subscription: Subscription,
    pub reseller: Reseller,
    pub customer: Customer,
}
