//! The operator's console over a large book, on SQLite and PostgreSQL in turn: 1,000,000
//! subscriptions and 1,000,000 mails (`support::mailbook`), the real HTTP server in-process,
//! an operator signed in, and each page asked for several times over a socket. Prints the
//! seed time and each page's median and slowest answer; asserts only that each page answers
//! 200 with what it should show, never a time. Run: `cargo bench --bench console`.
//!
//! `RW_BENCH_ROWS=100000` sizes the book (subscriptions and mails alike; 1,000,000 when
//! unset), `RW_BENCH_RUNS=7` the timed runs per page (after one untimed), and
//! `RW_BENCH_BACKENDS=sqlite` or `postgresql` runs one store, `RW_BENCH_KEEP=1` leaves each
//! database in place (its URL printed) to read plans in `sqlite3` or `psql`, and
//! `RW_BENCH_DUMP=<dir>` writes each page's first answer there.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Duration as Span, Utc};
use renewal_worker::clock::SystemClock;
use renewal_worker::http::{HttpState, serve};
use renewal_worker::outbox::Deliverer;
use renewal_worker::service;
use support::mailbook::{self, Book};
use support::{Backend, BenchDb, settings};

/// The operator's token (`http.token`).
const TOKEN: &str = "console-bench-token-0123456789";
/// Queue jobs put on the queue (all but a few done, a few dead).
const JOBS: u32 = 1_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace([',', '_'], "").parse().ok())
        .unwrap_or(default)
}

/// A page to time: its label, its path and query, and a text its answer must hold.
struct Page {
    label: &'static str,
    path: String,
    expect: String,
}

fn page(label: &'static str, path: impl Into<String>, expect: impl Into<String>) -> Page {
    Page {
        label,
        path: path.into(),
        expect: expect.into(),
    }
}

/// The pages, asking about things the book holds.
fn pages(book: &Book) -> Vec<Page> {
    let n = book.mails;
    let sub = Book::subscription(book.subscription_of_mail(n / 2));
    let reseller = Book::reseller(42);
    let day = (book.now - Span::days(mailbook::SPAN_DAYS / 2)).date_naive();
    let next = day.succ_opt().expect("date");
    // A mail in the middle of the book that failed for good, of a kind that renders from no
    // facts (the book's payloads are empty).
    let failed = (n / 2..n)
        .find(|i| i % 397 == 17 && i % 1000 != 999 && (12..21).contains(&(i % 32)))
        .map_or(1, |i| i + 1);
    vec![
        page("overview", "/ui/", "Mail by state"),
        page("counts fragment", "/ui/fragment/counts", "failed (dead)"),
        page("mails", "/ui/mails", "Older →"),
        page("mails, failed", "/ui/mails?state=failed", "550 5.1.1"),
        page(
            "mails, pending",
            "/ui/mails?state=pending",
            "class=\"state owed\"",
        ),
        page(
            "mails, rare kind",
            "/ui/mails?kind=order_stalled",
            "<td>order_stalled</td>",
        ),
        page(
            "mails, one subscription",
            format!("/ui/mails?sub={sub}"),
            format!("href=\"/ui/subscriptions/{sub}\""),
        ),
        page(
            "mails, one reseller",
            format!("/ui/mails?reseller={reseller}"),
            "/ui/subscriptions/BENCH-",
        ),
        page(
            "mails, rare recipient",
            format!("/ui/mails?to={}", mailbook::RARE_RECIPIENT),
            format!("<td>{}</td>", mailbook::RARE_RECIPIENT),
        ),
        page(
            "mails, one day",
            format!("/ui/mails?after={day}&before={next}"),
            "Older →",
        ),
        page(
            "mails, deep page",
            format!("/ui/mails?before_id={}", (n / 50).max(60)),
            "Older →",
        ),
        page(
            "mail, failed",
            format!("/ui/mails/{failed}"),
            "Recipient address rejected",
        ),
        page(
            "bulk retry count",
            "/ui/bulk?all=retry&state=failed",
            "mail(s) match this filter",
        ),
        page("renewals", "/ui/renewals", "/ui/subscriptions/BENCH-"),
        page("disable requests", "/ui/disable-requests", "portal-user-"),
        page("jobs", "/ui/jobs", "renewal-worker.poll"),
        page("audit", "/ui/audit", "operator-"),
        page(
            "subscription",
            format!("/ui/subscriptions/{sub}"),
            format!("{sub}/"),
        ),
    ]
}

/// Median and slowest answer of each page, in ms.
type Figures = BTreeMap<&'static str, (f64, f64)>;

async fn console_bench(
    backend: Backend,
    rows: u64,
    runs: usize,
    problems: &mut Vec<String>,
) -> Option<Figures> {
    let Ok(db) = BenchDb::new(backend).await else {
        println!("{}: not reachable, skipped", backend.name());
        return None;
    };
    println!(
        "console over {rows} subscriptions and {rows} mails ({})",
        backend.name()
    );
    let mut settings = settings(&db.url, 25, 4);
    settings.http.token = TOKEN.to_owned().into();
    let store = service::open_store(&settings).await.expect("store");

    let t = Instant::now();
    let book = mailbook::fill(&db.url, rows, rows, Utc::now())
        .await
        .expect("fill");
    for _ in 0..JOBS {
        store
            .enqueue_job(&renewal_worker::jobs::poll_job("bench"))
            .await
            .expect("job");
    }
    mailbook::settle_jobs(&db.url, 5, 3).await.expect("jobs");
    println!(
        "  seeded in {:.1} s: {} resellers, {} customers, {rows} subscriptions, {rows} mails \
         with their attempts, {} disable requests, {} audit rows, {JOBS} jobs",
        t.elapsed().as_secs_f64(),
        mailbook::RESELLERS,
        mailbook::CUSTOMERS,
        mailbook::DISABLE_REQUESTS,
        mailbook::AUDIT_ROWS,
    );
    // Reopened as a running daemon would find it: SQLite's write-ahead log checkpointed by
    // the close, PostgreSQL's statistics gathered and its pages written.
    store.close().await;
    let t = Instant::now();
    db.settle().await;
    let store = service::open_store(&settings).await.expect("reopen");
    println!("  settled in {:.1} s", t.elapsed().as_secs_f64());

    let clock: renewal_worker::clock::SharedClock = Arc::new(SystemClock);
    let deliverer = Arc::new(
        Deliverer::build(
            Arc::new(settings.clone()),
            store.clone(),
            clock,
            "bench-console".into(),
        )
        .expect("deliverer"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        Arc::new(HttpState::new(deliverer, TOKEN)),
        65536,
        async {
            let _ = stopped.await;
        },
    ));

    renewal_worker::install_tls_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = client
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name=bench&token={TOKEN}"))
        .send()
        .await
        .expect("sign in");
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();

    let mut figures = Figures::new();
    for p in pages(&book) {
        let mut times = Vec::with_capacity(runs);
        for run in 0..=runs {
            let t = Instant::now();
            let r = client
                .get(format!("{base}{}", p.path))
                .header("cookie", &cookie)
                .send()
                .await
                .expect("request");
            let status = r.status();
            let body = r.text().await.expect("body");
            let took = t.elapsed();
            if run == 0 {
                if let Ok(dir) = std::env::var("RW_BENCH_DUMP") {
                    let name = format!(
                        "{}-{}.html",
                        backend.name(),
                        p.label.replace([' ', ','], "_")
                    );
                    std::fs::write(std::path::Path::new(&dir).join(name), &body).expect("dump");
                }
                if status != reqwest::StatusCode::OK {
                    problems.push(format!(
                        "{} {}: {status} ({})",
                        backend.name(),
                        p.path,
                        body.chars().take(200).collect::<String>()
                    ));
                } else if !body.contains(&p.expect) {
                    problems.push(format!(
                        "{} {}: 200 without {:?}",
                        backend.name(),
                        p.path,
                        p.expect
                    ));
                }
            } else {
                times.push(took);
            }
        }
        let (median, max) = spread(&mut times);
        println!(
            "  {:<26} median {median:7.1} ms, slowest {max:7.1} ms  {}",
            p.label, p.path
        );
        figures.insert(p.label, (median, max));
    }

    let _ = stop.send(());
    let _ = server.await;
    store.close().await;
    if std::env::var_os("RW_BENCH_KEEP").is_some() {
        println!("  kept: {}", db.url);
        std::mem::forget(db);
    } else {
        db.drop_database().await;
    }
    Some(figures)
}

fn spread(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    match times {
        [] => (0.0, 0.0),
        t => (ms(t[t.len() / 2]), ms(t[t.len() - 1])),
    }
}

#[tokio::main]
async fn main() {
    let rows = env_u64("RW_BENCH_ROWS", 1_000_000).max(100);
    let runs = usize::try_from(env_u64("RW_BENCH_RUNS", 7).max(1)).unwrap_or(7);
    let backends = std::env::var("RW_BENCH_BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgresql".into())
        .to_ascii_lowercase();
    let mut problems = Vec::new();
    let mut results = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if !backends.contains(&backend.name().to_ascii_lowercase()) {
            continue;
        }
        if let Some(f) = console_bench(backend, rows, runs, &mut problems).await {
            results.push((backend, f));
        }
    }

    println!(
        "\nmedian (slowest) ms of {runs} runs, {rows} subscriptions and {rows} mails\n\
         | page | {} |\n|---|{}",
        results
            .iter()
            .map(|(b, _)| b.name())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(results.len())
    );
    let labels: Vec<&str> = results
        .first()
        .map(|(_, f)| f.keys().copied().collect())
        .unwrap_or_default();
    let order: Vec<&str> = pages(&Book {
        subscriptions: rows,
        mails: rows,
        now: Utc::now(),
    })
    .iter()
    .map(|p| p.label)
    .filter(|l| labels.contains(l))
    .collect();
    for label in order {
        let cells: Vec<String> = results
            .iter()
            .map(|(_, f)| {
                f.get(label)
                    .map_or("-".into(), |(m, x)| format!("{m:.1} ({x:.1})"))
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
    assert!(
        problems.is_empty(),
        "pages that did not answer as they should:\n{}",
        problems.join("\n")
    );
}
