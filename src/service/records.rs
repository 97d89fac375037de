//! Resellers, customers and subscriptions coming in (the `import` command, `PUT
//! /subscriptions/{id}`, the pulling source): what the rows refer to is looked up, every row is
//! checked against it, and then all are upserted in one transaction — or nothing is written.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::ServiceError;
use crate::calendar::CalendarRegistry;
use crate::import::{self, Known, RawFile};
use crate::store::{ImportCounts, Store, StoreError};

/// What the database already holds that the rows of `raw` refer to: their resellers, their
/// customers, and which of their subscriptions were disabled for good.
pub async fn known_for(store: &Store, raw: &RawFile) -> Result<Known, StoreError> {
    fn text<'a>(rows: &'a [Map<String, Value>], field: &str) -> Vec<&'a str> {
        rows.iter().filter_map(|r| r.get(field)?.as_str()).collect()
    }
    let mut reseller_ids = text(&raw.customers, "reseller_id");
    reseller_ids.extend(text(&raw.subscriptions, "reseller_id"));
    Ok(Known {
        resellers: store
            .existing_resellers(&reseller_ids)
            .await?
            .into_iter()
            .collect(),
        customers: store
            .existing_customers(&text(&raw.subscriptions, "customer_id"))
            .await?
            .into_iter()
            .collect(),
        disabled: store
            .irrevocably_disabled(&text(&raw.subscriptions, "id"))
            .await?
            .into_iter()
            .collect(),
    })
}

/// Checks every row of `raw` (against the store and the calendars), then upserts them all in
/// one transaction. Any invalid row rejects the lot: [`ServiceError::Records`] lists every
/// problem, and nothing is written. `progress` counts rows checked, then rows written.
pub async fn check_and_upsert(
    store: &Store,
    calendars: &CalendarRegistry,
    raw: &RawFile,
    now: DateTime<Utc>,
    mut progress: impl FnMut(usize),
) -> Result<ImportCounts, ServiceError> {
    let known = known_for(store, raw).await?;
    let known_calendar = |name: &str| calendars.get(name).map(|_| ()).map_err(|e| e.to_string());
    let checked = import::check(raw, &known, &known_calendar, &mut progress)?;
    Ok(store
        .upsert_records(
            &checked.resellers,
            &checked.customers,
            &checked.subscriptions,
            now,
            progress,
        )
        .await?)
}
