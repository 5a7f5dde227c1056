//! Distribution: data planes subscribe over one long-lived HTTP stream and get the current
//! snapshot at once and every new version as it is published (protocol in
//! `llmgate_snapshot::distribution`). Only callers with the bearer token get anything:
//! snapshots carry credentials.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use llmgate_snapshot::distribution::{ACK_PATH, Ack, HEARTBEAT_SECS, Message, WATCH_PATH};
use serde::Deserialize;
use serde_json::json;

use crate::Operator;

pub fn router(op: Arc<Operator>) -> Router {
    Router::new()
        .route(WATCH_PATH, get(watch))
        .route(ACK_PATH, post(ack))
        .with_state(op)
}

#[derive(Deserialize)]
struct WatchQuery {
    node: String,
    #[serde(default)]
    have: Option<String>,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"message": message, "type": "authentication_error", "code": null, "param": null}})
            .to_string(),
    )
        .into_response()
}

fn authorized(op: &Operator, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| op.token_ok(t.trim()))
}

/// Marks the node disconnected when its stream ends, however it ends.
struct Subscription {
    op: Arc<Operator>,
    node: String,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.op.fleet.disconnected(&self.node, &self.op.metrics);
        tracing::info!(node = %self.node, "data plane unsubscribed");
    }
}

struct StreamState {
    /// Held for its `Drop`.
    _sub: Subscription,
    rx: tokio::sync::watch::Receiver<Option<Arc<crate::Published>>>,
    have: Option<String>,
    first: bool,
    heartbeat: tokio::time::Interval,
    stop: tokio::sync::watch::Receiver<bool>,
}

fn line(msg: &Message) -> Bytes {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

async fn next_line(mut st: StreamState) -> Option<(Result<Bytes, Infallible>, StreamState)> {
    if st.first {
        st.first = false;
        // Nothing is sent before there is a snapshot to send.
        let current = tokio::select! {
            r = st.rx.wait_for(|p| p.is_some()) => r.ok().and_then(|p| p.clone()),
            _ = st.stop.wait_for(|s| *s) => None,
        }?;
        st.rx.borrow_and_update();
        let out = if st.have.as_deref() == Some(current.snapshot.version.as_str()) {
            line(&Message::Current {
                version: current.snapshot.version.clone(),
            })
        } else {
            current.line.clone()
        };
        return Some((Ok(out), st));
    }
    enum Next {
        Changed,
        Heartbeat,
        Stop,
    }
    let next = tokio::select! {
        changed = st.rx.changed() => if changed.is_ok() { Next::Changed } else { Next::Stop },
        _ = st.heartbeat.tick() => Next::Heartbeat,
        _ = st.stop.wait_for(|s| *s) => Next::Stop,
    };
    match next {
        Next::Changed => {
            let p = st.rx.borrow_and_update().clone()?;
            Some((Ok(p.line.clone()), st))
        }
        Next::Heartbeat => Some((Ok(line(&Message::Heartbeat)), st)),
        Next::Stop => None,
    }
}

async fn watch(
    State(op): State<Arc<Operator>>,
    headers: HeaderMap,
    Query(q): Query<WatchQuery>,
) -> Response {
    if !authorized(&op, &headers) {
        tracing::warn!(node = %q.node, "refused a data plane without a valid token");
        return refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    tracing::info!(node = %q.node, have = q.have.as_deref().unwrap_or("-"), "data plane subscribed");
    op.fleet.connected(&q.node, &op.metrics);
    let period = Duration::from_secs(HEARTBEAT_SECS);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let st = StreamState {
        rx: op.subscribe(),
        stop: op.shutting_down(),
        _sub: Subscription {
            op: Arc::clone(&op),
            node: q.node,
        },
        have: q.have,
        first: true,
        heartbeat,
    };
    let stream = futures_util::stream::unfold(st, next_line);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn ack(State(op): State<Arc<Operator>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&op, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    let Ok(ack) = serde_json::from_slice::<Ack>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "body must be an acknowledgement");
    };
    if ack.applied {
        tracing::info!(node = %ack.node, version = %ack.version, "data plane applied snapshot");
    } else {
        tracing::warn!(node = %ack.node, version = %ack.version, error = ack.error.as_deref().unwrap_or(""), "data plane refused snapshot");
    }
    op.fleet.acked(&ack, &op.metrics);
    StatusCode::NO_CONTENT.into_response()
}
