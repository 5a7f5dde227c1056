//! The real `llmgate-dataplane` binary against the fake OpenAI-compatible upstream.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;
use llmgate_tests::fake::FakeUpstream;
use llmgate_tests::harness::{
    Gateway, SseReader, UPSTREAM_KEY, access_yaml, endpoint_yaml, free_port,
};
use serde_json::{Value, json};

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn streamed(model: &str, text: &str) -> Value {
    let mut req = chat(model, text);
    req["stream"] = json!(true);
    req
}

async fn fake() -> FakeUpstream {
    FakeUpstream::start(UPSTREAM_KEY)
        .await
        .expect("fake upstream")
}

#[tokio::test]
async fn chat_goes_upstream_with_the_upstream_key_and_model() {
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("llama", "meta/llama-3", &[up.base_url()], "");
    let gw = Gateway::start(&cfg, &[]).await;

    let mut req = chat("llama", "hello world");
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    req["x_vendor_field"] = json!({"keep": true});
    let r = gw.call("POST", "/v1/chat/completions", Some(req)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let v = r.json();
    // tools went through and the fake answered with a call of the first tool
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let sent = up.last_request();
    assert_eq!(sent["model"], "meta/llama-3", "upstream model id is sent");
    assert_eq!(
        sent["x_vendor_field"]["keep"], true,
        "unknown fields pass through"
    );
    assert_eq!(
        up.stats.unauthorized.load(Ordering::Relaxed),
        0,
        "upstream key was sent"
    );
    assert_eq!(r.header("x-llmgate-model"), "llama");
    let rid = r.header("x-request-id").to_string();
    assert_eq!(rid.len(), 32);

    let r = gw
        .call(
            "POST",
            "/v1/chat/completions",
            Some(chat("llama", "plain text")),
        )
        .await;
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "echo: plain text"
    );

    let records = gw.audit_until(2).await;
    let first = records
        .iter()
        .find(|r| r["request_id"] == rid.as_str())
        .expect("audit record for the request");
    assert_eq!(first["user"], "alice@example.com");
    assert_eq!(first["team"], "ml");
    assert_eq!(first["key_id"], "default/alice");
    assert_eq!(first["model_requested"], "llama");
    assert_eq!(first["model_served"], "llama");
    assert_eq!(first["upstream_model_version"], "meta/llama-3-2026-01-01");
    assert_eq!(first["policy_rule"], "default/ml#ml-everything");
    assert_eq!(first["status"], 200);
    let usage = &first["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_f64().unwrap_or(0.0),
        usage["completion_tokens"].as_f64().unwrap_or(0.0),
    );
    assert!(p > 0.0 && c > 0.0, "{usage}");
    let cost = first["cost_usd"].as_f64().unwrap_or(-1.0);
    assert!(
        (cost - (p * 2.0 + c * 8.0) / 1e6).abs() < 1e-12,
        "cost {cost}"
    );
    assert_audit_contract(first, &gw).await;
}

/// The record is a contract (docs/audit.md): exactly the documented keys, and the fields no
/// other test reads hold what they say.
async fn assert_audit_contract(record: &Value, gw: &Gateway) {
    const KEYS: [&str; 37] = [
        "request_id",
        "started_at",
        "finished_at",
        "operation",
        "stream",
        "auth_method",
        "key_id",
        "identity_provider",
        "groups",
        "user",
        "service_account",
        "team",
        "policy_rule",
        "model_requested",
        "model_served",
        "provider",
        "replica",
        "upstream_model",
        "upstream_model_version",
        "attempts",
        "status",
        "error_reason",
        "error_message",
        "usage",
        "cost_usd",
        "cost_usd_micros",
        "budget_charged_usd_micros",
        "fallback_from",
        "fallback_reason",
        "max_tokens_clamped",
        "rate_limit",
        "counters",
        "latency_ms",
        "snapshot_version",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    ];
    let mut have: Vec<&str> = record
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    have.extend(
        record["usage"]
            .as_object()
            .expect("usage")
            .keys()
            .map(String::as_str),
    );
    have.sort_unstable();
    let mut want = KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(have, want, "the audit record's keys");
    let mut latency: Vec<&str> = record["latency_ms"]
        .as_object()
        .expect("latency")
        .keys()
        .map(String::as_str)
        .collect();
    latency.sort_unstable();
    assert_eq!(
        latency,
        ["auth", "time_to_first_token", "total", "upstream_connect"]
    );
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/audit.md"))
        .expect("docs/audit.md");
    for k in KEYS.iter().chain(&latency) {
        assert!(
            doc.contains(&format!("`{k}`")),
            "docs/audit.md does not list {k}"
        );
    }

    let at =
        |k: &str| -> jiff::Timestamp { record[k].as_str().and_then(|t| t.parse().ok()).expect(k) };
    let (started, finished) = (at("started_at"), at("finished_at"));
    assert!(started <= finished);
    assert!(finished.duration_since(started) < jiff::SignedDuration::from_secs(10));
    assert!((jiff::Timestamp::now() - finished).get_seconds() < 30);
    assert_eq!(record["operation"], "chat.completions");
    assert_eq!(record["auth_method"], "api_key");
    assert_eq!(record["stream"], false);
    assert_eq!(record["provider"], "openai-compatible");
    assert_eq!(record["upstream_model"], "meta/llama-3");
    assert_eq!(record["attempts"], 1);
    assert_eq!(
        record["counters"],
        Value::Null,
        "no limit or budget applied"
    );
    assert_eq!(record["error_reason"], Value::Null);
    assert_eq!(record["error_message"], Value::Null);
    let cost = record["cost_usd"].as_f64().expect("cost");
    assert_eq!(
        record["cost_usd_micros"].as_u64(),
        Some((cost * 1e6).ceil() as u64),
        "micros are the cost rounded up"
    );
    assert_eq!(
        record["snapshot_version"],
        gw.readyz().await["config"]["version"],
        "the snapshot that served it"
    );
    let lat = &record["latency_ms"];
    let total = lat["total"].as_f64().expect("total");
    for part in ["auth", "upstream_connect", "time_to_first_token"] {
        let v = lat[part].as_f64().expect(part);
        assert!((0.0..=total).contains(&v), "{part} {v} of {total}");
    }
    assert!(
        lat["upstream_connect"].as_f64() > Some(0.0),
        "the first request opened a connection"
    );
}

#[tokio::test]
async fn a_provider_refusing_the_gateways_key_is_a_502_that_echoes_nothing() {
    // The upstream expects another key than the one the gateway holds.
    let up = FakeUpstream::start("sk-the-provider-expects-another-key")
        .await
        .expect("fake upstream");
    let cfg = access_yaml() + &endpoint_yaml("llama", "meta/llama-3", &[up.base_url()], "");
    let gw = Gateway::start(&cfg, &[]).await;
    let echoed = format!("sk-...{}", &UPSTREAM_KEY[UPSTREAM_KEY.len() - 4..]);

    let embed = json!({"model": "llama", "input": "hi"});
    let calls = [
        ("/v1/chat/completions", chat("llama", "hi")),
        ("/v1/chat/completions", streamed("llama", "hi")),
        ("/v1/embeddings", embed),
    ];
    for (path, body) in calls {
        let r = gw.call("POST", path, Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}: {:?}", r.body);
        let e = &r.json()["error"];
        assert_eq!(e["code"], "upstream_auth_failed", "{path}: {e}");
        assert_eq!(e["type"], "upstream_error", "{path}: {e}");
        let message = e["message"].as_str().unwrap_or("");
        assert!(message.contains("`llama`"), "{message}");
        assert!(
            !message.contains(&echoed) && !message.contains("Incorrect API key"),
            "the provider's text is relayed: {message}"
        );
    }
    // The upstream was asked each time (so its refusal is what the caller saw)...
    assert_eq!(up.stats.unauthorized.load(Ordering::Relaxed), 3);
    // ...and the operators learn which endpoint's credentials are wrong.
    let log = gw.stderr();
    assert!(
        log.matches("refused the endpoint's credentials").count() == 3
            && log.contains("ModelEndpoint default/llama"),
        "{log}"
    );
    assert!(!log.contains(&echoed), "the key's tail is logged: {log}");
    let records = gw.audit_until(3).await;
    assert!(
        records
            .iter()
            .all(|r| r["status"] == 502 && r["error_reason"] == "upstream_auth_failed"),
        "{records:?}"
    );
}

#[tokio::test]
async fn streams_relay_chunks_as_they_come_and_hide_the_usage_chunk_unless_asked() {
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("slow", "slow-stream:150", &[up.base_url()], "");
    let gw = Gateway::start(&cfg, &[]).await;

    let mut req = streamed("slow", "one two three four five");
    let resp = gw.chat_stream(&req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let mut sse = SseReader::new(resp.into_body());
    let first = sse.next().await.expect("first event");
    assert!(first.contains("\"role\":\"assistant\""));
    // The first events arrive while the upstream is still producing: nothing is buffered.
    let sent_when_first_seen = up.stats.chunks_sent.load(Ordering::Relaxed);
    let mut events = vec![first];
    while let Some(e) = sse.next().await {
        events.push(e);
    }
    let total_sent = up.stats.chunks_sent.load(Ordering::Relaxed);
    assert!(
        sent_when_first_seen + 3 < total_sent,
        "first event seen after {sent_when_first_seen} of {total_sent} upstream chunks"
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        events.iter().all(|e| !e.contains("prompt_tokens")),
        "usage chunk hidden"
    );
    assert_eq!(
        up.stats.usage_requested.load(Ordering::Relaxed),
        1,
        "the gateway asked upstream for usage anyway"
    );

    req["stream_options"] = json!({"include_usage": true});
    let resp = gw.chat_stream(&req).await;
    let events = SseReader::new(resp.into_body()).all().await;
    let usage_chunk: Value =
        serde_json::from_str(&events[events.len() - 2]).expect("usage chunk is JSON");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(
        usage_chunk["usage"]["completion_tokens"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );

    let records = gw.audit_until(2).await;
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["stream"], true);
        assert!(r["error_reason"].is_null(), "{r}");
        assert!(r["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0, "{r}");
        let ttft = r["latency_ms"]["time_to_first_token"]
            .as_f64()
            .unwrap_or(-1.0);
        let total = r["latency_ms"]["total"].as_f64().unwrap_or(-1.0);
        assert!(ttft >= 0.0 && ttft < total, "{r}");
    }
}

#[tokio::test]
async fn tool_call_fragments_stream_through_intact() {
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("m", "any", &[up.base_url()], "");
    let gw = Gateway::start(&cfg, &[]).await;
    let mut req = streamed("m", "weather?");
    req["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let resp = gw.chat_stream(&req).await;
    let events = SseReader::new(resp.into_body()).all().await;
    let mut args = String::new();
    let mut ids = 0;
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).expect("chunk JSON");
        if let Some(tc) = v["choices"][0]["delta"]["tool_calls"][0].as_object() {
            ids += usize::from(tc.contains_key("id"));
            args.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(ids, 1);
    assert_eq!(args, "{\"city\":\"Paris\"}");
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_the_upstream() {
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("slow", "slow-stream:200", &[up.base_url()], "");
    let gw = Gateway::start(&cfg, &[]).await;
    let req = streamed("slow", "a b c d e f g h i j k l");
    let resp = gw.chat_stream(&req).await;
    let mut sse = SseReader::new(resp.into_body());
    assert!(sse.next().await.is_some());
    drop(sse); // the client goes away

    let deadline = Instant::now() + Duration::from_secs(5);
    while up.stats.streams_cancelled.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "upstream stream was never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.stats.streams_completed.load(Ordering::Relaxed), 0);
    let records = gw.audit_until(1).await;
    assert_eq!(records[0]["error_reason"], "client_disconnected");
}

#[tokio::test]
async fn fails_over_from_a_dead_replica_and_ejects_it() {
    let up = fake().await;
    let dead = format!("http://{}/v1", free_port());
    // The live replica answers in 5 ms, slower than the 1 ms an untried replica is assumed to
    // take, so the router is sure to try the dead one (not only when the first request happens
    // to pick it).
    let cfg = access_yaml()
        + &endpoint_yaml(
            "m",
            "slow-first-byte:5",
            &[dead, up.base_url()],
            "  failover: {maxAttempts: 2, ejectAfterFailures: 1, ejectFor: 30s}",
        );
    let gw = Gateway::start(&cfg, &[]).await;
    for i in 0..20 {
        let r = gw
            .call(
                "POST",
                "/v1/chat/completions",
                Some(chat("m", &format!("n{i}"))),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {:?}", r.body);
    }
    let records = gw.audit_until(20).await;
    let attempts: u64 = records
        .iter()
        .map(|r| r["attempts"].as_u64().unwrap_or(0))
        .sum();
    // at most one request paid for the dead replica before it was ejected
    assert!(attempts <= 21, "attempts {attempts}");
    // Every failed attempt is counted (the series exist from start-up at 0: values, not
    // names, are what prove it), and every request was answered by the live one.
    let failed = gw
        .metric(
            "llmgate_upstream_attempts_total",
            &[("model", "m"), ("outcome", "connect_error")],
        )
        .await;
    assert!(failed >= 1.0, "the dead replica was tried");
    assert_eq!(failed, (attempts - 20) as f64);
    let ok = gw
        .metric(
            "llmgate_upstream_attempts_total",
            &[("model", "m"), ("outcome", "ok")],
        )
        .await;
    assert_eq!(ok, 20.0);
    assert_eq!(
        gw.metric(
            "llmgate_requests_total",
            &[("model", "m"), ("status", "200"), ("reason", "ok")]
        )
        .await,
        20.0
    );
    assert_eq!(
        gw.metric("llmgate_request_duration_seconds_count", &[("model", "m")])
            .await,
        20.0
    );
}

#[tokio::test]
async fn a_replica_killed_mid_load_fails_no_request() {
    let a = fake().await;
    let b = fake().await;
    let cfg = access_yaml()
        + &endpoint_yaml(
            "m",
            "slow-first-byte:20",
            &[a.base_url(), b.base_url()],
            "  failover: {maxAttempts: 2, ejectAfterFailures: 1}",
        );
    let gw = std::sync::Arc::new(Gateway::start(&cfg, &[]).await);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let gw = std::sync::Arc::clone(&gw);
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..25 {
                let r = gw
                    .call(
                        "POST",
                        "/v1/chat/completions",
                        Some(chat("m", &format!("{worker}-{i}"))),
                    )
                    .await;
                statuses.push((r.status, String::from_utf8_lossy(&r.body).into_owned()));
            }
            statuses
        }));
    }
    // Kill replica a while requests are in flight on it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.stats.in_flight.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "a never had a request in flight");
        tokio::task::yield_now().await;
    }
    a.kill();
    let mut failed = Vec::new();
    for t in tasks {
        for (s, body) in t.await.expect("worker") {
            if s != StatusCode::OK {
                failed.push((s, body));
            }
        }
    }
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        a.stats.chat.load(Ordering::Relaxed) > 0,
        "replica a took traffic before it died"
    );
    assert!(b.stats.chat.load(Ordering::Relaxed) > 0);
    // Requests were in flight on a when it died (their handlers were dropped there), and they
    // were answered by b on a second attempt.
    assert!(a.stats.requests_aborted.load(Ordering::Relaxed) > 0);
    let b_name = replica_of(&b);
    let moved = gw
        .audit_until(200)
        .await
        .into_iter()
        .filter(|r| r["attempts"] == 2 && r["replica"] == b_name.as_str())
        .count();
    assert!(moved > 0, "no request was moved from a to b");
}

#[tokio::test]
async fn upstream_errors_map_to_openai_errors() {
    let up = fake().await;
    let cfg = access_yaml()
        + &endpoint_yaml("limited", "fail-429", &[up.base_url()], "")
        + &endpoint_yaml(
            "broken",
            "fail-500",
            &[up.base_url()],
            "  failover: {maxAttempts: 1}",
        )
        + &endpoint_yaml(
            "slow",
            "slow-first-byte:3000",
            &[up.base_url()],
            "  timeouts: {firstByte: 300ms}\n  failover: {maxAttempts: 1}",
        );
    let gw = Gateway::start(&cfg, &[]).await;

    let r = gw
        .call("POST", "/v1/chat/completions", Some(chat("limited", "x")))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");

    let r = gw
        .call("POST", "/v1/chat/completions", Some(chat("broken", "x")))
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"]["code"], "upstream_server_error");
    assert_eq!(r.json()["error"]["type"], "upstream_error");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("error while processing")
    );

    let started = Instant::now();
    let r = gw
        .call("POST", "/v1/chat/completions", Some(chat("slow", "x")))
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "first-byte timeout applies"
    );

    let dead = format!("http://{}/v1", free_port());
    let cfg = access_yaml() + &endpoint_yaml("gone", "any", &[dead], "");
    let gw = Gateway::start(&cfg, &[]).await;
    let r = gw
        .call("POST", "/v1/chat/completions", Some(chat("gone", "x")))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["code"], "upstream_unreachable");
}

#[tokio::test]
async fn an_upstream_dying_mid_stream_ends_the_stream_with_an_error_event() {
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("m", "drop-mid-stream", &[up.base_url()], "");
    let gw = Gateway::start(&cfg, &[]).await;
    let req = streamed("m", "a b c d");
    let resp = gw.chat_stream(&req).await;
    let events = SseReader::new(resp.into_body()).all().await;
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("JSON");
    assert_eq!(last["error"]["code"], "bad_upstream_response", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let records = gw.audit_until(1).await;
    assert_eq!(records[0]["error_reason"], "bad_upstream_response");
}

#[tokio::test]
async fn embeddings_are_base64_when_asked_even_from_float_only_servers() {
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("emb", "embedder", &[up.base_url()], "");
    let gw = Gateway::start(&cfg, &[]).await;
    let r = gw
        .call(
            "POST",
            "/v1/embeddings",
            Some(json!({"model": "emb", "input": ["abc", "de"], "encoding_format": "base64"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(up.last_request()["encoding_format"], "float");
    let v = r.json();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"][1]["embedding"].as_str().expect("base64 string"))
        .expect("valid base64");
    let floats: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats, vec![2.0, 0.5, -0.25, 1.0]); // len("de"), index 1
    let r = gw
        .call(
            "POST",
            "/v1/embeddings",
            Some(json!({"model": "emb", "input": "abc"})),
        )
        .await;
    assert_eq!(
        r.json()["data"][0]["embedding"],
        json!([3.0, 0.5, -0.25, 0.0])
    );
}

#[tokio::test]
async fn a_broken_edit_keeps_the_last_good_config_and_a_fix_applies() {
    let up = fake().await;
    let good = access_yaml() + &endpoint_yaml("m", "any", &[up.base_url()], "");
    let gw = Gateway::start(&good, &[]).await;
    let version = gw.readyz().await["config"]["version"]
        .as_str()
        .unwrap_or("")
        .to_string();

    // A typo in a field: the whole change is rejected, file and field reported.
    gw.write_config(
        "extra.yaml",
        "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: x}\nspec: {model: x, provider: mock, replicaz: []}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        let r = gw.readyz().await;
        if !r["config"]["last_error"].is_null() {
            break r;
        }
        assert!(Instant::now() < deadline, "rejection not reported: {r}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let problem = &ready["config"]["last_error"]["problems"][0];
    assert!(
        problem["file"]
            .as_str()
            .unwrap_or("")
            .ends_with("extra.yaml"),
        "{problem}"
    );
    assert_eq!(problem["field"], "spec.replicaz");
    assert_eq!(ready["config"]["version"], version.as_str());
    assert!(gw.stderr().contains("extra.yaml"), "the log names the file");
    let (_, metrics) = gw.admin_get("/metrics").await.expect("metrics");
    assert!(
        metrics.contains("llmgate_config_last_reload_successful 0"),
        "{metrics}"
    );
    let r = gw
        .call(
            "POST",
            "/v1/chat/completions",
            Some(chat("m", "still here")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Broken YAML syntax: same.
    gw.write_config("extra.yaml", "kind: [\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        let r = gw.readyz().await;
        if r["config"]["last_error"]["problems"][0]["field"] != "spec.replicaz" {
            break r;
        }
        assert!(Instant::now() < deadline, "syntax error not reported: {r}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let problem = &ready["config"]["last_error"]["problems"][0];
    assert!(
        problem["file"]
            .as_str()
            .unwrap_or("")
            .ends_with("extra.yaml"),
        "{problem}"
    );
    assert!(
        problem["message"].as_str().unwrap_or("").contains("line "),
        "the YAML syntax error, with its place: {problem}"
    );
    assert_eq!(ready["config"]["version"], version.as_str());

    // The fix applies, and the new model is served.
    gw.write_config(
        "extra.yaml",
        "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: x}\nspec: {model: x, provider: mock}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = gw
            .call("POST", "/v1/chat/completions", Some(chat("x", "hi")))
            .await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(Instant::now() < deadline, "fixed config never applied");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let r = gw.readyz().await;
    assert!(r["config"]["last_error"].is_null());
    assert_ne!(r["config"]["version"], version.as_str());
}

#[tokio::test]
async fn oversized_and_slow_bodies_are_refused() {
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("m", "any", &[up.base_url()], "");
    let gw = Gateway::start(&cfg, &["--max-body-bytes", "1024"]).await;
    let r = gw
        .call(
            "POST",
            "/v1/chat/completions",
            Some(chat("m", &"x".repeat(2000))),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    assert_eq!(up.stats.chat.load(Ordering::Relaxed), 0);
}

/// A slow client on the real server: headers that never finish are cut at `--header-timeout`;
/// a body that stalls gets 408 `request_timeout` at `--body-timeout`, in OpenAI's shape.
#[tokio::test]
async fn stalled_headers_and_bodies_are_cut_at_their_timeouts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("m", "any", &[up.base_url()], "");
    let gw = Gateway::start(
        &cfg,
        &["--header-timeout", "300ms", "--body-timeout", "300ms"],
    )
    .await;

    let mut half = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    half.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let t = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), half.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the connection was held open past the header timeout"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );

    let mut slow = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":",
        llmgate_tests::harness::TEST_KEY
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(up.stats.chat.load(Ordering::Relaxed), 0);
}

/// `timeouts.total` bounds a stream that has started: it ends with an `upstream_timeout` error
/// event and no `[DONE]`.
#[tokio::test]
async fn a_stream_over_its_total_timeout_ends_with_an_error_event() {
    let up = fake().await;
    let cfg = access_yaml()
        + &endpoint_yaml(
            "slow",
            "slow-stream:200",
            &[up.base_url()],
            "  timeouts: {total: 700ms}",
        );
    let gw = Gateway::start(&cfg, &[]).await;
    let t = Instant::now();
    let resp = gw.chat_stream(&streamed("slow", &"w ".repeat(20))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let events = SseReader::new(resp.into_body()).all().await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(events.len() >= 2, "the stream had started: {events:?}");
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("JSON event");
    assert_eq!(last["error"]["code"], "upstream_timeout", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let audit = gw.audit_until(1).await;
    assert_eq!(audit[0]["error_reason"], "upstream_timeout");
}

#[tokio::test]
async fn graceful_shutdown_lets_a_running_stream_finish() {
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("slow", "slow-stream:100", &[up.base_url()], "");
    let mut gw = Gateway::start(&cfg, &["--shutdown-grace", "10s"]).await;
    let req = streamed("slow", "a b c d e f");
    let resp = gw.chat_stream(&req).await;
    let mut sse = SseReader::new(resp.into_body());
    assert!(sse.next().await.is_some());
    sigterm(&gw);
    // Draining: not ready, and the listener is closed to new connections, while the stream
    // goes on.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = gw.admin_get("/readyz").await.expect("admin still answers");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(body.contains("\"draining\":true"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = tokio::net::TcpStream::connect(gw.addr).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted while draining"
    );
    let mut rest = Vec::new();
    while let Some(e) = sse.next().await {
        rest.push(e);
    }
    assert!(
        rest.len() >= 3,
        "the stream went on after SIGTERM: {rest:?}"
    );
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    let status = gw
        .exited_within(Duration::from_secs(10))
        .await
        .expect("exited once the stream ended");
    assert!(status.success(), "{status}");
    let records = gw.audit();
    assert_eq!(records.len(), 1, "the stream was recorded before exit");
    assert!(records[0]["error_reason"].is_null());
}

fn sigterm(gw: &Gateway) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

/// Past `--shutdown-grace` a stream is cut (no `[DONE]`) and the process still exits 0, soon.
#[tokio::test]
async fn a_stream_longer_than_the_shutdown_grace_is_cut_and_the_process_exits() {
    let up = fake().await;
    // 30 words at 200 ms: about 6 s.
    let cfg = access_yaml() + &endpoint_yaml("slow", "slow-stream:200", &[up.base_url()], "");
    let mut gw = Gateway::start(&cfg, &["--shutdown-grace", "300ms"]).await;
    let resp = gw.chat_stream(&streamed("slow", &"w ".repeat(30))).await;
    let mut sse = SseReader::new(resp.into_body());
    assert!(sse.next().await.is_some());
    let t = Instant::now();
    sigterm(&gw);
    let status = gw
        .exited_within(Duration::from_secs(3))
        .await
        .expect("exited soon after the grace");
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    while let Some(e) = sse.next().await {
        rest.push(e);
    }
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_ne!(
        rest.last().map(String::as_str),
        Some("[DONE]"),
        "cut: {rest:?}"
    );
    assert!(rest.len() < 25, "{} events after SIGTERM", rest.len());
    let records = gw.audit();
    assert_eq!(
        records.len(),
        1,
        "the cut stream was recorded before exit: {records:?}"
    );
    assert_eq!(records[0]["error_reason"], "shutdown", "{:?}", records[0]);
}

#[tokio::test]
async fn an_ejected_replica_is_probed_back_into_rotation() {
    let a = fake().await;
    let b_addr = free_port();
    // a answers in 5 ms, slower than an untried replica is assumed to be: b is sure to be tried
    // (and ejected) while it is down, and preferred again once it is back.
    let cfg = access_yaml()
        + &endpoint_yaml(
            "m",
            "slow-first-byte:5",
            &[a.base_url(), format!("http://{b_addr}/v1")],
            "  failover: {maxAttempts: 2, ejectAfterFailures: 1, ejectFor: 200ms}",
        );
    let gw = Gateway::start(&cfg, &[]).await;
    // b is down: requests fail over to a and b gets ejected.
    for i in 0..10 {
        let r = gw
            .call(
                "POST",
                "/v1/chat/completions",
                Some(chat("m", &format!("{i}"))),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // b comes up; the prober readmits it and it takes traffic again.
    let b = FakeUpstream::start_on(b_addr, UPSTREAM_KEY)
        .await
        .expect("replica b starts on its old port");
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.stats.chat.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "b never came back:\n{}",
            gw.stderr()
        );
        let r = gw
            .call("POST", "/v1/chat/completions", Some(chat("m", "again")))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gw.stderr().contains("probed ejected replica"));
}

#[tokio::test]
async fn the_openai_provider_passes_embeddings_encoding_through() {
    let up = fake().await;
    let cfg = access_yaml()
        + &endpoint_yaml("emb", "text-embedding-3-small", &[up.base_url()], "")
            .replace("provider: openai-compatible", "provider: openai");
    let gw = Gateway::start(&cfg, &[]).await;
    let r = gw
        .call(
            "POST",
            "/v1/embeddings",
            Some(json!({"model": "emb", "input": "abcd", "encoding_format": "base64"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // OpenAI itself speaks base64: the request goes upstream as the caller wrote it.
    assert_eq!(up.last_request()["encoding_format"], "base64");
    assert_eq!(up.last_request()["model"], "text-embedding-3-small");
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(r.json()["data"][0]["embedding"].as_str().expect("base64"))
        .expect("valid base64");
    assert_eq!(raw.len(), 16);
    assert_eq!(f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]), 4.0);
    let records = gw.audit_until(1).await;
    assert_eq!(records[0]["provider"], "openai");
    assert_eq!(records[0]["usage"]["prompt_tokens"], 2);
}

#[tokio::test]
async fn a_caller_hanging_up_before_the_answer_is_recorded_and_the_upstream_call_dropped() {
    use tokio::io::AsyncWriteExt;
    let up = fake().await;
    let cfg = access_yaml() + &endpoint_yaml("slow", "slow-first-byte:3000", &[up.base_url()], "");
    let gw = Gateway::start(&cfg, &[]).await;
    let body = chat("slow", "are you there?").to_string();
    let mut conn = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        llmgate_tests::harness::TEST_KEY,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write head");
    conn.write_all(body.as_bytes()).await.expect("write body");
    // Wait until the gateway's call reached the upstream, then hang up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.stats.chat.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hung_up = Instant::now();
    drop(conn);
    let records = gw.audit_until(1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["error_reason"], "client_disconnected");
    assert_eq!(records[0]["status"], 499);
    assert!(
        hung_up.elapsed() < Duration::from_millis(2500),
        "recorded when the caller left, not when the upstream answered"
    );
    // The upstream saw its caller go away too, long before it would have answered.
    while up.stats.requests_aborted.load(Ordering::Relaxed) == 0 {
        assert!(
            hung_up.elapsed() < Duration::from_millis(2500),
            "the upstream call was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two replicas of `m`; the first misbehaves as `behaviour`, the second answers after 20 ms
/// (slower than an untried replica is assumed to be, so the router is sure to try the first).
async fn one_bad_replica(behaviour: &str, extra: &str) -> (FakeUpstream, FakeUpstream, Gateway) {
    let (bad, good) = (fake().await, fake().await);
    bad.behave_as(Some(behaviour));
    let cfg = access_yaml()
        + &endpoint_yaml(
            "m",
            "slow-first-byte:20",
            &[bad.base_url(), good.base_url()],
            extra,
        );
    let gw = Gateway::start(&cfg, &[]).await;
    (bad, good, gw)
}

fn replica_of(up: &FakeUpstream) -> String {
    up.addr.to_string()
}

#[tokio::test]
async fn a_5xx_or_a_stalled_first_byte_moves_the_request_to_another_replica() {
    for behaviour in ["fail-500", "slow-first-byte:5000"] {
        let (bad, good, gw) = one_bad_replica(
            behaviour,
            "  timeouts: {firstByte: 300ms}\n  failover: {maxAttempts: 2, ejectAfterFailures: 1000}",
        )
        .await;
        let n = 8;
        for i in 0..n {
            let r = gw
                .call(
                    "POST",
                    "/v1/chat/completions",
                    Some(chat("m", &format!("n{i}"))),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{behaviour} request {i}: {:?}",
                r.body
            );
        }
        let tried_bad = bad.stats.chat.load(Ordering::Relaxed);
        assert!(
            tried_bad >= 1,
            "{behaviour}: the bad replica was never tried"
        );
        assert_eq!(
            good.stats.chat.load(Ordering::Relaxed),
            n,
            "{behaviour}: every request ended on the good one"
        );
        let records = gw.audit_until(n as usize).await;
        let retried: Vec<&Value> = records.iter().filter(|r| r["attempts"] == 2).collect();
        assert_eq!(retried.len() as u64, tried_bad, "{behaviour}: {records:#?}");
        assert!(
            records
                .iter()
                .all(|r| r["replica"] == replica_of(&good).as_str()),
            "{behaviour}: {records:#?}"
        );
    }
}

#[tokio::test]
async fn a_4xx_from_a_replica_is_relayed_not_retried() {
    let (bad, good, gw) = one_bad_replica(
        "fail-429",
        "  failover: {maxAttempts: 2, ejectAfterFailures: 1000}",
    )
    .await;
    let n = 8u64;
    let mut refused = 0;
    for i in 0..n {
        let r = gw
            .call(
                "POST",
                "/v1/chat/completions",
                Some(chat("m", &format!("n{i}"))),
            )
            .await;
        match r.status {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
            }
            other => panic!("request {i}: {other} {:?}", r.body),
        }
    }
    let (to_bad, to_good) = (
        bad.stats.chat.load(Ordering::Relaxed),
        good.stats.chat.load(Ordering::Relaxed),
    );
    assert!(to_bad >= 1, "the replica answering 429 was never tried");
    assert_eq!(
        (refused, to_bad + to_good),
        (to_bad, n),
        "each request went to one replica"
    );
    let records = gw.audit_until(n as usize).await;
    for r in records.iter().filter(|r| r["status"] == 429) {
        assert_eq!(r["attempts"], 1, "{r}");
        assert_eq!(r["replica"], replica_of(&bad).as_str(), "{r}");
    }
}

#[tokio::test]
async fn a_stream_that_broke_after_its_first_bytes_is_not_retried() {
    let (bad, good, gw) = one_bad_replica(
        "drop-mid-stream",
        "  failover: {maxAttempts: 2, ejectAfterFailures: 1000}",
    )
    .await;
    for i in 0..10 {
        let (bad_before, good_before) = (
            bad.stats.chat.load(Ordering::Relaxed),
            good.stats.chat.load(Ordering::Relaxed),
        );
        let resp = gw.chat_stream(&streamed("m", &format!("a b c {i}"))).await;
        let events = SseReader::new(resp.into_body()).all().await;
        if bad.stats.chat.load(Ordering::Relaxed) == bad_before {
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
            continue;
        }
        // It reached the replica that breaks: the caller had bytes, so no second replica.
        let last: Value = serde_json::from_str(events.last().expect("events")).expect("JSON");
        assert_eq!(last["error"]["code"], "bad_upstream_response", "{events:?}");
        assert_eq!(
            good.stats.chat.load(Ordering::Relaxed),
            good_before,
            "retried after bytes"
        );
        return;
    }
    panic!("no stream reached the breaking replica");
}

/// The peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_mock_model_does_bounded_work_whatever_the_request() {
    let cfg = access_yaml()
        + r#"
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: echo}
spec:
  model: echo
  provider: mock
  maxOutputTokens: 50
  mock: {echo: true, chunkWords: 1, embeddingDimensions: 8}
"#;
    let gw = Gateway::start(&cfg, &[]).await;
    let before = peak_rss_kib(gw.pid());
    assert!(before > 0, "no VmHWM for the gateway");

    // A 7 MB prompt of 3.5 million words, echoed as a stream and as one answer: no more words
    // than the model's maximum output, and the replica does not grow by the prompt's events.
    let prompt = "a ".repeat(3_500_000);
    let resp = gw.chat_stream(&streamed("echo", &prompt)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let events = SseReader::new(resp.into_body()).all().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let words: usize = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .map(|c| c.split_whitespace().count())
        .sum();
    assert_eq!(words, 50, "{} events", events.len());
    let r = gw
        .call("POST", "/v1/chat/completions", Some(chat("echo", &prompt)))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert_eq!(content.split_whitespace().count(), 50);
    assert_eq!(v["usage"]["completion_tokens"], 50);
    let grown = peak_rss_kib(gw.pid()).saturating_sub(before);
    assert!(grown < 100 * 1024, "the replica grew by {grown} KiB");

    // Embeddings: at most 2048 inputs, refused in the caller's shape beyond that.
    let inputs = |n: usize| json!({"model": "echo", "input": vec!["x"; n]});
    let r = gw.call("POST", "/v1/embeddings", Some(inputs(2049))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let err = &r.json()["error"];
    assert_eq!(err["param"], "input");
    assert_eq!(err["message"], "input may hold at most 2048 items");
    let r = gw.call("POST", "/v1/embeddings", Some(inputs(2048))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["data"].as_array().map(Vec::len), Some(2048));
    // One long token array is one input, one vector.
    let tokens = json!({"model": "echo", "input": vec![7; 100_000]});
    let r = gw.call("POST", "/v1/embeddings", Some(tokens)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["data"].as_array().map(Vec::len), Some(1));
}

/// Starts `llmgate-dataplane` with `args` and no `LLMGATE_*` variables, and returns its log up
/// to the line saying where it serves (or until it exits), then stops it.
fn startup_log(args: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    let mut cmd = std::process::Command::new(llmgate_tests::harness::binary("llmgate-dataplane"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LLMGATE_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .args(args)
        .args(["--audit-log", "/dev/null"])
        .env("LLMGATE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start llmgate-dataplane");
    let stderr = child.stderr.take().expect("stderr");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let line = strip_ansi(&line);
            log.push_str(&line);
            log.push('\n');
            // Outside the quickstart nothing follows the line saying where it serves.
            let serving =
                line.contains("data plane serving") && args.iter().any(|a| a == "--config-dir");
            if serving || line.contains("cannot listen") || line.contains("other hosts") {
                break;
            }
        }
        log
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().expect("log reader")
}

#[test]
fn the_quickstart_listens_on_loopback_only_and_says_so() {
    // Started with no flags (port 8080 may be taken here: the address it tried is named either
    // way).
    let log = startup_log(&[]);
    assert!(log.contains("127.0.0.1:8080"), "{log}");
    assert!(
        !log.contains("listen=0.0.0.0") && !log.contains("admin=0.0.0.0"),
        "{log}"
    );
    if !log.contains("cannot listen") {
        assert!(log.contains("admin=127.0.0.1:9090"), "{log}");
        assert!(log.contains("listens on loopback only"), "{log}");
        assert!(log.contains("--listen"), "{log}");
    }
    // Binding every address is a choice, and a warned one.
    let port = free_port().port().to_string();
    let admin = free_port().port().to_string();
    let listen = format!("0.0.0.0:{port}");
    let log = startup_log(&[
        "--listen",
        &listen,
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
    ]);
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("demo key is public and this address serves other hosts"),
        "{log}"
    );
}

/// The text of a log line without its terminal colours.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_secret_reference_naming_a_path_is_refused_and_nothing_is_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (config, secrets) = (tmp.path().join("config"), tmp.path().join("secrets"));
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::create_dir_all(secrets.join("upstream")).expect("secrets dir");
    // The files each reference would reach if it were joined to the secrets directory.
    std::fs::create_dir_all(tmp.path().join("outside")).expect("outside dir");
    std::fs::write(tmp.path().join("outside/api-key"), UPSTREAM_KEY).expect("outside key");
    let absolute = tmp.path().join("absolute-key");
    std::fs::write(&absolute, UPSTREAM_KEY).expect("absolute key");
    let cases = [
        (
            "../outside".to_owned(),
            "api-key".to_owned(),
            "secret name \"../outside\"",
        ),
        (
            "upstream".to_owned(),
            absolute.display().to_string(),
            "secret key \"/",
        ),
        (
            "upstream".to_owned(),
            "../../outside/api-key".to_owned(),
            "never '..'",
        ),
    ];
    for (name, key, refused) in cases {
        let cfg = access_yaml()
            + &endpoint_yaml(
                "llama",
                "meta/llama-3",
                &["http://127.0.0.1:9/v1".into()],
                "",
            )
            .replace(
                "{name: upstream, key: api-key}",
                &format!("{{name: \"{name}\", key: \"{key}\"}}"),
            );
        std::fs::write(config.join("main.yaml"), cfg).expect("config");
        let log = startup_log(&[
            "--config-dir",
            &config.display().to_string(),
            "--secrets-dir",
            &secrets.display().to_string(),
            "--listen",
            &free_port().to_string(),
            "--admin-listen",
            &free_port().to_string(),
        ]);
        assert!(
            log.contains("the configuration is not valid"),
            "{name}/{key}: {log}"
        );
        assert!(log.contains(refused), "{name}/{key}: {log}");
        assert!(!log.contains("data plane serving"), "{name}/{key}: {log}");
    }
}

/// A bad configuration at start-up stops the gateway with the report (file, resource, field),
/// in plain text on a stderr that is not a terminal, and claims no configuration it does not
/// have.
#[test]
fn a_bad_configuration_at_start_up_stops_it_with_the_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("models.yaml"),
        "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: x}\nspec: {model: x, provider: mock, replicaz: []}\n",
    )
    .expect("write");
    let out = std::process::Command::new(llmgate_tests::harness::binary("llmgate-dataplane"))
        .args(["--config-dir", &dir.path().to_string_lossy()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--audit-log", "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("LLMGATE_LOG")
        .output()
        .expect("run llmgate-dataplane");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("models.yaml"), "{stderr}");
    assert!(stderr.contains("ModelEndpoint default/x"), "{stderr}");
    assert!(stderr.contains("spec.replicaz"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes written to a pipe: {stderr}"
    );
    assert!(!stderr.contains("still serving"), "{stderr}");
}

/// A taken port names the address, the reason and the flag that moves it.
#[test]
fn a_taken_port_says_which_flag_moves_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let admin = format!("127.0.0.1:{}", free_port().port());
    for (flags, flag) in [
        (
            vec!["--listen", addr.as_str(), "--admin-listen", admin.as_str()],
            "--listen",
        ),
        (
            vec!["--listen", admin.as_str(), "--admin-listen", addr.as_str()],
            "--admin-listen",
        ),
    ] {
        let out = std::process::Command::new(llmgate_tests::harness::binary("llmgate-dataplane"))
            .args(&flags)
            .args(["--audit-log", "/dev/null"])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(&format!("cannot listen on {addr}")),
            "{stderr}"
        );
        assert!(stderr.contains("in use"), "{stderr}");
        assert!(
            stderr.contains(&format!("choose another address with {flag}")),
            "{stderr}"
        );
    }
}

/// `--check-config DIR` prints the report a reload would give and exits 0 or 1, serving
/// nothing: the sample directories pass (keys unset only leave models out), a typo fails with
/// file, resource and field.
#[test]
fn check_config_reports_and_exits_without_serving() {
    let run = |dir: &std::path::Path| {
        let out = std::process::Command::new(llmgate_tests::harness::binary("llmgate-dataplane"))
            .args(["--check-config", &dir.to_string_lossy()])
            .env_remove("OPENAI_API_KEY")
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let quickstart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quickstart");
    let (code, report) = run(&quickstart);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("is valid: 2 models served, 1 left out"),
        "{report}"
    );
    assert!(
        report.contains("warning: ") && report.contains("set OPENAI_API_KEY"),
        "{report}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("models.yaml"),
        "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: x}\nspec: {model: x, provider: mock, replicaz: []}\n",
    )
    .expect("write");
    let (code, report) = run(dir.path());
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("error: "), "{report}");
    assert!(
        report.contains("models.yaml: ModelEndpoint default/x: spec.replicaz"),
        "{report}"
    );
    assert!(report.contains("is not valid: 1 problem;"), "{report}");
}
