//! Email addresses, checked as lettre will send to them.

use std::fmt;

use super::{DomainError, text_serde};

/// A syntactically valid address (checked by lettre, which will have to send to it). The
/// domain part is lower-cased; the local part is kept as given, since it may be
/// case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s = super::no_controls("email address", s)?.trim();
        let err = |reason: &str| DomainError::Email {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.len() > 254 {
            return Err(err("longer than 254 characters"));
        }
        let address: lettre::Address = s
            .parse()
            .map_err(|e: lettre::address::AddressError| err(&e.to_string()))?;
        Ok(Self(format!(
            "{}@{}",
            address.user(),
            address.domain().to_ascii_lowercase()
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_address(&self) -> lettre::Address {
        // Parsed on the way in, so it parses again.
        self.0
            .parse()
            .unwrap_or_else(|_| unreachable!("EmailAddress holds a parsed address"))
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_serde!(EmailAddress);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        let e = EmailAddress::parse(" Ops.Team@ACME.Example ").unwrap();
        assert_eq!(e.as_str(), "Ops.Team@acme.example");
        assert_eq!(e.to_address().to_string(), "Ops.Team@acme.example");
        for bad in [
            "",
            "ops",
            "ops@",
            "@acme.example",
            "ops@@acme.example",
            "o ps@acme.example",
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert!(matches!(err, DomainError::Email { .. }), "{bad}");
            assert!(
                err.to_string().contains(&format!("{:?}", bad.trim())),
                "{err}"
            );
        }
        for bad in [
            "ops@acme.example\r\n",
            "ops@acme.example\n",
            "\0ops@acme.example",
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert!(matches!(err, DomainError::Control { .. }), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(EmailAddress::parse(&long).is_err());
    }

    #[test]
    fn serde_round_trip() {
        let e = EmailAddress::parse("it@globex.example").unwrap();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<EmailAddress>(&json).unwrap(), e);
        assert!(serde_json::from_str::<EmailAddress>("\"nope\"").is_err());
    }

    proptest! {
        #[test]
        fn simple_addresses_parse(user in "[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]", host in "[a-z][a-z0-9-]{0,10}[a-z0-9]", tld in "[a-z]{2,6}") {
            prop_assume!(!user.contains(".."));
            let s = format!("{user}@{host}.{tld}");
            let e = EmailAddress::parse(&s).unwrap();
            prop_assert_eq!(e.as_str(), s.as_str());
        }

        #[test]
        fn no_at_sign_fails(s in "[a-z0-9.]{1,30}") {
            prop_assert!(EmailAddress::parse(&s).is_err());
        }
    }
}
