//! renewal-worker: lifecycle mail for vendor subscriptions sold on a cloud marketplace.

pub mod app;
pub mod calendar;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod import;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod renewal;
pub mod source;
pub mod store;
pub mod telemetry;

/// Makes rustls with ring the process's TLS provider (the one stack lettre and sqlx use too).
/// HTTP clients need it installed before they are built; calling it again is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
