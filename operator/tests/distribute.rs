//! The compile step and the distribution endpoints, driven in-process.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use llmgate_crds::files::{self, Problem};
use llmgate_operator::{Operator, compile};
use llmgate_snapshot::distribution::Message;
use tower::ServiceExt;

const TOKEN: &str = "t0ken";

fn config(model: &str) -> Vec<(String, String)> {
    vec![(
        "m.yaml".into(),
        format!(
            "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {{name: {model}}}\nspec: {{model: {model}, provider: mock}}\n"
        ),
    )]
}

fn operator_with(model: &str) -> Arc<Operator> {
    let op = Operator::new(TOKEN.into(), "test".into());
    assert!(compile::publish(
        &op,
        files::compile_files(&config(model), None)
    ));
    op
}

async fn first_line(op: &Arc<Operator>, query: &str, token: &str) -> (StatusCode, String) {
    let app = llmgate_operator::distribute::router(Arc::clone(op));
    let req = Request::get(format!("/v1/snapshots/watch?{query}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while !text.contains(&b'\n') {
        match body.frame().await {
            Some(Ok(f)) => text.extend_from_slice(f.data_ref().map(|d| &d[..]).unwrap_or(&[])),
            _ => break,
        }
    }
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[test]
fn only_real_changes_are_published_and_failures_keep_the_last_good_snapshot() {
    let op = operator_with("m1");
    let v1 = op.current().map(|p| p.snapshot.version.clone());
    assert!(
        !compile::publish(&op, files::compile_files(&config("m1"), None)),
        "same content, no publish"
    );
    let failed: Result<_, Vec<Problem>> =
        files::compile_files(&[("bad.yaml".into(), "kind: [\n".into())], None);
    assert!(!compile::publish(&op, failed));
    assert_eq!(op.current().map(|p| p.snapshot.version.clone()), v1);
    assert!(op.status().last_error.is_some());
    assert!(compile::publish(
        &op,
        files::compile_files(&config("m2"), None)
    ));
    assert_ne!(op.current().map(|p| p.snapshot.version.clone()), v1);
    assert!(op.status().last_error.is_none());
}

#[tokio::test]
async fn subscribers_get_the_snapshot_first_or_current_when_they_have_it() {
    let op = operator_with("m1");
    let (status, line) = first_line(&op, "node=a", TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    let msg: Message = serde_json::from_str(line.trim()).expect("a message");
    let Message::Snapshot { snapshot } = msg else {
        panic!("expected a snapshot first, got {line}");
    };
    assert_eq!(snapshot.endpoints[0].model, "m1");

    let (_, line) = first_line(&op, &format!("node=a&have={}", snapshot.version), TOKEN).await;
    assert_eq!(
        serde_json::from_str::<Message>(line.trim()).expect("a message"),
        Message::Current {
            version: snapshot.version.clone()
        }
    );
}

#[tokio::test]
async fn a_wrong_token_gets_401_and_no_snapshot() {
    let op = operator_with("m1");
    let (status, body) = first_line(&op, "node=x", "nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("snapshot"), "{body}");
    assert!(op.fleet.list().is_empty());
}
