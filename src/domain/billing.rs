//! How a subscription is paid: annual or monthly pre-paid.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// How the 12-month commitment is paid. Either way the reseller pays until the term end, and
/// there are no refunds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    AnnualPrepaid,
    MonthlyPrepaid,
}

impl Billing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AnnualPrepaid => "annual_prepaid",
            Self::MonthlyPrepaid => "monthly_prepaid",
        }
    }

    pub fn instalments(self) -> u32 {
        match self {
            Self::AnnualPrepaid => 1,
            Self::MonthlyPrepaid => 12,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::AnnualPrepaid => "annual pre-paid",
            Self::MonthlyPrepaid => "monthly pre-paid (12 instalments)",
        }
    }
}

impl FromStr for Billing {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        match super::no_controls("billing plan", s)?.trim() {
            "annual_prepaid" => Ok(Self::AnnualPrepaid),
            "monthly_prepaid" => Ok(Self::MonthlyPrepaid),
            other => Err(DomainError::Billing {
                value: other.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Billing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(
            "annual_prepaid".parse::<Billing>().unwrap(),
            Billing::AnnualPrepaid
        );
        assert_eq!(Billing::MonthlyPrepaid.instalments(), 12);
        let err = "monthly".parse::<Billing>().unwrap_err();
        assert!(err.to_string().contains("\"monthly\""));
        for b in [Billing::AnnualPrepaid, Billing::MonthlyPrepaid] {
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(json, format!("\"{}\"", b.as_str()));
            assert_eq!(serde_json::from_str::<Billing>(&json).unwrap(), b);
            assert_eq!(b.as_str().parse::<Billing>().unwrap(), b);
        }
    }
}
