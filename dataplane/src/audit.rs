//! Audit records: one per API request, whatever its outcome. [`AuditRecord`] is the contract the
//! later ClickHouse and S3 sinks write; field names are stable snake_case and only grow.
//!
//! Records are handed to a writer task over a bounded channel so the request path never waits on
//! disk; a full channel drops the record and counts it in `llmgate_audit_records_dropped_total`.

use std::path::PathBuf;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::types::Usage;

#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    pub request_id: String,
    /// RFC 3339, when the request arrived.
    pub started_at: String,
    /// RFC 3339, when the last byte was sent (or the client went away).
    pub finished_at: String,
    /// `chat.completions`, `embeddings`, `models`.
    pub operation: &'static str,
    pub stream: bool,
    /// How the caller authenticated: `api_key`, or `none` when it did not.
    pub auth_method: &'static str,
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub service_account: Option<String>,
    pub team: Option<String>,
    /// `namespace/policy#rule` that allowed or denied the call.
    pub policy_rule: Option<String>,
    pub model_requested: Option<String>,
    pub model_served: Option<String>,
    pub provider: Option<&'static str>,
    pub replica: Option<String>,
    /// The model id sent upstream.
    pub upstream_model: Option<String>,
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
    pub latency_ms: Latency,
    pub snapshot_version: String,
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

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditRecord>,
}

impl AuditSink {
    /// Starts the writer. `-` writes to stdout; anything else is a file opened for append.
    pub async fn start(target: &str) -> std::io::Result<(AuditSink, JoinHandle<()>)> {
        let out: Box<dyn AsyncWrite + Unpin + Send> = if target == "-" {
            Box::new(tokio::io::stdout())
        } else {
            let path = PathBuf::from(target);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await?;
            }
            Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await?,
            )
        };
        let (tx, rx) = mpsc::channel(65_536);
        Ok((AuditSink { tx }, tokio::spawn(write_loop(rx, out))))
    }

    /// Queues a record; false when the queue is full and the record was dropped.
    pub fn send(&self, record: AuditRecord) -> bool {
        self.tx.try_send(record).is_ok()
    }
}

async fn write_loop(mut rx: mpsc::Receiver<AuditRecord>, out: Box<dyn AsyncWrite + Unpin + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Drain what is queued, then flush once: one write per burst, not per record.
        while let Some(rec) = next {
            line.clear();
            if serde_json::to_writer(&mut line, &rec).is_ok() {
                line.push(b'\n');
                if let Err(e) = out.write_all(&line).await {
                    tracing::error!(error = %e, "audit log write failed");
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush().await {
            tracing::error!(error = %e, "audit log flush failed");
        }
    }
    let _ = out.flush().await;
}
