//! Router-level tests: the API surface driven with `oneshot`, the built-in mock model behind it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use llmgate_crds::{Resources, compile, parse_documents};
use llmgate_dataplane::audit::AuditSink;
use llmgate_dataplane::flags::Settings;
use llmgate_dataplane::gateway::Gateway;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const ALICE: &str = "sk-alice";
const BOB: &str = "sk-bob";

fn hash(k: &str) -> String {
    Sha256::digest(k.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config() -> String {
    format!(
        r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: chat, labels: {{tier: premium}}}}
spec: {{model: mock-chat, provider: mock, mock: {{content: "one two three", chunkWords: 1}}, pricing: {{inputPerMillion: 1, outputPerMillion: 2}}}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: cheap}}
spec: {{model: mock-cheap, provider: mock, mock: {{echo: true}}}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ApiKey
metadata: {{name: alice}}
spec: {{user: alice, team: ml, sha256: "{}"}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ApiKey
metadata: {{name: bob}}
spec: {{serviceAccount: bob-bot, team: product, sha256: "{}"}}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: everyone}}
spec:
  rules:
    - name: all-mock
      subjects: [{{authenticated: true}}]
      models: ["mock-*"]
    - name: no-premium-for-product
      effect: Deny
      subjects: [{{team: product}}]
      modelSelector: {{matchLabels: {{tier: premium}}}}
"#,
        hash(ALICE),
        hash(BOB)
    )
}

async fn app_with(args: &[&str]) -> (Router, Arc<Gateway>, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let audit_path = tmp.path().join("audit.jsonl");
    let (audit, _writer) =
        AuditSink::start(audit_path.to_str().expect("utf-8 path")).expect("audit sink");
    let mut argv = vec!["llmgate-dataplane"];
    argv.extend_from_slice(args);
    let settings = <Settings as clap::Parser>::parse_from(argv);
    let metrics = llmgate_dataplane::telemetry::metrics::Metrics::new();
    let (counters, _settles) =
        llmgate_dataplane::counters::Counters::memory(metrics.counters.clone());
    let gw = Gateway::new(settings, metrics, audit, counters, "test".into());
    let mut resources = Resources::default();
    for r in parse_documents(&config()).expect("config parses") {
        resources.push(r);
    }
    let compiled = compile(&resources);
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
    gw.apply(compiled.snapshot, vec![]);
    (
        llmgate_dataplane::http::api_router(Arc::clone(&gw)),
        gw,
        tmp,
    )
}

async fn app() -> (Router, Arc<Gateway>, tempfile::TempDir) {
    app_with(&[]).await
}

struct Resp {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn error_code(&self) -> Value {
        self.json()["error"]["code"].clone()
    }
}

async fn call(app: &Router, method: &str, path: &str, key: Option<&str>, body: &str) -> Resp {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    let req = b
        .header("x-request-id", "req-from-client")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

async fn post_chat(app: &Router, key: Option<&str>, body: &str) -> Resp {
    call(app, "POST", "/v1/chat/completions", key, body).await
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi there"}]}).to_string()
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let (app, _, _t) = app().await;
    let r = post_chat(&app, None, &chat("mock-chat")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"llmgate\"");
    assert_eq!(r.error_code(), "invalid_api_key");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = post_chat(&app, Some("sk-nope"), &chat("mock-chat")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(&app, "GET", "/v1/models", Some(""), "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Malformed")
    );
}

#[tokio::test]
async fn deny_rules_beat_allow_and_unknown_models_are_404() {
    let (app, _, _t) = app().await;
    let r = post_chat(&app, Some(BOB), &chat("mock-chat")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error_code(), "model_not_allowed");
    assert_eq!(r.json()["error"]["param"], "model");
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("mock-chat") && !msg.contains("sk-"), "{msg}");
    let r = post_chat(&app, Some(BOB), &chat("mock-cheap")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post_chat(&app, Some(ALICE), &chat("gpt-9")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "model_not_found");
}

#[tokio::test]
async fn models_lists_only_what_the_caller_may_use() {
    let (app, _, _t) = app().await;
    let ids = |r: &Resp| -> Vec<String> {
        r.json()["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| m["id"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let r = call(&app, "GET", "/v1/models", Some(ALICE), "").await;
    assert_eq!(ids(&r), vec!["mock-chat", "mock-cheap"]);
    assert_eq!(r.json()["data"][0]["object"], "model");
    let r = call(&app, "GET", "/v1/models", Some(BOB), "").await;
    assert_eq!(ids(&r), vec!["mock-cheap"]);
    let r = call(&app, "GET", "/v1/models/mock-chat", Some(BOB), "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&app, "GET", "/v1/models/mock-chat", Some(ALICE), "").await;
    assert_eq!(r.json()["id"], "mock-chat");
    assert_eq!(r.json()["owned_by"], "mock");
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_problem() {
    let (app, _, _t) = app().await;
    let k = Some(ALICE);
    let r = post_chat(&app, k, "{\"model\": ").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "invalid_json");
    let r = post_chat(&app, k, r#"{"model":"mock-chat"}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "messages");
    let r = call(
        &app,
        "POST",
        "/v1/chat/completions",
        k,
        r#"{"model":"mock-chat","messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post_chat(&app, k, "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &app,
        "POST",
        "/v1/embeddings",
        k,
        r#"{"model":"mock-chat","input":[]}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "input");
    let r = call(&app, "GET", "/v1/completions", k, "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.headers["x-request-id"], "req-from-client");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = call(&app, "GET", "/v1/chat/completions", k, "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let (app, _, _t) = app_with(&["--max-body-bytes", "256"]).await;
    let big =
        json!({"model": "mock-chat", "messages": [{"role": "user", "content": "x".repeat(300)}]});
    let r = post_chat(&app, Some(ALICE), &big.to_string()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_code(), "request_too_large");
}

#[tokio::test]
async fn mock_chat_stream_and_embeddings() {
    let (app, gw, tmp) = app().await;
    let r = post_chat(&app, Some(ALICE), &chat("mock-chat")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-request-id"], "req-from-client");
    assert_eq!(r.headers["x-llmgate-model"], "mock-chat");
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "one two three");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let body = json!({"model": "mock-chat", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let r = post_chat(&app, Some(ALICE), &body.to_string()).await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(!text.contains("usage"), "{text}");
    let mut body = body;
    body["stream_options"] = json!({"include_usage": true});
    let r = post_chat(&app, Some(ALICE), &body.to_string()).await;
    assert!(String::from_utf8_lossy(&r.body).contains("\"completion_tokens\":3"));

    let r = call(
        &app,
        "POST",
        "/v1/embeddings",
        Some(ALICE),
        r#"{"model":"mock-cheap","input":["a","b"],"encoding_format":"base64"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["data"][1]["embedding"].is_string());

    // The metrics saw it all, and the audit log has one record per request.
    let metrics = gw.metrics.encode();
    assert!(
        metrics.contains(r#"llmgate_requests_total{model="mock-chat",status="200",reason="ok"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"llmgate_tokens_total{model="mock-chat",kind="completion"} 9"#));
    let path = tmp.path().join("audit.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let lines = std::fs::read_to_string(&path).unwrap_or_default();
        if lines.lines().count() == 4 {
            let first: Value =
                serde_json::from_str(lines.lines().next().unwrap_or("")).unwrap_or_default();
            assert_eq!(first["request_id"], "req-from-client");
            assert_eq!(
                first["cost_usd"],
                json!((6.0 * 1.0 + 3.0 * 2.0) / 1e6),
                "6 prompt tokens (8 chars / 4 + 4), 3 completion"
            );
            // The cost metric is the sum of the records' micros, printed without float noise.
            let micros: u64 = lines
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r["model_served"] == "mock-chat")
                .filter_map(|r| r["cost_usd_micros"].as_u64())
                .sum();
            let shown = metrics
                .lines()
                .find_map(|l| l.strip_prefix(r#"llmgate_cost_usd_total{model="mock-chat"} "#))
                .expect("cost series");
            assert_eq!(
                shown.parse::<f64>().ok(),
                Some(micros as f64 / 1e6),
                "{shown}"
            );
            assert!(shown.len() <= 10, "float noise: {shown}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "audit lines: {lines}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let (app, _, _t) = app_with(&["--body-timeout", "100ms"]).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    tx.send(Ok(bytes::Bytes::from_static(b"{\"model\": \"mock-chat\",")))
        .await
        .expect("send");
    let body = Body::from_stream(tokio_stream_from(rx));
    let req = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {ALICE}"))
        .body(body)
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    drop(tx);
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
}
