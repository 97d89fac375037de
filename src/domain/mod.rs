//! Values from outside, parsed once at the edge ("parse, don't validate"): a `Csn` cannot hold
//! nine digits, a `ProductId` is always the normalised 15 characters. Each type's `parse`
//! refuses any control character, anywhere (it is never stripped: `S1\r\n` is not `S1`), then
//! trims surrounding spaces (ids are taken exactly as given); its error names the offending
//! value; callers add the field.
//! The entities (reseller, customer, subscription) are built only from such values.

mod billing;
mod csn;
mod email;
mod entities;
mod event;
mod ids;
mod product_id;
mod provisioning;
mod seats;
mod timezone;
mod url;

pub use billing::Billing;
pub use csn::Csn;
pub use email::EmailAddress;
pub use entities::{Customer, RenewalState, Reseller, Subscription, SubscriptionContext};
pub use event::ProvisioningEvent;
pub use ids::{CustomerId, ResellerId, SubscriptionId};
pub use product_id::ProductId;
pub use provisioning::{Provisioning, ProvisioningState};
pub use seats::{AssignedLicenses, Seats};
pub use timezone::TimeZoneName;
pub use url::DownloadUrl;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{value:?} is not a CSN: a CSN is exactly 10 digits (got {got})")]
    Csn { value: String, got: String },
    #[error(
        "{value:?} is not a product ID: expected 15 letters/digits, optionally dashed in 5-6-4 groups like 057O1-WW6525-L347"
    )]
    ProductId { value: String },
    #[error("{value:?} is not an email address: {reason}")]
    Email { value: String, reason: String },
    #[error("{value:?} is not a valid {what} id: use 1 to 64 characters of A-Z a-z 0-9 . _ : -")]
    Id { what: &'static str, value: String },
    #[error("{value:?} is not a billing plan: expected annual_prepaid or monthly_prepaid")]
    Billing { value: String },
    #[error("seats must be between 1 and 999, got {value}")]
    Seats { value: i64 },
    #[error("assigned licenses must be between 0 and the seat count {seats}, got {value}")]
    AssignedLicenses { value: i64, seats: u16 },
    #[error("{value:?} is not an IANA time zone name (like Europe/Berlin or America/New_York)")]
    TimeZone { value: String },
    #[error("{value:?} is not a download URL: {reason}")]
    DownloadUrl { value: String, reason: String },
    #[error("{value:?} is not a provisioning event: expected ready, order-processed or activated")]
    Event { value: String },
    #[error("{value:?} is not a valid {what}: it holds the control character U+{code:04X}")]
    Control {
        what: &'static str,
        value: String,
        code: u32,
    },
}

/// The first character of `s` that must never be in a value from outside: a control character
/// (C0, DEL, C1), or a Unicode line or paragraph separator. Such a character would break a
/// line in a header, a log line or a CSV file, or hide in a key; it is refused, never stripped.
pub fn forbidden_char(s: &str) -> Option<char> {
    s.chars()
        .find(|&c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// `s` if it holds no [`forbidden_char`], else the error naming `what` it was meant to be.
pub(crate) fn no_controls<'a>(what: &'static str, s: &'a str) -> Result<&'a str, DomainError> {
    match forbidden_char(s) {
        None => Ok(s),
        Some(c) => Err(DomainError::Control {
            what,
            value: s.to_owned(),
            code: u32::from(c),
        }),
    }
}

/// Serde support through `parse`: serialise as the normalised text, deserialise by parsing, so
/// a value read from JSON is checked exactly like one typed on the command line.
macro_rules! text_serde {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl std::str::FromStr for $t {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, DomainError> {
                <$t>::parse(s)
            }
        }
    };
}
pub(crate) use text_serde;
