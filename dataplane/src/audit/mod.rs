//! Audit records: one per API request, whatever its outcome. [`AuditRecord`] is the contract the
//! later ClickHouse and S3 sinks write; field names are stable snake_case and only grow.
//!
//! Records are handed to a writer ([`jsonl`]: JSON lines to stdout or a file, on a plain
//! thread) over a bounded channel so the request path never waits on disk; a full channel drops
//! the record and counts it in `llmgate_audit_records_dropped_total`.

pub mod jsonl;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::llm::types::Usage;

#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    pub request_id: String,
    /// RFC 3339, when the request arrived.
    #[serde(serialize_with = "rfc3339")]
    pub started_at: jiff::Timestamp,
    /// RFC 3339, when the last byte was sent (or the client went away).
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: jiff::Timestamp,
    /// `chat.completions`, `embeddings`, `models.list`, `models.retrieve`.
    pub operation: &'static str,
    pub stream: bool,
    /// How the caller authenticated: `api_key`, `oidc`, or `none` when it did not.
    pub auth_method: &'static str,
    pub key_id: Option<Arc<str>>,
    /// `namespace/name` of the IdentityProvider that issued the caller's token.
    pub identity_provider: Option<Arc<str>>,
    /// The caller's groups, from their token.
    pub groups: Vec<Arc<str>>,
    pub user: Option<Arc<str>>,
    pub service_account: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    /// `namespace/policy#rule` that allowed or denied the call.
    pub policy_rule: Option<Arc<str>>,
    pub model_requested: Option<String>,
    pub model_served: Option<Arc<str>>,
    pub provider: Option<&'static str>,
    pub replica: Option<Arc<str>>,
    /// The model id sent upstream.
    pub upstream_model: Option<Arc<str>>,
    /// The model (version) the upstream says it ran.
    pub upstream_model_version: Option<String>,
    pub attempts: u32,
    pub status: u16,
    /// `None` on success, else a bounded reason (`upstream_timeout`, `client_disconnected`, …);
    /// the same values as the `reason` label of `llmgate_requests_total`.
    pub error_reason: Option<&'static str>,
    pub error_message: Option<String>,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    /// The cost in millionths of a USD, rounded up: what budgets are charged for this usage.
    pub cost_usd_micros: Option<u64>,
    /// What the budgets covering the served model were charged (the cost, or, for a request
    /// that ended without a usage report after producing output, its reservation).
    pub budget_charged_usd_micros: Option<u64>,
    /// The model asked for, when a spent budget sent the request to a fallback.
    pub fallback_from: Option<Arc<str>>,
    /// `budget_exhausted:<namespace/budget>`.
    pub fallback_reason: Option<Arc<str>>,
    /// `max_tokens` lowered to what the budget could pay for.
    pub max_tokens_clamped: Option<u64>,
    /// The rate limit (`namespace/policy#limit`) that refused the request.
    pub rate_limit: Option<Arc<str>>,
    /// Where limits and budgets were counted: `memory`, `redis`, `redis-cluster`, or `local`
    /// (this replica's allowance while Redis was unreachable).
    pub counters: Option<&'static str>,
    pub latency_ms: Latency,
    pub snapshot_version: Arc<str>,
}

// Timestamps are formatted by the writer thread, not on the request path.
fn rfc3339<S: serde::Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Latency {
    pub auth: f64,
    /// Time spent opening upstream connections (0 on a pooled connection).
    pub upstream_connect: f64,
    /// Request arrival to the first byte of the model's answer.
    pub time_to_first_token: Option<f64>,
    pub total: f64,
}

pub use jsonl::AuditWriter;

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditRecord>,
}

const QUEUE: usize = 65_536;

impl AuditSink {
    /// Starts the writer thread. `-` writes to stdout; anything else is a file opened for append.
    /// The returned handle finishes once every sink clone is dropped and the queue is written.
    pub fn start(target: &str) -> std::io::Result<(AuditSink, AuditWriter)> {
        // tokio's bounded channel allocates its slots as they fill, not all up front.
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = jsonl::start(target, rx)?;
        Ok((AuditSink { tx }, writer))
    }

    /// Queues a record; false when the queue is full and the record was dropped.
    pub fn send(&self, record: AuditRecord) -> bool {
        self.tx.try_send(record).is_ok()
    }
}
