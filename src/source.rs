//! The pulling source: changed resellers, customers, subscriptions and provisioning events
//! from the marketplace's changes feed, page by page from a persisted `updated_since` cursor.
//! Rows get the same checks as `import`; a bad row is reported and skipped, never half-applied.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::calendar::CalendarRegistry;
use crate::config::Settings;
use crate::domain::{DownloadUrl, ProvisioningEvent, SubscriptionId};
use crate::import::{ImportError, RawFile};
use crate::retry::Backoff;
use crate::service::{self, EventOutcome, ServiceError};
use crate::store::{Store, StoreError};

/// The cursor's name in the store.
const SOURCE: &str = "marketplace";
/// The longest wait between two tries of one page.
const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source.url is not set")]
    Off,
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} sent a page that is not the expected JSON: {reason}")]
    Page { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Page {
    resellers: Vec<Map<String, Value>>,
    customers: Vec<Map<String, Value>>,
    subscriptions: Vec<Map<String, Value>>,
    events: Vec<Map<String, Value>>,
    next_cursor: Option<String>,
    has_more: bool,
}

/// What one pull applied and what it skipped (with why).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PullReport {
    pub pages: u32,
    pub resellers: usize,
    pub customers: usize,
    pub subscriptions: usize,
    pub events_recorded: usize,
    pub events_already_recorded: usize,
    pub skipped: Vec<String>,
    pub cursor: Option<String>,
}

/// The feed's URL fit for messages: a password in it (`https://user:pw@...`, `?password=`)
/// hidden. reqwest's own messages repeat the URL, so theirs is taken without it.
fn shown(url: &url::Url) -> String {
    crate::config::redacted_url(url.as_str())
}

fn client(settings: &Settings) -> Result<reqwest::Client, SourceError> {
    crate::install_tls_provider();
    reqwest::Client::builder()
        .timeout(settings.source.timeout)
        .build()
        .map_err(|e| SourceError::Fetch {
            url: settings.source.url.as_ref().map(shown).unwrap_or_default(),
            reason: e.without_url().to_string(),
        })
}

/// One request for one row, no retry: whether the feed answers with a page (for `check`).
pub async fn probe(settings: &Settings) -> Result<(), SourceError> {
    let url = settings.source.url.as_ref().ok_or(SourceError::Off)?;
    let http = client(settings)?;
    let mut req = http.get(url.clone()).query(&[("limit", "1")]);
    if !settings.source.token.expose_secret().is_empty() {
        req = req.bearer_auth(settings.source.token.expose_secret());
    }
    let resp = req.send().await.map_err(|e| SourceError::Fetch {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        return Err(SourceError::Status {
            url: url.to_string(),
            status,
            body: String::new(),
        });
    }
    resp.json::<Page>()
        .await
        .map(|_| ())
        .map_err(|e| SourceError::Page {
            url: url.to_string(),
            reason: e.to_string(),
        })
}

async fn fetch(
    http: &reqwest::Client,
    settings: &Settings,
    url: &url::Url,
    cursor: Option<&str>,
) -> Result<Page, SourceError> {
    let s = &settings.source;
    let mut query: Vec<(&str, String)> = vec![("limit", s.page_size.to_string())];
    if let Some(c) = cursor {
        query.push(("updated_since", c.to_owned()));
    }
    let backoff = Backoff::new(s.initial_backoff, MAX_WAIT);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = http.get(url.clone()).query(&query);
        if !s.token.expose_secret().is_empty() {
            req = req.bearer_auth(s.token.expose_secret());
        }
        let result = match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                return resp.json::<Page>().await.map_err(|e| SourceError::Page {
                    url: shown(url),
                    reason: e.without_url().to_string(),
                });
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body: String = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(500)
                    .collect();
                let err = SourceError::Status {
                    url: shown(url),
                    status,
                    body,
                };
                // A 4xx will not get better by asking again (but 429 might).
                if (400..500).contains(&status) && status != 429 {
                    return Err(err);
                }
                err
            }
            Err(e) => SourceError::Fetch {
                url: shown(url),
                reason: e.without_url().to_string(),
            },
        };
        if attempt >= s.max_attempts {
            return Err(result);
        }
        let wait = backoff.delay(attempt);
        warn!(error = %result, attempt, retry_in = ?wait, "pull failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

fn describe(section: &str, row: &Map<String, Value>, what: &str) -> String {
    let id = row.get("id").and_then(Value::as_str).unwrap_or("?");
    format!("{section} {id}: {what}")
}

/// Applies the valid rows of a page in one transaction; reports and drops the others (and,
/// in turn, rows that referred to them).
async fn apply_rows(
    store: &Store,
    calendars: &CalendarRegistry,
    mut raw: RawFile,
    now: DateTime<Utc>,
    report: &mut PullReport,
) -> Result<(), SourceError> {
    for _ in 0..10 {
        match service::check_and_upsert(store, calendars, &raw, now, |_| {}).await {
            Ok(counts) => {
                report.resellers += counts.resellers;
                report.customers += counts.customers;
                report.subscriptions += counts.subscriptions;
                return Ok(());
            }
            Err(ServiceError::Records(ImportError::Invalid(issues))) => {
                let mut bad: BTreeSet<(&'static str, usize)> = BTreeSet::new();
                for issue in &issues {
                    bad.insert((issue.section, issue.row - 1));
                }
                for (section, rows) in [
                    ("resellers", &mut raw.resellers),
                    ("customers", &mut raw.customers),
                    ("subscriptions", &mut raw.subscriptions),
                ] {
                    let mut index = 0;
                    rows.retain(|row| {
                        let keep = !bad.contains(&(section, index));
                        if !keep {
                            let why: Vec<String> = issues
                                .iter()
                                .filter(|i| i.section == section && i.row - 1 == index)
                                .map(|i| format!("`{}`: {}", i.field, i.message))
                                .collect();
                            report.skipped.push(describe(section, row, &why.join("; ")));
                        }
                        index += 1;
                        keep
                    });
                }
            }
            Err(ServiceError::Records(e)) => {
                return Err(SourceError::Page {
                    url: String::new(),
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One pull: every page from the stored cursor on.
pub async fn pull(
    store: &Store,
    settings: &Settings,
    calendars: &CalendarRegistry,
    now: DateTime<Utc>,
) -> Result<PullReport, SourceError> {
    let Some(url) = &settings.source.url else {
        return Err(SourceError::Off);
    };
    let http = client(settings)?;
    let mut report = PullReport {
        cursor: store.source_cursor(SOURCE).await?,
        ..PullReport::default()
    };
    loop {
        let page = fetch(&http, settings, url, report.cursor.as_deref()).await?;
        report.pages += 1;
        let raw = RawFile {
            resellers: page.resellers,
            customers: page.customers,
            subscriptions: page.subscriptions,
        };
        apply_rows(store, calendars, raw, now, &mut report).await?;
        for event in &page.events {
            let text = |f: &str| event.get(f).and_then(Value::as_str);
            let parsed = (|| -> Result<_, String> {
                let sub = SubscriptionId::parse(text("subscription_id").unwrap_or_default())
                    .map_err(|e| format!("`subscription_id`: {e}"))?;
                let kind = ProvisioningEvent::parse(text("event").unwrap_or_default())
                    .map_err(|e| format!("`event`: {e}"))?;
                let url = text("download_url")
                    .map(DownloadUrl::parse)
                    .transpose()
                    .map_err(|e| format!("`download_url`: {e}"))?;
                Ok((sub, kind, url))
            })();
            let label = format!(
                "event {} {}",
                text("subscription_id").unwrap_or("?"),
                text("event").unwrap_or("?")
            );
            match parsed {
                Err(why) => report.skipped.push(format!("{label}: {why}")),
                Ok((sub, kind, url)) => {
                    match service::record_event(store, settings, now, &sub, kind, url.as_ref())
                        .await
                    {
                        Ok(EventOutcome::Queued { .. } | EventOutcome::Corrected { .. }) => {
                            report.events_recorded += 1
                        }
                        Ok(EventOutcome::AlreadyRecorded { .. }) => {
                            report.events_already_recorded += 1
                        }
                        Err(
                            e @ (ServiceError::UnknownSubscription(_)
                            | ServiceError::Invalid(_)
                            | ServiceError::Conflict(_)),
                        ) => {
                            report.skipped.push(format!("{label}: {e}"));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        // The cursor moves only once the page is applied: a crash re-applies it, harmlessly
        // (upserts, and events keyed in the outbox).
        if let Some(next) = &page.next_cursor {
            store.set_source_cursor(SOURCE, next, now).await?;
            report.cursor = Some(next.clone());
        }
        if !page.has_more || page.next_cursor.is_none() {
            break;
        }
    }
    for s in &report.skipped {
        warn!(skipped = %s, "row from the marketplace skipped");
    }
    info!(
        pages = report.pages,
        subscriptions = report.subscriptions,
        events = report.events_recorded,
        skipped = report.skipped.len(),
        "pulled from the marketplace"
    );
    Ok(report)
}
