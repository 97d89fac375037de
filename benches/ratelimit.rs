//! The rate limit against a relay that caps mails per second. Run:
//! `cargo bench --bench ratelimit` (PostgreSQL from `RENEWAL_WORKER_TEST_PG` or
//! postgres://postgres@127.0.0.1:5432). Prints figures; asserts only that every mail arrived.
//!
//! A relay that takes 20 ms per mail and answers "421 4.7.0 Too many messages" to a recipient
//! above 200 mails/s (a token bucket of 200/s holding 20, a tenth of a second, as relays allow
//! a little burst); 20,000 owed mails, the daemon's worker with `mail.rate_limit = 200`
//! (`rate_burst = 5`, the default) and 16 at once. Printed: wall time from the worker's start until the relay has every mail,
//! against the ideal 100 s (20,000 / 200), and the 421s the relay answered.
//!
//! `RW_BENCH_BACKENDS=postgresql` (default: sqlite,postgresql), `RW_BENCH_MAILS=2000` for a
//! quick look, `RW_BENCH_RATE=100`, `RW_BENCH_BURST=1` (the worker's), `RW_BENCH_SINK_BURST=10` (the
//! relay's) to try other settings.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use renewal_worker::clock::SystemClock;
use renewal_worker::outbox::Deliverer;
use support::{Backend, BenchDb, fill, open, owe_ready_mails, settings};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Time the relay takes to take one mail (after its data ends).
const HOLD: Duration = Duration::from_millis(20);
const CONCURRENCY: usize = 16;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The relay's cap: a token bucket shared by all of its sessions.
struct Cap {
    per_second: f64,
    burst: f64,
    bucket: std::sync::Mutex<(f64, Instant)>,
}

impl Cap {
    fn take(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let tokens =
            (b.0 + now.duration_since(b.1).as_secs_f64() * self.per_second).min(self.burst);
        if tokens >= 1.0 {
            *b = (tokens - 1.0, now);
            true
        } else {
            *b = (tokens, now);
            false
        }
    }
}

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    throttled: AtomicU64,
}

async fn start_sink(cap: Arc<Cap>, counts: Arc<Counts>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (cap, counts) = (cap.clone(), counts.clone());
            tokio::spawn(async move {
                let _ = session(socket, &cap, &counts).await;
            });
        }
    });
    port
}

async fn session(socket: tokio::net::TcpStream, cap: &Cap, counts: &Counts) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut r = BufReader::new(socket);
    r.get_mut().write_all(b"220 capped ESMTP\r\n").await?;
    let mut line = String::new();
    let mut in_data = false;
    loop {
        line.clear();
        // See benches/support: lettre writes a message's end apart from its body.
        socket2::SockRef::from(r.get_ref()).set_tcp_quickack(true)?;
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            if line == ".\r\n" {
                in_data = false;
                tokio::time::sleep(HOLD).await;
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                r.get_mut().write_all(b"250 accepted\r\n").await?;
            }
            continue;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-capped\r\n250 8BITMIME\r\n",
            "RCPT" if !cap.take() => {
                counts.throttled.fetch_add(1, Ordering::SeqCst);
                b"421 4.7.0 Too many messages, slow down\r\n"
            }
            "DATA" => {
                in_data = true;
                b"354 go ahead\r\n"
            }
            "QUIT" => {
                r.get_mut().write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 ok\r\n",
        };
        r.get_mut().write_all(reply).await?;
    }
}

async fn run(backend: Backend, mails: u64, rate: u32, sink_burst: f64) {
    let counts = Arc::new(Counts::default());
    let cap = Arc::new(Cap {
        per_second: f64::from(rate),
        burst: sink_burst,
        bucket: std::sync::Mutex::new((sink_burst, Instant::now())),
    });
    let port = start_sink(cap, counts.clone()).await;
    let db = BenchDb::new(backend).await.expect("database");
    let mut settings = settings(&db.url, port, CONCURRENCY);
    settings.mail.rate_limit = rate;
    settings.mail.rate_burst = u32::try_from(env_u64("RW_BENCH_BURST", 5)).unwrap_or(5);
    let store = open(&settings).await;
    fill(&db.url, mails, 0).await;
    owe_ready_mails(&store, &settings, mails).await;
    let deliverer = Arc::new(
        Deliverer::build(
            Arc::new(settings),
            store.clone(),
            Arc::new(SystemClock),
            "bench-rate".into(),
        )
        .expect("deliverer"),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let t = Instant::now();
    let worker = tokio::spawn(renewal_worker::daemon::run_worker(deliverer, stop.clone()));
    while counts.accepted.load(Ordering::SeqCst) < mails {
        assert!(
            t.elapsed() < Duration::from_secs(1200),
            "every mail arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = t.elapsed().as_secs_f64();
    stop.cancel();
    worker.await.expect("worker task").expect("worker");
    store.close().await;
    db.drop_database().await;
    let ideal = mails as f64 / f64::from(rate);
    println!(
        "{:<10} {mails} mails at rate_limit = {rate}: {wall:.2} s wall, ideal {ideal:.2} s \
         ({:+.2} %), {:.1} mails/s, 421 answered: {}",
        backend.name(),
        (wall / ideal - 1.0) * 100.0,
        mails as f64 / wall,
        counts.throttled.load(Ordering::SeqCst),
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mails = env_u64("RW_BENCH_MAILS", 20_000);
        let rate = u32::try_from(env_u64("RW_BENCH_RATE", 200)).unwrap_or(200);
        let sink_burst = env_u64("RW_BENCH_SINK_BURST", 20) as f64;
        let wanted = std::env::var("RW_BENCH_BACKENDS")
            .unwrap_or_else(|_| "sqlite,postgresql".into())
            .to_lowercase();
        println!(
            "relay: {} ms per mail, 421 above {rate}/s (bucket of {sink_burst}); worker: {CONCURRENCY} at once",
            HOLD.as_millis()
        );
        for backend in [Backend::Sqlite, Backend::Postgres] {
            if wanted.contains(&backend.name().to_lowercase()) {
                run(backend, mails, rate, sink_burst).await;
            }
        }
    });
}
