//! OpenAI and OpenAI-compatible upstreams (vLLM, TGI, llama.cpp, Ollama).
//!
//! The canonical shape is OpenAI's, so responses pass through byte for byte; the adapter only
//! reads usage and the served model, asks streams for usage, and hides the usage chunk from a
//! caller that did not ask for it. For self-hosted servers embeddings are always requested as
//! floats and encoded to base64 here when the caller wants base64, since not every server
//! implements `encoding_format` (the OpenAI Python SDK asks for base64 by default).

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::Full;
use llmgate_snapshot::Endpoint;
use serde::Deserialize;
use serde_json::Value;

use super::{HttpAdapter, Op, StreamTranslator, Translated};
use crate::error::GatewayError;
use crate::llm::codec::sse::{EventSplitter, MAX_EVENT_BYTES, data_of};
use crate::llm::types::{
    ChatRequest, EmbeddingsRequest, EncodingFormat, LengthFields, ResponseView, Usage,
};

pub struct OpenAi {
    /// Self-hosted servers: normalise embeddings to floats upstream.
    pub compatible: bool,
}

/// OpenAI reads `max_completion_tokens` and the deprecated `max_tokens`, refuses both together
/// and refuses `max_tokens` for reasoning models: the limit goes to the first, the second goes.
/// OpenAI refuses the self-hosted aliases, but a base URL may point at anything that speaks
/// its protocol, so they go too.
pub const OPENAI_LENGTHS: LengthFields = LengthFields {
    write: &["max_completion_tokens"],
    remove: &["max_tokens", "n_predict", "max_new_tokens", "num_predict"],
    remove_nested: &[("options", "num_predict")],
    at_most: &["min_tokens"],
};

/// Self-hosted servers each read their own field: vLLM `max_completion_tokens`, then
/// `max_tokens` (and never stops before `min_tokens`); llama.cpp `n_predict` before
/// `max_tokens`; TGI `max_tokens` (`max_new_tokens` on its native API); Ollama `num_predict`
/// and `options.num_predict`. The limit goes to both OpenAI fields, which all of them read,
/// and the aliases go.
pub const COMPATIBLE_LENGTHS: LengthFields = LengthFields {
    write: &["max_tokens", "max_completion_tokens"],
    remove: &["n_predict", "max_new_tokens", "num_predict"],
    remove_nested: &[("options", "num_predict")],
    at_most: &["min_tokens"],
};

static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("llmgate/", env!("CARGO_PKG_VERSION")));

impl HttpAdapter for OpenAi {
    fn chat_body(&self, ep: &Endpoint, req: &ChatRequest<'_>) -> Result<Bytes, GatewayError> {
        let lengths = if self.compatible {
            &COMPATIBLE_LENGTHS
        } else {
            &OPENAI_LENGTHS
        };
        Ok(req.to_openai(&ep.upstream_model, lengths))
    }

    fn embeddings_body(
        &self,
        ep: &Endpoint,
        req: &EmbeddingsRequest<'_>,
    ) -> Result<Bytes, GatewayError> {
        Ok(req.to_openai(&ep.upstream_model, self.compatible))
    }

    fn request(
        &self,
        _ep: &Endpoint,
        base_url: &str,
        op: Op,
        stream: bool,
        request_id: &str,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, GatewayError> {
        let path = match op {
            Op::Chat => "/chat/completions",
            Op::Embeddings => "/embeddings",
        };
        let mut b = http::Request::post(format!("{base_url}{path}"))
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .header(header::USER_AGENT, USER_AGENT.clone())
            .header(
                header::ACCEPT,
                HeaderValue::from_static(if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                }),
            );
        if let Ok(v) = HeaderValue::from_str(request_id) {
            b = b.header("x-request-id", v);
        }
        b.body(Full::new(body))
            .map_err(|e| GatewayError::Internal(format!("build upstream request: {e}")))
    }

    fn chat_response(&self, body: Bytes, _created: i64) -> Result<Translated, GatewayError> {
        let view: ResponseView = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::BadUpstreamResponse(format!("chat completion: {e}")))?;
        Ok(Translated {
            body,
            usage: view.usage,
            model: view.model,
        })
    }

    fn embeddings_response(
        &self,
        body: Bytes,
        wanted: Option<EncodingFormat>,
    ) -> Result<Translated, GatewayError> {
        if !self.compatible || wanted != Some(EncodingFormat::Base64) {
            let view: ResponseView = serde_json::from_slice(&body)
                .map_err(|e| GatewayError::BadUpstreamResponse(format!("embeddings: {e}")))?;
            return Ok(Translated {
                body,
                usage: view.usage,
                model: view.model,
            });
        }
        let mut v: Value = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::BadUpstreamResponse(format!("embeddings: {e}")))?;
        if let Some(data) = v.get_mut("data").and_then(Value::as_array_mut) {
            for item in data {
                if let Some(e) = item.get_mut("embedding")
                    && let Some(floats) = e.as_array()
                {
                    *e = Value::String(encode_f32_base64(floats));
                }
            }
        }
        let usage = v.get("usage").and_then(|u| Usage::deserialize(u).ok());
        let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
        let body = serde_json::to_vec(&v)
            .map(Bytes::from)
            .map_err(|e| GatewayError::Internal(format!("serialize embeddings: {e}")))?;
        Ok(Translated { body, usage, model })
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
        upstream_error(status, headers, body)
    }

    fn chat_stream(&self, client_wants_usage: bool, _created: i64) -> Box<dyn StreamTranslator> {
        Box::new(OpenAiStream {
            splitter: EventSplitter::default(),
            client_wants_usage,
            usage: None,
            model: None,
            done: false,
            errored: false,
        })
    }
}

/// Little-endian f32 bytes in base64: what the OpenAI SDKs decode.
pub fn encode_f32_base64(floats: &[Value]) -> String {
    let mut bytes = Vec::with_capacity(floats.len() * 4);
    for f in floats {
        bytes.extend_from_slice(&(f.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads an OpenAI-shaped error body (or anything else) into the caller-facing error.
pub fn upstream_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
    #[derive(Deserialize)]
    struct Body {
        error: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
        r#type: Option<String>,
        code: Option<Value>,
    }
    let parsed = serde_json::from_slice::<Body>(body)
        .ok()
        .and_then(|b| b.error);
    let (message, kind, code) = match parsed {
        Some(e) => (
            e.message.unwrap_or_else(|| "upstream error".into()),
            e.r#type,
            e.code.and_then(|c| match c {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        ),
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string();
            (
                if text.is_empty() {
                    format!("upstream returned {status}")
                } else {
                    text
                },
                None,
                None,
            )
        }
    };
    GatewayError::Upstream {
        status,
        message,
        kind,
        code,
        retry_after: headers.get(header::RETRY_AFTER).cloned(),
        retry_after_ms: headers
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok()?.trim().parse().ok()),
    }
}

/// Relays OpenAI SSE event by event.
struct OpenAiStream {
    splitter: EventSplitter,
    client_wants_usage: bool,
    usage: Option<Usage>,
    model: Option<String>,
    done: bool,
    errored: bool,
}

#[derive(Deserialize)]
struct ChunkView {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

impl OpenAiStream {
    /// Whether the event goes to the client.
    fn inspect(&mut self, event: &[u8]) -> bool {
        let Some(data) = data_of(event) else {
            return true;
        };
        if &*data == b"[DONE]" {
            self.done = true;
            return true;
        }
        // Only the first chunk (for the model) and chunks that mention usage or an error are
        // parsed; content chunks pass by a substring check.
        let interesting = self.model.is_none()
            || memchr::memmem::find(&data, b"\"usage\"").is_some()
            || memchr::memmem::find(&data, b"\"error\"").is_some();
        if !interesting {
            return true;
        }
        let Ok(view) = serde_json::from_slice::<ChunkView>(&data) else {
            return true;
        };
        if view.error.is_some() {
            self.errored = true;
        }
        if self.model.is_none() {
            // Azure's first chunk (prompt filter results) carries an empty model.
            self.model = view.model.filter(|m| !m.is_empty());
        }
        if let Some(u) = view.usage {
            self.usage = Some(u);
            let usage_only = view.choices.as_ref().is_none_or(Vec::is_empty);
            if usage_only && !self.client_wants_usage {
                return false;
            }
        }
        true
    }
}

impl StreamTranslator for OpenAiStream {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<Bytes>) -> Result<(), GatewayError> {
        self.splitter.push(chunk);
        while let Some(event) = self.splitter.next_event() {
            if self.inspect(&event) {
                out.push(event);
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
        if let Some(rest) = self.splitter.take_rest()
            && self.inspect(&rest)
        {
            let mut v = rest.to_vec();
            v.extend_from_slice(b"\n\n");
            out.push(Bytes::from(v));
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
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

    /// The length-field rule per provider, on the bodies a hostile caller sends: with a cap every
    /// field the upstream reads carries it and no alias survives; without one the body passes
    /// byte for byte.
    #[test]
    fn length_fields_are_pinned() {
        let cases: &[(&str, Option<u64>)] = &[
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":4,"max_tokens":10}"#,
                Some(10),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10,"n_predict":2000}"#,
                Some(10),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":1,"max_tokens":3000}"#,
                Some(1),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"max_new_tokens":2500}"#,
                Some(5),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":3}"#,
                Some(4096),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n_predict":-1}"#,
                Some(4096),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"num_predict":9000,"options":{"num_predict":9000,"temperature":0},"min_tokens":50}"#,
                Some(20),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"min_tokens":3,"max_tokens":20}"#,
                Some(20),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"n_predict":300}"#,
                Some(100),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10,"n_predict":2000}"#,
                None,
            ),
        ];
        let mut out = String::new();
        for (body, cap) in cases {
            let mut req = ChatRequest::parse(body.as_bytes()).expect("parses");
            if let Some(c) = cap {
                req.cap_output(*c);
            }
            out += &format!("in (cap {cap:?}): {body}\n");
            for (name, lengths) in [
                ("openai", &OPENAI_LENGTHS),
                ("compatible", &COMPATIBLE_LENGTHS),
            ] {
                let up = req.to_openai("up", lengths);
                out += &format!("{name}: {}\n", String::from_utf8_lossy(&up));
            }
            out += "\n";
        }
        crate::test_support::golden("length-fields.txt", &out);
    }

    const UPSTREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n",
        "data: [DONE]\n\n",
    );

    fn relay(wants_usage: bool, chunk_size: usize) -> (String, Box<dyn StreamTranslator>) {
        let mut t = (OpenAi { compatible: false }).chat_stream(wants_usage, 0);
        let mut out = Vec::new();
        for c in UPSTREAM.as_bytes().chunks(chunk_size) {
            t.feed(c, &mut out).expect("feed");
        }
        t.finish(&mut out);
        let text: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        (String::from_utf8(text).unwrap_or_default(), t)
    }

    #[test]
    fn usage_chunk_is_kept_when_asked_and_hidden_otherwise() {
        for size in [1, 7, 64, 4096] {
            let (text, t) = relay(true, size);
            assert_eq!(text, UPSTREAM);
            assert_eq!(t.usage().map(|u| u.total_tokens), Some(10));
            assert_eq!(t.model(), Some("gpt-4o-2024-08-06"));
            assert!(t.completed());

            let (text, t) = relay(false, size);
            assert!(!text.contains("prompt_tokens"), "{text}");
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert_eq!(text.matches("data: ").count(), 4);
            assert_eq!(
                t.usage().map(|u| u.prompt_tokens),
                Some(9),
                "still accounted"
            );
        }
    }

    #[test]
    fn stream_requests_ask_upstream_for_usage() {
        let ep = crate::test_support::endpoint("m", "up-model");
        let req = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"tools":[{"type":"function"}]}"#,
        )
        .expect("valid");
        let body = (OpenAi { compatible: false })
            .chat_body(&ep, &req)
            .expect("body");
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["model"], "up-model");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["tools"][0]["type"], "function");
    }

    #[test]
    fn base64_embeddings_decode_to_the_same_floats() {
        let body = Bytes::from_static(
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-1.25,3.0]}],"model":"e","usage":{"prompt_tokens":2,"total_tokens":2}}"#,
        );
        let t = (OpenAi { compatible: true })
            .embeddings_response(body, Some(EncodingFormat::Base64))
            .expect("translates");
        let v: Value = serde_json::from_slice(&t.body).unwrap_or_default();
        let b64 = v["data"][0]["embedding"].as_str().unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
        let floats: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats, vec![0.5, -1.25, 3.0]);
        assert_eq!(t.usage.map(|u| u.prompt_tokens), Some(2));
    }

    #[test]
    fn upstream_errors_keep_their_message_and_code() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        let e = upstream_error(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            e.to_string(),
            "upstream returned 429 Too Many Requests: Rate limit reached"
        );
        let e = upstream_error(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>nginx</html>",
        );
        assert!(e.to_string().contains("nginx"));
    }
}
