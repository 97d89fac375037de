//! The API's error answer, `{"error": ..., "field": ...}`, and how the service's errors map
//! onto status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::service::ServiceError;

/// An error as the API answers it: `{"error": ..., "field": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, error: impl Into<String>, field: Option<&str>) -> Self {
        Self {
            status,
            error: error.into(),
            field: field.map(str::to_owned),
        }
    }

    /// A field of the request that is present but wrong (422).
    pub(super) fn invalid(field: &str, e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), Some(field))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "field": self.field})),
        )
            .into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::UnknownSubscription(_) => {
                Self::new(StatusCode::NOT_FOUND, e.to_string(), None)
            }
            ServiceError::UnknownReseller(_) => {
                Self::new(StatusCode::NOT_FOUND, e.to_string(), Some("id"))
            }
            ServiceError::Field { field, message } => Self::invalid(field, message),
            ServiceError::Conflict(msg) => Self::new(StatusCode::CONFLICT, msg, None),
            ServiceError::Licenses(e) => Self::invalid("assigned", e),
            ServiceError::Invalid(msg) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, msg, None),
            other => {
                tracing::error!(error = %other, "request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the worker's log",
                    None,
                )
            }
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}
