//! Authenticate stage: `Authorization: Bearer <credential>` → who is calling.
//!
//! Two kinds of credential: llmgate API keys and JWTs from a configured identity provider
//! ([`crate::identity::oidc`]). A JWT is recognised by its shape; anything else is an API key.
//!
//! API keys are stored as SHA-256 digests only. The presented key is hashed, looked up by
//! digest, and the digest compared in constant time; timing reveals nothing about stored keys
//! beyond what a hash lookup of an unpredictable digest does.

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::identity::oidc::looks_like_jwt;
use crate::identity::token::ISSUER;
use crate::runtime::{Caller, Runtime};

pub async fn authenticate<'r>(
    rt: &'r Runtime,
    headers: &HeaderMap,
) -> Result<Caller<'r>, GatewayError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(GatewayError::Unauthenticated(
            "Missing credentials: send your llmgate API key or identity token as `Authorization: Bearer <credential>`.",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(GatewayError::Unauthenticated(
            "Malformed Authorization header: expected `Bearer <credential>`.",
        ))?;
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if looks_like_jwt(token) {
        // A token verified before (under this configuration, still unexpired) skips the
        // signature check: RSA verification costs more than the rest of the request path.
        // Read before verifying: a key removed meanwhile makes this entry stale, never valid.
        let epoch = rt.verifiers.epoch();
        if let Some((id, method)) = rt.verified_tokens.get(&digest, epoch) {
            let mut caller = rt.token_caller(id);
            caller.identity.auth_method = method;
            return Ok(Caller::Token(Box::new(caller)));
        }
        let (id, method) = if let Some(issuer) = &rt.gateway_tokens
            && is_gateway_token(token)
        {
            let id = issuer.verify(token).map_err(GatewayError::InvalidToken)?;
            (id, "gateway_token")
        } else {
            if rt.verifiers.is_empty() {
                return Err(GatewayError::Unauthenticated(
                    "Identity tokens are not accepted here: no IdentityProvider is configured. Use an llmgate API key.",
                ));
            }
            let id = rt
                .verifiers
                .verify(token, &rt.idp_client)
                .await
                .map_err(GatewayError::InvalidToken)?;
            (id, "oidc")
        };
        rt.verified_tokens.put(digest, &id, method, epoch);
        let mut caller = rt.token_caller(id);
        caller.identity.auth_method = method;
        return Ok(Caller::Token(Box::new(caller)));
    }
    rt.key_by_digest(&digest)
        .map(Caller::Key)
        .ok_or(GatewayError::Unauthenticated(
            "Incorrect API key provided. Check the key, or ask your platform team for one.",
        ))
}

/// Whether a JWT claims to be one of ours (`iss: llmgate`); verified as such, never by an IdP.
fn is_gateway_token(token: &str) -> bool {
    jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token)
        .ok()
        .is_some_and(|c| c.get("iss").and_then(serde_json::Value::as_str) == Some(ISSUER))
}
