//! Reminder offsets: calendar days (`30d`) or business days (`10bd`) before the cutoff.

use std::fmt;
use std::str::FromStr;

/// How long before the cutoff date a reminder is due: calendar days (`30d`) or business days
/// (`10bd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReminderOffset {
    Days(u32),
    BusinessDays(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a reminder offset: expected a number of days like \"30d\" or business days like \"10bd\" (0 to 366)"
)]
pub struct OffsetError(pub String);

impl FromStr for ReminderOffset {
    type Err = OffsetError;
    fn from_str(s: &str) -> Result<Self, OffsetError> {
        let t = s.trim();
        let err = || OffsetError(s.to_owned());
        let (digits, business) = if let Some(d) = t.strip_suffix("bd") {
            (d, true)
        } else if let Some(d) = t.strip_suffix('d') {
            (d, false)
        } else {
            return Err(err());
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let n: u32 = digits.parse().map_err(|_| err())?;
        if n > 366 {
            return Err(err());
        }
        Ok(if business {
            Self::BusinessDays(n)
        } else {
            Self::Days(n)
        })
    }
}

impl fmt::Display for ReminderOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Days(n) => write!(f, "{n}d"),
            Self::BusinessDays(n) => write!(f, "{n}bd"),
        }
    }
}

impl serde::Serialize for ReminderOffset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ReminderOffset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!(
            "30d".parse::<ReminderOffset>().unwrap(),
            ReminderOffset::Days(30)
        );
        assert_eq!(
            " 10bd".parse::<ReminderOffset>().unwrap(),
            ReminderOffset::BusinessDays(10)
        );
        assert_eq!(ReminderOffset::BusinessDays(1).to_string(), "1bd");
        for bad in ["10x", "-3d", "", "d", "bd", "3 d", "999d", "1.5d"] {
            let err = bad.parse::<ReminderOffset>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let json = serde_json::to_string(&ReminderOffset::Days(30)).unwrap();
        assert_eq!(json, "\"30d\"");
        assert!(serde_json::from_str::<ReminderOffset>("\"7w\"").is_err());
    }
}
