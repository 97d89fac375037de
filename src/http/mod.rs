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
mod lockout;
mod orders;
mod request;
mod sending;
mod subscriptions;
mod timeline;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
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
    ("post", "/subscriptions/{id}/abandon-order"),
    ("get", "/resellers/{id}/order-check"),
    ("get", "/sending"),
    ("post", "/sending/pause"),
    ("post", "/sending/resume"),
];

pub const OPENAPI: &str = include_str!("openapi.json");

pub struct HttpState {
    deliverer: Arc<Deliverer>,
    token_digest: [u8; 32],
    lockout: lockout::Lockout,
}

impl HttpState {
    /// The API's state: the bearer token it accepts, and the lockout settings of
    /// `deliverer.settings.http`.
    pub fn new(deliverer: Arc<Deliverer>, token: &str) -> Self {
        let http = &deliverer.settings.http;
        let lockout = lockout::Lockout::new(http.max_auth_failures, http.auth_lockout);
        Self {
            token_digest: auth::token_digest(token),
            lockout,
            deliverer,
        }
    }
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
        .route(
            "/subscriptions/{id}/abandon-order",
            post(orders::post_abandon),
        )
        .route("/resellers/{id}/order-check", get(orders::get_order_check))
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .merge(ui::router(state))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// API errors are JSON, a path that names no route too.
async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such route: {}", uri.path()),
        None,
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
        None,
    )
}

/// Serves until `shutdown` resolves; requests in flight finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    body_limit: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer's address is what the token lockout counts failures against.
    let app = router(state, body_limit).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
