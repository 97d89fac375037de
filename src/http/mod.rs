//! The HTTP API for the marketplace (off unless `http.bind` is set): the same operations as
//! the CLI, behind a bearer token, with JSON errors that name the field; plus health,
//! readiness, metrics and the OpenAPI document.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use crate::domain::{DownloadUrl, EmailAddress, ProvisioningEvent, SubscriptionId};
use crate::import::{ImportError, RawFile};
use crate::outbox::Deliverer;
use crate::service::{self, EventOutcome, ServiceError};

/// Every route, as documented in `openapi.json` (a test keeps the two equal).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("put", "/subscriptions/{id}"),
    ("post", "/subscriptions/{id}/events"),
    ("put", "/subscriptions/{id}/licenses"),
    ("post", "/subscriptions/{id}/disable-auto-renew"),
    ("get", "/subscriptions/{id}/timeline"),
];

pub const OPENAPI: &str = include_str!("openapi.json");

pub struct HttpState {
    pub deliverer: Arc<Deliverer>,
    pub token: String,
}

/// An error as the API answers it: `{"error": ..., "field": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>, field: Option<&str>) -> Self {
        Self {
            status,
            error: error.into(),
            field: field.map(str::to_owned),
        }
    }
    fn invalid(field: &str, e: impl std::fmt::Display) -> Self {
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

fn body(payload: Result<Json<Value>, JsonRejection>) -> Result<Map<String, Value>, ApiError> {
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

fn subscription_id(id: &str) -> Result<SubscriptionId, ApiError> {
    SubscriptionId::parse(id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string(), Some("id")))
}

fn text_field<'a>(m: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be a string"),
        )),
    }
}

async fn auth(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time: the comparison must not tell how much of a guess was right.
    if given.as_bytes().ct_eq(state.token.as_bytes()).into() {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
            None,
        )
        .into_response()
    }
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let d = &state.deliverer;
    let store = d.store.ping().await.map_err(|e| e.to_string());
    let mail = d.mailer.check(Duration::from_secs(5)).await;
    let status = if store.is_ok() && mail.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    (
        status,
        Json(json!({"store": show(&store), "mail": show(&mail)})),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let d = &state.deliverer;
    let now = d.clock.now();
    match d.store.queue_stats(now).await {
        Ok(stats) => {
            d.metrics.queue_depth.set(stats.pending_jobs);
            d.metrics
                .oldest_pending_seconds
                .set(stats.oldest_pending_seconds);
            d.metrics.owed_mails.set(stats.owed_mails);
        }
        Err(e) => tracing::warn!(error = %e, "queue gauges not refreshed"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        d.metrics.encode(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn put_subscription(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let sid = subscription_id(&id)?;
    let mut row = body(payload)?;
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

async fn post_event(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let sid = subscription_id(&id)?;
    let m = body(payload)?;
    let event = text_field(&m, "event")?
        .ok_or_else(|| ApiError::invalid("event", "`event` is required"))?;
    let event = ProvisioningEvent::parse(event).map_err(|e| ApiError::invalid("event", e))?;
    let url = text_field(&m, "download_url")?
        .map(DownloadUrl::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("download_url", e))?;
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

async fn put_licenses(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let sid = subscription_id(&id)?;
    let m = body(payload)?;
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

async fn post_disable(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
    payload: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let sid = subscription_id(&id)?;
    let m = body(payload)?;
    let by = text_field(&m, "requested_by")?
        .ok_or_else(|| ApiError::invalid("requested_by", "`requested_by` is required"))?;
    let by = EmailAddress::parse(by).map_err(|e| ApiError::invalid("requested_by", e))?;
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

#[derive(Debug, Deserialize)]
struct TimelineQuery {
    at: Option<String>,
}

async fn get_timeline(
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

pub fn router(state: Arc<HttpState>, body_limit: usize) -> Router {
    let protected = Router::new()
        .route("/subscriptions/{id}", put(put_subscription))
        .route("/subscriptions/{id}/events", post(post_event))
        .route("/subscriptions/{id}/licenses", put(put_licenses))
        .route("/subscriptions/{id}/disable-auto-renew", post(post_disable))
        .route("/subscriptions/{id}/timeline", get(get_timeline))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(protected)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves until `shutdown` resolves; requests in flight finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    body_limit: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, body_limit))
        .with_graceful_shutdown(shutdown)
        .await
}
