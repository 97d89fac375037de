//! Seats bought and licenses assigned.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// Licenses bought on a subscription: 1 to 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u16")]
pub struct Seats(u16);

impl Seats {
    pub const MAX: u16 = 999;

    pub fn new(n: u16) -> Result<Self, DomainError> {
        Self::try_from(i64::from(n))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for Seats {
    type Error = DomainError;
    fn try_from(n: i64) -> Result<Self, DomainError> {
        if (1..=i64::from(Self::MAX)).contains(&n) {
            Ok(Self(n as u16))
        } else {
            Err(DomainError::Seats { value: n })
        }
    }
}

impl From<Seats> for u16 {
    fn from(s: Seats) -> u16 {
        s.0
    }
}

impl fmt::Display for Seats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Licenses currently assigned to end users: 0 up to the seat count. Auto-renew can only be
/// disabled at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "u16")]
pub struct AssignedLicenses(u16);

impl AssignedLicenses {
    pub fn parse_for(n: i64, seats: Seats) -> Result<Self, DomainError> {
        if (0..=i64::from(seats.get())).contains(&n) {
            Ok(Self(n as u16))
        } else {
            Err(DomainError::AssignedLicenses {
                value: n,
                seats: seats.get(),
            })
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl From<AssignedLicenses> for u16 {
    fn from(a: AssignedLicenses) -> u16 {
        a.0
    }
}

impl fmt::Display for AssignedLicenses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(Seats::new(10).unwrap().get(), 10);
        assert_eq!(
            Seats::new(0).unwrap_err().to_string(),
            "seats must be between 1 and 999, got 0"
        );
        assert!(Seats::new(1000).is_err());
        assert!(
            serde_json::from_str::<Seats>("-1")
                .unwrap_err()
                .to_string()
                .contains("-1")
        );
        assert_eq!(serde_json::from_str::<Seats>("999").unwrap().get(), 999);
        assert_eq!(serde_json::to_string(&Seats::new(7).unwrap()).unwrap(), "7");
        let ten = Seats::new(10).unwrap();
        assert_eq!(
            AssignedLicenses::parse_for(11, ten)
                .unwrap_err()
                .to_string(),
            "assigned licenses must be between 0 and the seat count 10, got 11"
        );
    }

    proptest! {
        #[test]
        fn seats_accept_exactly_1_to_999(n in -2000i64..2000) {
            prop_assert_eq!(Seats::try_from(n).is_ok(), (1..=999).contains(&n));
        }

        #[test]
        fn assigned_accepts_exactly_0_to_seats(seats in 1u16..=999, n in -10i64..1100) {
            let seats = Seats::new(seats).unwrap();
            prop_assert_eq!(
                AssignedLicenses::parse_for(n, seats).is_ok(),
                (0..=i64::from(seats.get())).contains(&n)
            );
        }
    }
}
