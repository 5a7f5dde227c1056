//! Token estimates for admission: what a request will cost before the model says.
//!
//! Prompts are counted with tiktoken's `cl100k_base` and OpenAI's chat accounting (3 tokens per
//! message, 1 per name, 3 to prime the reply). Newer OpenAI models use `o200k_base`, which
//! needs fewer tokens for the same text, and self-hosted models count with their own
//! tokenizers; the estimate is what budgets and token limits reserve, and the true-up after
//! the response charges what the provider reports.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Extra tokens reserved per request on top of the count, for tokenizer differences.
const MARGIN_PERCENT: u64 = 5;

fn bpe() -> &'static tiktoken_rs::CoreBPE {
    tiktoken_rs::cl100k_base_singleton()
}

/// Loads the tokenizer (about 100 ms) before the first request needs it.
pub fn warm_up() {
    let _ = count("warm up");
}

pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe().encode_ordinary(text).len() as u64
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    role: Option<&'a RawValue>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_calls: Option<&'a RawValue>,
}

/// An upper bound for JSON llmgate cannot read as text: its length in bytes (a BPE token is
/// never shorter than one byte). An estimate must never collapse to ~0 for a shape the
/// upstream may still accept.
fn unread(raw: &RawValue) -> u64 {
    raw.get().len() as u64
}

/// Prompt tokens of a chat request's `messages` (and `tools`, when present), with margin.
pub fn chat_prompt(messages: &RawValue, tools: Option<&RawValue>) -> u64 {
    let Ok(msgs) = serde_json::from_str::<Vec<&RawValue>>(messages.get()) else {
        return with_margin(unread(messages));
    };
    let mut n: u64 = 3;
    for raw in msgs {
        let Ok(m) = serde_json::from_str::<Message<'_>>(raw.get()) else {
            n += unread(raw);
            continue;
        };
        n += 3;
        n += m.role.map(text_tokens).unwrap_or(0);
        n += m.content.map(text_tokens).unwrap_or(0);
        if let Some(name) = m.name {
            n += 1 + text_tokens(name);
        }
        if let Some(calls) = m.tool_calls {
            n += count(calls.get());
        }
    }
    if let Some(t) = tools {
        n += count(t.get());
    }
    with_margin(n)
}

fn with_margin(n: u64) -> u64 {
    n + n * MARGIN_PERCENT / 100
}

/// Tokens of an embeddings `input`: a string, strings, or token arrays.
pub fn embeddings_input(input: &RawValue) -> u64 {
    let n = match serde_json::from_str::<Value>(input.get()) {
        Ok(Value::String(s)) => count(&s),
        Ok(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => count(s),
                Value::Array(tokens) => tokens.len() as u64,
                Value::Number(_) => 1,
                other => other.to_string().len() as u64,
            })
            .sum(),
        _ => unread(input),
    };
    with_margin(n)
}

/// Tokens of a content value: a string, or an array of parts whose text parts count (an image
/// part is reserved at 85 tokens, OpenAI's low-detail price). Anything else counts as its
/// bytes.
fn text_tokens(raw: &RawValue) -> u64 {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(s)) => count(&s),
        Ok(Value::Array(parts)) => parts
            .iter()
            .map(
                |p| match (p.get("text").and_then(Value::as_str), p.get("type")) {
                    (Some(t), _) => count(t),
                    (None, Some(Value::String(k))) if k == "image_url" => 85,
                    _ => p.to_string().len() as u64,
                },
            )
            .sum(),
        Ok(Value::Null) => 0,
        _ => unread(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("json")
    }

    #[test]
    fn counts_like_openai_plus_margin() {
        // "Hello world" is 2 tokens in cl100k; role "user" 1; 3 per message; 3 priming.
        let m = raw(r#"[{"role":"user","content":"Hello world"}]"#);
        assert_eq!(
            chat_prompt(&m, None),
            3 + 3 + 1 + 2,
            "9 tokens: 5 % is below one"
        );
        // Large enough for the 5 % to show, in numbers written out rather than recomputed:
        // "word" then 999 × " word" is 1000 tokens; with the message's 7 that is 1007, and
        // 5 % of it is 50.
        let text = format!("word{}", " word".repeat(999));
        assert_eq!(count(&text), 1000);
        let long = raw(&format!(r#"[{{"role":"user","content":"{text}"}}]"#));
        assert_eq!(chat_prompt(&long, None), 1007 + 50);
        let inputs = format!(r#"["{text}", [1,2,3], [4]]"#);
        assert_eq!(embeddings_input(&raw(&inputs)), 1004 + 50);
        assert_eq!(embeddings_input(&raw("[[1,2,3],[4]]")), 4);
    }

    /// Shapes the parser cannot read (a non-object message, content nested deeper than
    /// serde_json's recursion limit) are counted by their bytes, never as nothing.
    #[test]
    fn unreadable_shapes_never_collapse() {
        let words = "word ".repeat(2000);
        let deep = format!("{}0{}", "[".repeat(200), "]".repeat(200));
        let m = raw(&format!(
            r#"[{{"role":"user","content":[{{"type":"text","text":"{words}","x":{deep}}}]}}]"#
        ));
        assert!(chat_prompt(&m, None) >= 2000, "{}", chat_prompt(&m, None));
        let m = raw(&format!(r#"[{{"role":"user","content":"{words}"}}, 7]"#));
        assert!(chat_prompt(&m, None) >= 2000);
        let m = raw(&format!(
            r#"[{{"role":"user","content":{{"odd":"{words}"}}}}]"#
        ));
        assert!(chat_prompt(&m, None) >= 2000);
        let m = raw(&format!(
            r#"[{{"role":"user","content":[{{"type":"input_audio","input_audio":{{"data":"{words}"}}}}]}}]"#
        ));
        assert!(chat_prompt(&m, None) >= 2000);
        assert!(embeddings_input(&raw(&format!(r#"[{{"x":"{words}"}}]"#))) >= 2000);
        assert!(embeddings_input(&raw(&format!(r#"{{"x":"{words}"}}"#))) >= 2000);
    }
}
