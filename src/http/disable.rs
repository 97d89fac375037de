//! `POST /subscriptions/{id}/disable-auto-renew`: ask to stop the renewal; the vendor's rules
//! decide, and the decision is final.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::error::ApiError;
use super::request::{SubscriptionBody, required, text_field};
use crate::domain::EmailAddress;
use crate::service;

pub(super) async fn post_disable(
    State(state): State<Arc<HttpState>>,
    SubscriptionBody { id: sid, fields: m }: SubscriptionBody,
) -> Result<Response, ApiError> {
    let by = required(&m, "requested_by", EmailAddress::parse)?;
    let key = match text_field(&m, "request_id")? {
        Some(k) if !k.is_empty() && k.len() <= 128 => k.to_owned(),
        Some(_) => return Err(ApiError::invalid("request_id", "1 to 128 characters")),
        None => crate::jobs::new_request_key("http"),
    };
    let d = &state.deliverer;
    let now = d.clock.now();
    let outcome = service::request_disable(
        &d.store,
        &d.settings,
        &d.calendars,
        &sid,
        &by,
        now,
        now,
        "http",
        &key,
    )
    .await?;
    let status = if outcome.accepted() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(outcome)).into_response())
}
