//! The CRD manifests in `charts/llmgate/crds/` are generated from the Rust types; this test
//! fails when they are stale. Regenerate with:
//!
//!     UPDATE_CRDS=1 cargo test -p llmgate-crds --features kube --test crd_manifests

mod common;

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use llmgate_crds::{
    AccessPolicy, ApiKey, GatewayTokens, IdentityProvider, ModelEndpoint, TeamBudget,
};
use serde_json::Value;

fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ModelEndpoint::crd(),
        ApiKey::crd(),
        AccessPolicy::crd(),
        TeamBudget::crd(),
        IdentityProvider::crd(),
        GatewayTokens::crd(),
    ]
}

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/llmgate/crds")
}

#[test]
fn crd_yaml_is_up_to_date() {
    let update = common::rewrite_requested("UPDATE_CRDS");
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let path = chart_dir().join(format!("{name}.yaml"));
        let generated = format!(
            "# Generated from crds/src/resources/; do not edit.\n# Regenerate: UPDATE_CRDS=1 cargo test -p llmgate-crds --features kube --test crd_manifests\n{}",
            serde_yaml::to_string(&crd).expect("CRD serializes")
        );
        if update {
            std::fs::create_dir_all(chart_dir()).expect("chart dir");
            std::fs::write(&path, &generated).expect("write CRD");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale; run UPDATE_CRDS=1 cargo test -p llmgate-crds --features kube --test crd_manifests",
            path.display()
        );
    }
}

/// What the API server demands of a CRD schema that no offline tool checks: a structural
/// schema (every node typed, no references), and CEL rules whose cost it can bound (every list
/// and string a rule iterates has a maximum size).
#[test]
fn schemas_are_structural() {
    fn walk(path: &str, node: &Value, problems: &mut Vec<String>) {
        let Some(obj) = node.as_object() else {
            return;
        };
        if obj.contains_key("$ref") || obj.contains_key("definitions") || obj.contains_key("$defs")
        {
            problems.push(format!("{path}: references are not structural"));
        }
        let open = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        if !obj.contains_key("type") && !open {
            problems.push(format!("{path}: no type"));
        }
        if obj.get("type") == Some(&Value::String("array".into()))
            && !obj.contains_key("maxItems")
            && path.contains(".spec")
        {
            problems.push(format!("{path}: list without maxItems"));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(&format!("{path}.{k}"), v, problems);
            }
        }
        if let Some(items) = obj.get("items") {
            walk(&format!("{path}[]"), items, problems);
        }
        if let Some(extra) = obj.get("additionalProperties") {
            walk(&format!("{path}{{}}"), extra, problems);
        }
    }
    let mut problems = Vec::new();
    for crd in crds() {
        let v = serde_json::to_value(&crd).expect("CRD serializes");
        for (i, version) in v["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let schema = &version["schema"]["openAPIV3Schema"];
            walk(
                &format!("{}[{i}]", v["metadata"]["name"].as_str().unwrap_or("")),
                schema,
                &mut problems,
            );
            assert!(
                version["subresources"]["status"].is_object(),
                "status subresource"
            );
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
