//! [`Gateway`], the data plane's shared state: the one `ArcSwap` holding the current
//! [`Runtime`], and what lives as long as the process (settings, metrics, upstream clients,
//! audit sink, counters, config status). It receives its parts; [`crate::run`] builds them.
//!
//! Invariant: [`Gateway::apply`] is the only place the runtime is swapped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use llmgate_crds::files::Problem;
use llmgate_snapshot::Snapshot;
use serde::Serialize;

use crate::audit::AuditSink;
use crate::counters::Counters;
use crate::flags::Settings;
use crate::http::client::Clients;
use crate::runtime::Runtime;
use crate::telemetry::metrics::Metrics;

pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    pub settings: Settings,
    pub metrics: Metrics,
    pub clients: Clients,
    pub audit: AuditSink,
    pub counters: Arc<Counters>,
    status: Mutex<ConfigStatus>,
    draining: AtomicBool,
    /// The shutdown grace ran out: requests still running are being cut.
    cut: AtomicBool,
    /// Models the configuration declares but left out, and why (standalone mode).
    left_out: Mutex<Arc<std::collections::BTreeMap<String, String>>>,
}

/// What `/readyz` reports about the configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigStatus {
    /// Where the configuration comes from (`dir:/path`, `embedded:quickstart`).
    pub source: String,
    pub version: String,
    pub applied_at: Option<String>,
    pub models: usize,
    /// Set while the latest change is rejected; the previous snapshot keeps serving.
    pub last_error: Option<ReloadFailure>,
    /// Resources left out for a reason that is not a mistake in the YAML (a secret not set).
    pub warnings: Vec<Problem>,
    /// Operator mode: the state of the subscription (`subscribed`, or why it is reconnecting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadFailure {
    pub at: String,
    pub problems: Vec<Problem>,
}

impl Gateway {
    pub fn new(
        settings: Settings,
        metrics: Metrics,
        audit: AuditSink,
        counters: Arc<Counters>,
        source: String,
    ) -> Arc<Gateway> {
        let clients = Clients::default();
        let empty = Arc::new(Snapshot::empty());
        let runtime = Runtime::build(empty, None, &clients, &metrics);
        Arc::new(Gateway {
            counters,
            runtime: ArcSwap::from_pointee(runtime),
            settings,
            metrics,
            clients,
            audit,
            status: Mutex::new(ConfigStatus {
                source,
                ..ConfigStatus::default()
            }),
            draining: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            left_out: Mutex::default(),
        })
    }

    /// The current runtime. Load once per request and pass it down.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Applies a snapshot atomically; returns false when it is the version already served.
    pub fn apply(&self, snapshot: Snapshot, warnings: Vec<Problem>) -> bool {
        let current = self.runtime.load();
        let changed =
            current.snapshot.version != snapshot.version || self.status().applied_at.is_none();
        if changed {
            let next = Runtime::build(
                Arc::new(snapshot),
                Some(&current),
                &self.clients,
                &self.metrics,
            );
            if next.counts() {
                // The tokenizer takes ~100 ms to load: not on the first limited request.
                std::thread::spawn(crate::llm::tokenize::warm_up);
            }
            let version = next.snapshot.version.clone();
            let models = next.endpoints.len();
            self.runtime.store(Arc::new(next));
            self.metrics.snapshot_applied(&version);
            let mut st = self.status_mut();
            st.version = version;
            st.models = models;
            st.applied_at = Some(jiff::Timestamp::now().to_string());
        }
        let mut st = self.status_mut();
        st.last_error = None;
        st.warnings = warnings;
        self.metrics
            .reload(if changed { "applied" } else { "unchanged" });
        changed
    }

    /// Records a rejected change; the current snapshot keeps serving.
    pub fn reject(&self, problems: Vec<Problem>) {
        self.metrics.reload("failed");
        self.status_mut().last_error = Some(ReloadFailure {
            at: jiff::Timestamp::now().to_string(),
            problems,
        });
    }

    /// Operator mode: how the subscription is doing, for `/readyz`.
    pub fn set_control_plane(&self, state: String) {
        self.status_mut().control_plane = Some(state);
    }

    pub fn status(&self) -> ConfigStatus {
        self.status_mut().clone()
    }

    fn status_mut(&self) -> std::sync::MutexGuard<'_, ConfigStatus> {
        match self.status.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_left_out(&self, models: std::collections::BTreeMap<String, String>) {
        if let Ok(mut m) = self.left_out.lock() {
            *m = Arc::new(models);
        }
    }

    /// Why a model the configuration declares is not served, if it is one of those.
    pub fn left_out(&self, model: &str) -> Option<String> {
        self.left_out.lock().ok()?.get(model).cloned()
    }

    /// Marks the requests that end from now on as cut by shutdown, not left by their caller.
    pub fn cut_remaining(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    /// Why a request that ended before its answer did: `shutdown` once the grace ran out,
    /// else its caller went away.
    pub fn unfinished_reason(&self) -> &'static str {
        if self.cut.load(Ordering::Relaxed) {
            "shutdown"
        } else {
            "client_disconnected"
        }
    }
}
