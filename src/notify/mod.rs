//! Notifications: which mails exist and who gets each ([`kind`]), what identifies each one
//! in the outbox ([`keys`]), the facts each kind carries ([`facts`]), and what its templates
//! see ([`context`]) and make of it ([`render`]).

mod context;
mod facts;
mod keys;
mod kind;
mod render;
mod templates;

pub use context::{CustomerView, MailContext, MarketplaceView, ResellerView, SubscriptionView};
pub use facts::{
    ActivatedFacts, DisabledFacts, EndedFacts, FactsError, MailFacts, RejectedFacts, ReminderFacts,
    RenewedFacts, StalledFacts,
};
pub use keys::{
    activation_correction_key, disabled_key, message_id, provisioning_key, rejected_key,
    reminder_key, stalled_key, term_key,
};
pub use kind::{NotificationKind, address_list, answer_recipients};
pub use render::{Rendered, Renderer, TemplateError, sample_context};
pub use templates::{TemplateFiles, export_built_in};
