//! No secret in any output: the daemon started with a password in its database URL, an SMTP
//! password, an HTTP token and a marketplace token, in both log formats and at debug level,
//! prints none of them, and its HTTP API does not echo the token. All-digit secrets given in
//! the environment are taken as text; a malformed database URL, a TOML syntax error on the
//! password's line and a database that is down do not show a password either.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Behaviour, PgDatabase, SmtpSink, admin_exec, pg_admin_url, templates_dir};

const DB_PASSWORD: &str = "dbPw-7f3a9c-secret";
// All digits: the environment's text must reach the settings as text, not as a number.
const SMTP_PASSWORD: &str = "5190264837";
const HTTP_TOKEN: &str = "73920418562093817465";
const SOURCE_TOKEN: &str = "srcTok-0d9e61-secret";
/// In the feed's URL, as `https://user:password@host/...`.
const FEED_PASSWORD: &str = "feedPw-3c7e19-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 exchange; the whole answer, head and body.
fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Runs the daemon in `format` until its HTTP API answers, asks it a few things, stops it
/// with SIGTERM, and returns what it printed and what the API answered.
fn run_daemon(db_url: &str, smtp_port: u16, format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (log_path, err_path) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let port = free_port();
    // A marketplace that is not there: the pulling source fails, and logs why.
    let source_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_renewal-worker"))
        .arg("run")
        .current_dir(dir.path())
        .env("RUST_LOG", "debug")
        .env("RENEWAL_WORKER__LOG__FORMAT", format)
        .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
        .env("RENEWAL_WORKER__DATABASE__URL", db_url)
        .env("RENEWAL_WORKER__MAIL__TRANSPORT", "smtp")
        .env("RENEWAL_WORKER__MAIL__SMTP__HOST", "127.0.0.1")
        .env("RENEWAL_WORKER__MAIL__SMTP__PORT", smtp_port.to_string())
        .env("RENEWAL_WORKER__MAIL__SMTP__USERNAME", "relay-user")
        .env("RENEWAL_WORKER__MAIL__SMTP__PASSWORD", SMTP_PASSWORD)
        .env("RENEWAL_WORKER__HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("RENEWAL_WORKER__HTTP__TOKEN", HTTP_TOKEN)
        .env(
            "RENEWAL_WORKER__SOURCE__URL",
            format!("http://feed:{FEED_PASSWORD}@127.0.0.1:{source_port}/changes"),
        )
        .env("RENEWAL_WORKER__SOURCE__TOKEN", SOURCE_TOKEN)
        .env("RENEWAL_WORKER__SOURCE__INTERVAL", "200ms")
        .stdin(Stdio::null())
        // Files, not pipes: at debug level it prints more than a pipe holds unread.
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();

    let start = Instant::now();
    let mut answers = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for request in [
        format!(
            "GET /subscriptions/S1/timeline HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {HTTP_TOKEN}x\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /subscriptions/S1/timeline HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {HTTP_TOKEN}\r\nConnection: close\r\n\r\n"
        ),
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
    ] {
        answers.push_str(&http(port, &request));
    }
    // Let the pulling source fail a few times.
    std::thread::sleep(Duration::from_millis(800));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let out =
        std::fs::read_to_string(&log_path).unwrap() + &std::fs::read_to_string(&err_path).unwrap();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(out.contains("renewal-worker started"), "{out}");
    assert!(
        answers.contains("401"),
        "a wrong token is refused: {answers}"
    );
    // Past the token check: the subscription is looked up (the database is empty).
    assert!(
        answers.contains("unknown subscription"),
        "the all-digit token is accepted: {answers}"
    );
    format!("{out}\n{answers}")
}

/// What each secret may look like in an output: as given, and as SMTP AUTH PLAIN would send
/// the password.
fn forms(secret: &str) -> Vec<String> {
    use base64::Engine;
    let plain = format!("\0relay-user\0{secret}");
    vec![
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(plain),
    ]
}

#[test]
fn the_daemon_prints_no_secret_in_either_log_format() {
    // A role of this test's own with a password, so that the URL carries one whether the
    // server checks passwords or trusts local connections.
    let db = PgDatabase::create();
    let role = format!("rw_secret_{}", std::process::id());
    let admin = pg_admin_url();
    admin_exec(
        &admin,
        &[
            &format!("DROP ROLE IF EXISTS {role}"),
            &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'"),
        ],
    );
    let (scheme_and_host, name) = db.url.rsplit_once('/').unwrap();
    let host = scheme_and_host.rsplit_once('@').map_or_else(
        || scheme_and_host.trim_start_matches("postgres://"),
        |(_, h)| h,
    );
    let url = format!("postgres://{role}:{DB_PASSWORD}@{host}/{name}");
    let sink = SmtpSink::start(Behaviour::Accept);

    for format in ["pretty", "json"] {
        let out = run_daemon(&url, sink.port, format);
        for secret in [
            DB_PASSWORD,
            SMTP_PASSWORD,
            HTTP_TOKEN,
            SOURCE_TOKEN,
            FEED_PASSWORD,
        ] {
            for form in forms(secret) {
                assert!(
                    !out.contains(&form),
                    "{format} output shows a secret ({form}):\n{out}"
                );
            }
        }
        assert!(out.contains(&format!("{role}:***@")), "{out}");
        assert!(
            out.contains("feed:***@"),
            "the failed pulls are logged: {out}"
        );
    }
    drop(db);
    admin_exec(&admin, &[&format!("DROP ROLE IF EXISTS {role}")]);
}

/// Runs a one-shot command of the binary with `env`, in both log formats at debug level;
/// returns everything it printed, each format's run after the other.
fn run_command(args: &[&str], env: &[(&str, String)]) -> Vec<(std::process::ExitStatus, String)> {
    let dir = tempfile::tempdir().unwrap();
    ["pretty", "json"]
        .iter()
        .map(|format| {
            let out = Command::new(env!("CARGO_BIN_EXE_renewal-worker"))
                .args(args)
                .current_dir(dir.path())
                .env("RUST_LOG", "debug")
                .env("RENEWAL_WORKER__LOG__FORMAT", format)
                .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status, text)
        })
        .collect()
}

#[test]
fn bad_settings_are_refused_without_showing_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("renewal.toml");
    // An unterminated string on the password's line.
    std::fs::write(
        &config,
        format!("[mail.smtp]\nusername = \"relay-user\"\npassword = \"{SMTP_PASSWORD}\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    // (arguments, environment, a text the refusal must hold)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        // Unparsable URLs: a port that is not a number, a password holding a slash.
        (
            vec!["migrate"],
            vec![(
                "RENEWAL_WORKER__DATABASE__URL",
                format!("postgres://rw:{DB_PASSWORD}@127.0.0.1:54x32/db"),
            )],
            "rw:***@127.0.0.1:***/db",
        ),
        (
            vec!["migrate"],
            vec![(
                "RENEWAL_WORKER__DATABASE__URL",
                format!("postgres://rw:{DB_PASSWORD}/x@127.0.0.1:5432/db?sslmode=require"),
            )],
            "database",
        ),
        // Parsable, refused by the driver: a parameter it does not know.
        (
            vec!["migrate"],
            vec![(
                "RENEWAL_WORKER__DATABASE__URL",
                format!("postgres://rw:{DB_PASSWORD}@127.0.0.1:5432/db?sslmode=bogus"),
            )],
            "rw:***@",
        ),
        // A scheme that is not served.
        (
            vec!["migrate"],
            vec![(
                "RENEWAL_WORKER__DATABASE__URL",
                format!("mysql://rw:{DB_PASSWORD}@127.0.0.1/db"),
            )],
            "database.url",
        ),
        // A database that is not there: the one-shot command fails on connecting.
        (
            vec!["migrate"],
            vec![
                (
                    "RENEWAL_WORKER__DATABASE__URL",
                    format!("postgres://rw:{DB_PASSWORD}@127.0.0.1:{}/db", free_port()),
                ),
                ("RENEWAL_WORKER__DATABASE__BUSY_TIMEOUT", "1s".into()),
            ],
            "error",
        ),
        (
            vec!["--config", &config, "migrate"],
            vec![],
            "line 3, column",
        ),
        // Short all-digit tokens: refused as too short, not echoed.
        (
            vec!["migrate"],
            vec![
                ("RENEWAL_WORKER__HTTP__BIND", "127.0.0.1:0".into()),
                ("RENEWAL_WORKER__HTTP__TOKEN", "8675309".into()),
            ],
            "http.token",
        ),
    ];
    for (args, env, expected) in cases {
        for (status, out) in run_command(&args, &env) {
            assert!(!status.success(), "{args:?} {env:?}: {out}");
            assert!(out.contains(expected), "{args:?} {env:?}: {out}");
            for secret in [DB_PASSWORD, SMTP_PASSWORD, "8675309"] {
                assert!(!out.contains(secret), "{args:?} shows {secret}: {out}");
            }
        }
    }
}

#[test]
fn sigterm_while_the_database_is_down_exits_0_quietly() {
    // Nothing listens there: the daemon waits for its database, retrying.
    let url = format!("postgres://rw:{DB_PASSWORD}@127.0.0.1:{}/db", free_port());
    for format in ["pretty", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let err_path = dir.path().join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_renewal-worker"))
            .arg("run")
            .current_dir(dir.path())
            .env("RUST_LOG", "debug")
            .env("RENEWAL_WORKER__LOG__FORMAT", format)
            .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
            .env("RENEWAL_WORKER__DATABASE__URL", &url)
            .env("RENEWAL_WORKER__DATABASE__BUSY_TIMEOUT", "200ms")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let log = || std::fs::read_to_string(&err_path).unwrap_or_default();
        while !log().contains("database not reachable") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no retry logged: {}",
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let stopped = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(10),
                "still running 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = log();
        assert_eq!(status.code(), Some(0), "{status:?}\n{out}");
        assert!(
            out.contains("stopped before the database could be reached"),
            "{out}"
        );
        assert!(!out.contains(DB_PASSWORD), "{out}");
    }
}

/// lettre's `tracing` feature logs the SMTP dialogue, `AUTH PLAIN <base64(user, password)>`
/// included, at debug: no crate of the build may turn it on (the lock file lists `tracing`
/// among lettre's dependencies exactly when one does).
#[test]
fn lettre_is_built_without_its_wire_tracing() {
    let lock = include_str!("../../Cargo.lock");
    let lettre = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"lettre\"\n"))
        .expect("lettre is in the lock file");
    assert!(!lettre.contains("\"tracing"), "{lettre}");
}

/// handlebars logs the values its helpers are given at debug (`{{#if reseller.csn}}` logs the
/// CSN): customer data. Whatever RUST_LOG says, none of it reaches the log.
#[test]
fn rendering_at_debug_logs_no_customer_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subs.json"), crate::helpers::FIXTURE).unwrap();
    let bin = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_renewal-worker"));
        c.current_dir(dir.path())
            .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
            .stdin(Stdio::null());
        c
    };
    assert!(
        bin()
            .args(["import", "subs.json"])
            .status()
            .unwrap()
            .success()
    );
    for (format, filter) in [("pretty", "debug"), ("json", "trace,handlebars=trace")] {
        let out = bin()
            .args(["render", "order-processed", "--subscription", "S1"])
            .env("RUST_LOG", filter)
            .env("RENEWAL_WORKER__LOG__FORMAT", format)
            .output()
            .unwrap();
        let (mail, log) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{log}");
        assert!(
            mail.contains("5101234567"),
            "the CSN is in the mail: {mail}"
        );
        assert!(
            log.contains("DEBUG") || log.contains("\"level\":\"DEBUG\""),
            "{log}"
        );
        for data in ["5101234567", "Globex", "it@globex.example"] {
            assert!(!log.contains(data), "{format} log shows {data}:\n{log}");
        }
    }
}
