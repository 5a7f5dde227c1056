//! Gateway tokens: JWTs llmgate signs itself after a browser login, so a person can paste one
//! into an SDK or CLI (`OPENAI_API_KEY=<token>`). HMAC-SHA256 with keys from a Secret, `kid`
//! naming the key: the first key signs, every listed key verifies, so keys roll without logging
//! anyone out. A revocation refuses one caller's tokens issued before a time.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use llmgate_snapshot::{GatewayTokens, Principal, Revocation};
use serde::{Deserialize, Serialize};

use super::{TokenError, TokenIdentity};

/// `iss` and `aud` of gateway tokens.
pub const ISSUER: &str = "llmgate";

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    /// `user` or `serviceAccount`.
    kind: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    team: Option<String>,
    /// The IdentityProvider the login went through.
    idp: String,
    iat: i64,
    exp: i64,
    jti: String,
}

pub struct Issuer {
    /// `(kid, encoding, decoding)`.
    keys: Vec<(String, EncodingKey, DecodingKey)>,
    /// The raw keys, same order: also the HMAC keys of SAML request IDs.
    secrets: Vec<Vec<u8>>,
    ttl_secs: u64,
    revoked: Vec<Revocation>,
}

impl Issuer {
    pub fn build(spec: &GatewayTokens) -> Issuer {
        Issuer {
            keys: spec
                .keys
                .iter()
                .map(|(kid, secret)| {
                    let bytes = secret.expose().as_bytes();
                    (
                        kid.clone(),
                        EncodingKey::from_secret(bytes),
                        DecodingKey::from_secret(bytes),
                    )
                })
                .collect(),
            secrets: spec
                .keys
                .iter()
                .map(|(_, s)| s.expose().as_bytes().to_vec())
                .collect(),
            ttl_secs: spec.ttl_secs,
            revoked: spec.revoked.clone(),
        }
    }

    /// The raw keys, the signing one first.
    pub fn secrets(&self) -> Vec<&[u8]> {
        self.secrets.iter().map(Vec::as_slice).collect()
    }

    /// The current signing key, for the login cookie.
    pub(super) fn login_key(&self) -> Option<(&str, &EncodingKey)> {
        self.keys.first().map(|(k, e, _)| (k.as_str(), e))
    }

    pub(super) fn login_decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys
            .iter()
            .find(|(k, _, _)| k == kid)
            .map(|(_, _, d)| d)
    }

    /// A token for `who`; its expiry (unix seconds).
    pub fn mint(&self, who: &TokenIdentity) -> Result<(String, i64), TokenError> {
        let (kid, key, _) = self.keys.first().ok_or(TokenError::KeysUnavailable)?;
        let now = jiff::Timestamp::now().as_second();
        let exp = now + self.ttl_secs as i64;
        let (kind, sub) = match &who.principal {
            Principal::User(u) => ("user", u.clone()),
            Principal::ServiceAccount(s) => ("serviceAccount", s.clone()),
        };
        let claims = Claims {
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            sub,
            kind: kind.into(),
            groups: who.groups.iter().map(|g| g.to_string()).collect(),
            team: who.team.as_deref().map(str::to_owned),
            idp: who.provider.to_string(),
            iat: now,
            exp,
            jti: super::random_token(16),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, key).map_err(|_| TokenError::KeysUnavailable)?;
        Ok((token, exp))
    }

    /// Verifies a gateway token; who it speaks for.
    pub fn verify(&self, token: &str) -> Result<TokenIdentity, TokenError> {
        let header = super::jwt_header(token)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let (_, _, key) = self
            .keys
            .iter()
            .find(|(k, _, _)| *k == kid)
            .ok_or(TokenError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::InvalidSignature => TokenError::Signature,
                K::InvalidAudience => TokenError::Audience,
                _ => TokenError::Malformed,
            }
        })?;
        let c = data.claims;
        let principal = match c.kind.as_str() {
            "serviceAccount" => Principal::ServiceAccount(c.sub),
            _ => Principal::User(c.sub),
        };
        if self
            .revoked
            .iter()
            .any(|r| r.principal == principal && c.iat < r.before)
        {
            return Err(TokenError::Revoked);
        }
        Ok(TokenIdentity {
            principal,
            groups: c.groups.into_iter().map(Arc::from).collect(),
            team: c.team.map(Arc::from),
            provider: Arc::from(c.idp),
            expires_at: c.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use llmgate_snapshot::{ResourceRef, Secret};

    use super::*;

    fn issuer(keys: &[(&str, &str)], revoked: Vec<Revocation>) -> Issuer {
        Issuer::build(&GatewayTokens {
            source: ResourceRef {
                kind: "GatewayTokens".into(),
                namespace: "default".into(),
                name: "t".into(),
            },
            keys: keys
                .iter()
                .map(|(k, s)| (k.to_string(), Secret::new(*s)))
                .collect(),
            ttl_secs: 600,
            revoked,
        })
    }

    fn alice() -> TokenIdentity {
        TokenIdentity {
            principal: Principal::User("alice".into()),
            groups: vec![Arc::from("ml-eng")],
            team: Some(Arc::from("llm-engineering")),
            provider: Arc::from("default/corp"),
            expires_at: 0,
        }
    }

    const K1: &str = "k1-0123456789abcdef0123456789abcdef";
    const K2: &str = "k2-0123456789abcdef0123456789abcdef";

    #[test]
    fn keys_roll_without_logging_anyone_out_and_revocation_bites() {
        let old = issuer(&[("k1", K1)], vec![]);
        let (token, _) = old.mint(&alice()).expect("mint");
        let id = old.verify(&token).expect("verifies");
        assert_eq!(id.team.as_deref(), Some("llm-engineering"));
        // k2 signs now, k1 still verifies.
        let rolled = issuer(&[("k2", K2), ("k1", K1)], vec![]);
        assert!(rolled.verify(&token).is_ok());
        let (new, _) = rolled.mint(&alice()).expect("mint");
        assert!(new.contains('.'));
        // k1 dropped: its tokens are gone.
        let dropped = issuer(&[("k2", K2)], vec![]);
        assert_eq!(dropped.verify(&token).err(), Some(TokenError::UnknownKey));
        assert!(dropped.verify(&new).is_ok());
        // Revoked before now: refused; others unaffected.
        let now = jiff::Timestamp::now().as_second();
        let revoking = issuer(
            &[("k2", K2)],
            vec![Revocation {
                principal: Principal::User("alice".into()),
                before: now + 10,
            }],
        );
        assert_eq!(revoking.verify(&new).err(), Some(TokenError::Revoked));
        // Bystanders are not: another user, and a service account of the same name.
        let bob = TokenIdentity {
            principal: Principal::User("bob".into()),
            ..alice()
        };
        let (bobs, _) = revoking.mint(&bob).expect("mint");
        assert_eq!(
            revoking.verify(&bobs).expect("bob").principal,
            bob.principal
        );
        let sa = TokenIdentity {
            principal: Principal::ServiceAccount("alice".into()),
            ..alice()
        };
        let (sas, _) = revoking.mint(&sa).expect("mint");
        assert!(revoking.verify(&sas).is_ok());
        // Nor is what alice was issued after `before`: a revocation 10 s in the past leaves
        // a token minted now valid.
        let past = issuer(
            &[("k2", K2)],
            vec![Revocation {
                principal: Principal::User("alice".into()),
                before: now - 10,
            }],
        );
        assert!(past.verify(&new).is_ok());
        // A key of the same id but another secret: bad signature.
        let forged = issuer(&[("k2", "another-secret-0123456789abcdef0123")], vec![]);
        assert_eq!(forged.verify(&new).err(), Some(TokenError::Signature));
    }
}
