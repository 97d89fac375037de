//! The bearer token that guards the routes under `/subscriptions`, and the lockout of an
//! address that keeps sending wrong ones.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::HttpState;
use super::error::ApiError;
use super::lockout::Client;

/// What the token is compared as: a digest has the same length whatever was sent, so the
/// comparison takes the same time for a guess of any length.
pub(super) fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(super) async fn auth(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let client = Client::of(
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    );
    let now = state.deliverer.clock.now();
    // A locked-out address is not told whether its token was right.
    if let Some(wait) = state.lockout.locked(client, now) {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many wrong bearer tokens from this address; try again later",
            None,
        )
        .into_response();
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return response;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token_digest(given).ct_eq(&state.token_digest).into() {
        state.lockout.succeeded(client);
        next.run(request).await
    } else {
        if state.lockout.failed(client, now) {
            tracing::warn!(
                client = ?client,
                lockout = %humantime::format_duration(state.deliverer.settings.http.auth_lockout),
                "too many wrong bearer tokens; the address is answered 429 for a while"
            );
        }
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
            None,
        )
        .into_response()
    }
}
