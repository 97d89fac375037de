//! The unguarded routes for operators and tools: liveness, readiness, Prometheus metrics and
//! the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{HttpState, OPENAPI};
use crate::outbox::RelayState;

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let d = &state.deliverer;
    let store = d.store.ping().await.map_err(|e| e.to_string());
    let mail = d.mailer.check(Duration::from_secs(5)).await;
    let relay = d.relay.status();
    let status = if store.is_ok() && mail.is_ok() && relay.state != RelayState::Down {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    (
        status,
        Json(json!({"store": show(&store), "mail": show(&mail), "relay": relay})),
    )
        .into_response()
}

pub(super) async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let d = &state.deliverer;
    let now = d.clock.now();
    let relay = d.relay.status();
    d.metrics
        .relay_up
        .set(i64::from(relay.state != RelayState::Down));
    d.metrics.relay_down_seconds.set(relay.down_seconds);
    d.metrics
        .relay_probes_failed
        .set(i64::from(relay.probes_failed));
    match d.store.queue_stats(now).await {
        Ok(stats) => {
            d.metrics.queue_depth.set(stats.pending_jobs);
            d.metrics
                .oldest_pending_seconds
                .set(stats.oldest_pending_seconds);
            d.metrics.owed_mails.set(stats.owed_mails);
        }
        Err(e) => tracing::warn!(error = %e, "queue gauges not refreshed"),
    }
    // Read from the store, so steps recorded by any process (CLI, puller, another daemon)
    // are counted.
    match d.store.overlapping_orders().await {
        Ok(n) => {
            d.metrics.overlapping_orders.set(n);
        }
        Err(e) => tracing::warn!(error = %e, "overlapping orders gauge not refreshed"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        d.metrics.encode(),
    )
        .into_response()
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
