//! Admin endpoints on their own port: liveness, readiness with configuration details, and
//! Prometheus metrics.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::gateway::Gateway;

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(gw)
}

/// 200 while a snapshot is applied and the gateway is not draining; the body says which
/// snapshot, and whether the latest configuration change was rejected (and why).
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let st = gw.status();
    let loaded = st.applied_at.is_some();
    let draining = gw.is_draining();
    let counters_started = gw.counters.is_started();
    let ready = loaded && !draining && counters_started;
    let age_seconds = st
        .applied_at
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| (jiff::Timestamp::now().as_second() - t.as_second()).max(0));
    let body = json!({
        "ready": ready,
        "draining": draining,
        "snapshot_age_seconds": age_seconds,
        "config": st,
        "counters": {
            "store": gw.counters.describe(),
            "degraded": gw.counters.is_degraded(),
            "journaled": gw.counters.journaled(),
            "warning": counters_warning(&gw),
        },
        // Keys that cannot be fetched make that provider's tokens 503, not the replica unready.
        "identity_providers": gw.runtime().verifiers.report(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Limits and budgets counted in memory hold per replica only; with an operator there are
/// usually several replicas.
fn counters_warning(gw: &Gateway) -> Option<&'static str> {
    (gw.runtime().counts() && gw.counters.describe() == "memory" && gw.settings.control_plane.is_some())
        .then_some("this snapshot has rate limits or budgets, and without --redis-url each replica counts them alone")
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut r = gw.metrics.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
