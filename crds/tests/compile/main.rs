//! `compile`: these resources in, this snapshot and these errors out.
//!
//! Tests of the whole configuration here; tests of one kind in the file named for it, as in
//! `crds/src/compile/`.

#[path = "../common/mod.rs"]
mod common;
mod identity;
mod limits_and_budgets;
mod model_endpoint;

use llmgate_crds::{Reason, Resources, SecretKeyRef, compile, parse_documents};
use llmgate_snapshot::{Effect, ModelSelector, Principal, Provider, Secret, Subject};

pub(crate) fn resources(yaml: &str) -> Resources {
    let mut r = Resources::default();
    for doc in parse_documents(yaml).expect("test YAML parses") {
        r.push(doc);
    }
    r
}

pub(crate) fn with_secret(
    mut r: Resources,
    ns: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Resources {
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
    // A value of only whitespace (an empty line in a mounted file) is no value either.
    let r = with_secret(resources(BASE), "ai", "openai", "api-key", " \n");
    let r = with_secret(r, "ai", "keys", "alice", "sk-alice");
    let c = compile(&r);
    let reasons: Vec<_> = c
        .errors
        .iter()
        .map(|e| (e.resource.name.as_str(), e.reason))
        .collect();
    assert_eq!(reasons, vec![("gpt", Reason::MissingSecret)]);
}

#[test]
fn subjects_bind_to_a_declared_identity_provider() {
    let yaml = r#"
apiVersion: llmgate.dev/v1alpha1
kind: IdentityProvider
metadata: {name: corp, namespace: ai}
spec:
  oidc: {issuer: "https://idp.example.com", audiences: [llmgate]}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: m, namespace: ai}
spec: {model: m, provider: mock}
---
apiVersion: llmgate.dev/v1alpha1
kind: ApiKey
metadata: {name: ci, namespace: ai}
spec: {user: ci, sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p, namespace: ai}
spec:
  rules:
    - name: bound
      subjects:
        - {group: admins, identityProvider: corp}
        - {user: root, identityProvider: ai/corp}
        - {group: admins, identityProvider: nowhere}
        - {apiKey: ci, identityProvider: corp}
      models: [m]
"#;
    let c = compile(&resources(yaml));
    let errors: Vec<_> = c
        .errors
        .iter()
        .map(|e| (e.field.as_str(), e.reason))
        .collect();
    assert_eq!(
        errors,
        vec![
            (
                "spec.rules[0].subjects[2].identityProvider",
                Reason::DanglingRef
            ),
            (
                "spec.rules[0].subjects[3].identityProvider",
                Reason::Invalid
            ),
        ]
    );
    let from = |s: Subject| Subject::From {
        identity_provider: "ai/corp".into(),
        subject: Box::new(s),
    };
    assert_eq!(
        c.snapshot.policies[0].rules[0].subjects,
        vec![
            from(Subject::Group("admins".into())),
            from(Subject::User("root".into()))
        ]
    );
}

#[test]
fn secret_references_that_could_name_a_path_are_refused() {
    let refs = [
        ("../outside", "api-key"),
        ("/etc", "passwd"),
        ("openai", "../../etc/passwd"),
        ("openai", "/etc/passwd"),
        ("openai", ".."),
        ("openai", "a..b"),
        ("Openai", "api-key"),
        ("openai.", "api-key"),
        ("openai", ""),
    ];
    let too_long = "k".repeat(254);
    let refs = refs.into_iter().chain([("openai", too_long.as_str())]);
    for (name, key) in refs {
        let yaml = format!(
            r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: gpt, namespace: ai}}
spec:
  model: gpt-4o
  provider: openai
  credentials: {{apiKey: {{secretRef: {{name: "{name}", key: "{key}"}}}}}}
"#
        );
        // Even with a value supplied under that reference, nothing is looked up for it.
        let r = with_secret(resources(&yaml), "ai", name, key, "sk-upstream");
        assert!(r.secret_refs().is_empty(), "{name}/{key} would be resolved");
        let c = compile(&r);
        assert_eq!(c.errors.len(), 1, "{name}/{key}: {:?}", c.errors);
        let e = &c.errors[0];
        assert_eq!(
            (e.field.as_str(), e.reason),
            ("spec.credentials.apiKey.secretRef", Reason::Invalid),
            "{name}/{key}"
        );
        assert!(
            e.message.contains(&format!(
                "{:?}",
                if e.message.starts_with("secret name") {
                    name
                } else {
                    key
                }
            )),
            "{}",
            e.message
        );
        assert!(c.snapshot.endpoints.is_empty());
    }
    // Names and keys Kubernetes allows still resolve, up to the longest key it allows.
    let longest = "k".repeat(253);
    for key in [".API_key-2.txt", longest.as_str()] {
        let ok = BASE.replace(
            "{name: openai, key: api-key}",
            &format!("{{name: team.openai-1, key: {key}}}"),
        );
        let r = with_secret(resources(&ok), "ai", "team.openai-1", key, "sk-upstream");
        assert_eq!(r.secret_refs().len(), 2);
        let c = compile(&r);
        assert!(
            c.errors.iter().all(|e| e.resource.name != "gpt"),
            "{:?}",
            c.errors
        );
    }
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
    if common::rewrite_requested("UPDATE_GOLDEN") {
        std::fs::write(path, &generated).expect("write golden file");
    }
    let golden = std::fs::read_to_string(path).unwrap_or_default();
    pretty_assertions::assert_eq!(
        golden,
        generated,
        "compile output changed; if intended, run UPDATE_GOLDEN=1 cargo test -p llmgate-crds --test compile"
    );
}
