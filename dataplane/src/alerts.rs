//! Budget alerts: a JSON POST to the budget's webhook when its spend crosses a threshold.
//!
//! The counter store decides who fires (the settle that crosses a threshold first, across all
//! replicas, is told so by an atomic set-if-absent), so each threshold fires once per period.
//! Delivery is best effort with a few retries; the outcome is counted in
//! `llmgate_budget_alerts_total`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;

use crate::counters::{AlertTarget, BudgetSettled, Counters, SettleItem};
use crate::http::client::UpstreamClient;
use crate::telemetry::metrics::AlertLabels;

const ATTEMPTS: u32 = 3;

/// Routes the counter store's crossed thresholds to webhooks, sent with `client` and counted in
/// `outcomes`.
pub fn install(
    counters: &Counters,
    client: UpstreamClient,
    outcomes: Family<AlertLabels, Counter>,
) {
    counters.on_settled(Arc::new(move |item: &SettleItem, r: &BudgetSettled| {
        let SettleItem::Budget {
            alert: Some(target),
            ..
        } = item
        else {
            return;
        };
        for &threshold in &r.fired {
            let (target, client, outcomes) = (Arc::clone(target), client.clone(), outcomes.clone());
            let spent = r.spent;
            tokio::spawn(async move {
                let result = send(&client, &target, threshold, spent).await;
                outcomes
                    .get_or_create(&AlertLabels {
                        budget: target.budget.to_string(),
                        threshold,
                        result,
                    })
                    .inc();
            });
        }
    }));
}

/// The 100 % alert of a budget that just refused a request (it fell back, or was refused):
/// spend stops short of the amount because admission refuses what it cannot pay, so the settle
/// that would cross 100 % never comes. Marked in the counter store like a crossing, so it fires
/// once per period across replicas, and never twice with a settle that did reach 100 %.
pub fn spent_out(
    counters: Arc<Counters>,
    client: UpstreamClient,
    outcomes: Family<AlertLabels, Counter>,
    key: String,
    target: Arc<AlertTarget>,
) {
    tokio::spawn(async move {
        let Some(spent) = counters.mark_alert(&key, 100).await else {
            return;
        };
        let result = send(&client, &target, 100, spent).await;
        outcomes
            .get_or_create(&AlertLabels {
                budget: target.budget.to_string(),
                threshold: 100,
                result,
            })
            .inc();
    });
}

/// The webhook's JSON.
fn payload(target: &AlertTarget, threshold: u8, spent_micros: i64) -> serde_json::Value {
    json!({
        "type": "budget.threshold_crossed",
        "budget": target.budget,
        "team": target.team,
        "period": target.period,
        "threshold_percent": threshold,
        "amount_usd": target.amount_usd,
        "spent_usd": spent_micros as f64 / 1e6,
        // In whole millionths, as budgets count: a float difference prints as 5.940000000000001.
        "remaining_usd": ((target.amount_usd * 1e6).round() as i64 - spent_micros).max(0) as f64 / 1e6,
        "at": jiff::Timestamp::now().to_string(),
    })
}

async fn send(
    client: &UpstreamClient,
    target: &AlertTarget,
    threshold: u8,
    spent_micros: i64,
) -> &'static str {
    let body = payload(target, threshold, spent_micros);
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut result = "failed";
    for attempt in 0..ATTEMPTS {
        let req = Request::builder()
            .method(Method::POST)
            .uri(&target.webhook)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "llmgate")
            .body(Full::new(body.clone()));
        let Ok(req) = req else { break };
        match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                result = "sent";
                break;
            }
            Ok(Ok(resp)) => {
                tracing::warn!(budget = %target.budget, status = %resp.status(), "budget alert webhook refused");
            }
            Ok(Err(e)) => {
                tracing::warn!(budget = %target.budget, error = %e, "budget alert webhook unreachable")
            }
            Err(_) => tracing::warn!(budget = %target.budget, "budget alert webhook timed out"),
        }
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    tracing::info!(budget = %target.budget, team = %target.team, threshold, result, "budget alert");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_to_the_millionth() {
        let target = AlertTarget {
            budget: Arc::from("default/product"),
            team: "product".into(),
            period: "2026-12-08".into(),
            amount_usd: 30.0,
            webhook: String::new(),
        };
        let p = payload(&target, 80, 24_060_000);
        assert_eq!(p["spent_usd"], 24.06);
        assert_eq!(
            p["remaining_usd"], 5.94,
            "not 30.0 - 24.06 = 5.940000000000001"
        );
        assert_eq!(payload(&target, 100, 31_000_000)["remaining_usd"], 0.0);
    }
}
