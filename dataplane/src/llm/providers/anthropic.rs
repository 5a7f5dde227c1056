//! Anthropic Messages upstreams (`provider: anthropic`): the canonical OpenAI chat request becomes
//! a Messages request, and the answer — one message, or an event stream translated event by
//! event without buffering — becomes an OpenAI chat completion or chunk stream.
//!
//! The rules follow what the Messages API checks and what callers' OpenAI SDKs expect:
//!
//! - every `system`/`developer` message goes to the top-level `system`, in order;
//! - consecutive turns of one role are merged (the API wants user and assistant to alternate),
//!   `tool` messages become `tool_result` blocks of one user turn, before any text of it;
//! - empty or whitespace-only text is never sent as a block (the API refuses it), a tool call
//!   with empty arguments is sent as `{}`; a history with tool calls but no `tools` declares the
//!   tools it used with `tool_choice: none` (the API refuses tool blocks without tools);
//! - `max_tokens` is required: the limit reserved by budgets or token limits, else the
//!   caller's, else the model's `maxOutputTokens`;
//! - what cannot be honoured (`n` > 1, `response_format` other than text, audio or file parts,
//!   `temperature` above 1) is a 400 naming the parameter, never silently dropped; OpenAI-only
//!   tuning fields the API does not have (`seed`, penalties, `logit_bias`, …) are left out;
//! - usage: OpenAI's `prompt_tokens` includes cached tokens, Anthropic's `input_tokens` does not,
//!   so `prompt_tokens` = input + cache read + cache creation and
//!   `prompt_tokens_details.cached_tokens` = cache read; streamed `output_tokens` are cumulative
//!   (the last value wins);
//! - tool calls are indexed among tool calls only, as OpenAI does, not among content blocks;
//! - an `error` event inside a stream becomes an OpenAI error event and the stream ends without
//!   `[DONE]`; so does a stream that stops before `message_stop`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::Full;
use llmgate_snapshot::Endpoint;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{HttpAdapter, Op, StreamTranslator, Translated};
use crate::error::GatewayError;
use crate::llm::codec::sse::{EventSplitter, MAX_EVENT_BYTES, data_of};
use crate::llm::types::{ChatRequest, EmbeddingsRequest, EncodingFormat, Usage};

/// The API version llmgate speaks (`anthropic-version`).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct Anthropic;

static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("llmgate/", env!("CARGO_PKG_VERSION")));

impl HttpAdapter for Anthropic {
    fn chat_body(&self, ep: &Endpoint, req: &ChatRequest<'_>) -> Result<Bytes, GatewayError> {
        let max_tokens = req
            .output_limit()
            .unwrap_or(u64::from(ep.max_output_tokens));
        let body = to_messages(req, &ep.upstream_model, max_tokens)?;
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|e| GatewayError::Internal(format!("serialize messages request: {e}")))
    }

    fn embeddings_body(
        &self,
        ep: &Endpoint,
        _req: &EmbeddingsRequest<'_>,
    ) -> Result<Bytes, GatewayError> {
        Err(GatewayError::bad_request(
            format!(
                "model '{}' is served by Anthropic, which has no embeddings API",
                ep.model
            ),
            Some("model"),
        ))
    }

    fn request(
        &self,
        _ep: &Endpoint,
        base_url: &str,
        op: Op,
        stream: bool,
        _request_id: &str,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, GatewayError> {
        if op != Op::Chat {
            return Err(GatewayError::Internal("Anthropic serves chat only".into()));
        }
        // The Anthropic SDK's base URL has no `/v1`; an OpenAI-style one (llama.cpp's) has.
        let path = if base_url.ends_with("/v1") {
            "/messages"
        } else {
            "/v1/messages"
        };
        http::Request::post(format!("{base_url}{path}"))
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .header(header::USER_AGENT, USER_AGENT.clone())
            .header(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            )
            .header(
                header::ACCEPT,
                HeaderValue::from_static(if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                }),
            )
            .body(Full::new(body))
            .map_err(|e| GatewayError::Internal(format!("build upstream request: {e}")))
    }

    fn chat_response(&self, body: Bytes, created: i64) -> Result<Translated, GatewayError> {
        from_message(&body, created)
    }

    fn embeddings_response(
        &self,
        _body: Bytes,
        _wanted: Option<EncodingFormat>,
    ) -> Result<Translated, GatewayError> {
        Err(GatewayError::Internal("Anthropic serves chat only".into()))
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
        upstream_error(status, headers, body)
    }

    fn chat_stream(&self, client_wants_usage: bool, created: i64) -> Box<dyn StreamTranslator> {
        Box::new(MessagesStream::new(client_wants_usage, created))
    }
}

fn bad(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::bad_request(message, Some(param))
}

/// The Messages request for an OpenAI chat request.
pub fn to_messages(
    req: &ChatRequest<'_>,
    model: &str,
    max_tokens: u64,
) -> Result<Value, GatewayError> {
    if req.choices() > 1 {
        return Err(bad(
            "Anthropic models generate one choice per request: 'n' (and 'best_of') must be 1",
            "n",
        ));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut history_tools: Vec<String> = Vec::new();
    for (i, m) in req.messages().iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                for text in texts(content, i)? {
                    system.push(json!({"type": "text", "text": text}));
                }
            }
            "user" => push(&mut turns, "user", user_blocks(content, i)?),
            "assistant" => {
                let mut blocks: Vec<Value> = texts(content, i)?
                    .into_iter()
                    .map(|t| json!({"type": "text", "text": t}))
                    .collect();
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let block = tool_use(call, i)?;
                    if let Some(name) = block.get("name").and_then(Value::as_str)
                        && !history_tools.iter().any(|n| n == name)
                    {
                        history_tools.push(name.to_owned());
                    }
                    blocks.push(block);
                }
                push(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        bad(
                            format!("messages[{i}]: a tool message needs 'tool_call_id'"),
                            "messages",
                        )
                    })?;
                let mut block = json!({"type": "tool_result", "tool_use_id": tool_id(id)});
                let text = texts(content, i)?.join("\n");
                if !text.is_empty() {
                    block["content"] = Value::String(text);
                }
                push(&mut turns, "user", vec![block]);
            }
            _ => {
                return Err(bad(
                    format!(
                        "messages[{i}].role must be system, developer, user, assistant or tool"
                    ),
                    "messages",
                ));
            }
        }
    }
    match turns.first() {
        None => {
            return Err(bad(
                "messages must contain at least one user message besides system messages",
                "messages",
            ));
        }
        Some(("assistant", _)) => {
            return Err(bad(
                "the first message after the system messages must be a user message for Anthropic models",
                "messages",
            ));
        }
        Some(_) => {}
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // Tool results answer the previous turn's calls and must open the user turn.
            blocks.sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
            json!({"role": role, "content": blocks})
        })
        .collect();

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("max_tokens".into(), Value::from(max_tokens));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    let field = |k: &str| req.field(k).filter(|v| !v.is_null());
    if let Some(t) = field("temperature") {
        let n = t
            .as_f64()
            .ok_or_else(|| bad("'temperature' must be a number", "temperature"))?;
        if !(0.0..=1.0).contains(&n) {
            return Err(bad(
                format!("'temperature' must be between 0 and 1 for Anthropic models, got {n}"),
                "temperature",
            ));
        }
        out.insert("temperature".into(), t);
    }
    if let Some(p) = field("top_p") {
        out.insert("top_p".into(), p);
    }
    if let Some(stop) = field("stop") {
        let all: Vec<Value> = match stop {
            Value::String(s) => vec![Value::String(s)],
            Value::Array(a) => a,
            _ => {
                return Err(bad(
                    "'stop' must be a string or an array of strings",
                    "stop",
                ));
            }
        };
        // The API refuses empty and whitespace-only sequences.
        let kept: Vec<Value> = all
            .into_iter()
            .filter(|s| s.as_str().is_some_and(|s| !s.trim().is_empty()))
            .collect();
        if !kept.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(kept));
        }
    }
    if req.is_stream() {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(Value::String(user)) = field("user") {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(format) = field("response_format")
        && format.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(bad(
            "'response_format' other than text is not supported for Anthropic models; describe the format in the prompt or use a tool",
            "response_format",
        ));
    }
    if let Some(tools) = field("tools") {
        let tools = tools
            .as_array()
            .ok_or_else(|| bad("'tools' must be an array", "tools"))?;
        let mut out_tools = Vec::with_capacity(tools.len());
        for t in tools {
            out_tools.push(tool(t)?);
        }
        let mut choice = match field("tool_choice") {
            None => None,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Some(json!({"type": "auto"})),
                "none" => Some(json!({"type": "none"})),
                "required" => Some(json!({"type": "any"})),
                _ => {
                    return Err(bad(
                        "'tool_choice' must be auto, none, required or a named function",
                        "tool_choice",
                    ));
                }
            },
            Some(named) => {
                let name = named
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        bad(
                            "'tool_choice' must be auto, none, required or a named function",
                            "tool_choice",
                        )
                    })?;
                Some(json!({"type": "tool", "name": name}))
            }
        };
        if field("parallel_tool_calls") == Some(Value::Bool(false)) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if c["type"] != "none" {
                c["disable_parallel_tool_use"] = Value::Bool(true);
            }
        }
        if !out_tools.is_empty() {
            out.insert("tools".into(), Value::Array(out_tools));
            if let Some(c) = choice {
                out.insert("tool_choice".into(), c);
            }
        }
    }
    if !out.contains_key("tools") && !history_tools.is_empty() {
        // The API refuses tool_use and tool_result blocks in a request that defines no tools:
        // the tools the history used are declared, and none may be called.
        let stubs = history_tools
            .iter()
            .map(|n| json!({"name": n, "input_schema": {"type": "object"}}))
            .collect();
        out.insert("tools".into(), Value::Array(stubs));
        out.insert("tool_choice".into(), json!({"type": "none"}));
    }
    Ok(Value::Object(out))
}

/// Appends blocks to the conversation, merging into the last turn when it has the same role.
fn push(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// The non-blank texts of a string or an array of text parts.
fn texts(content: &Value, i: usize) -> Result<Vec<String>, GatewayError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(non_blank(s).into_iter().collect()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.extend(non_blank(
                        p.get("text").and_then(Value::as_str).unwrap_or(""),
                    )),
                    _ => {
                        return Err(bad(
                            format!("messages[{i}]: only text parts are allowed here"),
                            "messages",
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad(
            format!("messages[{i}].content must be a string or an array of parts"),
            "messages",
        )),
    }
}

fn non_blank(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.to_owned())
}

/// A user turn's blocks: text and images.
fn user_blocks(content: &Value, i: usize) -> Result<Vec<Value>, GatewayError> {
    let Value::Array(parts) = content else {
        return Ok(texts(content, i)?
            .into_iter()
            .map(|t| json!({"type": "text", "text": t}))
            .collect());
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = non_blank(p.get("text").and_then(Value::as_str).unwrap_or("")) {
                    out.push(json!({"type": "text", "text": t}));
                }
            }
            Some("image_url") => {
                let url = p
                    .pointer("/image_url/url")
                    .or_else(|| p.get("image_url"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                out.push(image(url, i)?);
            }
            Some(other) => {
                return Err(bad(
                    format!(
                        "messages[{i}]: '{other}' parts are not supported for Anthropic models"
                    ),
                    "messages",
                ));
            }
            None => {
                return Err(bad(
                    format!("messages[{i}]: every content part needs a 'type'"),
                    "messages",
                ));
            }
        }
    }
    Ok(out)
}

/// An image part: a data URL becomes a base64 source, an http(s) URL a url source.
fn image(url: &str, i: usize) -> Result<Value, GatewayError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media, data) = rest.split_once(";base64,").ok_or_else(|| {
            bad(
                format!("messages[{i}]: an image data URL must be base64"),
                "messages",
            )
        })?;
        if !matches!(
            media,
            "image/jpeg" | "image/png" | "image/gif" | "image/webp"
        ) {
            return Err(bad(
                format!(
                    "messages[{i}]: image type '{media}' is not supported; use JPEG, PNG, GIF or WebP"
                ),
                "messages",
            ));
        }
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}),
        );
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(bad(
        format!("messages[{i}]: an image URL must be a data URL or http(s)"),
        "messages",
    ))
}

/// An assistant's OpenAI tool call as a `tool_use` block.
fn tool_use(call: &Value, i: usize) -> Result<Value, GatewayError> {
    let id = call.get("id").and_then(Value::as_str);
    let name = call.pointer("/function/name").and_then(Value::as_str);
    let (Some(id), Some(name)) = (id, name) else {
        return Err(bad(
            format!("messages[{i}].tool_calls: each call needs an id and a function name"),
            "messages",
        ));
    };
    let args = call
        .pointer("/function/arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    let input = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(args).map_err(|_| {
            bad(
                format!("messages[{i}].tool_calls: the arguments of '{name}' are not JSON"),
                "messages",
            )
        })?
    };
    Ok(json!({"type": "tool_use", "id": tool_id(id), "name": name, "input": input}))
}

/// A tool-call id the Messages API accepts (`^[a-zA-Z0-9_-]+$`): ids minted elsewhere
/// (`functions.Bash:0`, with pipes, too long) get the disallowed characters replaced and a hash
/// of the original appended, the same for the call and its result, distinct for distinct ids.
fn tool_id(id: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.len() <= 64 && id.chars().all(valid) {
        return id.to_owned();
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(id.as_bytes());
    let mut out: String = id
        .chars()
        .map(|c| if valid(c) { c } else { '_' })
        .take(40)
        .collect();
    out.push('_');
    out.push_str(&llmgate_snapshot::hex(&hash[..6]));
    out
}

/// An OpenAI function tool as an Anthropic tool.
fn tool(t: &Value) -> Result<Value, GatewayError> {
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad(
            "only 'function' tools are supported for Anthropic models",
            "tools",
        ));
    }
    let f = t.get("function").unwrap_or(&Value::Null);
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("every tool needs a function name", "tools"))?;
    let mut out = json!({
        "name": name,
        "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    if let Some(d) = f
        .get("description")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    {
        out["description"] = Value::String(d.to_owned());
    }
    Ok(out)
}

/// Anthropic's usage, as it appears in a message and in stream events.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Later values replace earlier ones field by field (stream usage is cumulative).
    fn overwrite(&mut self, later: &AnthropicUsage) {
        let take = |a: &mut Option<u64>, b: Option<u64>| {
            if b.is_some() {
                *a = b;
            }
        };
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(
            &mut self.cache_read_input_tokens,
            later.cache_read_input_tokens,
        );
        take(
            &mut self.cache_creation_input_tokens,
            later.cache_creation_input_tokens,
        );
    }

    fn cached(&self) -> u64 {
        self.cache_read_input_tokens.unwrap_or(0)
    }

    fn to_usage(self) -> Usage {
        let prompt = self.input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
            + self.cache_creation_input_tokens.unwrap_or(0);
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }

    fn to_json(self) -> Value {
        let u = self.to_usage();
        json!({
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached()},
        })
    }
}

/// OpenAI's `finish_reason` for a `stop_reason`.
fn finish_reason(stop: &str) -> Result<&'static str, GatewayError> {
    Ok(match stop {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => {
            return Err(GatewayError::BadUpstreamResponse(format!(
                "unknown stop_reason '{other}'"
            )));
        }
    })
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: AnthropicUsage,
}

/// An OpenAI chat completion for a Messages response.
pub fn from_message(body: &[u8], created: i64) -> Result<Translated, GatewayError> {
    let m: Message = serde_json::from_slice(body)
        .map_err(|e| GatewayError::BadUpstreamResponse(format!("message: {e}")))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in &m.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => reasoning
                .push_str(block.get("thinking").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            // Redacted thinking, citations, server tool blocks: nothing OpenAI's shape carries.
            _ => {}
        }
    }
    let finish = finish_reason(m.stop_reason.as_deref().unwrap_or("end_turn"))?;
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": m.id,
        "object": "chat.completion",
        "created": created,
        "model": m.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": m.usage.to_json(),
    });
    let body = serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| GatewayError::Internal(format!("serialize completion: {e}")))?;
    Ok(Translated {
        body,
        usage: Some(m.usage.to_usage()),
        model: m.model,
    })
}

/// An Anthropic error body (`{"type":"error","error":{"type","message"}}`) as the caller's error.
pub fn upstream_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        r#type: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => {
            let message = b
                .error
                .message
                .unwrap_or_else(|| format!("upstream returned {status}"));
            // OpenAI's code for it, which agents act on (they compact the conversation).
            let lower = message.to_ascii_lowercase();
            let code = (status == StatusCode::BAD_REQUEST
                && (lower.contains("prompt is too long") || lower.contains("input is too long")))
            .then(|| "context_length_exceeded".to_owned());
            GatewayError::Upstream {
                status,
                message,
                kind: b.error.r#type,
                code,
                retry_after: headers.get(header::RETRY_AFTER).cloned(),
                retry_after_ms: headers
                    .get("retry-after-ms")
                    .and_then(|v| v.to_str().ok()?.trim().parse().ok()),
            }
        }
        Err(_) => super::openai::upstream_error(status, headers, body),
    }
}

/// Translates a Messages event stream into OpenAI chunks as the events arrive.
struct MessagesStream {
    splitter: EventSplitter,
    client_wants_usage: bool,
    created: i64,
    id: String,
    model: Option<String>,
    usage: AnthropicUsage,
    saw_usage: bool,
    stop_reason: Option<String>,
    /// Per content block index: the OpenAI tool-call index, and whether arguments were sent.
    tool_blocks: Vec<(u64, u32, bool)>,
    tools: u32,
    done: bool,
    errored: bool,
}

impl MessagesStream {
    fn new(client_wants_usage: bool, created: i64) -> Self {
        MessagesStream {
            splitter: EventSplitter::default(),
            client_wants_usage,
            created,
            id: String::new(),
            model: None,
            usage: AnthropicUsage::default(),
            saw_usage: false,
            stop_reason: None,
            tool_blocks: Vec::new(),
            tools: 0,
            done: false,
            errored: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        sse(&v)
    }

    fn tool_delta(&self, index: u32, function: Value) -> Value {
        json!({"tool_calls": [{"index": index, "function": function}]})
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<Bytes>) -> Result<(), GatewayError> {
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| GatewayError::BadUpstreamResponse(format!("stream event: {e}")))?;
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                self.id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                self.model = m.get("model").and_then(Value::as_str).map(str::to_owned);
                if let Some(u) = m
                    .get("usage")
                    .and_then(|u| AnthropicUsage::deserialize(u).ok())
                {
                    self.usage.overwrite(&u);
                    self.saw_usage = true;
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let at = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let index = self.tools;
                    self.tools += 1;
                    self.tool_blocks.push((at, index, false));
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": index,
                            "id": block.get("id").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                        }]}),
                        None,
                    ));
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                let at = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({"content": text}), None));
                        }
                    }
                    Some("thinking_delta") => {
                        let text = delta.get("thinking").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({"reasoning_content": text}), None));
                        }
                    }
                    Some("input_json_delta") => {
                        let part = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if let Some(t) = self.tool_blocks.iter_mut().find(|t| t.0 == at)
                            && !part.is_empty()
                        {
                            t.2 = true;
                            let index = t.1;
                            out.push(
                                self.chunk(
                                    self.tool_delta(index, json!({"arguments": part})),
                                    None,
                                ),
                            );
                        }
                    }
                    // Signatures and citations have no place in OpenAI's shape.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let at = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(t) = self.tool_blocks.iter_mut().find(|t| t.0 == at)
                    && !t.2
                {
                    // A call without arguments still carries valid JSON, once.
                    t.2 = true;
                    let index = t.1;
                    out.push(self.chunk(self.tool_delta(index, json!({"arguments": "{}"})), None));
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_owned());
                }
                if let Some(u) = v
                    .get("usage")
                    .and_then(|u| AnthropicUsage::deserialize(u).ok())
                {
                    self.usage.overwrite(&u);
                    self.saw_usage = true;
                }
            }
            "message_stop" => {
                let finish = finish_reason(self.stop_reason.as_deref().unwrap_or("end_turn"))?;
                out.push(self.chunk(json!({}), Some(finish)));
                if self.client_wants_usage {
                    let v = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": self.usage.to_json(),
                    });
                    out.push(sse(&v));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
                self.done = true;
            }
            "error" => {
                let e = v.get("error").unwrap_or(&Value::Null);
                self.errored = true;
                self.done = true;
                out.push(sse(&json!({"error": {
                    "message": e.get("message").and_then(Value::as_str).unwrap_or("the upstream reported an error"),
                    "type": e.get("type").and_then(Value::as_str).unwrap_or("api_error"),
                    "param": null,
                    "code": null,
                }})));
            }
            // `ping` and event types newer than this code.
            _ => {}
        }
        Ok(())
    }
}

fn sse(v: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    // A Value always serializes.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl StreamTranslator for MessagesStream {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<Bytes>) -> Result<(), GatewayError> {
        self.splitter.push(chunk);
        while let Some(event) = self.splitter.next_event() {
            if self.done {
                continue;
            }
            if let Some(data) = data_of(&event) {
                self.on_event(&data, out)?;
            }
        }
        if self.splitter.pending() > MAX_EVENT_BYTES {
            return Err(GatewayError::BadUpstreamResponse(
                "stream event larger than 4 MiB".into(),
            ));
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if !self.done
            && let Some(rest) = self.splitter.take_rest()
            && let Some(data) = data_of(&rest)
        {
            let _ = self.on_event(&data, out);
        }
        if !self.done {
            // Never a made-up finish: the caller learns the answer is incomplete.
            out.push(sse(&json!({"error": {
                "message": "the upstream stream ended before the message was complete",
                "type": "upstream_incomplete",
                "param": null,
                "code": null,
            }})));
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.saw_usage.then(|| self.usage.to_usage())
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn completed(&self) -> bool {
        self.done
    }

    fn errored(&self) -> bool {
        self.errored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: &str, cap: Option<u64>) -> Result<Value, GatewayError> {
        let mut req = ChatRequest::parse(body.as_bytes()).expect("parses");
        if let Some(c) = cap {
            req.cap_output(c);
        }
        to_messages(&req, "claude-up", req.output_limit().unwrap_or(4096))
    }

    /// Request cases of the translation checklist (numbers in brackets), each OpenAI body with
    /// the Messages body it becomes, or the 400 it gets.
    #[test]
    fn requests_become_messages_requests() {
        let cases: &[(&str, &str, Option<u64>)] = &[
            (
                "[1] system and developer messages anywhere go to system, in order",
                r#"{"model":"c","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"developer","content":[{"type":"text","text":"Answer in French."}]},{"role":"user","content":"again"}]}"#,
                None,
            ),
            (
                "[3] consecutive user turns merge",
                r#"{"model":"c","messages":[{"role":"user","content":"one"},{"role":"user","content":[{"type":"text","text":"two"}]}]}"#,
                None,
            ),
            (
                "[4] [6] [7] [19] empty assistant text beside tool calls, empty arguments, two results and a user text after them",
                r#"{"model":"c","messages":[{"role":"user","content":"weather and time?"},{"role":"assistant","content":"","tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}},{"id":"call_2","type":"function","function":{"name":"time","arguments":""}}]},{"role":"tool","tool_call_id":"call_1","content":"rain"},{"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"noon"}]},{"role":"user","content":"thanks"}],"tools":[{"type":"function","function":{"name":"weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},{"type":"function","function":{"name":"time","description":""}}]}"#,
                None,
            ),
            (
                "[14] tool-call ids minted elsewhere become ids the API accepts, the same for the call and its result",
                r#"{"model":"c","messages":[{"role":"user","content":"ls"},{"role":"assistant","tool_calls":[{"id":"functions.Bash:0","type":"function","function":{"name":"Bash","arguments":"{}"}},{"id":"call|a|b","type":"function","function":{"name":"Bash","arguments":"{}"}}]},{"role":"tool","tool_call_id":"functions.Bash:0","content":"a.txt"},{"role":"tool","tool_call_id":"call|a|b","content":"b.txt"}],"tools":[{"type":"function","function":{"name":"Bash"}}]}"#,
                None,
            ),
            (
                "[5] [8] an empty tool result has no content; the history's tools are declared, none callable",
                r#"{"model":"c","messages":[{"role":"user","content":"go"},{"role":"assistant","tool_calls":[{"id":"t1","type":"function","function":{"name":"run","arguments":"{}"}}]},{"role":"tool","tool_call_id":"t1","content":""}]}"#,
                None,
            ),
            (
                "[9] required is any",
                r#"{"model":"c","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required"}"#,
                None,
            ),
            (
                "[10] none is none",
                r#"{"model":"c","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}"#,
                None,
            ),
            (
                "[11] [12] a named function, parallel calls off",
                r#"{"model":"c","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}},"parallel_tool_calls":false}"#,
                None,
            ),
            (
                "[36] [37] images: a data URL and an https URL",
                r#"{"model":"c","messages":[{"role":"user","content":[{"type":"text","text":"compare"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},{"type":"image_url","image_url":{"url":"https://example.com/a.jpg"}}]}]}"#,
                None,
            ),
            (
                "[40] [44] the reserved limit wins over the caller's; blank stop sequences go; stream, user, sampling kept; OpenAI-only fields left out",
                r#"{"model":"c","messages":[{"role":"user","content":"x"}],"max_tokens":900,"stop":["\n","","END"],"stream":true,"stream_options":{"include_usage":true},"user":"u-42","temperature":0.2,"top_p":0.9,"seed":7,"frequency_penalty":0.5,"logit_bias":{"1":2}}"#,
                Some(300),
            ),
            (
                "[40] without any limit, the model's maximum",
                r#"{"model":"c","messages":[{"role":"user","content":"x"}],"stop":"END"}"#,
                None,
            ),
            (
                "[45] n above 1",
                r#"{"model":"c","messages":[{"role":"user","content":"x"}],"n":2}"#,
                None,
            ),
            (
                "[42] temperature above 1",
                r#"{"model":"c","messages":[{"role":"user","content":"x"}],"temperature":1.5}"#,
                None,
            ),
            (
                "[39] a JSON schema response format",
                r#"{"model":"c","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{}}}}"#,
                None,
            ),
            (
                "[2] no user turn before the assistant",
                r#"{"model":"c","messages":[{"role":"system","content":"s"},{"role":"assistant","content":"hi"}]}"#,
                None,
            ),
            (
                "[2] only system messages",
                r#"{"model":"c","messages":[{"role":"system","content":"s"}]}"#,
                None,
            ),
            (
                "[36] an image type the API does not read",
                r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAAA"}}]}]}"#,
                None,
            ),
            (
                "audio has no Anthropic form",
                r#"{"model":"c","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}"#,
                None,
            ),
        ];
        let mut out = String::new();
        for (name, body, cap) in cases {
            out += &format!("## {name}\nin (cap {cap:?}): {body}\n");
            match translate(body, *cap) {
                Ok(v) => {
                    out += &format!(
                        "out: {}\n\n",
                        serde_json::to_string_pretty(&v).unwrap_or_default()
                    )
                }
                Err(e) => out += &format!("refused {}: {e}\n\n", e.status().as_u16()),
            }
        }
        crate::test_support::golden("anthropic-requests.txt", &out);
    }

    /// [24] [25] [31] [33] A message with thinking, text and a tool call, cache tokens counted
    /// into prompt_tokens; stop reasons mapped; an unknown one is an error, not a silent stop.
    #[test]
    fn messages_become_chat_completions() {
        let body = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-x-2026","content":[{"type":"thinking","thinking":"Let me look.","signature":"sig"},{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Oslo"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":30,"cache_read_input_tokens":2495,"cache_creation_input_tokens":100}}"#;
        let t = from_message(body.as_bytes(), 1_800_000_000).expect("translates");
        let mut out = serde_json::to_string_pretty(
            &serde_json::from_slice::<Value>(&t.body).unwrap_or_default(),
        )
        .unwrap_or_default();
        out.push('\n');
        crate::test_support::golden("anthropic-response.json", &out);
        assert_eq!(
            t.usage,
            Some(Usage {
                prompt_tokens: 2607,
                completion_tokens: 30,
                total_tokens: 2637
            })
        );
        assert_eq!(t.model.as_deref(), Some("claude-x-2026"));

        let with = |stop: &str| {
            let b = format!(
                r#"{{"id":"m","model":"c","content":[{{"type":"text","text":"x"}}],"stop_reason":"{stop}","usage":{{"input_tokens":1,"output_tokens":1}}}}"#
            );
            from_message(b.as_bytes(), 0).map(|t| {
                serde_json::from_slice::<Value>(&t.body).unwrap_or_default()["choices"][0]
                    ["finish_reason"]
                    .clone()
            })
        };
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(with(stop).ok(), Some(Value::from(finish)), "{stop}");
        }
        assert!(with("something_new").is_err());
    }

    /// [18] [19] [21] [29] [30] Text at block 0, a tool call at block 1, a call without
    /// arguments at block 2; output tokens cumulative, input counts updated by message_delta.
    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_s\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x-2026\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":5}}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"check.\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_a\",\"name\":\"weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Oslo\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":\"time\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15,\"input_tokens\":26}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn relay(input: &str, wants_usage: bool, size: usize) -> (String, Box<dyn StreamTranslator>) {
        let mut t = Anthropic.chat_stream(wants_usage, 1_800_000_000);
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(size) {
            t.feed(c, &mut out).expect("feed");
        }
        t.finish(&mut out);
        let bytes: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        (String::from_utf8(bytes).unwrap_or_default(), t)
    }

    #[test]
    fn streams_translate_event_by_event_whatever_the_chunking() {
        let (whole, t) = relay(STREAM, true, STREAM.len());
        crate::test_support::golden("anthropic-stream.txt", &whole);
        assert!(t.completed() && !t.errored());
        assert_eq!(
            t.usage(),
            Some(Usage {
                prompt_tokens: 31,
                completion_tokens: 15,
                total_tokens: 46
            })
        );
        assert_eq!(t.model(), Some("claude-x-2026"));
        for size in 1..=STREAM.len().min(700) {
            assert_eq!(
                relay(STREAM, true, size).0,
                whole,
                "split every {size} bytes"
            );
        }
        // Without include_usage the usage chunk is not sent, but still accounted.
        let (text, t) = relay(STREAM, false, 64);
        assert!(!text.contains("prompt_tokens"));
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(t.usage().map(|u| u.completion_tokens), Some(15));
    }

    /// [22] Cut by max_tokens inside a tool call: the partial arguments pass as they came and
    /// the finish is `length`, never `tool_calls` (the call is not complete).
    #[test]
    fn a_tool_call_cut_by_max_tokens_finishes_as_length() {
        let upstream = concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\": \\\"lo\"}}\n\n",
            "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":5}}\n\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let (text, t) = relay(upstream, false, 9);
        assert!(t.completed() && !t.errored());
        assert!(text.contains(r#""arguments":"{\"a\": \"lo""#), "{text}");
        assert!(text.contains(r#""finish_reason":"length""#), "{text}");
        assert!(!text.contains(r#""finish_reason":"tool_calls""#), "{text}");
        assert!(
            !text.contains(r#""arguments":"{}""#),
            "no made-up empty arguments: {text}"
        );
    }

    /// [49] An error event after the 200 becomes OpenAI's error event, and no [DONE] follows.
    #[test]
    fn an_error_inside_the_stream_ends_it_as_an_error() {
        let upstream = format!(
            "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
            &STREAM[..STREAM.find("event: content_block_stop").unwrap_or(0)]
        );
        let (text, t) = relay(&upstream, true, 17);
        assert!(t.errored() && t.completed());
        assert!(!text.contains("[DONE]"), "{text}");
        assert!(!text.contains("finish_reason\":\"stop"), "{text}");
        assert!(
            text.ends_with(
                "data: {\"error\":{\"code\":null,\"message\":\"Overloaded\",\"param\":null,\"type\":\"overloaded_error\"}}\n\n"
            ),
            "{text}"
        );
    }

    /// [28] A stream cut before message_stop: no made-up finish, an error event, incomplete.
    #[test]
    fn a_stream_that_stops_early_is_incomplete() {
        let cut = &STREAM[..STREAM.find("event: message_delta").unwrap_or(0)];
        let (text, t) = relay(cut, true, 33);
        assert!(!t.completed());
        assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"tool_calls"));
        assert!(text.contains("\"type\":\"upstream_incomplete\""), "{text}");
    }

    /// [48] 529 overloaded keeps its type and message (the pipeline fails over on 5xx).
    #[test]
    fn error_bodies_keep_their_type() {
        let e = upstream_error(
            StatusCode::from_u16(529).unwrap_or(StatusCode::BAD_GATEWAY),
            &HeaderMap::new(),
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
        );
        match e {
            GatewayError::Upstream {
                status,
                message,
                kind,
                ..
            } => {
                assert_eq!(status.as_u16(), 529);
                assert_eq!(message, "Overloaded");
                assert_eq!(kind.as_deref(), Some("overloaded_error"));
            }
            other => panic!("{other:?}"),
        }
        // [53] The context limit, in either wording, is OpenAI's `context_length_exceeded`.
        for text in [
            "prompt is too long: 227255 tokens > 200000 maximum",
            "Input is too long for requested model.",
        ] {
            let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": text}});
            let e = upstream_error(
                StatusCode::BAD_REQUEST,
                &HeaderMap::new(),
                body.to_string().as_bytes(),
            );
            assert!(
                matches!(&e, GatewayError::Upstream { code: Some(c), .. } if c == "context_length_exceeded"),
                "{e:?}"
            );
        }
    }

    #[test]
    fn requests_go_to_messages_with_the_version_header() {
        let ep = crate::test_support::endpoint("c", "claude-up");
        for (base, url) in [
            (
                "https://api.anthropic.com",
                "https://api.anthropic.com/v1/messages",
            ),
            ("http://llama:8080/v1", "http://llama:8080/v1/messages"),
        ] {
            let r = Anthropic
                .request(&ep, base, Op::Chat, true, "rid", Bytes::new())
                .expect("request");
            assert_eq!(r.uri().to_string(), url);
            assert_eq!(r.headers()["anthropic-version"], ANTHROPIC_VERSION);
            assert_eq!(r.headers()[header::ACCEPT], "text/event-stream");
        }
    }
}
