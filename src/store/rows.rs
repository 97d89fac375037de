//! Turning stored rows back into values. A row that no longer parses (edited by hand, or
//! written by a newer version) is reported with its table, id and field, never guessed at.

use chrono::{DateTime, NaiveDate, Utc};

use super::sql::{DbRow, FromDbRow, from_millis};
use super::{OutboxState, StoreError};
use crate::domain::{
    AssignedLicenses, Billing, Csn, CustomerId, EmailAddress, ProductId, ResellerId, Seats,
    SubscriptionId, TimeZoneName,
};
use crate::domain::{Customer, Provisioning, Reseller, Subscription, SubscriptionContext};

pub(super) const OUTBOX_COLUMNS: &str = "id, key, kind, subscription_id, recipients, payload, \
     message_id, state, attempts, next_attempt_at, claimed_by, claimed_at, created_at, sent_at, \
     last_error";

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub subscription_id: String,
    pub recipients: Vec<String>,
    pub payload: serde_json::Value,
    pub message_id: String,
    pub state: OutboxState,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub claimed_by: Option<String>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub(super) fn outbox_from_row(r: &impl DbRow) -> Result<OutboxRow, StoreError> {
    let id: i64 = r.col("id")?;
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "outbox",
        id: id.to_string(),
        detail,
    };
    let recipients: String = r.col("recipients")?;
    let payload: String = r.col("payload")?;
    let state: String = r.col("state")?;
    Ok(OutboxRow {
        id,
        key: r.col("key")?,
        kind: r.col("kind")?,
        subscription_id: r.col("subscription_id")?,
        recipients: serde_json::from_str(&recipients)
            .map_err(|e| corrupt(format!("recipients: {e}")))?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload: {e}")))?,
        message_id: r.col("message_id")?,
        state: state.parse().map_err(corrupt)?,
        attempts: u32::try_from(r.col::<i64>("attempts")?)
            .map_err(|e| corrupt(format!("attempts: {e}")))?,
        next_attempt_at: from_millis(r.col("next_attempt_at")?),
        claimed_by: r.col("claimed_by")?,
        claimed_at: r.col::<Option<i64>>("claimed_at")?.map(from_millis),
        created_at: from_millis(r.col("created_at")?),
        sent_at: r.col::<Option<i64>>("sent_at")?.map(from_millis),
        last_error: r.col("last_error")?,
    })
}

/// The columns [`context_from_row`] reads, over `subscriptions s`, `resellers r` and
/// `customers c`.
pub(super) const CONTEXT_COLUMNS: &str = "
    s.id AS s_id, s.product_id, s.plan, s.billing, s.seats, s.assigned_licenses, s.term_start,
    s.term_end, s.auto_renew, s.notify_email, s.status, s.disable_effective_term_end,
    s.provisioning_opened_at, s.ready_at, s.order_processed_at, s.activated_at,
    s.order_abandoned_at, s.order_abandon_reason, s.order_in_flight,
    r.id AS r_id, r.name AS r_name, r.email AS r_email, r.csn, r.timezone, r.calendar,
    r.contact_name,
    c.id AS c_id, c.name AS c_name, c.email AS c_email";

/// Subscriptions with their parties, those that `filter` (a WHERE clause and what follows)
/// keeps.
pub(super) fn context_select(filter: &str) -> String {
    format!(
        "SELECT {CONTEXT_COLUMNS}
  FROM subscriptions s
  JOIN resellers r ON r.id = s.reseller_id
  JOIN customers c ON c.id = s.customer_id
  {filter}"
    )
}

/// The provisioning columns of a subscription row (see [`CONTEXT_COLUMNS`]).
pub(super) fn provisioning_from_row(r: &impl DbRow) -> Result<Provisioning, StoreError> {
    let at = |col: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(r.col::<Option<i64>>(col)?.map(from_millis))
    };
    let opened_at = at("provisioning_opened_at")?;
    Ok(Provisioning {
        opened_at,
        ready_at: at("ready_at")?,
        order_processed_at: at("order_processed_at")?,
        activated_at: at("activated_at")?,
        abandoned_at: at("order_abandoned_at")?,
        abandon_reason: r.col("order_abandon_reason")?,
        in_flight: r.col("order_in_flight")?,
    })
}

impl FromDbRow for SubscriptionContext {
    fn from_row(r: &impl DbRow) -> Result<Self, StoreError> {
        context_from_row(r)
    }
}

pub(super) fn context_from_row(r: &impl DbRow) -> Result<SubscriptionContext, StoreError> {
    let sid: String = r.col("s_id")?;
    let bad = |table: &'static str, id: &str, field: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt {
            table,
            id: id.to_owned(),
            detail: format!("{field}: {e}"),
        }
    };
    let rid: String = r.col("r_id")?;
    let cid: String = r.col("c_id")?;

    let reseller = Reseller {
        id: ResellerId::parse(&rid).map_err(|e| bad("resellers", &rid, "id", &e))?,
        name: r.col("r_name")?,
        email: EmailAddress::parse(&r.col::<String>("r_email")?)
            .map_err(|e| bad("resellers", &rid, "email", &e))?,
        csn: r
            .col::<Option<String>>("csn")?
            .map(|c| Csn::parse(&c))
            .transpose()
            .map_err(|e| bad("resellers", &rid, "csn", &e))?,
        timezone: TimeZoneName::parse(&r.col::<String>("timezone")?)
            .map_err(|e| bad("resellers", &rid, "timezone", &e))?,
        calendar: r.col("calendar")?,
        contact_name: r.col("contact_name")?,
    };
    let customer = Customer {
        id: CustomerId::parse(&cid).map_err(|e| bad("customers", &cid, "id", &e))?,
        reseller_id: reseller.id.clone(),
        name: r.col("c_name")?,
        email: EmailAddress::parse(&r.col::<String>("c_email")?)
            .map_err(|e| bad("customers", &cid, "email", &e))?,
    };
    let seats_raw: i64 = r.col("seats")?;
    let seats = u16::try_from(seats_raw)
        .ok()
        .and_then(|n| Seats::new(n).ok())
        .ok_or_else(|| bad("subscriptions", &sid, "seats", &seats_raw))?;
    let provisioning = provisioning_from_row(r)?;
    let subscription = Subscription {
        id: SubscriptionId::parse(&sid).map_err(|e| bad("subscriptions", &sid, "id", &e))?,
        reseller_id: reseller.id.clone(),
        customer_id: customer.id.clone(),
        product_id: ProductId::parse(&r.col::<String>("product_id")?)
            .map_err(|e| bad("subscriptions", &sid, "product_id", &e))?,
        plan: r.col("plan")?,
        billing: r
            .col::<String>("billing")?
            .parse::<Billing>()
            .map_err(|e| bad("subscriptions", &sid, "billing", &e))?,
        seats,
        assigned_licenses: AssignedLicenses::parse_for(r.col("assigned_licenses")?, seats)
            .map_err(|e| bad("subscriptions", &sid, "assigned_licenses", &e))?,
        term_start: r.col::<NaiveDate>("term_start")?,
        term_end: r.col::<NaiveDate>("term_end")?,
        auto_renew: r.col("auto_renew")?,
        notify_email: r
            .col::<Option<String>>("notify_email")?
            .map(|e| EmailAddress::parse(&e))
            .transpose()
            .map_err(|e| bad("subscriptions", &sid, "notify_email", &e))?,
        renewal: crate::domain::RenewalState {
            ended: r.col::<String>("status")? == "ended",
            disable_effective_term_end: r.col("disable_effective_term_end")?,
        },
        open_order: provisioning.opened_at.is_some(),
        provisioning,
    };
    Ok(SubscriptionContext {
        subscription,
        reseller,
        customer,
    })
}
