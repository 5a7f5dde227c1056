//! Provider adapters through the real binary: an `anthropic` ModelEndpoint in front of the fake's
//! Messages API, which refuses what the real API refuses (tests/src/fake/anthropic.rs), and `azure-openai` in front of its Azure routes.

use std::sync::atomic::Ordering;

use llmgate_tests::fake::FakeUpstream;
use llmgate_tests::harness::{
    Gateway, Reply, SseReader, UPSTREAM_KEY, access_yaml, provider_endpoint_yaml,
};
use serde_json::{Value, json};

fn anthropic_yaml(name: &str, upstream_model: &str, urls: &[String], extra: &str) -> String {
    let extra = format!("  maxOutputTokens: 1000\n{extra}");
    provider_endpoint_yaml("anthropic", name, upstream_model, urls, &extra)
}

/// The 502 of a provider refusing the gateway's own credentials.
fn assert_gateway_credentials_refused(r: &Reply) {
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused the gateway's credentials")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

/// A gateway serving `claude` from the fake's Messages API.
async fn one_claude(fake: &FakeUpstream) -> Gateway {
    let yaml = anthropic_yaml("claude", "claude-up", &[base(fake)], "");
    Gateway::start(&format!("{}{yaml}", access_yaml()), &[]).await
}

/// `model` asked "hi" with the test key.
async fn hi(gw: &Gateway, model: &str) -> Reply {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    gw.call("POST", "/v1/chat/completions", Some(body)).await
}

/// The Anthropic SDK's base URL: no `/v1`.
fn base(f: &FakeUpstream) -> String {
    format!("http://{}", f.addr)
}

#[tokio::test]
async fn openai_callers_reach_an_anthropic_model_with_tools_usage_and_streams() {
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let gw = one_claude(&fake).await;

    // A conversation the Messages API would refuse as sent: two system messages, an empty
    // assistant text beside its tool calls, a call id minted elsewhere, two tool results and a
    // user text as three turns.
    let r = gw
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({
                "model": "claude",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "weather and time?"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                        {"id": "functions.time:1", "type": "function", "function": {"name": "time", "arguments": ""}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
                    {"role": "tool", "tool_call_id": "functions.time:1", "content": "noon"},
                    {"role": "system", "content": "Answer in French."},
                    {"role": "user", "content": "thanks, summarise"}
                ],
                "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}},
                          {"type": "function", "function": {"name": "time"}}],
                "tool_choice": "none",
                "seed": 3
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = fake.last_request();
    assert_eq!(
        sent["max_tokens"], 1000,
        "the model's maximum when the caller sets none"
    );
    assert_eq!(sent["system"][1]["text"], "Answer in French.");
    assert_eq!(sent["messages"].as_array().map(Vec::len), Some(3));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-up-20260101");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "echo: thanks, summarise"
    );
    // 2 words of input + 3 cached: prompt_tokens counts both, as OpenAI's does.
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(r.header("x-llmgate-model"), "claude");

    // A tool call, streamed: one id, arguments in pieces on index 0, finish tool_calls, usage.
    let resp = gw
        .chat_stream(&json!({
            "model": "claude",
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 50
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp.into_body()).all().await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect();
    let mut args = String::new();
    let mut ids = Vec::new();
    for c in &chunks {
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(call["index"], 0);
            ids.extend(call["id"].as_str().map(str::to_owned));
            args.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(ids, ["toolu_fake1"]);
    assert_eq!(
        serde_json::from_str::<Value>(&args).ok(),
        Some(json!({"city": "Oslo"}))
    );
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("tool_calls")]);
    assert_eq!(fake.last_request()["max_tokens"], 50);
    assert_eq!(
        chunks.last().map(|c| c["usage"]["prompt_tokens"].clone()),
        Some(json!(4))
    );

    let records = gw.audit_until(2).await;
    assert!(records.iter().all(|r| r["status"] == 200), "{records:?}");
    assert_eq!(records[0]["usage"]["prompt_tokens"], 5, "{records:?}");
}

#[tokio::test]
async fn overloaded_replicas_fail_over_and_stream_errors_are_errors() {
    let busy = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let fine = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    busy.behave_as(Some("fail-529"));
    let gw = Gateway::start(
        &format!(
            "{}{}{}",
            access_yaml(),
            anthropic_yaml(
                "claude",
                "claude-up",
                &[base(&busy), base(&fine)],
                "  failover: {maxAttempts: 2}"
            ),
            anthropic_yaml("broken", "error-mid-stream", &[base(&fine)], "")
        ),
        &[],
    )
    .await;

    for _ in 0..4 {
        let r = hi(&gw, "claude").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert!(
        busy.stats.chat.load(Ordering::Relaxed) >= 1,
        "the overloaded replica was never tried"
    );
    assert_eq!(fine.stats.chat.load(Ordering::Relaxed), 4);

    // Overloaded after the 200: an OpenAI error event, and no [DONE].
    let resp = gw
        .chat_stream(&json!({"model": "broken", "stream": true,
            "messages": [{"role": "user", "content": "one two three four"}]}))
        .await;
    let events = SseReader::new(resp.into_body()).all().await;
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("JSON");
    assert_eq!(last["error"]["type"], "overloaded_error", "{events:?}");
}

#[tokio::test]
async fn a_wrong_key_or_a_refused_body_reads_as_the_callers_api_says() {
    let fake = FakeUpstream::start("another-key").await.expect("fake");
    let gw = one_claude(&fake).await;
    let r = hi(&gw, "claude").await;
    assert_gateway_credentials_refused(&r);
    assert_eq!(fake.stats.unauthorized.load(Ordering::Relaxed), 1);

    // What cannot be translated is refused before any upstream call, in OpenAI's shape.
    let r = gw
        .call(
            "POST",
            "/v1/chat/completions",
            Some(
                json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
            ),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "n");
    assert_eq!(fake.stats.requests.load(Ordering::Relaxed), 1);
}

/// Each Azure resource has its own quota: a 429 from one moves the request to the next, and
/// `api-key` is the credential (the fake refuses anything else).
#[tokio::test]
async fn a_throttled_azure_resource_hands_the_request_to_the_next() {
    let throttled = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let fine = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    throttled.behave_as(Some("fail-429"));
    let yaml = format!(
        r#"{}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: gpt-41}}
spec:
  model: gpt-41
  provider: azure-openai
  upstreamModel: gpt-4.1
  azure: {{apiVersion: "2024-10-21"}}
  replicas: [{{url: "{}"}}, {{url: "{}"}}]
  credentials: {{apiKey: {{secretRef: {{name: upstream, key: api-key}}}}}}
  failover: {{maxAttempts: 2}}
"#,
        access_yaml(),
        base(&throttled),
        base(&fine)
    );
    let gw = Gateway::start(&yaml, &[]).await;
    for _ in 0..4 {
        let r = hi(&gw, "gpt-41").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: hi");
    }
    assert!(throttled.stats.requests.load(Ordering::Relaxed) >= 1);
    assert_eq!(fine.stats.chat.load(Ordering::Relaxed), 4);
    assert_eq!(fine.stats.unauthorized.load(Ordering::Relaxed), 0);
}

/// Entra ID instead of a key: one client-credentials token serves every request until shortly
/// before it expires, then one new one; a wrong client secret is the gateway's configuration
/// problem (502), and nothing reaches the deployment.
#[tokio::test]
async fn azure_with_entra_id_tokens_fetched_once_and_refreshed_before_expiry() {
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let secrets = tempfile::tempdir().expect("tempdir");
    for (name, value) in [("entra", UPSTREAM_KEY), ("wrong", "not-the-secret")] {
        std::fs::create_dir_all(secrets.path().join(name)).expect("dir");
        std::fs::write(secrets.path().join(name).join("client-secret"), value).expect("write");
    }
    let endpoint = |model: &str, tenant: &str, secret: &str| {
        format!(
            r#"
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: {model}}}
spec:
  model: {model}
  provider: azure-openai
  upstreamModel: gpt-4.1
  azure: {{apiVersion: "2024-10-21"}}
  replicas: [{{url: "{url}"}}]
  credentials:
    entra:
      tenantId: {tenant}
      clientId: 00000000-0000-0000-0000-00000000c11e
      clientSecret: {{secretRef: {{name: {secret}, key: client-secret}}}}
      authorityHost: {url}
"#,
            url = base(&fake)
        )
    };
    let yaml = format!(
        "{}{}{}{}",
        access_yaml(),
        endpoint("hourly", "contoso", "entra"),
        endpoint("brief", "short-lived", "entra"),
        endpoint("misconfigured", "contoso", "wrong")
    );
    let dir = secrets.path().display().to_string();
    let gw = Gateway::start(&yaml, &["--secrets-dir", &dir]).await;
    let call = |model: &'static str| hi(&gw, model);
    let requests = futures_util::future::join_all((0..6).map(|_| call("hourly"))).await;
    for r in &requests {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(
        fake.stats.tokens_issued.load(Ordering::Relaxed),
        1,
        "one token, shared"
    );

    // A 2 s token is refreshed halfway: the first call fetches, a call a second later fetches
    // again, and no call ever goes out with an expired one.
    assert_eq!(call("brief").await.status, 200);
    assert_eq!(fake.stats.tokens_issued.load(Ordering::Relaxed), 2);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(call("brief").await.status, 200);
    assert_eq!(fake.stats.tokens_issued.load(Ordering::Relaxed), 3);
    assert_eq!(call("brief").await.status, 200);
    assert_eq!(fake.stats.tokens_issued.load(Ordering::Relaxed), 3);

    let chats = fake.stats.chat.load(Ordering::Relaxed);
    let r = call("misconfigured").await;
    assert_gateway_credentials_refused(&r);
    assert_eq!(
        fake.stats.chat.load(Ordering::Relaxed),
        chats,
        "nothing went upstream"
    );
    assert_eq!(fake.stats.unauthorized.load(Ordering::Relaxed), 0);
    assert!(
        !gw.stderr().contains("not-the-secret"),
        "the client secret never reaches the log"
    );
}
