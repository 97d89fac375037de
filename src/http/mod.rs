//! The HTTP API for the marketplace (off unless `http.bind` is set): the same operations as
//! the CLI, behind a bearer token, with JSON errors that name the field; plus health,
//! readiness, metrics and the OpenAPI document. This module owns the routing table and the
//! server; each resource's handlers live in their own file.

mod auth;
mod disable;
mod error;
mod events;
mod health;
mod licenses;
mod request;
mod sending;
mod subscriptions;
mod timeline;
mod ui;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post, put};

use crate::outbox::Deliverer;

pub use error::ApiError;

/// Every route, as documented in `openapi.json` (a test keeps the two equal).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("put", "/subscriptions/{id}"),
    ("post", "/subscriptions/{id}/events"),
    ("put", "/subscriptions/{id}/licenses"),
    ("post", "/subscriptions/{id}/disable-auto-renew"),
    ("get", "/subscriptions/{id}/timeline"),
    ("get", "/sending"),
    ("post", "/sending/pause"),
    ("post", "/sending/resume"),
];

pub const OPENAPI: &str = include_str!("openapi.json");

pub struct HttpState {
    pub deliverer: Arc<Deliverer>,
    pub token: String,
}

pub fn router(state: Arc<HttpState>, body_limit: usize) -> Router {
    let protected = Router::new()
        .route("/subscriptions/{id}", put(subscriptions::put_subscription))
        .route("/subscriptions/{id}/events", post(events::post_event))
        .route("/subscriptions/{id}/licenses", put(licenses::put_licenses))
        .route(
            "/subscriptions/{id}/disable-auto-renew",
            post(disable::post_disable),
        )
        .route("/subscriptions/{id}/timeline", get(timeline::get_timeline))
        .route("/sending", get(sending::get_sending))
        .route("/sending/pause", post(sending::pause))
        .route("/sending/resume", post(sending::resume))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::auth));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .merge(protected)
        .with_state(state.clone())
        .merge(ui::router(state))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// Serves until `shutdown` resolves; requests in flight finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    body_limit: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, body_limit))
        .with_graceful_shutdown(shutdown)
        .await
}
