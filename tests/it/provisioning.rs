//! Provisioning as a tracked flow (issue 31): steps in any order, one order in flight per
//! reseller, the watchdog of stalled orders on exact instants, and bad input refused with
//! nothing written. Mail goes through the real SMTP server.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use renewal_worker::clock::{ManualClock, SharedClock};
use renewal_worker::domain::{
    DownloadUrl, ProvisioningEvent, ProvisioningState, ResellerId, SubscriptionId,
};
use renewal_worker::outbox::Deliverer;
use renewal_worker::service::{self, EventOutcome, ServiceError};
use renewal_worker::store::{OutboxState, Store};
use serde_json::json;

use crate::helpers::*;

const URL: &str = "https://manage.autodesk.com/products/download?sub=S1";

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn sid(s: &str) -> SubscriptionId {
    SubscriptionId::parse(s).unwrap()
}

fn rid(s: &str) -> ResellerId {
    ResellerId::parse(s).unwrap()
}

/// Records `event` for `sub` at `at`, as the API or the CLI would then.
async fn step_at(app: &TestApp, sub: &str, event: &str, at: DateTime<Utc>) -> EventOutcome {
    let url = (event == "activated").then(|| DownloadUrl::parse(URL).unwrap());
    service::record_event(
        &app.store,
        &app.settings,
        at,
        &sid(sub),
        ProvisioningEvent::parse(event).unwrap(),
        url.as_ref(),
    )
    .await
    .unwrap()
}

async fn provisioning(store: &Store, sub: &str) -> renewal_worker::domain::Provisioning {
    store
        .subscription_context(&sid(sub))
        .await
        .unwrap()
        .unwrap()
        .subscription
        .provisioning
}

/// The daemon's two steps (poll, then deliver what is due) at `at`.
async fn poll_and_send(d: &Deliverer, clock: &ManualClock, at: DateTime<Utc>) {
    clock.set(at);
    service::poll_now(d).await.unwrap();
    d.drain().await.unwrap();
}

fn manual(at: &str) -> (ManualClock, SharedClock) {
    let clock = ManualClock::new(utc(at));
    let shared: SharedClock = Arc::new(clock.clone());
    (clock, shared)
}

on_both_backends!(async out_of_order_events_end_activated_with_three_mails_once_each);
async fn out_of_order_events_end_activated_with_three_mails_once_each() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    let ready_at = utc("2026-03-02T14:00:00Z");
    let activated_at = utc("2026-03-02T15:00:00Z");
    let processed_at = utc("2026-03-02T16:00:00Z");
    step_at(&app, "S1", "ready", ready_at).await;
    // The vendor's activation overtakes its own "order processed".
    step_at(&app, "S1", "activated", activated_at).await;
    let p = provisioning(&app.store, "S1").await;
    assert_eq!(p.state(), ProvisioningState::Activated);
    assert!(!p.in_flight);
    step_at(&app, "S1", "order-processed", processed_at).await;
    // Repeats change nothing: not the state, not a step's first instant, not the mail.
    let again = step_at(&app, "S1", "ready", processed_at).await;
    assert!(matches!(again, EventOutcome::AlreadyRecorded { .. }));

    let p = provisioning(&app.store, "S1").await;
    assert_eq!(p.state(), ProvisioningState::Activated, "the furthest step");
    assert!(!p.in_flight);
    assert_eq!(p.ready_at, Some(ready_at));
    assert_eq!(p.order_processed_at, Some(processed_at));
    assert_eq!(p.activated_at, Some(activated_at));

    let (_, shared) = manual("2026-03-02T16:00:00Z");
    let d = app.deliverer(shared);
    d.drain().await.unwrap();
    let got = sink.received();
    assert_eq!(got.len(), 3, "three mails, once each");
    let mut subjects: Vec<String> = got.iter().map(|m| m.subject()).collect();
    subjects.sort();
    assert!(subjects[0].contains("activation complete"), "{subjects:?}");
    assert!(subjects[1].contains("order processed"), "{subjects:?}");
    assert!(subjects[2].contains("is ready"), "{subjects:?}");
    let keys: Vec<String> = app.outbox().await.into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["S1/ready", "S1/activated", "S1/order_processed"]);

    // The timeline's JSON shows the state and each step's instant (in the reseller's zone).
    let calendars = app.settings.calendars().unwrap();
    let report = service::timeline::timeline_report(
        &app.store,
        &app.settings,
        &calendars,
        &sid("S1"),
        processed_at,
    )
    .await
    .unwrap();
    let view = serde_json::to_value(report.view()).unwrap();
    let p = &view["provisioning"];
    assert_eq!(p["state"], "activated");
    assert_eq!(p["in_flight"], false);
    assert_eq!(p["ready_at"], "2026-03-02T09:00:00-05:00");
    assert_eq!(p["activated_at"], "2026-03-02T10:00:00-05:00");
    assert_eq!(p["order_processed_at"], "2026-03-02T11:00:00-05:00");
    assert_eq!(p["audit"].as_array().unwrap().len(), 3, "{p}");
}

const MORE: &str = r#"{"subscriptions": [
    {"id": "S3", "reseller_id": "R1", "customer_id": "C1", "product_id": "057O1-WW6525-L347",
     "plan": "Maya", "billing": "annual_prepaid", "seats": 2, "assigned_licenses": 0,
     "term_start": "2026-02-01", "term_end": "2027-02-01", "auto_renew": true,
     "provisioning": "pending"},
    {"id": "S4", "reseller_id": "R1", "customer_id": "C2", "product_id": "057O1-WW6525-L347",
     "plan": "3ds Max", "billing": "annual_prepaid", "seats": 2, "assigned_licenses": 0,
     "term_start": "2026-02-01", "term_end": "2027-02-01", "auto_renew": true}]}"#;

on_both_backends!(async one_order_in_flight_per_reseller_and_overlaps_are_flagged);
async fn one_order_in_flight_per_reseller_and_overlaps_are_flagged() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    let check = |app: &TestApp| {
        let store = app.store.clone();
        async move {
            serde_json::to_value(service::order_check(&store, &rid("R1")).await.unwrap()).unwrap()
        }
    };
    // None in flight: may order.
    assert_eq!(check(&app).await, json!({"can_order": true}));

    // S1 at ready: may not, naming S1.
    let t = utc("2026-03-02T14:00:00Z");
    step_at(&app, "S1", "ready", t).await;
    assert_eq!(
        check(&app).await,
        json!({"can_order": false, "in_flight": {"subscription": "S1", "state": "ready",
               "since": "2026-03-02T14:00:00Z"}})
    );
    // S1 activated: may again.
    step_at(&app, "S1", "activated", t).await;
    assert_eq!(check(&app).await, json!({"can_order": true}));

    // S2 at order_processed, then abandoned by an operator: may again.
    step_at(&app, "S2", "order-processed", t).await;
    assert_eq!(check(&app).await["in_flight"]["subscription"], "S2");
    service::abandon_order(&app.store, &sid("S2"), "customer cancelled", "cli", t)
        .await
        .unwrap();
    assert_eq!(check(&app).await, json!({"can_order": true}));
    let audit = app.store.provisioning_audit("S2").await.unwrap();
    assert_eq!(audit.last().unwrap().action, "abandoned");
    assert_eq!(
        audit.last().unwrap().reason.as_deref(),
        Some("customer cancelled")
    );
    assert!(!provisioning(&app.store, "S2").await.in_flight);

    // Created pending through the API or the pull: in flight from its creation.
    app.import(MORE).await;
    let c = check(&app).await;
    assert_eq!(c["in_flight"]["subscription"], "S3", "{c}");
    assert_eq!(c["in_flight"]["state"], "pending", "{c}");

    // A step of another order meanwhile: recorded and mailed, but flagged.
    let (outcome, overlapping) = service::record_step(
        &app.store,
        &app.settings,
        t,
        &sid("S4"),
        ProvisioningEvent::Ready,
        None,
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, EventOutcome::Queued { .. }),
        "{outcome:?}"
    );
    assert_eq!(overlapping.as_deref(), Some("S3"));
    let audit = app.store.provisioning_audit("S4").await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].flag.as_deref(), Some("overlapping_order"));
    assert_eq!(audit[0].overlapping.as_deref(), Some("S3"));
    assert_eq!(app.store.overlapping_orders().await.unwrap(), 1);
    // Recorded again: not flagged twice.
    step_at(&app, "S4", "ready", t).await;
    assert_eq!(app.store.overlapping_orders().await.unwrap(), 1);
    // No step before it overlapped anything.
    for s in ["S1", "S2"] {
        let audit = app.store.provisioning_audit(s).await.unwrap();
        assert!(audit.iter().all(|a| a.flag.is_none()), "{audit:?}");
    }

    let (_, shared) = manual("2026-03-02T14:00:00Z");
    app.deliverer(shared).drain().await.unwrap();
    let got = sink.received();
    assert_eq!(got.len(), 4, "S1's two, S2's and the overlapping S4's");
    let s4 = got
        .iter()
        .filter(|m| m.to == ["admin@initech.example"])
        .count();
    assert_eq!(s4, 1, "the overlapping order's mail went out too");
}

/// The reseller on the `us` calendar in New York.
const US_RESELLER: &str = r#"{"resellers": [{"id": "R1", "name": "Acme IT",
    "email": "ops@acme.example", "timezone": "America/New_York", "calendar": "us"}]}"#;

fn stalled(sink: &SmtpSink) -> Vec<Received> {
    sink.received()
        .into_iter()
        .filter(|m| m.to == ["operations@marketplace.example"])
        .collect()
}

on_both_backends!(async a_stalled_order_alerts_operations_once_skipping_the_weekend_and_a_holiday);
async fn a_stalled_order_alerts_operations_once_skipping_the_weekend_and_a_holiday() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    app.import(US_RESELLER).await;
    // Friday 2026-01-16, 10:30 in New York. Monday the 19th is Martin Luther King Day: two
    // business days later is Wednesday the 21st, 10:30.
    let friday = utc("2026-01-16T15:30:00Z");
    step_at(&app, "S1", "ready", friday - chrono::Duration::hours(1)).await;
    step_at(&app, "S1", "order-processed", friday).await;
    let (clock, shared) = manual("2026-01-16T15:30:00Z");
    let d = app.deliverer(shared);
    for at in [
        "2026-01-16T16:00:00Z",
        "2026-01-17T16:00:00Z",
        "2026-01-19T16:00:00Z",
        "2026-01-20T16:00:00Z",
        "2026-01-21T15:29:59Z",
    ] {
        poll_and_send(&d, &clock, utc(at)).await;
        assert!(stalled(&sink).is_empty(), "nothing at {at}");
    }
    // Due at the stall instant exactly.
    let due = app
        .store
        .due_subscription_contexts(utc("2026-01-21T15:30:00Z"), 10)
        .await
        .unwrap();
    assert!(due.iter().any(|c| c.subscription.id.as_str() == "S1"));
    for at in [
        "2026-01-21T15:30:00Z",
        "2026-01-21T18:00:00Z",
        "2026-01-23T16:00:00Z",
    ] {
        poll_and_send(&d, &clock, utc(at)).await;
    }
    let got = stalled(&sink);
    assert_eq!(got.len(), 1, "one mail per stall");
    let mail = &got[0];
    assert!(mail.subject().contains("S1"), "{}", mail.subject());
    assert!(mail.subject().contains("activated"), "{}", mail.subject());
    let text = mail.text();
    for needle in [
        "Acme IT (R1)",
        "order_processed, Friday 2026-01-16, 10:30 EST (America/New_York)",
        "Missing step:  activated",
        "Wednesday 2026-01-21, 10:30 EST",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    let row = app
        .store
        .outbox_by_key("S1/order_stalled/order_processed")
        .await
        .unwrap()
        .expect("keyed by the last step");
    assert_eq!(row.state, OutboxState::Sent);
    assert_eq!(row.sent_at, Some(utc("2026-01-21T15:30:00Z")));

    // A later step, then a new stall: one more mail.
    step_at(&app, "S1", "activated", utc("2026-01-26T15:00:00Z")).await;
    poll_and_send(&d, &clock, utc("2026-02-10T15:00:00Z")).await;
    assert_eq!(stalled(&sink).len(), 1, "activated: the watchdog stops");
}

on_both_backends!(async a_daemon_three_days_late_alerts_once_and_a_completed_order_not_at_all);
async fn a_daemon_three_days_late_alerts_once_and_a_completed_order_not_at_all() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    app.import(US_RESELLER).await;
    let friday = utc("2026-01-16T15:30:00Z");
    step_at(&app, "S1", "order-processed", friday).await;
    // S2 completes on Tuesday, before its stall on Wednesday.
    step_at(&app, "S2", "order-processed", friday).await;
    step_at(&app, "S2", "activated", utc("2026-01-20T15:00:00Z")).await;
    let (clock, shared) = manual("2026-01-24T15:30:00Z");
    let d = app.deliverer(shared);
    // The daemon's first poll is three days after the stall; then it runs on.
    for at in [
        "2026-01-24T15:30:00Z",
        "2026-01-24T16:30:00Z",
        "2026-01-26T16:30:00Z",
    ] {
        poll_and_send(&d, &clock, utc(at)).await;
    }
    let got = stalled(&sink);
    assert_eq!(got.len(), 1, "one mail for S1, none for S2");
    assert!(got[0].subject().contains("S1"));
    assert!(
        app.store
            .outbox_by_key("S2/order_stalled/order_processed")
            .await
            .unwrap()
            .is_none()
    );
}

on_both_backends!(async a_stall_alert_owed_before_the_order_completed_is_not_sent);
async fn a_stall_alert_owed_before_the_order_completed_is_not_sent() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    app.import(US_RESELLER).await;
    step_at(&app, "S1", "order-processed", utc("2026-01-16T15:30:00Z")).await;
    let (clock, shared) = manual("2026-01-21T15:30:00Z");
    let d = app.deliverer(shared);
    service::poll_now(&d).await.unwrap();
    let key = "S1/order_stalled/order_processed";
    let owed = app.store.outbox_by_key(key).await.unwrap().expect("owed");
    assert_eq!(owed.state, OutboxState::Pending);
    assert_eq!(owed.recipients, ["operations@marketplace.example"]);
    // The activation comes before the mail goes out.
    step_at(&app, "S1", "activated", utc("2026-01-21T15:31:00Z")).await;
    clock.set(utc("2026-01-21T15:32:00Z"));
    d.drain().await.unwrap();
    assert!(
        stalled(&sink).is_empty(),
        "no alert about a stall that is over"
    );
    let row = app.store.outbox_by_key(key).await.unwrap().unwrap();
    assert_eq!(row.state, OutboxState::Skipped);
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("activated"),
        "{row:?}"
    );
    // The activation's own mail went.
    assert_eq!(sink.received().len(), 2, "order processed and activated");
}

on_both_backends!(async bad_input_is_refused_naming_it_and_nothing_is_written);
async fn bad_input_is_refused_naming_it_and_nothing_is_written() {
    let app = TestApp::new(None, "").await;
    let t = utc("2026-03-02T14:00:00Z");
    // Unknown reseller.
    let err = service::order_check(&app.store, &rid("R9"))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::UnknownReseller(_)), "{err:?}");
    assert!(err.to_string().contains("\"R9\""), "{err}");
    // Abandon without a reason.
    step_at(&app, "S1", "ready", t).await;
    let before = app.store.provisioning_audit("S1").await.unwrap();
    for reason in ["", "   "] {
        let err = service::abandon_order(&app.store, &sid("S1"), reason, "cli", t)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("reason: "), "{err}");
    }
    assert!(
        provisioning(&app.store, "S1").await.in_flight,
        "still in flight"
    );
    // Abandon an activated order.
    step_at(&app, "S1", "activated", t).await;
    let audited = app.store.provisioning_audit("S1").await.unwrap().len();
    assert_eq!(audited, before.len() + 1);
    let err = service::abandon_order(&app.store, &sid("S1"), "changed our mind", "cli", t)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Conflict(_)), "{err:?}");
    assert!(
        err.to_string().contains("\"S1\"") && err.to_string().contains("activated"),
        "{err}"
    );
    let p = provisioning(&app.store, "S1").await;
    assert_eq!(p.abandoned_at, None);
    assert_eq!(p.abandon_reason, None);
    assert_eq!(
        app.store.provisioning_audit("S1").await.unwrap().len(),
        audited,
        "nothing audited"
    );
    // An unknown subscription, and one with no order at all.
    let err = service::abandon_order(&app.store, &sid("S9"), "x", "cli", t)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::UnknownSubscription(_)),
        "{err:?}"
    );
    let err = service::abandon_order(&app.store, &sid("S2"), "x", "cli", t)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no order"), "{err}");
    assert!(app.store.provisioning_audit("S2").await.unwrap().is_empty());
}

on_both_backends!(async a_later_step_and_then_a_new_stall_alerts_again);
async fn a_later_step_and_then_a_new_stall_alerts_again() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    app.import(US_RESELLER).await;
    step_at(&app, "S1", "ready", utc("2026-01-16T15:30:00Z")).await;
    let (clock, shared) = manual("2026-01-21T15:30:00Z");
    let d = app.deliverer(shared);
    poll_and_send(&d, &clock, utc("2026-01-21T15:30:00Z")).await;
    assert_eq!(stalled(&sink).len(), 1);
    // Thursday the 22nd: order processed; two business days later, Monday the 26th.
    step_at(&app, "S1", "order-processed", utc("2026-01-22T15:30:00Z")).await;
    poll_and_send(&d, &clock, utc("2026-01-26T15:29:00Z")).await;
    assert_eq!(stalled(&sink).len(), 1, "not before the new stall");
    poll_and_send(&d, &clock, utc("2026-01-26T15:30:00Z")).await;
    poll_and_send(&d, &clock, utc("2026-01-27T15:30:00Z")).await;
    let got = stalled(&sink);
    assert_eq!(got.len(), 2, "one more for the new stall");
    let keys: Vec<String> = app
        .outbox()
        .await
        .into_iter()
        .filter(|r| r.kind == "order_stalled")
        .map(|r| r.key)
        .collect();
    assert_eq!(
        keys,
        ["S1/order_stalled/ready", "S1/order_stalled/order_processed"]
    );
}
