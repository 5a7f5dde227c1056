//! Account and record stages: when a request ends (response sent, stream finished, client gone),
//! turn usage into cost, settle the counters' ticket, update metrics and emit the audit record.
//! `Drop` records a request whose future was dropped mid-way (the client went away), so no exit
//! path goes unrecorded.

use http::StatusCode;

use super::ctx::{Ctx, ms};

impl Ctx {
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
            let micros = super::budget::cost_micros(&p, u.prompt_tokens, u.completion_tokens);
            self.rec.cost_usd = Some(cost);
            self.rec.cost_usd_micros = Some(micros);
            if let Some(m) = &self.endpoint_metrics {
                m.prompt_tokens.inc_by(u.prompt_tokens);
                m.completion_tokens.inc_by(u.completion_tokens);
                m.cost.inc_micros(micros);
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
        let reason = self.gw.unfinished_reason();
        self.finish(status, reason, None);
    }
}
