//! renewal-worker: lifecycle mail for vendor subscriptions sold on a cloud marketplace.

pub mod calendar;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod http;
pub mod import;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod renewal;
pub mod retry;
pub mod service;
pub mod source;
pub mod store;
pub mod telemetry;

/// Makes rustls with ring the process's TLS provider (the one stack lettre and sqlx use too).
/// HTTP clients need it installed before they are built; calling it again is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The runtime the daemon and its commands run on: `worker.threads` threads, else one per
/// core. Multi-threaded even with one, so that a wait inside a synchronous callback
/// (`block_in_place`) can hand the thread's other tasks to another.
pub fn runtime(settings: &config::Settings) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = settings.worker.threads {
        builder.worker_threads(threads);
    }
    builder.thread_name("renewal-worker").enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::config;

    #[test]
    fn the_runtime_has_the_threads_configured() {
        for n in [1, 3] {
            let s =
                config::Settings::from_toml_overlay(&format!("[worker]\nthreads = {n}\n")).unwrap();
            let rt = super::runtime(&s).unwrap();
            assert_eq!(rt.metrics().num_workers(), n);
            assert_eq!(rt.block_on(async { 7 }), 7);
        }
    }
}
