//! The console's lists over more than a page holds, against what every row says when read
//! one by one: the renewals of a window past a band of term ends whose cutoffs are behind
//! (more of them than a page), and the mails of filters that no index serves, read a window
//! of ids at a time, then of filters an index serves, read at once.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use renewal_worker::clock::ManualClock;
use renewal_worker::renewal;
use renewal_worker::service::{self, console as uc};
use renewal_worker::store::{MailFilter, OutboxRow, OutboxState};

use crate::helpers::*;
use crate::mailbook::{self, Book};

/// A Wednesday afternoon (UTC): late evening in Tokyo, morning in New York.
const NOW: &str = "2026-12-09T15:00:00Z";

on_both_backends!(async renewals_past_a_page_of_passed_cutoffs_are_all_found);
async fn renewals_past_a_page_of_passed_cutoffs_are_all_found() {
    let app = TestApp::new(None, "").await;
    let now: DateTime<Utc> = NOW.parse().unwrap();
    // About 41 term ends a day, on three calendars in four zones: the term ends of the next
    // week, whose cutoffs are behind, are more than a page of renewals.
    mailbook::fill(&app.settings.database.url, 15_000, 100, now)
        .await
        .unwrap();
    let d = app.deliverer(Arc::new(ManualClock::new(now)));
    let cutoffs: Vec<(DateTime<Utc>, String)> = app
        .store
        .active_subscription_contexts()
        .await
        .unwrap()
        .iter()
        .map(|ctx| {
            let cal = service::calendar_for(&d.settings, &d.calendars, &ctx.reseller).unwrap();
            let input = service::timeline_input(ctx);
            let t = renewal::timeline(&input, &cal, &d.settings.renewal, now).unwrap();
            (t.cutoff_at, ctx.subscription.id.as_str().to_owned())
        })
        .collect();
    let passed = cutoffs
        .iter()
        .filter(|(c, _)| *c < now && *c > now - Duration::days(30))
        .count();
    assert!(passed > uc::RENEWALS_LIMIT as usize, "{passed}");

    for days in [1, 2] {
        let until = now + Duration::days(days);
        let mut expected: Vec<(DateTime<Utc>, String)> = cutoffs
            .iter()
            .filter(|(c, _)| *c >= now && *c < until)
            .cloned()
            .collect();
        expected.sort();
        assert!(
            !expected.is_empty() && expected.len() < uc::RENEWALS_LIMIT as usize,
            "{days} day(s): {}",
            expected.len()
        );
        let got: Vec<(DateTime<Utc>, String)> = uc::renewals(&d, Duration::days(days))
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.timeline.cutoff_at,
                    r.ctx.subscription.id.as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(got, expected, "{days} day(s)");
    }

    // More in the window than a page: a page of them, soonest first, each as its own
    // timeline has it.
    let until = now + Duration::days(30);
    let page = uc::renewals(&d, Duration::days(30)).await.unwrap();
    assert_eq!(page.len(), uc::RENEWALS_LIMIT as usize);
    assert!(
        page.iter()
            .all(|r| r.timeline.cutoff_at >= now && r.timeline.cutoff_at < until)
    );
    assert!(
        page.windows(2)
            .all(|w| w[0].timeline.cutoff_at <= w[1].timeline.cutoff_at)
    );
    for r in page.iter().step_by(40) {
        let one = service::timeline::timeline_report(
            &d.store,
            &d.settings,
            &d.calendars,
            &r.ctx.subscription.id,
            now,
        )
        .await
        .unwrap();
        assert_eq!(one.timeline, r.timeline);
        assert_eq!(one.states, r.states);
        assert_eq!(one.requests, r.requests);
        assert_eq!(one.audit, r.audit);
    }
}

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
