//! `GatewayTokens`: the short-lived JWTs llmgate issues after a browser login.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(feature = "kube")]
use super::ResourceStatus;
use super::SecretKeySelector;

/// Gateway tokens: short-lived JWTs llmgate issues after a browser login, for SDKs and CLIs
/// (`OPENAI_API_KEY=<token>`). One per installation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[cfg_attr(feature = "kube", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "llmgate.dev",
        version = "v1alpha1",
        kind = "GatewayTokens",
        plural = "gatewaytokens",
        namespaced,
        status = "ResourceStatus",
        shortname = "gwt",
        category = "llmgate",
        printcolumn = r#"{"name":"TTL","type":"string","jsonPath":".spec.ttl"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTokensSpec {
    /// HMAC keys (at least 32 bytes each). The first signs new tokens; all verify, so a new key
    /// is rolled in by putting it first and the old one is dropped once its tokens expired.
    #[schemars(length(min = 1, max = 8))]
    pub signing_keys: Vec<SigningKeySpec>,
    /// Lifetime of a token (default `12h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub ttl: Option<String>,
    /// Tokens of these callers issued before the time given are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub revoked: Vec<RevocationSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKeySpec {
    /// The `kid` of the tokens it signs.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub id: String,
    pub secret_ref: SecretKeySelector,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.user) != has(self.serviceAccount)", "message": "set exactly one of user, serviceAccount"}]))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevocationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account: Option<String>,
    /// RFC 3339: tokens issued before it are refused.
    pub issued_before: String,
}
