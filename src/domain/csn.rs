//! The reseller's Customer Specific Number.

use std::fmt;

use super::{DomainError, text_serde};

/// Customer Specific Number: the vendor's 10-digit reseller number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Csn(String);

impl Csn {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s = super::no_controls("CSN", s)?.trim();
        if s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Self(s.to_owned()));
        }
        let digits = s.chars().filter(char::is_ascii_digit).count();
        let got = if digits == s.chars().count() {
            format!("{digits}")
        } else {
            "characters other than digits".to_owned()
        };
        Err(DomainError::Csn {
            value: s.to_owned(),
            got,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Csn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_serde!(Csn);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(Csn::parse(" 5101234567 ").unwrap().as_str(), "5101234567");
        for bad in [
            "510123456",
            "51012345678",
            "51012a4567",
            "",
            "５１０１２３４５６７",
        ] {
            let err = Csn::parse(bad).unwrap_err();
            assert!(matches!(err, DomainError::Csn { .. }), "{bad}");
            assert!(err.to_string().contains(bad.trim()), "{err}");
        }
        assert!(
            Csn::parse("510123456")
                .unwrap_err()
                .to_string()
                .contains("(got 9)")
        );
    }

    #[test]
    fn serde_round_trip() {
        let c = Csn::parse("0001234567").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"0001234567\"");
        assert_eq!(serde_json::from_str::<Csn>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Csn>("\"123\"").is_err());
    }

    proptest! {
        #[test]
        fn any_ten_digits_parse_and_round_trip(s in "[0-9]{10}") {
            let c = Csn::parse(&s).unwrap();
            prop_assert_eq!(c.as_str(), s.as_str());
            prop_assert_eq!(Csn::parse(&c.to_string()).unwrap(), c);
        }

        #[test]
        fn other_lengths_fail(s in "[0-9]{0,9}|[0-9]{11,20}") {
            prop_assert!(Csn::parse(&s).is_err());
        }

        #[test]
        fn a_non_digit_anywhere_fails(prefix in "[0-9]{0,9}", c in "[^0-9\\s]", pad in "[0-9]{9}") {
            let s: String = format!("{prefix}{c}{pad}").chars().take(10).collect();
            prop_assume!(s.chars().any(|c| !c.is_ascii_digit()));
            prop_assert!(Csn::parse(&s).is_err());
        }
    }
}
