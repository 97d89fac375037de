//! What the routes under `/subscriptions/{id}` read from a request: the subscription id in the
//! path and the JSON object sent as the body, each error naming the field at fault.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::domain::SubscriptionId;

/// A write to one subscription: its id from the path and the fields of the JSON body.
pub(super) struct SubscriptionBody {
    pub id: SubscriptionId,
    pub fields: Map<String, Value>,
}

impl<S: Send + Sync> FromRequest<S> for SubscriptionBody {
    // A path axum cannot decode keeps axum's own answer, so the rejection is a whole response.
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Path(id) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let payload = Json::<Value>::from_request(Request::from_parts(parts, body), state).await;
        // A wrong id is told before a wrong body.
        let id = subscription_id(&id).map_err(IntoResponse::into_response)?;
        let fields = object(payload).map_err(IntoResponse::into_response)?;
        Ok(Self { id, fields })
    }
}

/// The path's subscription id; a malformed one is a 400 naming `id`.
pub(super) fn subscription_id(id: &str) -> Result<SubscriptionId, ApiError> {
    SubscriptionId::parse(id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string(), Some("id")))
}

fn object(payload: Result<Json<Value>, JsonRejection>) -> Result<Map<String, Value>, ApiError> {
    match payload {
        Ok(Json(Value::Object(m))) => Ok(m),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
            None,
        )),
        Err(rejection) => Err(ApiError::new(
            rejection.status(),
            rejection.body_text(),
            None,
        )),
    }
}

/// The text in `field`, if it is given at all.
pub(super) fn text_field<'a>(
    m: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be a string"),
        )),
    }
}

/// The text in `field`, if given, parsed by `parse`; a parse error names the field.
pub(super) fn optional<T, E: std::fmt::Display>(
    m: &Map<String, Value>,
    field: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, ApiError> {
    text_field(m, field)?
        .map(parse)
        .transpose()
        .map_err(|e| ApiError::invalid(field, e))
}

/// The text in `field`, which must be given, parsed by `parse`.
pub(super) fn required<T, E: std::fmt::Display>(
    m: &Map<String, Value>,
    field: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ApiError> {
    optional(m, field, parse)?
        .ok_or_else(|| ApiError::invalid(field, format!("`{field}` is required")))
}
