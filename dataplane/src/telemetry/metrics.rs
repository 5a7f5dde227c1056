//! Prometheus metrics, registered once at startup. Per-model handles are resolved when a
//! snapshot is built ([`Metrics::endpoint`]), so the request path increments atomics without a
//! label lookup for the common series.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A USD counter kept in whole millionths and shown in USD: a sum of float costs drifts into
/// noise (`0.000039999999999999999`), a sum of integers does not, and it is what budgets count.
#[derive(Clone, Debug, Default)]
pub struct UsdCounter(std::sync::Arc<AtomicU64>);

impl UsdCounter {
    pub fn inc_micros(&self, micros: u64) {
        self.0
            .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn micros(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl prometheus_client::metrics::TypedMetric for UsdCounter {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Counter;
}

impl prometheus_client::encoding::EncodeMetric for UsdCounter {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let usd = self.micros() as f64 / 1e6;
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&usd, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub status: u16,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub model: String,
    pub replica: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `namespace/policy#limit` or `namespace/budget`.
    pub limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub budget: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub budget: String,
    pub threshold: u8,
    pub result: &'static str,
}

/// The counter store's health, shared with the counters.
#[derive(Clone, Default)]
pub struct CounterMetrics {
    pub degraded: Gauge,
    pub errors: Counter,
    pub local_admissions: Counter,
    pub journal_dropped: Counter,
    pub journal: Gauge,
}

pub struct Metrics {
    registry: Registry,
    pub counters: CounterMetrics,
    pub rate_limited: Family<LimitLabels, Counter>,
    pub budget_exhausted: Family<LimitLabels, Counter>,
    pub fallbacks: Family<FallbackLabels, Counter>,
    pub alerts: Family<AlertLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<ModelLabel>,
    ttft: HistogramFamily<ModelLabel>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabel, UsdCounter>,
    pub in_flight: Gauge,
    snapshot_info: Family<VersionLabel, Gauge>,
    reloads: Family<ResultLabel, Counter>,
    pub config_valid: Gauge,
    upstream_attempts: Family<ReplicaLabels, Counter>,
    pub audit_dropped: Counter,
}

/// The series of one model, resolved once per snapshot.
#[derive(Clone)]
pub struct EndpointMetrics {
    /// `llmgate_requests_total{status="200",reason="ok"}` of this model, the common case.
    pub ok_requests: Counter,
    pub duration: Histogram,
    pub ttft: Histogram,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
    pub cost: UsdCounter,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~210 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 22))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("llmgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests by model, HTTP status and reason",
            requests.clone(),
        );
        let duration: HistogramFamily<ModelLabel> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to the last byte of the response",
            duration.clone(),
        );
        let ttft: HistogramFamily<ModelLabel> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time from request to the first byte of the model's answer",
            ttft.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens by model and kind (prompt, completion)",
            tokens.clone(),
        );
        let cost = Family::<ModelLabel, UsdCounter>::default();
        registry.register(
            "cost_usd",
            "Cost in USD from ModelEndpoint pricing",
            cost.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "API requests being served",
            in_flight.clone(),
        );
        let snapshot_info = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "snapshot_info",
            "The configuration snapshot being served (value 1)",
            snapshot_info.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by result (applied, unchanged, failed)",
            reloads.clone(),
        );
        let config_valid = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "1 when the last configuration change was applied, 0 when it was rejected",
            config_valid.clone(),
        );
        let upstream_attempts = Family::<ReplicaLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Upstream attempts by model, replica and outcome",
            upstream_attempts.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_records_dropped",
            "Audit records dropped because the sink could not keep up",
            audit_dropped.clone(),
        );
        let counters = CounterMetrics::default();
        registry.register(
            "counter_store_degraded",
            "1 while the shared counter store is unreachable and fail modes apply",
            counters.degraded.clone(),
        );
        registry.register(
            "counter_store_errors",
            "Failed or timed-out calls to the counter store",
            counters.errors.clone(),
        );
        registry.register(
            "counter_store_local_admissions",
            "Admissions decided against this replica's local allowance (degraded mode)",
            counters.local_admissions.clone(),
        );
        registry.register(
            "counter_store_journal_dropped",
            "Counts that could not be kept for replay (journal full)",
            counters.journal_dropped.clone(),
        );
        registry.register(
            "counter_store_journal_items",
            "Counts kept on this replica for replay into the counter store",
            counters.journal.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit",
            rate_limited.clone(),
        );
        let budget_exhausted = Family::<LimitLabels, Counter>::default();
        registry.register(
            "budget_exhausted",
            "Requests refused because a budget was spent and no fallback could serve them",
            budget_exhausted.clone(),
        );
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "budget_fallbacks",
            "Requests served by a fallback model because a budget was spent",
            fallbacks.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "budget_alerts",
            "Budget threshold alerts by budget, threshold and delivery result",
            alerts.clone(),
        );
        Metrics {
            registry,
            counters,
            rate_limited,
            budget_exhausted,
            fallbacks,
            alerts,
            requests,
            duration,
            ttft,
            tokens,
            cost,
            in_flight,
            snapshot_info,
            reloads,
            config_valid,
            upstream_attempts,
            audit_dropped,
        }
    }

    pub fn endpoint(&self, model: &str) -> EndpointMetrics {
        let m = ModelLabel {
            model: model.to_string(),
        };
        let tokens = |kind| {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: model.to_string(),
                    kind,
                })
                .clone()
        };
        EndpointMetrics {
            ok_requests: self
                .requests
                .get_or_create(&RequestLabels {
                    model: model.to_string(),
                    status: 200,
                    reason: "ok",
                })
                .clone(),
            duration: self.duration.get_or_create(&m).clone(),
            ttft: self.ttft.get_or_create(&m).clone(),
            prompt_tokens: tokens("prompt"),
            completion_tokens: tokens("completion"),
            cost: self.cost.get_or_create(&m).clone(),
        }
    }

    pub fn request(&self, model: &str, status: u16, reason: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_string(),
                status,
                reason,
            })
            .inc();
    }

    pub fn attempt(&self, model: &str, replica: &str, outcome: &'static str) {
        self.attempts(model, replica, outcome).inc();
    }

    /// The attempts counter of one replica and outcome, to keep as a handle.
    pub fn attempts(&self, model: &str, replica: &str, outcome: &'static str) -> Counter {
        self.upstream_attempts
            .get_or_create(&ReplicaLabels {
                model: model.to_string(),
                replica: replica.to_string(),
                outcome,
            })
            .clone()
    }

    pub fn snapshot_applied(&self, version: &str) {
        self.snapshot_info.clear();
        self.snapshot_info
            .get_or_create(&VersionLabel {
                version: version.to_string(),
            })
            .set(1);
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        self.config_valid.set(i64::from(result != "failed"));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
