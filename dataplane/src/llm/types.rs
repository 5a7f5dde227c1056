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
        let obj: RawObject<'a> = serde_json::from_slice(body).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => {
                    GatewayError::bad_request("request body must be a JSON object", None)
                }
                _ => GatewayError::InvalidJson(e.to_string()),
            }
        })?;
        if let Some(k) = obj.repeated_key() {
            return Err(GatewayError::bad_request(
                format!("'{k}' appears more than once in the request body"),
                None,
            ));
        }
        Ok(obj)
    }

    /// A key that occurs twice. Parsers differ on which copy wins, so a body that repeats one
    /// could make llmgate reserve for one value while the upstream acts on another.
    fn repeated_key(&self) -> Option<&str> {
        let mut keys: Vec<&str> = self.fields.iter().map(|(k, _)| k.as_ref()).collect();
        keys.sort_unstable();
        keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
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

    /// Writes the object with the `edits` applied, every other field byte for byte. A set field
    /// keeps its place, or is appended when absent.
    fn write(&self, edits: &[(&str, Edit<'_>)]) -> Bytes {
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
            match edits.iter().find(|(e, _)| *e == k.as_ref()) {
                Some((_, Edit::Set(new))) => field(&mut out, k, new),
                Some((_, Edit::Remove)) => {}
                None => field(&mut out, k, v.get().as_bytes()),
            }
        }
        for (k, e) in edits {
            if let Edit::Set(v) = e
                && self.get(k).is_none()
            {
                field(&mut out, k, v);
            }
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

/// One change [`RawObject::write`] makes to a top-level field.
enum Edit<'b> {
    /// The field gets this JSON value (appended when absent).
    Set(&'b [u8]),
    Remove,
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

/// Where one provider reads the output-length limit of a chat request. When a budget or a
/// token limit applies, the limit llmgate reserved is written to every field the provider
/// reads, and the aliases other servers read are removed, so no field the reservation did not
/// see can make the upstream generate more. Each adapter declares its own.
#[derive(Debug)]
pub struct LengthFields {
    /// Top-level fields that carry the reserved limit (added when absent).
    pub write: &'static [&'static str],
    /// Top-level fields removed.
    pub remove: &'static [&'static str],
    /// `(object, field)`: a field removed from a top-level object (Ollama's `options`).
    pub remove_nested: &'static [(&'static str, &'static str)],
    /// Top-level fields lowered to the limit when above it (vLLM's `min_tokens`).
    pub at_most: &'static [&'static str],
}

/// The length fields llmgate reads as the caller's output limit, in order of precedence: the
/// OpenAI ones, then those llama.cpp, TGI and Ollama read. A negative `n_predict` (llama.cpp's
/// "until the context is full") is no limit.
const ASKED_FIELDS: [&str; 5] = [
    "max_completion_tokens",
    "max_tokens",
    "n_predict",
    "max_new_tokens",
    "num_predict",
];

/// The most choices one request may ask for (`n`, `best_of`), as OpenAI allows.
pub const MAX_CHOICES: u64 = 128;

/// `POST /v1/chat/completions`.
#[derive(Debug)]
pub struct ChatRequest<'a> {
    pub model: String,
    stream: bool,
    include_usage: bool,
    messages: &'a RawValue,
    /// The caller's output limit and the field it came from ([`ASKED_FIELDS`]).
    max_output: Option<(u64, &'static str)>,
    /// Sequences the upstream generates: the larger of `n` and `best_of`.
    choices: u64,
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
        let mut max_output = None;
        for field in ASKED_FIELDS {
            let n = if field.starts_with("max_") {
                body.typed::<u64>(field, "a non-negative integer")?
            } else {
                // Aliases are not OpenAI's to validate; whatever they hold, they are removed
                // whenever llmgate writes a limit.
                body.typed::<i64>(field, "an integer")
                    .ok()
                    .flatten()
                    .and_then(|n| u64::try_from(n).ok())
            };
            if let Some(n) = n {
                max_output = Some((n, field));
                break;
            }
        }
        let mut choices = 1;
        for field in ["n", "best_of"] {
            let what = "an integer from 1 to 128";
            if let Some(n) = body.typed::<u64>(field, what)? {
                if !(1..=MAX_CHOICES).contains(&n) {
                    return Err(GatewayError::bad_request(
                        format!("'{field}' must be {what}, got {n}"),
                        Some(field),
                    ));
                }
                choices = choices.max(n);
            }
        }
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            messages,
            max_output,
            choices,
            cap: None,
            body,
        })
    }

    pub fn messages_raw(&self) -> &'a RawValue {
        self.messages
    }

    /// A top-level field parsed, for providers that translate the request.
    pub fn field(&self, key: &str) -> Option<Value> {
        self.body
            .get(key)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    pub fn tools_raw(&self) -> Option<&'a RawValue> {
        self.body.get("tools")
    }

    /// The output tokens the caller asked for at most.
    pub fn max_output(&self) -> Option<u64> {
        self.max_output.map(|(n, _)| n)
    }

    /// How many sequences the upstream will generate (`n`, `best_of`): each may run to the
    /// output limit.
    pub fn choices(&self) -> u64 {
        self.choices
    }

    /// Refuses an output limit above what the model can produce, as OpenAI does.
    pub fn check_max_output(&self, model: &str, model_max: u32) -> Result<(), GatewayError> {
        match self.max_output {
            Some((n, field)) if n > u64::from(model_max) => Err(GatewayError::bad_request(
                format!(
                    "'{field}' is too large: {n}; model '{model}' supports at most {model_max} output tokens"
                ),
                Some(field),
            )),
            _ => Ok(()),
        }
    }

    /// Caps the output tokens sent upstream (never above what the caller asked).
    pub fn cap_output(&mut self, n: u64) {
        self.cap = Some(self.max_output().map_or(n, |m| m.min(n)));
    }

    /// The output limit in force: the cap, else the caller's.
    pub fn output_limit(&self) -> Option<u64> {
        self.cap.or(self.max_output())
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
    /// (other stream options kept), a cap written to the `lengths` fields, every other field
    /// byte for byte.
    pub fn to_openai(&self, upstream_model: &str, lengths: &LengthFields) -> Bytes {
        let model = json_string(upstream_model);
        let mut edits: Vec<(&str, Edit<'_>)> = vec![("model", Edit::Set(&model))];
        let cap = self.cap.map(|n| n.to_string().into_bytes());
        let mut nested: Vec<(&str, Vec<u8>)> = Vec::new();
        if let (Some(n), Some(cap)) = (self.cap, &cap) {
            edits.extend(lengths.write.iter().map(|f| (*f, Edit::Set(cap))));
            edits.extend(lengths.remove.iter().map(|f| (*f, Edit::Remove)));
            for f in lengths.at_most {
                if let Some(v) = self.body.get(f)
                    && serde_json::from_str::<u64>(v.get()).map_or(true, |m| m > n)
                {
                    edits.push((f, Edit::Set(cap)));
                }
            }
            for (parent, child) in lengths.remove_nested {
                let obj = self
                    .body
                    .get(parent)
                    .and_then(|r| serde_json::from_str::<Map<String, Value>>(r.get()).ok());
                if let Some(mut obj) = obj
                    && obj.remove(*child).is_some()
                {
                    nested.push((parent, serde_json::to_vec(&obj).unwrap_or_default()));
                }
            }
        }
        edits.extend(nested.iter().map(|(k, v)| (*k, Edit::Set(v))));
        if !self.stream {
            return self.body.write(&edits);
        }
        let mut opts: Map<String, Value> = self
            .body
            .get("stream_options")
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default();
        opts.insert("include_usage".into(), Value::Bool(true));
        let opts = serde_json::to_vec(&opts).unwrap_or_default();
        edits.push(("stream_options", Edit::Set(&opts)));
        self.body.write(&edits)
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

/// The most inputs one embeddings request may carry, as OpenAI allows: every provider, the mock
/// included, so one request cannot ask for millions of vectors.
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// How many inputs an embeddings `input` holds: a string or one token array is one; an array of
/// strings or of token arrays is one per item.
fn input_count(input: &RawValue) -> usize {
    let raw = input.get().trim_start();
    if !raw.starts_with('[') {
        return 1;
    }
    match serde_json::from_str::<Vec<&RawValue>>(raw) {
        Ok(items) if items.first().is_some_and(|i| is_number(i)) => 1,
        Ok(items) => items.len(),
        Err(_) => 1,
    }
}

fn is_number(v: &RawValue) -> bool {
    v.get()
        .trim_start()
        .starts_with(|c: char| c == '-' || c.is_ascii_digit())
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
        if input_count(input) > MAX_EMBEDDING_INPUTS {
            return Err(GatewayError::bad_request(
                format!("input may hold at most {MAX_EMBEDDING_INPUTS} items"),
                Some("input"),
            ));
        }
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
            self.body.write(&[
                ("model", Edit::Set(&model)),
                ("encoding_format", Edit::Set(b"\"float\"")),
            ])
        } else {
            self.body.write(&[("model", Edit::Set(&model))])
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

    const TEST_LENGTHS: LengthFields = LengthFields {
        write: &["max_tokens"],
        remove: &[],
        remove_nested: &[],
        at_most: &[],
    };

    #[test]
    fn unknown_fields_reach_the_upstream_byte_for_byte() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi","x_new":1}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"future_field":{"a":[1, 2.50]},"stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false}}"#;
        let req = ChatRequest::parse(body).expect("parses");
        assert!(req.is_stream());
        assert!(!req.wants_stream_usage());
        let up = req.to_openai("up-model", &TEST_LENGTHS);
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
        let v: Value =
            serde_json::from_slice(&plain.to_openai("u", &TEST_LENGTHS)).unwrap_or_default();
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
    fn length_and_choice_fields_are_checked() {
        let chat = |extra: &str| {
            let body =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#);
            ChatRequest::parse(body.as_bytes()).map(|r| (r.max_output, r.choices))
        };
        assert_eq!(chat("").ok(), Some((None, 1)));
        assert_eq!(
            chat(r#","n":4,"best_of":6,"max_tokens":10"#).ok(),
            Some((Some((10, "max_tokens")), 6))
        );
        assert_eq!(
            chat(r#","max_completion_tokens":1,"max_tokens":3000"#).ok(),
            Some((Some((1, "max_completion_tokens")), 1))
        );
        assert_eq!(
            chat(r#","n_predict":700"#).ok(),
            Some((Some((700, "n_predict")), 1))
        );
        assert_eq!(chat(r#","n_predict":-1"#).ok(), Some((None, 1)));
        assert_eq!(chat(r#","num_predict":"lots""#).ok(), Some((None, 1)));
        for (extra, param) in [
            (r#","n":0"#, "n"),
            (r#","n":129"#, "n"),
            (r#","n":"2""#, "n"),
            (r#","best_of":1000"#, "best_of"),
            (r#","max_tokens":-1"#, "max_tokens"),
            (r#","max_tokens":18446744073709551616"#, "max_tokens"),
            (r#","max_completion_tokens":1.5"#, "max_completion_tokens"),
        ] {
            match chat(extra) {
                Err(GatewayError::BadRequest { param: Some(p), .. }) => {
                    assert_eq!(p, param, "{extra}")
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        // The largest u64 parses, and is then refused against the model's limit by name.
        let body = br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":18446744073709551615}"#;
        let req = ChatRequest::parse(body).expect("parses");
        let e = req.check_max_output("m", 4096).unwrap_err();
        assert!(
            matches!(
                e,
                GatewayError::BadRequest {
                    param: Some("max_tokens"),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("at most 4096"), "{e}");
        assert!(req.check_max_output("m", u32::MAX).is_err());
        let ok = ChatRequest::parse(br#"{"model":"m","messages":[{}],"max_tokens":4096}"#)
            .expect("parses");
        assert!(ok.check_max_output("m", 4096).is_ok());
        // A repeated key is ambiguous (parsers differ on which copy wins): refused.
        let e = ChatRequest::parse(br#"{"model":"m","messages":[{}],"n":1,"n":4}"#).unwrap_err();
        assert!(e.to_string().contains("'n' appears more than once"), "{e}");
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
