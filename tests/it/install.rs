//! The binary as installed: run from a folder with nothing but its data (templates built in),
//! template overrides file by file, paths, `check`, configuration errors, exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::helpers::{Behaviour, FIXTURE, SmtpSink};

/// The binary in `dir`, with no template folder configured and nothing of the test's
/// environment that could point it elsewhere.
fn bin(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_renewal-worker"));
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("RENEWAL_WORKER__TEMPLATES__DIR")
        .env_remove("RENEWAL_WORKER__DATABASE__URL")
        .envs(crate::helpers::cli_database_env())
        .stdin(Stdio::null());
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin(dir).args(args).output().expect("run the binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn smtp_env(c: &mut Command, port: u16) -> &mut Command {
    c.env("RENEWAL_WORKER__MAIL__TRANSPORT", "smtp")
        .env("RENEWAL_WORKER__MAIL__SMTP__HOST", "127.0.0.1")
        .env("RENEWAL_WORKER__MAIL__SMTP__PORT", port.to_string())
        .env("RENEWAL_WORKER__MAIL__SMTP__TIMEOUT", "5s")
}

fn imported(dir: &Path) {
    std::fs::write(dir.join("subs.json"), FIXTURE).unwrap();
    let out = run(dir, &["import", "subs.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// From a folder holding only its data, with no templates folder anywhere near, the daemon
/// sends the built-in mail through SMTP.
#[test]
fn the_binary_sends_the_built_in_mail_from_an_empty_folder() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let dir = tempfile::tempdir().unwrap();
    imported(dir.path());
    let out = run(dir.path(), &["event", "S2", "order-processed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = smtp_env(&mut bin(dir.path()), sink.port)
        .args(["run", "--once"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mails = sink.received();
    let mail = mails
        .iter()
        .find(|m| m.subject() == "Autodesk order processed: Revit for Initech")
        .unwrap_or_else(|| panic!("the order-processed mail: {mails:?}"));
    assert!(mail.text().contains("Revit"), "{}", mail.text());
    assert!(mail.html().contains("<html"), "the built-in layout");
    assert!(!dir.path().join("templates").exists());
}

/// A folder holding one file changes that part only; `templates export` writes the whole set
/// and never overwrites it.
#[test]
fn a_partial_override_changes_one_part_and_export_writes_the_set() {
    let dir = tempfile::tempdir().unwrap();
    imported(dir.path());
    let own = dir.path().join("own");
    std::fs::create_dir_all(own.join("ready")).unwrap();
    std::fs::write(
        own.join("ready/body.txt.hbs"),
        "Our own words for {{subscription.plan}}.\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("c.toml"), "[templates]\ndir = \"own\"\n").unwrap();
    let render = |config: Option<&str>| {
        let mut c = bin(dir.path());
        if let Some(config) = config {
            c.args(["--config", config]);
        }
        let out = c
            .args(["render", "ready", "--subscription", "S1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let (built_in, overridden) = (render(None), render(Some("c.toml")));
    let part = |s: &str, from: &str, to: &str| {
        let start = s.find(from).unwrap_or_else(|| panic!("{from} in {s}"));
        let end = s[start..].find(to).map(|e| start + e).unwrap_or(s.len());
        s[start..end].to_owned()
    };
    let text_part = |s: &str| part(s, "--- text/plain ---", "--- text/html ---");
    let html_part = |s: &str| part(s, "--- text/html ---", "\u{0}");
    assert_eq!(
        text_part(&overridden).trim(),
        "--- text/plain ---\nOur own words for AutoCAD LT."
    );
    assert_ne!(text_part(&built_in), text_part(&overridden));
    assert_eq!(html_part(&built_in), html_part(&overridden));
    assert_eq!(
        part(&built_in, "Subject:", "\n"),
        part(&overridden, "Subject:", "\n")
    );

    let out = run(dir.path(), &["templates", "export", "exported"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("exported/ready/body.txt.hbs")).unwrap(),
        include_str!("../../templates/ready/body.txt.hbs")
    );
    let again = run(dir.path(), &["templates", "export", "exported"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("exists already"),
        "{}",
        text(&again.stderr)
    );
}

/// Commands that only read, on a folder with no database: each fails naming the file, the
/// setting and the command that creates it, and leaves the folder as it was.
#[test]
fn read_only_commands_on_a_missing_database_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let expected = dir.path().join("data/renewal-worker.db");
    for args in [
        &["timeline", "S1"][..],
        &["notifications"],
        &["jobs"],
        &["simulate", "--from", "2026-01-01", "--to", "2026-01-31"],
        &["render", "ready", "--subscription", "S1"],
        &["licenses", "S1", "--assigned", "0"],
    ] {
        let out = run(dir.path(), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&expected.display().to_string())
                && err.contains("database.url")
                && err.contains("renewal-worker migrate"),
            "{args:?}: {err}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

/// Commands that only read, on a database that exists but holds none of our tables (a new
/// PostgreSQL database, an empty SQLite file): refused, and the database stays empty.
fn read_only_commands_leave_an_empty_database_empty() {
    let dir = tempfile::tempdir().unwrap();
    if crate::helpers::cli_database_env().is_empty() {
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/renewal-worker.db"), b"").unwrap();
    }
    for args in [&["notifications"][..], &["timeline", "S1"]] {
        let out = run(dir.path(), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("no renewal-worker tables") && err.contains("renewal-worker migrate"),
            "{args:?}: {err}"
        );
    }
    let out = run(dir.path(), &["check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let db = line(&report, "database");
    assert_eq!(db["ok"], false, "{report}");
    assert!(
        db["detail"].as_str().unwrap().contains("not applied"),
        "still empty: {report}"
    );
}
on_both_backends!(sync read_only_commands_leave_an_empty_database_empty);

/// Relative paths in a config file are relative to its folder, wherever the command runs.
#[test]
fn relative_paths_in_a_config_file_resolve_against_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("rw.toml"),
        "[database]\nurl = \"sqlite://db/rw.db\"\n[mail]\nfile_dir = \"out\"\n",
    )
    .unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = run(&elsewhere, &["--config", "../etc/rw.toml", "migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(etc.join("db/rw.db").is_file());
    assert!(
        text(&out.stdout).contains(&etc.join("db/rw.db").display().to_string()),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

fn check(dir: &Path, port: u16) -> (Option<i32>, serde_json::Value) {
    let out = smtp_env(&mut bin(dir), port)
        .args(["check", "--json"])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), report)
}

fn line<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} line in {report}"))
}

/// `check` passes against a live relay (which receives no mail) and fails naming a relay
/// that does not answer; a database not yet created fails with the fix.
fn check_reports_every_part() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let dir = tempfile::tempdir().unwrap();
    let (code, report) = check(dir.path(), sink.port);
    assert_eq!(code, Some(1), "no database yet: {report}");
    let db = line(&report, "database");
    assert_eq!(db["ok"], false, "{report}");
    assert!(
        db["fix"]
            .as_str()
            .unwrap()
            .contains("renewal-worker migrate"),
        "{report}"
    );

    assert!(run(dir.path(), &["migrate"]).status.success());
    let (code, report) = check(dir.path(), sink.port);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    let relay = line(&report, "mail relay")["detail"].as_str().unwrap();
    assert!(
        relay.contains(&format!("127.0.0.1:{}", sink.port)) && relay.contains("QUIT"),
        "{relay}"
    );
    let config = line(&report, "configuration")["detail"].as_str().unwrap();
    assert!(
        config.contains("RENEWAL_WORKER__MAIL__SMTP__PORT"),
        "the source of each value: {config}"
    );
    assert!(sink.received().is_empty() && sink.data_starts() == 0);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (code, report) = check(dir.path(), port);
    assert_eq!(code, Some(1), "{report:#}");
    let relay = line(&report, "mail relay");
    assert_eq!(relay["ok"], false);
    assert!(
        relay["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{relay}"
    );
    assert!(relay["fix"].as_str().unwrap().contains("mail.smtp.host"));
    // Every other part still passes.
    let failed: Vec<_> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
}
on_both_backends!(sync check_reports_every_part);

/// A configuration error names the file (absolute) and the key as written, once; the
/// environment sets lists; a bad duration shows the format.
#[test]
fn configuration_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("my.toml"), "[mail]\ntransprot = \"smtp\"\n").unwrap();
    let out = run(dir.path(), &["--config", "my.toml", "migrate"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&dir.path().join("my.toml").display().to_string())
            && err.contains("`mail.transprot`")
            && !err.contains("default."),
        "{err}"
    );

    let out = run(dir.path(), &["--config", "missing.toml", "migrate"]);
    let err = text(&out.stderr);
    let missing = dir.path().join("missing.toml").display().to_string();
    assert_eq!(err.matches(&missing).count(), 1, "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "said once: {err}");

    let out = bin(dir.path())
        .args(["migrate"])
        .env("RENEWAL_WORKER__WORKER__JOB_TIMEOUT", "90")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("RENEWAL_WORKER__WORKER__JOB_TIMEOUT") && err.contains("\"30s\""),
        "{err}"
    );

    // A list from the environment: accepted, and each item checked.
    let out = bin(dir.path())
        .args(["check", "--json"])
        .env("RENEWAL_WORKER__RENEWAL__REMINDER_OFFSETS", "30d,10bd,1bd")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line(&report, "configuration")["ok"], true, "{report}");
    let out = bin(dir.path())
        .args(["migrate"])
        .env("RENEWAL_WORKER__RENEWAL__REMINDER_OFFSETS", "30d,2w")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("RENEWAL_WORKER__RENEWAL__REMINDER_OFFSETS") && err.contains("\"2w\""),
        "{err}"
    );
}

/// Usage errors exit 2, other errors 1, a rejected disable request 3.
#[test]
fn exit_codes_follow_the_class_of_error() {
    let dir = tempfile::tempdir().unwrap();
    imported(dir.path());
    let code = |args: &[&str]| {
        let out = run(dir.path(), args);
        (out.status.code(), text(&out.stderr) + &text(&out.stdout))
    };
    for (args, expected) in [
        (&["event", "S1", "shipped"][..], 2),
        (&["event", "S1", "activated"], 2),
        (
            &[
                "event",
                "S1",
                "ready",
                "--download-url",
                "https://x.example/d",
            ],
            2,
        ),
        (&["render", "pigeon", "--subscription", "S1"], 2),
        (
            &["simulate", "--from", "2026-02-30", "--to", "2026-03-01"],
            2,
        ),
        (&["timeline", "S1", "--at", "yesterday"], 2),
        (&["timeline", "S99"], 1),
        (
            &[
                "disable-auto-renew",
                "S1",
                "--requested-by",
                "ops@acme.example",
            ],
            3,
        ),
    ] {
        let (got, err) = code(args);
        assert_eq!(got, Some(expected), "{args:?}: {err}");
        assert!(!err.is_empty(), "{args:?} says why");
    }
}

/// A reader that stops reading (`simulate ... | head`) ends the command quietly, with 0.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    imported(dir.path());
    let mut child = bin(dir.path())
        .args(["simulate", "--from", "2026-01-01", "--to", "2029-12-31"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The read end closes before the command writes its first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

/// A second daemon on the SQLite file a first one uses says so at start, naming the first and
/// pointing at PostgreSQL; its log, going to a pipe, has no colour codes. A daemon restarted
/// after the first was killed does not: its predecessor is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_one_sqlite_file_warns() {
    use sqlx::Connection;
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["migrate"]).status.success());
    let daemon = || {
        bin(dir.path())
            .args(["run"])
            .env("RENEWAL_WORKER__WORKER__POLL_INTERVAL", "100ms")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let stop = |child: &mut std::process::Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap()
    };
    // The log of a daemon's start, up to the line after which the warning would have come.
    let start_log = |child: &mut std::process::Child| {
        let mut log = String::new();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            log.push_str(&line);
            log.push('\n');
            if line.contains("claims checked at start") {
                break;
            }
        }
        log
    };
    let mut first = daemon();
    // Until the first daemon's heartbeat row is in.
    let url = format!(
        "sqlite://{}",
        dir.path().join("data/renewal-worker.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM daemons")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if n > 0 || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    conn.close().await.unwrap();

    let mut second = daemon();
    let log = start_log(&mut second);
    stop(&mut second);
    let warning = log
        .lines()
        .find(|l| l.contains("another daemon"))
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(
        warning.contains(&format!("-{}", first.id())) && warning.contains("PostgreSQL"),
        "{warning}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes in a pipe: {log:?}"
    );

    // Killed, then restarted: the row it left is a gone predecessor's, not a running daemon.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut restarted = daemon();
    let log = start_log(&mut restarted);
    stop(&mut restarted);
    assert!(log.contains("claims checked at start"), "{log}");
    assert!(!log.contains("another daemon"), "{log}");
}
