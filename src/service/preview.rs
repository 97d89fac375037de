//! `render`: the mail of one kind for one subscription as the daemon would send it, as of an
//! instant. A mail of that kind recorded by then is rendered from its own row (key, recipients,
//! facts), exactly as a send lane renders it; otherwise its facts are worked out from the
//! subscription's data by the same rules the poll, the events and disable requests use.
//! Nothing is sent or recorded.

use chrono::{DateTime, Utc};

use super::{
    ServiceError, calendar_for, poll::reminder_facts, poll::stalled_facts, timeline_input,
};
use crate::domain::{DownloadUrl, SubscriptionContext, SubscriptionId};
use crate::mail::OutgoingMail;
use crate::notify::{
    ActivatedFacts, DisabledFacts, EndedFacts, MailFacts, NotificationKind, RejectedFacts,
    RenewedFacts, address_list, disabled_key, provisioning_key, rejected_key, reminder_key,
    stalled_key, term_key,
};
use crate::outbox::Deliverer;
use crate::renewal::{self, DisableDecision};
use crate::store::OutboxState;

/// A mail rendered for preview.
#[derive(Debug)]
pub struct Preview {
    pub key: String,
    pub recipients: Vec<String>,
    /// The outbox row it was rendered from, if one was recorded by then: (id, state).
    pub recorded: Option<(i64, String)>,
    pub mail: OutgoingMail,
    pub message: lettre::Message,
}

/// The mail of `kind` for `subscription` as of `at`. `download_url` previews an activation
/// mail with that link instead of the recorded one.
pub async fn preview(
    deliverer: &Deliverer,
    subscription: &SubscriptionId,
    kind: NotificationKind,
    at: DateTime<Utc>,
    download_url: Option<&DownloadUrl>,
) -> Result<Preview, ServiceError> {
    if let (Some(url), false) = (download_url, kind == NotificationKind::Activated) {
        return Err(ServiceError::Invalid(format!(
            "--download-url {:?} only goes with the `activated` kind, not `{}`",
            url.as_str(),
            kind.as_str()
        )));
    }
    let store = &deliverer.store;
    let mut ctx = super::subscription(store, subscription).await?;
    let sid = subscription.as_str();
    let recorded = match download_url {
        Some(_) => None,
        None => store
            .outbox_for_subscription(Some(sid))
            .await?
            .into_iter()
            .filter(|r| r.kind == kind.as_str() && r.created_at <= at)
            // A reminder recorded as skipped was never meant to go out.
            .filter(|r| r.state != OutboxState::Skipped)
            .max_by_key(|r| r.id),
    };
    let (key, recipients, facts, row) = match recorded {
        Some(row) => {
            let facts = MailFacts::parse(kind, &row.payload)
                .map_err(|e| ServiceError::Invalid(format!("mail #{}: {e}", row.id)))?;
            (
                row.key,
                row.recipients,
                facts,
                Some((row.id, row.state.as_str().to_owned())),
            )
        }
        None => {
            let (key, facts) = derived(deliverer, &ctx, kind, at, download_url)?;
            if let MailFacts::SubscriptionRenewed(r) = &facts {
                // Sent once the renewal is recorded: the mail shows the new term.
                ctx.subscription.term_end = r.new_term_end;
            }
            let to = kind.addressees(&ctx, &deliverer.settings.marketplace);
            (key, address_list(&to), facts, None)
        }
    };
    let (mail, message) = deliverer
        .compose(kind, &ctx, facts, &recipients, &key)
        .map_err(ServiceError::Invalid)?;
    Ok(Preview {
        key,
        recipients,
        recorded: row,
        mail,
        message,
    })
}

/// The key and facts a mail of `kind` would get from the subscription's data at `at`.
fn derived(
    deliverer: &Deliverer,
    ctx: &SubscriptionContext,
    kind: NotificationKind,
    at: DateTime<Utc>,
    download_url: Option<&DownloadUrl>,
) -> Result<(String, MailFacts), ServiceError> {
    let settings = &deliverer.settings;
    let sid = ctx.subscription.id.as_str();
    let input = timeline_input(ctx);
    let calendar = || calendar_for(settings, &deliverer.calendars, &ctx.reseller);
    let reseller = ctx.reseller.email.clone();
    Ok(match kind {
        NotificationKind::Ready => (provisioning_key(sid, kind), MailFacts::Ready {}),
        NotificationKind::OrderProcessed => {
            (provisioning_key(sid, kind), MailFacts::OrderProcessed {})
        }
        NotificationKind::Activated => {
            let url = download_url.ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "no activation of {sid} is recorded: give the link to show with \
                     --download-url"
                ))
            })?;
            (
                provisioning_key(sid, kind),
                MailFacts::Activated(ActivatedFacts::first(url.clone())),
            )
        }
        NotificationKind::RenewalReminder => {
            let calendar = calendar()?;
            let policy = &settings.renewal;
            let reminders = renewal::reminders(input.term_end, &calendar, input.tz, policy)?;
            // The reminder last due by `at`, else the first still to come.
            let reminder = reminders
                .iter()
                .rev()
                .find(|r| r.due_at <= at)
                .or(reminders.first())
                .ok_or_else(|| {
                    ServiceError::Invalid("renewal.reminder_offsets is empty: no reminder".into())
                })?;
            let cutoff_date =
                renewal::cutoff_date(input.term_end, &calendar, policy.cutoff_business_days)?;
            let cutoff_at = renewal::cutoff_instant(cutoff_date, input.tz);
            let offset = reminder.offset.to_string();
            (
                reminder_key(sid, input.term_end, &offset),
                MailFacts::RenewalReminder(reminder_facts(
                    settings,
                    ctx,
                    input.tz,
                    input.term_end,
                    offset,
                    cutoff_date,
                    cutoff_at,
                )),
            )
        }
        NotificationKind::SubscriptionRenewed => {
            let k = renewal::term_index_at(
                input.term_start,
                input.term_end.pred_opt().unwrap_or(input.term_end),
            );
            let new_term_end = renewal::term_end(input.term_start, k + 1).ok_or_else(|| {
                ServiceError::Invalid(format!("no term follows {}", input.term_end))
            })?;
            let renews_again = match input.disable_effective_term_end {
                Some(stop) => stop > new_term_end,
                None => input.auto_renew,
            };
            (
                term_key(sid, kind, input.term_end),
                MailFacts::SubscriptionRenewed(RenewedFacts {
                    term_end: input.term_end,
                    new_term_start: input.term_end,
                    new_term_end,
                    renews_again,
                }),
            )
        }
        NotificationKind::SubscriptionEnded => {
            let term_end = input
                .disable_effective_term_end
                .unwrap_or(input.term_end)
                .max(input.term_end);
            (
                term_key(sid, kind, term_end),
                MailFacts::SubscriptionEnded(EndedFacts { term_end }),
            )
        }
        NotificationKind::AutoRenewDisabled => {
            let calendar = calendar()?;
            match renewal::decide_disable(&input, &calendar, &settings.renewal, at)? {
                DisableDecision::Accepted {
                    effective_term_end,
                    renews_once_more,
                    cutoff_at,
                } => (
                    disabled_key(sid),
                    MailFacts::AutoRenewDisabled(DisabledFacts {
                        effective_term_end,
                        renews_once_more,
                        term_end: input.term_end,
                        requested_by: reseller,
                        cutoff_at: cutoff_at.with_timezone(&input.tz).fixed_offset(),
                    }),
                ),
                DisableDecision::Rejected {
                    assigned_licenses, ..
                } => {
                    return Err(ServiceError::Invalid(format!(
                        "a request to disable auto-renew of {sid} at {at} would be rejected \
                         ({assigned_licenses} assigned): render disable-rejected instead"
                    )));
                }
                DisableDecision::AlreadyDisabled { .. } => {
                    return Err(ServiceError::Invalid(format!(
                        "auto-renew of {sid} is off already and no confirmation is recorded"
                    )));
                }
            }
        }
        NotificationKind::OrderStalled => {
            let after = settings.provisioning.stall_after;
            let stall = renewal::stall::stall(
                &ctx.subscription.provisioning,
                after,
                &*calendar()?,
                input.tz,
            )?
            .ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "no order of {sid} is in flight: there is no stall to show"
                ))
            })?;
            (
                stalled_key(sid, stall.last_step.as_str()),
                MailFacts::OrderStalled(stalled_facts(&stall, settings, input.tz)),
            )
        }
        NotificationKind::DisableRejected => (
            rejected_key(sid, "preview"),
            MailFacts::DisableRejected(RejectedFacts {
                assigned_licenses: input.assigned_licenses,
                requested_by: reseller,
                term_end: input.term_end,
            }),
        ),
    })
}
