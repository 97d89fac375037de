//! `PUT /subscriptions/{id}/licenses`: set the licenses assigned to end users.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HttpState;
use super::error::ApiError;
use super::request::SubscriptionBody;
use crate::service;

pub(super) async fn put_licenses(
    State(state): State<Arc<HttpState>>,
    SubscriptionBody { id: sid, fields: m }: SubscriptionBody,
) -> Result<Response, ApiError> {
    let n = m
        .get("assigned")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::invalid("assigned", "`assigned` must be a whole number"))?;
    let change = service::set_assigned_licenses(&state.deliverer.store, &sid, n).await?;
    Ok(Json(
        json!({"subscription": sid.as_str(), "assigned": change.assigned, "previous": change.previous}),
    )
    .into_response())
}
