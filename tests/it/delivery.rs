use std::time::Duration;

use renewal_worker::service::EventOutcome;
use renewal_worker::store::OutboxState;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);
const URL: &str = "https://manage.autodesk.com/products/download?sub=S1";

on_both_backends!(async the_three_provisioning_mails_arrive_once_each_at_the_right_addresses);
async fn the_three_provisioning_mails_arrive_once_each_at_the_right_addresses() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let mut app = TestApp::new(Some(&sink), "").await;
    app.start("w-three");
    app.event("S1", "ready", None).await;
    app.event("S1", "order-processed", None).await;
    app.event("S1", "activated", Some(URL)).await;
    // S2 has no notify_email: its "ready" mail goes to the customer.
    app.event("S2", "ready", None).await;

    assert!(
        eventually(WAIT, || sink.received().len() >= 4).await,
        "4 mails arrive"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.stop().await;
    let got = sink.received();
    assert_eq!(got.len(), 4, "exactly four mails, no duplicates");

    let find = |needle: &str| {
        got.iter()
            .find(|m| m.subject().contains(needle))
            .unwrap_or_else(|| panic!("a mail whose subject contains {needle:?}"))
    };
    assert!(
        got.iter()
            .all(|m| m.from == "subscriptions@marketplace.example")
    );
    let ready = got
        .iter()
        .find(|m| m.to == ["buyer@acme.example"])
        .expect("S1 ready mail to the order's address");
    assert_eq!(ready.subject(), "Your AutoCAD LT subscription is ready");
    let ready_s2 = got
        .iter()
        .find(|m| m.to == ["admin@initech.example"])
        .expect("S2 ready mail to the customer");
    assert_eq!(ready_s2.subject(), "Your Revit subscription is ready");

    let processed = find("order processed");
    assert_eq!(processed.to, ["ops@acme.example"]);
    assert_eq!(
        processed.subject(),
        "Autodesk order processed: AutoCAD LT for Globex"
    );

    let activated = find("activation complete");
    assert_eq!(activated.to, ["ops@acme.example"]);
    assert!(activated.text().contains(URL), "link in the text part");
    let html = activated.html();
    assert!(
        html.contains(&format!("href=\"{URL}\"")),
        "link as a button in the HTML part: {html}"
    );
    // multipart/alternative with both parts
    let parsed = activated.parsed();
    assert_eq!(parsed.text_body.len(), 1);
    assert_eq!(parsed.html_body.len(), 1);

    // Message-IDs are derived from the notification key, and distinct.
    let ids: std::collections::HashSet<String> = got.iter().map(|m| m.message_id()).collect();
    assert_eq!(ids.len(), 4);
    let expected = renewal_worker::notify::message_id("S1/activated", "renewal-worker.invalid");
    assert_eq!(format!("<{}>", activated.message_id()), expected);

    for row in app.outbox().await {
        assert_eq!(row.state, OutboxState::Sent, "{row:?}");
        assert_eq!(row.attempts, 1);
        let attempts = app.store.attempts(row.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, "sent");
    }
}

on_both_backends!(async a_repeated_event_sends_nothing_more);
async fn a_repeated_event_sends_nothing_more() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let mut app = TestApp::new(Some(&sink), "").await;
    let first = app.event("S1", "ready", None).await;
    let second = app.event("S1", "ready", None).await;
    assert!(matches!(first, EventOutcome::Queued { .. }));
    assert!(
        matches!(second, EventOutcome::AlreadyRecorded { .. }),
        "{second:?}"
    );
    app.start("w-repeat");
    assert!(eventually(WAIT, || sink.received().len() == 1).await);
    // The server has it; the record follows a moment later.
    assert!(
        eventually_async(WAIT, || async {
            app.outbox().await[0].state == OutboxState::Sent
        })
        .await
    );
    // Recorded again after it was sent: still nothing new.
    let third = app.event("S1", "ready", None).await;
    assert_eq!(
        third,
        EventOutcome::AlreadyRecorded {
            outbox_id: match first {
                EventOutcome::Queued { outbox_id, .. } => outbox_id,
                _ => unreachable!(),
            },
            state: "sent".into()
        }
    );
    // Give the worker (and its redrive) time to do anything wrong.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.stop().await;
    assert_eq!(sink.received().len(), 1);
    assert_eq!(sink.data_starts(), 1);
}

on_both_backends!(async a_451_is_retried_and_the_mail_delivered_once);
async fn a_451_is_retried_and_the_mail_delivered_once() {
    let sink = SmtpSink::start(Behaviour::TempFailFirst(1));
    let mut app = TestApp::new(Some(&sink), "").await;
    app.event("S1", "order-processed", None).await;
    app.start("w-451");
    assert!(
        eventually(WAIT, || sink.received().len() == 1).await,
        "delivered after retry"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    app.stop().await;
    assert_eq!(sink.received().len(), 1, "delivered once");
    assert_eq!(sink.rcpt_refusals(), 1, "one refused");
    assert_eq!(sink.data_ends(), 1, "one accepted");

    let row = &app.outbox().await[0];
    assert_eq!(row.state, OutboxState::Sent);
    assert_eq!(row.attempts, 2);
    let attempts = app.store.attempts(row.id).await.unwrap();
    assert_eq!(attempts.len(), 2, "every attempt recorded: {attempts:?}");
    assert_eq!(attempts[0].outcome, "transient");
    assert_eq!(attempts[0].smtp_code, Some(451));
    assert!(
        attempts[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("Greylisted")
    );
    assert_eq!(attempts[1].outcome, "sent");
    // The retry waited for the backoff (200 ms base, jittered down to at least half).
    assert!(
        attempts[1].started_at - attempts[0].finished_at >= chrono::Duration::milliseconds(100)
    );
}

on_both_backends!(async a_550_is_not_retried_and_the_reply_is_recorded);
async fn a_550_is_not_retried_and_the_reply_is_recorded() {
    let sink = SmtpSink::start(Behaviour::RejectRecipients);
    let mut app = TestApp::new(Some(&sink), "").await;
    app.event("S1", "order-processed", None).await;
    app.start("w-550");
    assert!(
        eventually_async(WAIT, || async {
            app.outbox().await[0].state == OutboxState::Failed
        })
        .await
    );
    // Long enough for several retries had there been any (backoff is 200 ms .. 1 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.stop().await;
    assert_eq!(sink.rcpt_refusals(), 1, "no retry storm");
    assert!(sink.received().is_empty());
    let row = &app.outbox().await[0];
    assert_eq!(row.state, OutboxState::Failed);
    assert_eq!(row.attempts, 1);
    let error = row.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("550") && error.contains("Mailbox unavailable"),
        "{error}"
    );
    let attempts = app.store.attempts(row.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "permanent");
    assert_eq!(attempts[0].smtp_code, Some(550));
}

on_both_backends!(async transient_failures_stop_after_max_attempts);
async fn transient_failures_stop_after_max_attempts() {
    // Every recipient is answered 451 (about the mail, not the relay): each attempt counts.
    let sink = SmtpSink::start(Behaviour::TempFailFirst(usize::MAX));
    let mut app = TestApp::new(Some(&sink), "").await;
    app.settings.mail.retry.max_attempts = 3;
    app.settings.mail.retry.initial_backoff = Duration::from_millis(100);
    app.settings.mail.retry.max_backoff = Duration::from_millis(200);
    app.event("S1", "ready", None).await;
    app.start("w-451");
    assert!(
        eventually_async(WAIT, || async {
            app.outbox().await[0].state == OutboxState::Failed
        })
        .await
    );
    app.stop().await;
    let row = &app.outbox().await[0];
    assert_eq!(row.attempts, 3);
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("gave up after 3 attempts")
    );
    let attempts = app.store.attempts(row.id).await.unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a.outcome == "transient" && a.smtp_code == Some(451))
    );
}

on_both_backends!(async a_refused_connection_spends_no_attempt_and_opens_the_breaker);
async fn a_refused_connection_spends_no_attempt_and_opens_the_breaker() {
    // Nothing listens on this port: connection refused, every time. That is the relay's
    // fault, not the mail's: however long it lasts, the mail stays owed with no attempt spent.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut app = TestApp::new(None, "").await;
    app.settings = renewal_worker::config::Settings::from_toml_overlay(&format!(
        "[database]\nurl = {:?}\n[templates]\ndir = {:?}\n[mail]\ntransport = \"smtp\"\n\
         [mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\n\
         [mail.retry]\nmax_attempts = 2\ninitial_backoff = \"100ms\"\nmax_backoff = \"100ms\"\n\
         [mail.breaker]\nprobe_initial = \"100ms\"\nprobe_max = \"200ms\"\n\
         [worker]\npoll_interval = \"100ms\"\nredrive_interval = \"500ms\"\n",
        app.settings.database.url,
        templates_dir()
    ))
    .unwrap();
    app.event("S1", "ready", None).await;
    app.start("w-refused");
    assert!(
        eventually_async(WAIT, || async {
            app.store
                .relay_breakers()
                .await
                .unwrap()
                .iter()
                .any(|b| b.state == "down" && b.probes_failed >= 3)
        })
        .await,
        "the breaker opened and its probes failed"
    );
    app.stop().await;
    assert!(
        app.store.relay_breakers().await.unwrap().is_empty(),
        "a daemon that stops removes its breaker's row"
    );
    let row = &app.outbox().await[0];
    assert_eq!((row.state, row.attempts), (OutboxState::Pending, 0));
    assert!(app.store.attempts(row.id).await.unwrap().is_empty());
}

on_both_backends!(async a_restarted_worker_delivers_mail_owed_while_it_was_down);
async fn a_restarted_worker_delivers_mail_owed_while_it_was_down() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let mut app = TestApp::new(Some(&sink), "").await;
    app.start("w-first");
    app.event("S1", "ready", None).await;
    assert!(eventually(WAIT, || sink.received().len() == 1).await);
    app.stop().await;

    // Recorded while no daemon runs (as the CLI does).
    app.event("S1", "order-processed", None).await;
    app.event("S1", "activated", Some(URL)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 1);

    app.start("w-second");
    assert!(eventually(WAIT, || sink.received().len() == 3).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.stop().await;
    assert_eq!(
        sink.received().len(),
        3,
        "each owed mail once, the sent one not again"
    );
}

on_both_backends!(async a_mail_claimed_by_a_worker_that_died_is_sent_after_its_lease);
async fn a_mail_claimed_by_a_worker_that_died_is_sent_after_its_lease() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let mut app = TestApp::new(
        Some(&sink),
        "sending_lease = \"3s\"\njob_timeout = \"2s\"\n",
    )
    .await;
    let EventOutcome::Queued { outbox_id, .. } = app.event("S1", "ready", None).await else {
        panic!("queued")
    };
    // A worker claimed it, with what the mail is made from, and died before sending
    // (process killed mid-batch).
    let claimed = app
        .store
        .claim_due(4, "dead-worker", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the one mail owed");
    let claimed = claimed.into_iter().next().unwrap();
    assert_eq!(claimed.row.id, outbox_id);
    assert_eq!(claimed.row.attempts, 1);
    assert_eq!(claimed.row.claimed_by.as_deref(), Some("dead-worker"));
    let sid = renewal_worker::domain::SubscriptionId::parse("S1").unwrap();
    assert_eq!(
        claimed.context.unwrap(),
        app.store.subscription_context(&sid).await.unwrap(),
        "the context read with the claim is the subscription's"
    );
    // A second claim finds it taken: one sender at a time.
    assert!(
        app.store
            .claim_due(4, "other", chrono::Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    let job = app
        .store
        .job(&format!("send:{outbox_id}"), 8)
        .await
        .unwrap();
    assert_eq!(job.expect("its send job").status, "running");

    app.start("w-rescuer");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sink.received().is_empty(), "not before the lease runs out");
    assert!(eventually(WAIT, || sink.received().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.stop().await;
    assert_eq!(sink.received().len(), 1);
    let row = &app.outbox().await[0];
    assert_eq!(row.state, OutboxState::Sent);
    assert_eq!(row.attempts, 2, "the lost attempt counts");
}

on_both_backends!(async a_mail_sent_while_the_database_is_unavailable_is_recorded_not_resent);
async fn a_mail_sent_while_the_database_is_unavailable_is_recorded_not_resent() {
    use sqlx::Connection;
    let sink = SmtpSink::start(Behaviour::Slow(Duration::from_millis(1000)));
    let mut app = TestApp::new(
        Some(&sink),
        "sending_lease = \"6s\"\njob_timeout = \"5s\"\n",
    )
    .await;
    // The daemon gives up waiting for a busy SQLite file after 200 ms; it reaches PostgreSQL
    // through a relay the test can cut (the test keeps its own direct connection).
    app.settings.database.busy_timeout = Duration::from_millis(200);
    let proxy = match backend() {
        Backend::Sqlite => None,
        Backend::Postgres => Some(app.reach_postgres_through_proxy().await),
    };
    app.event("S1", "ready", None).await;
    app.start("w-unrecorded");
    assert!(
        eventually(WAIT, || sink.data_starts() == 1).await,
        "mail in flight"
    );
    // While the server takes the mail, the database becomes unavailable to the daemon: a
    // writer holds SQLite's lock, or the network to PostgreSQL is cut.
    let writer = match &proxy {
        Some(proxy) => {
            proxy.cut();
            None
        }
        None => {
            let mut c = sqlx::SqliteConnection::connect(&app.settings.database.url)
                .await
                .unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut c)
                .await
                .unwrap();
            Some(c)
        }
    };
    assert!(eventually(WAIT, || sink.received().len() == 1).await);
    // Long enough for several failed tries to record it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    match (&proxy, writer) {
        (Some(proxy), _) => proxy.restore(),
        (None, Some(mut c)) => {
            sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        }
        (None, None) => unreachable!("one of the two"),
    }
    assert!(
        eventually_async(WAIT, || async {
            app.outbox().await[0].state == OutboxState::Sent
        })
        .await,
        "recorded as sent once the database is back"
    );
    // Past the claim's lease: a mail left unrecorded would have been sent again by now.
    tokio::time::sleep(Duration::from_secs(7)).await;
    app.stop().await;
    assert_eq!(sink.received().len(), 1, "sent once");
    let row = &app.outbox().await[0];
    assert_eq!(row.state, OutboxState::Sent);
    assert_eq!(row.attempts, 1);
}

on_both_backends!(async shutdown_lets_mail_in_flight_finish);
async fn shutdown_lets_mail_in_flight_finish() {
    let sink = SmtpSink::start(Behaviour::Slow(Duration::from_millis(1500)));
    let mut app = TestApp::new(Some(&sink), "").await;
    app.event("S1", "ready", None).await;
    app.start("w-graceful");
    assert!(
        eventually(WAIT, || sink.data_starts() == 1).await,
        "mail in flight"
    );
    app.stop().await;
    assert_eq!(sink.received().len(), 1, "the mail in flight was finished");
    let row = &app.outbox().await[0];
    assert_eq!(row.state, OutboxState::Sent, "and recorded as sent");
}

on_both_backends!(async the_file_transport_writes_one_eml_per_mail);
async fn the_file_transport_writes_one_eml_per_mail() {
    let mut app = TestApp::new(None, "").await;
    app.event("S1", "ready", None).await;
    app.event("S1", "activated", Some(URL)).await;
    app.start("w-file");
    let out = app.dir.path().join("out");
    let count = || {
        std::fs::read_dir(&out)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(eventually(WAIT, || count() == 2).await);
    app.stop().await;
    assert_eq!(count(), 2);
}

on_both_backends!(async a_server_that_never_answers_times_out_as_a_fault_of_the_relay);
async fn a_server_that_never_answers_times_out_as_a_fault_of_the_relay() {
    // Accepts connections and says nothing: the greeting never comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let mut app = TestApp::new(None, "").await;
    app.settings = renewal_worker::config::Settings::from_toml_overlay(&format!(
        "[database]\nurl = {:?}\n[templates]\ndir = {:?}\n[mail]\ntransport = \"smtp\"\n\
         [mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntimeout = \"500ms\"\n\
         [mail.retry]\nmax_attempts = 2\ninitial_backoff = \"100ms\"\nmax_backoff = \"100ms\"\n\
         [mail.breaker]\nfailures = 2\nprobe_initial = \"100ms\"\nprobe_max = \"200ms\"\n\
         [worker]\npoll_interval = \"100ms\"\n",
        app.settings.database.url,
        templates_dir()
    ))
    .unwrap();
    app.event("S1", "ready", None).await;
    let started = std::time::Instant::now();
    app.start("w-silent");
    assert!(
        eventually_async(WAIT, || async {
            !app.store.relay_breakers().await.unwrap().is_empty()
        })
        .await,
        "the breaker opened after the timeouts"
    );
    // Two timeouts of 500 ms each, not the default 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "timed out promptly"
    );
    let down = app.store.relay_breakers().await.unwrap();
    assert!(down[0].last_error.is_some(), "{down:?}");
    app.stop().await;
    let row = &app.outbox().await[0];
    assert_eq!((row.state, row.attempts), (OutboxState::Pending, 0));
    assert!(app.store.attempts(row.id).await.unwrap().is_empty());
}

/// Runs the daemon as `worker` until the sink has `n` mails (within `limit`), lets it settle,
/// stops it, and checks that no mail came more than once in all.
async fn run_until_each_arrived_once(
    app: &mut TestApp,
    sink: &SmtpSink,
    worker: &str,
    n: usize,
    limit: Duration,
) {
    app.start(worker);
    assert!(eventually(limit, || sink.received().len() >= n).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.stop().await;
    assert_eq!(sink.received().len(), n, "each mail once");
}

/// The send job of outbox row `id`, as operators see it.
async fn mail_job(app: &TestApp, id: i64) -> renewal_worker::store::JobRow {
    app.store
        .job(&format!("send:{id}"), app.settings.mail.retry.max_attempts)
        .await
        .unwrap()
        .expect("every mail is a send job")
}

/// The outbox row of synthetic subscription `i`'s `ready` mail.
async fn ready_row(app: &TestApp, i: u64) -> renewal_worker::store::OutboxRow {
    app.store
        .outbox_by_key(&format!("BENCH-{i:08}/ready"))
        .await
        .unwrap()
        .expect("owed")
}

on_both_backends!(async a_batch_takes_the_mails_due_soonest_first_and_the_rest_wait);
async fn a_batch_takes_the_mails_due_soonest_first_and_the_rest_wait() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let mut app = TestApp::new(Some(&sink), "send_batch = 4\nconcurrency = 2\n").await;
    add_synthetic_subscriptions(&app, 10).await;
    for i in 0..10 {
        owe_ready(&app.store, &app.settings, i).await;
    }
    let d = app.deliverer(app.clock.clone());
    let taken = d.deliver_due(4).await.unwrap();
    assert_eq!(taken.len(), 4, "a full batch: {taken:?}");
    for (i, (id, delivery)) in (0..).zip(&taken) {
        assert_eq!(
            ready_row(&app, i).await.id,
            *id,
            "in the order they became due"
        );
        assert_eq!(*delivery, renewal_worker::outbox::Delivery::Sent);
    }
    assert_eq!(sink.received().len(), 4);
    for i in 0..10 {
        let row = ready_row(&app, i).await;
        let job = mail_job(&app, row.id).await;
        if i < 4 {
            assert_eq!(row.state, OutboxState::Sent, "{row:?}");
            assert_eq!(row.attempts, 1);
            assert_eq!(app.store.attempts(row.id).await.unwrap().len(), 1);
            assert_eq!(job.status, "done", "mail {i}: {job:?}");
        } else {
            assert_eq!(row.state, OutboxState::Pending, "{row:?}");
            assert_eq!(job.status, "pending", "mail {i}: {job:?}");
        }
    }
    // Mail owed is a row, not a queue job.
    let queue = app.store.jobs(None, 100, 8).await.unwrap();
    assert_eq!(queue.len(), 10, "{queue:?}");
    assert!(
        queue
            .iter()
            .all(|j| j.queue == renewal_worker::jobs::SEND_QUEUE)
    );

    // The daemon sends the rest, each once.
    run_until_each_arrived_once(&mut app, &sink, "w-batch", 10, WAIT).await;
    let ids: std::collections::BTreeSet<String> =
        sink.received().iter().map(|m| m.message_id()).collect();
    assert_eq!(ids.len(), 10);
    assert!(
        app.outbox()
            .await
            .iter()
            .all(|o| o.state == OutboxState::Sent && o.attempts == 1)
    );
}

on_both_backends!(async a_batch_records_each_mail_by_its_own_outcome);
async fn a_batch_records_each_mail_by_its_own_outcome() {
    // One send at a time, so the server's two refusals fall on the batch's first two mails.
    let sink = SmtpSink::start(Behaviour::TempFailFirst(2));
    let app = TestApp::new(Some(&sink), "send_batch = 4\nconcurrency = 1\n").await;
    add_synthetic_subscriptions(&app, 4).await;
    for i in 0..4 {
        owe_ready(&app.store, &app.settings, i).await;
    }
    let d = app.deliverer(app.clock.clone());
    let taken = d.deliver_due(4).await.unwrap();
    assert_eq!(taken.len(), 4, "{taken:?}");
    for (i, (id, delivery)) in (0..).zip(&taken) {
        let row = ready_row(&app, i).await;
        assert_eq!(row.id, *id, "taken in the order they became due");
        let attempts = app.store.attempts(*id).await.unwrap();
        assert_eq!(attempts.len(), 1, "one record per mail: {attempts:?}");
        assert_eq!(row.attempts, 1);
        let job = mail_job(&app, row.id).await;
        if i < 2 {
            assert!(
                matches!(
                    delivery,
                    renewal_worker::outbox::Delivery::RetryScheduled { .. }
                ),
                "mail {i}: {delivery:?}"
            );
            assert_eq!(row.state, OutboxState::Pending, "{row:?}");
            assert!(row.next_attempt_at > attempts[0].finished_at, "{row:?}");
            assert_eq!(attempts[0].outcome, "transient");
            assert_eq!(attempts[0].smtp_code, Some(451));
            assert_eq!(job.status, "failed", "a retry waits: {job:?}");
        } else {
            assert_eq!(
                *delivery,
                renewal_worker::outbox::Delivery::Sent,
                "mail {i}"
            );
            assert_eq!(row.state, OutboxState::Sent, "{row:?}");
            assert_eq!(attempts[0].outcome, "sent");
            assert!(row.sent_at.is_some());
            assert_eq!(job.status, "done", "{job:?}");
        }
    }
    assert_eq!(sink.received().len(), 2);
    // The retries are not due before their backoff is over: a claim just before the first of
    // them takes nothing.
    let outbox = app.outbox().await;
    let first_retry = outbox
        .iter()
        .filter(|o| o.state == OutboxState::Pending)
        .map(|o| o.next_attempt_at)
        .min()
        .expect("two retries owed");
    let just_before = first_retry - chrono::Duration::milliseconds(1);
    assert!(
        app.store
            .claim_due(4, "early", just_before)
            .await
            .unwrap()
            .is_empty()
    );
}

on_both_backends!(async a_batch_out_of_time_gives_its_unsent_mails_back_uncounted);
async fn a_batch_out_of_time_gives_its_unsent_mails_back_uncounted() {
    // One send at a time, each taking 1.5 s; a batch may start sends for 1 s (half the job
    // timeout): the first mail goes, the other four are given back.
    let sink = SmtpSink::start(Behaviour::Slow(Duration::from_millis(1500)));
    let mut app = TestApp::new(
        Some(&sink),
        "send_batch = 5\nconcurrency = 1\njob_timeout = \"2s\"\nsending_lease = \"10s\"\n",
    )
    .await;
    add_synthetic_subscriptions(&app, 5).await;
    for i in 0..5 {
        owe_ready(&app.store, &app.settings, i).await;
    }
    let first = ready_row(&app, 0).await;
    let d = app.deliverer(app.clock.clone());
    let taken = d.deliver_due(5).await.unwrap();
    use renewal_worker::outbox::Delivery;
    assert_eq!(taken[0], (first.id, Delivery::Sent));
    assert_eq!(taken.len(), 5);
    assert!(
        taken[1..].iter().all(|(_, d)| *d == Delivery::Released),
        "{taken:?}"
    );
    assert_eq!(sink.received().len(), 1);
    for i in 1..5 {
        let row = ready_row(&app, i).await;
        assert_eq!(row.state, OutboxState::Pending, "{row:?}");
        assert_eq!(row.attempts, 0, "no attempt counted: {row:?}");
        assert!(app.store.attempts(row.id).await.unwrap().is_empty());
        assert_eq!(mail_job(&app, row.id).await.status, "pending");
    }

    run_until_each_arrived_once(&mut app, &sink, "w-slow-batch", 5, Duration::from_secs(30)).await;
    assert!(
        app.outbox()
            .await
            .iter()
            .all(|o| o.state == OutboxState::Sent && o.attempts == 1)
    );
}

on_both_backends!(async mail_claimed_by_another_is_left_to_it);
async fn mail_claimed_by_another_is_left_to_it() {
    let sink = SmtpSink::start(Behaviour::Accept);
    let app = TestApp::new(Some(&sink), "send_batch = 4\nconcurrency = 2\n").await;
    add_synthetic_subscriptions(&app, 6).await;
    for i in 0..6 {
        owe_ready(&app.store, &app.settings, i).await;
    }
    // The first mail due is with another daemon, mid-send.
    let elsewhere = app
        .store
        .claim_due(1, "elsewhere", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(elsewhere[0].row.id, ready_row(&app, 0).await.id);
    let d = app.deliverer(app.clock.clone());
    let first = d.deliver_due(4).await.unwrap();
    let second = d.deliver_due(4).await.unwrap();
    assert!(d.deliver_due(4).await.unwrap().is_empty(), "none left");
    let mut expected = Vec::new();
    for i in 1..6 {
        expected.push(ready_row(&app, i).await.id);
    }
    let taken: Vec<i64> = first.iter().chain(&second).map(|(id, _)| *id).collect();
    assert_eq!(first.len(), 4, "a full batch first: {first:?}");
    assert_eq!(taken, expected, "in the order they became due");
    assert!(
        first
            .iter()
            .chain(&second)
            .all(|(_, d)| *d == renewal_worker::outbox::Delivery::Sent)
    );
    assert_eq!(sink.received().len(), 5);
    let row = ready_row(&app, 0).await;
    assert_eq!(row.state, OutboxState::Sending);
    assert_eq!(row.claimed_by.as_deref(), Some("elsewhere"));
}

on_both_backends!(async a_lane_goes_on_while_its_batches_come_full);
async fn a_lane_goes_on_while_its_batches_come_full() {
    const MAILS: u64 = 40;
    let sink = SmtpSink::start(Behaviour::Accept);
    // Lanes look for mail recorded elsewhere only every 30 s: a lane that stopped after a
    // full batch would leave most of the 40 for half a minute.
    let mut app = TestApp::new(Some(&sink), "send_batch = 4\nconcurrency = 1\n").await;
    app.settings.worker.poll_interval = Duration::from_secs(30);
    add_synthetic_subscriptions(&app, MAILS).await;
    for i in 0..MAILS {
        owe_ready(&app.store, &app.settings, i).await;
    }
    run_until_each_arrived_once(&mut app, &sink, "w-goes-on", MAILS as usize, WAIT).await;
    let ids: std::collections::BTreeSet<String> =
        sink.received().iter().map(|m| m.message_id()).collect();
    assert_eq!(ids.len() as u64, MAILS);
    for i in 0..MAILS {
        let row = ready_row(&app, i).await;
        assert_eq!(row.state, OutboxState::Sent, "{row:?}");
        assert_eq!(mail_job(&app, row.id).await.status, "done");
    }
}

on_both_backends!(async on_shutdown_a_lane_finishes_its_batch_and_takes_no_more);
async fn on_shutdown_a_lane_finishes_its_batch_and_takes_no_more() {
    const MAILS: u64 = 40;
    // One mail at a time, 300 ms each: a batch of 4 takes over a second, all 40 twelve.
    let sink = SmtpSink::start(Behaviour::Slow(Duration::from_millis(300)));
    let mut app = TestApp::new(Some(&sink), "send_batch = 4\nconcurrency = 1\n").await;
    add_synthetic_subscriptions(&app, MAILS).await;
    for i in 0..MAILS {
        owe_ready(&app.store, &app.settings, i).await;
    }
    app.start("w-stops");
    assert!(
        eventually(WAIT, || sink.data_starts() >= 1).await,
        "sending"
    );
    app.stop().await;
    let sent = sink.received().len() as u64;
    // One lane for the one send slot, and two more on SQLite, four on PostgreSQL.
    let lanes = match backend() {
        Backend::Sqlite => 3,
        Backend::Postgres => 5,
    };
    assert!(
        (1..=lanes * 4).contains(&sent),
        "the batches in hand ({lanes} lanes, four mails each) and no more: {sent} sent"
    );
    let outbox = app.outbox().await;
    let recorded = outbox
        .iter()
        .filter(|o| o.state == OutboxState::Sent)
        .count() as u64;
    assert_eq!(recorded, sent, "every mail sent is recorded");
    assert!(
        outbox
            .iter()
            .all(|o| matches!(o.state, OutboxState::Sent | OutboxState::Pending)),
        "none left claimed"
    );
}

// Right after a burst of owed mail the planner's statistics (none yet, on a fresh database)
// say few rows are owed; a batch's claim must still walk the owed index in order and stop at
// its limit, then probe the ids it found, rather than read and sort every owed row
// (milliseconds per batch at 10,000 owed). Half the burst is owed at one instant, as a poll
// owes all its mail: those too must come out of the index in id order, not be read and sorted.
on_both_backends!(async a_batch_claim_walks_the_owed_index_right_after_a_burst_of_owed_mail);
async fn a_batch_claim_walks_the_owed_index_right_after_a_burst_of_owed_mail() {
    let app = TestApp::new(None, "").await;
    add_synthetic_subscriptions(&app, 2_000).await;
    let poll_instant = chrono::Utc::now();
    for i in 0..2_000 {
        let at = if i % 2 == 0 {
            poll_instant
        } else {
            chrono::Utc::now()
        };
        owe_ready_at(&app.store, &app.settings, i, at).await;
    }
    let claim = crate::explain::claim(&app.settings.database.url, 32)
        .await
        .unwrap();
    match backend() {
        Backend::Sqlite => {
            assert!(claim.contains("INDEX outbox_owed"), "{claim}");
            assert!(claim.contains("USING INTEGER PRIMARY KEY"), "{claim}");
            assert!(!claim.contains("TEMP B-TREE"), "{claim}");
        }
        Backend::Postgres => {
            assert!(claim.contains("using outbox_owed"), "{claim}");
            // The ids found are probed (a bitmap or plain index scan of the primary key).
            assert!(claim.contains("on outbox_pkey"), "{claim}");
            assert!(!claim.contains("Seq Scan on outbox"), "{claim}");
            // Nothing sorted: the index gives the ids of one instant in order too.
            assert!(!claim.contains("Sort"), "{claim}");
        }
    }
}

// The record of a batch of mail sent, right after such a burst, must find its rows through
// the primary key, not read the outbox whole. PostgreSQL reads a table of a few thousand rows
// whole, and rightly (a few hundred µs); at 10,000 a join by id alone was still read and
// hashed whole (2.5-3.2 ms per batch instead of 0.6-1.0).
on_both_backends!(async a_batch_record_probes_the_primary_key_right_after_a_burst_of_owed_mail);
async fn a_batch_record_probes_the_primary_key_right_after_a_burst_of_owed_mail() {
    const OWED: u64 = 10_000;
    const LANES: u64 = 8;
    let app = TestApp::new(None, "").await;
    add_synthetic_subscriptions(&app, OWED).await;
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let (store, settings) = (app.store.clone(), app.settings.clone());
        lanes.spawn(async move {
            for i in (lane..OWED).step_by(LANES as usize) {
                owe_ready(&store, &settings, i).await;
            }
        });
    }
    lanes.join_all().await;
    let record = crate::explain::mark_sent(&app.settings.database.url, 32)
        .await
        .unwrap();
    match backend() {
        Backend::Sqlite => {
            assert!(record.contains("USING INTEGER PRIMARY KEY"), "{record}");
            assert!(!record.contains("SCAN outbox"), "{record}");
        }
        Backend::Postgres => {
            assert!(record.contains("on outbox_pkey"), "{record}");
            assert!(!record.contains("Seq Scan on outbox"), "{record}");
        }
    }
    // The daemon's recorder keeps one generic plan for every batch: it must probe too.
    if let Some(generic) = crate::explain::mark_sent_on_record_line(&app.settings.database.url, 32)
        .await
        .unwrap()
    {
        assert!(generic.contains("on outbox_pkey"), "{generic}");
        assert!(!generic.contains("Seq Scan on outbox"), "{generic}");
        // A generic plan: the ids stay a parameter.
        assert!(generic.contains("$1"), "{generic}");
    }
}

// An idle lane sleeps until the next owed mail is due or `worker.poll_interval` (here half a
// minute) passes; mail its own process records wakes it, and so does a retry coming due.
on_both_backends!(async an_idle_lane_wakes_for_mail_its_process_owes_and_for_a_retry_coming_due);
async fn an_idle_lane_wakes_for_mail_its_process_owes_and_for_a_retry_coming_due() {
    let sink = SmtpSink::start(Behaviour::TempFailFirst(1));
    let mut app = TestApp::new(Some(&sink), "").await;
    app.settings.worker.poll_interval = Duration::from_secs(30);
    app.settings.worker.redrive_interval = Duration::from_secs(30);
    app.start_sharing_store("w-wakes");
    // Every lane has looked, found nothing owed, and gone to sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = std::time::Instant::now();
    app.event("S1", "ready", None).await;
    assert!(
        eventually(Duration::from_secs(10), || sink.received().len() == 1).await,
        "sent without waiting for the poll interval"
    );
    let took = t.elapsed();
    app.stop().await;
    // Refused once (451), retried after its 200 ms backoff (jittered down to at least half).
    assert_eq!(sink.rcpt_refusals(), 1);
    assert!(took < Duration::from_secs(10), "{took:?}");
    let row = &app.outbox().await[0];
    assert_eq!(row.state, OutboxState::Sent);
    assert_eq!(row.attempts, 2);
}

// A send whose claim was lost (its lease ran out and another took the mail) is kept as an
// attempt of its own; the send that counts is recorded on the mail's row.
on_both_backends!(async a_send_whose_claim_was_lost_is_kept_as_an_attempt_only);
async fn a_send_whose_claim_was_lost_is_kept_as_an_attempt_only() {
    use renewal_worker::store::{AttemptOutcome, FinishedAttempt};
    let app = TestApp::new(None, "").await;
    let EventOutcome::Queued { outbox_id, .. } = app.event("S1", "ready", None).await else {
        panic!("queued")
    };
    let t0 = chrono::Utc::now();
    let first = app.store.claim_due(1, "slow", t0).await.unwrap();
    assert_eq!(first.len(), 1);
    // Its lease runs out; another worker takes the mail for attempt 2.
    let later = t0 + chrono::Duration::minutes(10);
    let expired = app
        .store
        .expire_claims(later, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(expired, 1);
    let second = app.store.claim_due(1, "quick", later).await.unwrap();
    assert_eq!(second[0].row.attempts, 2);
    let sent = |worker: &str, attempt, at| FinishedAttempt {
        outbox_id,
        attempt,
        worker: worker.into(),
        started_at: at,
        finished_at: at + chrono::Duration::seconds(1),
        outcome: AttemptOutcome::Sent,
    };
    // The slow one's send ends now: its claim is gone.
    assert_eq!(
        app.store
            .finish_attempts(&[sent("slow", 1, t0)])
            .await
            .unwrap(),
        [false]
    );
    assert_eq!(
        app.store
            .finish_attempts(&[sent("quick", 2, later)])
            .await
            .unwrap(),
        [true]
    );
    let row = app.store.outbox_by_id(outbox_id).await.unwrap().unwrap();
    assert_eq!(row.state, OutboxState::Sent);
    let attempts = app.store.attempts(outbox_id).await.unwrap();
    let seen: Vec<(u32, &str, &str)> = attempts
        .iter()
        .map(|a| (a.attempt, a.worker.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(seen, [(1, "slow", "sent"), (2, "quick", "sent")]);
    assert_eq!(
        attempts[1].started_at.timestamp_millis(),
        later.timestamp_millis()
    );
    assert_eq!(
        attempts[1].finished_at.timestamp_millis(),
        (later + chrono::Duration::seconds(1)).timestamp_millis()
    );
}

// Mail was once queued as one apalis job per mail; such jobs left in a database from then
// would wait forever, and are removed when the schema is brought up to date.
on_both_backends!(async send_jobs_of_an_older_version_are_removed_with_the_schema_update);
async fn send_jobs_of_an_older_version_are_removed_with_the_schema_update() {
    use sqlx::Connection;
    let app = TestApp::new(None, "").await;
    let old = renewal_worker::store::QueuedJob {
        queue: renewal_worker::jobs::SEND_QUEUE,
        args: serde_json::json!({"outbox_id": 1, "attempts": 0}),
        idempotency_key: "send:1:0".into(),
        run_after: Duration::ZERO,
        max_attempts: 5,
    };
    app.store.enqueue_job(&old).await.unwrap();
    app.store
        .enqueue_job(&renewal_worker::jobs::poll_job("test"))
        .await
        .unwrap();
    let now = chrono::Utc::now() + chrono::Duration::seconds(2);
    assert_eq!(app.store.queue_stats(now).await.unwrap().pending_jobs, 2);
    // As a database of the older release: the migration that removes them not yet applied.
    let forget = "DELETE FROM _sqlx_migrations WHERE version = 20261207000001";
    let url = &app.settings.database.url;
    let removed = match backend() {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(forget)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(forget)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected()
        }
    };
    assert_eq!(removed, 1, "the migration was applied once");
    app.store.migrate().await.unwrap();
    assert_eq!(
        app.store.queue_stats(now).await.unwrap().pending_jobs,
        1,
        "the poll job stays"
    );
    // Once: a later start finds nothing to do.
    app.store.migrate().await.unwrap();
    assert_eq!(app.store.queue_stats(now).await.unwrap().pending_jobs, 1);
}
