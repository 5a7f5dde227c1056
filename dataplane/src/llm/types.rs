//! The OpenAI-shaped wire types the gateway reads.
//!
//! Requests are read shallowly: the top-level fields of the body are kept as raw JSON borrowed
//! from the request bytes, the few llmgate acts on (`model`, `stream`, `stream_options`,
//! `encoding_format`) are typed, and the body sent upstream is written from those raw fields,
//! so everything llmgate does not touch (messages, tools, fields newer than this code) reaches
//! the provider byte for byte and nothing is parsed twice.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// A JSON object's top-level fields, in order, values unparsed.
#[derive(Debug, Default)]
pub struct RawObject<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(k)) = map.next_key()? {
                    let v: &'de RawValue = map.next_value()?;
                    fields.push((k, v));
                }
                Ok(RawObject { fields })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> RawObject<'a> {
    /// Parses a request body that must be a JSON object.
    pub fn parse(body: &'a [u8]) -> Result<Self, GatewayError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(GatewayError::bad_request(
                "request body is empty; send a JSON object",
                None,
            ));
        }
        serde_json::from_slice(body).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => {
                    GatewayError::bad_request("request body must be a JSON object", None)
                }
                _ => GatewayError::InvalidJson(e.to_string()),
            }
        })
    }

    /// The value of a field (the last one, if the key repeats).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// A field read as `T`; absent and `null` are `None`, a wrong type is a 400 naming it.
    fn typed<T: Deserialize<'a>>(
        &self,
        key: &'static str,
        what: &str,
    ) -> Result<Option<T>, GatewayError> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| {
                GatewayError::bad_request(format!("'{key}' must be {what}"), Some(key))
            }),
        }
    }

    /// Writes the object with some fields replaced (`Some`) or removed (`None`), and extra
    /// fields appended; every other field is copied byte for byte.
    fn write(&self, replace: &[(&str, Option<&[u8]>)], append: &[(&str, &[u8])]) -> Bytes {
        let size = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 64;
        let mut out = Vec::with_capacity(size);
        out.push(b'{');
        let mut first = true;
        let mut field = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            // A key is a plain string; writing one to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, k);
            out.push(b':');
            out.extend_from_slice(v);
        };
        for (k, v) in &self.fields {
            match replace.iter().find(|(r, _)| *r == k.as_ref()) {
                Some((_, Some(new))) => field(&mut out, k, new),
                Some((_, None)) => {}
                None => field(&mut out, k, v.get().as_bytes()),
            }
        }
        for (k, v) in append {
            field(&mut out, k, v);
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

fn required_model(obj: &RawObject<'_>) -> Result<String, GatewayError> {
    obj.typed::<String>("model", "a string")?
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            GatewayError::bad_request("you must provide a model parameter", Some("model"))
        })
}

fn json_string(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_default()
}

/// `POST /v1/chat/completions`.
#[derive(Debug)]
pub struct ChatRequest<'a> {
    pub model: String,
    stream: bool,
    include_usage: bool,
    messages: &'a RawValue,
    /// `max_completion_tokens`, else `max_tokens`.
    max_output: Option<u64>,
    /// The output limit the gateway sends instead (reserved by a budget or token limit).
    cap: Option<u64>,
    body: RawObject<'a>,
}

impl<'a> ChatRequest<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, GatewayError> {
        let body = RawObject::parse(bytes)?;
        let model = required_model(&body)?;
        let messages = body.get("messages").ok_or_else(|| {
            GatewayError::bad_request("missing required parameter: 'messages'", Some("messages"))
        })?;
        let count = serde_json::from_str::<Vec<&RawValue>>(messages.get())
            .map_err(|_| {
                GatewayError::bad_request("'messages' must be an array", Some("messages"))
            })?
            .len();
        if count == 0 {
            return Err(GatewayError::bad_request(
                "messages must contain at least one message",
                Some("messages"),
            ));
        }
        let stream = body.typed::<bool>("stream", "a boolean")?.unwrap_or(false);
        let include_usage = body
            .typed::<StreamOptions>("stream_options", "an object")?
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let max_output =
            match body.typed::<u64>("max_completion_tokens", "a non-negative integer")? {
                Some(n) => Some(n),
                None => body.typed::<u64>("max_tokens", "a non-negative integer")?,
            };
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            messages,
            max_output,
            cap: None,
            body,
        })
    }

    pub fn messages_raw(&self) -> &'a RawValue {
        self.messages
    }

    pub fn tools_raw(&self) -> Option<&'a RawValue> {
        self.body.get("tools")
    }

    /// The output tokens the caller asked for at most.
    pub fn max_output(&self) -> Option<u64> {
        self.max_output
    }

    /// Caps the output tokens sent upstream (never above what the caller asked).
    pub fn cap_output(&mut self, n: u64) {
        self.cap = Some(self.max_output.map_or(n, |m| m.min(n)));
    }

    /// The output limit in force: the cap, else the caller's.
    pub fn output_limit(&self) -> Option<u64> {
        self.cap.or(self.max_output)
    }

    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Whether the caller asked to see the usage chunk at the end of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.include_usage
    }

    /// The messages as JSON values, for providers that must read or translate them.
    pub fn messages(&self) -> Vec<Value> {
        serde_json::from_str(self.messages.get()).unwrap_or_default()
    }

    /// The body for an OpenAI-style upstream: `model` replaced, usage asked for on streams
    /// (other stream options kept), every other field byte for byte.
    pub fn to_openai(&self, upstream_model: &str) -> Bytes {
        let model = json_string(upstream_model);
        let cap = self.cap.map(|n| n.to_string().into_bytes());
        let mut replace: Vec<(&str, Option<&[u8]>)> = vec![("model", Some(&model))];
        let mut append: Vec<(&str, &[u8])> = Vec::new();
        if let Some(cap) = &cap {
            // Whichever of the two fields the caller used carries the cap; otherwise
            // `max_tokens`, which every OpenAI-compatible server reads.
            let field = if self.body.get("max_completion_tokens").is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            if self.body.get(field).is_some() {
                replace.push((field, Some(cap)));
            } else {
                append.push((field, cap));
            }
        }
        if !self.stream {
            return self.body.write(&replace, &append);
        }
        let mut opts: Map<String, Value> = self
            .body
            .get("stream_options")
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default();
        opts.insert("include_usage".into(), Value::Bool(true));
        let opts = serde_json::to_vec(&opts).unwrap_or_default();
        if self.body.get("stream_options").is_some() {
            replace.push(("stream_options", Some(&opts)));
        } else {
            append.push(("stream_options", &opts));
        }
        self.body.write(&replace, &append)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// `POST /v1/embeddings`.
#[derive(Debug)]
pub struct EmbeddingsRequest<'a> {
    pub model: String,
    pub encoding_format: Option<EncodingFormat>,
    input: &'a RawValue,
    body: RawObject<'a>,
}

impl<'a> EmbeddingsRequest<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, GatewayError> {
        let body = RawObject::parse(bytes)?;
        let model = required_model(&body)?;
        let input = body
            .get("input")
            .filter(|r| !matches!(r.get(), "null" | "\"\"" | "[]"))
            .ok_or_else(|| {
                GatewayError::bad_request(
                    "input must be a non-empty string or array",
                    Some("input"),
                )
            })?;
        let encoding_format =
            body.typed::<EncodingFormat>("encoding_format", "\"float\" or \"base64\"")?;
        Ok(EmbeddingsRequest {
            model,
            encoding_format,
            input,
            body,
        })
    }

    pub fn input_raw(&self) -> &'a RawValue {
        self.input
    }

    pub fn input(&self) -> Value {
        serde_json::from_str(self.input.get()).unwrap_or(Value::Null)
    }

    /// The body for an OpenAI-style upstream; `floats` asks for float vectors whatever the
    /// caller wanted (the gateway encodes base64 itself).
    pub fn to_openai(&self, upstream_model: &str, floats: bool) -> Bytes {
        let model = json_string(upstream_model);
        if floats {
            self.body.write(
                &[("model", Some(&model)), ("encoding_format", None)],
                &[("encoding_format", b"\"float\"")],
            )
        } else {
            self.body.write(&[("model", Some(&model))], &[])
        }
    }
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

/// What the gateway reads from a response: the model the upstream says it ran and the usage.
/// serde skips the rest without building it.
#[derive(Debug, Deserialize)]
pub struct ResponseView {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_reach_the_upstream_byte_for_byte() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi","x_new":1}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"future_field":{"a":[1, 2.50]},"stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false}}"#;
        let req = ChatRequest::parse(body).expect("parses");
        assert!(req.is_stream());
        assert!(!req.wants_stream_usage());
        let up = req.to_openai("up-model");
        let text = std::str::from_utf8(&up).unwrap_or("");
        assert!(text.contains(r#""future_field":{"a":[1, 2.50]}"#), "{text}");
        assert!(text.contains(r#""messages":[{"role":"user","content":"hi","x_new":1}]"#));
        let v: Value = serde_json::from_slice(&up).unwrap_or_default();
        assert_eq!(v["model"], "up-model");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["include_obfuscation"], false);
        assert_eq!(v["tools"][0]["function"]["name"], "f");

        let plain = ChatRequest::parse(
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .expect("parses");
        let v: Value = serde_json::from_slice(&plain.to_openai("u")).unwrap_or_default();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn classifies_bad_bodies() {
        let e = ChatRequest::parse(b"{not json").unwrap_err();
        assert_eq!(e.reason(), "invalid_json");
        let e = ChatRequest::parse(br#"{"model":"m"}"#).unwrap_err();
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
        let e = ChatRequest::parse(br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert!(e.to_string().contains("at least one"));
        let e = ChatRequest::parse(br#"{"model":"m","messages":"hi"}"#).unwrap_err();
        assert!(e.to_string().contains("array"));
        let e = ChatRequest::parse(br#"{"messages":[{}]}"#).unwrap_err();
        assert!(e.to_string().contains("model parameter"));
        let e = ChatRequest::parse(br#"{"model":7,"messages":[{}]}"#).unwrap_err();
        assert!(matches!(
            e,
            GatewayError::BadRequest {
                param: Some("model"),
                ..
            }
        ));
        let e = ChatRequest::parse(br#"{"model":"m","messages":[{}],"stream":"yes"}"#).unwrap_err();
        assert!(matches!(
            e,
            GatewayError::BadRequest {
                param: Some("stream"),
                ..
            }
        ));
        let e = ChatRequest::parse(b"[1,2]").unwrap_err();
        assert!(e.to_string().contains("JSON object"));
        let e = ChatRequest::parse(b"  ").unwrap_err();
        assert_eq!(e.reason(), "bad_request");
        let e = EmbeddingsRequest::parse(br#"{"model":"m","input":"x","encoding_format":"int8"}"#)
            .unwrap_err();
        assert!(matches!(
            e,
            GatewayError::BadRequest {
                param: Some("encoding_format"),
                ..
            }
        ));
        let e = EmbeddingsRequest::parse(br#"{"model":"m","input":[]}"#).unwrap_err();
        assert!(matches!(
            e,
            GatewayError::BadRequest {
                param: Some("input"),
                ..
            }
        ));
    }

    #[test]
    fn escaped_keys_and_embeddings_floats() {
        let req = EmbeddingsRequest::parse(
            br#"{"model":"m","input":["a"],"encoding_format":"base64","x\"y":1}"#,
        )
        .expect("parses");
        assert_eq!(req.encoding_format, Some(EncodingFormat::Base64));
        let v: Value = serde_json::from_slice(&req.to_openai("u", true)).unwrap_or_default();
        assert_eq!(v["encoding_format"], "float");
        assert_eq!(v["x\"y"], 1);
        assert_eq!(v["model"], "u");
        let v: Value = serde_json::from_slice(&req.to_openai("u", false)).unwrap_or_default();
        assert_eq!(v["encoding_format"], "base64");
    }
}
