//! Status writing and leader election against a mocked Kubernetes API server: the tests play
//! the API server's side and assert every request the operator makes.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::client::Body;
use llmgate_crds::resources::ResourceStatus;
use llmgate_crds::status::{Observed, changed_statuses};
use llmgate_crds::{CompileError, Reason};
use llmgate_operator::leader::Leader;
use llmgate_snapshot::ResourceRef;
use serde_json::{Value, json};
use tower_test::mock::{Handle, pair};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (Client, ApiHandle) {
    let (svc, handle) = pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

async fn body_json(req: Request<Body>) -> Value {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: StatusCode, body: Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
            .expect("response"),
    );
}

fn gpt_ref() -> ResourceRef {
    ResourceRef {
        kind: "ModelEndpoint".into(),
        namespace: "ai".into(),
        name: "gpt".into(),
    }
}

fn missing_secret() -> CompileError {
    CompileError {
        resource: gpt_ref(),
        field: "spec.credentials.apiKey.secretRef".into(),
        reason: Reason::MissingSecret,
        message: "secret ai/llm-keys key openai-api-key has no value".into(),
    }
}

#[tokio::test]
async fn a_dangling_secret_is_patched_as_resolved_refs_false() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        let (req, send) = api.next_request().await.expect("a status patch");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/apis/llmgate.dev/v1alpha1/namespaces/ai/modelendpoints/gpt/status"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/merge-patch+json"
        );
        let body = body_json(req).await;
        let conditions = body["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let resolved = conditions
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .expect("ResolvedRefs condition");
        assert_eq!(resolved["status"], "False");
        assert_eq!(resolved["reason"], "MissingSecret");
        assert!(
            resolved["message"]
                .as_str()
                .unwrap_or("")
                .contains("llm-keys")
        );
        assert_eq!(body["status"]["observedGeneration"], 4);
        respond(
            send,
            StatusCode::OK,
            json!({"apiVersion": "llmgate.dev/v1alpha1", "kind": "ModelEndpoint",
                "metadata": {"name": "gpt", "namespace": "ai"},
                "spec": {"model": "gpt", "provider": "openai"}, "status": body["status"]}),
        );
    });
    let changed = changed_statuses(
        [Observed {
            resource: gpt_ref(),
            generation: Some(4),
            current: None,
        }],
        &[missing_secret()],
        jiff::Timestamp::now(),
    );
    let written = llmgate_operator::status::write(&client, changed)
        .await
        .expect("patched");
    assert_eq!(written, 1);
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("API server saw the patch")
        .expect("scenario held");
}

#[tokio::test]
async fn a_status_that_already_says_it_is_not_patched() {
    let (client, mut api) = mock_client();
    let now = jiff::Timestamp::now();
    let current: ResourceStatus =
        llmgate_crds::status::desired_status(&[&missing_secret()], Some(4), None, now);
    let changed = changed_statuses(
        [Observed {
            resource: gpt_ref(),
            generation: Some(4),
            current: Some(&current),
        }],
        &[missing_secret()],
        now + jiff::SignedDuration::from_secs(30),
    );
    assert!(changed.is_empty());
    assert_eq!(
        llmgate_operator::status::write(&client, changed)
            .await
            .expect("nothing to do"),
        0
    );
    let nothing = tokio::time::timeout(Duration::from_millis(100), api.next_request()).await;
    assert!(nothing.is_err(), "no request reached the API server");
}

fn lease_json(holder: &str, renewed: jiff::Timestamp, rv: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "llmgate-operator", "namespace": "llmgate", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
            "acquireTime": renewed.to_string(), "renewTime": renewed.to_string(), "leaseTransitions": 0}})
}

fn leader(client: Client) -> Leader {
    Leader::new(
        Api::<Lease>::namespaced(client, "llmgate"),
        "llmgate-operator",
        "operator-0",
        Duration::from_secs(15),
    )
}

#[tokio::test]
async fn a_free_lease_is_created_and_held() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        let (req, send) = api.next_request().await.expect("get");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            "/apis/coordination.k8s.io/v1/namespaces/llmgate/leases/llmgate-operator"
        );
        respond(
            send,
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        );
        let (req, send) = api.next_request().await.expect("create");
        assert_eq!(req.method(), Method::POST);
        let body = body_json(req).await;
        assert_eq!(body["spec"]["holderIdentity"], "operator-0");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        respond(send, StatusCode::CREATED, body);
    });
    let l = leader(client);
    assert!(l.try_acquire(jiff::Timestamp::now()).await.expect("api ok"));
    assert!(l.is_leader());
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("scenario ran")
        .expect("scenario held");
}

#[tokio::test]
async fn a_lease_held_by_another_replica_is_left_alone_until_it_expires() {
    let (client, mut api) = mock_client();
    let now = jiff::Timestamp::now();
    let server = tokio::spawn(async move {
        // Renewed 5 s ago by someone else: not ours.
        let (_, send) = api.next_request().await.expect("get");
        respond(
            send,
            StatusCode::OK,
            lease_json("operator-1", now - jiff::SignedDuration::from_secs(5), "7"),
        );
        // Renewed 60 s ago: expired, taken over with the resourceVersion that was read.
        let (_, send) = api.next_request().await.expect("get");
        respond(
            send,
            StatusCode::OK,
            lease_json("operator-1", now - jiff::SignedDuration::from_secs(60), "8"),
        );
        let (req, send) = api.next_request().await.expect("replace");
        assert_eq!(req.method(), Method::PUT);
        let body = body_json(req).await;
        assert_eq!(body["metadata"]["resourceVersion"], "8");
        assert_eq!(body["spec"]["holderIdentity"], "operator-0");
        assert_eq!(body["spec"]["leaseTransitions"], 1);
        respond(send, StatusCode::OK, body);
    });
    let l = leader(client);
    assert!(!l.try_acquire(now).await.expect("api ok"));
    assert!(!l.is_leader());
    assert!(l.try_acquire(now).await.expect("api ok"));
    assert!(l.is_leader());
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("scenario ran")
        .expect("scenario held");
}

/// The two ways a second replica loses a race (the create or the replace answered 409), and a
/// holder's renewal, which keeps its acquire time and transition count.
#[tokio::test]
async fn a_conflict_loses_the_lease_and_a_renewal_keeps_its_history() {
    let (client, mut api) = mock_client();
    // MicroTime carries microseconds: a time with fewer digits comes back unchanged.
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("now");
    let acquired = now - jiff::SignedDuration::from_secs(600);
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "Conflict", "code": 409, "message": "the object has been modified"});
    let server = tokio::spawn(async move {
        // Ours, renewed 3 s ago: renewed in place.
        let (_, send) = api.next_request().await.expect("get");
        let mut held = lease_json("operator-0", now - jiff::SignedDuration::from_secs(3), "9");
        held["spec"]["acquireTime"] = json!(acquired.to_string());
        held["spec"]["leaseTransitions"] = json!(2);
        respond(send, StatusCode::OK, held);
        let (req, send) = api.next_request().await.expect("renew");
        assert_eq!(req.method(), Method::PUT);
        let body = body_json(req).await;
        assert_eq!(body["metadata"]["resourceVersion"], "9");
        assert_eq!(body["spec"]["holderIdentity"], "operator-0");
        assert_eq!(body["spec"]["leaseTransitions"], 2);
        let sent: jiff::Timestamp = body["spec"]["acquireTime"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("acquireTime");
        assert_eq!(sent, acquired);
        let renewed: jiff::Timestamp = body["spec"]["renewTime"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("renewTime");
        assert_eq!(renewed, now);
        respond(send, StatusCode::OK, body);
        // Expired meanwhile and taken by another replica first: our replace conflicts.
        let (_, send) = api.next_request().await.expect("get");
        respond(
            send,
            StatusCode::OK,
            lease_json(
                "operator-1",
                now - jiff::SignedDuration::from_secs(60),
                "10",
            ),
        );
        let (req, send) = api.next_request().await.expect("replace");
        assert_eq!(req.method(), Method::PUT);
        respond(send, StatusCode::CONFLICT, conflict.clone());
        // Deleted, and another replica created it first: our create conflicts.
        let (_, send) = api.next_request().await.expect("get");
        respond(
            send,
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        );
        let (req, send) = api.next_request().await.expect("create");
        assert_eq!(req.method(), Method::POST);
        respond(send, StatusCode::CONFLICT, conflict);
    });
    let l = leader(client);
    assert!(l.try_acquire(now).await.expect("api ok"), "renewed");
    assert!(l.is_leader());
    assert!(!l.try_acquire(now).await.expect("a conflict is an answer"));
    assert!(!l.is_leader(), "a lost replace steps down");
    assert!(!l.try_acquire(now).await.expect("a conflict is an answer"));
    assert!(!l.is_leader());
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("scenario ran")
        .expect("scenario held");
}
