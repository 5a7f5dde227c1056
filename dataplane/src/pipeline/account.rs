//! Account and record stages: when a request ends (response sent, stream finished, client gone),
//! turn usage into cost, update metrics and emit the audit record. [`Ctx`] carries what each
//! stage learned; its `Drop` records a request whose future was dropped mid-way (the client went
//! away), so no exit path goes unrecorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};

use super::admission::Ticket;
use llmgate_snapshot::{Pricing, Principal};

use crate::audit::AuditRecord;
use crate::metrics::EndpointMetrics;
use crate::runtime::{Caller, EndpointRt, Runtime};
use crate::state::Gateway;
use crate::types::Usage;

/// What one request has learned so far; becomes its audit record.
pub struct Ctx {
    gw: Arc<Gateway>,
    pub started: Instant,
    pub rec: AuditRecord,
    endpoint_metrics: Option<EndpointMetrics>,
    pricing: Option<Pricing>,
    /// Extra response headers (rate limits, budget, fallback).
    pub headers: HeaderMap,
    /// Reservations to settle when the request ends.
    pub ticket: Option<Ticket>,
    done: bool,
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

    /// Ends the request: cost, metrics, audit record. Later calls do nothing.
    pub fn finish(&mut self, status: StatusCode, reason: &'static str, error: Option<String>) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.started.elapsed();
        self.rec.latency_ms.total = ms(elapsed);
        self.rec.finished_at = jiff::Timestamp::now();
        self.rec.status = status.as_u16();
        self.rec.error_reason = (reason != "ok").then_some(reason);
        self.rec.error_message = error;
        if let (Some(u), Some(p)) = (self.rec.usage, self.pricing) {
            let cost = p.cost(u.prompt_tokens, u.completion_tokens);
            self.rec.cost_usd = Some(cost);
            self.rec.cost_usd_micros = Some(super::budget::cost_micros(
                &p,
                u.prompt_tokens,
                u.completion_tokens,
            ));
            if let Some(m) = &self.endpoint_metrics {
                m.prompt_tokens.inc_by(u.prompt_tokens);
                m.completion_tokens.inc_by(u.completion_tokens);
                m.cost.inc_by(cost);
            }
        }
        if let Some(m) = &self.endpoint_metrics {
            m.duration.observe(elapsed.as_secs_f64());
        }
        if let Some(ticket) = self.ticket.take() {
            let counted = ticket.counted;
            let usage = self
                .rec
                .usage
                .map(|u| (u.prompt_tokens, u.completion_tokens));
            let produced = self.rec.latency_ms.time_to_first_token.is_some();
            let (items, charged) = ticket.settle_items(usage, self.rec.cost_usd_micros, produced);
            self.rec.budget_charged_usd_micros = charged;
            if !items.is_empty() {
                self.gw.counters.settle(items, counted);
            }
        }
        let model = self
            .rec
            .model_requested
            .as_deref()
            .filter(|_| self.rec.model_served.is_some())
            .unwrap_or("");
        match &self.endpoint_metrics {
            Some(m) if reason == "ok" && status == StatusCode::OK => {
                m.ok_requests.inc();
            }
            _ => self.gw.metrics.request(model, self.rec.status, reason),
        }
        self.gw.metrics.in_flight.dec();
        let rec = std::mem::take(&mut self.rec);
        if !self.gw.audit.send(rec) {
            self.gw.metrics.audit_dropped.inc();
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // 499: nginx's "client closed request", the convention log readers know.
        let status = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
        self.finish(status, "client_disconnected", None);
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

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
