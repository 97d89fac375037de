//! `POST /subscriptions/{id}/events`: record a provisioning event; its mail is queued once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::HttpState;
use super::error::ApiError;
use super::request::{SubscriptionBody, optional, required};
use crate::domain::{DownloadUrl, ProvisioningEvent};
use crate::service::{self, EventOutcome, ServiceError};

pub(super) async fn post_event(
    State(state): State<Arc<HttpState>>,
    SubscriptionBody { id: sid, fields: m }: SubscriptionBody,
) -> Result<Response, ApiError> {
    let event = required(&m, "event", ProvisioningEvent::parse)?;
    let url = optional(&m, "download_url", DownloadUrl::parse)?;
    if event == ProvisioningEvent::Activated && url.is_none() {
        return Err(ApiError::invalid(
            "download_url",
            "`activated` needs a download_url (an https:// link)",
        ));
    }
    let correct = match m.get("correct") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::invalid(
                "correct",
                format!("expected true or false, found {other}"),
            ));
        }
    };
    let d = &state.deliverer;
    let outcome = service::record_event_correcting(
        &d.store,
        &d.settings,
        d.clock.now(),
        &sid,
        event,
        url.as_ref(),
        // The API's one token says the marketplace asked, not which of its people.
        correct.then_some("api"),
    )
    .await
    .map_err(|e| match e {
        ServiceError::Invalid(msg) => ApiError::invalid("download_url", msg),
        ServiceError::Conflict(msg) => {
            ApiError::new(StatusCode::CONFLICT, msg, Some("download_url"))
        }
        other => other.into(),
    })?;
    Ok(match outcome {
        EventOutcome::Queued {
            outbox_id,
            recipients,
        } => (
            StatusCode::ACCEPTED,
            Json(json!({"outbox_id": outbox_id, "status": "queued", "recipients": recipients})),
        )
            .into_response(),
        EventOutcome::Corrected {
            outbox_id,
            key,
            recipients,
            old_url,
        } => (
            StatusCode::ACCEPTED,
            Json(
                json!({"outbox_id": outbox_id, "status": "queued", "key": key,
                        "recipients": recipients, "corrected": true, "old_download_url": old_url}),
            ),
        )
            .into_response(),
        EventOutcome::AlreadyRecorded { outbox_id, state } => {
            Json(json!({"outbox_id": outbox_id, "status": state, "already_recorded": true}))
                .into_response()
        }
    })
}
