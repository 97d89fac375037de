//! The periodic poll over a large book: 1,000,000 subscriptions of which 1,000 are due, and
//! `simulate` over 100,000 subscriptions for a year. Run: `cargo bench --bench poll`.
//! Prints figures; asserts only correctness (how many were handled), never time.

use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use renewal_worker::app;
use renewal_worker::config::Settings;
use renewal_worker::import::{self, Known};
use renewal_worker::store::Store;

const BOOK: u64 = 1_000_000;
const DUE: u64 = 1_000;
const SIMULATED: u64 = 100_000;

const PARTIES: &str = r#"{
  "resellers": [{"id": "BR", "name": "Bench Reseller", "email": "ops@bench.example",
                 "timezone": "America/New_York", "calendar": "us"}],
  "customers": [{"id": "BC", "reseller_id": "BR", "name": "Bench Customer", "email": "it@bench.example"}]}"#;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

async fn book(dir: &std::path::Path, name: &str, n: u64, due: u64) -> (Settings, Store) {
    let settings = Settings::from_toml_overlay(&format!(
        "[database]\nurl = \"sqlite://{}\"\n",
        dir.join(name).display()
    ))
    .expect("settings");
    let store = app::open_store(&settings).await.expect("store");
    let raw = import::parse_json(PARTIES.as_bytes()).expect("json");
    let checked = import::check(&raw, &Known::default(), &|_| Ok(()), |_| {}).expect("valid");
    store
        .upsert_records(
            &checked.resellers,
            &checked.customers,
            &[],
            Utc::now(),
            |_| {},
        )
        .await
        .expect("parties");
    let later: DateTime<Utc> = "2027-06-01T00:00:00Z".parse().expect("instant");
    let t = Instant::now();
    store
        .insert_synthetic_subscriptions(
            "BR",
            "BC",
            n,
            due,
            date("2025-12-28"),
            date("2026-12-28"),
            later,
        )
        .await
        .expect("fill");
    println!(
        "  filled {n} subscriptions in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    (settings, store)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");

    println!("poll over {BOOK} subscriptions, {DUE} due (SQLite, file in a temp folder)");
    let (settings, store) = book(dir.path(), "poll.db", BOOK, DUE).await;
    println!(
        "  query plan: {}",
        store.explain_due_query().await.expect("explain")
    );
    let calendars = settings.calendars().expect("calendars");
    // The 30-day reminder of every due subscription falls due at this instant.
    let now: DateTime<Utc> = "2026-11-18T14:00:00Z".parse().expect("instant");
    let t = Instant::now();
    let report = app::poll(&store, &settings, &calendars, now)
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
    let again = app::poll(&store, &settings, &calendars, now)
        .await
        .expect("poll");
    assert_eq!(again.subscriptions, 0);
    println!(
        "  poll with nothing due: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    store.close().await;

    println!("simulate a year over {SIMULATED} subscriptions");
    let (settings, store) = book(dir.path(), "simulate.db", SIMULATED, 0).await;
    let t = Instant::now();
    let subs = store.active_subscription_contexts().await.expect("load");
    let load = t.elapsed();
    let t = Instant::now();
    let mut mails = Vec::new();
    let from: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("instant");
    let to: DateTime<Utc> = "2027-01-01T00:00:00Z".parse().expect("instant");
    for ctx in &subs {
        app::simulate_one(ctx, &settings, &calendars, from, to, &mut mails).expect("simulate");
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
