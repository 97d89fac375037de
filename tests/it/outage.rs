//! Losing the database: a daemon on PostgreSQL whose connections are cut (a network partition,
//! a server restart) keeps retrying, and once the database is back it sends everything owed,
//! once each, including mail recorded while it was cut off.

use std::time::Duration;

use renewal_worker::store::OutboxState;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_cut_off_from_postgresql_resumes_and_loses_nothing() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let mut app = postgres_app(&sink).await;
    add_synthetic_subscriptions(&app, 50).await;

    // The daemon reaches the database through the relay; the test (standing in for the
    // marketplace) keeps its own direct connection.
    let proxy = app.reach_postgres_through_proxy().await;

    for i in 0..20 {
        owe_ready(&app.store, &app.settings, i).await;
    }
    app.start("w-cut");
    assert!(eventually(Duration::from_secs(30), || sink.received().len() == 20).await);

    proxy.cut();
    // Owed mail keeps being recorded while the daemon cannot reach the database.
    for i in 20..50 {
        owe_ready(&app.store, &app.settings, i).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sink.received().len(), 20, "nothing sent while cut off");
    proxy.restore();

    assert!(
        eventually(Duration::from_secs(90), || sink.received().len() >= 50).await,
        "every mail owed was sent after the database came back: {} of 50",
        sink.received().len()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.stop().await;
    let mut ids: Vec<String> = sink.received().iter().map(|m| m.message_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "each once");
    assert_eq!(sink.received().len(), 50, "no mail twice");
    assert!(
        app.outbox()
            .await
            .iter()
            .all(|o| o.state == OutboxState::Sent)
    );
}
