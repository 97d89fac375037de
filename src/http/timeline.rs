//! `GET /subscriptions/{id}/timeline`: the renewal dates, reminder states and disable requests
//! of one subscription, as of now or of `?at=`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::HttpState;
use super::error::ApiError;
use super::request::subscription_id;
use crate::service;

#[derive(Debug, Deserialize)]
pub(super) struct TimelineQuery {
    at: Option<String>,
}

pub(super) async fn get_timeline(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> Result<Response, ApiError> {
    let sid = subscription_id(&id)?;
    let d = &state.deliverer;
    let at = match q.at {
        Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
            .map(|t| t.to_utc())
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{t:?} is not an RFC 3339 timestamp"),
                    Some("at"),
                )
            })?,
        None => d.clock.now(),
    };
    let report =
        service::timeline::timeline_report(&d.store, &d.settings, &d.calendars, &sid, at).await?;
    Ok(Json(report.view()).into_response())
}
