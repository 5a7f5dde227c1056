//! Every llmgate object under `config/` is checked against the generated CRDs offline, the way
//! the API server would check it on `kubectl apply`: the OpenAPI schema (types, enums, patterns,
//! sizes, unknown fields) and the CEL rules (evaluated by kube's client-side CEL).

use std::path::Path;

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use llmgate_crds::{
    AccessPolicy, ApiKey, GatewayTokens, IdentityProvider, ModelEndpoint, TeamBudget,
};
use serde::Deserialize;
use serde_json::Value;

fn schema_for(kind: &str) -> Option<Value> {
    let crd = match kind {
        "ModelEndpoint" => ModelEndpoint::crd(),
        "ApiKey" => ApiKey::crd(),
        "AccessPolicy" => AccessPolicy::crd(),
        "TeamBudget" => TeamBudget::crd(),
        "IdentityProvider" => IdentityProvider::crd(),
        "GatewayTokens" => GatewayTokens::crd(),
        _ => return None,
    };
    let v = serde_json::to_value(&crd).ok()?;
    Some(v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone())
}

/// The API server's structural checks that matter for examples. Unknown fields are errors here
/// (the API server would prune them silently, which is worse: a typo'd setting just vanishes).
fn check_schema(path: &str, schema: &Value, value: &Value, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: expected {ty}, got {value}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Some(s) = value.as_str() {
        if let Some(p) = schema["pattern"].as_str() {
            let re = regex::Regex::new(p).expect("schema pattern is a valid regex");
            if !re.is_match(s) {
                errors.push(format!("{path}: {s:?} does not match {p}"));
            }
        }
        let n = s.chars().count() as u64;
        if schema["maxLength"].as_u64().is_some_and(|m| n > m)
            || schema["minLength"].as_u64().is_some_and(|m| n < m)
        {
            errors.push(format!("{path}: length {n} is out of bounds"));
        }
    }
    if let Some(n) = value.as_f64()
        && (schema["minimum"].as_f64().is_some_and(|m| n < m)
            || schema["maximum"].as_f64().is_some_and(|m| n > m))
    {
        errors.push(format!("{path}: {n} is out of range"));
    }
    if let Some(items) = value.as_array() {
        let n = items.len() as u64;
        if schema["maxItems"].as_u64().is_some_and(|m| n > m)
            || schema["minItems"].as_u64().is_some_and(|m| n < m)
        {
            errors.push(format!("{path}: {n} items is out of bounds"));
        }
        for (i, item) in items.iter().enumerate() {
            check_schema(&format!("{path}[{i}]"), &schema["items"], item, errors);
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema["properties"].as_object();
        for req in schema["required"].as_array().into_iter().flatten() {
            if let Some(r) = req.as_str()
                && !obj.contains_key(r)
            {
                errors.push(format!("{path}.{r}: required"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => check_schema(&format!("{path}.{k}"), sub, v, errors),
                None if schema["additionalProperties"].is_object() => check_schema(
                    &format!("{path}.{k}"),
                    &schema["additionalProperties"],
                    v,
                    errors,
                ),
                None if path.is_empty()
                    && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") => {}
                None if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) => {}
                None => errors.push(format!("{path}.{k}: unknown field")),
            }
        }
    }
}

/// Problems with one object: schema first, then CEL.
fn problems(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap_or("");
    let Some(schema) = schema_for(kind) else {
        return vec![format!("unknown kind {kind}")];
    };
    let mut errors = Vec::new();
    check_schema("", &schema, object, &mut errors);
    if let Err(e) = Validator::new().validate(&schema, object, None) {
        errors.extend(
            e.into_vec()
                .into_iter()
                .map(|e| format!("{}: {}", e.field_path, e.message)),
        );
    }
    errors
}

#[test]
fn every_example_in_config_passes_the_crd_schemas_and_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let files = llmgate_crds::files::read_dir(&root).expect("config/ is readable");
    let mut checked = 0;
    let mut failures = Vec::new();
    for (file, text) in files {
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = Value::deserialize(doc).expect("valid YAML");
            if !v["apiVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("llmgate.dev/")
            {
                continue;
            }
            checked += 1;
            for p in problems(&v) {
                failures.push(format!(
                    "{}: {} {}: {p}",
                    file, v["kind"], v["metadata"]["name"]
                ));
            }
        }
    }
    assert!(checked >= 6, "only {checked} objects found under config/");
    assert!(failures.is_empty(), "{failures:#?}");
}

fn obj(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("valid YAML")
}

#[test]
fn the_rules_refuse_what_compile_would_refuse() {
    let cases = [
        (
            "kind: ModelEndpoint\nspec: {model: m, provider: mock, replicas: [{url: 'http://x/v1'}]}",
            "takes no replicas",
        ),
        (
            "kind: ModelEndpoint\nspec: {model: m, provider: openai-compatible}",
            "at least one replica",
        ),
        (
            "kind: ModelEndpoint\nspec: {model: m, provider: openai}",
            "needs credentials",
        ),
        (
            "kind: ModelEndpoint\nspec: {model: m, provider: openai-compatible, replicas: [{url: 'http://x/v1'}], mock: {}}",
            "only valid with provider: mock",
        ),
        (
            "kind: ModelEndpoint\nspec: {model: m, provider: gemini}",
            "is not one of",
        ),
        (
            "kind: ModelEndpoint\nspec: {model: m, provider: mock, maxTokens: 5}",
            "unknown field",
        ),
        (
            "kind: ModelEndpoint\nspec: {model: m, provider: mock, timeouts: {connect: 5 seconds}}",
            "does not match",
        ),
        (
            "kind: ModelEndpoint\nspec: {model: 'has space', provider: mock}",
            "does not match",
        ),
        (
            "kind: ApiKey\nspec: {user: a, serviceAccount: b, sha256: 528cefacbb803dce597f65354585f8f725f136ea970d56276a8e5e3d28d821a0}",
            "exactly one of user, serviceAccount",
        ),
        (
            "kind: ApiKey\nspec: {user: a}",
            "exactly one of sha256, secretRef",
        ),
        (
            "kind: ApiKey\nspec: {user: a, sha256: abc}",
            "does not match",
        ),
        (
            "kind: AccessPolicy\nspec: {rules: [{subjects: [{user: a, team: t}], models: ['*']}]}",
            "exactly one of user, serviceAccount, team",
        ),
        (
            "kind: AccessPolicy\nspec: {rules: [{subjects: [{team: t}]}]}",
            "needs models or a modelSelector",
        ),
        (
            "kind: AccessPolicy\nspec: {rules: []}",
            "needs rules or rateLimits",
        ),
        (
            "kind: AccessPolicy\nspec: {rateLimits: [{name: a, window: minute}]}",
            "set requests, tokens or both",
        ),
        (
            "kind: AccessPolicy\nspec: {rateLimits: [{name: a, window: week, requests: 1}]}",
            "not one of",
        ),
        (
            "kind: TeamBudget\nspec: {team: t, amountUsd: 10, period: day, fallback: [m], clampMaxTokens: true}",
            "clampMaxTokens or fallback",
        ),
        (
            "kind: TeamBudget\nspec: {team: t, amountUsd: -1, period: day}",
            "out of range",
        ),
    ];
    for (yaml, expected) in cases {
        let text = format!("apiVersion: llmgate.dev/v1alpha1\nmetadata: {{name: x}}\n{yaml}");
        let found = problems(&obj(&text));
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{yaml}\nexpected a problem containing {expected:?}, got {found:#?}"
        );
    }
}
