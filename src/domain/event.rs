//! The provisioning events that owe a mail.

use std::fmt;

use super::DomainError;

/// The three provisioning notifications, in the order they usually come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProvisioningEvent {
    /// The platform: the subscription is ready.
    Ready,
    /// The vendor: the order was processed.
    OrderProcessed,
    /// The vendor: activation is complete (with the download link).
    Activated,
}

impl ProvisioningEvent {
    pub const ALL: [ProvisioningEvent; 3] = [Self::Ready, Self::OrderProcessed, Self::Activated];

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        match super::no_controls("provisioning event", s)?
            .trim()
            .to_ascii_lowercase()
            .replace('_', "-")
            .as_str()
        {
            "ready" => Ok(Self::Ready),
            "order-processed" => Ok(Self::OrderProcessed),
            "activated" => Ok(Self::Activated),
            _ => Err(DomainError::Event {
                value: s.trim().to_owned(),
            }),
        }
    }

    /// As typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::OrderProcessed => "order-processed",
            Self::Activated => "activated",
        }
    }

    /// As stored and as the template folder is named.
    pub fn key(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::OrderProcessed => "order_processed",
            Self::Activated => "activated",
        }
    }
}

impl fmt::Display for ProvisioningEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        for e in ProvisioningEvent::ALL {
            assert_eq!(ProvisioningEvent::parse(e.as_str()).unwrap(), e);
            assert_eq!(ProvisioningEvent::parse(e.key()).unwrap(), e);
            assert_eq!(
                ProvisioningEvent::parse(&e.as_str().to_uppercase()).unwrap(),
                e
            );
        }
        let err = ProvisioningEvent::parse("shipped").unwrap_err();
        assert!(err.to_string().contains("\"shipped\""));
    }
}
