//! `IdentityProvider`: an OIDC or SAML provider whose callers llmgate accepts, and how their
//! claims become a user, groups and a team.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(feature = "kube")]
use super::ResourceStatus;
use super::SecretValueRef;

/// An identity provider whose tokens callers may present instead of an API key, and how its
/// claims become a caller: user, groups, team.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[cfg_attr(feature = "kube", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "llmgate.dev",
        version = "v1alpha1",
        kind = "IdentityProvider",
        namespaced,
        status = "ResourceStatus",
        shortname = "idp",
        category = "llmgate",
        printcolumn = r#"{"name":"OIDC","type":"string","jsonPath":".spec.oidc.issuer"}"#,
        printcolumn = r#"{"name":"SAML","type":"string","jsonPath":".spec.saml.entityId"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.oidc) != has(self.saml)", "message": "set exactly one of oidc, saml"}]))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityProviderSpec {
    /// An OpenID Connect issuer: callers send its access or ID tokens as bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcSpec>,
    /// A SAML 2.0 IdP: people log in through the browser and get a gateway token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml: Option<SamlSpec>,
    /// Which claims (OIDC) or attributes (SAML) name the user and their groups (defaults: `sub`
    /// or the SAML NameID, and `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<ClaimsSpec>,
    /// How a caller's team is decided; budgets and rate limits count against exactly it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<TeamsSpec>,
}

/// llmgate as a SAML service provider of one IdP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SamlSpec {
    /// The IdP's metadata XML (its entity ID, single sign-on URL and signing certificate).
    /// Metadata without a signing certificate is refused.
    #[schemars(length(min = 1, max = 262144))]
    pub idp_metadata: String,
    /// llmgate's SP entity ID, as registered at the IdP (the assertions' audience).
    #[schemars(length(min = 1, max = 1024))]
    pub entity_id: String,
    /// The public URL of llmgate's assertion consumer service:
    /// `…/auth/saml/acs/<namespace>/<name>`.
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub acs_url: String,
    /// Leeway for the assertions' time window (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub clock_skew: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcSpec {
    /// Exactly the `iss` claim of its tokens; discovery is read from
    /// `<issuer>/.well-known/openid-configuration`.
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub issuer: String,
    /// Accepted audiences (`aud`); a token must name one.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 512)))]
    pub audiences: Vec<String>,
    /// Accepted signing algorithms (default RS256, ES256). Symmetric algorithms and `none` are
    /// never accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub algorithms: Vec<JwtAlgorithmSpec>,
    /// Leeway for `exp` and `nbf` (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub clock_skew: Option<String>,
    /// JWKS URL, when it is not the one discovery names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub jwks_uri: Option<String>,
    /// Longest time fetched signing keys are used before the JWKS is fetched again, so a key
    /// the provider removed stops being trusted (default `1h`, at least `1s`). The JWKS
    /// answer's `Cache-Control: max-age` shortens it, to no less than 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub keys_refresh: Option<String>,
    /// Browser login (authorization code + PKCE) at `/auth/login/<namespace>/<name>`, ending in a
    /// gateway token; needs a `GatewayTokens` resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<OidcLoginSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcLoginSpec {
    /// The gateway's client at the IdP (a confidential client).
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,
    pub client_secret: SecretValueRef,
    /// Default `openid email profile`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub scopes: Vec<String>,
    /// Where the IdP sends the browser back: the gateway's public
    /// `…/auth/callback/<namespace>/<name>`, as registered at the IdP.
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub redirect_url: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JwtAlgorithmSpec {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// Claim names; nested claims as dotted paths (`realm_access.roles`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimsSpec {
    /// The user's id (default `sub`; `email` and `preferred_username` are common).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub user: Option<String>,
    /// The user's groups: an array of strings or one string (default `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub groups: Option<String>,
    /// The client id claim (default `client_id`). A token whose `sub` equals it was issued to a
    /// service by client credentials: its caller is the service account of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub client_id: Option<String>,
}

/// The caller's team, first rule that gives one: a claim, then group membership, then the
/// service account's declared team. No team when none applies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamsSpec {
    /// A claim holding the team name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub claim: Option<String>,
    /// In order: the first group the caller is in names their team.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub from_groups: Vec<GroupTeamSpec>,
    /// Teams of service accounts (client-credentials clients).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub service_accounts: Vec<ServiceAccountTeamSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupTeamSpec {
    #[schemars(length(min = 1, max = 256))]
    pub group: String,
    #[schemars(length(min = 1, max = 253))]
    pub team: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountTeamSpec {
    #[schemars(length(min = 1, max = 253))]
    pub service_account: String,
    #[schemars(length(min = 1, max = 253))]
    pub team: String,
}
