//! Property tests of what parses untrusted bytes on the request path: the request parsers and
//! the SSE splitter never panic, answer malformed input with a typed 400/413, and the body sent
//! upstream never carries a length the reservation did not see.

use bytes::Bytes;
use llmgate_dataplane::llm::codec::sse::EventSplitter;
use llmgate_dataplane::llm::providers::openai::{COMPATIBLE_LENGTHS, OPENAI_LENGTHS};
use llmgate_dataplane::llm::types::{ChatRequest, EmbeddingsRequest};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Field names a chat body may carry, hostile ones included.
const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "best_of",
    "n_predict",
    "max_new_tokens",
    "num_predict",
    "min_tokens",
    "options",
    "stream",
    "stream_options",
    "include_usage",
    "tools",
    "input",
    "encoding_format",
    "x",
];

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..5000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(18446744073709551615u64)),
        Just(json!(-1)),
        Just(json!(1e300)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "[a-z \\\\\"\u{00e9}\u{1F600}]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// A chat body close enough to valid that most of them parse, with hostile length fields.
fn chat_body() -> impl Strategy<Value = Value> {
    let message = (
        prop::sample::select(&["user", "system", "assistant", "tool"][..]),
        json_value(),
    )
        .prop_map(|(role, content)| json!({"role": role, "content": content}));
    (
        prop::collection::vec(message, 0..4),
        prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..6),
        prop::collection::vec((prop::sample::select(KEYS), number()), 0..4),
    )
        .prop_map(|(messages, extra, lengths)| {
            let mut body = Map::new();
            for (k, v) in extra.into_iter().chain(lengths) {
                body.insert(k.to_owned(), v);
            }
            body.insert("model".into(), json!("m"));
            body.insert("messages".into(), Value::Array(messages));
            Value::Object(body)
        })
}

fn assert_typed(e: &llmgate_dataplane::error::GatewayError) {
    let status = e.status().as_u16();
    assert!(status == 400 || status == 413, "{status}: {e}");
    assert!(!e.to_string().is_empty());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_parsers_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = ChatRequest::parse(&bytes) {
            assert_typed(&e);
        }
        if let Err(e) = EmbeddingsRequest::parse(&bytes) {
            assert_typed(&e);
        }
    }

    #[test]
    fn request_parsers_never_panic_on_json(body in json_value()) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        if let Err(e) = ChatRequest::parse(&bytes) {
            assert_typed(&e);
        }
        if let Err(e) = EmbeddingsRequest::parse(&bytes) {
            assert_typed(&e);
        }
    }

    #[test]
    fn a_cut_short_body_is_a_typed_error(body in chat_body(), cut in any::<prop::sample::Index>()) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let at = cut.index(bytes.len());
        if at < bytes.len() {
            match ChatRequest::parse(&bytes[..at]) {
                Ok(_) => prop_assert!(false, "a truncated body parsed: {:?}", String::from_utf8_lossy(&bytes[..at])),
                Err(e) => assert_typed(&e),
            }
        }
    }

    /// Whatever length fields a body carries, the capped body sent upstream holds the cap in
    /// every field the provider reads and none of the aliases, and is valid JSON.
    #[test]
    fn the_upstream_never_sees_a_length_the_reservation_did_not(body in chat_body(), cap in 1u64..100_000) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let Ok(mut req) = ChatRequest::parse(&bytes) else {
            return Ok(());
        };
        req.cap_output(cap);
        let limit = req.output_limit().unwrap_or(0);
        prop_assert!(limit <= cap);
        prop_assert!(req.choices() >= 1);
        for lengths in [&OPENAI_LENGTHS, &COMPATIBLE_LENGTHS] {
            let sent: Value = serde_json::from_slice(&req.to_openai("up", lengths))
                .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            prop_assert_eq!(&sent["model"], &json!("up"));
            for f in lengths.write {
                prop_assert_eq!(&sent[*f], &json!(limit), "{}", f);
            }
            for f in lengths.remove {
                prop_assert!(sent.get(*f).is_none(), "{} kept: {}", f, sent);
            }
            for (o, f) in lengths.remove_nested {
                prop_assert!(sent.get(*o).and_then(|v| v.get(*f)).is_none(), "{}.{} kept", o, f);
            }
            for f in lengths.at_most {
                if let Some(v) = sent.get(*f).and_then(Value::as_u64) {
                    prop_assert!(v <= limit, "{} = {} above {}", f, v, limit);
                }
            }
        }
    }

    /// Events come out whole and in order however the stream is cut: the same events as one
    /// push, and together with the rest, exactly the bytes that went in.
    #[test]
    fn sse_splitting_loses_and_invents_nothing(
        parts in prop::collection::vec(prop_oneof![
            Just(b"data: {\"a\":1}\n\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b": keep-alive\n\n".to_vec()),
            Just(b"data: x\r\n\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..16),
        ], 0..24),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let stream: Vec<u8> = parts.concat();
        let events = |cuts: &[usize]| -> (Vec<Bytes>, Option<Bytes>) {
            let mut s = EventSplitter::default();
            let mut out = Vec::new();
            let mut last = 0;
            for &at in cuts.iter().chain(std::iter::once(&stream.len())) {
                s.push(&stream[last..at]);
                last = at;
                while let Some(e) = s.next_event() {
                    out.push(e);
                }
            }
            (out, s.take_rest())
        };
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.sort_unstable();
        let (whole, whole_rest) = events(&[]);
        let (cut, cut_rest) = events(&at);
        prop_assert_eq!(&whole, &cut);
        prop_assert_eq!(&whole_rest, &cut_rest);
        for e in &whole {
            prop_assert!(e.ends_with(b"\n\n") || e.ends_with(b"\n\r\n"));
        }
        let mut joined: Vec<u8> = whole.iter().flat_map(|e| e.to_vec()).collect();
        joined.extend(whole_rest.map(|r| r.to_vec()).unwrap_or_default());
        prop_assert_eq!(joined, stream);
    }
}
