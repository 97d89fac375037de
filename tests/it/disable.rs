//! Disable-auto-renew requests: the vendor's rules on exact instants, the mails through a real
//! SMTP server, idempotency, irrevocability, and the race with license assignment.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use renewal_worker::domain::{EmailAddress, SubscriptionId};
use renewal_worker::jobs;
use renewal_worker::service::{self, DisableOutcome};

use crate::helpers::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn request(app: &TestApp, sub: &str, by: &str, at: &str, key: &str) -> DisableOutcome {
    let calendars = app.settings.calendars().unwrap();
    service::request_disable(
        &app.store,
        &app.settings,
        &calendars,
        &SubscriptionId::parse(sub).unwrap(),
        &EmailAddress::parse(by).unwrap(),
        utc(at),
        utc(at),
        "test",
        key,
    )
    .await
    .unwrap()
}

async fn set_licenses(app: &TestApp, sub: &str, n: u32) {
    app.store
        .set_assigned_licenses(sub, n)
        .await
        .unwrap()
        .unwrap();
}

on_both_backends!(async the_rules_around_the_cutoff_in_new_york);
async fn the_rules_around_the_cutoff_in_new_york() {
    let app = TestApp::new(None, "").await;
    // S1 has 3 licenses assigned: rejected, nothing changes.
    let r = request(
        &app,
        "S1",
        "buyer@acme.example",
        "2026-12-10T12:00:00Z",
        "k1",
    )
    .await;
    assert_eq!(
        (
            r.decision.as_str(),
            r.reason.as_deref(),
            r.assigned_licenses
        ),
        ("rejected", Some("licenses_assigned"), 3)
    );
    let ctx = app
        .store
        .subscription_context(&SubscriptionId::parse("S1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(ctx.subscription.auto_renew);

    // Un-assigned: at the last minute of the cutoff day (Fri 2026-12-18, New York) it stops this
    // term.
    set_licenses(&app, "S1", 0).await;
    let r = request(
        &app,
        "S1",
        "buyer@acme.example",
        "2026-12-19T04:59:00Z",
        "k2",
    )
    .await;
    assert_eq!(r.decision, "accepted");
    assert_eq!(r.reason, None);
    assert_eq!(r.effective_term_end.unwrap().to_string(), "2026-12-28");
    assert!(!r.renews_once_more);
    assert_eq!(r.cutoff_at.as_deref(), Some("2026-12-19T00:00:00-05:00"));
    let ctx = app
        .store
        .subscription_context(&SubscriptionId::parse("S1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!ctx.subscription.auto_renew);
    assert_eq!(
        ctx.subscription
            .renewal
            .disable_effective_term_end
            .unwrap()
            .to_string(),
        "2026-12-28"
    );

    // The same request again, or another one: the same decision, marked as a repeat.
    let again = request(
        &app,
        "S1",
        "other@acme.example",
        "2026-12-20T00:00:00Z",
        "k3",
    )
    .await;
    assert!(again.repeated);
    assert_eq!(
        (again.decision.as_str(), again.effective_term_end),
        ("accepted", r.effective_term_end)
    );
    let same_key = request(
        &app,
        "S1",
        "buyer@acme.example",
        "2026-12-19T04:59:00Z",
        "k2",
    )
    .await;
    assert_eq!(same_key.request_id, r.request_id);
    // Every decision is kept.
    let audit = app.store.disable_requests("S1").await.unwrap();
    let decisions: Vec<(&str, Option<&str>, u32)> = audit
        .iter()
        .map(|a| (a.decision.as_str(), a.reason.as_deref(), a.seen_assigned))
        .collect();
    assert_eq!(
        decisions,
        [
            ("rejected", Some("licenses_assigned"), 3),
            ("accepted", None, 0),
            ("accepted", Some("already_disabled"), 0)
        ]
    );
    // Mails: one rejection, one confirmation; the repeats send nothing.
    let kinds: Vec<String> = app.outbox().await.into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["disable_rejected", "auto_renew_disabled"]);
}

on_both_backends!(async a_minute_after_the_cutoff_it_renews_once_more);
async fn a_minute_after_the_cutoff_it_renews_once_more() {
    let app = TestApp::new(None, "").await;
    set_licenses(&app, "S1", 0).await;
    let r = request(&app, "S1", "ops@acme.example", "2026-12-19T05:00:00Z", "k1").await;
    assert_eq!(r.decision, "accepted");
    assert_eq!(r.reason.as_deref(), Some("after_cutoff"));
    assert!(r.renews_once_more);
    assert_eq!(r.effective_term_end.unwrap().to_string(), "2027-12-28");
}

on_both_backends!(async in_london_the_christmas_holidays_move_the_cutoff);
async fn in_london_the_christmas_holidays_move_the_cutoff() {
    let app = TestApp::new(None, "").await;
    app.import(
        r#"{"resellers": [{"id": "R1", "name": "Acme IT", "email": "ops@acme.example",
            "timezone": "Europe/London", "calendar": "gb-eng"}],
            "subscriptions": [{"id": "G1", "reseller_id": "R1", "customer_id": "C1",
            "product_id": "057O1-WW6525-L347", "plan": "Revit", "billing": "monthly_prepaid",
            "seats": 2, "assigned_licenses": 0, "term_start": "2025-12-30", "term_end": "2026-12-30",
            "auto_renew": true}]}"#,
    )
    .await;
    // 5 business days before Wed 2026-12-30 skip Christmas (Fri) and Boxing Day's substitute
    // (Mon 28th): the cutoff is Mon 2026-12-21, until midnight London time (GMT).
    let last = request(&app, "G1", "ops@acme.example", "2026-12-21T23:59:00Z", "a").await;
    assert!(!last.renews_once_more, "{last:?}");
    assert_eq!(last.cutoff_at.as_deref(), Some("2026-12-22T00:00:00+00:00"));
}

on_both_backends!(async the_requester_and_the_reseller_get_the_mails_through_smtp);
async fn the_requester_and_the_reseller_get_the_mails_through_smtp() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let mut app = TestApp::new(Some(&sink), "[poll]\nschedule = \"0 0 0 1 1 * 2099\"\n").await;
    app.start("w-disable");
    // Rejected, decided by the daemon from the queue.
    app.store
        .enqueue_job(&jobs::disable_job(&jobs::DisableRequest {
            subscription: "S1".into(),
            requested_by: "buyer@acme.example".into(),
            requested_at: utc("2026-12-01T00:00:00Z"),
            request_key: "market-1".into(),
        }))
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(20), || sink.received().len() == 1).await);
    let rejected = &sink.received()[0];
    let mut to = rejected.to.clone();
    to.sort();
    assert_eq!(to, ["buyer@acme.example", "ops@acme.example"]);
    assert!(
        rejected.subject().contains("3 licenses still assigned"),
        "{}",
        rejected.subject()
    );
    assert!(
        rejected
            .text()
            .contains("3 licenses are still assigned to users")
    );

    // Accepted: a confirmation saying when it ends, that it is paid until then, no refunds.
    set_licenses(&app, "S1", 0).await;
    let r = request(
        &app,
        "S1",
        "buyer@acme.example",
        "2026-12-01T00:00:00Z",
        "market-2",
    )
    .await;
    assert!(r.accepted());
    assert!(eventually(Duration::from_secs(20), || sink.received().len() == 2).await);
    // The same request handed over again: decided once, no third mail.
    app.store
        .enqueue_job(&jobs::disable_job(&jobs::DisableRequest {
            subscription: "S1".into(),
            requested_by: "buyer@acme.example".into(),
            requested_at: utc("2026-12-01T00:00:00Z"),
            request_key: "market-2".into(),
        }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.stop().await;
    assert_eq!(sink.received().len(), 2);
    let confirmation = &sink.received()[1];
    assert!(
        confirmation.subject().starts_with("Auto-renew disabled"),
        "{}",
        confirmation.subject()
    );
    let text = confirmation
        .text()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(text.contains("ENDS ON 2026-12-28"), "{text}");
    assert!(
        text.contains("The reseller pays until 2026-12-28"),
        "{text}"
    );
    assert!(text.contains("there are no returns or refunds"), "{text}");
    assert_eq!(app.store.disable_requests("S1").await.unwrap().len(), 2);
}

// A disable request and a license assignment racing: if the request is accepted, the
// assignment must have come after it (it saw auto-renew off), never before.
on_both_backends!(async a_disable_and_a_license_assignment_never_both_win);
async fn a_disable_and_a_license_assignment_never_both_win() {
    let app = Arc::new(TestApp::new(None, "").await);
    let calendars = Arc::new(app.settings.calendars().unwrap());
    let mut accepted = 0;
    let mut rejected = 0;
    for i in 0..60 {
        let sub = format!("RACE{i}");
        app.import(&format!(
            r#"{{"subscriptions": [{{"id": "{sub}", "reseller_id": "R1", "customer_id": "C1",
            "product_id": "057O1-WW6525-L347", "plan": "AutoCAD LT", "billing": "annual_prepaid",
            "seats": 10, "assigned_licenses": 0, "term_start": "2025-12-28",
            "term_end": "2026-12-28", "auto_renew": true}}]}}"#
        ))
        .await;
        let (a, c) = (app.clone(), calendars.clone());
        let s = sub.clone();
        let disable = tokio::spawn(async move {
            service::request_disable(
                &a.store,
                &a.settings,
                &c,
                &SubscriptionId::parse(&s).unwrap(),
                &EmailAddress::parse("ops@acme.example").unwrap(),
                utc("2026-12-01T00:00:00Z"),
                utc("2026-12-01T00:00:00Z"),
                "race",
                &format!("race-{s}"),
            )
            .await
            .unwrap()
        });
        let a = app.clone();
        let s = sub.clone();
        let assign =
            tokio::spawn(
                async move { a.store.set_assigned_licenses(&s, 4).await.unwrap().unwrap() },
            );
        let (outcome, update) = (disable.await.unwrap(), assign.await.unwrap());
        if outcome.accepted() {
            accepted += 1;
            assert_eq!(outcome.assigned_licenses, 0);
            assert!(
                !update.auto_renew_was_on,
                "{sub}: the assignment committed before an accepted disable"
            );
        } else {
            rejected += 1;
            assert_eq!(outcome.assigned_licenses, 4, "{sub}");
            assert!(update.auto_renew_was_on);
        }
    }
    assert_eq!(accepted + rejected, 60);
    println!("race: {accepted} accepted, {rejected} rejected");
}

on_both_backends!(sync the_cli_answers_with_exit_codes_and_refuses_to_revoke);
fn the_cli_answers_with_exit_codes_and_refuses_to_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let bin = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_renewal-worker"))
            .current_dir(dir.path())
            .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
            .envs(cli_database_env())
            .args(args)
            .output()
            .unwrap()
    };
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();
    assert!(bin(&["import", "subs.json"]).status.success());
    let out = bin(&[
        "disable-auto-renew",
        "S1",
        "--requested-by",
        "buyer@acme.example",
        "--now",
        "2026-12-10T12:00:00Z",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "decision",
        "reason",
        "assigned_licenses",
        "cutoff_at",
        "effective_term_end",
        "renews_once_more",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    assert_eq!(v["decision"], "rejected");
    let out = bin(&["licenses", "S1", "--assigned", "11"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("seat count 10, got 11"));
    assert!(bin(&["licenses", "S1", "--assigned", "0"]).status.success());
    let out = bin(&[
        "disable-auto-renew",
        "S1",
        "--requested-by",
        "buyer@acme.example",
        "--now",
        "2026-12-10T12:00:00Z",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("accepted: S1 will not renew; it ends on 2026-12-28")
    );
    let out = bin(&[
        "disable-auto-renew",
        "S9",
        "--requested-by",
        "buyer@acme.example",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = bin(&["disable-auto-renew", "S1", "--requested-by", "not-an-email"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--requested-by"));

    // Irrevocable: an import that turns auto-renew back on is refused for that row.
    let out = bin(&["import", "subs.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be revoked"));
    let out = bin(&["timeline", "S1", "--json", "--at", "2026-12-11T00:00:00Z"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "already_disabled");
    assert_eq!(v["disable_requests"].as_array().unwrap().len(), 2);
}
