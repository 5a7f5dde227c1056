//! YAML text → typed resources. Errors name the document and the field, so a broken edit can be
//! reported as "file, document, field: what is wrong".

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::object::Object;
use crate::resources::{
    AccessPolicySpec, ApiKeySpec, GatewayTokensSpec, IdentityProviderSpec, ModelEndpointSpec,
    TeamBudgetSpec,
};

/// One llmgate resource of any kind.
// Parsed once per configuration change, never on a request path: size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Resource {
    ModelEndpoint(Object<ModelEndpointSpec>),
    AccessPolicy(Object<AccessPolicySpec>),
    ApiKey(Object<ApiKeySpec>),
    TeamBudget(Object<TeamBudgetSpec>),
    IdentityProvider(Object<IdentityProviderSpec>),
    GatewayTokens(Object<GatewayTokensSpec>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {document}{}: {field}{}{message}", .resource.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(), if .field.is_empty() { "" } else { ": " })]
pub struct ParseError {
    /// 1-based index of the YAML document in its file.
    pub document: usize,
    /// `Kind namespace/name` when it could be read.
    pub resource: Option<String>,
    /// Path of the offending field, e.g. `spec.replicas[0].url`; empty for syntax errors.
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<HeaderMeta>,
}

#[derive(Deserialize)]
struct HeaderMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// Parses every document of a multi-document YAML text. Documents of other API groups (a
/// ConfigMap next to the llmgate resources in a GitOps folder) are skipped; empty documents too.
/// Stops at the first syntax error, since nothing after it can be trusted.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ParseError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ParseError {
            document,
            resource: None,
            field: String::new(),
            message: format!("invalid YAML: {e}"),
        })?;
        if value.is_null() {
            continue;
        }
        let header: Header = serde_yaml::from_value(value.clone()).map_err(|e| ParseError {
            document,
            resource: None,
            field: String::new(),
            message: format!("not a Kubernetes object: {e}"),
        })?;
        let api_version = header.api_version.unwrap_or_default();
        let Some((group, version)) = api_version.split_once('/') else {
            continue;
        };
        if group != crate::GROUP {
            continue;
        }
        let kind = header.kind.unwrap_or_default();
        let (name, namespace) = header
            .metadata
            .map(|m| (m.name, m.namespace))
            .unwrap_or_default();
        let label = format!(
            "{kind} {}/{}",
            namespace.as_deref().unwrap_or("default"),
            name.as_deref().unwrap_or("<unnamed>")
        );
        let fail = |field: &str, message: String| ParseError {
            document,
            resource: Some(label.clone()),
            field: field.to_string(),
            message,
        };
        if version != crate::VERSION {
            return Err(fail(
                "apiVersion",
                format!(
                    "unsupported version {version:?}; this llmgate serves {}/{}",
                    crate::GROUP,
                    crate::VERSION
                ),
            ));
        }
        if name.as_deref().is_none_or(str::is_empty) {
            return Err(fail("metadata.name", "missing field `name`".into()));
        }
        let resource = match kind.as_str() {
            "ModelEndpoint" => Resource::ModelEndpoint(typed(value, &fail)?),
            "AccessPolicy" => Resource::AccessPolicy(typed(value, &fail)?),
            "ApiKey" => Resource::ApiKey(typed(value, &fail)?),
            "TeamBudget" => Resource::TeamBudget(typed(value, &fail)?),
            "IdentityProvider" => Resource::IdentityProvider(typed(value, &fail)?),
            "GatewayTokens" => Resource::GatewayTokens(typed(value, &fail)?),
            other => {
                return Err(fail(
                    "kind",
                    format!(
                        "unknown kind {other:?}; expected ModelEndpoint, AccessPolicy, ApiKey, TeamBudget, IdentityProvider or GatewayTokens"
                    ),
                ));
            }
        };
        out.push(resource);
    }
    Ok(out)
}

fn typed<T: DeserializeOwned>(
    value: serde_yaml::Value,
    fail: &dyn Fn(&str, String) -> ParseError,
) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        fail(&field, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ProviderKind;

    #[test]
    fn reads_multi_document_files_and_skips_foreign_objects() {
        let text = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: m, namespace: ai}
spec:
  model: mock-1
  provider: mock
---
---
apiVersion: llmgate.dev/v1alpha1
kind: ApiKey
metadata: {name: k}
spec: {user: alice, sha256: "00"}
"#;
        let docs = parse_documents(text).expect("parses");
        assert_eq!(docs.len(), 2);
        let Resource::ModelEndpoint(me) = &docs[0] else {
            panic!("first is a ModelEndpoint: {docs:?}")
        };
        assert_eq!(me.spec.provider, ProviderKind::Mock);
        assert_eq!(me.metadata.namespace.as_deref(), Some("ai"));
        assert!(matches!(docs[1], Resource::ApiKey(_)));
    }

    #[test]
    fn names_the_field_of_a_typo() {
        let text = r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: m}
spec:
  model: mock-1
  provider: mock
  replicas:
    - urll: http://x
"#;
        let err = parse_documents(text).unwrap_err();
        assert_eq!(err.document, 1);
        assert_eq!(err.field, "spec.replicas[0].urll");
        assert!(err.message.contains("unknown field `urll`"), "{err}");
        assert!(err.to_string().contains("ModelEndpoint default/m"), "{err}");
    }

    #[test]
    fn bad_enum_and_bad_syntax_are_errors() {
        let bad_enum = "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: m}\nspec: {model: x, provider: gemini}\n";
        let err = parse_documents(bad_enum).unwrap_err();
        assert_eq!(err.field, "spec.provider");
        let bad_yaml = "apiVersion: llmgate.dev/v1alpha1\nkind: [unclosed\n";
        let err = parse_documents(bad_yaml).unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{err}");
        let unknown_kind = "apiVersion: llmgate.dev/v1alpha1\nkind: Budget\nmetadata: {name: b}\n";
        assert_eq!(parse_documents(unknown_kind).unwrap_err().field, "kind");
        let no_name = "apiVersion: llmgate.dev/v1alpha1\nkind: ApiKey\nmetadata: {}\nspec: {}\n";
        assert_eq!(parse_documents(no_name).unwrap_err().field, "metadata.name");
    }
}
