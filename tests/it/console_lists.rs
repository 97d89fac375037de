//! The console's lists over more than a page holds, against what every row says when read
//! one by one: the mails of filters that no index serves, read a window of ids at a time, then
//! of filters an index serves, read at once.

use chrono::{DateTime, Duration, Utc};
use renewal_worker::store::{MailFilter, OutboxRow, OutboxState};

use crate::helpers::*;
use crate::mailbook::{self, Book};

/// Whether a mail matches a filter, said one mail at a time.
type Matches = Box<dyn Fn(&OutboxRow) -> bool>;

/// Every mail of the book, newest first.
async fn all_mails(app: &TestApp) -> Vec<OutboxRow> {
    let mut all = app.store.outbox_for_subscription(None).await.unwrap();
    all.reverse();
    all
}

/// The ids of every mail matching `filter`, reading pages of 50 mails the way the console's
/// "Older" links go, searching at most `scan` mails a page.
async fn paged(app: &TestApp, filter: &MailFilter, scan: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut before = None;
    for _ in 0..1_000 {
        let page = app
            .store
            .console_mails_scanning(filter, before, 50, scan)
            .await
            .unwrap();
        assert!(page.rows.windows(2).all(|w| w[0].id > w[1].id));
        if let Some((from, to)) = page.searched {
            assert!(to - from <= scan, "{from}..{to}");
            assert!(page.rows.iter().all(|r| (from..to).contains(&r.id)));
        }
        ids.extend(page.rows.iter().map(|r| r.id));
        match page.older {
            Some(b) => before = Some(b),
            None => return ids,
        }
    }
    panic!("no last page");
}

on_both_backends!(async mail_filters_no_index_serves_are_searched_a_window_at_a_time);
async fn mail_filters_no_index_serves_are_searched_a_window_at_a_time() {
    let app = TestApp::new(None, "").await;
    let now = Utc::now();
    // 500 subscriptions with mail, a dozen each; about a hundred mails a day.
    mailbook::fill(&app.settings.database.url, 2_000, 6_000, now)
        .await
        .unwrap();
    let all = all_mails(&app).await;
    assert_eq!(all.len(), 6_000);
    let reseller_of = |sub: &str| {
        let s: u64 = sub.trim_start_matches("BENCH-").parse().unwrap();
        Book::reseller(s % mailbook::RESELLERS)
    };
    // To the millisecond, as instants are stored.
    let day = DateTime::from_timestamp_millis(
        (now - Duration::days(mailbook::SPAN_DAYS / 2)).timestamp_millis(),
    )
    .unwrap();
    let cases: Vec<(MailFilter, Matches)> = vec![
        (
            MailFilter {
                recipient: Some("customer00042.example".into()),
                ..MailFilter::default()
            },
            Box::new(|r: &OutboxRow| {
                r.recipients
                    .iter()
                    .any(|a| a.contains("customer00042.example"))
            }),
        ),
        (
            MailFilter {
                reseller: Some(Book::reseller(7)),
                ..MailFilter::default()
            },
            Box::new(move |r: &OutboxRow| reseller_of(&r.subscription_id) == Book::reseller(7)),
        ),
        (
            MailFilter {
                kind: Some("subscription_ended".into()),
                state: Some(OutboxState::Sent),
                ..MailFilter::default()
            },
            Box::new(|r: &OutboxRow| {
                r.kind == "subscription_ended" && r.state == OutboxState::Sent
            }),
        ),
        (
            MailFilter {
                after: Some(day),
                before: Some(day + Duration::days(1)),
                ..MailFilter::default()
            },
            Box::new(move |r: &OutboxRow| {
                r.created_at >= day && r.created_at < day + Duration::days(1)
            }),
        ),
    ];
    for (filter, matches) in &cases {
        let expected: Vec<i64> = all.iter().filter(|r| matches(r)).map(|r| r.id).collect();
        assert!(!expected.is_empty(), "{filter:?}");
        assert_eq!(paged(&app, filter, 400).await, expected, "{filter:?}");
    }

    // A time range starts its search where its mail is: the first page is of that day, full.
    let (filter, _) = &cases[3];
    let first = app
        .store
        .console_mails_scanning(filter, None, 50, 400)
        .await
        .unwrap();
    assert_eq!(first.rows.len(), 50);

    // A subscription's mail, whatever its state (one of them being sent), and failed mail,
    // are read at once, through their indexes.
    let sending = all
        .iter()
        .find(|r| r.state == OutboxState::Sending)
        .expect("a mail being sent");
    let sub = sending.subscription_id.clone();
    let filter = MailFilter {
        subscription: Some(sub.clone()),
        ..MailFilter::default()
    };
    let page = app
        .store
        .console_mails_scanning(&filter, None, 50, 400)
        .await
        .unwrap();
    let expected: Vec<i64> = all
        .iter()
        .filter(|r| r.subscription_id == sub)
        .map(|r| r.id)
        .collect();
    assert!(expected.len() >= 4, "{expected:?}");
    assert_eq!(page.rows.iter().map(|r| r.id).collect::<Vec<_>>(), expected);
    assert_eq!((page.searched, page.older), (None, None));
    // On PostgreSQL the mail being sent is found through the owed index, the rest through the
    // one by subscription (which leaves mail being sent out).
    let plan = crate::explain::console_mails(&app.settings.database.url, &filter)
        .await
        .unwrap();
    assert!(plan.contains("outbox_subscription"), "{plan}");
    assert!(
        !plan.contains("Seq Scan") && !plan.contains("SCAN outbox"),
        "{plan}"
    );
    let failed = MailFilter {
        state: Some(OutboxState::Failed),
        ..MailFilter::default()
    };
    let expected: Vec<i64> = all
        .iter()
        .filter(|r| r.state == OutboxState::Failed)
        .map(|r| r.id)
        .collect();
    assert_eq!(paged(&app, &failed, 400).await, expected);
}
