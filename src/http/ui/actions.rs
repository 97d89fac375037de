//! The console's forms that change something. Each checks the session's CSRF token and the
//! operator's role first, then calls the use case (which writes the audit row with the
//! change), then sends the browser back to a page that shows the result.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use super::search;
use super::session::{COOKIE, LIFETIME};
use super::{Console, Role, Session, State, page_error};
use crate::service::console as uc;
use crate::store::MailTarget;

/// A posted form as its pairs.
type Fields = Vec<(String, String)>;

fn fields(body: &str) -> Fields {
    search::pairs(body)
}

/// The refusal of a form without this session's CSRF token, or from a read-only session.
fn refused(s: &Session, f: &Fields) -> Option<Response> {
    let given = search::first(f, "csrf").unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(s.csrf.as_bytes())) {
        return Some(page_error(
            StatusCode::FORBIDDEN,
            "csrf: the form's token is missing or not this session's; reload the page and try again",
        ));
    }
    if s.role != Role::Operator {
        return Some(page_error(
            StatusCode::FORBIDDEN,
            "signed in with the read-only token: this console may look, not change",
        ));
    }
    None
}

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console action failed");
    page_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; nothing was changed (see the worker's log)",
    )
}

fn set_cookie(c: &Console, value: &str, max_age: i64) -> HeaderValue {
    let secure = if c.secure { "; Secure" } else { "" };
    let v =
        format!("{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    // The value is base64url and digits only.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(super) async fn login(axum::extract::State(c): State, body: String) -> Response {
    let f = fields(&body);
    let token = search::first(&f, "token").unwrap_or("");
    let name: String = search::first(&f, "name")
        .unwrap_or("operator")
        .chars()
        .filter(|ch| !ch.is_control())
        .take(60)
        .collect();
    let Some(role) = c.keys.role_of(token) else {
        tracing::warn!("console sign-in refused: wrong token");
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, "/ui/login?failed")],
        )
            .into_response();
    };
    let value = c.keys.issue(&name, role, c.http.deliverer.clock.now());
    let mut r = Redirect::to("/ui/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&c, &value, LIFETIME.num_seconds()),
    );
    r
}

pub(super) async fn logout(axum::extract::State(c): State, s: Session, body: String) -> Response {
    let f = fields(&body);
    let given = search::first(&f, "csrf").unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(s.csrf.as_bytes())) {
        return page_error(StatusCode::FORBIDDEN, "csrf: the form's token is missing");
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&c, "", 0));
    r
}

pub(super) async fn act_on_one(
    axum::extract::State(c): State,
    s: Session,
    Path((id, action)): Path<(i64, String)>,
    body: String,
) -> Response {
    let f = fields(&body);
    if let Some(r) = refused(&s, &f) {
        return r;
    }
    let d = &c.http.deliverer;
    let target = MailTarget::Ids(vec![id]);
    let done = match action.as_str() {
        "retry" => uc::retry_mails(&d.store, &target, &s.who(), d.clock.now()).await,
        "cancel" => uc::cancel_mails(&d.store, &target, &s.who(), d.clock.now()).await,
        other => return page_error(StatusCode::NOT_FOUND, &format!("no action {other:?}")),
    };
    match done {
        Ok(_) => Redirect::to(&format!("/ui/mails/{id}")).into_response(),
        Err(e) => failed(e),
    }
}

pub(super) async fn bulk(axum::extract::State(c): State, s: Session, body: String) -> Response {
    let f = fields(&body);
    if let Some(r) = refused(&s, &f) {
        return r;
    }
    let target = match search::first(&f, "newest") {
        Some(n) => {
            let Ok(newest) = n.parse::<i64>() else {
                return page_error(
                    StatusCode::BAD_REQUEST,
                    &format!("newest: {n:?} is not a mail id"),
                );
            };
            match search::filter(&f) {
                Ok(filter) => MailTarget::Matching { filter, newest },
                Err(e) => return page_error(StatusCode::BAD_REQUEST, &e),
            }
        }
        None => {
            let mut ids = Vec::new();
            for (_, v) in f.iter().filter(|(k, _)| k == "id") {
                match v.parse::<i64>() {
                    Ok(i) => ids.push(i),
                    Err(_) => {
                        return page_error(
                            StatusCode::BAD_REQUEST,
                            &format!("id: {v:?} is not a mail id"),
                        );
                    }
                }
            }
            MailTarget::Ids(ids)
        }
    };
    let d = &c.http.deliverer;
    let action = search::first(&f, "action").unwrap_or("");
    let done = match action {
        "retry" => uc::retry_mails(&d.store, &target, &s.who(), d.clock.now()).await,
        "cancel" => uc::cancel_mails(&d.store, &target, &s.who(), d.clock.now()).await,
        other => {
            return page_error(
                StatusCode::BAD_REQUEST,
                &format!("action: {other:?} is not retry or cancel"),
            );
        }
    };
    match done {
        Ok(n) => Redirect::to(&format!(
            "/ui/mails?{}",
            search::query(&[("done", format!("{action}: {n} mail(s)"))])
        ))
        .into_response(),
        Err(e) => failed(e),
    }
}

pub(super) async fn sending(axum::extract::State(c): State, s: Session, body: String) -> Response {
    let f = fields(&body);
    if let Some(r) = refused(&s, &f) {
        return r;
    }
    let paused = match search::first(&f, "paused") {
        Some("true") => true,
        Some("false") => false,
        other => {
            return page_error(
                StatusCode::BAD_REQUEST,
                &format!("paused: {other:?} is not true or false"),
            );
        }
    };
    let d = &c.http.deliverer;
    match uc::set_paused(&d.store, paused, &s.who(), d.clock.now()).await {
        Ok(_) => Redirect::to("/ui/").into_response(),
        Err(e) => failed(e),
    }
}

pub(super) async fn poll_now(axum::extract::State(c): State, s: Session, body: String) -> Response {
    let f = fields(&body);
    if let Some(r) = refused(&s, &f) {
        return r;
    }
    match uc::poll_now_by(&c.http.deliverer, &s.who()).await {
        Ok(_) => Redirect::to("/ui/jobs").into_response(),
        Err(e) => failed(e),
    }
}

pub(super) async fn retry_job(
    axum::extract::State(c): State,
    s: Session,
    body: String,
) -> Response {
    let f = fields(&body);
    if let Some(r) = refused(&s, &f) {
        return r;
    }
    let Some(id) = search::first(&f, "id") else {
        return page_error(StatusCode::BAD_REQUEST, "id: missing");
    };
    let d = &c.http.deliverer;
    match uc::retry_job(&d.store, id, &s.who(), d.clock.now()).await {
        Ok(true) => Redirect::to("/ui/jobs").into_response(),
        Ok(false) => page_error(
            StatusCode::CONFLICT,
            &format!("job {id:?} is not dead (or no longer exists): nothing to retry"),
        ),
        Err(e) => failed(e),
    }
}
