//! The vendor's 15-character product ID.

use std::fmt;

use super::{DomainError, text_serde};

/// A 15-character vendor code naming a service plan (plan, period, support level). People
/// write it dashed in 5-6-4 groups; it is stored without dashes, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s = super::no_controls("product ID", s)?.trim();
        let err = || DomainError::ProductId {
            value: s.to_owned(),
        };
        let bytes = s.as_bytes();
        let compact: String = match bytes.len() {
            15 => s.to_owned(),
            // Dashes only at the group boundaries: 5 + '-' + 6 + '-' + 4.
            17 if bytes[5] == b'-' && bytes[12] == b'-' => {
                format!("{}{}{}", &s[..5], &s[6..12], &s[13..])
            }
            _ => return Err(err()),
        };
        if compact.len() != 15 || !compact.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err());
        }
        Ok(Self(compact.to_ascii_uppercase()))
    }

    /// The normalised 15 characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `057O1-WW6525-L347`: how people read it.
    pub fn dashed(&self) -> String {
        format!("{}-{}-{}", &self.0[..5], &self.0[5..11], &self.0[11..])
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dashed())
    }
}

text_serde!(ProductId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        let p = ProductId::parse("057O1-WW6525-L347").unwrap();
        assert_eq!(p.as_str(), "057O1WW6525L347");
        assert_eq!(p.dashed(), "057O1-WW6525-L347");
        assert_eq!(p.to_string(), "057O1-WW6525-L347");
        assert_eq!(ProductId::parse("057o1ww6525l347").unwrap(), p);
        for bad in [
            "057O1-WW652-L3477",
            "057O1WW6525L34",
            "057O1WW6525L3477",
            "057O1-WW6525L347",
            "057O1_WW6525_L347",
            "057O1 WW6525 L347",
            "",
        ] {
            let err = ProductId::parse(bad).unwrap_err();
            assert!(matches!(err, DomainError::ProductId { .. }), "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn serde_round_trip_uses_the_normalised_form() {
        let p = ProductId::parse("057O1-WW6525-L347").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"057O1WW6525L347\"");
        let back: ProductId = serde_json::from_str("\"057O1-WW6525-L347\"").unwrap();
        assert_eq!(back, p);
    }

    proptest! {
        #[test]
        fn dashed_and_plain_are_the_same_id(s in "[A-Za-z0-9]{15}") {
            let plain = ProductId::parse(&s).unwrap();
            let dashed = ProductId::parse(&format!("{}-{}-{}", &s[..5], &s[5..11], &s[11..])).unwrap();
            prop_assert_eq!(&plain, &dashed);
            prop_assert_eq!(ProductId::parse(&plain.dashed()).unwrap(), plain.clone());
            prop_assert_eq!(plain.as_str(), s.to_ascii_uppercase());
        }

        #[test]
        fn misplaced_dashes_fail(s in "[A-Z0-9]{15}", a in 1usize..15, b in 1usize..15) {
            prop_assume!(!(a == 5 && b == 11) && a < b);
            let with = format!("{}-{}-{}", &s[..a], &s[a..b], &s[b..]);
            prop_assert!(ProductId::parse(&with).is_err(), "{}", with);
        }

        #[test]
        fn wrong_lengths_fail(s in "[A-Z0-9]{0,14}|[A-Z0-9]{16,30}") {
            prop_assert!(ProductId::parse(&s).is_err());
        }
    }
}
