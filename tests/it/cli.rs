//! The binary as operators use it: exit codes, messages, and what it leaves behind.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::{FIXTURE, templates_dir};

fn bin(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_renewal-worker"));
    c.current_dir(dir)
        .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
        .env_remove("RUST_LOG")
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

fn notifications(dir: &Path) -> serde_json::Value {
    let out = run(dir, &["notifications", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn enqueue_event_says_its_mail_is_queued_in_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();
    let out = run(dir.path(), &["import", "subs.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(dir.path(), &["enqueue", "event", "S1", "ready"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "queued mail #1 (ready) for S1 in the outbox"
    );
    let again = run(dir.path(), &["enqueue", "event", "S1", "ready"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        text(&again.stdout).trim(),
        "nothing queued: ready for S1 was recorded before (mail #1 is pending)"
    );
}

#[test]
fn import_then_events_then_preview() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();

    let out = run(dir.path(), &["import", "subs.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "imported 1 reseller, 2 customers, 2 subscriptions from subs.json"
    );
    assert!(
        dir.path().join("data/renewal-worker.db").exists(),
        "database created on first use"
    );

    let out = run(dir.path(), &["event", "S1", "ready"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("to buyer@acme.example queued"),
        "{}",
        text(&out.stdout)
    );
    let again = run(dir.path(), &["event", "S1", "ready"]);
    assert!(again.status.success());
    assert!(
        text(&again.stdout).contains("recorded before"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(notifications(dir.path()).as_array().unwrap().len(), 1);

    // activated without (a usage error), or with a bad, download URL: refused, nothing
    // recorded.
    let out = run(dir.path(), &["event", "S1", "activated"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--download-url"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        dir.path(),
        &[
            "event",
            "S1",
            "activated",
            "--download-url",
            "http://x.example/dl",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("http://x.example/dl"),
        "{}",
        text(&out.stderr)
    );
    let out = run(dir.path(), &["event", "S9", "ready"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown subscription \"S9\""),
        "{}",
        text(&out.stderr)
    );
    let out = run(dir.path(), &["event", "S1", "shipped"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("shipped"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(notifications(dir.path()).as_array().unwrap().len(), 1);

    // Preview: prints, records and sends nothing.
    let out = run(
        dir.path(),
        &[
            "render",
            "activated",
            "--subscription",
            "S1",
            "--download-url",
            "https://manage.autodesk.com/dl/9",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let preview = text(&out.stdout);
    assert!(preview.contains("To: ops@acme.example"), "{preview}");
    assert!(preview.contains("Subject: Autodesk activation complete: download AutoCAD LT"));
    assert!(preview.contains("https://manage.autodesk.com/dl/9"));
    assert!(preview.contains("--- text/html ---"));
    assert_eq!(notifications(dir.path()).as_array().unwrap().len(), 1);
    assert!(
        !dir.path().join("mail-out").exists()
            || std::fs::read_dir(dir.path().join("mail-out"))
                .unwrap()
                .count()
                == 0
    );

    let out = run(
        dir.path(),
        &["render", "ready", "--subscription", "S1", "--eml"],
    );
    assert!(out.status.success());
    let eml = text(&out.stdout);
    assert!(eml.contains("Content-Type: multipart/alternative"), "{eml}");
    assert!(eml.contains(&renewal_worker::notify::message_id(
        "S1/ready",
        "renewal-worker.invalid"
    )));
}

on_both_backends!(sync an_invalid_file_is_rejected_whole_with_every_error);
fn an_invalid_file_is_rejected_whole_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = FIXTURE
        .replace("5101234567", "51012345")
        .replace("\"seats\": 5", "\"seats\": 1000")
        .replace("America/New_York", "America/Gotham");
    std::fs::write(dir.path().join("bad.json"), bad).unwrap();
    let out = run(dir.path(), &["import", "bad.json"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("nothing was written"), "{err}");
    assert!(
        err.contains("resellers row 1 (id R1), field `csn`"),
        "{err}"
    );
    assert!(err.contains("\"51012345\""), "{err}");
    assert!(
        err.contains("resellers row 1 (id R1), field `timezone`"),
        "{err}"
    );
    assert!(err.contains("America/Gotham"), "{err}");
    assert!(
        err.contains("subscriptions row 2 (id S2), field `seats`"),
        "{err}"
    );
    // Nothing half-written: the valid rows of the file are not there either.
    assert!(run(dir.path(), &["migrate"]).status.success());
    let out = run(dir.path(), &["event", "S1", "ready"]);
    assert!(
        text(&out.stderr).contains("unknown subscription \"S1\""),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(dir.path().join("broken.json"), "{\"resellers\": [").unwrap();
    let out = run(dir.path(), &["import", "broken.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("broken.json is not valid JSON"),
        "{}",
        text(&out.stderr)
    );
}

on_both_backends!(sync csv_imports_subscriptions);
fn csv_imports_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();
    assert!(run(dir.path(), &["import", "subs.json"]).status.success());
    std::fs::write(
        dir.path().join("more.csv"),
        "id,reseller_id,customer_id,product_id,plan,billing,seats,assigned_licenses,term_start,term_end,auto_renew\n\
         S3,R1,C2,057O1-WW6525-L349,Inventor,annual_prepaid,2,2,2026-03-01,2027-03-01,true\n",
    )
    .unwrap();
    let out = run(dir.path(), &["import", "more.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 subscription from"));
    let out = run(dir.path(), &["render", "ready", "--subscription", "S3"]);
    assert!(
        text(&out.stdout).contains("To: admin@initech.example"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(dir.path())
        .args(["migrate"])
        .env("RENEWAL_WORKER__MAIL__TRANSPORT", "pigeon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("pigeon") && err.to_lowercase().contains("mail.transport"),
        "{err}"
    );

    std::fs::write(dir.path().join("c.toml"), "[worker]\nconcurrency = 0\n").unwrap();
    let out = run(dir.path(), &["--config", "c.toml", "migrate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("`worker.concurrency`"),
        "{}",
        text(&out.stderr)
    );

    // Checked before the runtime is built with them.
    std::fs::write(dir.path().join("t.toml"), "[worker]\nthreads = 0\n").unwrap();
    let out = run(dir.path(), &["--config", "t.toml", "migrate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`worker.threads` = \"0\""), "{err}");

    let out = run(dir.path(), &["--config", "missing.toml", "migrate"]);
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_broken_template_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(dir.path())
        .args(["run"])
        .env(
            "RENEWAL_WORKER__TEMPLATES__DIR",
            dir.path().join("no-templates-here"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no-templates-here"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_daemon_runs_on_a_fresh_folder_delivers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();
    assert!(run(dir.path(), &["import", "subs.json"]).status.success());
    assert!(
        run(dir.path(), &["event", "S1", "order-processed"])
            .status
            .success()
    );

    let mut child = bin(dir.path())
        .args(["run"])
        .env("RENEWAL_WORKER__WORKER__POLL_INTERVAL", "100ms")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out_dir = dir.path().join("mail-out");
    let start = std::time::Instant::now();
    let count = || std::fs::read_dir(&out_dir).map(|d| d.count()).unwrap_or(0);
    while count() < 1 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // An event recorded while the daemon runs is picked up too. (Its start's poll may have
    // added a renewal reminder, depending on today's date: wait for this mail by its key.)
    assert!(run(dir.path(), &["event", "S1", "ready"]).status.success());
    let ready_sent = |rows: &serde_json::Value| {
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "S1/ready" && r["state"] == "sent")
    };
    while !ready_sent(&notifications(dir.path())) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM: a clean stop with exit code 0.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut log = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("renewal-worker stopped"), "{log}");
    let rows = notifications(dir.path());
    assert!(ready_sent(&rows), "{rows}\n{log}");
    assert_eq!(
        count(),
        rows.as_array().unwrap().len(),
        "one file per mail: {rows}"
    );
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "sent"),
        "{rows}"
    );
}

#[test]
fn calendar_commands_answer_and_refuse_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["calendar", "cutoff", "--term-end", "2026-12-26", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cutoff_date"], "2026-12-18");
    assert_eq!(v["calendar"], "us");

    let out = run(
        dir.path(),
        &["calendar", "offset", "2026-05-25", "-5", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "2026-05-18");

    let out = run(
        dir.path(),
        &[
            "calendar",
            "holidays",
            "--calendar",
            "us",
            "--year",
            "2021",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = v["holidays"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["date"], "2021-12-31");

    let out = run(
        dir.path(),
        &["calendar", "cutoff", "--term-end", "2026-02-30"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"2026-02-30\" is not a date"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        dir.path(),
        &[
            "calendar",
            "holidays",
            "--calendar",
            "mars",
            "--year",
            "2026",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown calendar \"mars\""),
        "{}",
        text(&out.stderr)
    );
    let out = run(dir.path(), &["calendar", "offset", "2026-05-25", "five"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("five"), "{}", text(&out.stderr));
}

on_both_backends!(sync timeline_shows_the_cutoff_in_the_resellers_zone);
fn timeline_shows_the_cutoff_in_the_resellers_zone() {
    let dir = tempfile::tempdir().unwrap();
    // S2 has no licenses assigned.
    std::fs::write(
        dir.path().join("subs.json"),
        FIXTURE.replace(
            "\"term_start\": \"2026-01-31\",\n     \"term_end\": \"2027-01-31\"",
            "\"term_start\": \"2025-12-28\",\n     \"term_end\": \"2026-12-28\"",
        ),
    )
    .unwrap();
    assert!(run(dir.path(), &["import", "subs.json"]).status.success());
    let timeline = |at: &str| -> serde_json::Value {
        let out = run(dir.path(), &["timeline", "S2", "--at", at, "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = timeline("2026-12-18T23:59:00-05:00");
    assert_eq!(before["cutoff_date"], "2026-12-18");
    assert_eq!(before["cutoff_at"], "2026-12-19T00:00:00-05:00");
    assert_eq!(before["can_disable"], true);
    assert_eq!(before["reason"], serde_json::Value::Null);
    assert_eq!(before["effective_term_end"], "2026-12-28");
    assert_eq!(before["reminders"].as_array().unwrap().len(), 3);
    assert_eq!(
        before["reminders"][0]["due_at"],
        "2026-11-18T09:00:00-05:00"
    );

    let after = timeline("2026-12-19T00:00:00-05:00");
    assert_eq!(after["can_disable"], false);
    assert_eq!(after["reason"], "after_cutoff");
    assert_eq!(after["renews_once_more"], true);
    assert_eq!(after["effective_term_end"], "2027-12-28");

    let busy = run(
        dir.path(),
        &["timeline", "S1", "--at", "2026-12-01T00:00:00Z", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&busy.stdout).unwrap();
    assert_eq!(v["reason"], "licenses_assigned");
    assert_eq!(v["assigned_licenses"], 3);

    let out = run(dir.path(), &["timeline", "S2", "--at", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("\"yesterday\" is not a timestamp"));
    let out = run(dir.path(), &["timeline", "S404"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("S404"));
}

on_both_backends!(sync rehearsing_a_term_with_now_steps_sends_every_mail_once_through_smtp);
fn rehearsing_a_term_with_now_steps_sends_every_mail_once_through_smtp() {
    let sink = crate::helpers::SmtpSink::start(crate::helpers::Behaviour::Accept);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("smtp.toml"),
        format!(
            "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\n",
            sink.port
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();
    assert!(run(dir.path(), &["import", "subs.json"]).status.success());
    // S1 ends 2026-12-28 and S2 2027-01-31, both in New York on the US calendar. Every instant
    // is run twice, as a second host or a repeated cron run would.
    let steps = [
        ("2026-11-01T00:00:00Z", 0),
        ("2026-11-18T14:00:00Z", 1), // S1 30d
        ("2026-12-04T14:00:00Z", 2), // S1 10bd
        ("2026-12-17T14:00:00Z", 3), // S1 1bd
        ("2026-12-24T14:00:00Z", 4), // S2 30d: Sat Dec 26 moved back over Christmas
        ("2026-12-28T05:00:00Z", 5), // S1 renewed
        ("2027-01-08T14:00:00Z", 6), // S2 10bd (MLK day on Jan 18 counted out)
        ("2027-01-22T14:00:00Z", 7), // S2 1bd
        ("2027-01-31T05:00:00Z", 8), // S2 renewed
        ("2027-02-15T00:00:00Z", 8),
    ];
    for (at, expected) in steps {
        for _ in 0..2 {
            let out = run(
                dir.path(),
                &["--config", "smtp.toml", "run", "--once", "--now", at],
            );
            assert!(out.status.success(), "{at}: {}", text(&out.stderr));
        }
        assert_eq!(sink.received().len(), expected, "after {at}");
    }
    let subjects: Vec<String> = sink.received().iter().map(|m| m.subject()).collect();
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.starts_with("Auto-renewal of"))
            .count(),
        6,
        "{subjects:?}"
    );
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.contains("renewed until"))
            .count(),
        2,
        "{subjects:?}"
    );
    let reminder = sink
        .received()
        .into_iter()
        .find(|m| m.subject().contains("Revit"))
        .unwrap();
    assert_eq!(reminder.to, ["ops@acme.example"]);
    assert!(
        reminder
            .text()
            .contains("Monday 2027-01-25, 23:59 EST (America/New_York)"),
        "{}",
        reminder.text()
    );
}

on_both_backends!(sync simulate_lists_every_mail_and_records_nothing);
fn simulate_lists_every_mail_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();
    assert!(run(dir.path(), &["import", "subs.json"]).status.success());
    let out = run(
        dir.path(),
        &[
            "simulate",
            "--from",
            "2026-11-01",
            "--to",
            "2027-02-28",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mails: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let line = |m: &serde_json::Value| {
        format!(
            "{} {} {} {}",
            m["local_date"].as_str().unwrap(),
            m["subscription"].as_str().unwrap(),
            m["kind"].as_str().unwrap(),
            m["offset"].as_str().unwrap_or("-")
        )
    };
    assert_eq!(
        mails.iter().map(line).collect::<Vec<_>>(),
        [
            "2026-11-18 S1 renewal_reminder 30d",
            "2026-12-04 S1 renewal_reminder 10bd",
            "2026-12-17 S1 renewal_reminder 1bd",
            "2026-12-24 S2 renewal_reminder 30d",
            "2026-12-28 S1 subscription_renewed -",
            "2027-01-08 S2 renewal_reminder 10bd",
            "2027-01-22 S2 renewal_reminder 1bd",
            "2027-01-31 S2 subscription_renewed -",
        ]
    );
    assert_eq!(
        notifications(dir.path()).as_array().unwrap().len(),
        0,
        "nothing recorded"
    );
    let out = run(
        dir.path(),
        &["simulate", "--from", "2027-01-01", "--to", "2026-01-01"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("before --from"));
}

on_both_backends!(async operators_see_a_dead_mail_job_with_its_smtp_reply_and_retry_it);
async fn operators_see_a_dead_mail_job_with_its_smtp_reply_and_retry_it() {
    let sink = crate::helpers::SmtpSink::start(crate::helpers::Behaviour::TempFailFirst(1));
    let mut app =
        crate::helpers::TestApp::new(Some(&sink), "[poll]\nschedule = \"0 0 0 1 1 * 2099\"\n")
            .await;
    // One attempt only: the greylisting 451 makes the mail fail for good.
    app.settings.mail.retry.max_attempts = 1;
    app.event("S1", "order-processed", None).await;
    app.start("w-ops");
    assert!(
        crate::helpers::eventually_async(Duration::from_secs(20), || async {
            app.outbox().await[0].state == renewal_worker::store::OutboxState::Failed
        })
        .await
    );
    let dir = app.dir.path().to_owned();
    let db = app.settings.database.url.clone();
    let cli = move |args: &[&str]| {
        bin(&dir)
            .env("RENEWAL_WORKER__DATABASE__URL", &db)
            .args(args)
            .output()
            .unwrap()
    };
    // The send job of the mail that failed for good is dead (the outbox is the mail's queue;
    // look until the record shows it).
    let mut dead = serde_json::Value::Null;
    for _ in 0..100 {
        let listed = {
            let cli = cli.clone();
            tokio::task::spawn_blocking(move || cli(&["jobs", "--status", "dead", "--json"]))
                .await
                .unwrap()
        };
        assert!(listed.status.success(), "{}", text(&listed.stderr));
        dead = serde_json::from_slice(&listed.stdout).unwrap();
        if !dead.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    let id = dead[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(dead[0]["id"], "send:1");
    assert_eq!(dead[0]["key"], "S1/order_processed");

    let shown = {
        let (cli, id) = (cli.clone(), id.clone());
        tokio::task::spawn_blocking(move || cli(&["jobs", "show", &id]))
            .await
            .unwrap()
    };
    let shown = text(&shown.stdout);
    assert!(shown.contains("status     dead"), "{shown}");
    assert!(
        shown.contains("attempt 1") && shown.contains("transient") && shown.contains("451"),
        "{shown}"
    );
    assert!(shown.contains("Greylisted"), "{shown}");

    // Retry: the mail is owed again and goes out (the server accepts now).
    let retried = {
        let (cli, id) = (cli.clone(), id.clone());
        tokio::task::spawn_blocking(move || cli(&["jobs", "retry", &id]))
            .await
            .unwrap()
    };
    assert!(retried.status.success(), "{}", text(&retried.stderr));
    assert!(
        text(&retried.stdout).contains("back to pending as send:1"),
        "{}",
        text(&retried.stdout)
    );
    assert!(
        crate::helpers::eventually(Duration::from_secs(20), || sink.received().len() == 1).await
    );
    let again = {
        let (cli, id) = (cli.clone(), id.clone());
        tokio::task::spawn_blocking(move || cli(&["jobs", "retry", &id]))
            .await
            .unwrap()
    };
    assert_eq!(again.status.code(), Some(1), "only dead jobs are retried");

    // A poll for one subscription, by hand.
    let queued = {
        let cli = cli.clone();
        tokio::task::spawn_blocking(move || cli(&["enqueue", "remind", "S1"]))
            .await
            .unwrap()
    };
    assert!(
        text(&queued.stdout).starts_with("queued poll job poll:"),
        "{}",
        text(&queued.stdout)
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.stop().await;

    let done = tokio::task::spawn_blocking(move || {
        let done = cli(&["jobs", "--status", "done", "--json"]);
        let purged = cli(&["jobs", "purge", "--older-than", "0s"]);
        (done, purged)
    })
    .await
    .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&done.0.stdout).unwrap();
    assert!(listed.as_array().unwrap().len() >= 2, "{listed}");
    assert!(
        text(&done.1.stdout).starts_with("deleted "),
        "{}",
        text(&done.1.stdout)
    );
}

on_both_backends!(sync a_different_download_link_is_refused_with_2_unless_corrected);
fn a_different_download_link_is_refused_with_2_unless_corrected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();
    assert!(run(dir.path(), &["import", "subs.json"]).status.success());
    let event = |url: &str, correct: bool| {
        let mut args = vec!["event", "S1", "activated", "--download-url", url];
        if correct {
            args.push("--correct");
        }
        run(dir.path(), &args)
    };
    let (old, new) = (
        "https://manage.autodesk.com/dl/wrong",
        "https://manage.autodesk.com/dl/right",
    );
    assert!(event(old, false).status.success());

    let out = event(new, false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(old) && err.contains("--correct") && err.contains(new),
        "{err}"
    );
    assert_eq!(notifications(dir.path()).as_array().unwrap().len(), 1);

    let out = event(new, true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("S1/activated/2") && said.contains(old),
        "{said}"
    );
    // The same link again, corrected or not: nothing new.
    for correct in [true, false] {
        let out = event(new, correct);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("nothing new sent"));
    }
    let rows = notifications(dir.path());
    let keys: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["S1/activated", "S1/activated/2"]);

    // The corrected mail as `render` shows it: the last one recorded.
    let out = run(dir.path(), &["render", "activated", "--subscription", "S1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("Key: S1/activated/2"), "{shown}");
    assert!(
        shown.contains("Subject: Correction: new download link"),
        "{shown}"
    );
}

#[test]
fn outputs_read_as_people_read_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();
    assert!(run(dir.path(), &["import", "subs.json"]).status.success());
    // S10 is S2's twin: their mails fall on the same instants.
    let twin = FIXTURE.replace("\"S2\"", "\"S10\"");
    std::fs::write(dir.path().join("twin.json"), twin).unwrap();
    let out = run(dir.path(), &["import", "twin.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // simulate: ids in natural order, the reseller's local time, a filter, plurals.
    let out = run(
        dir.path(),
        &["simulate", "--from", "2027-01-31", "--to", "2027-01-31"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[0], "Sun 2027-01-31", "{shown}");
    assert!(
        lines[1].starts_with("  2027-01-31T00:00:00-05:00  S2 "),
        "{shown}"
    );
    assert!(
        lines[2].starts_with("  2027-01-31T00:00:00-05:00  S10 "),
        "{shown}"
    );
    assert!(
        lines[3].starts_with("2 mails for 3 subscriptions from 2027-01-31 to 2027-01-31: 0 reminders, 2 renewals, 0 ends"),
        "{shown}"
    );
    let out = run(
        dir.path(),
        &[
            "simulate",
            "--from",
            "2027-01-31",
            "--to",
            "2027-01-31",
            "--subscription",
            "S10",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(!shown.contains(" S2 "), "{shown}");
    assert!(
        shown.contains("1 mail for 1 subscription from 2027-01-31 to 2027-01-31: 0 reminders, 1 renewal, 0 ends"),
        "{shown}"
    );
    let out = run(
        dir.path(),
        &[
            "simulate",
            "--from",
            "2027-01-31",
            "--to",
            "2027-01-31",
            "--subscription",
            "S404",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("S404"), "{}", text(&out.stderr));

    // timeline as of now: instants to the second.
    let out = run(dir.path(), &["timeline", "S1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let as_of = shown.lines().find(|l| l.starts_with("as of")).unwrap();
    let instant = as_of.split_whitespace().nth(2).unwrap();
    assert_eq!(instant.len(), "2026-12-07T04:05:31+00:00".len(), "{as_of}");

    // notifications: a long key keeps the columns aligned.
    for args in [
        ["event", "S1", "ready"],
        ["licenses", "S10", "--assigned=1"],
    ] {
        let out = run(dir.path(), &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = run(
        dir.path(),
        &[
            "disable-auto-renew",
            "S10",
            "--requested-by",
            "ops@acme.example",
            "--request-id",
            "a-rather-long-request-id-from-the-marketplace",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = run(dir.path(), &["notifications"]);
    let shown = text(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    let column = |l: &str| {
        l.find("pending")
            .unwrap_or_else(|| l.find("STATE").unwrap())
    };
    assert!(
        lines.iter().all(|l| column(l) == column(lines[0])),
        "{shown}"
    );
    let key_end = lines[2]
        .find("a-rather-long-request-id-from-the-marketplace")
        .unwrap()
        + "a-rather-long-request-id-from-the-marketplace".len();
    assert!(
        lines[0][key_end..].trim_start().starts_with("LAST ERROR"),
        "{shown}"
    );

    // jobs show 1: mail #1's job.
    let out = run(dir.path(), &["jobs", "show", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("job        send:1 (S1/ready)"),
        "{}",
        text(&out.stdout)
    );
    let out = run(dir.path(), &["jobs", "show", "99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("send:99"),
        "{}",
        text(&out.stderr)
    );
}

on_both_backends!(sync orders_from_the_command_line);
fn orders_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subs.json"), FIXTURE).unwrap();
    let out = run(dir.path(), &["import", "subs.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json = |out: &Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stdout)))
    };

    let out = run(dir.path(), &["order-check", "R1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json(&out), serde_json::json!({"can_order": true}));

    let out = run(dir.path(), &["event", "S1", "order-processed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(dir.path(), &["order-check", "R1", "--json"]);
    assert_eq!(out.status.code(), Some(3), "may not: exit 3");
    let check = json(&out);
    assert_eq!(check["can_order"], false);
    assert_eq!(check["in_flight"]["subscription"], "S1");
    assert_eq!(check["in_flight"]["state"], "order_processed");
    assert!(check["in_flight"]["since"].is_string(), "{check}");
    let out = run(dir.path(), &["order-check", "R1"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stdout).contains("S1 is in flight"),
        "{}",
        text(&out.stdout)
    );

    // The watchdog's mail, previewed, and in the simulation.
    let out = run(
        dir.path(),
        &["render", "order-stalled", "--subscription", "S1"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("To: operations@marketplace.example"),
        "{shown}"
    );
    assert!(
        shown.contains("Subject: Order stalled: S1 for Acme IT"),
        "{shown}"
    );
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (
        (today - chrono::Days::new(1)).to_string(),
        (today + chrono::Days::new(8)).to_string(),
    );
    let out = run(
        dir.path(),
        &["simulate", "--from", &from, "--to", &to, "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mails = json(&out);
    let stalls: Vec<_> = mails
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "order_stalled")
        .collect();
    assert_eq!(stalls.len(), 1, "{mails}");
    assert_eq!(stalls[0]["subscription"], "S1");
    assert_eq!(stalls[0]["to"], "operations@marketplace.example");
    let out = run(dir.path(), &["timeline", "S1", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let p = json(&out)["provisioning"].clone();
    assert_eq!(p["state"], "order_processed");
    assert_eq!(p["in_flight"], true);
    assert_eq!(p["missing_step"], "activated");
    assert!(p["stalls_at"].is_string(), "{p}");
    let out = run(dir.path(), &["timeline", "S1"]);
    assert!(
        text(&out.stdout).contains("provisioning  order_processed (order in flight)"),
        "{}",
        text(&out.stdout)
    );

    // Bad input: exit 2, naming the argument and its value; nothing written.
    let out = run(dir.path(), &["order-check", "R9"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("reseller") && err.contains("\"R9\""), "{err}");
    let out = run(dir.path(), &["order", "abandon", "S1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--reason"),
        "{}",
        text(&out.stderr)
    );
    let out = run(dir.path(), &["order", "abandon", "S1", "--reason", " "]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--reason"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        dir.path(),
        &[
            "event",
            "S1",
            "activated",
            "--download-url",
            "https://manage.autodesk.com/dl/1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(dir.path(), &["order", "abandon", "S1", "--reason", "late"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("\"S1\"") && err.contains("activated"), "{err}");
    let out = run(dir.path(), &["timeline", "S1", "--json"]);
    let p = json(&out)["provisioning"].clone();
    assert_eq!(p["abandoned_at"], serde_json::Value::Null);
    assert_eq!(p["state"], "activated");

    // An order abandoned by an operator frees its reseller.
    let out = run(dir.path(), &["event", "S2", "ready"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        run(dir.path(), &["order-check", "R1"]).status.code(),
        Some(3)
    );
    let out = run(
        dir.path(),
        &["order", "abandon", "S2", "--reason", "duplicate order"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        run(dir.path(), &["order-check", "R1"]).status.code(),
        Some(0)
    );
}
