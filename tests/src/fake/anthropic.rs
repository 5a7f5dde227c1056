//! The fake's Anthropic Messages API (`POST /v1/messages`), checking what the real API checks
//! and answering in its shapes, so the gateway's `anthropic` adapter is tested against the
//! rules it must satisfy rather than against itself:
//!
//! - `x-api-key` (or `Authorization: Bearer`) is the key: 401 `authentication_error`;
//! - `anthropic-version` is present, `Content-Type` is JSON: 400;
//! - only the Messages API's top-level fields (400 "Extra inputs are not permitted"),
//!   `max_tokens` a positive integer, `messages` non-empty, starting with `user` and
//!   alternating; no empty or whitespace-only text block; `tool_result` blocks only in a user
//!   turn, each answering a `tool_use` (id `^[a-zA-Z0-9_-]+$`) of the assistant turn just before it, and every such
//!   `tool_use` answered there; tool blocks only with `tools` declared: 400
//!   `invalid_request_error` with the real API's wording.
//!
//! Behaviour by model, as for the OpenAI side: `fail-529` answers 529 `overloaded_error`,
//! `error-mid-stream` streams two text deltas and then an `error` event, `stop-early` ends the
//! stream after two deltas without `message_stop`; anything else echoes the last user text one
//! word per delta (`chunks:<n>`: n deltas) (usage: the words, with 3 cache-read input tokens), or calls the first tool
//! (its input streamed as two `input_json_delta` pieces) when tools are declared and
//! `tool_choice` is not `none`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::state::Shared;

const FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
];

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"})
            .to_string(),
    )
        .into_response()
}

fn invalid(s: &Shared, message: &str) -> Response {
    s.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// The request's problem, in the real API's words.
fn check(req: &Value) -> Result<(), String> {
    let Some(obj) = req.as_object() else {
        return Err("body: Input should be an object".into());
    };
    if let Some(extra) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("{extra}: Extra inputs are not permitted"));
    }
    if !req["model"].is_string() {
        return Err("model: Field required".into());
    }
    if req["max_tokens"].as_u64().is_none_or(|n| n < 1) {
        return Err("max_tokens: Field required".into());
    }
    let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Err("messages: at least one message is required".into());
    };
    let declared = req["tools"].as_array().is_some_and(|t| !t.is_empty());
    let mut previous_calls: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Err(if i == 0 {
                "messages: first message must use the \"user\" role".into()
            } else {
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple consecutive messages with the same role".into()
            });
        }
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(t) => vec![json!({"type": "text", "text": t})],
            Value::Array(b) => b.clone(),
            _ => {
                return Err(format!(
                    "messages.{i}.content: Input should be a valid list"
                ));
            }
        };
        let mut answered: Vec<String> = Vec::new();
        let mut calls: Vec<String> = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            match b["type"].as_str().unwrap_or("") {
                "text" => {
                    if b["text"].as_str().is_none_or(|t| t.trim().is_empty()) {
                        return Err(format!(
                            "messages.{i}.content.{j}.text: text content blocks must contain non-whitespace text"
                        ));
                    }
                }
                "image" => {}
                "tool_use" if role == "assistant" => {
                    if !declared {
                        return Err("Requests which include `tool_use` or `tool_result` blocks must define tools.".into());
                    }
                    if !b["input"].is_object() {
                        return Err(format!(
                            "messages.{i}.content.{j}.tool_use.input: Input should be a valid dictionary"
                        ));
                    }
                    let id = b["id"].as_str().unwrap_or("");
                    if id.is_empty()
                        || !id
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(format!(
                            "messages.{i}.content.{j}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                        ));
                    }
                    calls.push(id.to_owned());
                }
                "tool_result" if role == "user" => {
                    if !declared {
                        return Err("Requests which include `tool_use` or `tool_result` blocks must define tools.".into());
                    }
                    let id = b["tool_use_id"].as_str().unwrap_or("");
                    if !previous_calls.iter().any(|c| c == id) {
                        return Err(format!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ));
                    }
                    answered.push(id.to_owned());
                }
                other => {
                    return Err(format!(
                        "messages.{i}.content.{j}: '{other}' is not a valid block here"
                    ));
                }
            }
        }
        if role == "user"
            && let Some(missing) = previous_calls.iter().find(|c| !answered.contains(c))
        {
            return Err(format!(
                "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."
            ));
        }
        previous_calls = calls;
    }
    Ok(())
}

pub(crate) async fn messages(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.stats.requests.fetch_add(1, Ordering::Relaxed);
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let bearer = format!("Bearer {}", s.api_key);
    if header("x-api-key") != Some(s.api_key.as_str())
        && header("authorization") != Some(bearer.as_str())
    {
        s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if header("anthropic-version").is_none() {
        return invalid(&s, "anthropic-version: header is required");
    }
    if !header("content-type").is_some_and(|v| v.starts_with("application/json")) {
        return invalid(&s, "Content-Type must be application/json");
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid(&s, &format!("body: invalid JSON: {e}")),
    };
    if let Ok(mut last) = s.last_request.lock() {
        *last = req.clone();
    }
    if let Err(why) = check(&req) {
        return invalid(&s, &why);
    }
    s.stats.chat.fetch_add(1, Ordering::Relaxed);

    let model = req["model"].as_str().unwrap_or("").to_owned();
    let behaving = s.behaviour_for(&model);
    if behaving == "fail-529" {
        return error(
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
            "Overloaded",
        );
    }
    let last_user = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(t) => t.clone(),
            Value::Array(blocks) => blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default();
    let words: Vec<String> = match behaving
        .strip_prefix("chunks:")
        .and_then(|n| n.parse::<u64>().ok())
    {
        Some(n) => (0..n.max(1)).map(|i| format!("w{i}")).collect(),
        None => format!("echo: {last_user}")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    };
    let tool = req["tools"]
        .as_array()
        .and_then(|t| t.first())
        .filter(|_| req["tool_choice"]["type"] != "none")
        .and_then(|t| t["name"].as_str())
        .map(str::to_owned);
    let input_tokens = last_user.split_whitespace().count() as u64;
    let output_tokens = (words.len() as u64).min(req["max_tokens"].as_u64().unwrap_or(1));

    if req["stream"] != true {
        let (content, stop) = match &tool {
            Some(name) => (
                json!([{"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {"city": "Oslo"}}]),
                "tool_use",
            ),
            None => (
                json!([{"type": "text", "text": words.join(" ")}]),
                "end_turn",
            ),
        };
        return (
            [(header::CONTENT_TYPE, "application/json")],
            json!({
                "id": "msg_fake1", "type": "message", "role": "assistant", "model": format!("{model}-20260101"),
                "content": content, "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 0},
            })
            .to_string(),
        )
            .into_response();
    }

    s.stats.streams_started.fetch_add(1, Ordering::Relaxed);
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_fake1", "type": "message", "role": "assistant", "content": [], "model": format!("{model}-20260101"), "stop_reason": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1, "cache_read_input_tokens": 3}}}),
        ),
        ev("ping", json!({"type": "ping"})),
    ];
    let stop = match &tool {
        Some(name) => {
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {}}})));
            for piece in ["{\"city\": ", "\"Oslo\"}"] {
                events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}})));
            }
            events.push(ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            "tool_use"
        }
        None => {
            events.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            for (i, w) in words.iter().enumerate() {
                let text = if i == 0 { w.clone() } else { format!(" {w}") };
                events.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})));
                if i == 1 && behaving == "error-mid-stream" {
                    events.push(ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
                    break;
                }
                if i == 1 && behaving == "stop-early" {
                    break;
                }
            }
            events.push(ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            "end_turn"
        }
    };
    let broken = behaving == "error-mid-stream" || behaving == "stop-early";
    if broken {
        // Nothing follows the error or the cut: the connection just ends.
        if let Some(at) = events
            .iter()
            .rposition(|e| e.starts_with("event: content_block_stop"))
        {
            events.truncate(at);
        }
    } else {
        events.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}})));
        events.push(ev("message_stop", json!({"type": "message_stop"})));
        s.stats.streams_completed.fetch_add(1, Ordering::Relaxed);
    }
    s.stats
        .chunks_sent
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    // One frame per event, each sent when the reader took the last, as the OpenAI side does.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(1);
    tokio::spawn(async move {
        for e in events {
            if tx.send(Ok(Bytes::from(e))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}
