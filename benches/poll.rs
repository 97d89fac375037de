//! The periodic poll over a large book, on SQLite and PostgreSQL side by side: 1,000,000
//! subscriptions of which 1,000 are due; and `simulate` over 100,000 subscriptions for a year.
//! Run: `cargo bench --bench poll`. Prints figures; asserts only correctness (how many were
//! handled), never time.

mod support;

use std::time::Instant;

use chrono::{DateTime, Utc};
use renewal_worker::service;
use support::{Backend, BenchDb, fill, open, settings};

const BOOK: u64 = 1_000_000;
const DUE: u64 = 1_000;
const SIMULATED: u64 = 100_000;

async fn poll_bench(backend: Backend) {
    let Ok(db) = BenchDb::new(backend).await else {
        println!("{}: not reachable, skipped", backend.name());
        return;
    };
    println!(
        "poll over {BOOK} subscriptions, {DUE} due ({})",
        backend.name()
    );
    let settings = settings(&db.url, 25, 4);
    let store = open(&settings).await;
    let took = fill(&db.url, BOOK, DUE).await;
    println!(
        "  filled {BOOK} subscriptions in {:.1} s",
        took.as_secs_f64()
    );
    // Reopened, as a running daemon would find it: on SQLite the close checkpoints the fill's
    // write-ahead log, which the first poll would otherwise pay for.
    // On PostgreSQL the same: statistics and a checkpoint.
    store.close().await;
    db.settle().await;
    let store = service::open_store(&settings).await.expect("reopen");
    println!(
        "  query plan: {}",
        support::explain::due_query(&db.url).await.expect("explain")
    );
    let calendars = settings.calendars().expect("calendars");
    // The 30-day reminder of every due subscription falls due at this instant.
    let now: DateTime<Utc> = "2026-11-18T14:00:00Z".parse().expect("instant");
    let t = Instant::now();
    let report = service::poll(&store, &settings, &calendars, now)
        .await
        .expect("poll");
    let poll = t.elapsed();
    assert_eq!(report.subscriptions as u64, DUE);
    assert_eq!(report.mails_queued as u64, DUE);
    println!(
        "  poll: {:.0} ms for {} subscriptions ({:.0} µs each), {} mails queued",
        poll.as_secs_f64() * 1e3,
        report.subscriptions,
        poll.as_secs_f64() * 1e6 / f64::from(report.subscriptions),
        report.mails_queued
    );
    let t = Instant::now();
    let again = service::poll(&store, &settings, &calendars, now)
        .await
        .expect("poll");
    assert_eq!(again.subscriptions, 0);
    println!(
        "  poll with nothing due: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    store.close().await;
    db.drop_database().await;
}

#[tokio::main]
async fn main() {
    poll_bench(Backend::Sqlite).await;
    poll_bench(Backend::Postgres).await;

    println!("simulate a year over {SIMULATED} subscriptions");
    let db = BenchDb::new(Backend::Sqlite).await.expect("db");
    let settings = settings(&db.url, 25, 4);
    let store = open(&settings).await;
    fill(&db.url, SIMULATED, 0).await;
    let calendars = settings.calendars().expect("calendars");
    let t = Instant::now();
    let subs = store.active_subscription_contexts().await.expect("load");
    let load = t.elapsed();
    let t = Instant::now();
    let mut mails = Vec::new();
    let from: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("instant");
    let to: DateTime<Utc> = "2027-01-01T00:00:00Z".parse().expect("instant");
    for ctx in &subs {
        service::simulate_one(ctx, &settings, &calendars, from, to, &mut mails).expect("simulate");
    }
    let sim = t.elapsed();
    assert_eq!(mails.len() as u64, SIMULATED * 4);
    println!(
        "  load {:.2} s, simulate {:.2} s: {} mails",
        load.as_secs_f64(),
        sim.as_secs_f64(),
        mails.len()
    );
}
