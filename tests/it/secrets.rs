//! No secret in any output: the daemon started with a password in its database URL, an SMTP
//! password, an HTTP token and a marketplace token, in both log formats and at debug level,
//! prints none of them, and its HTTP API does not echo the token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Behaviour, PgDatabase, SmtpSink, admin_exec, pg_admin_url, templates_dir};

const DB_PASSWORD: &str = "dbPw-7f3a9c-secret";
const SMTP_PASSWORD: &str = "smtpPw-51e2d0-secret";
const HTTP_TOKEN: &str = "httpTok-a8c4b2-secret";
const SOURCE_TOKEN: &str = "srcTok-0d9e61-secret";

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
            format!("http://127.0.0.1:{source_port}/changes"),
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
    format!("{out}\n{answers}")
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
        for secret in [DB_PASSWORD, SMTP_PASSWORD, HTTP_TOKEN, SOURCE_TOKEN] {
            assert!(
                !out.contains(secret),
                "{format} output shows a secret ({secret}):\n{out}"
            );
        }
        assert!(out.contains(&format!("{role}:***@")), "{out}");
    }
    drop(db);
    admin_exec(&admin, &[&format!("DROP ROLE IF EXISTS {role}")]);
}
