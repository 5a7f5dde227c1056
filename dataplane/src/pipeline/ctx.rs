//! [`Ctx`]: what one request has learned so far, stage by stage, and the record it becomes. It
//! belongs to the handler that runs the stages ([`super`]); the stages fill it in, and
//! the account stage (`account.rs`) ends it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use llmgate_snapshot::{Pricing, Principal};

use crate::audit::AuditRecord;
use crate::counters::Ticket;
use crate::gateway::Gateway;
use crate::llm::types::Usage;
use crate::runtime::{Caller, EndpointRt, Runtime};
use crate::telemetry::metrics::EndpointMetrics;

/// What one request has learned so far; becomes its audit record.
pub struct Ctx {
    pub(super) gw: Arc<Gateway>,
    pub started: Instant,
    pub rec: AuditRecord,
    pub(super) endpoint_metrics: Option<EndpointMetrics>,
    pub(super) pricing: Option<Pricing>,
    /// Extra response headers (rate limits, budget, fallback).
    pub headers: HeaderMap,
    /// Reservations to settle when the request ends.
    pub ticket: Option<Ticket>,
    pub(super) done: bool,
}

impl Ctx {
    pub fn new(
        gw: &Arc<Gateway>,
        rt: &Runtime,
        operation: &'static str,
        headers: &HeaderMap,
    ) -> Ctx {
        gw.metrics.in_flight.inc();
        let request_id = request_id(headers);
        Ctx {
            gw: Arc::clone(gw),
            started: Instant::now(),
            rec: AuditRecord {
                request_id,
                started_at: jiff::Timestamp::now(),
                operation,
                auth_method: "none",
                snapshot_version: Arc::clone(&rt.version),
                ..AuditRecord::default()
            },
            endpoint_metrics: None,
            pricing: None,
            headers: HeaderMap::new(),
            ticket: None,
            done: false,
        }
    }

    pub fn request_id(&self) -> &str {
        &self.rec.request_id
    }

    fn since_start(&self) -> f64 {
        ms(self.started.elapsed())
    }

    pub fn authenticated(&mut self, caller: &Caller<'_>) {
        self.rec.latency_ms.auth = self.since_start();
        let who = caller.identity();
        self.rec.auth_method = who.auth_method;
        self.rec.key_id = who.key_id.clone();
        self.rec.identity_provider = who.provider.clone();
        self.rec.groups = who.groups.clone();
        match &who.principal {
            Principal::User(_) => self.rec.user = Some(Arc::clone(&who.name)),
            Principal::ServiceAccount(_) => self.rec.service_account = Some(Arc::clone(&who.name)),
        }
        self.rec.team = who.team.clone();
    }

    pub fn routed(&mut self, ep: &EndpointRt) {
        self.rec.model_served = Some(Arc::clone(&ep.model));
        self.rec.provider = Some(ep.spec.provider.kind());
        self.rec.upstream_model = Some(Arc::clone(&ep.upstream_model));
        self.endpoint_metrics = Some(ep.metrics.clone());
        self.pricing = Some(ep.spec.pricing);
    }

    pub fn add_connect_time(&mut self, d: Duration) {
        self.rec.latency_ms.upstream_connect += ms(d);
    }

    /// The first byte of the model's answer reached the gateway (first stream chunk, or the
    /// whole body when not streaming).
    pub fn first_token(&mut self) {
        if self.rec.latency_ms.time_to_first_token.is_none() {
            let t = self.started.elapsed();
            self.rec.latency_ms.time_to_first_token = Some(ms(t));
            if let Some(m) = &self.endpoint_metrics {
                m.ttft.observe(t.as_secs_f64());
            }
        }
    }

    pub fn usage(&mut self, usage: Option<Usage>, upstream_model: Option<&str>) {
        if usage.is_some() {
            self.rec.usage = usage;
        }
        if let Some(m) = upstream_model {
            self.rec.upstream_model_version = Some(m.to_owned());
        }
    }
}

/// The caller's `x-request-id` when it is a sane token, else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// 128 random bits as 32 hex digits. A thread-local generator: request ids need to be unique,
/// not unpredictable, and a getrandom call per request would cost a syscall.
fn new_request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
