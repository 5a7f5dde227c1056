//! The fake's OpenAI API: chat completions, embeddings and models, with the behaviours of the
//! table in the module above.

// Early-returned error responses read better than boxed ones in a test peer.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::state::{Shared, Stats};

/// The context a `bill-asked` model runs to when nothing limits it.
pub const BILL_ASKED_CONTEXT: u64 = 32_768;

/// Output tokens a server generates when it reads the length fields the way the most generous
/// of vLLM (`max_completion_tokens`, `max_tokens`, `min_tokens`, `n`, `best_of`), llama.cpp
/// (`n_predict` before `max_tokens`, negative = the whole context), TGI (`max_new_tokens`)
/// and Ollama (`num_predict`, `options.num_predict`) would: the largest of them, for each of
/// `max(n, best_of)` sequences.
pub fn asked_tokens(req: &Value) -> u64 {
    let lengths = [
        &req["max_completion_tokens"],
        &req["max_tokens"],
        &req["min_tokens"],
        &req["n_predict"],
        &req["max_new_tokens"],
        &req["num_predict"],
        &req["options"]["num_predict"],
    ];
    let mut per_choice: Option<u64> = None;
    for v in lengths {
        let n = match v.as_i64() {
            Some(n) if n < 0 => BILL_ASKED_CONTEXT,
            Some(n) => n as u64,
            None => continue,
        };
        per_choice = Some(per_choice.map_or(n, |p| p.max(n)));
    }
    let choices = [&req["n"], &req["best_of"]]
        .iter()
        .filter_map(|v| v.as_u64())
        .max()
        .unwrap_or(1)
        .max(1);
    per_choice.unwrap_or(BILL_ASKED_CONTEXT) * choices
}

/// Counts a chat handler in flight, and one dropped before it answered.
struct AbortGuard<'a> {
    stats: &'a Stats,
    answered: bool,
}

impl<'a> AbortGuard<'a> {
    fn new(stats: &'a Stats) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        AbortGuard {
            stats,
            answered: false,
        }
    }

    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for AbortGuard<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            self.stats.requests_aborted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            .to_string(),
    )
        .into_response()
}

fn check_auth(s: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let want = format!("Bearer {}", s.api_key);
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(want.as_str())
    {
        Ok(())
    } else {
        s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        // As OpenAI does: the message echoes the end of the key it was given.
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let tail = &given[given.len().saturating_sub(4)..];
        Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            &format!("Incorrect API key provided: sk-...{tail}."),
        ))
    }
}

fn bad(s: &Shared, msg: &str) -> Response {
    s.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
        msg,
    )
}

fn parse(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Value, Response> {
    s.stats.requests.fetch_add(1, Ordering::Relaxed);
    check_auth(s, headers)?;
    if !headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
    {
        return Err(bad(s, "Content-Type must be application/json"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(s, &format!("bad JSON: {e}")))?;
    if !v.is_object() || !v["model"].is_string() {
        return Err(bad(s, "you must provide a model parameter"));
    }
    if let Ok(mut last) = s.last_request.lock() {
        *last = v.clone();
    }
    Ok(v)
}

fn behaviour(model: &str) -> (&str, u64) {
    match model.split_once(':') {
        Some((b, n)) => (b, n.parse().unwrap_or(0)),
        None => (model, 0),
    }
}

pub(crate) async fn chat(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let guard = AbortGuard::new(&s.stats);
    let response = chat_response(&s, &headers, &body).await;
    guard.answered();
    response
}

async fn chat_response(s: &Arc<Shared>, headers: &HeaderMap, body: &[u8]) -> Response {
    let s = Arc::clone(s);
    let req = match parse(&s, headers, body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    s.stats.chat.fetch_add(1, Ordering::Relaxed);
    let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
        return bad(&s, "messages must be a non-empty array");
    };
    const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];
    if messages
        .iter()
        .any(|m| !m["role"].as_str().is_some_and(|r| ROLES.contains(&r)))
    {
        return bad(&s, "each message needs a valid role");
    }
    let stream = req["stream"].as_bool().unwrap_or(false);
    if !req["stream_options"].is_null() && !stream {
        return bad(&s, "stream_options is only allowed when stream is true");
    }
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    if include_usage {
        s.stats.usage_requested.fetch_add(1, Ordering::Relaxed);
    }
    let mut max_tokens = None;
    for field in ["max_tokens", "max_completion_tokens"] {
        match &req[field] {
            Value::Null => {}
            v => match v.as_u64().filter(|n| *n > 0) {
                Some(n) => max_tokens = Some(n),
                None => return bad(&s, "max_tokens must be a positive integer"),
            },
        }
    }
    let model = req["model"].as_str().unwrap_or_default().to_string();
    let behaving = s.behaviour_for(&model);
    let (kind, n) = behaviour(&behaving);
    match kind {
        "fail-429" => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            return r;
        }
        "fail-500" => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "server_error",
                "The server had an error while processing your request.",
            );
        }
        "slow-first-byte" => tokio::time::sleep(Duration::from_millis(n)).await,
        _ => {}
    }
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default();
    let text = format!("echo: {last_user}");
    let mut words: Vec<String> = match kind {
        "chunks" => (0..n.max(1)).map(|i| format!("w{i} ")).collect(),
        // A long answer: n tokens, streamed 250 to a chunk.
        "tokens" => {
            let n = n.min(max_tokens.unwrap_or(u64::MAX)) as usize;
            let mut out: Vec<String> = vec!["tok ".repeat(250); n / 250];
            if !n.is_multiple_of(250) {
                out.push("tok ".repeat(n % 250));
            }
            out
        }
        _ => text.split_inclusive(' ').map(str::to_owned).collect(),
    };
    // Like a real model: never more output tokens than max_tokens.
    if let Some(m) = max_tokens
        && kind != "tokens"
    {
        words.truncate(m as usize);
    }
    let prompt_tokens = messages
        .iter()
        .map(|m| {
            m["content"]
                .as_str()
                .map_or(1, |t| t.split_whitespace().count() + 3)
        })
        .sum::<usize>() as u64;
    let tool = req["tools"][0]["function"]["name"]
        .as_str()
        .map(str::to_owned);
    let completion_tokens = match kind {
        "tokens" => words.iter().map(|w| w.len() as u64 / 4).sum(),
        "bill-asked" => {
            let billed = asked_tokens(&req);
            s.stats
                .prompt_tokens_billed
                .fetch_add(prompt_tokens, Ordering::Relaxed);
            s.stats
                .completion_tokens_billed
                .fetch_add(billed, Ordering::Relaxed);
            billed
        }
        _ => words.len() as u64,
    };
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens});
    let served = format!("{model}-2026-01-01");

    if !stream {
        let message = match &tool {
            Some(name) => json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}}]}),
            None => json!({"role": "assistant", "content": words.concat()}),
        };
        let finish = if tool.is_some() { "tool_calls" } else { "stop" };
        let body = json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 1,
            "model": served, "choices": [{"index": 0, "message": message, "logprobs": null,
            "finish_reason": finish}], "usage": usage, "system_fingerprint": "fp_fake"});
        return (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
    }

    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
            "model": served, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "usage": null});
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    match &tool {
        Some(name) => {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in ["{\"city\":", "\"Paris\"}"] {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        }
        None => {
            for w in &words {
                events.push(chunk(json!({"content": w}), Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
        }
    }
    if include_usage {
        let c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
            "model": served, "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());

    let interval = if kind == "slow-stream" {
        Duration::from_millis(n)
    } else {
        Duration::ZERO
    };
    let drop_after = (kind == "drop-mid-stream").then_some(2usize);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1);
    let stats = Arc::clone(&s.stats);
    stats.streams_started.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if drop_after == Some(i) {
                // Dropping the sender mid-body makes hyper close the connection abruptly.
                return;
            }
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if tx.send(Ok(Bytes::from(e))).await.is_err() {
                stats.streams_cancelled.fetch_add(1, Ordering::Relaxed);
                return;
            }
            stats.chunks_sent.fetch_add(1, Ordering::Relaxed);
        }
        // Dropping the sender ends the body.
        drop(tx);
        stats.streams_completed.fetch_add(1, Ordering::Relaxed);
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    if drop_after.is_some() {
        // A length the body never reaches: the connection ends in the middle of the response.
        r.headers_mut().insert(
            header::CONTENT_LENGTH,
            http::HeaderValue::from_static("100000"),
        );
    }
    r
}

pub(crate) async fn embeddings(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match parse(&s, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    s.stats.embeddings.fetch_add(1, Ordering::Relaxed);
    let inputs: Vec<String> = match &req["input"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect(),
        _ => return bad(&s, "input must be a string or a non-empty array"),
    };
    let base64 = match req["encoding_format"].as_str() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return bad(&s, "encoding_format must be float or base64"),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let len = t.len() as f32;
            let v = [len, 0.5, -0.25, i as f32];
            let emb = if base64 {
                use base64_engine::Engine;
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64_engine::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    let tokens = inputs.len() as u64 * 2;
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({"object": "list", "data": data, "model": req["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        .to_string(),
    )
        .into_response()
}

pub(crate) async fn models(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = check_auth(&s, &headers) {
        return r;
    }
    axum::Json(json!({"object": "list", "data": [
        {"id": "fake", "object": "model", "created": 1, "owned_by": "fake"}]}))
    .into_response()
}

mod base64_engine {
    pub use base64::Engine;
    pub use base64::engine::general_purpose::STANDARD;
}
