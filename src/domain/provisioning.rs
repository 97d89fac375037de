//! An order's provisioning: which of the three notices have come and when, whether the order
//! is in flight, and what the state is (the furthest step reached, since the notices come from
//! independent systems and may arrive in any order).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ProvisioningEvent;

/// How far an order got: `pending` (created, no notice yet), then the three notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvisioningState {
    Pending,
    Ready,
    OrderProcessed,
    Activated,
}

impl ProvisioningState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::OrderProcessed => "order_processed",
            Self::Activated => "activated",
        }
    }

    /// Reads the stored form back (as [`ProvisioningState::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Ready,
            Self::OrderProcessed,
            Self::Activated,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The step that comes after this one, if any.
    pub fn next(self) -> Option<Self> {
        match self {
            Self::Pending => Some(Self::Ready),
            Self::Ready => Some(Self::OrderProcessed),
            Self::OrderProcessed => Some(Self::Activated),
            Self::Activated => None,
        }
    }
}

impl From<ProvisioningEvent> for ProvisioningState {
    fn from(e: ProvisioningEvent) -> Self {
        match e {
            ProvisioningEvent::Ready => Self::Ready,
            ProvisioningEvent::OrderProcessed => Self::OrderProcessed,
            ProvisioningEvent::Activated => Self::Activated,
        }
    }
}

impl fmt::Display for ProvisioningState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The worker's record of an order (not imported): each step's first instant, the abandon,
/// and whether the order is in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Provisioning {
    /// When the order was put in flight by its creation with `provisioning: "pending"`.
    pub opened_at: Option<DateTime<Utc>>,
    pub ready_at: Option<DateTime<Utc>>,
    pub order_processed_at: Option<DateTime<Utc>>,
    pub activated_at: Option<DateTime<Utc>>,
    pub abandoned_at: Option<DateTime<Utc>>,
    pub abandon_reason: Option<String>,
    /// From the first step (or the pending creation) until activated or abandoned.
    pub in_flight: bool,
}

impl Provisioning {
    /// The instant `step` was first recorded (`pending`: when the order was opened).
    pub fn at(&self, step: ProvisioningState) -> Option<DateTime<Utc>> {
        match step {
            ProvisioningState::Pending => self.opened_at,
            ProvisioningState::Ready => self.ready_at,
            ProvisioningState::OrderProcessed => self.order_processed_at,
            ProvisioningState::Activated => self.activated_at,
        }
    }

    /// The furthest step reached; `pending` while no notice came.
    pub fn state(&self) -> ProvisioningState {
        [
            ProvisioningState::Activated,
            ProvisioningState::OrderProcessed,
            ProvisioningState::Ready,
        ]
        .into_iter()
        .find(|s| self.at(*s).is_some())
        .unwrap_or(ProvisioningState::Pending)
    }

    /// The furthest step and when it was recorded: what an order in flight waits on since.
    /// `None` for an order never opened and without a notice.
    pub fn last_step(&self) -> Option<(ProvisioningState, DateTime<Utc>)> {
        let state = self.state();
        self.at(state).map(|at| (state, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_the_furthest_step_whatever_the_order() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let mut p = Provisioning::default();
        assert_eq!(p.state(), ProvisioningState::Pending);
        assert_eq!(p.last_step(), None);
        p.opened_at = Some(t("2026-01-01T00:00:00Z"));
        assert_eq!(
            p.last_step(),
            Some((ProvisioningState::Pending, t("2026-01-01T00:00:00Z")))
        );
        p.activated_at = Some(t("2026-01-03T00:00:00Z"));
        p.ready_at = Some(t("2026-01-04T00:00:00Z"));
        assert_eq!(p.state(), ProvisioningState::Activated);
        assert_eq!(ProvisioningState::Activated.next(), None);
        assert_eq!(
            ProvisioningState::Ready.next(),
            Some(ProvisioningState::OrderProcessed)
        );
        for s in ["pending", "ready", "order_processed", "activated"] {
            assert_eq!(ProvisioningState::parse(s).unwrap().as_str(), s);
        }
    }
}
