//! Builders and golden files for unit tests.

use std::path::PathBuf;

use llmgate_snapshot::{Endpoint, Failover, Pricing, Provider, ResourceRef, Timeouts};

pub fn endpoint(model: &str, upstream: &str) -> Endpoint {
    Endpoint {
        model: model.into(),
        source: ResourceRef {
            kind: "ModelEndpoint".into(),
            namespace: "default".into(),
            name: model.into(),
        },
        provider: Provider::OpenAiCompatible,
        upstream_model: upstream.into(),
        replicas: vec![],
        api_key: None,
        entra: None,
        pricing: Pricing::default(),
        timeouts: Timeouts::default(),
        failover: Failover::default(),
        labels: Default::default(),
        max_output_tokens: 4096,
        owned_by: "test".into(),
        created: 0,
    }
}

/// Whether `var` asks to rewrite the expected file; never in CI, where a rewrite would make the
/// comparison pass whatever changed.
fn rewrite_requested(var: &str) -> bool {
    let set = std::env::var_os(var).is_some();
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !(set && ci),
        "{var} is set in CI: expected files are compared there, never rewritten"
    );
    set
}

/// Compares `generated` with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites the file.
pub fn golden(name: &str, generated: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if rewrite_requested("UPDATE_GOLDEN") {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("create golden dir");
        std::fs::write(&path, generated).expect("write golden file");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    pretty_assertions::assert_eq!(
        committed,
        generated,
        "{} changed; if intended: UPDATE_GOLDEN=1 cargo test -p llmgate-dataplane --lib",
        path.display()
    );
}
