//! The facts each kind of mail carries beyond the subscription itself: what the poll, an event
//! or a disable request knew when the mail became owed. They are stored as the outbox row's
//! `payload` and are what its templates see as `details`, so their JSON form is a contract:
//! rows written by an older release are read back, and templates name these fields. Add a
//! field, don't rename one.

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::NotificationKind;
use crate::domain::{DownloadUrl, EmailAddress, TimeZoneName};

/// A mail's facts, one variant per kind. Serialized without a tag (the row's `kind` says which
/// variant it is), so each is stored as the plain object of its fields; read back by
/// [`MailFacts::parse`] with the kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MailFacts {
    /// Nothing beyond the subscription: stored as `{}`.
    Ready {},
    /// Nothing beyond the subscription: stored as `{}`.
    OrderProcessed {},
    Activated(ActivatedFacts),
    RenewalReminder(ReminderFacts),
    SubscriptionRenewed(RenewedFacts),
    SubscriptionEnded(EndedFacts),
    AutoRenewDisabled(DisabledFacts),
    DisableRejected(RejectedFacts),
    OrderStalled(StalledFacts),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivatedFacts {
    pub download_url: DownloadUrl,
    /// Set on a mail that corrects an earlier activation mail's link: which activation mail
    /// this is (2 for the first correction). Absent from the first mail's stored form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<u32>,
    /// The link it corrects, with [`ActivatedFacts::correction`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces_url: Option<DownloadUrl>,
}

impl ActivatedFacts {
    /// The first activation mail's facts: its link, correcting nothing.
    pub fn first(download_url: DownloadUrl) -> Self {
        Self {
            download_url,
            correction: None,
            replaces_url: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderFacts {
    /// The end of the term that renews unless auto-renew is disabled.
    pub term_end: NaiveDate,
    /// Which reminder of the term this is, as configured (`10bd`).
    pub offset: String,
    /// The last business day on which auto-renew can still be disabled.
    pub cutoff_date: NaiveDate,
    /// The instant the cutoff passes, in the reseller's time zone.
    #[serde(with = "rfc3339")]
    pub cutoff_at: DateTime<FixedOffset>,
    /// The last minute before the cutoff, as people read it.
    pub cutoff_deadline: String,
    pub timezone: TimeZoneName,
    /// Copied in besides the recipients (the customer, if the settings say so).
    pub cc: Vec<EmailAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewedFacts {
    pub term_end: NaiveDate,
    pub new_term_start: NaiveDate,
    pub new_term_end: NaiveDate,
    /// Whether the new term renews in turn.
    pub renews_again: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedFacts {
    pub term_end: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledFacts {
    /// The end of the last term.
    pub effective_term_end: NaiveDate,
    /// The request came after the cutoff: the current term renews once more.
    pub renews_once_more: bool,
    /// The end of the term current when the request was decided.
    pub term_end: NaiveDate,
    pub requested_by: EmailAddress,
    /// The cutoff of the current term, in the reseller's time zone.
    #[serde(with = "rfc3339")]
    pub cutoff_at: DateTime<FixedOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedFacts {
    /// The licenses still assigned, which is why the request was rejected.
    pub assigned_licenses: u32,
    pub requested_by: EmailAddress,
    pub term_end: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StalledFacts {
    /// The furthest step the order reached (`pending`, `ready`, `order_processed`).
    pub last_step: String,
    /// When it was recorded, in the reseller's time zone.
    #[serde(with = "rfc3339")]
    pub last_step_at: DateTime<FixedOffset>,
    /// The same, as people read it.
    pub last_step_when: String,
    /// The step that did not come (`ready`, `order_processed`, `activated`).
    pub missing_step: String,
    /// When the order counted as stalled, in the reseller's time zone.
    #[serde(with = "rfc3339")]
    pub stalled_at: DateTime<FixedOffset>,
    /// The same, as people read it.
    pub stalled_when: String,
    /// The setting it stalled by (`2bd`).
    pub stall_after: String,
    pub timezone: TimeZoneName,
}

/// A stored payload that is not the facts of its kind: that mail cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the facts of this {kind} mail do not parse: {}{reason}", field_prefix(.field))]
pub struct FactsError {
    pub kind: &'static str,
    /// Where in the payload it went wrong; `None` for the payload as a whole (a missing
    /// field, which `reason` names).
    pub field: Option<String>,
    pub reason: String,
}

fn field_prefix(field: &Option<String>) -> String {
    field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}

/// The objects of kinds without facts: any object will do, its fields are not used.
#[derive(Deserialize)]
struct NoFacts {}

impl MailFacts {
    /// Reads the stored facts of a mail of `kind`.
    pub fn parse(kind: NotificationKind, payload: &Value) -> Result<Self, FactsError> {
        fn read<'a, T: Deserialize<'a>>(
            kind: NotificationKind,
            payload: &'a Value,
        ) -> Result<T, FactsError> {
            serde_path_to_error::deserialize(payload).map_err(|e| {
                let path = e.path().to_string();
                FactsError {
                    kind: kind.as_str(),
                    field: (path != ".").then_some(path),
                    reason: e.into_inner().to_string(),
                }
            })
        }
        Ok(match kind {
            NotificationKind::Ready => read::<NoFacts>(kind, payload).map(|_| Self::Ready {})?,
            NotificationKind::OrderProcessed => {
                read::<NoFacts>(kind, payload).map(|_| Self::OrderProcessed {})?
            }
            NotificationKind::Activated => Self::Activated(read(kind, payload)?),
            NotificationKind::RenewalReminder => Self::RenewalReminder(read(kind, payload)?),
            NotificationKind::SubscriptionRenewed => {
                Self::SubscriptionRenewed(read(kind, payload)?)
            }
            NotificationKind::SubscriptionEnded => Self::SubscriptionEnded(read(kind, payload)?),
            NotificationKind::AutoRenewDisabled => Self::AutoRenewDisabled(read(kind, payload)?),
            NotificationKind::DisableRejected => Self::DisableRejected(read(kind, payload)?),
            NotificationKind::OrderStalled => Self::OrderStalled(read(kind, payload)?),
        })
    }

    /// The form stored as the outbox row's payload.
    pub fn to_payload(&self) -> Value {
        // Dates, strings, numbers and booleans in objects with string keys: nothing here can
        // fail to serialize.
        serde_json::to_value(self)
            .unwrap_or_else(|e| unreachable!("mail facts serialize to JSON: {e}"))
    }

    pub fn kind(&self) -> NotificationKind {
        match self {
            Self::Ready {} => NotificationKind::Ready,
            Self::OrderProcessed {} => NotificationKind::OrderProcessed,
            Self::Activated(_) => NotificationKind::Activated,
            Self::RenewalReminder(_) => NotificationKind::RenewalReminder,
            Self::SubscriptionRenewed(_) => NotificationKind::SubscriptionRenewed,
            Self::SubscriptionEnded(_) => NotificationKind::SubscriptionEnded,
            Self::AutoRenewDisabled(_) => NotificationKind::AutoRenewDisabled,
            Self::DisableRejected(_) => NotificationKind::DisableRejected,
            Self::OrderStalled(_) => NotificationKind::OrderStalled,
        }
    }

    /// Who is copied in besides the recipients.
    pub fn cc(&self) -> &[EmailAddress] {
        match self {
            Self::RenewalReminder(r) => &r.cc,
            _ => &[],
        }
    }

    /// Facts a template of `kind` may use, as sample values: used to check every template at
    /// start and to preview.
    pub fn sample(kind: NotificationKind) -> Self {
        // Constants known to parse: a failure here is a programming error caught by every test.
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("sample date");
        let cutoff_at =
            DateTime::parse_from_rfc3339("2026-12-19T00:00:00-05:00").expect("sample cutoff");
        let buyer = || EmailAddress::parse("buyer@acme.example").expect("sample email");
        match kind {
            NotificationKind::Ready => Self::Ready {},
            NotificationKind::OrderProcessed => Self::OrderProcessed {},
            NotificationKind::Activated => Self::Activated(ActivatedFacts::first(
                DownloadUrl::parse("https://manage.autodesk.com/products").expect("sample url"),
            )),
            NotificationKind::RenewalReminder => Self::RenewalReminder(ReminderFacts {
                term_end: date("2026-12-28"),
                offset: "10bd".into(),
                cutoff_date: date("2026-12-18"),
                cutoff_at,
                cutoff_deadline: "Friday 2026-12-18, 23:59 EST (America/New_York)".into(),
                timezone: TimeZoneName::parse("America/New_York").expect("sample tz"),
                cc: Vec::new(),
            }),
            NotificationKind::SubscriptionRenewed => Self::SubscriptionRenewed(RenewedFacts {
                term_end: date("2026-12-28"),
                new_term_start: date("2026-12-28"),
                new_term_end: date("2027-12-28"),
                renews_again: true,
            }),
            NotificationKind::SubscriptionEnded => Self::SubscriptionEnded(EndedFacts {
                term_end: date("2026-12-28"),
            }),
            NotificationKind::AutoRenewDisabled => Self::AutoRenewDisabled(DisabledFacts {
                effective_term_end: date("2027-12-28"),
                renews_once_more: true,
                term_end: date("2026-12-28"),
                requested_by: buyer(),
                cutoff_at,
            }),
            NotificationKind::DisableRejected => Self::DisableRejected(RejectedFacts {
                assigned_licenses: 3,
                requested_by: buyer(),
                term_end: date("2026-12-28"),
            }),
            NotificationKind::OrderStalled => Self::OrderStalled(StalledFacts {
                last_step: "order_processed".into(),
                last_step_at: DateTime::parse_from_rfc3339("2026-01-16T10:30:00-05:00")
                    .expect("sample instant"),
                last_step_when: "Friday 2026-01-16, 10:30 EST (America/New_York)".into(),
                missing_step: "activated".into(),
                stalled_at: DateTime::parse_from_rfc3339("2026-01-21T10:30:00-05:00")
                    .expect("sample instant"),
                stalled_when: "Wednesday 2026-01-21, 10:30 EST (America/New_York)".into(),
                stall_after: "2bd".into(),
                timezone: TimeZoneName::parse("America/New_York").expect("sample tz"),
            }),
        }
    }
}

/// Instants as `DateTime::to_rfc3339` writes them (offset as `+00:00`, never `Z`), the form
/// stored since the first release.
mod rfc3339 {
    use chrono::{DateTime, FixedOffset};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<FixedOffset>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<FixedOffset>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads as the previous release stored them (`Value::to_string` of its `json!`
    /// objects), one per kind.
    const STORED: [(NotificationKind, &str); 9] = [
        (NotificationKind::Ready, r#"{}"#),
        (NotificationKind::OrderProcessed, r#"{}"#),
        (
            NotificationKind::Activated,
            r#"{"download_url":"https://manage.autodesk.com/dl/9"}"#,
        ),
        (
            NotificationKind::RenewalReminder,
            r#"{"cc":["it@globex.example"],"cutoff_at":"2026-12-19T00:00:00-05:00","cutoff_date":"2026-12-18","cutoff_deadline":"Friday 2026-12-18, 23:59 EST (America/New_York)","offset":"10bd","term_end":"2026-12-28","timezone":"America/New_York"}"#,
        ),
        (
            NotificationKind::SubscriptionRenewed,
            r#"{"new_term_end":"2027-12-28","new_term_start":"2026-12-28","renews_again":false,"term_end":"2026-12-28"}"#,
        ),
        (
            NotificationKind::SubscriptionEnded,
            r#"{"term_end":"2026-12-28"}"#,
        ),
        (
            NotificationKind::AutoRenewDisabled,
            r#"{"cutoff_at":"2026-12-19T00:00:00+00:00","effective_term_end":"2027-12-28","renews_once_more":true,"requested_by":"Buyer@acme.example","term_end":"2026-12-28"}"#,
        ),
        (
            NotificationKind::DisableRejected,
            r#"{"assigned_licenses":3,"requested_by":"buyer@acme.example","term_end":"2026-12-28"}"#,
        ),
        (
            NotificationKind::OrderStalled,
            r#"{"last_step":"order_processed","last_step_at":"2026-01-16T10:30:00-05:00","last_step_when":"Friday 2026-01-16, 10:30 EST (America/New_York)","missing_step":"activated","stall_after":"2bd","stalled_at":"2026-01-21T10:30:00-05:00","stalled_when":"Wednesday 2026-01-21, 10:30 EST (America/New_York)","timezone":"America/New_York"}"#,
        ),
    ];

    #[test]
    fn stored_payloads_read_back_and_store_the_same() {
        for (kind, stored) in STORED {
            let payload: Value = serde_json::from_str(stored).unwrap();
            let facts = MailFacts::parse(kind, &payload).unwrap();
            assert_eq!(facts.kind(), kind);
            assert_eq!(facts.to_payload().to_string(), stored, "{kind:?}");
        }
    }

    #[test]
    fn a_correction_stores_its_number_and_the_link_it_replaces() {
        let url = |s: &str| DownloadUrl::parse(s).unwrap();
        let facts = MailFacts::Activated(ActivatedFacts {
            download_url: url("https://manage.autodesk.com/dl/10"),
            correction: Some(2),
            replaces_url: Some(url("https://manage.autodesk.com/dl/9")),
        });
        let payload = facts.to_payload();
        assert_eq!(
            payload.to_string(),
            r#"{"correction":2,"download_url":"https://manage.autodesk.com/dl/10","replaces_url":"https://manage.autodesk.com/dl/9"}"#
        );
        assert_eq!(
            MailFacts::parse(NotificationKind::Activated, &payload).unwrap(),
            facts
        );
    }

    #[test]
    fn samples_are_of_their_kind_and_read_back() {
        for kind in NotificationKind::ALL {
            let facts = MailFacts::sample(kind);
            assert_eq!(facts.kind(), kind);
            assert_eq!(MailFacts::parse(kind, &facts.to_payload()).unwrap(), facts);
        }
    }

    #[test]
    fn a_payload_not_of_its_kind_names_the_kind_and_the_field() {
        let payload: Value = serde_json::from_str(r#"{"term_end":"2026-12-28"}"#).unwrap();
        let err = MailFacts::parse(NotificationKind::RenewalReminder, &payload).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("renewal_reminder"), "{text}");
        assert!(text.contains("missing field `offset`"), "{text}");

        let payload: Value = serde_json::from_str(
            r#"{"assigned_licenses":3,"requested_by":"nobody","term_end":"2026-12-28"}"#,
        )
        .unwrap();
        let err = MailFacts::parse(NotificationKind::DisableRejected, &payload).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("requested_by"));
        let text = err.to_string();
        assert!(
            text.contains("disable_rejected") && text.contains("requested_by: "),
            "{text}"
        );

        let err = MailFacts::parse(NotificationKind::Ready, &Value::from("x")).unwrap_err();
        assert!(err.to_string().contains("ready"), "{err}");
    }
}
