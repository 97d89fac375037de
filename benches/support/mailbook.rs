//! A book as a marketplace's would look after a couple of months: resellers, customers,
//! subscriptions whose terms end all through the coming year, and an outbox of that many mails
//! (mostly sent, some failed for good with their attempts, some owed, a few being sent), with
//! disable requests, operator audit and queue jobs beside. Generated inside the database, so
//! that a million subscriptions and a million mails take a minute, not an hour. Load for the
//! console benchmark and for the tests of the console's lists.

// Each user takes what it needs of it.
#![allow(dead_code)]

use chrono::{DateTime, NaiveDate, Utc};
use renewal_worker::store::Backend;
use sqlx::Connection;

/// Resellers in the book; subscription `i` belongs to reseller `i % RESELLERS`.
pub const RESELLERS: u64 = 1_000;
/// Customers in the book (each of reseller `c % RESELLERS`); subscription `i` is customer
/// `i % CUSTOMERS`'s.
pub const CUSTOMERS: u64 = 20_000;
/// The recipient of a handful of mails only.
pub const RARE_RECIPIENT: &str = "rare.person@example.org";
/// Mail is owed over this span before the book's instant.
pub const SPAN_DAYS: i64 = 60;
/// Disable requests decided, and operator actions audited.
pub const DISABLE_REQUESTS: u64 = 5_000;
pub const AUDIT_ROWS: u64 = 20_000;

/// The SQL that differs between the backends.
struct Dialect(Backend);

impl Dialect {
    /// A `WITH` clause naming `seq(i)`: the integers `0..n`.
    fn seq(&self, n: u64) -> String {
        match self.0 {
            Backend::Sqlite => format!(
                "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < {n})"
            ),
            Backend::Postgres => {
                format!("WITH seq(i) AS (SELECT generate_series(0::BIGINT, {n} - 1))")
            }
        }
    }

    /// The integer `expr` as text, zero-padded to `width` digits.
    fn pad(&self, expr: &str, width: usize) -> String {
        match self.0 {
            Backend::Sqlite => format!("printf('%0{width}d', {expr})"),
            Backend::Postgres => format!("lpad(({expr})::TEXT, {width}, '0')"),
        }
    }

    /// The date `days` (an integer expression) after `date`.
    fn date_plus(&self, date: NaiveDate, days: &str) -> String {
        match self.0 {
            Backend::Sqlite => format!("date('{date}', printf('%+d days', {days}))"),
            Backend::Postgres => format!("(DATE '{date}' + ({days})::INT)"),
        }
    }
}

/// What the book holds, for pages to ask about.
#[derive(Debug, Clone)]
pub struct Book {
    pub subscriptions: u64,
    pub mails: u64,
    /// The instant the book was made at: mail was owed over the `SPAN_DAYS` before it.
    pub now: DateTime<Utc>,
}

impl Book {
    pub fn subscription(i: u64) -> String {
        format!("BENCH-{i:08}")
    }

    pub fn reseller(i: u64) -> String {
        format!("BR{i:04}")
    }

    /// The subscription mail `i` (0-based; its id is `i + 1`) is about: each of the first
    /// quarter of the book gets four mails, owed about `SPAN_DAYS / 4` apart.
    pub fn subscription_of_mail(&self, i: u64) -> u64 {
        (i * 7919) % (self.subscriptions / 4).max(1)
    }
}

/// Fills the freshly migrated database at `url` with `subscriptions` subscriptions (terms
/// ending from `today` to a year after it) and `mails` mails owed over the `SPAN_DAYS` before
/// `now`, plus their parties, attempts, disable requests and audit.
pub async fn fill(
    url: &str,
    subscriptions: u64,
    mails: u64,
    now: DateTime<Utc>,
) -> Result<Book, sqlx::Error> {
    let backend = Backend::of_url(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    let d = Dialect(backend);
    let book = Book {
        subscriptions,
        mails,
        now,
    };
    let today = now.date_naive();
    let now_ms = now.timestamp_millis();
    // Never renewed by the poll while the benchmark runs.
    let later = "2099-01-01T00:00:00Z"
        .parse::<DateTime<Utc>>()
        .expect("instant")
        .timestamp_millis();
    let mut sql = Vec::new();

    sql.push(format!(
        "{seq} INSERT INTO resellers (id, name, email, csn, timezone, calendar, updated_at)
         SELECT 'BR' || {id}, 'Reseller ' || i, 'ops@reseller' || {id} || '.example', NULL,
           CASE i % 4 WHEN 0 THEN 'America/New_York' WHEN 1 THEN 'Europe/Berlin'
             WHEN 2 THEN 'Asia/Tokyo' ELSE 'UTC' END,
           CASE i % 3 WHEN 0 THEN 'us' WHEN 1 THEN 'de' ELSE 'gb-eng' END, 0
         FROM seq",
        seq = d.seq(RESELLERS),
        id = d.pad("i", 4),
    ));
    sql.push(format!(
        "{seq} INSERT INTO customers (id, reseller_id, name, email, updated_at)
         SELECT 'BC' || {id}, 'BR' || {reseller}, 'Customer ' || i,
           'it@customer' || {id} || '.example', 0
         FROM seq",
        seq = d.seq(CUSTOMERS),
        id = d.pad("i", 5),
        reseller = d.pad(&format!("i % {RESELLERS}"), 4),
    ));
    // Term ends spread over the coming year (about n / 365 a day); one in fifty ended.
    sql.push(format!(
        "{seq} INSERT INTO subscriptions (id, reseller_id, customer_id, product_id, plan,
           billing, seats, assigned_licenses, term_start, term_end, auto_renew, notify_email,
           updated_at, next_due_at, status)
         SELECT 'BENCH-' || {id}, 'BR' || {reseller}, 'BC' || {customer}, '057O1WW6525L347',
           'AutoCAD LT', 'annual_prepaid', 10, i % 11, {start}, {end}, i % 10 <> 0, NULL, 0,
           {later}, CASE WHEN i % 50 = 49 THEN 'ended' ELSE 'active' END
         FROM seq",
        seq = d.seq(subscriptions),
        id = d.pad("i", 8),
        reseller = d.pad(&format!("i % {RESELLERS}"), 4),
        customer = d.pad(&format!("i % {CUSTOMERS}"), 5),
        start = d.date_plus(today, "(i * 37) % 365 - 365"),
        end = d.date_plus(today, "(i * 37) % 365"),
    ));
    // Mail `i` is owed at an even pace over the span, so ids follow time. Its state: the
    // newest 0.2 % owed (five of them being sent), a few of the newest 1 % retrying, one in
    // 397 failed for good, one in 50 skipped, the rest sent a second or two after being owed.
    let n = mails;
    let step = SPAN_DAYS * 86_400_000 / i64::try_from(n.max(1)).unwrap_or(1);
    let quarter = (subscriptions / 4).max(1);
    sql.push(format!(
        "{seq} INSERT INTO outbox (id, key, kind, subscription_id, recipients, payload,
           message_id, state, attempts, next_attempt_at, claimed_by, claimed_at, created_at,
           sent_at, last_error)
         SELECT i + 1, sub || '/' || kind || '/' || i, kind, sub,
           CASE WHEN i % 200000 = 123457 THEN '[\"{RARE_RECIPIENT}\"]'
             WHEN kind = 'order_stalled' THEN '[\"ops@reseller' || {reseller} || '.example\"]'
             WHEN s % 10 = 3 THEN '[\"it@customer' || c || '.example\",\"billing@customer' || c || '.example\"]'
             ELSE '[\"it@customer' || c || '.example\"]' END,
           '{{}}', '<bench.' || i || '@renewal-worker.example>',
           CASE st WHEN 'retrying' THEN 'pending' ELSE st END,
           CASE st WHEN 'pending' THEN 0 WHEN 'skipped' THEN 0 WHEN 'retrying' THEN 1 + i % 2
             WHEN 'failed' THEN 3 ELSE 1 END,
           CASE st WHEN 'retrying' THEN {now_ms} + 600000 ELSE created END,
           CASE st WHEN 'sending' THEN 'bench-daemon' END,
           CASE st WHEN 'sending' THEN {now_ms} END,
           created,
           CASE st WHEN 'sent' THEN created + 1500 + i % 3000 END,
           CASE st
             WHEN 'failed' THEN '550 5.1.1 Recipient address rejected: User unknown in virtual mailbox table'
             WHEN 'retrying' THEN '451 4.7.1 Greylisted, please try again later'
             WHEN 'skipped' THEN 'the cutoff passed before it could be sent' END
         FROM (SELECT i, s, created, 'BENCH-' || {sub} AS sub, {cust} AS c,
                 CASE WHEN i % 1000 = 999 THEN 'order_stalled'
                   WHEN i % 32 < 12 THEN 'renewal_reminder'
                   WHEN i % 32 < 17 THEN 'ready'
                   WHEN i % 32 < 21 THEN 'order_processed'
                   WHEN i % 32 < 25 THEN 'activated'
                   WHEN i % 32 < 29 THEN 'subscription_renewed'
                   WHEN i % 32 = 29 THEN 'subscription_ended'
                   WHEN i % 32 = 30 THEN 'auto_renew_disabled'
                   ELSE 'disable_rejected' END AS kind,
                 CASE WHEN i >= {n} - 5 THEN 'sending'
                   WHEN i >= {n} - {owed} THEN 'pending'
                   WHEN i >= {n} - {recent} AND i % 37 = 0 THEN 'retrying'
                   WHEN i % 397 = 17 THEN 'failed'
                   WHEN i % 50 = 13 THEN 'skipped'
                   ELSE 'sent' END AS st
               FROM (SELECT i, (i * 7919) % {quarter} AS s,
                       {now_ms} - ({n} - i) * {step} AS created FROM seq) a) b",
        seq = d.seq(n),
        reseller = d.pad(&format!("s % {RESELLERS}"), 4),
        sub = d.pad("s", 8),
        cust = d.pad(&format!("s % {CUSTOMERS}"), 5),
        owed = n / 500,
        recent = n / 100,
    ));
    // Each attempt made: one for a mail sent, every one of a mail retrying or failed.
    sql.push(
        "INSERT INTO delivery_attempts (outbox_id, attempt, worker, started_at, finished_at,
           outcome, smtp_code, detail)
         SELECT o.id, a.n, 'bench-daemon', o.created_at + (a.n - 1) * 600000,
           o.created_at + (a.n - 1) * 600000 + 800,
           CASE WHEN o.state = 'sent' THEN 'sent'
             WHEN o.state = 'failed' AND a.n = o.attempts THEN 'permanent' ELSE 'transient' END,
           CASE WHEN o.state = 'sent' THEN 250
             WHEN o.state = 'failed' AND a.n = o.attempts THEN 550 ELSE 451 END,
           CASE WHEN o.state = 'sent' THEN '250 2.0.0 Ok: queued'
             WHEN o.state = 'failed' AND a.n = o.attempts
               THEN '550 5.1.1 Recipient address rejected: User unknown in virtual mailbox table'
             ELSE '451 4.7.1 Greylisted, please try again later' END
         FROM outbox o JOIN (SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3) a
           ON a.n <= o.attempts
         WHERE o.state IN ('sent', 'failed') OR (o.state = 'pending' AND o.attempts > 0)"
            .to_owned(),
    );
    if backend == Backend::Postgres {
        // The ids were given: the identity goes on after them.
        sql.push(
            "SELECT setval(pg_get_serial_sequence('outbox', 'id'), (SELECT MAX(id) FROM outbox))"
                .to_owned(),
        );
    }
    sql.push(format!(
        "{seq} INSERT INTO disable_requests (request_key, subscription_id, requested_by,
           requested_at, decided_at, via, seen_assigned, seen_term_end, seen_auto_renew,
           decision, reason, cutoff_at, effective_term_end, renews_once_more)
         SELECT 'DR-' || {key}, 'BENCH-' || {sub}, 'portal-user-' || (i % 300),
           {now_ms} - ({DISABLE_REQUESTS} - i) * 600000,
           {now_ms} - ({DISABLE_REQUESTS} - i) * 600000 + 500,
           CASE i % 3 WHEN 0 THEN 'api' WHEN 1 THEN 'job' ELSE 'cli' END, i % 3, {today},
           TRUE, CASE WHEN i % 4 = 0 THEN 'rejected' ELSE 'accepted' END,
           CASE WHEN i % 4 = 0 THEN 'licenses still assigned' END,
           {now_ms} + 86400000, NULL, FALSE
         FROM seq",
        seq = d.seq(DISABLE_REQUESTS),
        key = d.pad("i", 6),
        sub = d.pad(&format!("(i * 104729) % {subscriptions}"), 8),
        today = d.date_plus(today, "0"),
    ));
    sql.push(format!(
        "{seq} INSERT INTO operator_audit (at, who, action, target, detail)
         SELECT {now_ms} - ({AUDIT_ROWS} - i) * 180000, 'operator-' || (i % 7),
           CASE i % 4 WHEN 0 THEN 'retry mail' WHEN 1 THEN 'cancel mail' WHEN 2 THEN 'poll now'
             ELSE 'pause sending' END,
           'mail ' || ((i * 13) % {n} + 1), CASE WHEN i % 2 = 0 THEN '1 mail(s)' END
         FROM seq",
        seq = d.seq(AUDIT_ROWS),
        n = n.max(1),
    ));

    execute_all(url, backend, sql).await?;
    Ok(book)
}

/// Marks all but the newest `waiting` jobs of the queue done (as a daemon leaves them) and
/// `dead` of the oldest killed.
pub async fn settle_jobs(url: &str, waiting: u32, dead: u32) -> Result<(), sqlx::Error> {
    let backend = Backend::of_url(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    let (table, done_at) = match backend {
        Backend::Sqlite => ("Jobs", "run_at + 1"),
        Backend::Postgres => ("apalis.jobs", "run_at + INTERVAL '1 second'"),
    };
    let sql = [
        format!(
            "UPDATE {table} SET status = 'Done', attempts = 1, done_at = {done_at}
             WHERE id NOT IN (SELECT id FROM {table} ORDER BY run_at DESC, id DESC LIMIT {waiting})"
        ),
        format!(
            "UPDATE {table} SET status = 'Killed', attempts = max_attempts, done_at = {done_at}
             WHERE id IN (SELECT id FROM {table} ORDER BY run_at, id LIMIT {dead})"
        ),
    ];
    execute_all(url, backend, sql).await
}

/// Runs each of `sql` in turn on one connection of its own to `url`.
async fn execute_all(
    url: &str,
    backend: Backend,
    sql: impl IntoIterator<Item = String>,
) -> Result<(), sqlx::Error> {
    macro_rules! run_on {
        ($conn:ty) => {{
            let mut conn = <$conn>::connect(url).await?;
            for s in sql {
                sqlx::raw_sql(sqlx::AssertSqlSafe(s))
                    .execute(&mut conn)
                    .await?;
            }
            conn.close().await
        }};
    }
    match backend {
        Backend::Sqlite => run_on!(sqlx::SqliteConnection),
        Backend::Postgres => run_on!(sqlx::PgConnection),
    }
}
