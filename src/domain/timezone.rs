//! A reseller's IANA time zone.

use std::fmt;

use chrono_tz::Tz;

use super::{DomainError, text_serde};

/// An IANA time zone: where a reseller's "end of the cutoff day" and "09:00" are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZoneName(Tz);

impl TimeZoneName {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s = super::no_controls("time zone", s)?.trim();
        s.parse::<Tz>()
            .map(Self)
            .map_err(|_| DomainError::TimeZone {
                value: s.to_owned(),
            })
    }

    pub fn tz(self) -> Tz {
        self.0
    }

    pub fn as_str(&self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Tz> for TimeZoneName {
    fn from(tz: Tz) -> Self {
        Self(tz)
    }
}

text_serde!(TimeZoneName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(
            TimeZoneName::parse("America/New_York").unwrap().as_str(),
            "America/New_York"
        );
        assert_eq!(
            TimeZoneName::parse("EST5EDT").unwrap().tz(),
            chrono_tz::EST5EDT
        );
        for bad in ["Mars/Olympus", "", "new york"] {
            let err = TimeZoneName::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let tz = TimeZoneName::parse("Europe/Berlin").unwrap();
        let json = serde_json::to_string(&tz).unwrap();
        assert_eq!(serde_json::from_str::<TimeZoneName>(&json).unwrap(), tz);
    }
}
