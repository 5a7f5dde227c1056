//! The request path. Each API operation reads as its stages, in order:
//!
//! 1. [`auth`] — who is calling (before the body is read, so anonymous callers cannot make us
//!    buffer megabytes);
//! 2. read and parse the body, resolve the model (404 before 403: the model name is needed to
//!    decide);
//! 3. [`policy`] — may they call this model (deny by default);
//! 4. [`admission`] — [`ratelimit`] and [`budget`]: every limit and budget that applies,
//!    checked and reserved in one atomic call to the counter store, which may move the request
//!    to a fallback model when a budget is spent;
//! 5. [`route`] + [`upstream`] — pick a replica, call the provider, fail over;
//! 6. relay the answer ([`stream`] for SSE);
//! 7. [`account`] — usage, cost, metrics and the audit record, on every exit path.

pub mod account;
pub mod admission;
pub mod auth;
pub mod budget;
pub mod ctx;
pub mod policy;
pub mod ratelimit;
pub mod route;
pub mod stream;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};

use self::ctx::Ctx;
use self::stream::{RelayBody, Source};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::llm::providers::{Op, mock};
use crate::llm::tokenize;
use crate::llm::types::{ChatRequest, EmbeddingsRequest};
use crate::runtime::{Backend, Caller, EndpointRt, Runtime};

/// `POST /v1/chat/completions`
pub async fn chat(State(gw): State<Arc<Gateway>>, req: Request<Body>) -> Response {
    let rt = gw.runtime();
    let mut ctx = Ctx::new(&gw, &rt, Op::Chat.as_str(), req.headers());
    match chat_stages(&gw, &rt, req, &mut ctx).await {
        Ok(Reply::Full(body)) => respond_full(ctx, body),
        Ok(Reply::Stream(source, deadline)) => respond_stream(ctx, source, deadline),
        Err(e) => respond_error(ctx, e),
    }
}

/// `POST /v1/embeddings`
pub async fn embeddings(State(gw): State<Arc<Gateway>>, req: Request<Body>) -> Response {
    let rt = gw.runtime();
    let mut ctx = Ctx::new(&gw, &rt, Op::Embeddings.as_str(), req.headers());
    match embeddings_stages(&gw, &rt, req, &mut ctx).await {
        Ok(body) => respond_full(ctx, body),
        Err(e) => respond_error(ctx, e),
    }
}

/// `GET /v1/models`: only the models this caller may use.
pub async fn list_models(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let rt = gw.runtime();
    let mut ctx = Ctx::new(&gw, &rt, "models.list", &headers);
    match auth::authenticate(&rt, &headers).await {
        Ok(caller) => {
            ctx.authenticated(&caller);
            let body = caller.models_body(&rt);
            respond_full(ctx, body)
        }
        Err(e) => respond_error(ctx, e),
    }
}

/// `GET /v1/models/{id}`: 404 for models the caller may not use, as for unknown ones.
pub async fn get_model(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let rt = gw.runtime();
    let mut ctx = Ctx::new(&gw, &rt, "models.retrieve", &headers);
    let caller = match auth::authenticate(&rt, &headers).await {
        Ok(c) => c,
        Err(e) => return respond_error(ctx, e),
    };
    ctx.authenticated(&caller);
    ctx.rec.model_requested = Some(id.clone());
    match rt.endpoint(&id) {
        Some((i, ep)) if caller.decision(&rt, i).allowed => {
            let body = serde_json::to_vec(&crate::runtime::model_object(&ep.spec, rt.loaded_at));
            respond_full(ctx, Bytes::from(body.unwrap_or_default()))
        }
        _ => {
            let e = not_found(&gw, id);
            respond_error(ctx, e)
        }
    }
}

enum Reply {
    Full(Bytes),
    Stream(Source, Instant),
}

async fn chat_stages(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<Body>,
    ctx: &mut Ctx,
) -> Result<Reply, GatewayError> {
    let caller = auth::authenticate(rt, req.headers()).await?;
    ctx.authenticated(&caller);
    let body = read_body(gw, req.into_body()).await?;
    let mut chat = ChatRequest::parse(&body)?;
    ctx.rec.model_requested = Some(chat.model.clone());
    ctx.rec.stream = chat.is_stream();
    let (first, ep) = authorize(gw, rt, &caller, &chat.model, ctx)?;
    chat.check_max_output(&ep.spec.model, ep.spec.max_output_tokens)?;
    let est = admission::Estimate {
        prompt_tokens: &|| tokenize::chat_prompt(chat.messages_raw(), chat.tools_raw()),
        max_output: chat.max_output(),
        choices: chat.choices(),
        has_output: true,
    };
    let admitted = admission::admit(gw, rt, &caller, first, est, ctx).await?;
    if let Some(cap) = admitted.cap {
        chat.cap_output(cap);
    }
    let ep = &rt.endpoints[admitted.endpoint];
    ctx.routed(ep);

    match &ep.backend {
        Backend::Mock(m) => {
            mock::wait(m).await;
            let (text, usage) = mock::reply(m, &chat, u64::from(ep.spec.max_output_tokens));
            ctx.usage(Some(usage), Some(&ep.spec.upstream_model));
            ctx.rec.replica = Some(Arc::from("mock"));
            if chat.is_stream() {
                let events = mock::StreamEvents::new(
                    m,
                    &ep.spec.upstream_model,
                    ctx.request_id(),
                    text,
                    usage,
                    chat.wants_stream_usage(),
                );
                let deadline = ctx.started + Duration::from_millis(ep.spec.timeouts.total_ms);
                Ok(Reply::Stream(
                    Source::Mock {
                        events,
                        interval: Duration::from_millis(m.chunk_interval_ms),
                        pause: None,
                    },
                    deadline,
                ))
            } else {
                ctx.first_token();
                Ok(Reply::Full(mock::chat_response(
                    &ep.spec.upstream_model,
                    ctx.request_id(),
                    &text,
                    usage,
                )))
            }
        }
        Backend::Http { adapter, .. } => {
            let stream = chat.is_stream();
            let wants_usage = chat.wants_stream_usage();
            let upstream_body = adapter.chat_body(&ep.spec, &chat)?;
            let answer = upstream::send(gw, ep, Op::Chat, stream, upstream_body, ctx).await?;
            let status = answer.response.status();
            let (parts, body) = answer.response.into_parts();
            if !status.is_success() {
                let bytes = upstream::read_body(body, answer.deadline, &ep.spec.model).await?;
                return Err(upstream::refusal(
                    ep,
                    adapter.as_ref(),
                    status,
                    &parts.headers,
                    &bytes,
                    ctx,
                ));
            }
            if stream {
                Ok(Reply::Stream(
                    Source::Upstream {
                        body,
                        translator: adapter
                            .chat_stream(wants_usage, jiff::Timestamp::now().as_second()),
                        _in_flight: answer.in_flight,
                    },
                    answer.deadline,
                ))
            } else {
                let bytes = upstream::read_body(body, answer.deadline, &ep.spec.model).await?;
                ctx.first_token();
                let t = adapter.chat_response(bytes, jiff::Timestamp::now().as_second())?;
                ctx.usage(t.usage, t.model.as_deref());
                Ok(Reply::Full(t.body))
            }
        }
    }
}

async fn embeddings_stages(
    gw: &Gateway,
    rt: &Runtime,
    req: Request<Body>,
    ctx: &mut Ctx,
) -> Result<Bytes, GatewayError> {
    let caller = auth::authenticate(rt, req.headers()).await?;
    ctx.authenticated(&caller);
    let body = read_body(gw, req.into_body()).await?;
    let emb = EmbeddingsRequest::parse(&body)?;
    ctx.rec.model_requested = Some(emb.model.clone());
    let (first, _) = authorize(gw, rt, &caller, &emb.model, ctx)?;
    let est = admission::Estimate {
        prompt_tokens: &|| tokenize::embeddings_input(emb.input_raw()),
        max_output: None,
        choices: 1,
        has_output: false,
    };
    let admitted = admission::admit(gw, rt, &caller, first, est, ctx).await?;
    let ep = &rt.endpoints[admitted.endpoint];
    ctx.routed(ep);

    match &ep.backend {
        Backend::Mock(m) => {
            mock::wait(m).await;
            let (body, usage) = mock::embeddings_response(m, &ep.spec.upstream_model, &emb);
            ctx.rec.replica = Some(Arc::from("mock"));
            ctx.first_token();
            ctx.usage(Some(usage), Some(&ep.spec.upstream_model));
            Ok(body)
        }
        Backend::Http { adapter, .. } => {
            let wanted = emb.encoding_format;
            let upstream_body = adapter.embeddings_body(&ep.spec, &emb)?;
            let answer = upstream::send(gw, ep, Op::Embeddings, false, upstream_body, ctx).await?;
            let status = answer.response.status();
            let (parts, body) = answer.response.into_parts();
            let bytes = upstream::read_body(body, answer.deadline, &ep.spec.model).await?;
            if !status.is_success() {
                return Err(upstream::refusal(
                    ep,
                    adapter.as_ref(),
                    status,
                    &parts.headers,
                    &bytes,
                    ctx,
                ));
            }
            ctx.first_token();
            let t = adapter.embeddings_response(bytes, wanted)?;
            ctx.usage(t.usage, t.model.as_deref());
            Ok(t.body)
        }
    }
}

/// No such model, or (standalone) one declared but left out, with why.
fn not_found(gw: &Gateway, model: String) -> GatewayError {
    match gw.left_out(&model) {
        Some(why) => GatewayError::ModelLeftOut { model, why },
        None => GatewayError::ModelNotFound(model),
    }
}

/// Model lookup and the policy decision: the endpoint's index.
fn authorize<'r>(
    gw: &Gateway,
    rt: &'r Runtime,
    caller: &Caller<'_>,
    model: &str,
    ctx: &mut Ctx,
) -> Result<(usize, &'r EndpointRt), GatewayError> {
    let Some((i, ep)) = rt.endpoint(model) else {
        return Err(not_found(gw, model.to_owned()));
    };
    let decision = caller.decision(rt, i);
    ctx.rec.policy_rule = decision.by.clone();
    if !decision.allowed {
        return Err(GatewayError::Forbidden {
            subject: caller.describe(),
            model: model.to_owned(),
        });
    }
    Ok((i, ep))
}

/// Reads the request body within the size limit and the body timeout.
async fn read_body(gw: &Gateway, body: Body) -> Result<Bytes, GatewayError> {
    crate::http::body::read_limited(body, gw.settings.max_body_bytes, gw.settings.body_timeout)
        .await
}

/// `x-request-id` and the model that served the request go on every response.
fn stamp(h: &mut HeaderMap, ctx: &Ctx) {
    for (k, v) in &ctx.headers {
        h.insert(k, v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(ctx.request_id()) {
        h.insert("x-request-id", v);
    }
    if let Some(v) = ctx
        .rec
        .model_served
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
    {
        h.insert("x-llmgate-model", v);
    }
}

fn respond_full(mut ctx: Ctx, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    stamp(h, &ctx);
    ctx.finish(StatusCode::OK, "ok", None);
    resp
}

fn respond_stream(ctx: Ctx, source: Source, deadline: Instant) -> Response {
    let mut headers = HeaderMap::new();
    stamp(&mut headers, &ctx);
    let mut resp = Response::new(Body::new(RelayBody::new(source, ctx, deadline)));
    let h = resp.headers_mut();
    *h = headers;
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell buffering proxies in front of us (nginx) not to hold chunks back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn respond_error(mut ctx: Ctx, e: GatewayError) -> Response {
    let status = e.status();
    match e.fault() {
        crate::error::Fault::Client => {
            tracing::debug!(request_id = ctx.request_id(), reason = e.reason(), error = %e, "request refused")
        }
        _ => {
            tracing::warn!(request_id = ctx.request_id(), reason = e.reason(), error = %e, "request failed")
        }
    }
    let reason = e.reason();
    let message = e.to_string();
    let mut resp = e.into_response();
    stamp(resp.headers_mut(), &ctx);
    ctx.finish(status, reason, Some(message));
    resp
}
