//! Crafted input: empty files, control characters in every kind of field, and names that
//! would become headers. Each is refused with the field named and nothing written, or, for a
//! subject, reaches the reader as the literal text it was.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::*;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_renewal-worker"))
        .args(args)
        .current_dir(dir)
        .env("RENEWAL_WORKER__TEMPLATES__DIR", templates_dir())
        .env_remove("RUST_LOG")
        .envs(cli_database_env())
        .stdin(Stdio::null())
        .output()
        .expect("run the binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const CSV_HEADER: &str = "id,reseller_id,customer_id,product_id,plan,billing,seats,assigned_licenses,term_start,term_end,auto_renew,notify_email\n";

on_both_backends!(sync empty_files_and_control_characters_are_refused_with_exit_2);
fn empty_files_and_control_characters_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("subs.json"), FIXTURE).unwrap();
    let out = run(d, &["import", "subs.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let row = "S7,R1,C1,057O1WW6525L347,Revit,monthly_prepaid,5,0,2026-01-31,2027-01-31,no,\n";
    let files: Vec<(&str, String, &str)> = vec![
        ("empty.csv", String::new(), "no subscription"),
        ("header.csv", CSV_HEADER.into(), "no subscription"),
        (
            "empty.json",
            "{}".into(),
            "no resellers, customers or subscriptions",
        ),
        // A quoted cell may hold a line break; it is refused, not trimmed away.
        (
            "cr.csv",
            format!("{CSV_HEADER}{}", row.replace("Revit", "\"Revit\r\n\"")),
            "field `plan`",
        ),
        (
            "tab.csv",
            format!("{CSV_HEADER}{}", row.replace("S7", "\"S7\t\"")),
            "field `id`",
        ),
        (
            "plan.json",
            FIXTURE.replace(
                "\"AutoCAD LT\"",
                "\"AutoCAD LT\\r\\nBcc: evil@attacker.example\"",
            ),
            "field `plan`",
        ),
        (
            "name.json",
            FIXTURE.replace("\"Globex\"", "\"Globex\\u2028\""),
            "field `name`",
        ),
        (
            "email.json",
            FIXTURE.replace("\"ops@acme.example\"", "\"ops@acme.example\\n\""),
            "field `email`",
        ),
        (
            "id.json",
            FIXTURE.replace("\"id\": \"S2\"", "\"id\": \"S2\\r\\n\""),
            "field `id`",
        ),
    ];
    for (name, content, expected) in &files {
        std::fs::write(d.join(name), content).unwrap();
        let out = run(d, &["import", name]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
        // The message itself holds no raw line break from the data.
        assert!(
            !err.contains("Revit\r") && !err.contains("LT\r"),
            "{name}: {err}"
        );
    }
    // Nothing of them was written.
    let out = run(d, &["timeline", "S7"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let out = run(d, &["timeline", "S1", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("Bcc"), "{}", text(&out.stdout));

    // Command-line values.
    for args in [
        vec!["event", "S1\r\n", "ready"],
        vec!["event", "S1", "ready\n"],
        vec![
            "event",
            "S1",
            "activated",
            "--download-url",
            "https://x.example/dl\r\nBcc: evil@attacker.example",
        ],
        vec![
            "disable-auto-renew",
            "S1",
            "--requested-by",
            "ops@acme.example\r\n",
        ],
    ] {
        let out = run(d, &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            !text(&out.stderr).contains('\r'),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = run(d, &["notifications", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]", "no mail was queued");
}

const CRAFTED_PLAN: &str = "=?utf-8?q?X=0D=0ABcc:_evil@attacker.example?=";

on_both_backends!(async a_plan_that_looks_like_an_encoded_word_stays_literal_text);
async fn a_plan_that_looks_like_an_encoded_word_stays_literal_text() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "").await;
    // Accepted at import: the text is harmless once it is encoded by us.
    app.import(&FIXTURE.replace("AutoCAD LT", CRAFTED_PLAN))
        .await;
    app.event("S1", "ready", None).await;
    let d = app.deliverer(app.clock.clone());
    let report = d.drain().await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    assert!(eventually(Duration::from_secs(10), || sink.received().len() == 1).await);
    let mail = &sink.received()[0];
    assert_eq!(
        mail.to,
        ["buyer@acme.example"],
        "the envelope has one recipient"
    );
    let parsed = mail.parsed();
    let names: Vec<String> = parsed
        .headers()
        .iter()
        .map(|h| h.name().to_ascii_lowercase())
        .collect();
    assert!(!names.iter().any(|n| n == "bcc"), "{names:?}");
    assert_eq!(
        mail.subject(),
        format!("Your {CRAFTED_PLAN} subscription is ready")
    );
    let raw = text(&mail.data);
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(
        !head.contains(CRAFTED_PLAN),
        "the raw header encodes it:\n{head}"
    );
}
