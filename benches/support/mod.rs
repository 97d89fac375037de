//! What the benchmarks share: a database of each backend, a book of subscriptions, owed mail,
//! and an SMTP sink that accepts as fast as a socket allows (so the figures measure us, not it).

#![allow(dead_code)]

pub mod explain;
pub mod mailbook;
pub mod synthetic;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use renewal_worker::config::Settings;
use renewal_worker::domain::{ProvisioningEvent, SubscriptionId};
use renewal_worker::import::{self, Known};
use renewal_worker::service;
use renewal_worker::store::Store;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const PARTIES: &str = r#"{
  "resellers": [{"id": "BR", "name": "Bench Reseller", "email": "ops@bench.example",
                 "timezone": "America/New_York", "calendar": "us"}],
  "customers": [{"id": "BC", "reseller_id": "BR", "name": "Bench Customer", "email": "it@bench.example"}]}"#;

pub fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// The PostgreSQL server used for benchmarks: `RENEWAL_WORKER_TEST_PG` or the machine's.
pub fn pg_admin_url() -> String {
    std::env::var("RENEWAL_WORKER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one measurement: a file in a temp folder, or a fresh PostgreSQL
/// database that is dropped afterwards.
pub struct BenchDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

async fn pg_admin(sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await?;
    Ok(())
}

impl BenchDb {
    pub async fn new(backend: Backend) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        match backend {
            Backend::Sqlite => Ok(Self {
                url: format!(
                    "sqlite://{}",
                    dir.path().join(format!("bench{n}.db")).display()
                ),
                pg_name: None,
                _dir: dir,
            }),
            Backend::Postgres => {
                let name = format!("rw_bench_{}_{n}", std::process::id());
                pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| format!("PostgreSQL at {}: {e}", pg_admin_url()))?;
                pg_admin(&format!("CREATE DATABASE {name}"))
                    .await
                    .map_err(|e| e.to_string())?;
                let admin = pg_admin_url();
                let (admin, query) = admin.split_once('?').unwrap_or((&admin, ""));
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
                // The server is on this machine: without a word, sqlx would encrypt the
                // loopback traffic whenever the server offers TLS (sslmode=prefer), a cost no
                // same-host deployment needs to pay (see docs/PERFORMANCE.md, "In production").
                let query = if query.is_empty() {
                    "sslmode=disable"
                } else {
                    query
                };
                Ok(Self {
                    url: format!("{base}/{name}?{query}"),
                    pg_name: Some(name),
                    _dir: dir,
                })
            }
        }
    }

    /// Lets a freshly bulk-filled PostgreSQL database settle as a running one would be: its
    /// statistics gathered and its dirty pages written, so that a timed step that follows does
    /// not pay for the fill (autovacuum and the checkpointer would do the same, unasked).
    pub async fn settle(&self) {
        if self.pg_name.is_none() {
            return;
        }
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("connect to settle");
        // One statement each: several in one string run as one transaction, which VACUUM refuses.
        for sql in ["VACUUM ANALYZE", "CHECKPOINT"] {
            sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
        }
    }

    pub async fn drop_database(self) {
        if let Some(name) = &self.pg_name {
            let _ = pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }
}

/// Settings for a benchmark daemon: mail to `smtp_port` through a pool of 16, `concurrency`
/// jobs at once, a quick job poll, and no scheduled renewal poll; the rest (the database pool
/// among it) as a daemon has them by default.
pub fn settings(db_url: &str, smtp_port: u16, concurrency: usize) -> Settings {
    Settings::from_toml_overlay(&format!(
        "[database]\nurl = \"{db_url}\"\n\
         [templates]\ndir = {:?}\n\
         [mail]\ntransport = \"smtp\"\n\
         [mail.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\npool_max_size = 16\ntimeout = \"10s\"\n\
         [worker]\nconcurrency = {concurrency}\nsend_batch = {}\n{}poll_interval = \"50ms\"\nheartbeat_interval = \"5s\"\n\
         redrive_interval = \"60s\"\n\
         [poll]\nschedule = \"0 0 0 1 1 * 2099\"\n\
         [log]\nlevel = \"warn\"\n",
        templates_dir(),
        std::env::var("RW_BENCH_BATCH").unwrap_or_else(|_| "32".into()),
        std::env::var("RW_BENCH_THREADS")
            .map(|n| format!("threads = {n}\n"))
            .unwrap_or_default(),
    ))
    .expect("bench settings")
}

fn templates_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// Opens the store (migrations applied) and adds the reseller and customer of the book.
pub async fn open(settings: &Settings) -> Store {
    let store = service::open_store(settings).await.expect("store");
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
    store
}

/// `n` subscriptions `BENCH-00000000`... in the database at `url`; `due` of them with a
/// reminder due on 2026-11-18.
pub async fn fill(url: &str, n: u64, due: u64) -> Duration {
    let later: DateTime<Utc> = "2099-01-01T00:00:00Z".parse().expect("instant");
    let t = Instant::now();
    synthetic::insert_synthetic_subscriptions(
        url,
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
    t.elapsed()
}

/// Records the `ready` event of subscriptions `0..n` (one owed mail each, its job queued), in
/// 16 lanes as a busy marketplace would. Returns how long it took.
pub async fn owe_ready_mails(store: &Store, settings: &Settings, n: u64) -> Duration {
    let t = Instant::now();
    let lanes = 16u64;
    let mut set = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        let (store, settings) = (store.clone(), settings.clone());
        set.spawn(async move {
            for i in (lane..n).step_by(lanes as usize) {
                let id = SubscriptionId::parse(&format!("BENCH-{i:08}")).expect("id");
                service::record_event(
                    &store,
                    &settings,
                    Utc::now(),
                    &id,
                    ProvisioningEvent::Ready,
                    None,
                )
                .await
                .expect("record event");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("lane");
    }
    t.elapsed()
}

/// An SMTP server that accepts every mail at once and counts them.
pub struct Sink {
    pub port: u16,
    pub accepted: Arc<AtomicU64>,
    /// SMTP sessions opened so far (each a TCP connection, its greeting and EHLO).
    pub sessions: Arc<AtomicU64>,
}

impl Sink {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let sessions = Arc::new(AtomicU64::new(0));
        let opened = sessions.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                opened.fetch_add(1, Ordering::SeqCst);
                let count = count.clone();
                tokio::spawn(async move {
                    let _ = session(socket, count).await;
                });
            }
        });
        Self {
            port,
            accepted,
            sessions,
        }
    }

    pub fn count(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Waits until `n` mails have been accepted in all; false after `limit`.
    pub async fn wait_for(&self, n: u64, limit: Duration) -> bool {
        let start = Instant::now();
        while self.count() < n {
            if start.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// How long the sink holds each message before it answers, as a relay does
/// (`RW_BENCH_SINK_HOLD_MS`, milliseconds; none when unset): a sink that answers at once
/// makes every cost beside the send loom large.
static HOLD: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
    Duration::from_millis(
        std::env::var("RW_BENCH_SINK_HOLD_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
});

/// One SMTP session. The sink acknowledges every segment at once (TCP_QUICKACK): lettre 0.11
/// leaves Nagle's algorithm on and writes a message's end (`.`) apart from its body, so a
/// server that delays its ACKs (the Linux default, 40 ms) would make every figure measure that
/// stall instead of the code under test. (What this means against a real server:
/// docs/PERFORMANCE.md, "In production".)
async fn session(socket: tokio::net::TcpStream, count: Arc<AtomicU64>) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut r = BufReader::new(socket);
    r.get_mut().write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = String::new();
    let mut in_data = false;
    loop {
        line.clear();
        socket2::SockRef::from(r.get_ref()).set_tcp_quickack(true)?;
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            if line == ".\r\n" {
                in_data = false;
                if !HOLD.is_zero() {
                    tokio::time::sleep(*HOLD).await;
                }
                count.fetch_add(1, Ordering::SeqCst);
                r.get_mut().write_all(b"250 accepted\r\n").await?;
            }
            continue;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
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

/// Peak and current resident memory of a process, in MiB, from /proc.
pub fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// CPU time (user + system) this process has used so far, in seconds: `/proc/self/stat`'s
/// utime and stime, in clock ticks of 1/100 s (Linux's USER_HZ).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |n: usize| {
        rest.split_whitespace()
            .nth(n)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are the 14th and 15th fields; `rest` starts at the 3rd.
    (field(11) + field(12)) / 100.0
}

/// CPU time the whole machine has spent busy so far (every process: a PostgreSQL server's
/// too), in seconds: `/proc/stat`'s first line, all but idle and iowait, in USER_HZ ticks.
pub fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy / 100.0
}
