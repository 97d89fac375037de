//! `PUT /subscriptions/{id}`: create or update a subscription with the same checks as `import`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HttpState;
use super::error::ApiError;
use super::request::{SubscriptionBody, text_field};
use crate::import::{ImportError, RawFile};
use crate::service::{self, ServiceError};

pub(super) async fn put_subscription(
    State(state): State<Arc<HttpState>>,
    SubscriptionBody {
        id: sid,
        fields: mut row,
    }: SubscriptionBody,
) -> Result<Response, ApiError> {
    if let Some(given) = text_field(&row, "id")?
        && given != sid.as_str()
    {
        return Err(ApiError::invalid(
            "id",
            format!("{given:?} differs from the path's {:?}", sid.as_str()),
        ));
    }
    row.insert("id".into(), Value::String(sid.as_str().to_owned()));
    // References must be text (the checks would take a number as its text).
    text_field(&row, "reseller_id")?;
    text_field(&row, "customer_id")?;
    let raw = RawFile {
        subscriptions: vec![row],
        ..RawFile::default()
    };
    let d = &state.deliverer;
    // The same checks as `import`, so the two ways in can never disagree.
    match service::check_and_upsert(&d.store, &d.calendars, &raw, d.clock.now(), |_| {}).await {
        Ok(_) => {}
        Err(ServiceError::Records(ImportError::Invalid(issues))) => {
            let first = &issues[0];
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": first.message,
                    "field": first.field,
                    "problems": issues.iter().map(|i| json!({"field": i.field, "error": i.message})).collect::<Vec<_>>(),
                })),
            )
                .into_response());
        }
        Err(ServiceError::Records(e)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string(), None));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Json(json!({"subscription": sid.as_str(), "status": "stored"})).into_response())
}
