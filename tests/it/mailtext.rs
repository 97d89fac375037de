//! The mail as people read it: `render` shows, byte for byte, what the daemon sends (before
//! and after the mail is recorded), the wording (plurals, who gets what, where to act, whom
//! it greets), and the correction of a wrong activation link.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use renewal_worker::clock::{ManualClock, SharedClock};
use renewal_worker::domain::{DownloadUrl, EmailAddress, ProvisioningEvent, SubscriptionId};
use renewal_worker::notify::NotificationKind;
use renewal_worker::service::{self, EventOutcome, ServiceError};
use renewal_worker::store::OutboxState;

use crate::helpers::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn id(s: &str) -> SubscriptionId {
    SubscriptionId::parse(s).unwrap()
}

fn url(s: &str) -> DownloadUrl {
    DownloadUrl::parse(s).unwrap()
}

/// A raw message without what differs from one rendering to the next: the Date header, the
/// Message-ID header if `drop_id`, and random MIME boundaries.
fn normalized(raw: &[u8], drop_id: bool) -> String {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let mut boundaries = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("boundary=\"") {
        rest = &rest[i + "boundary=\"".len()..];
        if let Some(end) = rest.find('"') {
            boundaries.push(rest[..end].to_owned());
        }
    }
    let mut out: String = text
        .lines()
        .filter(|l| !(l.starts_with("Date: ") || drop_id && l.starts_with("Message-ID: ")))
        .map(|l| format!("{l}\n"))
        .collect();
    for (i, b) in boundaries.iter().enumerate() {
        out = out.replace(b.as_str(), &format!("BOUNDARY{i}"));
    }
    // The line end before SMTP's closing dot belongs to the transfer, not the message.
    out.trim_end().to_owned()
}

const BOOK: &str = r#"{
  "resellers": [{"id": "R1", "name": "Acme IT", "email": "ops@acme.example",
                 "contact_name": "Dana Reyes", "timezone": "America/New_York",
                 "calendar": "us"}],
  "subscriptions": [
    {"id": "P1", "reseller_id": "R1", "customer_id": "C1", "product_id": "057O1-WW6525-L347",
     "plan": "AutoCAD LT", "billing": "annual_prepaid", "seats": 1, "assigned_licenses": 0,
     "term_start": "2026-06-01", "term_end": "2027-06-01", "auto_renew": true,
     "notify_email": "buyer@acme.example"},
    {"id": "M1", "reseller_id": "R1", "customer_id": "C1", "product_id": "057O1-WW6525-L347",
     "plan": "AutoCAD LT", "billing": "annual_prepaid", "seats": 5, "assigned_licenses": 1,
     "term_start": "2025-12-28", "term_end": "2026-12-28", "auto_renew": true},
    {"id": "N1", "reseller_id": "R1", "customer_id": "C1", "product_id": "057O1-WW6525-L347",
     "plan": "AutoCAD LT", "billing": "annual_prepaid", "seats": 5, "assigned_licenses": 0,
     "term_start": "2025-12-01", "term_end": "2026-12-01", "auto_renew": true},
    {"id": "E1", "reseller_id": "R1", "customer_id": "C1", "product_id": "057O1-WW6525-L347",
     "plan": "AutoCAD LT", "billing": "annual_prepaid", "seats": 5, "assigned_licenses": 0,
     "term_start": "2025-12-01", "term_end": "2026-12-01", "auto_renew": false},
    {"id": "D1", "reseller_id": "R1", "customer_id": "C1", "product_id": "057O1-WW6525-L347",
     "plan": "AutoCAD LT", "billing": "annual_prepaid", "seats": 5, "assigned_licenses": 0,
     "term_start": "2026-06-01", "term_end": "2027-06-01", "auto_renew": true},
    {"id": "J1", "reseller_id": "R1", "customer_id": "C1", "product_id": "057O1-WW6525-L347",
     "plan": "AutoCAD LT", "billing": "annual_prepaid", "seats": 5, "assigned_licenses": 1,
     "term_start": "2026-06-01", "term_end": "2027-06-01", "auto_renew": true},
    {"id": "W1", "reseller_id": "R1", "customer_id": "C1", "product_id": "057O1-WW6525-L347",
     "plan": "AutoCAD LT", "billing": "annual_prepaid", "seats": 5, "assigned_licenses": 0,
     "term_start": "2026-12-07", "term_end": "2027-12-07", "auto_renew": true}
  ]}"#;

const CASES: [(&str, NotificationKind); 9] = [
    ("P1", NotificationKind::Ready),
    ("P1", NotificationKind::OrderProcessed),
    ("P1", NotificationKind::Activated),
    ("M1", NotificationKind::RenewalReminder),
    ("N1", NotificationKind::SubscriptionRenewed),
    ("E1", NotificationKind::SubscriptionEnded),
    ("D1", NotificationKind::AutoRenewDisabled),
    ("J1", NotificationKind::DisableRejected),
    ("W1", NotificationKind::OrderStalled),
];

on_both_backends!(async render_shows_byte_for_byte_what_the_daemon_sends_for_every_kind);
async fn render_shows_byte_for_byte_what_the_daemon_sends_for_every_kind() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    app.import(BOOK).await;
    // Between M1's 10bd and 1bd reminders; after N1's and E1's term ends.
    let t = utc("2026-12-10T15:00:00Z");
    let clock: SharedClock = Arc::new(ManualClock::new(t));
    let d = app.deliverer(clock);
    let link = url("https://manage.autodesk.com/dl/P1");
    // W1's order: ready on Monday, stalled two business days later, before `t`.
    service::record_event(
        &app.store,
        &app.settings,
        utc("2026-12-07T15:00:00Z"),
        &id("W1"),
        ProvisioningEvent::Ready,
        None,
    )
    .await
    .unwrap();
    let mut every_kind: Vec<_> = CASES.iter().map(|c| c.1).collect();
    every_kind.dedup();
    assert_eq!(every_kind, NotificationKind::ALL, "a case per kind");

    // Rendered before anything is recorded: worked out from the data as of `t`.
    let mut before = Vec::new();
    for (sub, kind) in CASES {
        let shown = (kind == NotificationKind::Activated).then_some(&link);
        let p = service::preview(&d, &id(sub), kind, t, shown)
            .await
            .unwrap_or_else(|e| panic!("{sub} {kind:?}: {e}"));
        assert!(p.recorded.is_none(), "{sub} {kind:?}");
        before.push(p.message.formatted());
    }

    // What the daemon does at `t`: the events, the poll, two requests, delivery.
    for (event, u) in [
        (ProvisioningEvent::Ready, None),
        (ProvisioningEvent::OrderProcessed, None),
        (ProvisioningEvent::Activated, Some(&link)),
    ] {
        service::record_event(&app.store, &app.settings, t, &id("P1"), event, u)
            .await
            .unwrap();
    }
    service::poll_now(&d).await.unwrap();
    let calendars = app.settings.calendars().unwrap();
    let reseller = EmailAddress::parse("ops@acme.example").unwrap();
    for sub in ["D1", "J1"] {
        service::request_disable(
            &app.store,
            &app.settings,
            &calendars,
            &id(sub),
            &reseller,
            t,
            t,
            "test",
            &format!("req-{sub}"),
        )
        .await
        .unwrap();
    }
    d.drain().await.unwrap();

    let rows = app.outbox().await;
    let received = sink.received();
    let ours: Vec<_> = rows
        .iter()
        .filter(|r| CASES.iter().any(|c| c.0 == r.subscription_id))
        .filter(|r| r.state == OutboxState::Sent)
        .collect();
    // One mail per case, and W1's ready mail that started its order.
    assert_eq!(ours.len(), CASES.len() + 1, "one mail per case: {ours:?}");
    for ((sub, kind), before) in CASES.iter().zip(before) {
        let row = rows
            .iter()
            .find(|r| {
                r.subscription_id == *sub
                    && r.kind == kind.as_str()
                    && r.state != OutboxState::Skipped
            })
            .unwrap_or_else(|| panic!("{sub} {kind:?} recorded"));
        let sent = received
            .iter()
            .find(|m| m.message_id() == row.message_id.trim_matches(['<', '>']))
            .unwrap_or_else(|| panic!("{sub} {kind:?} sent"));
        assert_eq!(
            normalized(&before, true),
            normalized(&sent.data, true),
            "{sub} {kind:?}: rendered before it was recorded"
        );
        // Once recorded, rendered from its own row: the same Message-ID too.
        let after = service::preview(&d, &id(sub), *kind, t, None)
            .await
            .unwrap();
        assert_eq!(after.recorded.as_ref().map(|r| r.0), Some(row.id));
        assert_eq!(
            normalized(&after.message.formatted(), false),
            normalized(&sent.data, false),
            "{sub} {kind:?}: rendered from its row"
        );
    }

    // The wording, as received.
    let mail = |sub: &str, kind: NotificationKind| {
        let row = rows
            .iter()
            .find(|r| {
                r.subscription_id == sub
                    && r.kind == kind.as_str()
                    && r.state != OutboxState::Skipped
            })
            .unwrap();
        received
            .iter()
            .find(|m| m.message_id() == row.message_id.trim_matches(['<', '>']))
            .unwrap()
            .clone()
    };
    let text = |m: &Received| m.text().replace("\r\n", "\n");
    let ready = mail("P1", NotificationKind::Ready);
    assert_eq!(ready.to, ["buyer@acme.example"]);
    assert!(
        text(&ready).contains("sent to the reseller Acme IT\n(ops@acme.example)"),
        "{}",
        text(&ready)
    );
    let processed = mail("P1", NotificationKind::OrderProcessed);
    assert!(
        text(&processed).contains("(1 seat)"),
        "{}",
        text(&processed)
    );
    assert!(text(&processed).starts_with("Hello Dana Reyes,"));
    let reminder = mail("M1", NotificationKind::RenewalReminder);
    let body = text(&reminder);
    assert!(body.contains("1 of 5 licenses is still assigned"), "{body}");
    assert!(body.contains("Un-assign the 1 license still"), "{body}");
    assert!(
        body.contains("Open https://manage.autodesk.com/\n"),
        "{body}"
    );
    assert!(
        reminder
            .html()
            .contains("<a href=\"https://manage.autodesk.com/\""),
        "{}",
        reminder.html()
    );
    let rejected = mail("J1", NotificationKind::DisableRejected);
    assert!(
        rejected.subject().ends_with(": 1 license still assigned"),
        "{}",
        rejected.subject()
    );
    assert!(text(&rejected).contains("1 license is still assigned to users."));
    assert!(text(&rejected).contains("Open https://manage.autodesk.com/"));
    assert!(
        rejected
            .html()
            .contains("<a href=\"https://manage.autodesk.com/\"")
    );
}

on_both_backends!(async a_corrected_activation_link_goes_once_and_is_audited);
async fn a_corrected_activation_link_goes_once_and_is_audited() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    let t = utc("2026-12-10T15:00:00Z");
    let clock: SharedClock = Arc::new(ManualClock::new(t));
    let d = app.deliverer(clock);
    let (old, new) = (
        url("https://manage.autodesk.com/dl/wrong"),
        url("https://manage.autodesk.com/dl/right"),
    );
    let record = |u: DownloadUrl, by: Option<&'static str>| {
        let app = &app;
        async move {
            service::record_event_correcting(
                &app.store,
                &app.settings,
                t,
                &id("S1"),
                ProvisioningEvent::Activated,
                Some(&u),
                by,
            )
            .await
        }
    };
    assert!(matches!(
        record(old.clone(), None).await.unwrap(),
        EventOutcome::Queued { .. }
    ));
    d.drain().await.unwrap();

    // A different link, not asked as a correction: refused, saying how; nothing written.
    match record(new.clone(), None).await {
        Err(ServiceError::Conflict(msg)) => {
            assert!(
                msg.contains("--correct") && msg.contains("dl/wrong"),
                "{msg}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(app.store.url_corrections("S1").await.unwrap().is_empty());

    // Corrected: one new mail of its own key; the same correction again is a no-op, and so
    // is the old event repeated... which is now a different link again, so it is refused.
    match record(new.clone(), Some("cli:ops")).await.unwrap() {
        EventOutcome::Corrected { key, old_url, .. } => {
            assert_eq!(key, "S1/activated/2");
            assert_eq!(old_url, old.as_str());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        record(new.clone(), Some("cli:ops")).await.unwrap(),
        EventOutcome::AlreadyRecorded { .. }
    ));
    assert!(matches!(
        record(new.clone(), None).await.unwrap(),
        EventOutcome::AlreadyRecorded { .. }
    ));
    assert!(matches!(
        record(old.clone(), None).await,
        Err(ServiceError::Conflict(_))
    ));
    d.drain().await.unwrap();

    let received = sink.received();
    assert_eq!(received.len(), 2, "the first mail and one correction");
    let corrected = &received[1];
    assert!(
        corrected
            .subject()
            .starts_with("Correction: new download link"),
        "{}",
        corrected.subject()
    );
    assert!(corrected.text().contains("dl/right"));
    assert!(
        corrected
            .text()
            .replace("\r\n", "\n")
            .contains("Do not use it:\n  https://manage.autodesk.com/dl/wrong"),
        "{}",
        corrected.text()
    );
    assert_ne!(received[0].message_id(), corrected.message_id());

    let audit = app.store.url_corrections("S1").await.unwrap();
    assert_eq!(audit.len(), 1);
    let a = &audit[0];
    assert_eq!(
        (
            a.outbox_key.as_str(),
            a.old_url.as_str(),
            a.new_url.as_str()
        ),
        ("S1/activated/2", old.as_str(), new.as_str())
    );
    assert_eq!((a.corrected_by.as_str(), a.corrected_at), ("cli:ops", t));
}
