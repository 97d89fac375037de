//! The number of licenses assigned to end users, as the marketplace reports it when licenses
//! are un-assigned: 0 up to the subscription's seats.

use super::{ServiceError, subscription};
use crate::domain::{AssignedLicenses, Seats, SubscriptionId};
use crate::store::Store;

/// What setting the assigned licenses changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LicenseChange {
    pub previous: u32,
    pub assigned: u16,
    pub seats: Seats,
}

/// Sets the assigned licenses of `id` to `assigned`; a count out of range for its seats is
/// [`ServiceError::Licenses`].
pub async fn set_assigned_licenses(
    store: &Store,
    id: &SubscriptionId,
    assigned: i64,
) -> Result<LicenseChange, ServiceError> {
    let seats = subscription(store, id).await?.subscription.seats;
    let n = AssignedLicenses::parse_for(assigned, seats).map_err(ServiceError::Licenses)?;
    let update = store
        .set_assigned_licenses(id.as_str(), u32::from(n.get()))
        .await?
        .ok_or_else(|| ServiceError::UnknownSubscription(id.as_str().to_owned()))?;
    Ok(LicenseChange {
        previous: update.previous,
        assigned: n.get(),
        seats,
    })
}
