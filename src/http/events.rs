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
    let d = &state.deliverer;
    let outcome = service::record_event(
        &d.store,
        &d.settings,
        d.clock.now(),
        &sid,
        event,
        url.as_ref(),
    )
    .await
    .map_err(|e| match e {
        ServiceError::Invalid(msg) => ApiError::invalid("download_url", msg),
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
        EventOutcome::AlreadyRecorded { outbox_id, state } => {
            Json(json!({"outbox_id": outbox_id, "status": state, "already_recorded": true}))
                .into_response()
        }
    })
}
