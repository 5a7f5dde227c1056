//! Who is calling. [`Identity`] is what every stage reads about the caller, whatever the
//! credential; the rest of this folder turns credentials other than API keys into one:
//!
//! - [`oidc`]: bearer JWTs from `IdentityProvider`s (discovery, JWKS, claims → identity);
//! - [`saml`]: the SAML 2.0 service provider (AuthnRequest, ACS checks, SP metadata);
//! - [`token`]: gateway tokens, llmgate's own signed JWTs, with key rotation and revocation;
//! - [`login`]: the browser-login handlers (OIDC authorization code + PKCE, SAML ACS) that end
//!   in a gateway token.
//!
//! This module is a leaf: it names no other part of the data plane, so the pure stages
//! (policy, rate limits, budgets) can read an identity without depending on the runtime.

pub mod login;
pub mod oidc;
pub mod saml;
pub mod token;
pub mod xmldsig;

use std::sync::Arc;

use base64::Engine;
use llmgate_snapshot::{Principal, TeamRule};

/// Who a request speaks for.
#[derive(Debug)]
pub struct Identity {
    /// `namespace/name` of the ApiKey resource, for API keys.
    pub key_id: Option<Arc<str>>,
    pub principal: Principal,
    pub team: Option<Arc<str>>,
    /// Groups from the identity provider (API keys have none).
    pub groups: Vec<Arc<str>>,
    /// The principal's name, shared into audit records.
    pub name: Arc<str>,
    /// `api_key` or `oidc`.
    pub auth_method: &'static str,
    /// `namespace/name` of the IdentityProvider, for tokens.
    pub provider: Option<Arc<str>>,
}

/// Why a token is refused; each is a 401 with this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed bearer token")]
    Malformed,
    #[error("token signing algorithm is not accepted")]
    Algorithm,
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    #[error("token signing key is not known to its issuer")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not accepted")]
    Audience,
    #[error("token lacks a required claim")]
    MissingClaim,
    #[error("the token issuer's keys cannot be fetched")]
    KeysUnavailable,
    #[error("token was revoked")]
    Revoked,
    #[error("token nonce does not match the login")]
    Nonce,
    #[error("token lists a critical header llmgate does not understand")]
    CriticalHeader,
}

/// A JWT's header, refusing what llmgate cannot honour: `alg: none` and unknown algorithms
/// (they fail to parse), and any `crit` entry, since llmgate implements no JWS extension
/// (RFC 7515 §4.1.11: a recipient must refuse critical headers it does not understand).
pub fn jwt_header(token: &str) -> Result<jsonwebtoken::Header, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.crit.is_some() {
        return Err(TokenError::CriticalHeader);
    }
    Ok(header)
}

/// Who a verified token speaks for.
#[derive(Debug, Clone)]
pub struct TokenIdentity {
    pub principal: Principal,
    pub groups: Vec<Arc<str>>,
    pub team: Option<Arc<str>>,
    /// `namespace/name` of the IdentityProvider.
    pub provider: Arc<str>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The caller's team by an IdentityProvider's rules, first that gives one: the team claim (or
/// SAML attribute), the first group rule the caller's groups match, the service account's team.
pub fn team_of(
    rule: &TeamRule,
    claimed: Option<&str>,
    groups: &[Arc<str>],
    principal: &Principal,
) -> Option<Arc<str>> {
    claimed
        .map(Arc::from)
        .or_else(|| {
            rule.from_groups
                .iter()
                .find(|(g, _)| groups.iter().any(|x| **x == **g))
                .map(|(_, t)| Arc::from(t.as_str()))
        })
        .or_else(|| match principal {
            Principal::ServiceAccount(sa) => rule
                .service_accounts
                .iter()
                .find(|(s, _)| s == sa)
                .map(|(_, t)| Arc::from(t.as_str())),
            Principal::User(_) => None,
        })
}

/// `n` random bytes, base64url.
pub fn random_token(n: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(n))
}

/// `n` bytes from the OS CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    // The system RNG does not fail on supported platforms; a failure leaves zeros, which the
    // state and request-ID checks still tie to this login's HMAC.
    let _ = ring::rand::SystemRandom::new().fill(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order README.md gives: the team claim, then the first `fromGroups` rule the caller
    /// matches (in the rule's order, not the token's), then `serviceAccounts`, for service
    /// accounts only.
    #[test]
    fn a_teams_source_is_the_first_rule_that_gives_one() {
        let rule = TeamRule {
            claim: Some("team".into()),
            from_groups: vec![
                ("ml-admins".into(), "ml".into()),
                ("staff".into(), "general".into()),
            ],
            service_accounts: vec![("ci-bot".into(), "platform".into())],
        };
        let groups = |g: &[&str]| g.iter().map(|s| Arc::from(*s)).collect::<Vec<Arc<str>>>();
        let user = Principal::User("ada".into());
        let bot = Principal::ServiceAccount("ci-bot".into());
        let other_bot = Principal::ServiceAccount("other".into());
        let team = |claimed, g: &[&str], p: &Principal| {
            team_of(&rule, claimed, &groups(g), p).map(|t| t.to_string())
        };
        /// Claimed team, groups, caller, the team that wins.
        type Case<'a> = (
            Option<&'a str>,
            &'a [&'a str],
            &'a Principal,
            Option<&'a str>,
        );
        let cases: [Case<'_>; 8] = [
            (Some("x"), &["ml-admins"], &user, Some("x")),
            (Some("x"), &[], &bot, Some("x")),
            (None, &["staff", "ml-admins"], &user, Some("ml")),
            (None, &["staff"], &user, Some("general")),
            (None, &["ml-admins"], &bot, Some("ml")),
            (None, &[], &bot, Some("platform")),
            (None, &[], &other_bot, None),
            // A user whose name is a mapped service account is still a user.
            (None, &[], &Principal::User("ci-bot".into()), None),
        ];
        for (claimed, g, p, want) in cases {
            assert_eq!(
                team(claimed, g, p).as_deref(),
                want,
                "{claimed:?} {g:?} {p:?}"
            );
        }
    }
}
