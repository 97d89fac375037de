//! The operator's console under `/ui/`: server-rendered pages (maud), a stylesheet and a few
//! lines of script compiled in, no CDN. Sign-in trades the bearer token for a signed session
//! cookie ([`session`]); every form that changes something carries the session's CSRF token
//! and is written to the audit with the operator's name. Every answer carries a strict
//! Content-Security-Policy; a mail's HTML is shown only in a sandboxed frame from its own
//! route, so neither a template nor a customer's name can run script here.

mod actions;
mod pages;
mod search;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;

use super::HttpState;
pub use session::{Role, Session};

/// The console's policy: only its own script and style, no frames but its own previews,
/// forms only to itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";
/// A mail preview's policy: sandboxed (no script, an origin of its own), inline style and
/// embedded images only, framed only by the console.
const PREVIEW_CSP: &str = "sandbox; default-src 'none'; style-src 'unsafe-inline'; \
     img-src data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'";

pub(super) struct Console {
    pub http: Arc<HttpState>,
    keys: session::Keys,
    secure: bool,
}

type State = axum::extract::State<Arc<Console>>;

pub(super) fn router(http: Arc<HttpState>) -> Router {
    let settings = &http.deliverer.settings.http;
    let console = Arc::new(Console {
        keys: session::Keys::new(
            settings.token.expose_secret(),
            settings.read_only_token.expose_secret(),
        ),
        secure: settings.secure_cookies,
        http,
    });
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(pages::login).post(actions::login))
        .route("/ui/logout", post(actions::logout))
        .route("/ui/fragment/counts", get(pages::counts_fragment))
        .route("/ui/mails", get(pages::mails))
        .route("/ui/mails/{id}", get(pages::mail))
        .route("/ui/mails/{id}/preview", get(pages::preview))
        .route("/ui/mails/{id}/eml", get(pages::eml))
        .route(
            "/ui/mails/{id}/{action}",
            get(pages::confirm_one).post(actions::act_on_one),
        )
        .route("/ui/bulk", get(pages::confirm_bulk).post(actions::bulk))
        .route("/ui/renewals", get(pages::renewals))
        .route("/ui/subscriptions/{id}", get(pages::subscription))
        .route("/ui/disable-requests", get(pages::disable_requests))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/retry", post(actions::retry_job))
        .route("/ui/poll-now", post(actions::poll_now))
        .route("/ui/sending", post(actions::sending))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

/// Every console answer: the policy (the preview's own where it set one), no sniffing, no
/// referrer, never cached (pages show live state and the CSRF token).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("console.js"),
    )
        .into_response()
}

/// A signed-in operator; a request without a valid session is sent to the sign-in page.
impl FromRequestParts<Arc<Console>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let now = console.http.deliverer.clock.now();
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|h| session::cookie(h, session::COOKIE))
            .find_map(|c| console.keys.verify(c, now))
            .ok_or_else(|| Redirect::to("/ui/login").into_response())
    }
}

/// An answer that is a page of its own (an error, a refusal), as plain escaped HTML.
pub(super) fn page_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        maud::html! {
            (maud::DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "Console: " (status.as_u16()) }
                       link rel="stylesheet" href="/ui/assets/console.css"; }
                body { main { h1 { (status.canonical_reason().unwrap_or("error")) }
                       p.error { (message) } p { a href="/ui/" { "Back to the overview" } } } }
            }
        },
    )
        .into_response()
}
