//! The pulling source against a real local HTTP server serving fixture pages: retries, the
//! cursor, a bad row skipped whole, and a second pull that starts where the first stopped.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use renewal_worker::domain::SubscriptionId;
use renewal_worker::source::{self, SourceError};
use serde_json::{Value, json};

use crate::helpers::*;

const TOKEN: &str = "feed-token-42";

#[derive(Default)]
struct Feed {
    /// Every request as (query string pairs, authorization header).
    seen: Vec<(Vec<(String, String)>, String)>,
    /// Answer 500 to this many requests before serving pages.
    fail_first: usize,
    /// Refuse every request with 401 (a misconfigured token).
    refuse: bool,
}

fn page_for(cursor: Option<&str>) -> Value {
    match cursor {
        None => json!({
            "resellers": [{"id": "R2", "name": "Umbrella Resale", "email": "ops@umbrella.example",
                           "timezone": "Europe/London", "calendar": "gb-eng"}],
            "customers": [{"id": "C3", "reseller_id": "R2", "name": "Hooli",
                           "email": "it@hooli.example"}],
            "subscriptions": [
                {"id": "S3", "reseller_id": "R2", "customer_id": "C3",
                 "product_id": "057O1-WW6525-L349", "plan": "Maya", "billing": "annual_prepaid",
                 "seats": 4, "assigned_licenses": 4, "term_start": "2026-03-01",
                 "term_end": "2027-03-01", "auto_renew": true},
                // Bad: 9-digit CSN is not here, but the seats and product ID are wrong.
                {"id": "S4", "reseller_id": "R2", "customer_id": "C3",
                 "product_id": "057O1-WW65", "plan": "Maya", "billing": "annual_prepaid",
                 "seats": 0, "assigned_licenses": 0, "term_start": "2026-03-01",
                 "term_end": "2027-03-01", "auto_renew": true}
            ],
            "events": [
                {"subscription_id": "S3", "event": "ready"},
                {"subscription_id": "S9", "event": "ready"},
                {"subscription_id": "S3", "event": "activated", "download_url": "http://plain.example"}
            ],
            "next_cursor": "2026-11-24T10:00:00Z",
            "has_more": true
        }),
        Some("2026-11-24T10:00:00Z") => json!({
            "customers": [{"id": "C4", "reseller_id": "R9", "name": "Nobody",
                           "email": "it@nobody.example"}],
            "subscriptions": [
                // The marketplace saw licenses un-assigned.
                {"id": "S3", "reseller_id": "R2", "customer_id": "C3",
                 "product_id": "057O1WW6525L349", "plan": "Maya", "billing": "annual_prepaid",
                 "seats": 4, "assigned_licenses": 1, "term_start": "2026-03-01",
                 "term_end": "2027-03-01", "auto_renew": true},
                // Refers to a customer that was itself skipped.
                {"id": "S5", "reseller_id": "R9", "customer_id": "C4",
                 "product_id": "057O1WW6525L350", "plan": "Maya", "billing": "annual_prepaid",
                 "seats": 1, "assigned_licenses": 0, "term_start": "2026-03-01",
                 "term_end": "2027-03-01", "auto_renew": true}
            ],
            "events": [
                {"subscription_id": "S3", "event": "ready"},
                {"subscription_id": "S3", "event": "order_processed"}
            ],
            "next_cursor": "2026-11-24T11:00:00Z",
            "has_more": false
        }),
        Some(_) => json!({"next_cursor": null, "has_more": false}),
    }
}

async fn changes(
    State(feed): State<Arc<Mutex<Feed>>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut f = feed.lock().unwrap();
    f.seen.push((query.clone(), auth));
    if f.refuse {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    if f.fail_first > 0 {
        f.fail_first -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "database restarting").into_response();
    }
    let cursor = query
        .iter()
        .find(|(k, _)| k == "updated_since")
        .map(|(_, v)| v.as_str());
    axum::Json(page_for(cursor)).into_response()
}

async fn serve_feed(feed: Arc<Mutex<Feed>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/changes", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/changes", get(changes))
        .with_state(feed);
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

fn source_settings(url: &str) -> String {
    format!(
        "[source]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\npage_size = 50\n\
         max_attempts = 3\ninitial_backoff = \"50ms\"\ntimeout = \"5s\"\n"
    )
}

async fn assigned(app: &TestApp, id: &str) -> Option<u16> {
    app.store
        .subscription_context(&SubscriptionId::parse(id).unwrap())
        .await
        .unwrap()
        .map(|c| c.subscription.assigned_licenses.get())
}

on_both_backends!(async pulls_pages_from_the_cursor_skipping_bad_rows_whole);
async fn pulls_pages_from_the_cursor_skipping_bad_rows_whole() {
    let feed = Arc::new(Mutex::new(Feed {
        fail_first: 1,
        ..Feed::default()
    }));
    let url = serve_feed(feed.clone()).await;
    let app = TestApp::new(None, &source_settings(&url)).await;
    let calendars = app.settings.calendars().unwrap();

    let report = source::pull(&app.store, &app.settings, &calendars, chrono::Utc::now())
        .await
        .expect("the pull succeeds after one retried 500");
    assert_eq!(report.pages, 2, "{report:?}");
    assert_eq!(report.cursor.as_deref(), Some("2026-11-24T11:00:00Z"));
    // R2, C3, S3 (twice: once per page).
    assert_eq!(
        (report.resellers, report.customers, report.subscriptions),
        (1, 1, 2),
        "{report:?}"
    );
    // S3 ready and order_processed; the second `ready` was already recorded.
    assert_eq!(report.events_recorded, 2, "{report:?}");
    assert_eq!(report.events_already_recorded, 1, "{report:?}");

    // Every skip names the row and the field that was wrong.
    let skipped = report.skipped.join("\n");
    assert_eq!(report.skipped.len(), 5, "{skipped}");
    for expected in [
        "subscriptions S4: `product_id`",
        "`seats`",
        "customers C4: `reseller_id`",
        "subscriptions S5",
        "event S9 ready",
        "event S3 activated: `download_url`",
    ] {
        assert!(skipped.contains(expected), "{expected:?} in:\n{skipped}");
    }

    // Applied: the later page's licence count; nothing of the skipped rows.
    assert_eq!(assigned(&app, "S3").await, Some(1));
    assert_eq!(assigned(&app, "S4").await, None);
    assert_eq!(assigned(&app, "S5").await, None);
    let keys: Vec<String> = app.outbox().await.into_iter().map(|o| o.key).collect();
    assert!(
        keys.iter().any(|k| k.contains("S3") && k.contains("ready")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.contains("S3") && k.contains("order_processed")),
        "{keys:?}"
    );
    assert!(!keys.iter().any(|k| k.contains("activated")), "{keys:?}");

    {
        let f = feed.lock().unwrap();
        // One 500, then the first page again, then the second page from its cursor.
        assert_eq!(f.seen.len(), 3);
        assert!(
            f.seen
                .iter()
                .all(|(_, auth)| auth == &format!("Bearer {TOKEN}"))
        );
        assert!(f.seen[0].0.iter().all(|(k, _)| k != "updated_since"));
        assert!(f.seen[0].0.contains(&("limit".into(), "50".into())));
        assert!(
            f.seen[2]
                .0
                .contains(&("updated_since".into(), "2026-11-24T10:00:00Z".into()))
        );
    }

    // The cursor is kept in the store: the next pull asks only for what changed since.
    let again = source::pull(&app.store, &app.settings, &calendars, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(again.pages, 1);
    assert_eq!(again.subscriptions + again.events_recorded, 0);
    assert_eq!(again.cursor.as_deref(), Some("2026-11-24T11:00:00Z"));
    let f = feed.lock().unwrap();
    assert!(
        f.seen[3]
            .0
            .contains(&("updated_since".into(), "2026-11-24T11:00:00Z".into()))
    );
}

on_both_backends!(async a_refused_or_unreachable_feed_is_an_error_and_keeps_the_cursor);
async fn a_refused_or_unreachable_feed_is_an_error_and_keeps_the_cursor() {
    let feed = Arc::new(Mutex::new(Feed {
        refuse: true,
        ..Feed::default()
    }));
    let url = serve_feed(feed.clone()).await;
    let app = TestApp::new(None, &source_settings(&url)).await;
    let calendars = app.settings.calendars().unwrap();
    app.store
        .set_source_cursor("marketplace", "2026-01-01T00:00:00Z", chrono::Utc::now())
        .await
        .unwrap();

    let err = source::pull(&app.store, &app.settings, &calendars, chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Status { status: 401, .. }),
        "{err}"
    );
    // A 401 is not retried: asking again will not fix the token.
    assert_eq!(feed.lock().unwrap().seen.len(), 1);

    // Nothing listens here any more: retried max_attempts times, then an error.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/changes", l.local_addr().unwrap())
    };
    let app2 = TestApp::new(None, &source_settings(&dead)).await;
    let err = source::pull(&app2.store, &app2.settings, &calendars, chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Fetch { .. }), "{err}");
    assert_eq!(
        app.store
            .source_cursor("marketplace")
            .await
            .unwrap()
            .as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
}
