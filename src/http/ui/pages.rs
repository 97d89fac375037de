//! The console's pages, rendered on the server. maud escapes every value it writes, so a
//! customer's name or a mail's subject is always text.

use axum::extract::{Path, RawQuery};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration as Span, Utc};
use maud::{DOCTYPE, Markup, html};

use super::search;
use super::{Console, PREVIEW_CSP, Role, Session, State, page_error};
use crate::domain::SubscriptionId;
use crate::service::ServiceError;
use crate::service::console as uc;
use crate::service::timeline::timeline_report;
use crate::store::{MAIL_SCAN, MailCounts, MailFilter, OutboxRow, OutboxState, PauseState};

/// Rows a list page shows at once.
const PAGE: u32 = 50;
/// Mails counted at most before a bulk action.
pub(super) const BULK_CAP: u32 = 10_000;

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console page failed");
    page_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the worker's log",
    )
}

/// The frame of every page: navigation, who is signed in, the pause banner.
fn layout(c: &Console, s: &Session, pause: &PauseState, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · renewal-worker" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                nav {
                    strong { "renewal-worker" }
                    a href="/ui/" { "Overview" }
                    a href="/ui/mails" { "Mails" }
                    a href="/ui/mails?state=failed" { "Dead mail" }
                    a href="/ui/renewals" { "Renewals" }
                    a href="/ui/disable-requests" { "Disable requests" }
                    a href="/ui/jobs" { "Jobs" }
                    a href="/ui/audit" { "Audit" }
                    span.who { (s.who()) }
                    form method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button { "Sign out" }
                    }
                }
                @if pause.paused {
                    div.banner #paused {
                        "Sending is paused"
                        @if let Some(by) = &pause.by { " by " (by) }
                        @if let Some(t) = pause.since { " since " (when(t)) }
                        ". No daemon claims new mail until it is resumed."
                        @if s.role == Role::Operator {
                            form method="post" action="/ui/sending" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                input type="hidden" name="paused" value="false";
                                button #resume { "Resume sending" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
                footer { "Worker " (c.http.deliverer.worker_name) }
            }
        }
    }
}

async fn frame(c: &Console, s: &Session, title: &str, body: Markup) -> Response {
    match c.http.deliverer.store.pause_state().await {
        Ok(p) => layout(c, s, &p, title, body).into_response(),
        Err(e) => internal(e),
    }
}

pub(super) async fn login(RawQuery(q): RawQuery) -> Markup {
    let failed = q.as_deref().is_some_and(|q| q.contains("failed"));
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Sign in · renewal-worker" }
                   link rel="stylesheet" href="/ui/assets/console.css"; }
            body { main.login {
                h1 { "renewal-worker console" }
                @if failed { p.error #login-error { "That token is not accepted." } }
                form method="post" action="/ui/login" {
                    label { "Your name (for the audit) " input name="name" required maxlength="60"; }
                    label { "Token (http.token, or http.read_only_token to look only) "
                            input type="password" name="token" required autocomplete="off"; }
                    button #sign-in { "Sign in" }
                }
            } }
        }
    }
}

fn counts_markup(c: &MailCounts) -> Markup {
    let cell = |id: &str, label: &str, n: i64, href: &str| {
        html! { a.count id={ "count-" (id) } href=(href) { span.n { (n) } span.l { (label) } } }
    };
    html! {
        div.counts {
            (cell("owed", "owed", c.owed, "/ui/mails?state=pending"))
            (cell("sending", "sending", c.sending, "/ui/mails?state=sending"))
            (cell("retrying", "retrying", c.retrying, "/ui/mails?state=pending"))
            (cell("failed", "failed (dead)", c.failed, "/ui/mails?state=failed"))
            (cell("sent", "sent in 48 h", c.sent_recently, "/ui/mails?state=sent"))
        }
    }
}

/// The counts that refresh themselves while the "live" box is ticked.
fn live_counts(counts: &MailCounts) -> Markup {
    html! {
        label.live { input type="checkbox" #live checked; " live" }
        div #counts data-refresh="/ui/fragment/counts" { (counts_markup(counts)) }
    }
}

pub(super) async fn counts_fragment(axum::extract::State(c): State, _s: Session) -> Response {
    let d = &c.http.deliverer;
    match d
        .store
        .console_counts(d.clock.now() - Span::hours(48))
        .await
    {
        Ok(counts) => counts_markup(&counts).into_response(),
        Err(e) => internal(e),
    }
}

/// Mail sent per hour over 48 hours as bars in inline SVG.
fn chart(now: DateTime<Utc>, per_hour: &[(DateTime<Utc>, i64)]) -> Markup {
    let start = now - Span::hours(47);
    let hour0 = start.timestamp().div_euclid(3600);
    let mut bars = [0i64; 48];
    for (t, n) in per_hour {
        let i = t.timestamp().div_euclid(3600) - hour0;
        if let Some(b) = usize::try_from(i).ok().and_then(|i| bars.get_mut(i)) {
            *b += n;
        }
    }
    let max = bars.iter().copied().max().unwrap_or(0).max(1);
    html! {
        svg.chart viewBox="0 0 480 110" role="img" aria-label="mail sent per hour, last 48 hours" {
            @for (i, n) in bars.iter().enumerate() {
                @let h = n * 100 / max;
                rect x=(i * 10) y=(100 - h) width="8" height=(h) {
                    title { (n) " sent, hour starting " (when(DateTime::from_timestamp((hour0 + i as i64) * 3600, 0).unwrap_or(now))) }
                }
            }
            line x1="0" y1="100" x2="480" y2="100";
            text x="0" y="110" { "48 h ago" }
            text x="440" y="110" { "now" }
        }
    }
}

pub(super) async fn overview(axum::extract::State(c): State, s: Session) -> Response {
    let d = &c.http.deliverer;
    let now = d.clock.now();
    let counts = match d.store.console_counts(now - Span::hours(48)).await {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    let hours = match d.store.sent_per_hour(now - Span::hours(47)).await {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    let unreminded = match uc::unreminded_cutoffs(d, Span::hours(72)).await {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    let daemons = match d.store.daemons().await {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    let relays = match d.store.relay_breakers().await {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    let silence =
        Span::from_std(crate::outbox::silence_limit(&d.settings.worker)).unwrap_or(Span::MAX);
    let next_poll = d.settings.poll.schedule.after(&now).next();
    let body = html! {
        section {
            h2 { "Mail by state" }
            (live_counts(&counts))
        }
        section {
            h2 { "Sent per hour, last 48 hours" }
            (chart(now, &hours))
        }
        section #alarms {
            h2 { "Alarms" }
            ul {
                @if counts.failed > 0 {
                    li.alarm { a href="/ui/mails?state=failed" { (counts.failed) " dead mail(s)" } ": failed for good; read why and retry them." }
                }
                @if counts.retrying >= 10 {
                    li.alarm { (counts.retrying) " mails are waiting to retry: is the relay refusing them?" }
                }
                @for r in &unreminded {
                    li.alarm {
                        "Cutoff of " a href={ "/ui/subscriptions/" (r.ctx.subscription.id.as_str()) } { (r.ctx.subscription.id.as_str()) }
                        " (" (r.ctx.customer.name) ") at " (when(r.timeline.cutoff_at)) " and a reminder due was not sent."
                    }
                }
                @for r in &relays {
                    li.alarm.relay {
                        "The relay " (r.relay) " refuses mail" @if r.state == "trial" { " (a probe got through; trying again)" }
                        " since " (when(r.down_since)) " (daemon " (r.daemon) ", " (r.probes_failed) " probe(s) failed"
                        @if let Some(e) = &r.last_error { ", last: " (e) }
                        "): its mail waits without spending attempts and goes once the relay answers."
                    }
                }
                @if counts.failed == 0 && counts.retrying < 10 && unreminded.is_empty() && relays.is_empty() {
                    li.ok { "Nothing needs you." }
                }
            }
        }
        @if s.role == Role::Operator {
            section {
                h2 { "Sending" }
                form method="post" action="/ui/sending" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="paused" value="true";
                    button #pause { "Pause sending (every daemon)" }
                }
            }
        }
        section {
            h2 { "Daemons" }
            table #daemons {
                thead { tr { th { "name" } th { "host" } th { "pid" } th { "version" } th { "started" } th { "last heartbeat" } } }
                tbody {
                    @for r in &daemons {
                        @let ago = now - r.last_beat_at;
                        tr class=(if ago > silence { "silent" } else { "alive" }) {
                            td { (r.name) } td { (r.host) } td { (r.pid) } td { (r.version) }
                            td { (when(r.started_at)) }
                            td { (ago.num_seconds().max(0)) " s ago"
                                 @if ago > silence { " (silent: its claimed mail is given back)" } }
                        }
                    }
                }
            }
            @if daemons.is_empty() { p { "No daemon is running: no mail is sent." } }
            p #next-poll { "Next poll: "
                @match next_poll { Some(t) => (when(t)), None => "never (the schedule has no next time)" }
                " · " a href="/ui/jobs" { "Jobs" } }
        }
    };
    frame(&c, &s, "Overview", body).await
}

fn state_label(r: &OutboxRow) -> &'static str {
    match r.state {
        OutboxState::Pending if r.attempts > 0 => "retrying",
        OutboxState::Pending => "owed",
        OutboxState::Failed => "failed",
        other => other.as_str(),
    }
}

pub(super) async fn mails(
    axum::extract::State(c): State,
    s: Session,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = search::pairs(q.as_deref().unwrap_or(""));
    let filter = match search::filter(&pairs) {
        Ok(f) => f,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, &e),
    };
    let before_id = search::first(&pairs, "before_id").and_then(|v| v.parse().ok());
    let d = &c.http.deliverer;
    let page = match d.store.console_mails(&filter, before_id, PAGE).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let rows = &page.rows;
    let counts = match d
        .store
        .console_counts(d.clock.now() - Span::hours(48))
        .await
    {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    let fpairs = search::to_pairs(&filter);
    let older = page.older.map(|id| {
        let mut p = fpairs.clone();
        p.push(("before_id", id.to_string()));
        format!("/ui/mails?{}", search::query(&p))
    });
    let get = |k: &str| search::first(&pairs, k).unwrap_or("").to_owned();
    let can_act = s.role == Role::Operator;
    let body = html! {
        @if let Some(done) = search::first(&pairs, "done") { p.done #done { "Done: " (done) } }
        (live_counts(&counts))
        form.filter method="get" action="/ui/mails" {
            input name="q" value=(get("q")) placeholder="to:ann@example.com kind:ready sub:S1 state:failed after:2026-12-01";
            select name="state" {
                option value="" { "any state" }
                @for st in ["pending", "sending", "sent", "failed", "skipped"] {
                    option value=(st) selected[filter.state.map(|x| x.as_str()) == Some(st)] { (st) }
                }
            }
            input name="kind" value=(filter.kind.clone().unwrap_or_default()) placeholder="kind";
            input name="sub" value=(filter.subscription.clone().unwrap_or_default()) placeholder="subscription";
            input name="reseller" value=(filter.reseller.clone().unwrap_or_default()) placeholder="reseller";
            input name="to" value=(filter.recipient.clone().unwrap_or_default()) placeholder="recipient";
            input name="after" value=(get("after")) placeholder="after (YYYY-MM-DD)";
            input name="before" value=(get("before")) placeholder="before (YYYY-MM-DD)";
            button #search { "Filter" }
        }
        form method="get" action="/ui/bulk" {
            @for (k, v) in &fpairs { input type="hidden" name=(k) value=(v); }
            @if can_act {
                div.bulk {
                    "Selected: "
                    button name="action" value="retry" { "Retry" }
                    button name="action" value="cancel" { "Cancel" }
                    " · All matching this filter: "
                    button #retry-all name="all" value="retry" { "Retry all" }
                    button #cancel-all name="all" value="cancel" { "Cancel all" }
                }
            }
            table.mails {
                thead { tr { th {} th { "id" } th { "state" } th { "kind" } th { "subscription" }
                             th { "to" } th { "attempts" } th { "owed since" } th { "last error" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { @if can_act { input type="checkbox" name="id" value=(r.id); } }
                            td { a href={ "/ui/mails/" (r.id) } { (r.id) } }
                            td { span class={ "state " (state_label(r)) } { (state_label(r)) } }
                            td { (r.kind) }
                            td { a href={ "/ui/subscriptions/" (r.subscription_id) } { (r.subscription_id) } }
                            td { (r.recipients.join(", ")) }
                            td { (r.attempts) }
                            td { (when(r.created_at)) }
                            td.err { (r.last_error.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p { "No mail matches." } }
        @if let (Some((from, to)), Some(_), true) = (page.searched, page.older, rows.len() < PAGE as usize) {
            p.note #searched { "Searched mails " (from) " to " (to - 1) " (at most " (MAIL_SCAN)
                " a page for this filter; a subscription or a failed or owed state searches them all at once): older ones may match too." }
        }
        @if let Some(href) = older { p { a href=(href) { "Older →" } } }
    };
    frame(&c, &s, "Mails", body).await
}

async fn row_or_404(c: &Console, id: i64) -> Result<OutboxRow, Response> {
    match c.http.deliverer.store.outbox_by_id(id).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(page_error(
            StatusCode::NOT_FOUND,
            &format!("no mail with id {id}"),
        )),
        Err(e) => Err(internal(e)),
    }
}

pub(super) async fn mail(
    axum::extract::State(c): State,
    s: Session,
    Path(id): Path<i64>,
) -> Response {
    let row = match row_or_404(&c, id).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let d = &c.http.deliverer;
    let attempts = match d.store.attempts(id).await {
        Ok(a) => a,
        Err(e) => return internal(e),
    };
    let preview = uc::preview(d, &row).await;
    let can_act = s.role == Role::Operator;
    let body = html! {
        dl.mail {
            dt { "Key" } dd #key { (row.key) }
            dt { "State" } dd #state { span class={ "state " (state_label(&row)) } { (state_label(&row)) } }
            dt { "Recipients" } dd { (row.recipients.join(", ")) }
            dt { "Subscription" } dd { a href={ "/ui/subscriptions/" (row.subscription_id) } { (row.subscription_id) } }
            dt { "Message-ID" } dd { (row.message_id) }
            dt { "Owed since" } dd { (when(row.created_at)) }
            @if let Some(t) = row.sent_at { dt { "Sent" } dd { (when(t)) } }
            @if let Some(e) = &row.last_error { dt { "Last error" } dd.err #last-error { (e) } }
        }
        @if can_act {
            p.actions {
                @if row.state == OutboxState::Failed {
                    a.button #retry href={ "/ui/mails/" (id) "/retry" } { "Retry now…" }
                }
                @if row.state == OutboxState::Pending {
                    a.button #cancel href={ "/ui/mails/" (id) "/cancel" } { "Cancel…" }
                }
            }
        }
        h2 { "Delivery attempts" }
        table #attempts {
            thead { tr { th { "#" } th { "started" } th { "took" } th { "outcome" } th { "SMTP code" } th { "reply" } th { "worker" } } }
            tbody {
                @for a in &attempts {
                    tr {
                        td { (a.attempt) }
                        td { (when(a.started_at)) }
                        td { ((a.finished_at - a.started_at).num_milliseconds()) " ms" }
                        td { (a.outcome) }
                        td.code { (a.smtp_code.map(|c| c.to_string()).unwrap_or_default()) }
                        td.reply { (a.detail.clone().unwrap_or_default()) }
                        td { (a.worker) }
                    }
                }
            }
        }
        @if attempts.is_empty() { p { "No attempt yet." } }
        h2 { "Content " small { "(rendered from the subscription's current records) · " a #eml href={ "/ui/mails/" (id) "/eml" } download { "raw .eml" } } }
        @match &preview {
            Ok(p) => {
                p { strong { "Subject: " } span #subject { (p.subject) } }
                iframe #preview src={ "/ui/mails/" (id) "/preview" } sandbox="" title="HTML part" {}
                details { summary { "Text part" } pre #text { (p.text) } }
            }
            Err(e) => { p.error { "Cannot render this mail: " (e) } }
        }
    };
    frame(&c, &s, &format!("Mail {id}"), body).await
}

/// The HTML part alone, under a sandboxing policy of its own.
pub(super) async fn preview(
    axum::extract::State(c): State,
    _s: Session,
    Path(id): Path<i64>,
) -> Response {
    let row = match row_or_404(&c, id).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    match uc::preview(&c.http.deliverer, &row).await {
        Ok(p) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, PREVIEW_CSP),
            ],
            p.html,
        )
            .into_response(),
        Err(e) => page_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}

pub(super) async fn eml(
    axum::extract::State(c): State,
    _s: Session,
    Path(id): Path<i64>,
) -> Response {
    let row = match row_or_404(&c, id).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    match uc::preview(&c.http.deliverer, &row).await {
        Ok(p) => (
            [
                (header::CONTENT_TYPE, "message/rfc822".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"mail-{id}.eml\""),
                ),
            ],
            p.eml,
        )
            .into_response(),
        Err(e) => page_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}

pub(super) async fn confirm_one(
    axum::extract::State(c): State,
    s: Session,
    Path((id, action)): Path<(i64, String)>,
) -> Response {
    let row = match row_or_404(&c, id).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let question = match action.as_str() {
        "retry" => "Send this failed mail again now?",
        "cancel" => "Call off this owed mail? It will not be sent.",
        other => return page_error(StatusCode::NOT_FOUND, &format!("no action {other:?}")),
    };
    let body = html! {
        p { (question) } p { "Mail " (id) ": " (row.key) " to " (row.recipients.join(", ")) }
        form method="post" action={ "/ui/mails/" (id) "/" (action) } {
            input type="hidden" name="csrf" value=(s.csrf);
            button #confirm { "Yes, " (action) }
            " " a href={ "/ui/mails/" (id) } { "No, go back" }
        }
    };
    frame(&c, &s, "Confirm", body).await
}

/// What a bulk form asks: `action` on the ids checked, or `all` matching the filter.
pub(super) async fn confirm_bulk(
    axum::extract::State(c): State,
    s: Session,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = search::pairs(q.as_deref().unwrap_or(""));
    let filter = match search::filter(&pairs) {
        Ok(f) => f,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, &e),
    };
    let all = search::first(&pairs, "all");
    let action = all.or(search::first(&pairs, "action")).unwrap_or("");
    if !matches!(action, "retry" | "cancel") {
        return page_error(
            StatusCode::BAD_REQUEST,
            &format!("action: {action:?} is not retry or cancel"),
        );
    }
    // Only failed mail is retried and only owed mail cancelled: the count says so.
    let mut filter = filter;
    filter.state = Some(if action == "retry" {
        OutboxState::Failed
    } else {
        OutboxState::Pending
    });
    let ids: Vec<i64> = pairs
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let fpairs = search::to_pairs(&filter);
    let body = if all.is_some() {
        let (n, newest) = match c
            .http
            .deliverer
            .store
            .console_count(&filter, BULK_CAP)
            .await
        {
            Ok(x) => x,
            Err(e) => return internal(e),
        };
        html! {
            p #bulk-count { (n) " mail(s) match this filter"
                @if n >= i64::from(BULK_CAP) { " (at least; " (BULK_CAP) " are acted on at most)" }
                ": " (action) " them?" }
            @if let Some(newest) = newest {
                form method="post" action="/ui/bulk" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="action" value=(action);
                    input type="hidden" name="newest" value=(newest);
                    @for (k, v) in &fpairs { input type="hidden" name=(k) value=(v); }
                    button #confirm { "Yes, " (action) " " (n) " mail(s)" }
                }
            }
        }
    } else {
        html! {
            p #bulk-count { (ids.len()) " mail(s) selected: " (action) " them? (Only those still "
                (if action == "retry" { "failed" } else { "owed" }) " are changed.)" }
            form method="post" action="/ui/bulk" {
                input type="hidden" name="csrf" value=(s.csrf);
                input type="hidden" name="action" value=(action);
                @for id in &ids { input type="hidden" name="id" value=(id); }
                button #confirm { "Yes, " (action) }
            }
        }
    };
    frame(&c, &s, "Confirm bulk action", body).await
}

pub(super) async fn renewals(
    axum::extract::State(c): State,
    s: Session,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = search::pairs(q.as_deref().unwrap_or(""));
    let days = match search::first(&pairs, "days").map(str::parse::<u16>) {
        None => 30,
        Some(Ok(d)) if (1..=366).contains(&d) => d,
        Some(_) => {
            return page_error(
                StatusCode::BAD_REQUEST,
                "days: expected a whole number of days from 1 to 366",
            );
        }
    };
    let list = match uc::renewals(&c.http.deliverer, Span::days(i64::from(days))).await {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    let body = html! {
        form.filter method="get" action="/ui/renewals" {
            label { "Cutoffs in the next " input name="days" value=(days) size="3"; " days" }
            button { "Show" }
        }
        table #renewals {
            thead { tr { th { "subscription" } th { "customer" } th { "term end" } th { "cutoff (reseller's zone)" }
                         th { "licenses" } th { "auto-renew" } th { "reminders" } } }
            tbody {
                @for r in &list {
                    @let v = r.view();
                    tr {
                        td { a href={ "/ui/subscriptions/" (v.subscription) } { (v.subscription) } }
                        td.customer { (r.ctx.customer.name) }
                        td { (v.term_end) }
                        td { (v.cutoff_at) }
                        td { (v.assigned_licenses) }
                        td { (if v.auto_renew { "on" } else { "off" }) }
                        td { @for rem in &v.reminders { span class={ "state " (rem.state) } { (rem.offset) ": " (rem.state) } " " } }
                    }
                }
            }
        }
        @if list.is_empty() { p { "No cutoff in this window." } }
        p.note { "At most " (uc::RENEWALS_LIMIT) " subscriptions are read per page." }
    };
    frame(&c, &s, "Renewals", body).await
}

pub(super) async fn disable_requests(axum::extract::State(c): State, s: Session) -> Response {
    let list = match c.http.deliverer.store.recent_disable_requests(200).await {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    let body = html! {
        table {
            thead { tr { th { "decided" } th { "subscription" } th { "requested by" } th { "via" }
                         th { "decision" } th { "reason" } th { "effective term end" } } }
            tbody {
                @for (sub, r) in &list {
                    tr {
                        td { (when(r.decided_at)) }
                        td { a href={ "/ui/subscriptions/" (sub) } { (sub) } }
                        td { (r.requested_by) }
                        td { (r.via) }
                        td { (r.decision) }
                        td { (r.reason.clone().unwrap_or_default()) }
                        td { (r.effective_term_end.map(|d| d.to_string()).unwrap_or_default()) }
                    }
                }
            }
        }
        @if list.is_empty() { p { "No disable request yet." } }
    };
    frame(&c, &s, "Disable requests", body).await
}

pub(super) async fn jobs(axum::extract::State(c): State, s: Session) -> Response {
    let d = &c.http.deliverer;
    let list = match d.store.queue_jobs(None, 100).await {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    let can_act = s.role == Role::Operator;
    let body = html! {
        @if can_act {
            form method="post" action="/ui/poll-now" {
                input type="hidden" name="csrf" value=(s.csrf);
                button #poll-now { "Poll now" }
            }
        }
        table {
            thead { tr { th { "job" } th { "queue" } th { "status" } th { "attempts" } th { "runs / ran" } th { "last result" } th {} } }
            tbody {
                @for j in &list {
                    tr {
                        td { (j.key.clone().unwrap_or_else(|| j.id.clone())) }
                        td { (j.queue) }
                        td { (j.status) }
                        td { (j.attempts) "/" (j.max_attempts) }
                        td { (j.run_at.map(when).unwrap_or_default()) }
                        td { (j.last_result.clone().unwrap_or_default()) }
                        td { @if can_act && j.status == "dead" {
                            form method="post" action="/ui/jobs/retry" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                input type="hidden" name="id" value=(j.id);
                                button { "Retry" }
                            }
                        } }
                    }
                }
            }
        }
        p.note { "Mail is not a queue job: see " a href="/ui/mails" { "Mails" } "." }
    };
    frame(&c, &s, "Jobs", body).await
}

pub(super) async fn audit(axum::extract::State(c): State, s: Session) -> Response {
    let rows = match c.http.deliverer.store.audit(None, 200).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let body = html! {
        table #audit {
            thead { tr { th { "when" } th { "who" } th { "what" } th { "on" } th { "detail" } } }
            tbody {
                @for r in &rows {
                    tr { td { (when(r.at)) } td { (r.entry.who) } td { (r.entry.action) }
                         td { (r.entry.target) } td { (r.entry.detail.clone().unwrap_or_default()) } }
                }
            }
        }
        @if rows.is_empty() { p { "No operator action yet." } }
    };
    frame(&c, &s, "Audit", body).await
}

/// One subscription: the timeline `renewal-worker timeline` prints (term, cutoff in the
/// reseller's zone, reminders, disable requests, provisioning) and its newest mail.
pub(super) async fn subscription(
    axum::extract::State(c): State,
    s: Session,
    Path(id): Path<String>,
) -> Response {
    let id = match SubscriptionId::parse(&id) {
        Ok(id) => id,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let d = &c.http.deliverer;
    let report =
        match timeline_report(&d.store, &d.settings, &d.calendars, &id, d.clock.now()).await {
            Ok(r) => r,
            Err(ServiceError::UnknownSubscription(_)) => {
                return page_error(
                    StatusCode::NOT_FOUND,
                    &format!("no subscription with id {:?}", id.as_str()),
                );
            }
            Err(e) => return internal(e),
        };
    let filter = MailFilter {
        subscription: Some(id.as_str().to_owned()),
        ..MailFilter::default()
    };
    let mails = match d.store.console_mails(&filter, None, PAGE).await {
        Ok(r) => r.rows,
        Err(e) => return internal(e),
    };
    let v = report.view();
    let p = &v.provisioning;
    let ctx = &report.ctx;
    let body = html! {
        dl.mail #timeline {
            dt { "Customer" } dd.customer { (ctx.customer.name) " (" (ctx.customer.id.as_str()) ")" }
            dt { "Reseller" } dd { (ctx.reseller.name) " (" (ctx.reseller.id.as_str()) ")" }
            dt { "Plan" } dd { (ctx.subscription.plan) " (" (ctx.subscription.product_id) ")" }
            dt { "Calendar, zone" } dd { (v.calendar) ", " (v.timezone) }
            dt { "Term" } dd { (v.term_index) ": " (v.term_start) " to " (v.term_end) }
            dt { "Cutoff" } dd #cutoff { (v.cutoff_at) " (" (v.cutoff_date) ")" }
            dt { "Auto-renew" } dd #auto-renew { (if v.auto_renew { "on" } else { "off" })
                @if v.renews_once_more { " (renews once more)" }
                ", ends " (v.effective_term_end) }
            dt { "Assigned licenses" } dd { (v.assigned_licenses) }
            dt { "Can disable now" } dd { (if v.can_disable { "yes" } else { "no" })
                @if let Some(r) = v.reason { " (" (r) ")" } }
            dt { "As of" } dd { (v.at) }
        }
        h2 { "Reminders" }
        table #reminders {
            thead { tr { th { "offset" } th { "date" } th { "due" } th { "state" } } }
            tbody { @for r in &v.reminders {
                tr { td { (r.offset) } td { (r.date) } td { (r.due_at) } td { span class={ "state " (r.state) } { (r.state) } } }
            } }
        }
        h2 { "Disable requests" }
        @if v.disable_requests.is_empty() { p { "None." } } @else {
            table {
                thead { tr { th { "decided" } th { "requested by" } th { "via" } th { "decision" } th { "reason" } th { "effective term end" } } }
                tbody { @for r in v.disable_requests {
                    tr { td { (when(r.decided_at)) } td { (r.requested_by) } td { (r.via) } td { (r.decision) }
                         td { (r.reason.clone().unwrap_or_default()) }
                         td { (r.effective_term_end.map(|d| d.to_string()).unwrap_or_default()) } }
                } }
            }
        }
        h2 { "Provisioning" }
        p #provisioning { (p.state) @if p.in_flight { " (in flight" @if let (Some(t), Some(m)) = (&p.stalls_at, p.missing_step) { "; stalls at " (t) " waiting for " (m) } ")" } }
        table {
            tbody {
                @for (step, t) in [("opened", &p.opened_at), ("ready", &p.ready_at), ("order processed", &p.order_processed_at), ("activated", &p.activated_at), ("abandoned", &p.abandoned_at)] {
                    @if let Some(t) = t { tr { td { (step) } td { (t) } } }
                }
            }
        }
        @if let Some(r) = p.abandon_reason { p { "Abandoned: " (r) } }
        h2 { "Mail " small { a href={ "/ui/mails?sub=" (id.as_str()) } { "all of it, with filters" } } }
        table.mails #history {
            thead { tr { th { "id" } th { "key" } th { "state" } th { "to" } th { "attempts" } th { "owed since" } th { "sent" } th { "last error" } } }
            tbody {
                @for r in &mails {
                    tr {
                        td { a href={ "/ui/mails/" (r.id) } { (r.id) } }
                        td { (r.key) }
                        td { span class={ "state " (state_label(r)) } { (state_label(r)) } }
                        td { (r.recipients.join(", ")) }
                        td { (r.attempts) }
                        td { (when(r.created_at)) }
                        td { (r.sent_at.map(when).unwrap_or_default()) }
                        td.err { (r.last_error.clone().unwrap_or_default()) }
                    }
                }
            }
        }
        @if mails.is_empty() { p { "No mail yet." } }
    };
    frame(&c, &s, &format!("Subscription {}", id.as_str()), body).await
}
