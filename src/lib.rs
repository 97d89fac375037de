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
