//! The OpenAI-shaped wire types the gateway reads. Each types only the fields llmgate acts on;
//! everything else is kept in `rest` and forwarded untouched, so new provider fields survive.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl ChatRequest {
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether the caller asked to see the usage chunk at the end of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    Float,
    Base64,
}

/// Token usage as OpenAI reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// What the gateway reads from a response or stream chunk: the model the upstream says it ran
/// and the usage. serde skips the rest without building it.
#[derive(Debug, Deserialize)]
pub struct ResponseView {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub choices: Option<serde::de::IgnoredAny>,
}

/// Parses a request body, telling malformed JSON (400 `invalid_json`) from well-formed JSON
/// that misses or mistypes a field (400 naming the field).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request(
            "request body is empty; send a JSON object",
            None,
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                GatewayError::InvalidJson(e.to_string())
            }
            Category::Data => {
                let msg = e.to_string();
                let param = field_in(&msg);
                let message = match param {
                    Some("model") if msg.starts_with("missing field") => {
                        "you must provide a model parameter".to_string()
                    }
                    Some(p) if msg.starts_with("missing field") => {
                        format!("missing required parameter: '{p}'")
                    }
                    _ => format!("invalid request: {msg}"),
                };
                GatewayError::bad_request(message, param)
            }
        }
    })
}

/// The field named in a serde message such as "missing field `messages` at line 1 column 20".
fn field_in(msg: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "model",
        "messages",
        "input",
        "stream",
        "stream_options",
        "include_usage",
        "encoding_format",
    ];
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    let name = &msg[start..end];
    KNOWN.iter().copied().find(|k| *k == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_round_trip() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi","x_new":1}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"future_field":{"a":[1,2]},"stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false}}"#;
        let req: ChatRequest = parse_body(body).expect("parses");
        assert!(req.is_stream());
        assert!(!req.wants_stream_usage());
        let back: Value = serde_json::to_value(&req).unwrap_or_default();
        let orig: Value = serde_json::from_slice(body).unwrap_or_default();
        assert_eq!(back, orig);
    }

    #[test]
    fn classifies_bad_bodies() {
        let e = parse_body::<ChatRequest>(b"{not json").unwrap_err();
        assert_eq!(e.reason(), "invalid_json");
        let e = parse_body::<ChatRequest>(br#"{"model":"m"}"#).unwrap_err();
        assert!(
            matches!(
                e,
                GatewayError::BadRequest {
                    param: Some("messages"),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("'messages'"));
        let e = parse_body::<ChatRequest>(br#"{"messages":[]}"#).unwrap_err();
        assert!(e.to_string().contains("model parameter"));
        let e = parse_body::<ChatRequest>(br#"{"model":7,"messages":[]}"#).unwrap_err();
        assert_eq!(e.reason(), "bad_request");
        let e = parse_body::<ChatRequest>(b"  ").unwrap_err();
        assert_eq!(e.reason(), "bad_request");
        let e = parse_body::<EmbeddingsRequest>(
            br#"{"model":"m","input":"x","encoding_format":"int8"}"#,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "bad_request");
    }
}
