//! Provider stage: send the prepared request to a replica and fail over to another one on
//! connect errors, 5xx and timeouts before the first byte. After the response head has arrived
//! (and for a stream, once it has started) nothing is retried: the caller may already have seen
//! part of the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ctx::Ctx;
use super::route::{self, InFlight, Outcome, ReplicaState};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::http::client::ConnectInfo;
use crate::llm::providers::{HttpAdapter, Op};
use crate::runtime::{Backend, EndpointRt};

/// Largest upstream body read into memory (non-streaming responses and error bodies).
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;

/// A response head from the replica that will serve this request.
pub struct Answer {
    pub response: http::Response<Incoming>,
    pub replica: Arc<ReplicaState>,
    /// Keeps the replica's in-flight count until the body is consumed.
    pub in_flight: InFlight,
    /// When the whole exchange must be over.
    pub deadline: Instant,
}

/// Sends `body` to the endpoint's replicas until one answers; see the module docs for what is
/// retried.
pub async fn send(
    gw: &Gateway,
    ep: &EndpointRt,
    op: Op,
    stream: bool,
    body: Bytes,
    ctx: &mut Ctx,
) -> Result<Answer, GatewayError> {
    let Backend::Http {
        adapter,
        auth,
        client,
        replicas,
    } = &ep.backend
    else {
        return Err(GatewayError::Internal(format!(
            "model {} has no upstream",
            ep.spec.model
        )));
    };
    let spec = &ep.spec;
    let deadline = ctx.started + Duration::from_millis(spec.timeouts.total_ms);
    let first_byte = Duration::from_millis(spec.timeouts.first_byte_ms);
    let max_attempts = spec.failover.max_attempts.max(1);
    let mut tried: u64 = 0;
    let mut last_error: Option<GatewayError> = None;

    for _ in 0..max_attempts {
        let Some(i) = route::pick(replicas, tried) else {
            break;
        };
        tried |= 1 << i;
        let replica = &replicas[i];
        let mut request = adapter.request(
            spec,
            &replica.url,
            op,
            stream,
            ctx.request_id(),
            body.clone(),
        )?;
        auth.apply(&mut request, client, &spec.model).await?;
        let in_flight = replica.start();
        let attempt_start = Instant::now();
        ctx.rec.attempts += 1;
        ctx.rec.replica = Some(Arc::clone(&replica.name));
        let budget = first_byte.min(deadline.saturating_duration_since(attempt_start));
        let result = tokio::time::timeout(budget, client.request(request)).await;
        let outcome = match result {
            Err(_) => {
                last_error = Some(GatewayError::UpstreamTimeout(spec.model.clone()));
                "timeout"
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                tracing::warn!(
                    request_id = ctx.request_id(),
                    model = %spec.model,
                    replica = %replica.name,
                    error = %error_chain(&e),
                    "upstream attempt failed"
                );
                last_error = Some(GatewayError::Unreachable(spec.model.clone()));
                if connect {
                    "connect_error"
                } else {
                    "connection_error"
                }
            }
            Ok(Ok(response)) => {
                if let Some(info) = response.extensions().get::<ConnectInfo>() {
                    ctx.add_connect_time(info.paid_since(attempt_start));
                }
                let status = response.status();
                if adapter.retry_elsewhere(status) {
                    let (parts, body) = response.into_parts();
                    let bytes = read_body(body, deadline, &spec.model)
                        .await
                        .unwrap_or_default();
                    last_error = Some(adapter.error(status, &parts.headers, &bytes));
                    "server_error"
                } else {
                    let now = Instant::now();
                    replica.observe(Outcome::Success(now - attempt_start), &spec.failover, now);
                    replica.ok_attempts.inc();
                    return Ok(Answer {
                        response,
                        replica: Arc::clone(replica),
                        in_flight,
                        deadline,
                    });
                }
            }
        };
        gw.metrics.attempt(&spec.model, &replica.name, outcome);
        if replica.observe(Outcome::Failure, &spec.failover, Instant::now()) {
            tracing::warn!(model = %spec.model, replica = %replica.name, "replica ejected");
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last_error.unwrap_or_else(|| GatewayError::Unreachable(spec.model.clone())))
}

/// Reads a whole upstream body, bounded in size and by the request's deadline.
pub async fn read_body(
    body: Incoming,
    deadline: Instant,
    model: &str,
) -> Result<Bytes, GatewayError> {
    let limited = http_body_util::Limited::new(body, MAX_UPSTREAM_BODY);
    match tokio::time::timeout_at(deadline.into(), limited.collect()).await {
        Err(_) => Err(GatewayError::UpstreamTimeout(model.to_owned())),
        Ok(Err(e)) => Err(GatewayError::BadUpstreamResponse(format!(
            "reading the response body failed: {e}"
        ))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An upstream's error answer as the caller's error. A 401/403 says the provider refused
/// llmgate's own credentials: the caller gets a 502 of ours (the provider's text may echo part
/// of the key), the operators a log line naming the endpoint.
pub fn refusal(
    ep: &EndpointRt,
    adapter: &dyn HttpAdapter,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    ctx: &Ctx,
) -> GatewayError {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        tracing::error!(
            request_id = ctx.request_id(),
            endpoint = %ep.spec.source,
            model = %ep.spec.model,
            replica = ctx.rec.replica.as_deref().unwrap_or(""),
            status = status.as_u16(),
            "the provider refused the endpoint's credentials; check its secretRef"
        );
        if status == StatusCode::UNAUTHORIZED
            && let Backend::Http { auth, .. } = &ep.backend
        {
            // A fetched token refused before its expiry (revoked, rotated): the next request
            // gets a new one.
            auth.refused();
        }
        return GatewayError::UpstreamAuth {
            model: ep.spec.model.clone(),
        };
    }
    adapter.error(status, headers, body)
}
