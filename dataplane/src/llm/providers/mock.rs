//! The built-in deterministic model: answers in-process with a fixed or echoed reply, with
//! configurable latency, token counts and stream chunking. For demos (the quickstart needs no
//! keys), tests, and load tests of the gateway itself.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use llmgate_snapshot::MockModel;
use serde_json::{Value, json};

use crate::llm::providers::openai::encode_f32_base64;
use crate::llm::types::{ChatRequest, EmbeddingsRequest, EncodingFormat, Usage};

/// The configured latency before any answer.
pub async fn wait(m: &MockModel) {
    if m.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(m.latency_ms)).await;
    }
}

/// The reply text and the usage it reports. Like a real model, never more words than the
/// request's `max_tokens` or, without one, the model's `max_output` (so an echo of an 8 MiB
/// prompt is as long as any answer the model may give).
pub fn reply(m: &MockModel, req: &ChatRequest<'_>, max_output: u64) -> (String, Usage) {
    let messages = req.messages();
    let text = if m.echo {
        last_user_text(&messages).unwrap_or_default()
    } else {
        m.content.clone()
    };
    let prompt = m
        .prompt_tokens
        .map(u64::from)
        .unwrap_or_else(|| estimate_prompt_tokens(&messages));
    let words = text.split_whitespace().count() as u64;
    let limit = req.output_limit().unwrap_or(max_output).min(max_output);
    let text = if words > limit {
        text.split_whitespace()
            .take(limit as usize)
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        text
    };
    let completion = m
        .completion_tokens
        .map(u64::from)
        .unwrap_or(words)
        .min(limit);
    (
        text,
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        },
    )
}

pub fn chat_response(model: &str, request_id: &str, text: &str, usage: Usage) -> Bytes {
    let v = json!({
        "id": format!("chatcmpl-{request_id}"),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": usage,
        "system_fingerprint": "llmgate-mock"
    });
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// The stream as SSE events, made one at a time as the client reads them: role, content
/// pieces of `chunk_words` words, finish, usage (only if asked), `[DONE]`.
pub struct StreamEvents {
    id: String,
    model: String,
    created: u64,
    text: String,
    /// Byte offset of the next content piece in `text`.
    at: usize,
    chunk_words: usize,
    usage: Option<Usage>,
    stage: Stage,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Role,
    Content,
    Finish,
    Usage,
    Done,
    Ended,
}

impl StreamEvents {
    pub fn new(
        m: &MockModel,
        model: &str,
        request_id: &str,
        text: String,
        usage: Usage,
        include_usage: bool,
    ) -> StreamEvents {
        StreamEvents {
            id: format!("chatcmpl-{request_id}"),
            model: model.to_owned(),
            created: now_secs(),
            text,
            at: 0,
            chunk_words: m.chunk_words.max(1) as usize,
            usage: include_usage.then_some(usage),
            stage: Stage::Role,
        }
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Ended
    }

    fn chunk(&self, delta: Value, finish: Value) -> Bytes {
        event(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": "llmgate-mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        }))
    }

    /// The next `chunk_words` words, each with its trailing space (as `split_inclusive`).
    fn next_piece(&mut self) -> Option<&str> {
        let rest = &self.text[self.at..];
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len();
        let mut spaces = 0;
        for (i, b) in rest.bytes().enumerate() {
            if b == b' ' {
                spaces += 1;
                if spaces == self.chunk_words {
                    end = i + 1;
                    break;
                }
            }
        }
        let start = self.at;
        self.at += end;
        Some(&self.text[start..start + end])
    }
}

impl Iterator for StreamEvents {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.stage {
                Stage::Role => {
                    self.stage = Stage::Content;
                    return Some(
                        self.chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                    );
                }
                Stage::Content => match self.next_piece().map(str::to_owned) {
                    Some(piece) => return Some(self.chunk(json!({"content": piece}), Value::Null)),
                    None => self.stage = Stage::Finish,
                },
                Stage::Finish => {
                    self.stage = Stage::Usage;
                    return Some(self.chunk(json!({}), json!("stop")));
                }
                Stage::Usage => {
                    self.stage = Stage::Done;
                    if let Some(usage) = self.usage {
                        return Some(event(&json!({
                            "id": self.id, "object": "chat.completion.chunk",
                            "created": self.created, "model": self.model,
                            "system_fingerprint": "llmgate-mock", "choices": [], "usage": usage
                        })));
                    }
                }
                Stage::Done => {
                    self.stage = Stage::Ended;
                    return Some(Bytes::from_static(b"data: [DONE]\n\n"));
                }
                Stage::Ended => return None,
            }
        }
    }
}

pub fn embeddings_response(
    m: &MockModel,
    model: &str,
    req: &EmbeddingsRequest<'_>,
) -> (Bytes, Usage) {
    let inputs: Vec<String> = match req.input() {
        Value::String(s) => vec![s],
        // One token array is one input.
        Value::Array(items) if items.first().is_some_and(Value::is_number) => {
            vec![Value::Array(items).to_string()]
        }
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        other => vec![other.to_string()],
    };
    let tokens: u64 = inputs
        .iter()
        .map(|s| s.split_whitespace().count().max(1) as u64)
        .sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = vector(text, m.embedding_dimensions as usize);
            let floats: Vec<Value> = v.iter().map(|f| json!(f)).collect();
            let embedding = match req.encoding_format {
                Some(EncodingFormat::Base64) => Value::String(encode_f32_base64(&floats)),
                _ => Value::Array(floats),
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let usage = Usage {
        prompt_tokens: tokens,
        completion_tokens: 0,
        total_tokens: tokens,
    };
    let body = json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    });
    (
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        usage,
    )
}

/// A unit vector derived from the text (FNV-1a seeded xorshift): equal texts, equal vectors.
fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn event(v: &Value) -> Bytes {
    let mut b = b"data: ".to_vec();
    b.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

fn last_user_text(messages: &[Value]) -> Option<String> {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .and_then(text_of)
}

/// About four characters per token, plus a few per message for the chat framing.
fn estimate_prompt_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| {
            let chars = m.get("content").and_then(text_of).map_or(0, |t| t.len());
            chars.div_ceil(4) as u64 + 4
        })
        .sum::<u64>()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> MockModel {
        MockModel {
            content: "one two three four five".into(),
            echo: false,
            latency_ms: 0,
            chunk_interval_ms: 0,
            chunk_words: 2,
            completion_tokens: None,
            prompt_tokens: None,
            embedding_dimensions: 4,
        }
    }

    fn req(text: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": text}]}
        ]}))
        .expect("valid")
    }

    #[test]
    fn echo_and_usage() {
        let mut m = model();
        m.echo = true;
        let body = req("hello there");
        let (text, usage) = reply(&m, &ChatRequest::parse(&body).expect("valid"), 100);
        assert_eq!(text, "hello there");
        assert_eq!(usage.completion_tokens, 2);
        assert_eq!(usage.total_tokens, usage.prompt_tokens + 2);
        // An echo is never longer than the model's maximum output, nor the request's limit.
        let long = req(&"a ".repeat(10_000));
        let (text, usage) = reply(&m, &ChatRequest::parse(&long).expect("valid"), 100);
        assert_eq!(
            (text.split_whitespace().count(), usage.completion_tokens),
            (100, 100)
        );
        let mut capped: Value = serde_json::from_slice(&long).expect("json");
        capped["max_tokens"] = json!(7);
        let capped = serde_json::to_vec(&capped).expect("json");
        let (text, _) = reply(&m, &ChatRequest::parse(&capped).expect("valid"), 100);
        assert_eq!(text.split_whitespace().count(), 7);
    }

    #[test]
    fn stream_chunks_by_words_and_usage_only_when_asked() {
        let m = model();
        let body = req("x");
        let (text, usage) = reply(&m, &ChatRequest::parse(&body).expect("valid"), 100);
        let events = |usage_too| -> Vec<Bytes> {
            StreamEvents::new(&m, "m", "r1", text.clone(), usage, usage_too).collect()
        };
        let ev = events(false);
        // role + 3 content pieces (2+2+1 words) + finish + DONE
        assert_eq!(ev.len(), 6);
        let joined: String = ev[1..4]
            .iter()
            .map(|e| {
                let v: Value = serde_json::from_slice(&e[6..]).unwrap_or_default();
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(joined, "one two three four five");
        let with_usage = events(true);
        assert_eq!(with_usage.len(), 7);
        assert!(String::from_utf8_lossy(&with_usage[5]).contains("\"choices\":[]"));
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let body = br#"{"model": "e", "input": ["a b", "a b", "c"]}"#;
        let r = EmbeddingsRequest::parse(body).expect("valid");
        let (body, usage) = embeddings_response(&model(), "e", &r);
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["data"][0]["embedding"], v["data"][1]["embedding"]);
        assert_ne!(v["data"][0]["embedding"], v["data"][2]["embedding"]);
        let norm: f64 = v["data"][2]["embedding"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0).powi(2)).sum())
            .unwrap_or(0.0);
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(usage.prompt_tokens, 5);
        // One token array is one input, whatever its length.
        let tokens =
            serde_json::to_vec(&json!({"model": "e", "input": vec![7; 5000]})).expect("json");
        let r = EmbeddingsRequest::parse(&tokens).expect("valid");
        let (body, _) = embeddings_response(&model(), "e", &r);
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["data"].as_array().map(Vec::len), Some(1));
    }
}
