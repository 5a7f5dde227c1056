//! Admin endpoints: `/healthz`, `/readyz` (200 once a snapshot is published; what the source
//! said last), `/metrics`, and `/dataplanes` (which data plane runs which version).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::Operator;

pub fn router(op: Arc<Operator>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/dataplanes", get(dataplanes))
        .with_state(op)
}

async fn readyz(State(op): State<Arc<Operator>>) -> Response {
    let ready = op.current().is_some();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "source": op.status()})),
    )
        .into_response()
}

async fn metrics(State(op): State<Arc<Operator>>) -> Response {
    let mut r = op.metrics.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn dataplanes(State(op): State<Arc<Operator>>) -> Response {
    axum::Json(json!({
        "version": op.current().map(|p| p.snapshot.version.clone()),
        "dataplanes": op.fleet.list(),
    }))
    .into_response()
}
