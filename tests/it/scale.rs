//! Many daemons on one PostgreSQL database: three worker processes share 10,000 owed mails
//! through a real SMTP server; every mail arrives once. Then the same with one process killed
//! (SIGKILL) in the middle: every mail still arrives, and the only duplicates are mails the
//! killed process had claimed and not recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use renewal_worker::store::OutboxState;

use crate::helpers::*;

const MAILS: u64 = 10_000;
const CONCURRENCY: usize = 8;
/// Mails one send lane takes at once.
const SEND_BATCH: usize = 16;
/// The most mails a daemon holds claimed at once: its send lanes (enough batches for
/// `CONCURRENCY`, plus four on PostgreSQL) times the batch. A daemon killed mid-run can have
/// handed at most these to the server without recording them.
const CLAIMED_AT_MOST: usize = (CONCURRENCY.div_ceil(SEND_BATCH) + 4) * SEND_BATCH;

/// Owes `MAILS` mails: one `ready` per synthetic subscription, recorded in 16 lanes.
async fn owe_mails(app: &TestApp) {
    add_synthetic_subscriptions(app, MAILS).await;
    let mut set = tokio::task::JoinSet::new();
    let lanes = 16;
    for lane in 0..lanes {
        let (store, settings) = (app.store.clone(), app.settings.clone());
        set.spawn(async move {
            for i in (lane..MAILS).step_by(lanes as usize) {
                owe_ready(&store, &settings, i).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

fn worker(app: &TestApp, sink: &SmtpSink, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_renewal-worker"))
        .current_dir(app.dir.path())
        .args(["run"])
        .env_remove("RUST_LOG")
        .env("RENEWAL_WORKER__LOG__LEVEL", "warn")
        .env("RENEWAL_WORKER__DATABASE__URL", &app.settings.database.url)
        .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
        .env("RENEWAL_WORKER__MAIL__TRANSPORT", "smtp")
        .env("RENEWAL_WORKER__MAIL__SMTP__HOST", "127.0.0.1")
        .env("RENEWAL_WORKER__MAIL__SMTP__PORT", sink.port.to_string())
        .env(
            "RENEWAL_WORKER__MAIL__SMTP__POOL_MAX_SIZE",
            CONCURRENCY.to_string(),
        )
        .env("RENEWAL_WORKER__WORKER__NAME", name)
        .env(
            "RENEWAL_WORKER__WORKER__CONCURRENCY",
            CONCURRENCY.to_string(),
        )
        .env("RENEWAL_WORKER__WORKER__SEND_BATCH", SEND_BATCH.to_string())
        .env("RENEWAL_WORKER__WORKER__POLL_INTERVAL", "200ms")
        .env("RENEWAL_WORKER__WORKER__HEARTBEAT_INTERVAL", "1s")
        .env("RENEWAL_WORKER__WORKER__MISSED_HEARTBEATS", "3")
        .env("RENEWAL_WORKER__WORKER__JOB_TIMEOUT", "20s")
        .env("RENEWAL_WORKER__WORKER__SENDING_LEASE", "30s")
        .env("RENEWAL_WORKER__WORKER__REDRIVE_INTERVAL", "2s")
        .env("RENEWAL_WORKER__POLL__SCHEDULE", "0 0 0 1 1 * 2099")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a worker process")
}

/// Kills the worker processes it names when dropped, so that a failing test leaves none
/// running against its (then dropped) database.
pub(crate) struct KillOnDrop(pub(crate) Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

pub(crate) fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Message-IDs received, with how often each arrived.
pub(crate) fn arrivals(sink: &SmtpSink) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for m in sink.received() {
        *seen.entry(m.message_id()).or_insert(0) += 1;
    }
    seen
}

async fn all_sent(app: &TestApp) -> bool {
    app.outbox()
        .await
        .iter()
        .all(|o| o.state == OutboxState::Sent)
}

async fn wait_all_sent(app: &TestApp, limit: Duration) {
    let start = Instant::now();
    while !all_sent(app).await {
        assert!(
            start.elapsed() < limit,
            "not every mail was sent within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_postgres_send_every_mail_exactly_once() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = postgres_app(&sink).await;
    owe_mails(&app).await;

    let started = Instant::now();
    let workers: Vec<Child> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| worker(&app, &sink, n))
        .collect();
    let _guard = KillOnDrop(workers.iter().map(Child::id).collect());
    wait_all_sent(&app, Duration::from_secs(300)).await;
    let took = started.elapsed();
    // Let any straggler that would be a duplicate arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for w in workers {
        stop(w);
    }

    let seen = arrivals(&sink);
    assert_eq!(seen.len() as u64, MAILS, "every mail arrived");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "mails that arrived twice: {twice:?}");
    // All three took part.
    let rows = app.outbox().await;
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        for a in app.store.attempts(row.id).await.unwrap() {
            let name = a.worker.split('-').next().unwrap_or_default().to_owned();
            *by_worker.entry(name).or_insert(0) += 1;
        }
    }
    assert_eq!(
        by_worker.keys().cloned().collect::<Vec<_>>(),
        ["w1", "w2", "w3"]
    );
    println!(
        "3 workers: {MAILS} mails in {:.1} s ({:.0}/s), by worker {by_worker:?}",
        took.as_secs_f64(),
        MAILS as f64 / took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_nothing_and_duplicates_only_its_in_flight_mail() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = postgres_app(&sink).await;
    owe_mails(&app).await;

    let mut victim = worker(&app, &sink, "victim");
    let others: Vec<Child> = ["w2", "w3"]
        .iter()
        .map(|n| worker(&app, &sink, n))
        .collect();
    let _guard = KillOnDrop(others.iter().map(Child::id).chain([victim.id()]).collect());
    let start = Instant::now();
    while (sink.received().len() as u64) < MAILS / 3 {
        assert!(start.elapsed() < Duration::from_secs(300), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill().expect("SIGKILL the victim");
    let _ = victim.wait();

    // Its claims come back once its heartbeat is 3 s old (1 s x 3), through the others'
    // rescuers, long before the sending lease (30 s); the mail it had not claimed the others
    // take as it comes due.
    wait_all_sent(&app, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for w in others {
        stop(w);
    }

    let seen = arrivals(&sink);
    assert_eq!(seen.len() as u64, MAILS, "every mail arrived");
    let duplicated: BTreeSet<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    // A duplicate can only be a mail the victim handed to the server and died before
    // recording: its row was claimed twice, and no recorded attempt is the victim's.
    let rows = app.outbox().await;
    let mut resent_after_loss = 0;
    for row in &rows {
        let id = row.message_id.trim_matches(['<', '>']).to_owned();
        let attempts = app.store.attempts(row.id).await.unwrap();
        if row.attempts > 1 {
            resent_after_loss += 1;
            assert!(
                attempts.iter().all(|a| !a.worker.starts_with("victim")),
                "{attempts:?}"
            );
        }
        if duplicated.contains(&id) || duplicated.contains(&row.message_id) {
            assert!(
                row.attempts > 1,
                "a duplicate that was not re-claimed: {row:?}"
            );
        }
    }
    assert!(
        duplicated.len() <= CLAIMED_AT_MOST,
        "{} duplicates, more than the victim could have claimed ({CLAIMED_AT_MOST})",
        duplicated.len()
    );
    println!(
        "killed one of 3 workers: {MAILS} mails arrived, {} duplicates, {resent_after_loss} claims of the victim taken over",
        duplicated.len()
    );
}
