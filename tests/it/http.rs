//! The HTTP API over a real socket: auth, validation, every status code, metrics after real
//! work, and the OpenAPI document matching the routes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use renewal_worker::clock::ShiftedClock;
use renewal_worker::http::{HttpState, OPENAPI, ROUTES, serve};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const TOKEN: &str = "test-token-0123456789";

struct Api {
    base: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    deliverer: Arc<renewal_worker::outbox::Deliverer>,
    _app: TestApp,
}

impl Api {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// With settings of the test's own (a TOML overlay).
    async fn start_with(extra: &str) -> Self {
        let app = TestApp::new(None, extra).await;
        let clock = Arc::new(ShiftedClock::starting_at(
            chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
                .unwrap()
                .to_utc(),
        ));
        let deliverer = Arc::new(app.deliverer(clock));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::new(HttpState::new(deliverer.clone(), TOKEN));
        tokio::spawn(serve(listener, state, 4096, async {
            let _ = rx.await;
        }));
        Self {
            base,
            client: {
                renewal_worker::install_tls_provider();
                reqwest::Client::new()
            },
            _stop: tx,
            deliverer,
            _app: app,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "get" => self.client.get(url),
            "put" => self.client.put(url),
            "post" => self.client.post(url),
            _ => unreachable!(),
        }
        .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn subscription() -> Value {
    json!({"reseller_id": "R1", "customer_id": "C1", "product_id": "057O1-WW6525-L347",
           "plan": "Inventor", "billing": "annual_prepaid", "seats": 5, "assigned_licenses": 0,
           "term_start": "2025-12-28", "term_end": "2026-12-28", "auto_renew": true})
}

on_both_backends!(async auth_is_required_on_subscriptions_only);
async fn auth_is_required_on_subscriptions_only() {
    let api = Api::start().await;
    let url = format!("{}/subscriptions/S1/timeline", api.base);
    let none = api.client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["error"], "missing or wrong bearer token");
    let wrong = api
        .client
        .get(&url)
        .bearer_auth("test-token-0123456788")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.call("get", "/subscriptions/S1/timeline", None).await.0,
        StatusCode::OK
    );
    let health = api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = api
        .client
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"store": "ok", "mail": "ok", "relay": {
            "state": "up", "down_since": null, "down_seconds": 0, "probes_failed": 0,
            "faults_in_row": 0, "last_error": null
        }})
    );
}

on_both_backends!(async subscriptions_are_validated_like_the_import);
async fn subscriptions_are_validated_like_the_import() {
    let api = Api::start().await;
    let (status, body) = api
        .call("put", "/subscriptions/S7", Some(subscription()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.call("get", "/subscriptions/S7/timeline", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["cutoff_date"], "2026-12-18");

    let mut bad = subscription();
    bad["seats"] = json!(0);
    let (status, body) = api.call("put", "/subscriptions/S7", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "seats");
    assert!(body["error"].as_str().unwrap().contains("got 0"));

    let mut bad = subscription();
    bad["reseller_id"] = json!("R404");
    let (status, body) = api.call("put", "/subscriptions/S7", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "reseller_id");

    let mut bad = subscription();
    bad["id"] = json!("S8");
    let (status, body) = api.call("put", "/subscriptions/S7", Some(bad)).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("id"))
    );

    let raw = api
        .client
        .put(format!("{}/subscriptions/S7", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"seats\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert!(raw.json::<Value>().await.unwrap()["error"].is_string());

    let mut huge = subscription();
    huge["plan"] = json!("x".repeat(10_000));
    let (status, _) = api.call("put", "/subscriptions/S7", Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body) = api
        .call("get", "/subscriptions/S7/timeline?at=yesterday", None)
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("at"))
    );
    let (status, _) = api.call("get", "/subscriptions/S404/timeline", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

on_both_backends!(async events_licenses_and_disable_requests);
async fn events_licenses_and_disable_requests() {
    let api = Api::start().await;
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/events",
            Some(json!({"event": "ready"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/events",
            Some(json!({"event": "ready"})),
        )
        .await;
    assert_eq!(
        (status, body["already_recorded"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/events",
            Some(json!({"event": "activated"})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("download_url"))
    );
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/events",
            Some(json!({"event": "activated", "download_url": "http://x.example"})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("download_url"))
    );
    let (status, _) = api
        .call(
            "post",
            "/subscriptions/S404/events",
            Some(json!({"event": "ready"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Licenses assigned: the request is rejected with 409 and the decision.
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/disable-auto-renew",
            Some(json!({"requested_by": "buyer@acme.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        (body["decision"].as_str(), body["reason"].as_str()),
        (Some("rejected"), Some("licenses_assigned"))
    );
    let (status, body) = api
        .call(
            "put",
            "/subscriptions/S1/licenses",
            Some(json!({"assigned": 11})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("assigned"))
    );
    let (status, _) = api
        .call(
            "put",
            "/subscriptions/S1/licenses",
            Some(json!({"assigned": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/disable-auto-renew",
            Some(json!({"requested_by": "buyer@acme.example", "request_id": "m-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["effective_term_end"], "2026-12-28");
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/disable-auto-renew",
            Some(json!({"requested_by": "nobody"})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("requested_by"))
    );
}

on_both_backends!(async metrics_count_real_work);
async fn metrics_count_real_work() {
    let api = Api::start().await;
    api.call(
        "post",
        "/subscriptions/S1/events",
        Some(json!({"event": "ready"})),
    )
    .await;
    let text = |api: &Api| {
        let url = format!("{}/metrics", api.base);
        let client = api.client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let before = text(&api).await;
    assert!(before.contains("renewal_worker_owed_mails 1"), "{before}");
    renewal_worker::service::poll_now(&api.deliverer)
        .await
        .unwrap();
    let drained = api.deliverer.drain().await.unwrap();
    assert_eq!(drained.sent, 2, "the ready mail and S1's due reminder");
    let after = text(&api).await;
    assert!(
        after.contains("renewal_worker_mails_total{kind=\"ready\",outcome=\"sent\"} 1"),
        "{after}"
    );
    assert!(
        after.contains("renewal_worker_mails_total{kind=\"renewal_reminder\",outcome=\"sent\"} 1"),
        "{after}"
    );
    assert!(
        after.contains("renewal_worker_poll_duration_seconds_count 1"),
        "{after}"
    );
    assert!(
        after.contains("renewal_worker_smtp_send_duration_seconds_count 2"),
        "{after}"
    );
    // Each mail sent waited for its record, and said so.
    assert!(
        after.contains("renewal_worker_record_wait_seconds_count 2"),
        "{after}"
    );
    assert!(after.contains("renewal_worker_owed_mails 0"), "{after}");
    assert!(after.contains("renewal_worker_queue_depth"), "{after}");
}

/// Every write under `/subscriptions/{id}` reads its request alike: the path's id first, then
/// the body as a JSON object, then each field, every error naming what is at fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_reads_its_request_alike() {
    let api = Api::start().await;
    for (method, route) in [
        ("put", ""),
        ("post", "/events"),
        ("put", "/licenses"),
        ("post", "/disable-auto-renew"),
    ] {
        let (status, body) = api
            .call(
                method,
                &format!("/subscriptions/bad!id{route}"),
                Some(json!([1])),
            )
            .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("id")),
            "{method} {route}: {body}"
        );
        let (status, body) = api
            .call(
                method,
                &format!("/subscriptions/S1{route}"),
                Some(json!([1])),
            )
            .await;
        assert_eq!(
            (status, body),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "the body must be a JSON object", "field": null})
            ),
            "{method} {route}"
        );
    }
    for (route, field) in [
        ("/events", "event"),
        ("/disable-auto-renew", "requested_by"),
    ] {
        let path = format!("/subscriptions/S1{route}");
        let (status, body) = api.call("post", &path, Some(json!({}))).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": format!("`{field}` is required"), "field": field})
            )
        );
        let (status, body) = api.call("post", &path, Some(json!({field: 5}))).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": format!("`{field}` must be a string"), "field": field})
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes() {
    let api = Api::start().await;
    let served: Value = api
        .client
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(served, doc);
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);
    // Each route answers with one of its documented codes.
    for (method, path) in ROUTES {
        let concrete = path.replace("{id}", "S1");
        let body = (*method != "get").then(|| json!({}));
        let (status, _) = api.call(method, &concrete, body).await;
        let codes = doc["paths"][*path][*method]["responses"]
            .as_object()
            .unwrap();
        assert!(
            codes.contains_key(status.as_str()),
            "{method} {path} answered {status}, documented {:?}",
            codes.keys()
        );
    }
}

on_both_backends!(async a_different_download_link_is_409_unless_correct);
async fn a_different_download_link_is_409_unless_correct() {
    let api = Api::start().await;
    let post = |body: Value| api.call("post", "/subscriptions/S1/events", Some(body));
    let (status, body) = post(json!({"event": "activated",
        "download_url": "https://manage.autodesk.com/dl/wrong"}))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let right = "https://manage.autodesk.com/dl/right";
    let (status, body) = post(json!({"event": "activated", "download_url": right})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "download_url");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"correct\": true"),
        "{body}"
    );
    let (status, body) = post(json!({"event": "activated", "download_url": right,
        "correct": "yes"}))
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("correct"))
    );
    let (status, body) = post(json!({"event": "activated", "download_url": right,
        "correct": true}))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["key"], "S1/activated/2");
    assert_eq!(
        body["old_download_url"],
        "https://manage.autodesk.com/dl/wrong"
    );
    let (status, body) = post(json!({"event": "activated", "download_url": right,
        "correct": true}))
    .await;
    assert_eq!(
        (status, body["already_recorded"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
}

on_both_backends!(async orders_over_http);
async fn orders_over_http() {
    let api = Api::start().await;
    let (status, body) = api.call("get", "/resellers/R1/order-check", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"can_order": true})));
    let (status, _) = api
        .call(
            "post",
            "/subscriptions/S1/events",
            Some(json!({"event": "ready"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = api.call("get", "/resellers/R1/order-check", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["can_order"], false);
    assert_eq!(body["in_flight"]["subscription"], "S1");
    assert_eq!(body["in_flight"]["state"], "ready");
    assert!(body["in_flight"]["since"].is_string(), "{body}");
    let (status, body) = api.call("get", "/resellers/R9/order-check", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"R9\""), "{body}");
    let (status, body) = api.call("get", "/resellers/R%20!/order-check", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "id");

    // A step of a second order while S1 is in flight: recorded, and counted in /metrics.
    let (status, _) = api
        .call(
            "post",
            "/subscriptions/S2/events",
            Some(json!({"event": "ready"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let url = format!("{}/metrics", api.base);
    let metrics = api
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("renewal_worker_overlapping_orders 1"),
        "{metrics}"
    );

    let (status, body) = api
        .call("post", "/subscriptions/S1/abandon-order", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "reason");
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/abandon-order",
            Some(json!({"reason": "customer cancelled"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/abandon-order",
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = api.call("get", "/resellers/R1/order-check", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["in_flight"]["subscription"], "S2",
        "S1 no longer counts"
    );

    // Created pending: in flight from its creation.
    let mut sub = subscription();
    sub["provisioning"] = json!("started");
    let (status, body) = api
        .call("put", "/subscriptions/S7", Some(sub.clone()))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "provisioning");
    sub["provisioning"] = json!("pending");
    let (status, body) = api.call("put", "/subscriptions/S7", Some(sub)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = api.call("get", "/subscriptions/S7/timeline", None).await;
    assert_eq!(body["provisioning"]["state"], "pending", "{body}");
    assert_eq!(body["provisioning"]["in_flight"], true, "{body}");
    assert!(body["provisioning"]["opened_at"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_answer_json_errors() {
    let api = Api::start().await;
    for (method, path, status) in [
        (reqwest::Method::GET, "/nope", StatusCode::NOT_FOUND),
        (reqwest::Method::GET, "/", StatusCode::NOT_FOUND),
        (
            reqwest::Method::GET,
            "/subscriptions/S1/nope",
            StatusCode::NOT_FOUND,
        ),
        (
            reqwest::Method::DELETE,
            "/subscriptions/S1",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            reqwest::Method::POST,
            "/healthz",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            reqwest::Method::GET,
            "/subscriptions/S1/events",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let resp = api
            .client
            .request(method.clone(), format!("{}{path}", api.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        let kind = resp.headers()[reqwest::header::CONTENT_TYPE].clone();
        assert_eq!(kind, "application/json", "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(path)),
            "{method} {path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_tokens_are_answered_429_for_a_while() {
    let api = Api::start_with("[http]\nmax_auth_failures = 3\nauth_lockout = \"2s\"\n").await;
    let url = format!("{}/subscriptions/S1/timeline", api.base);
    let get = |token: &str| api.client.get(&url).bearer_auth(token).send();
    let long = "y".repeat(300);
    // Guesses of any length count alike.
    for guess in ["x", "test-token-0123456788", long.as_str()] {
        assert_eq!(get(guess).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    // Locked out: even the right token is not checked.
    let locked = get(TOKEN).await.unwrap();
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = locked.headers()[reqwest::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let body: Value = locked.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    // The unguarded routes still answer.
    let health = api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(TOKEN).await.unwrap().status(), StatusCode::OK);
}

on_both_backends!(async control_characters_are_refused_never_stripped);
async fn control_characters_are_refused_never_stripped() {
    let api = Api::start().await;
    // The id in the path: `S1\r\n` is not S1.
    for path in [
        "/subscriptions/S1%0d%0a/timeline",
        "/subscriptions/S1%0A/timeline",
        "/subscriptions/%20S1/timeline",
    ] {
        let (status, body) = api.call("get", path, None).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("id")),
            "{path}: {body}"
        );
    }
    // Fields of a body: each refused by name, nothing written.
    for (field, value) in [
        ("plan", "Inventor\r\nBcc: evil@attacker.example"),
        ("plan", "Inventor\u{85}"),
        ("reseller_id", "R1\n"),
        ("notify_email", "buyer@acme.example\r\n"),
        ("product_id", "057O1-WW6525-L347\t"),
    ] {
        let mut bad = subscription();
        bad[field] = json!(value);
        let (status, body) = api.call("put", "/subscriptions/S7", Some(bad)).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{field}: {body}"
        );
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("control character"),
            "{body}"
        );
    }
    let (status, _) = api.call("get", "/subscriptions/S7/timeline", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no subscription was written");

    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/events",
            Some(json!({"event": "activated",
                        "download_url": "https://x.example/dl\r\nBcc: evil@attacker.example"})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("download_url")),
        "{body}"
    );
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/disable-auto-renew",
            Some(json!({"requested_by": "ops@attacker.example\n"})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("requested_by")),
        "{body}"
    );
    // Neither was recorded: the activation is queued now, as a first.
    let (status, body) = api
        .call(
            "post",
            "/subscriptions/S1/events",
            Some(json!({"event": "activated", "download_url": "https://x.example/dl"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, timeline) = api.call("get", "/subscriptions/S1/timeline", None).await;
    assert!(
        !timeline.to_string().contains("attacker"),
        "no disable request recorded: {timeline}"
    );
}
