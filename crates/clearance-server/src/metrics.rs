//! Prometheus metrics. Labels carry decisions and reasons, never principals or keys.

use std::sync::Mutex;

use clearance_model::{Decision, DenyReason};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    refused: Family<RefusalLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    latency: Histogram,
    auth_failures: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let decisions = Family::<DecisionLabels, Counter>::default();
        // 100 µs to about 3 s.
        let latency = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let auth_failures = Counter::default();
        let mut registry = Registry::with_prefix("clearance");
        registry.register(
            "decisions",
            "Authorization decisions by result and deny reason",
            decisions.clone(),
        );
        registry.register(
            "authorize_duration_seconds",
            "Time to answer POST /v1/authorize, including the durable log append",
            latency.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests with a missing, unknown or revoked API key",
            auth_failures.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed on arrival because the server (server_full) or the peer's address \
             (address_full) already held its limit of open connections",
            refused.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            refused,
            decisions,
            latency,
            auth_failures,
        }
    }

    pub fn decision(&self, decision: Decision, reasons: &[DenyReason]) {
        let reason = reasons.first().map_or("none", |r| r.as_str());
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: decision.as_str(),
                reason,
            })
            .inc();
    }

    pub fn authorize_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    pub fn connection_refused(&self, why: crate::listen::Refusal) {
        self.refused
            .get_or_create(&RefusalLabels { reason: why.as_str() })
            .inc();
    }

    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
