//! `compile`: these resources in, this snapshot and these errors out.

use llmgate_crds::{Reason, Resources, SecretKeyRef, compile, parse_documents};
use llmgate_snapshot::{Effect, ModelSelector, Principal, Provider, Secret, Subject};

fn resources(yaml: &str) -> Resources {
    let mut r = Resources::default();
    for doc in parse_documents(yaml).expect("test YAML parses") {
        r.push(doc);
    }
    r
}

fn with_secret(mut r: Resources, ns: &str, name: &str, key: &str, value: &str) -> Resources {
    r.secrets.insert(
        SecretKeyRef {
            namespace: ns.into(),
            name: name.into(),
            key: key.into(),
        },
        Secret::new(value),
    );
    r
}

const BASE: &str = r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: llama, namespace: ai, labels: {tier: cheap}}
spec:
  model: llama-3
  provider: openai-compatible
  upstreamModel: meta-llama/Llama-3-8B
  replicas:
    - url: http://10.0.0.1:8000/v1/
    - url: http://10.0.0.2:8000/v1
      name: b
  pricing: {inputPerMillion: 0.2, outputPerMillion: 0.4}
  timeouts: {connect: 500ms, firstByte: 10s, total: 2m}
  failover: {maxAttempts: 2, ejectAfterFailures: 1, ejectFor: 1s}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: gpt, namespace: ai}
spec:
  model: gpt-4o
  provider: openai
  credentials: {apiKey: {secretRef: {name: openai, key: api-key}}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ApiKey
metadata: {name: alice, namespace: ai}
spec: {user: alice, team: ml, secretRef: {name: keys, key: alice}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ApiKey
metadata: {name: ci, namespace: ai}
spec: {serviceAccount: ci, sha256: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: ml, namespace: ai}
spec:
  rules:
    - name: ml-all
      subjects: [{team: ml}, {apiKey: ci}]
      models: ["gpt-*", llama-3]
    - effect: Deny
      subjects: [{serviceAccount: ci}]
      modelSelector: {matchLabels: {tier: cheap}}
"#;

#[test]
fn compiles_a_complete_configuration() {
    let r = with_secret(resources(BASE), "ai", "openai", "api-key", "sk-up");
    let r = with_secret(r, "ai", "keys", "alice", "sk-alice");
    let c = compile(&r);
    assert_eq!(c.errors, vec![]);
    let s = &c.snapshot;
    assert_eq!(s.endpoints.len(), 2);
    let gpt = &s.endpoints[0];
    assert_eq!(gpt.model, "gpt-4o");
    assert_eq!(gpt.provider, Provider::OpenAi);
    assert_eq!(gpt.replicas[0].url, "https://api.openai.com/v1");
    assert_eq!(gpt.api_key.as_ref().map(|k| k.expose()), Some("sk-up"));
    let llama = &s.endpoints[1];
    assert_eq!(llama.upstream_model, "meta-llama/Llama-3-8B");
    assert_eq!(llama.replicas[0].url, "http://10.0.0.1:8000/v1");
    assert_eq!(llama.replicas[0].name, "10.0.0.1:8000");
    assert_eq!(llama.replicas[1].name, "b");
    assert_eq!(llama.timeouts.connect_ms, 500);
    assert_eq!(llama.timeouts.total_ms, 120_000);
    assert_eq!(llama.failover.max_attempts, 2);
    assert_eq!(llama.failover.eject_base_ms, 1_000);
    assert_eq!(s.api_keys.len(), 2);
    let alice = s
        .api_keys
        .iter()
        .find(|k| k.source.name == "alice")
        .expect("alice");
    assert_eq!(alice.sha256, llmgate_crds::compile::sha256_hex("sk-alice"));
    assert_eq!(alice.principal, Principal::User("alice".into()));
    let ci = s
        .api_keys
        .iter()
        .find(|k| k.source.name == "ci")
        .expect("ci");
    assert_eq!(
        ci.sha256,
        "a".repeat(64),
        "hashes are normalised to lowercase"
    );
    let rules = &s.policies[0].rules;
    assert_eq!(rules[0].name, "ml-all");
    assert_eq!(rules[0].subjects[1], Subject::ApiKey("ai/ci".into()));
    assert_eq!(rules[0].models[0], ModelSelector::Glob("gpt-*".into()));
    assert_eq!(rules[0].models[1], ModelSelector::Name("llama-3".into()));
    assert_eq!(rules[1].name, "rule-1");
    assert_eq!(rules[1].effect, Effect::Deny);
}

#[test]
fn same_input_same_version_and_any_change_moves_it() {
    let r = with_secret(resources(BASE), "ai", "openai", "api-key", "sk-up");
    let a = compile(&r).snapshot.version;
    assert_eq!(a, compile(&r).snapshot.version);
    let mut r2 = r.clone();
    r2.model_endpoints.reverse();
    assert_eq!(
        a,
        compile(&r2).snapshot.version,
        "input order does not matter"
    );
    let r3 = with_secret(r, "ai", "openai", "api-key", "sk-rotated");
    assert_ne!(
        a,
        compile(&r3).snapshot.version,
        "a rotated secret is a new version"
    );
}

#[test]
fn missing_secrets_leave_out_only_their_resources() {
    let c = compile(&resources(BASE));
    let reasons: Vec<_> = c
        .errors
        .iter()
        .map(|e| (e.resource.name.as_str(), e.field.as_str(), e.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("alice", "spec.secretRef", Reason::MissingSecret),
            (
                "gpt",
                "spec.credentials.apiKey.secretRef",
                Reason::MissingSecret
            ),
        ]
    );
    assert!(c.errors[1].message.contains("secret ai/openai key api-key"));
    assert_eq!(c.snapshot.endpoints.len(), 1);
    assert_eq!(c.snapshot.endpoints[0].model, "llama-3");
    // the policy still names gpt-4o: declared, just not servable right now
    assert_eq!(c.snapshot.policies[0].rules.len(), 2);
}

#[test]
fn dangling_references_and_invalid_fields_are_reported_where_they_are() {
    let yaml = r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: a}
spec:
  model: m
  provider: openai-compatible
  replicas: [{url: "ftp://x/v1"}, {url: "http://ok:1/v1"}]
  timeouts: {connect: "5"}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: b}
spec: {model: m2, provider: mock, mock: {chunkWords: 0}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: c}
spec: {model: m2, provider: mock}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p}
spec:
  rules:
    - subjects: [{apiKey: nobody}, {team: t}]
      models: [gpt-5, m2]
    - effect: Deny
      subjects: [{user: u, team: t}]
      models: ["*"]
"#;
    let c = compile(&resources(yaml));
    let got: Vec<_> = c
        .errors
        .iter()
        .map(|e| format!("{} {} {}", e.resource.name, e.field, e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            "p spec.rules[0].models[0] DanglingRef",
            "p spec.rules[0].subjects[0].apiKey DanglingRef",
            "p spec.rules[1].subjects[0] Invalid",
            "a spec.replicas[0].url Invalid",
            "a spec.timeouts.connect Invalid",
            "b spec.mock.chunkWords Invalid",
        ]
    );
    // b is invalid, so c's claim on m2 is the one served: no conflict
    assert_eq!(c.snapshot.endpoints.len(), 1);
    assert_eq!(c.snapshot.endpoints[0].source.name, "c");
    // rule 0 survives with what is valid; rule 1 has no valid subject left
    let rules = &c.snapshot.policies[0].rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].subjects, vec![Subject::Team("t".into())]);
    assert_eq!(rules[0].models, vec![ModelSelector::Name("m2".into())]);
}

#[test]
fn two_endpoints_claiming_one_model_conflict() {
    let yaml = r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: a}
spec: {model: m, provider: mock}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: b}
spec: {model: m, provider: mock}
"#;
    let c = compile(&resources(yaml));
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].reason, Reason::Conflict);
    assert_eq!(c.errors[0].resource.name, "b");
    assert!(c.errors[0].message.contains("ModelEndpoint default/a"));
    assert_eq!(c.snapshot.endpoints[0].source.name, "a");
}

#[test]
fn service_replicas_become_one_replica_per_ready_endpoint() {
    use llmgate_crds::{ServiceBackend, ServiceKey};
    use std::collections::BTreeMap;
    let yaml = r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: llama, namespace: ai}
spec:
  model: llama
  provider: openai-compatible
  replicas:
    - service: {name: vllm, port: http}
    - url: http://static:8000/v1
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: gone, namespace: ai}
spec:
  model: gone
  provider: openai-compatible
  replicas: [{service: {name: nothing}}]
"#;
    let backend = |ip: &str, pod: &str| ServiceBackend {
        address: ip.into(),
        ports: BTreeMap::from([("http".to_string(), 8000), ("metrics".to_string(), 9000)]),
        target: Some(pod.into()),
    };
    let mut r = resources(yaml);
    r.services = Some(BTreeMap::from([(
        ServiceKey {
            namespace: "ai".into(),
            name: "vllm".into(),
        },
        vec![backend("10.1.0.7", "vllm-0"), backend("fd00::8", "vllm-1")],
    )]));
    let c = compile(&r);
    let llama = &c.snapshot.endpoints[0];
    let got: Vec<(&str, &str)> = llama
        .replicas
        .iter()
        .map(|r| (r.name.as_str(), r.url.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("vllm/vllm-0", "http://10.1.0.7:8000/v1"),
            ("vllm/vllm-1", "http://[fd00::8]:8000/v1"),
            ("static:8000", "http://static:8000/v1"),
        ]
    );
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].resource.name, "gone");
    assert_eq!(c.errors[0].reason, Reason::DanglingRef);
    assert!(
        c.errors[0]
            .message
            .contains("service ai/nothing has no ready endpoints")
    );

    // From files there are no Services to resolve: say so.
    r.services = None;
    let c = compile(&r);
    assert!(
        c.errors
            .iter()
            .any(|e| e.field == "spec.replicas[0].service" && e.reason == Reason::Invalid)
    );
}

/// The whole compiled snapshot of BASE, pinned in `tests/golden/base.snapshot.json`: any change
/// in what compile produces shows up in review. Regenerate with
/// `UPDATE_GOLDEN=1 cargo test -p llmgate-crds --test compile`.
#[test]
fn compiled_snapshot_matches_the_golden_file() {
    let r = with_secret(resources(BASE), "ai", "openai", "api-key", "sk-up");
    let r = with_secret(r, "ai", "keys", "alice", "sk-alice");
    let c = compile(&r);
    let generated = serde_json::to_string_pretty(&c.snapshot).expect("serializes") + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/base.snapshot.json"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &generated).expect("write golden file");
    }
    let golden = std::fs::read_to_string(path).unwrap_or_default();
    pretty_assertions::assert_eq!(
        golden,
        generated,
        "compile output changed; if intended, run UPDATE_GOLDEN=1 cargo test -p llmgate-crds --test compile"
    );
}

#[test]
fn rate_limits_and_budgets_compile_and_broken_ones_are_left_out_whole() {
    let yaml = r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: gpt-4}
spec: {model: gpt-4, provider: mock, pricing: {inputPerMillion: 30, outputPerMillion: 60}, maxOutputTokens: 8192}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: llama}
spec: {model: llama-3, provider: mock}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: limits}
spec:
  rateLimits:
    - name: per-user
      per: [user, model, user]
      window: minute
      requests: 60
      tokens: 100000
    - name: ghost
      subjects: [{apiKey: nobody}]
      window: hour
      requests: 1
    - name: per-user
      window: day
      requests: 5
---
apiVersion: llmgate.dev/v1alpha1
kind: TeamBudget
metadata: {name: eng}
spec:
  team: eng
  amountUsd: 100.5
  period: month
  timeZone: Europe/Berlin
  models: [gpt-4]
  fallback: [llama-3]
  alerts: {webhookUrl: "http://hooks.example/budget"}
---
apiVersion: llmgate.dev/v1alpha1
kind: TeamBudget
metadata: {name: broken}
spec:
  team: "*"
  amountUsd: 1
  period: day
  timeZone: Mars/Olympus
  models: ["gpt-*"]
  fallback: [gpt-4, nope]
"#;
    let c = compile(&resources(yaml));
    let got: Vec<_> = c
        .errors
        .iter()
        .map(|e| format!("{} {} {}", e.resource.name, e.field, e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            "limits spec.rateLimits[1].subjects[0].apiKey DanglingRef",
            "limits spec.rateLimits[2].name Conflict",
            "broken spec.fallback[0] Invalid",
            "broken spec.fallback[1] DanglingRef",
            "broken spec.timeZone Invalid",
        ]
    );
    let limits = &c.snapshot.rate_limits;
    assert_eq!(limits.len(), 1, "the broken limit is left out whole");
    assert_eq!(
        limits[0].per,
        vec![
            llmgate_snapshot::LimitDimension::User,
            llmgate_snapshot::LimitDimension::Model
        ]
    );
    assert_eq!(limits[0].fail_mode, llmgate_snapshot::FailMode::Open);
    assert_eq!(c.snapshot.budgets.len(), 1);
    let b = &c.snapshot.budgets[0];
    assert_eq!(b.amount_micros, 100_500_000);
    assert_eq!(b.fallback, vec!["llama-3".to_string()]);
    assert_eq!(b.alert_thresholds, vec![50, 80, 100]);
    assert_eq!(b.fail_mode, llmgate_snapshot::FailMode::Closed);
    assert_eq!(c.snapshot.endpoints[0].max_output_tokens, 8192);
    assert_eq!(c.snapshot.endpoints[1].max_output_tokens, 4096);
}
