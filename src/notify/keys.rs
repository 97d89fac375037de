//! Outbox keys: what identifies each owed mail, so that whatever repeats upstream (an event
//! sent twice, two polls, a retried request) owes it once. Every key format is here; they are
//! stored, so a format never changes once released. The Message-ID derives from the key.

use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use super::NotificationKind;

/// The outbox key of a provisioning mail: one per (subscription, event), forever.
pub fn provisioning_key(subscription_id: &str, kind: NotificationKind) -> String {
    format!("{subscription_id}/{}", kind.as_str())
}

/// The outbox key of the `n`th activation mail of a subscription (`n` ≥ 2), each correcting
/// the download link of the one before; the first is [`provisioning_key`]'s.
pub fn activation_correction_key(subscription_id: &str, n: u32) -> String {
    format!(
        "{subscription_id}/{}/{n}",
        NotificationKind::Activated.as_str()
    )
}

/// The outbox key of a renewal reminder: one per (subscription, term end, offset).
pub fn reminder_key(subscription_id: &str, term_end: NaiveDate, offset: &str) -> String {
    format!("{subscription_id}/renewal_reminder/{term_end}/{offset}")
}

/// The outbox key of a once-per-term mail (renewed, ended).
pub fn term_key(subscription_id: &str, kind: NotificationKind, term_end: NaiveDate) -> String {
    format!("{subscription_id}/{}/{term_end}", kind.as_str())
}

/// The outbox key of the confirmation that auto-renew is disabled: one per subscription, since
/// an accepted request is final.
pub fn disabled_key(subscription_id: &str) -> String {
    format!(
        "{subscription_id}/{}",
        NotificationKind::AutoRenewDisabled.as_str()
    )
}

/// The outbox key of the answer to a rejected request: one per request.
pub fn rejected_key(subscription_id: &str, request_key: &str) -> String {
    format!(
        "{subscription_id}/{}/{request_key}",
        NotificationKind::DisableRejected.as_str()
    )
}

/// The outbox key of the watchdog's mail about an order that stalled after `last_step`: once
/// per stall (a later step, then a new stall, is another key).
pub fn stalled_key(subscription_id: &str, last_step: &str) -> String {
    format!(
        "{subscription_id}/{}/{last_step}",
        NotificationKind::OrderStalled.as_str()
    )
}

/// A Message-ID derived from the outbox key alone, so a resend after a crash carries the same
/// id and the receiving side can drop the duplicate.
pub fn message_id(key: &str, domain: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{domain}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats_stay_as_stored() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 28).unwrap();
        assert_eq!(
            provisioning_key("S1", NotificationKind::OrderProcessed),
            "S1/order_processed"
        );
        assert_eq!(
            reminder_key("S1", d, "10bd"),
            "S1/renewal_reminder/2026-12-28/10bd"
        );
        assert_eq!(
            term_key("S1", NotificationKind::SubscriptionEnded, d),
            "S1/subscription_ended/2026-12-28"
        );
        assert_eq!(disabled_key("S1"), "S1/auto_renew_disabled");
        assert_eq!(activation_correction_key("S1", 2), "S1/activated/2");
        assert_eq!(rejected_key("S1", "m-1"), "S1/disable_rejected/m-1");
        assert_eq!(
            stalled_key("S1", "order_processed"),
            "S1/order_stalled/order_processed"
        );
    }

    #[test]
    fn message_ids_depend_on_the_key_only() {
        let a = message_id("S1/ready", "example.org");
        assert_eq!(a, message_id("S1/ready", "example.org"));
        assert_ne!(a, message_id("S1/activated", "example.org"));
        assert!(a.starts_with('<') && a.ends_with("@example.org>"));
        assert_eq!(a.len(), 1 + 32 + 1 + "example.org".len() + 1);
    }
}
