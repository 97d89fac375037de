//! The operator's console, over a real socket and in a real headless Chromium (Debian's
//! `chromium` and `chromium-driver`, driven through WebDriver): signing in, a dead mail's
//! attempts and its retry, bulk retry of a filter, pausing, CSRF and the read-only token,
//! and a customer's name that is markup staying text.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use renewal_worker::clock::SystemClock;
use renewal_worker::http::{HttpState, serve};
use renewal_worker::outbox::Deliverer;
use renewal_worker::store::{AuditEntry, OutboxState, RelayRecord};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};

use crate::helpers::*;

const TOKEN: &str = "console-token-0123456789";
const READ_ONLY: &str = "console-reader-0123456789";
const NAME: &str = "<script>alert(1)</script>";

/// A worker whose mail to S1 and to 50 synthetic subscriptions failed for good (the relay
/// refused the recipients), a daemon on an accepting relay, and the HTTP server with the
/// console.
struct Setup {
    app: TestApp,
    sink: SmtpSink,
    base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Setup {
    async fn start(synthetic: u64) -> Self {
        let sink = SmtpSink::start(Behaviour::Accept);
        let refusing = SmtpSink::start(Behaviour::RejectRecipients);
        let extra = format!("[http]\ntoken = \"{TOKEN}\"\nread_only_token = \"{READ_ONLY}\"\n");
        let mut app = TestApp::new(Some(&sink), &extra).await;
        // A template that tries to run script: the preview must not run it.
        let templates = app.dir.path().join("templates");
        copy_dir(&templates_dir(), &templates);
        let body = templates.join("ready/body.html.hbs");
        let html = std::fs::read_to_string(&body).unwrap();
        std::fs::write(&body, format!("{html}\n<script>alert(2)</script>\n")).unwrap();
        app.settings.templates.dir = templates;
        app.import(&format!(
            r#"{{"customers": [{{"id": "C1", "reseller_id": "R1", "name": {NAME:?},
                 "email": "it@globex.example"}}]}}"#
        ))
        .await;
        add_synthetic_subscriptions(&app, synthetic).await;
        app.event("S1", "ready", None).await;
        for i in 0..synthetic {
            owe_ready(&app.store, &app.settings, i).await;
        }
        // Every mail owed now fails for good against the refusing relay.
        let mut refused = app.settings.clone();
        refused.mail.smtp.port = refusing.port;
        let clock: renewal_worker::clock::SharedClock = Arc::new(SystemClock);
        let d = Deliverer::build(
            Arc::new(refused),
            app.store.clone(),
            clock.clone(),
            "w".into(),
        )
        .unwrap();
        while !d.deliver_due(100).await.unwrap().is_empty() {}
        let failed = app.outbox().await;
        assert!(failed.iter().all(|r| r.state == OutboxState::Failed));
        assert_eq!(failed.len() as u64, synthetic + 1);

        app.start_sharing_store("console-daemon");
        let deliverer = Arc::new(app.deliverer(clock));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::new(HttpState::new(deliverer, TOKEN));
        tokio::spawn(serve(listener, state, 65536, async {
            let _ = rx.await;
        }));
        Self {
            app,
            sink,
            base,
            _stop: tx,
        }
    }

    async fn s1_mail(&self) -> renewal_worker::store::OutboxRow {
        self.app
            .store
            .outbox_by_key("S1/ready")
            .await
            .unwrap()
            .expect("S1's mail")
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

// ------------------------------------------------------------------ plain HTTP

const FORM: &str = "application/x-www-form-urlencoded";

fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn client() -> reqwest::Client {
    renewal_worker::install_tls_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn sign_in(base: &str, token: &str) -> (StatusCode, Option<String>, String) {
    let r = client()
        .post(format!("{base}/ui/login"))
        .header("content-type", FORM)
        .body(encode(&[("name", "tester"), ("token", token)]))
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    let location = r
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status(), cookie, location)
}

/// The cookie pair (`name=value`) of a Set-Cookie header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn csrf_of(base: &str, cookie: &str) -> String {
    let page = client()
        .get(format!("{base}/ui/"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

on_both_backends!(async forms_need_the_session_csrf_token_and_the_operator_token);
async fn forms_need_the_session_csrf_token_and_the_operator_token() {
    let s = Setup::start(0).await;
    let base = &s.base;
    let store = &s.app.store;

    // Not signed in: to the sign-in page. A wrong token: refused, no cookie.
    let r = client().get(format!("{base}/ui/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/ui/login");
    let (status, cookie, location) = sign_in(base, "console-token-012345678X").await;
    assert_eq!(
        (status, cookie, location.as_str()),
        (StatusCode::SEE_OTHER, None, "/ui/login?failed")
    );

    // The session cookie is HttpOnly and SameSite=Strict; pages carry the strict policy.
    let (_, cookie, _) = sign_in(base, TOKEN).await;
    let cookie = cookie.expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = pair(&cookie);
    let r = client()
        .get(format!("{base}/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // A form posted without its CSRF token, or with another session's, changes nothing.
    let id = s.s1_mail().await.id;
    let (_, other, _) = sign_in(base, TOKEN).await;
    let other_csrf = csrf_of(base, &pair(&other.unwrap())).await;
    for form in [vec![], vec![("csrf", other_csrf.as_str())]] {
        let r = client()
            .post(format!("{base}/ui/mails/{id}/retry"))
            .header("cookie", &cookie)
            .header("content-type", FORM)
            .body(encode(&form))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{:?}", r.headers());
        assert!(r.text().await.unwrap().contains("csrf"));
    }
    assert_eq!(s.s1_mail().await.state, OutboxState::Failed);
    assert!(store.audit(None, 10).await.unwrap().is_empty());

    // The read-only token sees the mail but may not retry it, even with its CSRF token.
    let (_, ro, _) = sign_in(base, READ_ONLY).await;
    let ro = pair(&ro.expect("a read-only session"));
    let page = client()
        .get(format!("{base}/ui/mails/{id}"))
        .header("cookie", &ro)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("S1/ready") && !page.contains("Retry now"));
    let ro_csrf = csrf_of(base, &ro).await;
    let r = client()
        .post(format!("{base}/ui/mails/{id}/retry"))
        .header("cookie", &ro)
        .header("content-type", FORM)
        .body(encode(&[("csrf", ro_csrf.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.s1_mail().await.state, OutboxState::Failed);

    // With its token, the operator's retry goes through, audited under the name given.
    let csrf = csrf_of(base, &cookie).await;
    let r = client()
        .post(format!("{base}/ui/mails/{id}/retry"))
        .header("cookie", &cookie)
        .header("content-type", FORM)
        .body(encode(&[("csrf", csrf.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let audit = store.audit(None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].entry.who.as_str(), audit[0].entry.action.as_str()),
        ("tester (console)", "retry mail")
    );
    assert!(
        eventually(Duration::from_secs(10), || s.sink.received().len() == 1).await,
        "the retried mail is sent"
    );

    // The preview is served under a sandboxing policy of its own.
    let r = client()
        .get(format!("{base}/ui/mails/{id}/preview"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let csp = r.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.starts_with("sandbox;") && !csp.contains("script-src"),
        "{csp}"
    );

    // The API's switch: bearer token, audited.
    let r = client()
        .post(format!("{base}/sending/pause"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(store.sending_paused().await.unwrap());
    assert_eq!(
        store.audit(None, 1).await.unwrap()[0].entry.action,
        "pause sending"
    );
    let r = client()
        .post(format!("{base}/sending/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(store.sending_paused().await.unwrap());
    let mut s = s;
    s.app.stop().await;
}

async fn page(base: &str, cookie: &str, path: &str) -> (StatusCode, String) {
    let r = client()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

on_both_backends!(async the_overview_shows_daemons_the_next_poll_and_a_relay_refusing_mail);
async fn the_overview_shows_daemons_the_next_poll_and_a_relay_refusing_mail() {
    let s = Setup::start(0).await;
    let base = &s.base;
    let (_, cookie, _) = sign_in(base, TOKEN).await;
    let cookie = pair(&cookie.expect("a session cookie"));

    // The running daemon, by the heartbeat row it wrote at start; the poll's next time.
    let mut overview = String::new();
    for _ in 0..100 {
        overview = page(base, &cookie, "/ui/").await.1;
        if overview.contains("<td>console-daemon</td>") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(overview.contains("<td>console-daemon</td>"), "{overview}");
    assert!(overview.contains(env!("CARGO_PKG_VERSION")), "its version");
    let next = s
        .app
        .settings
        .poll
        .schedule
        .after(&chrono::Utc::now())
        .next()
        .unwrap();
    assert!(
        overview.contains(&format!("Next poll: {}", next.format("%Y-%m-%d"))),
        "{overview}"
    );
    assert!(!overview.contains("refuses mail"));

    // A daemon whose relay refuses connections: an alarm naming the relay and the fault.
    s.app
        .store
        .record_relay_breaker(&RelayRecord {
            daemon: "other-daemon".into(),
            relay: "smtp.example.net:587 (starttls)".into(),
            state: "down".into(),
            down_since: chrono::Utc::now() - chrono::Duration::minutes(20),
            probes_failed: 3,
            last_error: Some("connection refused".into()),
            updated_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let overview = page(base, &cookie, "/ui/").await.1;
    assert!(
        overview.contains("The relay smtp.example.net:587 (starttls) refuses mail")
            && overview.contains("3 probe(s) failed, last: connection refused"),
        "{overview}"
    );

    // A subscription's page: its timeline, its mail, the customer's name as text; an unknown
    // id is 404 and an id that is no id is 400, each naming it.
    let (status, sub) = page(base, &cookie, "/ui/subscriptions/S1").await;
    assert_eq!(status, StatusCode::OK);
    for part in [
        "Cutoff",
        "Reminders",
        "S1/ready",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
    ] {
        assert!(sub.contains(part), "{part} in {sub}");
    }
    assert!(!sub.contains(NAME));
    let (status, body) = page(base, &cookie, "/ui/subscriptions/S404").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("no subscription with id &quot;S404&quot;"),
        "{body}"
    );
    let (status, body) = page(base, &cookie, "/ui/subscriptions/S1%0d%0a").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("subscription id"), "{body}");
    let mut s = s;
    s.app.stop().await;
}

// ------------------------------------------------------------------ the browser

/// chromedriver on a free port, stopped with the test.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromium() -> (Driver, Client) {
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "chromedriver must be installed for the console's browser tests \
             (apt-get install -y chromium chromium-driver)",
        );
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1280,1000"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    for _ in 0..100 {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(c) => return (driver, c),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver did not start a Chromium session within 10 s");
}

async fn shot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    let backend = format!("{:?}", backend()).to_lowercase();
    std::fs::write(dir.join(format!("{backend}-{name}.png")), png).unwrap();
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    // Waits: a click that submits a form may return before the next page is in, and a live
    // fragment may be replaced between finding an element and reading it.
    let mut last = None;
    for _ in 0..5 {
        let found = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap();
        match found.text().await {
            Ok(text) => return text,
            Err(e) => last = Some(e),
        }
    }
    panic!("{css}: {last:?}")
}

async fn no_alert(c: &Client) {
    assert!(
        c.get_alert_text().await.is_err(),
        "a script ran and opened an alert"
    );
}

on_both_backends!(async an_operator_finds_a_dead_mail_and_retries_it_in_a_browser);
async fn an_operator_finds_a_dead_mail_and_retries_it_in_a_browser() {
    let s = Setup::start(50).await;
    let (_driver, c) = chromium().await;
    let base = &s.base;

    // A wrong token is refused.
    c.goto(&format!("{base}/ui/")).await.unwrap();
    let form = c.form(Locator::Css("form")).await.unwrap();
    form.set_by_name("name", "Ann").await.unwrap();
    form.set_by_name("token", "not-the-token-0123456789")
        .await
        .unwrap();
    click(&c, "sign-in").await;
    assert!(text_of(&c, "#login-error").await.contains("not accepted"));

    // Sign in; the overview shows the dead mail.
    let form = c.form(Locator::Css("form")).await.unwrap();
    form.set_by_name("name", "Ann").await.unwrap();
    form.set_by_name("token", TOKEN).await.unwrap();
    click(&c, "sign-in").await;
    assert!(text_of(&c, "#alarms").await.contains("51 dead mail(s)"));
    shot(&c, "overview").await;

    // The pause form posted without its CSRF token is refused and changes nothing.
    c.execute(
        "document.querySelector('#pause').form.querySelector('input[name=csrf]').remove()",
        vec![],
    )
    .await
    .unwrap();
    click(&c, "pause").await;
    assert!(text_of(&c, "main").await.contains("csrf"));
    assert!(!s.app.store.sending_paused().await.unwrap());
    c.goto(&format!("{base}/ui/")).await.unwrap();

    // Pause sending: the banner is on every page.
    click(&c, "pause").await;
    assert!(
        text_of(&c, "#paused")
            .await
            .contains("Sending is paused by Ann (console)")
    );

    // Open the dead mail: its attempt with the server's refusal; the customer's name and the
    // template's script run nowhere.
    let id = s.s1_mail().await.id;
    c.goto(&format!("{base}/ui/mails/{id}")).await.unwrap();
    let attempts = text_of(&c, "#attempts").await;
    assert!(
        attempts.contains("550") && attempts.contains("permanent"),
        "{attempts}"
    );
    let iframe = c.find(Locator::Id("preview")).await.unwrap();
    assert_eq!(iframe.attr("sandbox").await.unwrap().as_deref(), Some(""));
    tokio::time::sleep(Duration::from_millis(300)).await;
    no_alert(&c).await;
    c.find(Locator::Id("preview"))
        .await
        .unwrap()
        .enter_frame()
        .await
        .unwrap();
    let framed = c.source().await.unwrap();
    assert!(
        framed.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the name is text"
    );
    c.enter_parent_frame().await.unwrap();
    shot(&c, "mail").await;

    // Retry, confirmed: owed again, but nothing goes while paused.
    click(&c, "retry").await;
    click(&c, "confirm").await;
    // Failed once already: owed again as a retry.
    assert_eq!(text_of(&c, "#state").await, "retrying");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        s.sink.received().len(),
        0,
        "no mail goes while sending is paused"
    );

    // Resume: it is sent, once.
    click(&c, "resume").await;
    assert!(
        eventually(Duration::from_secs(10), || s.sink.received().len() == 1).await,
        "the retried mail is sent after resuming"
    );
    // The sink has the mail as soon as it is sent; its record commits a moment later.
    let page = format!("{base}/ui/mails/{id}");
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            c.goto(&page).await.unwrap();
            text_of(&c, "#state").await == "sent"
        })
        .await,
        "the retried mail's page says sent"
    );

    // Bulk retry of a filter of 50: the count first, then each sent once.
    c.goto(&format!("{base}/ui/mails?q=state:failed+kind:ready"))
        .await
        .unwrap();
    click(&c, "retry-all").await;
    assert!(
        text_of(&c, "#bulk-count")
            .await
            .starts_with("50 mail(s) match")
    );
    click(&c, "confirm").await;
    assert!(text_of(&c, "#done").await.contains("retry: 50 mail(s)"));
    assert!(
        eventually(Duration::from_secs(20), || s.sink.received().len() == 51).await,
        "the 50 retried mails are sent"
    );
    let mut ids: Vec<String> = s.sink.received().iter().map(|m| m.message_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 51, "each mail once");

    // The subscription's page: its timeline and mail history, the name as text.
    c.goto(&format!("{base}/ui/subscriptions/S1"))
        .await
        .unwrap();
    assert!(text_of(&c, "#timeline").await.contains(NAME));
    assert!(text_of(&c, "#history").await.contains("S1/ready"));
    no_alert(&c).await;
    shot(&c, "subscription").await;

    // The customer's name is text on the renewals page too; the audit tells who did what.
    c.goto(&format!("{base}/ui/renewals?days=60"))
        .await
        .unwrap();
    assert!(text_of(&c, "#renewals").await.contains(NAME));
    no_alert(&c).await;
    shot(&c, "renewals").await;
    c.goto(&format!("{base}/ui/audit")).await.unwrap();
    let audit = text_of(&c, "#audit").await;
    for action in ["pause sending", "retry mail", "resume sending"] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
    assert!(audit.contains("50 mail(s)"), "{audit}");

    // The mails page's counts follow the outbox without a reload, until "live" is unticked.
    let paused = AuditEntry {
        who: "test".into(),
        action: "pause sending".into(),
        target: "sending".into(),
        detail: None,
    };
    s.app
        .store
        .set_sending_paused(true, &paused, chrono::Utc::now())
        .await
        .unwrap();
    c.goto(&format!("{base}/ui/mails")).await.unwrap();
    assert_eq!(text_of(&c, "#count-owed .n").await, "0");
    s.app.event("S1", "order-processed", None).await;
    let mut owed = String::new();
    for _ in 0..100 {
        owed = text_of(&c, "#count-owed .n").await;
        if owed == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(owed, "1", "the count refreshed by itself");
    click(&c, "live").await;
    s.app
        .event("S1", "activated", Some("https://manage.autodesk.com/x"))
        .await;
    let owed_now = s.app.outbox().await;
    let owed_now = owed_now.iter().filter(|r| r.state == OutboxState::Pending);
    assert_eq!(owed_now.count(), 2, "a second mail is owed");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(text_of(&c, "#count-owed .n").await, "1", "not refreshed");
    c.close().await.unwrap();
    let mut s = s;
    s.app.stop().await;
}
