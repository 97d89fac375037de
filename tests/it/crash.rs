//! A daemon killed (SIGKILL) in the middle of its work: each mail is recorded as soon as the
//! server takes it, so a kill resends at most the mails in flight; a restarted daemon gives
//! back its predecessor's claims at once, and another daemon gives back the claims of one that
//! stopped beating after `missed_heartbeats x heartbeat_interval`, long before the lease.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use renewal_worker::clock::{ManualClock, SharedClock};
use renewal_worker::outbox::Deliverer;
use renewal_worker::store::{DaemonRow, OutboxState};

use crate::helpers::*;
use crate::scale::{KillOnDrop, arrivals, stop};

/// Owes `n` mails: one `ready` per synthetic subscription, recorded in 8 lanes.
async fn owe(app: &TestApp, n: u64) {
    add_synthetic_subscriptions(app, n).await;
    let mut set = tokio::task::JoinSet::new();
    for lane in 0..8 {
        let (store, settings) = (app.store.clone(), app.settings.clone());
        set.spawn(async move {
            for i in (lane..n).step_by(8) {
                owe_ready(&store, &settings, i).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// The real binary as a daemon named `name`, default settings but for the database, the SMTP
/// server, quiet logs, no scheduled poll, and `env`.
fn daemon(app: &TestApp, sink: &SmtpSink, name: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_renewal-worker"));
    cmd.current_dir(app.dir.path())
        .args(["run"])
        .env_remove("RUST_LOG")
        .env("RENEWAL_WORKER__LOG__LEVEL", "warn")
        .env("RENEWAL_WORKER__DATABASE__URL", &app.settings.database.url)
        .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
        .env("RENEWAL_WORKER__MAIL__TRANSPORT", "smtp")
        .env("RENEWAL_WORKER__MAIL__SMTP__HOST", "127.0.0.1")
        .env("RENEWAL_WORKER__MAIL__SMTP__PORT", sink.port.to_string())
        .env("RENEWAL_WORKER__WORKER__NAME", name)
        .env("RENEWAL_WORKER__POLL__SCHEDULE", "0 0 0 1 1 * 2099")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start a daemon process")
}

async fn all_sent(app: &TestApp) -> bool {
    app.outbox()
        .await
        .iter()
        .all(|o| o.state == OutboxState::Sent)
}

/// Duplicated Message-IDs at the server.
fn duplicates(sink: &SmtpSink) -> Vec<String> {
    arrivals(sink)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect()
}

/// The sends a daemon has in flight at once (`worker.concurrency`, and as many pooled SMTP
/// connections): more than the default 4, so that the run is short and the window wide.
const CONCURRENCY: usize = 16;
const CONCURRENCY_ENV: [(&str, &str); 2] = [
    ("RENEWAL_WORKER__WORKER__CONCURRENCY", "16"),
    ("RENEWAL_WORKER__MAIL__SMTP__POOL_MAX_SIZE", "16"),
];

async fn a_daemon_killed_mid_run_resends_at_most_its_sends_in_flight() {
    const MAILS: u64 = 2_000;
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    owe(&app, MAILS).await;

    let mut first = daemon(&app, &sink, "crash", &CONCURRENCY_ENV);
    let mut guard = KillOnDrop(vec![first.id()]);
    let start = Instant::now();
    while (sink.received().len() as u64) < MAILS / 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let before_kill = start.elapsed();
    let claimed_at_kill = app
        .outbox()
        .await
        .iter()
        .filter(|o| o.state == OutboxState::Sending)
        .count();

    // The restart (same name, same host, the old process gone) takes its predecessor's claims
    // back at once: no wait for the 5-minute lease nor the 60 s of silence.
    let restarted = Instant::now();
    let second = daemon(&app, &sink, "crash", &CONCURRENCY_ENV);
    guard.0.push(second.id());
    let done = eventually_async(Duration::from_secs(50), || all_sent(&app)).await;
    let states = app
        .outbox()
        .await
        .iter()
        .fold(std::collections::BTreeMap::new(), |mut m, o| {
            *m.entry(format!("{:?} {:?}", o.state, o.claimed_by))
                .or_insert(0) += 1;
            m
        });
    assert!(done, "every mail sent after the restart: {states:?}");
    let took = restarted.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(second);

    let seen = arrivals(&sink);
    assert_eq!(seen.len() as u64, MAILS, "every mail arrived");
    let twice = duplicates(&sink);
    println!(
        "killed after {} mails ({before_kill:?}) with {claimed_at_kill} claimed: {} duplicates; the rest sent {took:?} after the restart",
        MAILS / 3,
        twice.len()
    );
    // A mail holds its send slot until its record commits, so what a kill can resend is at
    // most the sends in flight.
    assert!(
        twice.len() <= CONCURRENCY,
        "{} duplicates, more than the {CONCURRENCY} sends in flight: {twice:?}",
        twice.len()
    );
    assert!(app.store.daemons().await.unwrap().is_empty(), "clean stop");
}
on_both_backends!(async a_daemon_killed_mid_run_resends_at_most_its_sends_in_flight);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemons_claims_go_out_once_its_heartbeat_is_silent() {
    const MAILS: u64 = 400;
    // Mail in flight for a while: each message is held 20 ms by the server.
    let sink = SmtpSink::start(Behaviour::Slow(Duration::from_millis(20)));
    let app = postgres_app(&sink).await;
    owe(&app, MAILS).await;

    // Default settings: a beat every 10 s, dead after 6 missed (60 s); the lease 5 minutes.
    let mut victim = daemon(&app, &sink, "victim", &[]);
    let other = daemon(&app, &sink, "survivor", &[]);
    let _guard = KillOnDrop(vec![victim.id(), other.id()]);
    let start = Instant::now();
    while (sink.received().len() as u64) < MAILS / 4 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.kill().expect("SIGKILL");
    let _ = victim.wait();
    let killed = Instant::now();
    let held: BTreeSet<i64> = app
        .outbox()
        .await
        .iter()
        .filter(|o| {
            o.state == OutboxState::Sending
                && o.claimed_by
                    .as_deref()
                    .is_some_and(|w| w.starts_with("victim"))
        })
        .map(|o| o.id)
        .collect();
    assert!(!held.is_empty(), "the victim held claims when it died");

    // The survivor sends them once the victim's last beat is 60 s old: within 60 s and their
    // sending time, far from the lease.
    let sent = || async {
        app.outbox()
            .await
            .iter()
            .filter(|o| held.contains(&o.id))
            .all(|o| o.state == OutboxState::Sent)
    };
    assert!(
        eventually_async(Duration::from_secs(120), sent).await,
        "the victim's claims were sent"
    );
    let took = killed.elapsed();
    println!(
        "{} claims of the killed daemon sent {took:?} after the kill",
        held.len()
    );
    // Its last beat came at most 10 s before the kill, so not before 50 s: a daemon that
    // might still be alive keeps its claims. Then 60 s of silence at most, and the mails
    // themselves (4 at once, 20 ms each: a few seconds at most), far from the 5-minute lease.
    assert!(
        took > Duration::from_secs(49),
        "given back too early: {took:?}"
    );
    assert!(took < Duration::from_secs(65), "{took:?}");
    assert!(
        eventually_async(Duration::from_secs(60), || all_sent(&app)).await,
        "everything sent"
    );
    stop(other);
    assert_eq!(arrivals(&sink).len() as u64, MAILS, "every mail arrived");
    assert!(app.store.daemons().await.unwrap().is_empty());
}

/// A daemon row for a daemon elsewhere, beaten at `at`.
fn ghost(name: &str, pid: u32, host: &str, at: chrono::DateTime<Utc>) -> DaemonRow {
    DaemonRow {
        name: name.into(),
        host: host.into(),
        pid,
        version: "0.0.0".into(),
        started_at: at,
        last_beat_at: at,
    }
}

async fn sending_by(app: &TestApp, worker: &str) -> usize {
    app.outbox()
        .await
        .iter()
        .filter(|o| o.state == OutboxState::Sending && o.claimed_by.as_deref() == Some(worker))
        .count()
}

async fn claims_of_a_daemon_silent_longer_than_the_limit_are_given_back() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    add_synthetic_subscriptions(&app, 3).await;
    // To the millisecond, as the store keeps instants.
    let t0 =
        chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis() - 3_600_000).unwrap();
    for i in 0..3 {
        owe_ready_at(&app.store, &app.settings, i, t0).await;
    }
    // Another daemon claimed two mails at t0, its last beat.
    app.store
        .beat(&ghost("ghost-7", 7, "elsewhere", t0))
        .await
        .unwrap();
    assert_eq!(
        app.store.claim_due(2, "ghost-7", t0).await.unwrap().len(),
        2
    );

    // Default settings: 6 missed beats of 10 s.
    let limit = chrono::Duration::seconds(60);
    let clock = ManualClock::new(t0 + limit);
    let d = app.deliverer(Arc::new(clock.clone()) as SharedClock);
    // Exactly 60 s: not yet; the next look is due then.
    assert_eq!(d.rescue_silent().await, Some(t0 + limit));
    assert_eq!(sending_by(&app, "ghost-7").await, 2);
    // A millisecond later: presumed dead, its claims owed again and its row gone.
    clock.set(t0 + limit + chrono::Duration::milliseconds(1));
    assert_eq!(d.rescue_silent().await, None);
    assert_eq!(sending_by(&app, "ghost-7").await, 0);
    assert!(app.store.daemons().await.unwrap().is_empty());
    let rows = app.outbox().await;
    assert!(
        rows.iter().all(|o| o.state == OutboxState::Pending),
        "{rows:?}"
    );
    assert!(
        rows.iter().filter(|o| o.attempts == 1).all(|o| o
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("ghost-7"))),
        "{rows:?}"
    );
    // A beat that lands before the rescue keeps a daemon alive.
    let t1 = t0 + limit;
    app.store
        .beat(&ghost("ghost-8", 8, "elsewhere", t1))
        .await
        .unwrap();
    assert_eq!(
        app.store
            .bury_daemon("ghost-8", Some(t1), t1, "test")
            .await
            .unwrap(),
        None
    );
    // Sent by the living daemon.
    let report = d.drain().await.unwrap();
    assert_eq!(report.sent, 3);
    assert_eq!(sink.received().len(), 3);
}
on_both_backends!(async claims_of_a_daemon_silent_longer_than_the_limit_are_given_back);

async fn a_restarted_daemon_takes_back_its_gone_predecessors_claims_at_once() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    add_synthetic_subscriptions(&app, 4).await;
    let now = Utc::now();
    for i in 0..4 {
        owe_ready_at(&app.store, &app.settings, i, now).await;
    }
    let host = renewal_worker::config::host_name();
    // A process of this host that is gone (exited and reaped) and one that lives (the test).
    let mut exited = Command::new("true").spawn().unwrap();
    exited.wait().unwrap();
    let (dead_pid, live_pid) = (exited.id(), std::process::id());
    let me = format!("mail-{live_pid}");
    let predecessor = format!("mail-{dead_pid}");
    app.store
        .beat(&ghost(&predecessor, dead_pid, &host, now))
        .await
        .unwrap();
    app.store.claim_due(1, &predecessor, now).await.unwrap();
    // Alive, or elsewhere, or another daemon: left to the heartbeat.
    let alive = format!("other-{live_pid}");
    app.store
        .beat(&ghost(&alive, live_pid, &host, now))
        .await
        .unwrap();
    app.store.claim_due(1, &alive, now).await.unwrap();
    let elsewhere = format!("mail-{dead_pid}0");
    app.store
        .beat(&ghost(&elsewhere, dead_pid * 10, "another-host", now))
        .await
        .unwrap();
    app.store.claim_due(1, &elsewhere, now).await.unwrap();

    let d = Deliverer::build(
        Arc::new(app.settings.clone()),
        app.store.clone(),
        Arc::new(ManualClock::new(now)),
        me.clone(),
    )
    .unwrap();
    let row = d.register().await.unwrap();
    assert_eq!((row.host.as_str(), row.pid), (host.as_str(), live_pid));
    assert_eq!(
        sending_by(&app, &predecessor).await,
        0,
        "taken back at once"
    );
    assert_eq!(sending_by(&app, &alive).await, 1);
    assert_eq!(sending_by(&app, &elsewhere).await, 1);
    let names: Vec<String> = app
        .store
        .daemons()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    let mut expected = vec![alive.clone(), elsewhere.clone(), me.clone()];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(d.drain().await.unwrap().sent, 2);
}
on_both_backends!(async a_restarted_daemon_takes_back_its_gone_predecessors_claims_at_once);
