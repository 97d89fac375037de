//! `GET /resellers/{id}/order-check`: whether the reseller may start a new order now (409
//! naming the order in flight when it may not); `POST /subscriptions/{id}/abandon-order`: an
//! operator's abandon of an order that will not complete.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::HttpState;
use super::error::ApiError;
use super::request::{SubscriptionBody, text_field};
use crate::domain::ResellerId;
use crate::service;

pub(super) async fn get_order_check(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let reseller = ResellerId::parse(&id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string(), Some("id")))?;
    let check = service::order_check(&state.deliverer.store, &reseller).await?;
    let status = if check.can_order {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(check)).into_response())
}

pub(super) async fn post_abandon(
    State(state): State<Arc<HttpState>>,
    SubscriptionBody { id: sid, fields: m }: SubscriptionBody,
) -> Result<Response, ApiError> {
    let reason = text_field(&m, "reason")?
        .ok_or_else(|| ApiError::invalid("reason", "`reason` is required: say why"))?;
    let d = &state.deliverer;
    service::abandon_order(&d.store, &sid, reason, "http", d.clock.now()).await?;
    Ok(Json(json!({"subscription": sid.as_str(), "status": "abandoned"})).into_response())
}
