//! Process metrics in Prometheus text format. Counters and histograms are updated where the
//! work happens; queue gauges are read from the store when scraped.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MailLabels {
    pub kind: String,
    pub outcome: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub jobs: Family<JobLabels, Counter>,
    pub mails: Family<MailLabels, Counter>,
    pub poll_seconds: Histogram,
    pub smtp_seconds: Histogram,
    pub record_wait_seconds: Histogram,
    pub queue_depth: Gauge,
    pub oldest_pending_seconds: Gauge,
    pub owed_mails: Gauge,
    pub overlapping_orders: Gauge,
    pub relay_up: Gauge,
    pub relay_down_seconds: Gauge,
    pub relay_probes_failed: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let jobs = Family::<JobLabels, Counter>::default();
        let mails = Family::<MailLabels, Counter>::default();
        let poll_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let smtp_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let record_wait_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let queue_depth = Gauge::default();
        let oldest_pending_seconds = Gauge::default();
        let owed_mails = Gauge::default();
        let overlapping_orders = Gauge::default();
        let relay_up = Gauge::default();
        let relay_down_seconds = Gauge::default();
        let relay_probes_failed = Gauge::default();
        let mut r = Registry::with_prefix("renewal_worker");
        r.register("jobs", "Jobs run, by kind and outcome", jobs.clone());
        r.register(
            "mails",
            "Mails by kind and outcome (sent, retry, failed, skipped)",
            mails.clone(),
        );
        r.register(
            "poll_duration_seconds",
            "Duration of one poll",
            poll_seconds.clone(),
        );
        r.register(
            "smtp_send_duration_seconds",
            "Duration of handing one mail to the transport (its two steps, not the wait for a send slot between them)",
            smtp_seconds.clone(),
        );
        r.register(
            "record_wait_seconds",
            "From the server's answer to a mail until its record commits: how long a crash would send it again; its send slot is held meanwhile",
            record_wait_seconds.clone(),
        );
        r.register("queue_depth", "Jobs waiting to run", queue_depth.clone());
        r.register(
            "oldest_pending_job_age_seconds",
            "Age of the oldest job waiting to run",
            oldest_pending_seconds.clone(),
        );
        r.register(
            "owed_mails",
            "Mails owed and not yet sent",
            owed_mails.clone(),
        );
        r.register(
            "overlapping_orders",
            "Provisioning steps recorded while another order of the same reseller was in flight (flagged overlapping_order in the audit)",
            overlapping_orders.clone(),
        );
        r.register(
            "relay_up",
            "1 while the mail relay takes mail (breaker closed or on trial), 0 while it is down",
            relay_up.clone(),
        );
        r.register(
            "relay_down_seconds",
            "How long the relay breaker has been open (0 while the relay is up)",
            relay_down_seconds.clone(),
        );
        r.register(
            "relay_probes_failed",
            "Probes of the relay that failed since the breaker opened",
            relay_probes_failed.clone(),
        );
        Self {
            relay_up,
            relay_down_seconds,
            relay_probes_failed,
            registry: Mutex::new(r),
            jobs,
            mails,
            poll_seconds,
            smtp_seconds,
            record_wait_seconds,
            queue_depth,
            oldest_pending_seconds,
            owed_mails,
            overlapping_orders,
        }
    }

    pub fn job(&self, kind: &str, ok: bool) {
        self.jobs
            .get_or_create(&JobLabels {
                kind: kind.to_owned(),
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }

    pub fn mail(&self, kind: &str, outcome: &str) {
        self.mails
            .get_or_create(&MailLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
