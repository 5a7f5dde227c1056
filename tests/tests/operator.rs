//! The operator with `--source dir:` and two real data planes subscribed to it.

use std::time::{Duration, Instant};

use http::StatusCode;
use llmgate_tests::harness::{Gateway, OPERATOR_TOKEN, Operator, access_yaml};
use serde_json::{Value, json};

fn mock(name: &str) -> String {
    format!(
        "\n---\napiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {{name: {name}}}\nspec: {{model: {name}, provider: mock}}\n"
    )
}

async fn serves(gw: &Gateway, model: &str) -> bool {
    let r = gw
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    r.status == StatusCode::OK
}

async fn version(gw: &Gateway) -> String {
    gw.readyz().await["config"]["version"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Waits until every gateway serves `model`; returns how long that took.
async fn until_all_serve(gws: &[&Gateway], model: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    for gw in gws {
        while !serves(gw, model).await {
            assert!(
                start.elapsed() < limit,
                "{model} not served after {limit:?}:\n{}",
                gw.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    start.elapsed()
}

#[tokio::test]
async fn two_data_planes_follow_the_operator_and_outlive_it() {
    let mut op = Operator::start(&(access_yaml() + &mock("m1"))).await;
    let state_a = tempfile::tempdir().expect("state dir");
    let state_b = tempfile::tempdir().expect("state dir");
    let mut a = Gateway::start_subscribed(&op.url(), &op.token_file, state_a.path(), "dp-a", &[]);
    let mut b = Gateway::start_subscribed(&op.url(), &op.token_file, state_b.path(), "dp-b", &[]);
    a.wait_ready().await;
    b.wait_ready().await;
    until_all_serve(&[&a, &b], "m1", Duration::from_secs(5)).await;

    // An edit reaches both data planes within a second.
    op.write_config("m2.yaml", &mock("m2"));
    let took = until_all_serve(&[&a, &b], "m2", Duration::from_secs(1)).await;
    eprintln!("both data planes served the change after {took:?}");
    let v2 = version(&a).await;
    assert_eq!(version(&b).await, v2);
    // ... and the operator knows who runs what.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let fleet = op.admin_json("/dataplanes").await.unwrap_or_default();
        let nodes = fleet["dataplanes"].as_array().cloned().unwrap_or_default();
        let on_v2 = nodes
            .iter()
            .filter(|d| {
                d["version"] == v2.as_str()
                    && d["connected"] == true
                    && d["applied"] == true
                    && d["health"]["ready"] == true
                    && d["health"]["models"] == 2
            })
            .count();
        if on_v2 == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "fleet view: {fleet}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A broken edit: reported by the operator, both keep serving the last good snapshot.
    op.write_config("broken.yaml", "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: x}\nspec: {model: x, provider: nope}\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = op.admin_json("/readyz").await.unwrap_or_default();
        if !ready["source"]["last_error"].is_null() {
            assert_eq!(ready["source"]["last_error"][0]["field"], "spec.provider");
            break;
        }
        assert!(Instant::now() < deadline, "rejection not reported: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(version(&a).await, v2);
    assert!(serves(&a, "m2").await && serves(&b, "m2").await);

    // The operator goes away: both notice, and keep serving.
    op.stop();
    until_control_plane(&a, "reconnecting").await;
    until_control_plane(&b, "reconnecting").await;
    assert!(serves(&a, "m1").await && serves(&b, "m2").await);
    assert_eq!(version(&a).await, v2);

    // A data plane restarted while the operator is down serves the snapshot it kept.
    drop(a);
    let mut a = Gateway::start_subscribed(&op.url(), &op.token_file, state_a.path(), "dp-a", &[]);
    a.wait_ready().await;
    assert_eq!(version(&a).await, v2);
    assert!(serves(&a, "m2").await);
    // Its first attempt to reach the operator may still be under way.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = a.readyz().await;
        let state = ready["config"]["control_plane"].as_str().unwrap_or("");
        if state.starts_with("reconnecting") {
            break;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The operator returns (the broken file fixed meanwhile): both resubscribe and converge.
    std::fs::remove_file(op.config_dir.join("broken.yaml")).expect("remove broken file");
    op.write_config("m3.yaml", &mock("m3"));
    op.restart().await;
    until_all_serve(&[&a, &b], "m3", Duration::from_secs(15)).await;
    assert_eq!(version(&a).await, version(&b).await);
    assert_eq!(a.readyz().await["config"]["control_plane"], "subscribed");
}

#[tokio::test]
async fn a_data_plane_with_a_wrong_token_is_refused_and_gets_nothing() {
    let op = Operator::start(&(access_yaml() + &mock("m1"))).await;
    let dir = tempfile::tempdir().expect("dir");
    let bad_token = dir.path().join("token");
    std::fs::write(&bad_token, format!("{OPERATOR_TOKEN}-wrong")).expect("token");
    let gw = Gateway::start_subscribed(&op.url(), &bad_token, dir.path(), "intruder", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((status, body)) = gw.admin_get("/readyz").await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if v["config"]["control_plane"]
                .as_str()
                .unwrap_or("")
                .contains("refused")
            {
                assert_eq!(
                    status,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no snapshot, not ready"
                );
                break;
            }
        }
        assert!(Instant::now() < deadline, "never refused:\n{}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!serves(&gw, "m1").await, "nothing was received");
    assert!(!dir.path().join("snapshot.json").exists());
    let fleet = op.admin_json("/dataplanes").await.unwrap_or_default();
    assert_eq!(fleet["dataplanes"], json!([]), "{fleet}");
    assert!(
        op.stderr()
            .contains("refused a data plane without a valid token")
    );
}

#[tokio::test]
async fn snapshots_travel_over_tls_when_the_operator_has_a_certificate() {
    let op = Operator::start_tls(&(access_yaml() + &mock("m1"))).await;
    let ca = op.ca_file.clone().expect("TLS operator has a certificate");
    let ca = ca.display().to_string();
    let state = tempfile::tempdir().expect("state dir");
    let mut gw = Gateway::start_subscribed(
        &op.url(),
        &op.token_file,
        state.path(),
        "dp-tls",
        &["--control-plane-ca", &ca],
    );
    gw.wait_ready().await;
    assert!(serves(&gw, "m1").await);

    // Plain HTTP to the TLS port gets nothing; neither does a data plane that does not trust
    // the certificate.
    let plain = op.url().replace("https://", "http://");
    let untrusting_state = tempfile::tempdir().expect("state dir");
    let plain_state = tempfile::tempdir().expect("state dir");
    let other =
        Gateway::start_subscribed(&plain, &op.token_file, plain_state.path(), "dp-plain", &[]);
    let untrusting = Gateway::start_subscribed(
        &op.url(),
        &op.token_file,
        untrusting_state.path(),
        "dp-untrusting",
        &[],
    );
    // Each has tried and failed (not merely not yet connected): then it is not ready and has
    // kept nothing.
    for (g, dir) in [(&other, &plain_state), (&untrusting, &untrusting_state)] {
        let state = until_control_plane(g, "reconnecting: ").await;
        let (status, _) = g.admin_get("/readyz").await.expect("readyz");
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{state}: {}",
            g.stderr()
        );
        assert!(!dir.path().join("snapshot.json").exists());
    }
}

/// Waits until `/readyz` reports a control-plane state starting with `prefix`; returns it.
async fn until_control_plane(gw: &Gateway, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The process may not be listening yet.
        let ready: Value = match gw.admin_get("/readyz").await {
            Ok((_, body)) => serde_json::from_str(&body).unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let state = ready["config"]["control_plane"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if state.starts_with(prefix) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "control plane {state:?}, not {prefix:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the gateway's log holds `text`.
async fn until_logged(gw: &Gateway, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.stderr();
        if log.contains(text) {
            return log;
        }
        assert!(Instant::now() < deadline, "never logged {text:?}:\n{log}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_kept_snapshot_is_private_and_one_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    let op = Operator::start(&(access_yaml() + &mock("m1"))).await;
    let tmp = tempfile::tempdir().expect("dir");
    let state = tmp.path().join("state");
    let kept = state.join("snapshot.json");
    let mut gw = Gateway::start_subscribed(&op.url(), &op.token_file, &state, "dp-a", &[]);
    gw.wait_ready().await;
    until_all_serve(&[&gw], "m1", Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !kept.exists() {
        assert!(Instant::now() < deadline, "nothing kept:\n{}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&kept), 0o600, "kept snapshot");
    // The operator is on loopback: nothing to warn about.
    assert!(!gw.stderr().contains("plain http"), "{}", gw.stderr());
    drop(gw);

    // Someone opened the kept file to every user: the data plane refuses to start on it.
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let mut gw = Gateway::start_subscribed(&op.url(), &op.token_file, &state, "dp-a", &[]);
    let log = until_logged(&gw, "can be written by other users").await;
    assert!(log.contains("chmod 600"), "{log}");
    let status = gw.exited_within(Duration::from_secs(5)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
}

#[tokio::test]
async fn a_plain_http_operator_beyond_loopback_is_warned_about() {
    let tmp = tempfile::tempdir().expect("dir");
    let token = tmp.path().join("token");
    std::fs::write(&token, OPERATOR_TOKEN).expect("token");
    let url = "http://llmgate-operator.invalid:8081";
    let gw = Gateway::start_subscribed(url, &token, &tmp.path().join("state"), "dp-a", &[]);
    let log = until_logged(&gw, "plain http on llmgate-operator.invalid").await;
    assert!(
        log.contains("WARN") && log.contains("travel in clear"),
        "{log}"
    );
}
