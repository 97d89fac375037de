//! Whole terms under an injected clock: the poll and delivery steps as the daemon runs them,
//! on exact instants, across holidays and DST changes, with restarts and downtime.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use renewal_worker::clock::{ManualClock, SharedClock};
use renewal_worker::store::{OutboxRow, OutboxState};

use crate::helpers::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn subscription(id: &str, start: &str, end: &str, auto_renew: bool) -> String {
    format!(
        r#"{{"subscriptions": [{{"id": "{id}", "reseller_id": "R1", "customer_id": "C1",
        "product_id": "057O1-WW6525-L347", "plan": "AutoCAD LT", "billing": "annual_prepaid",
        "seats": 10, "assigned_licenses": 0, "term_start": "{start}", "term_end": "{end}",
        "auto_renew": {auto_renew}}}]}}"#
    )
}

fn reseller(tz: &str, calendar: &str) -> String {
    format!(
        r#"{{"resellers": [{{"id": "R1", "name": "Acme IT", "email": "ops@acme.example",
        "timezone": "{tz}", "calendar": "{calendar}"}}]}}"#
    )
}

/// Runs the daemon's two steps (poll, deliver) at every instant from `from` to `to`.
async fn run_steps(
    app: &TestApp,
    clock: &ManualClock,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
) {
    let shared: SharedClock = Arc::new(clock.clone());
    let d = app.deliverer(shared);
    let mut t = from;
    while t <= to {
        clock.set(t);
        renewal_worker::service::poll_now(&d).await.unwrap();
        d.drain().await.unwrap();
        t += step;
    }
}

/// The subscriptions a poll at `t` would read.
async fn due_ids(app: &TestApp, t: DateTime<Utc>) -> Vec<String> {
    app.store
        .due_subscription_contexts(t, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.subscription.id.as_str().to_owned())
        .collect()
}

async fn rows(app: &TestApp, sub: &str) -> Vec<OutboxRow> {
    app.store.outbox_for_subscription(Some(sub)).await.unwrap()
}

fn sent(rows: &[OutboxRow]) -> Vec<(String, DateTime<Utc>)> {
    rows.iter()
        .filter(|r| r.state == OutboxState::Sent)
        .map(|r| (r.key.clone(), r.sent_at.unwrap()))
        .collect()
}

on_both_backends!(async a_whole_term_hour_by_hour_in_new_york);
async fn a_whole_term_hour_by_hour_in_new_york() {
    let app = TestApp::new(None, "").await;
    app.import(&subscription("T1", "2025-12-28", "2026-12-28", true))
        .await;
    let clock = ManualClock::new(utc("2026-11-01T00:00:00Z"));
    run_steps(
        &app,
        &clock,
        utc("2026-11-01T00:00:00Z"),
        utc("2027-01-05T00:00:00Z"),
        Duration::hours(1),
    )
    .await;
    let got = sent(&rows(&app, "T1").await);
    assert_eq!(
        got,
        vec![
            (
                "T1/renewal_reminder/2026-12-28/30d".into(),
                utc("2026-11-18T14:00:00Z")
            ),
            (
                "T1/renewal_reminder/2026-12-28/10bd".into(),
                utc("2026-12-04T14:00:00Z")
            ),
            (
                "T1/renewal_reminder/2026-12-28/1bd".into(),
                utc("2026-12-17T14:00:00Z")
            ),
            (
                "T1/subscription_renewed/2026-12-28".into(),
                utc("2026-12-28T05:00:00Z")
            ),
        ],
        "each at 09:00 New York time on a business day; the renewal at local midnight"
    );
    let sub = app
        .store
        .subscription_context(&renewal_worker::domain::SubscriptionId::parse("T1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sub.subscription.term_end,
        NaiveDate::from_ymd_opt(2027, 12, 28).unwrap()
    );
}

on_both_backends!(async restarts_and_repeated_polls_send_nothing_twice);
async fn restarts_and_repeated_polls_send_nothing_twice() {
    let app = TestApp::new(None, "").await;
    app.import(&subscription("T1", "2025-12-28", "2026-12-28", true))
        .await;
    let clock = ManualClock::new(utc("2026-11-18T14:00:00Z"));
    // Three "processes" poll the same instants (restarts, or several hosts).
    for _ in 0..3 {
        for at in [
            "2026-11-18T14:00:00Z",
            "2026-11-18T14:30:00Z",
            "2026-12-28T05:00:00Z",
            "2026-12-28T06:00:00Z",
        ] {
            run_steps(&app, &clock, utc(at), utc(at), Duration::hours(1)).await;
        }
    }
    let got = sent(&rows(&app, "T1").await);
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "T1/renewal_reminder/2026-12-28/30d",
            "T1/subscription_renewed/2026-12-28",
        ]
    );
    // The 10bd and 1bd reminders of the first term fell while "down": skipped, one renewal.
    let skipped: Vec<String> = rows(&app, "T1")
        .await
        .into_iter()
        .filter(|r| r.state == OutboxState::Skipped)
        .map(|r| r.key)
        .collect();
    assert!(
        skipped.contains(&"T1/renewal_reminder/2026-12-28/10bd".to_owned()),
        "{skipped:?}"
    );
}

on_both_backends!(async after_downtime_only_the_latest_reminder_goes_and_none_after_the_cutoff);
async fn after_downtime_only_the_latest_reminder_goes_and_none_after_the_cutoff() {
    let app = TestApp::new(None, "").await;
    app.import(&subscription("T1", "2025-12-28", "2026-12-28", true))
        .await;
    app.import(&subscription("T2", "2025-12-28", "2026-12-28", true))
        .await;
    let clock = ManualClock::new(utc("2026-11-01T00:00:00Z"));
    run_steps(
        &app,
        &clock,
        utc("2026-11-01T00:00:00Z"),
        utc("2026-11-01T00:00:00Z"),
        Duration::hours(1),
    )
    .await;
    // Down from Nov 1 to Dec 17, 15:00Z (after the 1bd reminder's 09:00 New York).
    run_steps(
        &app,
        &clock,
        utc("2026-12-17T15:00:00Z"),
        utc("2026-12-17T15:00:00Z"),
        Duration::hours(1),
    )
    .await;
    let t1 = rows(&app, "T1").await;
    assert_eq!(sent(&t1).len(), 1);
    assert_eq!(sent(&t1)[0].0, "T1/renewal_reminder/2026-12-28/1bd");
    for r in t1.iter().filter(|r| r.state == OutboxState::Skipped) {
        assert!(
            r.last_error
                .as_deref()
                .unwrap_or("")
                .starts_with("superseded"),
            "{r:?}"
        );
    }

    // A third subscription whose daemon was down across the cutoff: nothing reminder-like.
    app.import(&subscription("T3", "2025-12-28", "2026-12-28", true))
        .await;
    run_steps(
        &app,
        &clock,
        utc("2026-12-19T05:00:00Z"),
        utc("2026-12-27T00:00:00Z"),
        Duration::hours(6),
    )
    .await;
    let t3 = rows(&app, "T3").await;
    assert!(sent(&t3).is_empty(), "{t3:?}");
    assert_eq!(t3.len(), 3);
    assert!(t3.iter().all(|r| {
        r.state == OutboxState::Skipped
            && r.last_error
                .as_deref()
                .unwrap_or("")
                .starts_with("after the cutoff")
    }));
}

on_both_backends!(async auto_renew_off_gets_no_reminders_and_ends_once);
async fn auto_renew_off_gets_no_reminders_and_ends_once() {
    let app = TestApp::new(None, "").await;
    app.import(&subscription("T1", "2025-12-28", "2026-12-28", false))
        .await;
    let clock = ManualClock::new(utc("2026-11-01T00:00:00Z"));
    run_steps(
        &app,
        &clock,
        utc("2026-11-01T00:00:00Z"),
        utc("2027-01-10T00:00:00Z"),
        Duration::hours(1),
    )
    .await;
    let all = rows(&app, "T1").await;
    assert_eq!(
        sent(&all),
        vec![(
            "T1/subscription_ended/2026-12-28".into(),
            utc("2026-12-28T05:00:00Z")
        )]
    );
    let skipped: Vec<_> = all
        .iter()
        .filter(|r| r.state == OutboxState::Skipped)
        .collect();
    assert_eq!(
        skipped.len(),
        3,
        "each reminder recorded as skipped, with why"
    );
    assert!(
        skipped
            .iter()
            .all(|r| r.last_error.as_deref() == Some("auto-renew is off"))
    );
    // Ended: later polls do nothing for it.
    let due = due_ids(&app, utc("2030-01-01T00:00:00Z")).await;
    assert!(!due.contains(&"T1".to_owned()), "{due:?}");
}

on_both_backends!(async turning_auto_renew_off_cancels_a_reminder_waiting_for_retry);
async fn turning_auto_renew_off_cancels_a_reminder_waiting_for_retry() {
    // The reminder is owed but not yet sent (as if SMTP were down); then auto-renew goes off.
    let app = TestApp::new(None, "").await;
    app.import(&subscription("T1", "2025-12-28", "2026-12-28", true))
        .await;
    let clock = ManualClock::new(utc("2026-11-18T14:00:00Z"));
    let d = app.deliverer(Arc::new(clock.clone()));
    renewal_worker::service::poll_now(&d).await.unwrap();
    assert_eq!(rows(&app, "T1").await[0].state, OutboxState::Pending);
    app.import(&subscription("T1", "2025-12-28", "2026-12-28", false))
        .await;
    clock.set(utc("2026-11-18T15:00:00Z"));
    renewal_worker::service::poll_now(&d).await.unwrap();
    d.drain().await.unwrap();
    let r = &rows(&app, "T1").await[0];
    assert_eq!(r.state, OutboxState::Skipped, "{r:?}");
    assert!(sent(&rows(&app, "T1").await).is_empty());
}

on_both_backends!(async a_reminder_that_waited_past_the_cutoff_is_not_sent);
async fn a_reminder_that_waited_past_the_cutoff_is_not_sent() {
    let app = TestApp::new(None, "").await;
    app.import(&subscription("T1", "2025-12-28", "2026-12-28", true))
        .await;
    let clock = ManualClock::new(utc("2026-12-17T14:00:00Z"));
    let d = app.deliverer(Arc::new(clock.clone()));
    renewal_worker::service::poll_now(&d).await.unwrap(); // 1bd reminder owed ...
    clock.set(utc("2026-12-19T05:00:00Z")); // ... and the worker only gets to it after the cutoff
    // (The fixture's S1 is in the same position, so two are skipped in all.)
    let drained = d.drain().await.unwrap();
    assert_eq!((drained.sent, drained.skipped), (0, 2));
    let r = rows(&app, "T1")
        .await
        .into_iter()
        .find(|r| r.key.ends_with("/1bd"))
        .unwrap();
    assert_eq!(r.state, OutboxState::Skipped);
    assert!(r.last_error.unwrap().contains("cutoff"));
}

on_both_backends!(async feb_29_subscriptions_renew_on_feb_28_and_back_on_feb_29);
async fn feb_29_subscriptions_renew_on_feb_28_and_back_on_feb_29() {
    let app = TestApp::new(None, "").await;
    app.import(&subscription("L1", "2024-02-29", "2025-02-28", true))
        .await;
    let clock = ManualClock::new(utc("2025-03-01T00:00:00Z"));
    // Down for three years: one poll catches up term by term.
    run_steps(
        &app,
        &clock,
        utc("2028-03-01T12:00:00Z"),
        utc("2028-03-01T12:00:00Z"),
        Duration::hours(1),
    )
    .await;
    let renewed: Vec<String> = rows(&app, "L1")
        .await
        .into_iter()
        .filter(|r| r.kind == "subscription_renewed")
        .map(|r| r.payload["new_term_end"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        renewed,
        ["2026-02-28", "2027-02-28", "2028-02-29", "2029-02-28"]
    );
}

on_both_backends!(async london_across_easter_and_the_clocks_going_forward);
async fn london_across_easter_and_the_clocks_going_forward() {
    let app = TestApp::new(None, "").await;
    app.import(&reseller("Europe/London", "gb-eng")).await;
    app.import(&subscription("G1", "2026-04-15", "2027-04-15", true))
        .await;
    let clock = ManualClock::new(utc("2027-03-01T00:00:00Z"));
    run_steps(
        &app,
        &clock,
        utc("2027-03-01T00:00:00Z"),
        utc("2027-04-16T00:00:00Z"),
        Duration::hours(1),
    )
    .await;
    assert_eq!(
        sent(&rows(&app, "G1").await),
        vec![
            // Cutoff Thu 2027-04-08 (Good Friday and Easter Monday are bank holidays).
            (
                "G1/renewal_reminder/2027-04-15/30d".into(),
                utc("2027-03-09T09:00:00Z")
            ),
            (
                "G1/renewal_reminder/2027-04-15/10bd".into(),
                utc("2027-03-23T09:00:00Z")
            ),
            // After the clocks went forward on 2027-03-28: 09:00 BST is 08:00Z.
            (
                "G1/renewal_reminder/2027-04-15/1bd".into(),
                utc("2027-04-07T08:00:00Z")
            ),
            (
                "G1/subscription_renewed/2027-04-15".into(),
                utc("2027-04-14T23:00:00Z")
            ),
        ]
    );
}

on_both_backends!(async the_poll_reads_the_next_due_index);
async fn the_poll_reads_the_next_due_index() {
    let app = TestApp::new(None, "").await;
    let plan = crate::explain::due_query(&app.settings.database.url)
        .await
        .unwrap();
    match backend() {
        Backend::Sqlite => {
            assert!(
                plan.contains("USING INDEX subscriptions_next_due"),
                "{plan}"
            );
            assert!(!plan.contains("SCAN"), "{plan}");
        }
        Backend::Postgres => {
            assert!(
                plan.contains("Index Scan using subscriptions_next_due"),
                "{plan}"
            );
            assert!(!plan.contains("Seq Scan"), "{plan}");
        }
    }
}

on_both_backends!(async the_daemon_polls_on_its_schedule_and_on_request);
async fn the_daemon_polls_on_its_schedule_and_on_request() {
    let sink = SmtpSink::start(Behaviour::Accept);
    // Every second, and the customer in Cc.
    let mut app = TestApp::new(
        Some(&sink),
        "[poll]\nschedule = \"* * * * * *\"\n[renewal]\nreminder_cc_customer = true\n",
    )
    .await;
    // As if it were just after S1's 30-day reminder fell due.
    app.clock = Arc::new(renewal_worker::clock::ShiftedClock::starting_at(utc(
        "2026-11-18T14:00:30Z",
    )));
    app.start("w-cron");
    assert!(
        eventually(std::time::Duration::from_secs(20), || sink.received().len()
            == 1)
        .await
    );
    app.stop().await;
    let m = &sink.received()[0];
    assert!(
        m.subject().starts_with("Auto-renewal of AutoCAD LT"),
        "{}",
        m.subject()
    );
    let mut to = m.to.clone();
    to.sort();
    assert_eq!(
        to,
        ["it@globex.example", "ops@acme.example"],
        "reseller, and the customer in Cc"
    );
    assert_eq!(
        m.parsed()
            .cc()
            .and_then(|c| c.first())
            .and_then(|a| a.address()),
        Some("it@globex.example")
    );

    // A schedule that never fires in the test: only `enqueue poll` makes the poll happen.
    let sink = SmtpSink::start(Behaviour::Accept);
    let mut app = TestApp::new(Some(&sink), "[poll]\nschedule = \"0 0 0 1 1 * 2099\"\n").await;
    app.clock = Arc::new(renewal_worker::clock::ShiftedClock::starting_at(utc(
        "2026-12-04T14:00:30Z",
    )));
    app.start("w-request");
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(sink.received().is_empty());
    app.store
        .enqueue_job(&renewal_worker::jobs::poll_job("test"))
        .await
        .unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(20), || sink.received().len()
            == 1)
        .await
    );
    app.stop().await;
    assert!(
        sink.received()[0]
            .subject()
            .contains("decide by 2026-12-18")
    );
}

on_both_backends!(async polls_on_several_hosts_at_once_record_each_mail_and_renewal_once);
async fn polls_on_several_hosts_at_once_record_each_mail_and_renewal_once() {
    let app = TestApp::new(None, "").await;
    // 120 subscriptions whose term ends (and renews) at the same instant, after all reminders:
    // more than one group (of those a poll records in one transaction) each.
    let subs: Vec<String> = (0..120)
        .map(|i| {
            let one = subscription(&format!("M{i:03}"), "2025-12-28", "2026-12-28", true);
            let start = one.find("[{").unwrap() + 1;
            one[start..one.rfind("}]").unwrap() + 1].to_owned()
        })
        .collect();
    app.import(&format!("{{\"subscriptions\": [{}]}}", subs.join(",")))
        .await;
    let at = utc("2026-12-28T06:00:00Z");
    // Four "hosts", each with its own connection pool, poll the same instant together.
    let calendars = app.settings.calendars().unwrap();
    let mut polls = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let settings = app.settings.clone();
        let calendars = calendars.clone();
        polls.spawn(async move {
            let store = renewal_worker::service::open_store(&settings)
                .await
                .unwrap();
            let report = renewal_worker::service::poll(&store, &settings, &calendars, at)
                .await
                .unwrap();
            store.close().await;
            report
        });
    }
    let mut renewed = 0;
    let mut queued = 0;
    while let Some(report) = polls.join_next().await {
        let report = report.unwrap();
        renewed += report.renewed;
        queued += report.mails_queued;
    }
    // The 120, and the fixture's S1, whose term ends that day too.
    assert_eq!(renewed, 121, "each term moved by exactly one of the polls");
    let owed: Vec<OutboxRow> = app
        .store
        .outbox_for_subscription(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.state == OutboxState::Pending)
        .collect();
    let renewed_mails = owed
        .iter()
        .filter(|r| r.key.ends_with("/subscription_renewed/2026-12-28"))
        .count();
    assert_eq!(renewed_mails, 121, "one renewed mail each");
    // (S2's 30-day reminder falls due then as well.)
    assert_eq!(owed.len(), 122);
    assert_eq!(queued, 122, "no poll counted a mail another one recorded");
}

on_both_backends!(async a_subscription_whose_calendar_cannot_be_found_waits_an_hour_alone);
async fn a_subscription_whose_calendar_cannot_be_found_waits_an_hour_alone() {
    let app = TestApp::new(None, "").await;
    // A reseller whose calendar is not (or no longer) configured.
    app.import(
        r#"{"resellers": [{"id": "R9", "name": "Mars IT", "email": "ops@mars.example",
             "timezone": "UTC", "calendar": "mars"}],
           "customers": [{"id": "C9", "reseller_id": "R9", "name": "Ares",
             "email": "it@ares.example"}],
           "subscriptions": [{"id": "X1", "reseller_id": "R9", "customer_id": "C9",
             "product_id": "057O1-WW6525-L347", "plan": "AutoCAD LT",
             "billing": "annual_prepaid", "seats": 10, "assigned_licenses": 0,
             "term_start": "2025-12-28", "term_end": "2026-12-28", "auto_renew": true}]}"#,
    )
    .await;
    let at = utc("2026-12-28T06:00:00Z");
    let calendars = app.settings.calendars().unwrap();
    let report = renewal_worker::service::poll(&app.store, &app.settings, &calendars, at)
        .await
        .expect("the poll goes on past it");
    // The fixture's S1 renews that day, recorded in the same group as X1.
    assert_eq!(report.renewed, 1);
    assert!(
        rows(&app, "S1")
            .await
            .iter()
            .any(|r| r.kind == "subscription_renewed")
    );
    assert!(rows(&app, "X1").await.is_empty(), "nothing planned for X1");
    assert!(
        !due_ids(&app, at).await.contains(&"X1".to_owned()),
        "not again at once"
    );
    assert!(
        due_ids(&app, at + Duration::hours(1))
            .await
            .contains(&"X1".to_owned()),
        "again in an hour"
    );
}
