use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailin_embedded::{Handler, Response, Server, response};
use renewal_worker::clock::{SharedClock, SystemClock};
use renewal_worker::config::Settings;
use renewal_worker::domain::{DownloadUrl, ProvisioningEvent, SubscriptionId};
use renewal_worker::import::{self, Known};
use renewal_worker::outbox::Deliverer;
use renewal_worker::service::{self, EventOutcome};
use renewal_worker::store::{OutboxRow, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One message as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

impl Received {
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .expect("a parseable message")
    }
    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }
    pub fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_owned()
    }
    pub fn text(&self) -> String {
        self.parsed().body_text(0).unwrap_or_default().into_owned()
    }
    pub fn html(&self) -> String {
        self.parsed().body_html(0).unwrap_or_default().into_owned()
    }
}

/// How the server answers the end of DATA (or RCPT), message by message.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    Accept,
    /// Answer 451 to the first `n` recipients (greylisting), then accept.
    TempFailFirst(usize),
    /// Refuse every recipient with 550.
    RejectRecipients,
    /// Hold each message this long before accepting (to have mail in flight).
    Slow(Duration),
    /// A relay that caps mails per second, as SES or a smarthost does: a token bucket of
    /// `per_second` with room for `burst`; a recipient above it is answered "421 too many".
    RateCap {
        per_second: u32,
        burst: u32,
    },
}

#[derive(Default)]
struct SinkState {
    /// [`Behaviour::RateCap`]'s bucket: tokens left, and when it was last filled.
    bucket: Option<(f64, std::time::Instant)>,
    throttled: usize,
    received: Vec<Received>,
    data_ends: usize,
    rcpt_refusals: usize,
    rcpts: usize,
    data_starts: usize,
}

#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    state: Arc<Mutex<SinkState>>,
}

#[derive(Clone)]
struct SinkHandler {
    behaviour: Behaviour,
    state: Arc<Mutex<SinkState>>,
    from: String,
    to: Vec<String>,
    buf: Vec<u8>,
}

impl Handler for SinkHandler {
    fn rcpt(&mut self, _to: &str) -> Response {
        let mut s = self.state.lock().unwrap();
        s.rcpts += 1;
        match self.behaviour {
            Behaviour::RejectRecipients => {
                s.rcpt_refusals += 1;
                response::NO_MAILBOX
            }
            Behaviour::TempFailFirst(k) if s.rcpts <= k => {
                s.rcpt_refusals += 1;
                Response::custom(451, "4.7.1 Greylisted, try again later".into())
            }
            Behaviour::RateCap { per_second, burst } => {
                let now = std::time::Instant::now();
                let (tokens, at) = s.bucket.unwrap_or((f64::from(burst), now));
                let tokens = (tokens
                    + now.duration_since(at).as_secs_f64() * f64::from(per_second))
                .min(f64::from(burst));
                if tokens >= 1.0 {
                    s.bucket = Some((tokens - 1.0, now));
                    response::OK
                } else {
                    s.bucket = Some((tokens, now));
                    s.throttled += 1;
                    Response::custom(421, "4.7.0 Too many messages, slow down".into())
                }
            }
            _ => response::OK,
        }
    }
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.buf.clear();
        self.state.lock().unwrap().data_starts += 1;
        response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> Response {
        self.state.lock().unwrap().data_ends += 1;
        // (Refusing at the end of DATA is not simulated: this server would then stay in DATA
        // mode and swallow the client's next commands.)
        if let Behaviour::Slow(d) = self.behaviour {
            std::thread::sleep(d);
        }
        self.state.lock().unwrap().received.push(Received {
            from: self.from.clone(),
            to: self.to.clone(),
            data: std::mem::take(&mut self.buf),
        });
        response::OK
    }
}

impl SmtpSink {
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(SinkState::default()));
        let handler = SinkHandler {
            behaviour,
            state: state.clone(),
            from: String::new(),
            to: Vec::new(),
            buf: Vec::new(),
        };
        std::thread::spawn(move || {
            let mut server = Server::new(handler);
            // One thread per connection: enough for every pooled connection of several workers.
            server
                .with_name("sink.test")
                .with_num_threads(64)
                .with_tcp_listener(listener);
            let _ = server.serve();
        });
        Self { port, state }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
    pub fn data_ends(&self) -> usize {
        self.state.lock().unwrap().data_ends
    }
    pub fn data_starts(&self) -> usize {
        self.state.lock().unwrap().data_starts
    }
    pub fn rcpt_refusals(&self) -> usize {
        self.state.lock().unwrap().rcpt_refusals
    }
    /// Recipients answered "421 too many" ([`Behaviour::RateCap`]).
    pub fn throttled(&self) -> usize {
        self.state.lock().unwrap().throttled
    }
}

pub const FIXTURE: &str = r#"{
  "resellers": [{"id": "R1", "name": "Acme IT", "email": "ops@acme.example",
                 "csn": "5101234567", "timezone": "America/New_York", "calendar": "us"}],
  "customers": [{"id": "C1", "reseller_id": "R1", "name": "Globex", "email": "it@globex.example"},
                {"id": "C2", "reseller_id": "R1", "name": "Initech", "email": "admin@initech.example"}],
  "subscriptions": [
    {"id": "S1", "reseller_id": "R1", "customer_id": "C1",
     "product_id": "057O1-WW6525-L347", "plan": "AutoCAD LT", "billing": "annual_prepaid",
     "seats": 10, "assigned_licenses": 3, "term_start": "2025-12-28",
     "term_end": "2026-12-28", "auto_renew": true, "notify_email": "buyer@acme.example"},
    {"id": "S2", "reseller_id": "R1", "customer_id": "C2",
     "product_id": "057O1WW6525L348", "plan": "Revit", "billing": "monthly_prepaid",
     "seats": 5, "assigned_licenses": 0, "term_start": "2026-01-31",
     "term_end": "2027-01-31", "auto_renew": true}
  ]}"#;

pub fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// A worker environment: its own database file and mail settings pointing at `sink`.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub store: Store,
    pub clock: SharedClock,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// The test's own PostgreSQL database, on that backend (dropped last).
    pub _pg: Option<PgDatabase>,
}

impl TestApp {
    pub async fn new(sink: Option<&SmtpSink>, extra: &str) -> Self {
        // RUST_LOG=renewal_worker=debug shows the worker's logs for a failing test.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let pg = (backend() == Backend::Postgres).then(PgDatabase::create);
        let db_url = match &pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}", dir.path().join("worker.db").display()),
        };
        let transport = match sink {
            Some(s) => format!(
                "transport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntimeout = \"5s\"\n",
                s.port
            ),
            None => format!(
                "transport = \"file\"\nfile_dir = {:?}\n",
                dir.path().join("out")
            ),
        };
        // The daemon's scheduled poll would send due reminders whenever a test runs across a
        // minute boundary; tests that want it set `[poll]` themselves.
        let poll = if extra.contains("[poll]") {
            ""
        } else {
            "[poll]\nschedule = \"0 0 0 1 1 * 2099\"\n"
        };
        let overlay = format!(
            "{poll}[database]\nurl = \"{db_url}\"\n\
             [templates]\ndir = {:?}\n\
             [mail]\n{transport}\
             [mail.retry]\nmax_attempts = 4\ninitial_backoff = \"200ms\"\nmax_backoff = \"1s\"\n\
             [worker]\npoll_interval = \"100ms\"\nredrive_interval = \"500ms\"\nshutdown_grace = \"10s\"\n\
             {extra}",
            templates_dir(),
        );
        let settings = Settings::from_toml_overlay(&overlay).expect("test settings");
        let store = service::open_store(&settings).await.expect("open store");
        let raw = import::parse_json(FIXTURE.as_bytes()).unwrap();
        let checked = import::check(&raw, &Known::default(), &|_| Ok(()), |_| {}).unwrap();
        store
            .upsert_records(
                &checked.resellers,
                &checked.customers,
                &checked.subscriptions,
                chrono::Utc::now(),
                |_| {},
            )
            .await
            .unwrap();
        Self {
            dir,
            settings,
            store,
            clock: Arc::new(SystemClock),
            running: None,
            _pg: pg,
        }
    }

    /// Upserts records as `import` does.
    pub async fn import(&self, json: &str) {
        let raw = import::parse_json(json.as_bytes()).unwrap();
        let mut known = Known::default();
        known.resellers.insert("R1".into());
        known.customers.insert("C1".into(), "R1".into());
        known.customers.insert("C2".into(), "R1".into());
        let checked = import::check(&raw, &known, &|_| Ok(()), |_| {}).unwrap();
        self.store
            .upsert_records(
                &checked.resellers,
                &checked.customers,
                &checked.subscriptions,
                chrono::Utc::now(),
                |_| {},
            )
            .await
            .unwrap();
    }

    /// A worker's services on `clock`, without the queue: poll and drain by hand.
    pub fn deliverer(&self, clock: SharedClock) -> Deliverer {
        Deliverer::build(
            Arc::new(self.settings.clone()),
            self.store.clone(),
            clock,
            "test-worker".into(),
        )
        .expect("deliverer")
    }

    pub async fn event(&self, sub: &str, event: &str, url: Option<&str>) -> EventOutcome {
        service::record_event(
            &self.store,
            &self.settings,
            self.clock.now(),
            &SubscriptionId::parse(sub).unwrap(),
            ProvisioningEvent::parse(event).unwrap(),
            url.map(|u| DownloadUrl::parse(u).unwrap()).as_ref(),
        )
        .await
        .expect("record event")
    }

    /// Points this app's daemon (not the test's own store) at its PostgreSQL database through
    /// a relay the test can cut.
    pub async fn reach_postgres_through_proxy(&mut self) -> TcpProxy {
        let mut url = url::Url::parse(&self.settings.database.url).unwrap();
        let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
        let proxy = TcpProxy::start(target).await;
        url.set_port(Some(proxy.port)).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        self.settings.database.url = url.to_string();
        proxy
    }

    /// Starts the daemon in this process, as `renewal-worker run` would, on a store of its
    /// own (as another process would have).
    pub fn start(&mut self, worker_name: &str) {
        self.start_with(worker_name, None);
    }

    /// [`TestApp::start`] on this app's own store: what the test records there is recorded by
    /// the daemon's process (as its HTTP API or its poll would).
    pub fn start_sharing_store(&mut self, worker_name: &str) {
        self.start_with(worker_name, Some(self.store.clone()));
    }

    fn start_with(&mut self, worker_name: &str, shared: Option<Store>) {
        let (tx, rx) = oneshot::channel::<()>();
        let settings = self.settings.clone();
        let clock = self.clock.clone();
        let name = worker_name.to_owned();
        let handle = tokio::spawn(async move {
            let settings = Arc::new(settings);
            let own = shared.is_none();
            let store = match shared {
                Some(store) => store,
                None => service::open_store(&settings).await.expect("open store"),
            };
            let deliverer =
                Arc::new(Deliverer::build(settings, store, clock, name).expect("deliverer"));
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn({
                let stop = stop.clone();
                async move {
                    let _ = rx.await;
                    stop.cancel();
                }
            });
            renewal_worker::daemon::run_worker(deliverer.clone(), stop)
                .await
                .expect("worker ran");
            if own {
                deliverer.store.close().await;
            }
        });
        self.running = Some((tx, handle));
    }

    /// Graceful stop, as on SIGTERM; returns when the daemon has returned.
    pub async fn stop(&mut self) {
        if let Some((tx, handle)) = self.running.take() {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("daemon stops within 30 s")
                .expect("daemon task did not panic");
        }
    }

    pub async fn outbox(&self) -> Vec<OutboxRow> {
        self.store.outbox_for_subscription(None).await.unwrap()
    }
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, mut cond: F) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// As [`eventually`] for conditions that need the database.
pub async fn eventually_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond().await
}

// ------------------------------------------------------------------ backends

pub use renewal_worker::store::Backend;

tokio::task_local! {
    static BACKEND: Backend;
}

thread_local! {
    /// The database URL of the running synchronous test (for the binaries it starts).
    static CLI_DATABASE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The backend the running test is on.
pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

/// Runs an async test body on `backend`.
pub async fn on_backend<F: std::future::Future<Output = ()>>(backend: Backend, test: F) {
    BACKEND.scope(backend, test).await
}

/// Runs a synchronous test body on `backend`: on PostgreSQL, the binaries it starts through
/// [`cli_database_env`] get a fresh database of their own.
pub fn on_backend_sync(backend: Backend, test: fn()) {
    let db = (backend == Backend::Postgres).then(PgDatabase::create);
    CLI_DATABASE.with(|c| *c.borrow_mut() = db.as_ref().map(|d| d.url.clone()));
    test();
    CLI_DATABASE.with(|c| *c.borrow_mut() = None);
}

/// `RENEWAL_WORKER__DATABASE__URL` for the binaries of a synchronous test, if it is on
/// PostgreSQL (on SQLite they use their working folder's default database file).
pub fn cli_database_env() -> Vec<(String, String)> {
    CLI_DATABASE.with(|c| {
        c.borrow()
            .iter()
            .map(|u| ("RENEWAL_WORKER__DATABASE__URL".to_owned(), u.clone()))
            .collect()
    })
}

/// Where the tests' PostgreSQL server is (the machine's, trust auth), as a URL to its
/// `postgres` database; `RENEWAL_WORKER_TEST_PG` overrides.
pub fn pg_admin_url() -> String {
    std::env::var("RENEWAL_WORKER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh PostgreSQL database for one test, dropped with it. (apalis keeps its queue in a
/// fixed `apalis` schema, so isolation is by database, not by schema.)
pub struct PgDatabase {
    pub url: String,
    name: String,
}

static PG_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl PgDatabase {
    pub fn create() -> Self {
        let n = PG_COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("rw_test_{}_{n}", std::process::id());
        let admin = pg_admin_url();
        let sql = format!("CREATE DATABASE {name}");
        admin_exec(
            &admin,
            &[
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                &sql,
            ],
        );
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        admin_exec(
            &pg_admin_url(),
            &[&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )],
        );
    }
}

/// Runs admin statements on a thread of its own (callers may be inside a runtime or not).
pub fn admin_exec(url: &str, statements: &[&str]) {
    let url = url.to_owned();
    let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
                panic!("PostgreSQL at {url} is needed for the postgres tests: {e}")
            });
            for s in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(s))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            let _ = conn.close().await;
        });
    })
    .join()
    .expect("admin statements ran");
}

/// Defines a test twice, once per backend, as `NAME::sqlite` and `NAME::postgres`, around
/// the body `async fn NAME()` (or `fn NAME()` with `sync`).
macro_rules! on_both_backends {
    (async $name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::helpers::on_backend($crate::helpers::Backend::Sqlite, super::$name()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::helpers::on_backend($crate::helpers::Backend::Postgres, super::$name())
                    .await
            }
        }
    };
    (sync $name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                $crate::helpers::on_backend_sync($crate::helpers::Backend::Sqlite, super::$name)
            }
            #[test]
            fn postgres() {
                $crate::helpers::on_backend_sync($crate::helpers::Backend::Postgres, super::$name)
            }
        }
    };
}

/// A TCP relay in front of a server (the tests' PostgreSQL), which a test can cut, as a
/// network partition or a server restart would: open connections are closed and new ones are
/// closed on accept, until it is restored.
pub struct TcpProxy {
    pub port: u16,
    up: tokio::sync::watch::Sender<bool>,
}

impl TcpProxy {
    pub async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut = rx.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { port, up }
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// A [`TestApp`] on PostgreSQL, for tests that exist only there.
pub async fn postgres_app(sink: &SmtpSink) -> TestApp {
    let mut app = None;
    on_backend(Backend::Postgres, async {
        app = Some(TestApp::new(Some(sink), "").await);
    })
    .await;
    app.expect("app")
}

/// Adds `n` subscriptions `BENCH-00000000`... of R1/C1, none due for renewal work.
pub async fn add_synthetic_subscriptions(app: &TestApp, n: u64) {
    crate::synthetic::insert_synthetic_subscriptions(
        &app.settings.database.url,
        "R1",
        "C1",
        n,
        0,
        chrono::NaiveDate::from_ymd_opt(2026, 1, 10).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2027, 1, 10).unwrap(),
        chrono::DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z")
            .unwrap()
            .to_utc(),
    )
    .await
    .unwrap();
}

/// Records the `ready` event of synthetic subscription `i`: one mail owed.
pub async fn owe_ready(store: &Store, settings: &Settings, i: u64) {
    owe_ready_at(store, settings, i, chrono::Utc::now()).await;
}

/// [`owe_ready`] as recorded at `at`, the instant the mail is owed from.
pub async fn owe_ready_at(
    store: &Store,
    settings: &Settings,
    i: u64,
    at: chrono::DateTime<chrono::Utc>,
) {
    let id = SubscriptionId::parse(&format!("BENCH-{i:08}")).unwrap();
    service::record_event(store, settings, at, &id, ProvisioningEvent::Ready, None)
        .await
        .unwrap();
}
