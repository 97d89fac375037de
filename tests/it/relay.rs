//! A relay that goes away, and one that caps mails per second.
//!
//! The daemon (the real binary) meets a relay that is down for what its breaker settings
//! make a long outage (dozens of probe intervals): no mail spends an attempt, the log says so
//! in a few lines, `/readyz`, `/metrics` and `jobs` show the relay down; once the relay is back
//! the backlog drains by itself, each mail once. A relay that answers "421 too many" above a
//! rate sees none with `mail.rate_limit` at that rate, and without it its 421s spend no attempt.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use renewal_worker::store::OutboxState;

use crate::helpers::*;

const MAILS: u64 = 30;
const TOKEN: &str = "relay-test-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET; the whole answer, head and body.
async fn get(port: u16, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap()
}

/// `renewal-worker ARGS` on the app's database; its stdout.
async fn cli(app: &TestApp, args: &[&str]) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_renewal-worker"));
    c.args(args)
        .env("RENEWAL_WORKER__DATABASE__URL", &app.settings.database.url)
        .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

on_both_backends!(async a_long_relay_outage_spends_no_attempt_logs_a_few_lines_then_drains);
async fn a_long_relay_outage_spends_no_attempt_logs_a_few_lines_then_drains() {
    let sink = SmtpSink::start(Behaviour::Accept);
    // The relay as the daemon reaches it: through a cut the test controls (connections are
    // taken and closed at once, as a relay restarting or a firewall resetting them).
    let relay = TcpProxy::start(format!("127.0.0.1:{}", sink.port)).await;
    relay.cut();
    let app = TestApp::new(None, "").await;
    add_synthetic_subscriptions(&app, MAILS).await;
    for i in 0..MAILS {
        owe_ready(&app.store, &app.settings, i).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("daemon.log");
    let http = free_port();
    // Without the breaker these retry settings dead-letter every mail within a second.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_renewal-worker"));
    daemon
        .arg("run")
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("RENEWAL_WORKER__LOG__FORMAT", "json")
        .env("RENEWAL_WORKER__DATABASE__URL", &app.settings.database.url)
        .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
        .env("RENEWAL_WORKER__MAIL__TRANSPORT", "smtp")
        .env("RENEWAL_WORKER__MAIL__SMTP__HOST", "127.0.0.1")
        .env("RENEWAL_WORKER__MAIL__SMTP__PORT", relay.port.to_string())
        .env("RENEWAL_WORKER__MAIL__SMTP__TIMEOUT", "2s")
        .env("RENEWAL_WORKER__MAIL__RETRY__MAX_ATTEMPTS", "3")
        .env("RENEWAL_WORKER__MAIL__RETRY__INITIAL_BACKOFF", "50ms")
        .env("RENEWAL_WORKER__MAIL__RETRY__MAX_BACKOFF", "100ms")
        .env("RENEWAL_WORKER__MAIL__BREAKER__PROBE_INITIAL", "50ms")
        .env("RENEWAL_WORKER__MAIL__BREAKER__PROBE_MAX", "200ms")
        .env("RENEWAL_WORKER__WORKER__POLL_INTERVAL", "100ms")
        .env("RENEWAL_WORKER__POLL__SCHEDULE", "0 0 0 1 1 * 2099")
        .env("RENEWAL_WORKER__HTTP__BIND", format!("127.0.0.1:{http}"))
        .env("RENEWAL_WORKER__HTTP__TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Logs go to stderr.
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut daemon = daemon.spawn().unwrap();

    // Down: the breaker opens, and then its probes fail for a long time: 5 s at a probe every
    // 200 ms is about 25 probe intervals (at the default 5 minutes' cap, two hours).
    let down = eventually_async(Duration::from_secs(30), || async {
        get(http, "/readyz").await.contains("\"state\":\"down\"")
    })
    .await;
    assert!(down, "readyz shows the relay down");
    tokio::time::sleep(Duration::from_secs(5)).await;

    let ready = get(http, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    let metrics = get(http, "/metrics").await;
    assert!(metrics.contains("renewal_worker_relay_up 0"), "{metrics}");
    let down_for = metrics
        .lines()
        .find_map(|l| l.strip_prefix("renewal_worker_relay_down_seconds "))
        .and_then(|v| v.trim().parse::<i64>().ok());
    assert!(down_for.is_some_and(|s| s >= 4), "{metrics}");
    let jobs = cli(&app, &["jobs"]).await;
    assert!(jobs.contains("relay: DOWN for"), "{jobs}");
    assert_eq!(sink.received().len(), 0);
    for row in app.outbox().await {
        assert_eq!(
            (row.state, row.attempts),
            (OutboxState::Pending, 0),
            "no attempt spent on a relay that is down: {row:?}"
        );
        assert!(app.store.attempts(row.id).await.unwrap().is_empty());
    }

    // Back: the next probe gets through and the backlog drains by itself, each mail once.
    relay.restore();
    assert!(
        eventually(Duration::from_secs(30), || sink.received().len() as u64
            >= MAILS)
        .await,
        "the backlog drained: {} of {MAILS}",
        sink.received().len()
    );
    let up = eventually_async(Duration::from_secs(10), || async {
        get(http, "/readyz").await.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(up, "{}", get(http, "/readyz").await);
    let metrics = get(http, "/metrics").await;
    assert!(metrics.contains("renewal_worker_relay_up 1"), "{metrics}");
    assert!(
        metrics.contains("renewal_worker_relay_down_seconds 0"),
        "{metrics}"
    );
    let jobs = cli(&app, &["jobs"]).await;
    assert!(jobs.contains("relay: up"), "{jobs}");

    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    assert!(daemon.wait().unwrap().success());
    let mut ids: Vec<String> = sink.received().iter().map(|m| m.message_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (ids.len(), sink.received().len()),
        (MAILS as usize, MAILS as usize),
        "each once"
    );
    for row in app.outbox().await {
        assert_eq!((row.state, row.attempts), (OutboxState::Sent, 1), "{row:?}");
    }

    // The log: the outage in a few lines (open, probes failed 1, 2, 4, 8, 16… times, closed),
    // no line per mail or per attempt. The rest: start, stop, and one "mail sent" per mail.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("breaker open"), 1, "{log}");
    assert_eq!(count("breaker closed"), 1, "{log}");
    let still_down = count("relay still down");
    assert!((2..=7).contains(&still_down), "{still_down} lines: {log}");
    assert_eq!(count("transient failure"), 0, "{log}");
    let other = lines.len() - count("\"mail sent\"");
    assert!(other <= 20, "{other} lines besides the mails sent:\n{log}");
}

on_both_backends!(async with_the_rate_limit_a_capped_relay_says_no_421);
async fn with_the_rate_limit_a_capped_relay_says_no_421() {
    // 60 mails to a relay that takes 40 a second (a bucket of 4): about 1.5 s.
    let sink = SmtpSink::start(Behaviour::RateCap {
        per_second: 40,
        burst: 4,
    });
    let mut app = TestApp::new(Some(&sink), "concurrency = 8\n").await;
    app.settings.mail.rate_limit = 40;
    app.settings.mail.rate_burst = 1;
    add_synthetic_subscriptions(&app, 60).await;
    for i in 0..60 {
        owe_ready(&app.store, &app.settings, i).await;
    }
    app.start("w-paced");
    assert!(eventually(Duration::from_secs(30), || sink.received().len() >= 60).await);
    app.stop().await;
    assert_eq!(sink.throttled(), 0, "no 421 at the relay's own rate");
    assert_eq!(sink.received().len(), 60);
}

on_both_backends!(async without_the_rate_limit_a_capped_relays_421s_spend_no_attempt);
async fn without_the_rate_limit_a_capped_relays_421s_spend_no_attempt() {
    // The same relay, far slower than the daemon unbound: it answers 421 "too many", and
    // each mail is given back uncounted until the relay takes it.
    let sink = SmtpSink::start(Behaviour::RateCap {
        per_second: 40,
        burst: 4,
    });
    let mut app = TestApp::new(
        Some(&sink),
        "concurrency = 8\n[mail.breaker]\nprobe_initial = \"50ms\"\nprobe_max = \"100ms\"\n",
    )
    .await;
    add_synthetic_subscriptions(&app, 60).await;
    for i in 0..60 {
        owe_ready(&app.store, &app.settings, i).await;
    }
    app.start("w-unbound");
    assert!(eventually(Duration::from_secs(30), || sink.received().len() >= 60).await);
    app.stop().await;
    assert!(sink.throttled() > 0, "the relay's cap was met");
    for row in app.outbox().await {
        assert_eq!((row.state, row.attempts), (OutboxState::Sent, 1), "{row:?}");
    }
}
