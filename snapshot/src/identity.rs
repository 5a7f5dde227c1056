//! What `IdentityProvider` and `GatewayTokens` compile to: the issuers whose tokens the
//! gateway accepts, how claims become a caller, and the gateway's own tokens.

use serde::{Deserialize, Serialize};

use crate::{Principal, ResourceRef, Secret};

/// An identity provider whose tokens the gateway accepts, and how their claims map to a caller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentityProvider {
    pub source: ResourceRef,
    /// Exactly one of `oidc`, `saml`.
    pub oidc: Option<Oidc>,
    pub saml: Option<Saml>,
    pub mapping: ClaimMapping,
}

/// llmgate as the SAML service provider of one IdP, with what compile read from its metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saml {
    pub idp_entity_id: String,
    /// The IdP's single sign-on URL for the HTTP-Redirect binding.
    pub sso_url: String,
    /// The IdP's signing certificates, base64 DER.
    pub signing_certs: Vec<String>,
    /// llmgate's SP entity ID.
    pub entity_id: String,
    pub acs_url: String,
    pub clock_skew_secs: u64,
}

/// How long fetched signing keys are used at most, unless an IdentityProvider says otherwise.
pub const DEFAULT_KEYS_REFRESH_SECS: u64 = 3600;

fn default_keys_refresh_secs() -> u64 {
    DEFAULT_KEYS_REFRESH_SECS
}

/// An OpenID Connect issuer: bearer JWTs signed by its keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Oidc {
    /// Exactly the `iss` of its tokens.
    pub issuer: String,
    /// Accepted `aud` values (one must match).
    pub audiences: Vec<String>,
    /// Accepted signing algorithms (asymmetric only: RS*, PS*, ES*, EdDSA).
    pub algorithms: Vec<String>,
    /// Leeway for `exp` and `nbf`.
    pub clock_skew_secs: u64,
    /// JWKS location; `None` reads it from the issuer's discovery document.
    pub jwks_uri: Option<String>,
    /// Longest use of fetched keys before the JWKS is fetched again.
    #[serde(default = "default_keys_refresh_secs")]
    pub keys_refresh_secs: u64,
    /// Browser login through this issuer, when configured.
    pub login: Option<OidcLogin>,
}

/// The gateway's confidential client at an OIDC issuer, for the authorization-code flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OidcLogin {
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub redirect_url: String,
}

/// Tokens llmgate issues after a login.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayTokens {
    pub source: ResourceRef,
    /// `(kid, HMAC key)`; the first signs.
    pub keys: Vec<(String, Secret)>,
    pub ttl_secs: u64,
    pub revoked: Vec<Revocation>,
}

/// Tokens of `principal` issued before `before` (unix seconds) are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub principal: Principal,
    pub before: i64,
}

/// Claim names (dotted paths for nested claims) that make a token's caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimMapping {
    /// The user's id (`sub`, `email`, `preferred_username`…).
    pub user: String,
    /// The user's groups (an array of strings, or one string).
    pub groups: String,
    /// The claim naming a client; a token whose `sub` equals it is a service account
    /// (client-credentials), named by it.
    pub client_id: String,
    /// How the caller's team is decided, first match wins.
    pub team: TeamRule,
}

/// Which team a token's caller counts against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRule {
    /// A claim holding the team name.
    pub claim: Option<String>,
    /// Group → team, in order: the first group the caller is in decides.
    pub from_groups: Vec<(String, String)>,
    /// Service accounts (client ids) → team.
    pub service_accounts: Vec<(String, String)>,
}
