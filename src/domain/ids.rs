//! Reseller, customer and subscription ids.

use std::fmt;

use super::{DomainError, text_serde};

/// Exactly as given: an id is a key, so `" S1"` or `"S1\r\n"` is refused rather than taken
/// for `S1`.
fn check_id(what: &'static str, s: &str) -> Result<String, DomainError> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(DomainError::Id {
            what,
            value: s.to_owned(),
        })
    }
}

/// Marketplace identifiers: short, printable, safe in keys, file names and URLs.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                check_id($what, s).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        text_serde!($name);
    };
}

id_type!(
    /// The marketplace's id of a subscription.
    SubscriptionId,
    "subscription"
);
id_type!(
    /// The marketplace's id of a reseller.
    ResellerId,
    "reseller"
);
id_type!(
    /// The marketplace's id of an end customer.
    CustomerId,
    "customer"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(
            SubscriptionId::parse("S-1.a_b:c").unwrap().as_str(),
            "S-1.a_b:c"
        );
        for bad in [
            "",
            "S 1",
            "S/1",
            "Ü1",
            &"x".repeat(65),
            " S1",
            "S1 ",
            "S1\r\n",
            "S1\n",
            "\tS1",
            "S1\u{85}",
        ] {
            let err = ResellerId::parse(bad).unwrap_err();
            assert!(err.to_string().contains("reseller id"), "{err}");
        }
        let err = SubscriptionId::parse("S1\r\n").unwrap_err().to_string();
        assert!(err.contains(r#""S1\r\n""#), "{err}");
        let err = CustomerId::parse("C/1").unwrap_err();
        assert!(err.to_string().contains("\"C/1\"") && err.to_string().contains("customer"));
    }

    #[test]
    fn serde_round_trip() {
        let id = SubscriptionId::parse("S1").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"S1\"");
        assert_eq!(
            serde_json::from_str::<SubscriptionId>("\"S1\"").unwrap(),
            id
        );
        assert!(serde_json::from_str::<SubscriptionId>("\"S 1\"").is_err());
    }

    proptest! {
        #[test]
        fn the_alphabet_and_lengths_are_exactly_these(s in "[A-Za-z0-9._:-]{1,64}") {
            let id = SubscriptionId::parse(&s).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
        }

        #[test]
        fn too_long_fails(s in "[A-Za-z0-9]{65,100}") {
            prop_assert!(CustomerId::parse(&s).is_err());
        }

        #[test]
        fn another_character_fails(a in "[A-Za-z0-9]{0,10}", c in "[^A-Za-z0-9._:\\s-]", b in "[A-Za-z0-9]{0,10}") {
            let s = format!("{a}{c}{b}");
            prop_assert!(ResellerId::parse(&s).is_err());
        }
    }
}
