//! Throughput and memory, side by side on SQLite and PostgreSQL. Run:
//! `cargo bench --bench throughput` (PostgreSQL from `RENEWAL_WORKER_TEST_PG` or
//! postgres://postgres@127.0.0.1:5432). Prints figures; asserts only that every mail arrived.
//!
//! 1. The limits: raw lettre sends/s to a local sink through a pool of 16, raw database
//!    commits/s for the outbox's pattern (insert the owed row; later mark it sent), and a
//!    batch's own store work (its claim and its record, one batch after another with nothing
//!    else running): the database's share of a mail's cost where nothing competes for the
//!    cores.
//! 2. End to end (event recorded -> mail accepted by the sink) at 1, 4 and 16 mails at once
//!    (`worker.concurrency`; send jobs carry `worker.send_batch` mails each, the default), as
//!    mails/s and as a share of the raw send rate at the same concurrency and for as many mails,
//!    measured again just before and just after each run (the machine's speed drifts; a ratio
//!    of two figures minutes apart drifts with it). Three rounds of each, and the median share.
//! 3. apalis no-op jobs/s on the same queue settings, as many at once; our time per mail as a
//!    multiple of its time per job.
//! 4. Peak RSS of the daemon (the release binary) idle, and while it works a 100,000-mail
//!    backlog.
//!
//! `RW_BENCH_SECTIONS=2,3` (any of 1-4; 3 runs beside 2, and 2 without 3 leaves the no-op
//! runs out), `RW_BENCH_BACKENDS=postgresql` and `RW_BENCH_LEVELS=16` narrow a run while
//! working on one figure, `RW_BENCH_BATCH=8` sets `worker.send_batch` (32, the default,
//! when unset), `RW_BENCH_THREADS=2` sets `worker.threads` (the runtime's threads, which the
//! sink shares; the daemon's default when unset), and `RW_BENCH_ROUNDS=1` runs each
//! end-to-end measurement (with its raw sends) once instead of three times;
//! `RW_BENCH_SINK_HOLD_MS=2` makes the sink hold each mail that long, as a relay does.
//! docs/PERFORMANCE.md
//! says which run each of its figures comes from.
//!
//! Sections 1 and 2 also print this process's CPU time per mail (the sink's included, a
//! PostgreSQL server's not), section 2 the whole machine's too (the server's included), both
//! the SMTP sessions the sends opened, and section 2 how long one SMTP conversation took in
//! the worker (its `smtp_seconds` histogram) against a raw send's (concurrency over rate),
//! and how long a mail then waited for its record (`record_wait_seconds`): a send slot is
//! held through both, so `c` at once send at most `c / (conversation + wait)` mails/s.
//! The sink shares the machine's cores, so once both runs keep every core busy, raw CPU per
//! send over end-to-end machine CPU per mail bounds the end-to-end share of the raw send rate.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use lettre::AsyncTransport;
use renewal_worker::clock::SystemClock;
use renewal_worker::domain::SubscriptionId;
use renewal_worker::notify::{MailFacts, NotificationKind};
use renewal_worker::outbox::Deliverer;
use renewal_worker::store::{AttemptOutcome, FinishedAttempt, JobQueue, QueueOptions, QueuedJob};
use support::{
    Backend, BenchDb, Sink, cpu_seconds, fill, machine_cpu_seconds, open, owe_ready_mails, rss_mib,
    settings,
};

const LEVELS: [usize; 3] = [1, 4, 16];
/// As many raw sends as an end-to-end run sends mails, so that both spans are as long.
const RAW_SENDS: u64 = E2E_MAILS;
const RAW_COMMITS: u64 = 2_000;
const BACKLOG: u64 = 100_000;
const E2E_MAILS: u64 = 10_000;

fn jobs(backend: Backend) -> u64 {
    match backend {
        Backend::Sqlite => 2_000,
        Backend::Postgres => 4_000,
    }
}

/// Runs `n` futures made by `f(i)` with at most `c` in flight; returns the rate per second.
async fn rate<F, Fut>(n: u64, c: usize, f: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (f, next) = (f.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                f(i).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("lane");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Raw lettre: the same rendered mail, sent `RAW_SENDS` times through a pool of 16.
/// Returns sends/s, CPU seconds per send and the SMTP sessions opened.
async fn raw_sends(sink: &Sink, message: lettre::Message, c: usize) -> (f64, f64, u64) {
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(sink.port)
            .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(16))
            .build();
    let before = sink.count();
    let sessions = sink.sessions();
    let cpu = cpu_seconds();
    let r = rate(RAW_SENDS, c, move |_| {
        let (transport, message) = (transport.clone(), message.clone());
        async move {
            transport.send(message).await.expect("raw send");
        }
    })
    .await;
    assert!(
        sink.wait_for(before + RAW_SENDS, Duration::from_secs(30))
            .await
    );
    (
        r,
        (cpu_seconds() - cpu) / RAW_SENDS as f64,
        sink.sessions() - sessions,
    )
}

/// Raw database: per mail, one commit inserting an owed outbox row and one marking it sent,
/// through a pool like the store's.
async fn raw_commits(backend: Backend, c: usize) -> f64 {
    let db = BenchDb::new(backend).await.expect("database");
    let settings = settings(&db.url, 25, c);
    let store = open(&settings).await;
    fill(&db.url, 1, 0).await;
    store.close().await;
    const INSERT: &str = "INSERT INTO outbox (key, kind, subscription_id, recipients, payload, \
        message_id, state, attempts, next_attempt_at, created_at) \
        VALUES ($1, 'ready', 'BENCH-00000000', '[\"a@b.example\"]', '{}', $1, 'pending', 0, $2, $2) \
        RETURNING id";
    const UPDATE: &str = "UPDATE outbox SET state = 'sent', sent_at = $1, attempts = 1 \
        WHERE id = $2 AND state = 'pending'";
    let now = chrono::Utc::now().timestamp_millis();
    // The same two commits on either pool type.
    macro_rules! insert_then_update {
        ($pool:expr, $insert:expr, $update:expr) => {{
            let (pool, insert, update) = ($pool, $insert, $update);
            rate(RAW_COMMITS, c, move |i| {
                let (pool, insert, update) = (pool.clone(), insert.clone(), update.clone());
                async move {
                    let id: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(insert))
                        .bind(format!("raw:{i}"))
                        .bind(now)
                        .fetch_one(&pool)
                        .await
                        .expect("insert");
                    sqlx::query(sqlx::AssertSqlSafe(update))
                        .bind(now)
                        .bind(id)
                        .execute(&pool)
                        .await
                        .expect("update");
                }
            })
            .await
        }};
    }
    let r = match backend {
        Backend::Sqlite => {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
            use std::str::FromStr;
            let options = SqliteConnectOptions::from_str(&db.url)
                .expect("url")
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(settings.database.max_connections)
                .connect_with(options)
                .await
                .expect("pool");
            insert_then_update!(pool, INSERT.replace('$', "?"), UPDATE.replace('$', "?"))
        }
        Backend::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(settings.database.max_connections)
                .connect(&db.url)
                .await
                .expect("pool");
            insert_then_update!(pool, INSERT.to_owned(), UPDATE.to_owned())
        }
    };
    db.drop_database().await;
    r
}

/// A batch's store work alone, one batch after another with nothing else running: claims of
/// `worker.send_batch` owed mails (with their subscriptions read) and the
/// record of each batch as sent, over `E2E_MAILS` owed mails. Returns µs per batch for the
/// claim and for the record, and the mails per batch.
async fn batch_store_work(backend: Backend) -> (f64, f64, f64) {
    let db = BenchDb::new(backend).await.expect("database");
    let settings = settings(&db.url, 25, 16);
    let store = open(&settings).await;
    fill(&db.url, E2E_MAILS, 0).await;
    owe_ready_mails(&store, &settings, E2E_MAILS).await;
    let batch = settings.worker.send_batch;
    let (mut claiming, mut recording) = (Duration::ZERO, Duration::ZERO);
    let (mut mails, mut batches) = (0u64, 0u64);
    loop {
        let now = chrono::Utc::now();
        let t = Instant::now();
        let claims = store.claim_due(batch, "bench", now).await.expect("claim");
        claiming += t.elapsed();
        if claims.is_empty() {
            break;
        }
        let sent: Vec<FinishedAttempt> = claims
            .iter()
            .map(|c| FinishedAttempt {
                outbox_id: c.row.id,
                attempt: c.row.attempts,
                worker: "bench".into(),
                started_at: now,
                finished_at: chrono::Utc::now(),
                outcome: AttemptOutcome::Sent,
            })
            .collect();
        let t = Instant::now();
        let kept = store.finish_attempts(&sent).await.expect("record");
        recording += t.elapsed();
        assert!(kept.iter().all(|&k| k), "every claim still held");
        mails += claims.len() as u64;
        batches += 1;
    }
    assert_eq!(mails, E2E_MAILS, "every owed mail claimed once");
    store.close().await;
    db.drop_database().await;
    let per_batch = |d: Duration| d.as_secs_f64() * 1e6 / batches as f64;
    (
        per_batch(claiming),
        per_batch(recording),
        mails as f64 / batches as f64,
    )
}

/// What one end-to-end run measured.
struct EndToEnd {
    /// Mails/s from the worker's start until the sink had every mail.
    rate: f64,
    /// Events recorded/s before that.
    events: f64,
    /// CPU seconds per mail meanwhile: this process's (the sink's included) and the whole
    /// machine's (a PostgreSQL server's too).
    cpu: f64,
    machine: f64,
    /// SMTP sessions the worker opened.
    sessions: u64,
    /// Mean seconds of one SMTP conversation (from taking a send slot until the server's
    /// answer), from the worker's own `smtp_seconds` histogram.
    send: f64,
    /// Mean seconds from the server's answer until the mail's record committed (its send
    /// slot held meanwhile), from the worker's `record_wait_seconds` histogram.
    record: f64,
}

/// End to end: `n` ready events recorded, then the daemon's worker started with `c` mails at
/// once, until the sink has every mail.
async fn end_to_end(backend: Backend, sink: &Sink, c: usize) -> EndToEnd {
    // Enough mails that the worker's start (first fetch, pools filling) is a small part.
    let n = E2E_MAILS;
    let db = BenchDb::new(backend).await.expect("database");
    let settings = settings(&db.url, sink.port, c);
    let store = open(&settings).await;
    fill(&db.url, n, 0).await;
    let enqueue = owe_ready_mails(&store, &settings, n).await;
    let before = sink.count();
    let sessions = sink.sessions();
    let deliverer = Arc::new(
        Deliverer::build(
            Arc::new(settings),
            store.clone(),
            Arc::new(SystemClock),
            format!("bench-{c}"),
        )
        .expect("deliverer"),
    );
    // For profiling: `perf record -a -k CLOCK_MONOTONIC` over a run, then `perf report --time
    // start,end` with these two instants keeps only the end-to-end span.
    if std::env::var_os("RW_BENCH_MARK").is_some() {
        eprintln!("MARK start {}", uptime());
    }
    let t = Instant::now();
    let cpu = cpu_seconds();
    let machine = machine_cpu_seconds();
    let metrics = deliverer.metrics.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(renewal_worker::daemon::run_worker(deliverer, stop.clone()));
    assert!(
        sink.wait_for(before + n, Duration::from_secs(600)).await,
        "every mail arrived"
    );
    let r = n as f64 / t.elapsed().as_secs_f64();
    if std::env::var_os("RW_BENCH_MARK").is_some() {
        eprintln!("MARK end {}", uptime());
    }
    let cpu = (cpu_seconds() - cpu) / n as f64;
    let machine = (machine_cpu_seconds() - machine) / n as f64;
    let sessions = sink.sessions() - sessions;
    let smtp = &metrics.smtp_seconds;
    let send = smtp.sum() / smtp.count().max(1) as f64;
    let waited = &metrics.record_wait_seconds;
    let record = waited.sum() / waited.count().max(1) as f64;
    stop.cancel();
    worker.await.expect("worker task").expect("worker");
    store.close().await;
    db.drop_database().await;
    EndToEnd {
        rate: r,
        events: n as f64 / enqueue.as_secs_f64(),
        cpu,
        machine,
        sessions,
        send,
        record,
    }
}

/// Seconds since boot on the clock perf can stamp samples with (`CLOCK_MONOTONIC`, which
/// `/proc/uptime` follows while the machine has not slept), to 10 ms.
fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Noop {
    i: u64,
}

async fn noop(_job: Noop, done: Data<Arc<AtomicU64>>) -> Result<(), BoxDynError> {
    done.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// apalis alone: `n` no-op jobs on the same backend and queue settings, `c` at once.
async fn apalis_noop(backend: Backend, c: usize) -> f64 {
    let n = jobs(backend);
    let db = BenchDb::new(backend).await.expect("database");
    let settings = settings(&db.url, 25, c);
    let store = open(&settings).await;
    let lanes = rate(n, 16, {
        let store = store.clone();
        move |i| {
            let store = store.clone();
            async move {
                store
                    .enqueue_job(&QueuedJob {
                        queue: "bench.noop",
                        args: serde_json::json!({ "i": i }),
                        idempotency_key: format!("noop:{i}"),
                        run_after: Duration::ZERO,
                        max_attempts: 1,
                    })
                    .await
                    .expect("push");
            }
        }
    });
    lanes.await;
    let options = QueueOptions {
        batch_size: c,
        poll_interval: settings.worker.poll_interval,
        heartbeat_interval: settings.worker.heartbeat_interval,
        missed_heartbeats: settings.worker.missed_heartbeats,
    };
    let done = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let t = Instant::now();
    // One worker body, compiled for each backend's queue type.
    macro_rules! noop_monitor {
        ($queue:expr) => {{
            let (queue, done) = ($queue, done.clone());
            Monitor::new().register(move |_| {
                WorkerBuilder::new("noop")
                    .backend(queue.clone())
                    .data(done.clone())
                    .concurrency(c)
                    .build(noop)
            })
        }};
    }
    let monitor = match store.job_queue::<Noop>("bench.noop", options) {
        JobQueue::Sqlite(q) => noop_monitor!(q),
        JobQueue::Postgres(q) => noop_monitor!(q),
    };
    let running = tokio::spawn(monitor.run_with_signal(async {
        let _ = stopped.await;
        Ok(())
    }));
    while done.load(Ordering::SeqCst) < n {
        assert!(t.elapsed() < Duration::from_secs(600), "no-op jobs stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let r = n as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = running.await;
    store.close().await;
    db.drop_database().await;
    r
}

/// The daemon binary on `db`, sending to `sink`, 16 jobs at once.
fn daemon(db_url: &str, sink: &Sink, dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_renewal-worker"))
        .current_dir(dir)
        .arg("run")
        .env_remove("RUST_LOG")
        .env("RENEWAL_WORKER__LOG__LEVEL", "error")
        .env("RENEWAL_WORKER__DATABASE__URL", db_url)
        .env(
            "RENEWAL_WORKER__TEMPLATES__DIR",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
        )
        .env("RENEWAL_WORKER__MAIL__TRANSPORT", "smtp")
        .env("RENEWAL_WORKER__MAIL__SMTP__HOST", "127.0.0.1")
        .env("RENEWAL_WORKER__MAIL__SMTP__PORT", sink.port.to_string())
        .env("RENEWAL_WORKER__MAIL__SMTP__POOL_MAX_SIZE", "16")
        .env("RENEWAL_WORKER__WORKER__CONCURRENCY", "16")
        .env("RENEWAL_WORKER__POLL__SCHEDULE", "0 0 0 1 1 * 2099")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the daemon")
}

/// SIGTERM, then waits for the daemon to exit; returns how long that took and how it ended.
fn stop(mut child: std::process::Child) -> (Duration, std::process::ExitStatus) {
    let t = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("the daemon's exit");
    (t.elapsed(), status)
}

/// Peak RSS idle (10 s on an empty database), then while working through `BACKLOG` owed mails
/// (sampled for 30 s, with how many were sent meanwhile).
async fn memory(backend: Backend, sink: &Sink) {
    let dir = tempfile::tempdir().expect("dir");
    let db = BenchDb::new(backend).await.expect("database");
    let s = settings(&db.url, sink.port, 16);
    let store = open(&s).await;
    let child = daemon(&db.url, sink, dir.path());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (idle_peak, idle_now) = rss_mib(child.id()).expect("rss");
    let _ = stop(child);
    println!("  idle daemon: peak RSS {idle_peak:.1} MiB (now {idle_now:.1} MiB)");

    fill(&db.url, BACKLOG, 0).await;
    let t = owe_ready_mails(&store, &s, BACKLOG).await;
    println!(
        "  {BACKLOG} mails owed in {:.1} s ({:.0} events recorded/s)",
        t.as_secs_f64(),
        BACKLOG as f64 / t.as_secs_f64()
    );
    let before = sink.count();
    let child = daemon(&db.url, sink, dir.path());
    let mut samples = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (peak, now) = rss_mib(child.id()).expect("rss");
        samples.push(format!("{now:.0}"));
        if samples.len() == 6 {
            println!(
                "  with the backlog: peak RSS {peak:.1} MiB; RSS every 5 s: {} MiB; {} mails sent in 30 s",
                samples.join(", "),
                sink.count() - before
            );
        }
    }
    // A busy daemon's stop: the batches in hand finish within worker.shutdown_grace.
    let (took, status) = stop(child);
    println!(
        "  SIGTERM while working the backlog: exited in {:.1} s ({status})",
        took.as_secs_f64()
    );
    store.close().await;
    db.drop_database().await;
}

/// The daemon's allocator (see `src/main.rs`), so that every figure is the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// On the runtime the daemon runs on (`worker.threads`; `RW_BENCH_THREADS` sets it), which
/// the sink shares: so do the raw sends every figure is a share of.
fn main() {
    let settings = settings("sqlite::memory:", 25, 1);
    renewal_worker::runtime(&settings)
        .expect("runtime")
        .block_on(bench_main());
}

async fn bench_main() {
    let sections = std::env::var("RW_BENCH_SECTIONS").unwrap_or_else(|_| "1,2,3,4".into());
    let section = |n: &str| sections.split(',').any(|s| s.trim() == n);
    let levels = std::env::var("RW_BENCH_LEVELS").unwrap_or_else(|_| "1,4,16".into());
    let level = |c: usize| levels.split(',').any(|s| s.trim() == c.to_string());
    let rounds: usize = std::env::var("RW_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let wanted = std::env::var("RW_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgresql".into());
    let wants = |b: Backend| {
        wanted
            .split(',')
            .any(|s| s.trim().eq_ignore_ascii_case(b.name()))
    };
    let sink = Sink::start().await;
    let mut backends = Vec::new();
    if wants(Backend::Sqlite) {
        backends.push(Backend::Sqlite);
    }
    if wants(Backend::Postgres) {
        match BenchDb::new(Backend::Postgres).await {
            Ok(db) => {
                db.drop_database().await;
                backends.push(Backend::Postgres);
            }
            Err(e) => println!("PostgreSQL benchmarks skipped: {e}"),
        }
    }

    // The mail every measurement sends: the `ready` mail as rendered for a subscription.
    let message = {
        let db = BenchDb::new(Backend::Sqlite).await.expect("db");
        let s = settings(&db.url, sink.port, 1);
        let store = open(&s).await;
        fill(&db.url, 1, 0).await;
        let ctx = store
            .subscription_context(&SubscriptionId::parse("BENCH-00000000").expect("id"))
            .await
            .expect("read")
            .expect("subscription");
        let deliverer = Deliverer::build(
            Arc::new(s),
            store.clone(),
            Arc::new(SystemClock),
            "b".into(),
        )
        .expect("deliverer");
        let (_, message) = deliverer
            .compose(
                NotificationKind::Ready,
                &ctx,
                MailFacts::Ready {},
                &["it@bench.example".to_owned()],
                "bench:ready",
            )
            .expect("compose");
        store.close().await;
        message
    };
    println!(
        "mail of {} bytes; SMTP sink on 127.0.0.1:{}",
        message.formatted().len(),
        sink.port
    );

    let limits = if section("1") {
        limits(&sink, &message, &backends).await
    } else {
        Limits::default()
    };

    if section("2") || section("3") {
        println!("\n2. end to end (event recorded -> mail accepted), and 3. apalis no-op jobs");
        for &b in &backends {
            for c in LEVELS {
                if !level(c) {
                    continue;
                }
                let mut shares = Vec::new();
                for round in 1..=rounds {
                    // The raw sends this run is a share of, measured just before it and just
                    // after, at the same concurrency: the machine's speed drifts within
                    // minutes (a shared host; raw sends alone have measured 10,700-16,100/s a
                    // few seconds apart), and section 1's figure can be from a slower or
                    // faster spell. The share is taken against the mean of the two.
                    let (before, cpu_before, _) = raw_sends(&sink, message.clone(), c).await;
                    let EndToEnd {
                        rate: e2e,
                        events,
                        cpu,
                        machine,
                        sessions,
                        send,
                        record,
                    } = end_to_end(b, &sink, c).await;
                    let (after, cpu_after, _) = raw_sends(&sink, message.clone(), c).await;
                    let raw_send = (before + after) / 2.0;
                    let raw_cpu = (cpu_before + cpu_after) / 2.0;
                    // The no-op queue is far from its goal; once per level is enough.
                    let noop = if section("3") && round == 1 {
                        let noop = apalis_noop(b, c).await;
                        format!(
                            "; apalis no-op {noop:.0} jobs/s, our time per mail {:.2}x",
                            noop / e2e
                        )
                    } else {
                        String::new()
                    };
                    let commits = limits.commits.get(&(b, c)).copied().unwrap_or(f64::NAN);
                    let round = if rounds > 1 {
                        format!(" (round {round})")
                    } else {
                        String::new()
                    };
                    println!(
                        "  {:<10} {c:>2} at once{round}: {e2e:>6.0} mails/s = {:.2} of raw sends (just before and after: {before:.0}/s, {after:.0}/s), {:.2} of raw outbox commits{noop}; events recorded {events:.0}/s; CPU per mail {:.0} us (raw send {:.0} us), machine's {:.0} us; {sessions} SMTP sessions; one SMTP conversation {:.0} us (raw send {:.0} us), then the wait for its record {:.0} us",
                        b.name(),
                        e2e / raw_send,
                        e2e / commits,
                        cpu * 1e6,
                        raw_cpu * 1e6,
                        machine * 1e6,
                        send * 1e6,
                        // Little's law: c sends in flight at `raw_send` per second.
                        c as f64 / raw_send * 1e6,
                        record * 1e6,
                    );
                    shares.push(e2e / raw_send);
                }
                if shares.len() > 1 {
                    shares.sort_by(f64::total_cmp);
                    println!(
                        "  {:<10} {c:>2} at once: share of raw sends over {rounds} rounds: median {:.2}, {:.2}-{:.2}",
                        b.name(),
                        shares[shares.len() / 2],
                        shares[0],
                        shares[shares.len() - 1],
                    );
                }
            }
        }
    }

    if section("4") {
        println!("\n4. daemon memory (release binary)");
        for &b in &backends {
            println!(" {}", b.name());
            memory(b, &sink).await;
        }
    }
}

/// Section 1's raw outbox commits/s per store and level, which section 2 compares with.
/// Empty when the section is not run.
#[derive(Default)]
struct Limits {
    commits: std::collections::HashMap<(Backend, usize), f64>,
}

/// Section 1: raw sends and raw outbox commits, per concurrency level.
async fn limits(sink: &Sink, message: &lettre::Message, backends: &[Backend]) -> Limits {
    println!("\n1. limits");
    let mut limits = Limits::default();
    for c in LEVELS {
        let (r, cpu, sessions) = raw_sends(sink, message.clone(), c).await;
        println!(
            "  raw lettre sends, {c:>2} at once: {r:>7.0}/s, CPU per send {:.0} us, {sessions} SMTP sessions",
            cpu * 1e6
        );
    }
    for &b in backends {
        for c in LEVELS {
            let r = raw_commits(b, c).await;
            println!(
                "  {:<10} raw outbox insert+update, {c:>2} at once: {r:>7.0} mails/s",
                b.name()
            );
            limits.commits.insert((b, c), r);
        }
    }
    for &b in backends {
        let (claim, record, per) = batch_store_work(b).await;
        println!(
            "  {:<10} a batch's store work alone ({per:.0} mails): claim {claim:.0} us, record {record:.0} us = {:.0} us per mail",
            b.name(),
            (claim + record) / per
        );
    }
    limits
}
