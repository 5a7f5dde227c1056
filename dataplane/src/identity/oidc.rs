//! OpenID Connect bearer tokens: which issuer signed a JWT, with which key, and whether it is
//! valid for llmgate — then who it speaks for.
//!
//! Each `IdentityProvider` gets a [`Verifier`]: its settings and a [`KeySet`], the issuer's
//! signing keys from its JWKS (found through discovery). Keys are fetched when the snapshot is
//! applied, on a schedule (the provider's `keysRefresh`, default an hour, shortened by the JWKS
//! answer's `Cache-Control: max-age` to no less than [`MAX_AGE_FLOOR`]) so a key the IdP removed
//! stops being trusted, and when a token names a key id the set does not know (key rotation),
//! at most once per [`REFRESH_MIN`] per issuer however many requests carry unknown keys, so a
//! flood of forged `kid`s cannot make llmgate hammer the IdP. Key sets survive snapshot reloads;
//! a failed fetch keeps the keys it had and is retried after [`RETRY_AFTER`].
//!
//! Checked, in order: the header's algorithm is one the provider allows (never `none`, never a
//! symmetric one: a public key can then not be abused as an HMAC secret), the issuer is
//! configured, the key is the issuer's and of the algorithm's family, the signature, `exp` and
//! `nbf` with the provider's clock skew, `iss`, and one `aud` the provider accepts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use llmgate_snapshot::{IdentityProvider, Oidc, Principal};
use serde::Deserialize;
use serde_json::Value;

use super::{TokenError, TokenIdentity, team_of};
use crate::http::client::UpstreamClient;

/// Least time between two JWKS fetches of one issuer triggered by unknown key ids.
const REFRESH_MIN: Duration = Duration::from_secs(10);
/// Least time an IdP's `Cache-Control: max-age` can make keys be refetched after.
const MAX_AGE_FLOOR: Duration = Duration::from_secs(300);
/// When a scheduled fetch failed, the next try (the old keys serve meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the authorization-code flow happens, from the discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

/// An issuer's signing keys.
pub struct KeySet {
    discovery: String,
    jwks_uri: Option<String>,
    keys: ArcSwap<HashMap<String, DecodingKey>>,
    endpoints: arc_swap::ArcSwapOption<Endpoints>,
    /// Serialises fetches; holds when the last fetch for an unknown key id ended.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// The provider's `keysRefresh`: the longest keys are used before the next fetch.
    refresh_every: Duration,
    /// When the keys are fetched again.
    next_refresh: std::sync::Mutex<Instant>,
    /// Whether the task keeping the keys fresh runs.
    scheduled: std::sync::atomic::AtomicBool,
    /// How many fetches dropped a key: tokens verified before must be verified again.
    removals: std::sync::atomic::AtomicU64,
    /// The last fetch's outcome, for `/readyz`.
    last: std::sync::Mutex<FetchState>,
}

/// When keys were last loaded, and why the latest fetch failed (if it did).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FetchState {
    pub keys: usize,
    pub loaded_at: Option<String>,
    pub error: Option<String>,
    pub failed_at: Option<String>,
}

impl KeySet {
    fn new(issuer: &str, jwks_uri: Option<&str>, refresh_every: Duration) -> KeySet {
        KeySet {
            discovery: format!("{issuer}/.well-known/openid-configuration"),
            jwks_uri: jwks_uri.map(str::to_owned),
            keys: ArcSwap::from_pointee(HashMap::new()),
            endpoints: arc_swap::ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(None),
            refresh_every,
            next_refresh: std::sync::Mutex::new(Instant::now() + refresh_every),
            scheduled: std::sync::atomic::AtomicBool::new(false),
            removals: std::sync::atomic::AtomicU64::new(0),
            last: std::sync::Mutex::new(FetchState::default()),
        }
    }

    /// The last fetch's outcome.
    pub fn state(&self) -> FetchState {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, f: impl FnOnce(&mut FetchState)) {
        f(&mut self.last.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Loads the keys now and, the first time, starts the task that fetches them again when
    /// they are due, for as long as a runtime uses this key set.
    pub fn start(self: &Arc<Self>, client: &UpstreamClient) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (keys, c) = (Arc::clone(self), client.clone());
        handle.spawn(async move { keys.refresh(&c, true).await });
        if self
            .scheduled
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let (weak, client) = (Arc::downgrade(self), client.clone());
        handle.spawn(async move {
            loop {
                // Hold no reference while asleep: a key set no runtime uses ends its task.
                let Some(due) = weak.upgrade().map(|k| k.due()) else {
                    return;
                };
                tokio::time::sleep_until(due.into()).await;
                let Some(keys) = weak.upgrade() else {
                    return;
                };
                if keys.due() <= Instant::now() {
                    let _ = keys.refresh(&client, true).await;
                }
            }
        });
    }

    fn due(&self) -> Instant {
        *self.next_refresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_due(&self, after: Duration) {
        *self.next_refresh.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now() + after;
    }

    fn get(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.load().get(kid).cloned()
    }

    /// The login endpoints, fetching the discovery document when they are not known yet.
    pub async fn endpoints(&self, client: &UpstreamClient) -> Result<Arc<Endpoints>, TokenError> {
        if let Some(e) = self.endpoints.load_full() {
            return Ok(e);
        }
        self.refresh(client, true).await?;
        self.endpoints
            .load_full()
            .ok_or(TokenError::KeysUnavailable)
    }

    /// Fetches the JWKS. `force` is the load when a snapshot is applied; otherwise a token
    /// named an unknown key, and such fetches happen at most once per [`REFRESH_MIN`] (callers
    /// meanwhile use what the last fetch found) unless no keys were ever loaded.
    pub async fn refresh(&self, client: &UpstreamClient, force: bool) -> Result<(), TokenError> {
        let mut last = self.fetching.lock().await;
        let loaded = !self.keys.load().is_empty();
        if !force && loaded && last.is_some_and(|t| t.elapsed() < REFRESH_MIN) {
            return Ok(());
        }
        let result = self.fetch(client).await;
        if !force {
            *last = Some(Instant::now());
        }
        match result {
            Ok((keys, max_age)) => {
                let next = next_refresh(self.refresh_every, max_age);
                tracing::info!(jwks = %self.discovery, keys = keys.len(), next_in_secs = next.as_secs(), "identity provider keys loaded");
                let old = self.keys.swap(Arc::new(keys));
                let kept = self.keys.load();
                if old.keys().any(|kid| !kept.contains_key(kid)) {
                    tracing::info!(jwks = %self.discovery, "a signing key was removed; tokens it signed are refused from now on");
                    self.removals
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                self.set_due(next);
                let n = kept.len();
                self.record(|s| {
                    s.keys = n;
                    s.loaded_at = Some(jiff::Timestamp::now().to_string());
                    s.error = None;
                    s.failed_at = None;
                });
                Ok(())
            }
            Err(e) => {
                tracing::warn!(discovery = %self.discovery, error = %e, "identity provider keys could not be fetched");
                self.record(|s| {
                    s.error = Some(e.clone());
                    s.failed_at = Some(jiff::Timestamp::now().to_string());
                });
                self.set_due(RETRY_AFTER.min(self.refresh_every));
                Err(TokenError::KeysUnavailable)
            }
        }
    }

    /// The keys, and the JWKS answer's `max-age`.
    async fn fetch(
        &self,
        client: &UpstreamClient,
    ) -> Result<(HashMap<String, DecodingKey>, Option<Duration>), String> {
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
            #[serde(flatten)]
            endpoints: Option<Endpoints>,
        }
        let discovered = match get(client, &self.discovery).await {
            Ok((body, _)) => Some(
                serde_json::from_slice::<Discovery>(&body)
                    .map_err(|e| format!("discovery document: {e}"))?,
            ),
            // A configured JWKS location makes discovery optional (no login then).
            Err(_) if self.jwks_uri.is_some() => None,
            Err(e) => return Err(e),
        };
        if let Some(e) = discovered.as_ref().and_then(|d| d.endpoints.clone()) {
            self.endpoints.store(Some(Arc::new(e)));
        }
        let jwks_uri = match (&self.jwks_uri, &discovered) {
            (Some(u), _) => u.clone(),
            (None, Some(d)) => d.jwks_uri.clone(),
            (None, None) => return Err("no JWKS location".into()),
        };
        let (body, max_age) = get(client, &jwks_uri).await?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                // Symmetric keys in a JWKS are never accepted for verification.
                Ok(k) if k.family() != jsonwebtoken::AlgorithmFamily::Hmac => {
                    keys.insert(kid, k);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(kid, error = %e, "unusable key in JWKS skipped"),
            }
        }
        Ok((keys, max_age))
    }
}

/// When keys fetched now are fetched again: after the provider's `keysRefresh`, or sooner when
/// the JWKS answer's `max-age` says so, but never sooner than [`MAX_AGE_FLOOR`] on its word
/// (`max-age=0` must not turn into a fetch per request).
fn next_refresh(refresh_every: Duration, max_age: Option<Duration>) -> Duration {
    match max_age {
        Some(age) => age.clamp(MAX_AGE_FLOOR.min(refresh_every), refresh_every),
        None => refresh_every,
    }
}

/// `max-age` of a `Cache-Control` value; `no-cache` and `no-store` count as 0.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let d = d.trim();
        if d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        let (name, value) = d.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

/// The body of a GET, and its `Cache-Control: max-age`.
async fn get(client: &UpstreamClient, url: &str) -> Result<(Bytes, Option<Duration>), String> {
    let req = Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "llmgate")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(FETCH_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", resp.status()));
    }
    let age = resp
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(max_age);
    let body = tokio::time::timeout(FETCH_TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
    Ok((body.to_bytes(), age))
}

/// One identity provider, ready to verify.
pub struct Verifier {
    pub spec: IdentityProvider,
    pub oidc: Oidc,
    pub id: Arc<str>,
    pub keys: Arc<KeySet>,
    algorithms: Vec<Algorithm>,
}

impl Verifier {
    /// `previous` key sets are reused when the issuer and JWKS location did not change.
    pub fn build(spec: &IdentityProvider, oidc: &Oidc, previous: Option<&Arc<KeySet>>) -> Verifier {
        let refresh_every = Duration::from_secs(oidc.keys_refresh_secs.max(1));
        let keys = previous
            .filter(|k| k.jwks_uri == oidc.jwks_uri && k.refresh_every == refresh_every)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(KeySet::new(
                    &oidc.issuer,
                    oidc.jwks_uri.as_deref(),
                    refresh_every,
                ))
            });
        let algorithms = oidc
            .algorithms
            .iter()
            .filter_map(|a| a.parse::<Algorithm>().ok())
            .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .collect();
        Verifier {
            id: Arc::from(format!("{}/{}", spec.source.namespace, spec.source.name)),
            spec: spec.clone(),
            oidc: oidc.clone(),
            keys,
            algorithms,
        }
    }

    async fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        client: &UpstreamClient,
    ) -> Result<TokenIdentity, TokenError> {
        let claims = self
            .verify_claims(token, alg, kid, &self.oidc.audiences, client)
            .await?;
        Ok(self.identity(&claims))
    }

    /// An ID token from the login flow: issued to the gateway's client, with the login's nonce.
    pub async fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
        client: &UpstreamClient,
    ) -> Result<TokenIdentity, TokenError> {
        let header = super::jwt_header(token)?;
        let claims = self
            .verify_claims(
                token,
                header.alg,
                header.kid.as_deref(),
                &[client_id.to_owned()],
                client,
            )
            .await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(TokenError::Nonce);
        }
        Ok(self.identity(&claims))
    }

    async fn verify_claims(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        audiences: &[String],
        client: &UpstreamClient,
    ) -> Result<Value, TokenError> {
        if !self.algorithms.contains(&alg) {
            return Err(TokenError::Algorithm);
        }
        let kid = kid.ok_or(TokenError::UnknownKey)?;
        let key = match self.keys.get(kid) {
            Some(k) => k,
            None => {
                // Rotation: the issuer may have a key we have not seen yet.
                self.keys.refresh(client, false).await?;
                self.keys.get(kid).ok_or(TokenError::UnknownKey)?
            }
        };
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.oidc.clock_skew_secs;
        v.validate_nbf = true;
        v.set_issuer(&[&self.oidc.issuer]);
        v.set_audience(audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidAudience => TokenError::Audience,
                K::InvalidIssuer => TokenError::UnknownIssuer,
                K::InvalidAlgorithm => TokenError::Algorithm,
                K::MissingRequiredClaim(_) => TokenError::MissingClaim,
                K::InvalidSignature => TokenError::Signature,
                _ => TokenError::Malformed,
            }
        })?;
        Ok(data.claims)
    }

    /// Claims → caller, by the provider's mapping.
    pub fn identity(&self, claims: &Value) -> TokenIdentity {
        let m = &self.spec.mapping;
        let sub = claims.get("sub").and_then(Value::as_str);
        let client = claim(claims, &m.client_id).and_then(Value::as_str);
        let principal = match (client, sub) {
            (Some(c), Some(s)) if c == s => Principal::ServiceAccount(c.to_owned()),
            _ => Principal::User(
                claim(claims, &m.user)
                    .and_then(Value::as_str)
                    .or(sub)
                    .unwrap_or("")
                    .to_owned(),
            ),
        };
        let groups: Vec<Arc<str>> = match claim(claims, &m.groups) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(Arc::from).collect(),
            Some(Value::String(s)) => vec![Arc::from(s.as_str())],
            _ => Vec::new(),
        };
        let claimed = m
            .team
            .claim
            .as_deref()
            .and_then(|c| claim(claims, c))
            .and_then(|v| match v {
                Value::String(s) => Some(s.as_str()),
                Value::Array(a) => a.first().and_then(Value::as_str),
                _ => None,
            });
        let team = team_of(&m.team, claimed, &groups, &principal);
        TokenIdentity {
            principal,
            groups,
            team,
            provider: Arc::clone(&self.id),
            expires_at: claims.get("exp").and_then(Value::as_i64).unwrap_or(0),
        }
    }
}

/// A claim by dotted path (`realm_access.roles`); a claim whose own name has dots wins.
fn claim<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// The verifiers of one snapshot, by issuer.
#[derive(Default)]
pub struct Verifiers {
    by_issuer: HashMap<String, Verifier>,
}

impl Verifiers {
    pub fn build(specs: &[IdentityProvider], previous: Option<&Verifiers>) -> Verifiers {
        let by_issuer = specs
            .iter()
            .filter_map(|s| {
                let oidc = s.oidc.as_ref()?;
                let old = previous
                    .and_then(|p| p.by_issuer.get(&oidc.issuer))
                    .map(|v| &v.keys);
                Some((oidc.issuer.clone(), Verifier::build(s, oidc, old)))
            })
            .collect();
        Verifiers { by_issuer }
    }

    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }

    /// Per OIDC provider: its id, issuer and the state of its keys, for `/readyz`.
    pub fn report(&self) -> Vec<serde_json::Value> {
        let mut out: Vec<serde_json::Value> = self
            .by_issuer
            .iter()
            .map(|(issuer, v)| {
                let mut s = serde_json::to_value(v.keys.state()).unwrap_or_default();
                s["provider"] = serde_json::Value::from(&*v.id);
                s["issuer"] = serde_json::Value::from(issuer.as_str());
                s
            })
            .collect();
        out.sort_by(|a, b| a["provider"].as_str().cmp(&b["provider"].as_str()));
        out
    }

    /// The provider `namespace/name`, for the login routes.
    pub fn by_id(&self, id: &str) -> Option<&Verifier> {
        self.by_issuer.values().find(|v| &*v.id == id)
    }

    /// Changes whenever an issuer dropped a key, so tokens verified before are checked again.
    pub fn epoch(&self) -> u64 {
        self.by_issuer
            .values()
            .map(|v| v.keys.removals.load(std::sync::atomic::Ordering::Acquire))
            .sum()
    }

    /// Key sets to load now, so the first token does not wait for them.
    pub fn key_sets(&self) -> impl Iterator<Item = &Arc<KeySet>> {
        self.by_issuer.values().map(|v| &v.keys)
    }

    /// Verifies a bearer JWT against the provider of its (claimed) issuer.
    pub async fn verify(
        &self,
        token: &str,
        client: &UpstreamClient,
    ) -> Result<TokenIdentity, TokenError> {
        // `alg: none` and unknown algorithms fail to parse here.
        let header = super::jwt_header(token)?;
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| TokenError::Malformed)?;
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(TokenError::UnknownIssuer)?;
        let verifier = self
            .by_issuer
            .get(issuer.trim_end_matches('/'))
            .ok_or(TokenError::UnknownIssuer)?;
        verifier
            .verify(token, header.alg, header.kid.as_deref(), client)
            .await
    }
}

/// Tokens verified under one configuration, by SHA-256 of the token: a later request with the
/// same token skips the signature check until the token expires (or at most
/// [`VERIFIED_FOR_SECS`]). Built per snapshot, so a configuration change (a revocation, a new
/// key list) starts afresh; an entry holds only under the [`Verifiers::epoch`] it was verified
/// in, so a key an issuer removed stops its tokens at once. Bounded: when full it is emptied.
#[derive(Default)]
pub struct VerifiedTokens {
    map: std::sync::Mutex<HashMap<[u8; 32], Verified>>,
}

/// Who, verified how, until when (unix seconds), under which key epoch.
type Verified = (TokenIdentity, &'static str, i64, u64);

const VERIFIED_MAX: usize = 10_000;
pub const VERIFIED_FOR_SECS: i64 = 300;

impl VerifiedTokens {
    pub fn get(&self, digest: &[u8; 32], epoch: u64) -> Option<(TokenIdentity, &'static str)> {
        self.get_at(digest, epoch, jiff::Timestamp::now().as_second())
    }

    fn get_at(
        &self,
        digest: &[u8; 32],
        epoch: u64,
        now: i64,
    ) -> Option<(TokenIdentity, &'static str)> {
        let map = self.map.lock().ok()?;
        let (id, method, until, at) = map.get(digest)?;
        (now < *until && *at == epoch).then(|| (id.clone(), *method))
    }

    pub fn put(&self, digest: [u8; 32], id: &TokenIdentity, method: &'static str, epoch: u64) {
        self.put_at(
            digest,
            id,
            method,
            epoch,
            jiff::Timestamp::now().as_second(),
        );
    }

    fn put_at(
        &self,
        digest: [u8; 32],
        id: &TokenIdentity,
        method: &'static str,
        epoch: u64,
        now: i64,
    ) {
        let until = id.expires_at.min(now + VERIFIED_FOR_SECS);
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= VERIFIED_MAX {
                map.clear();
            }
            map.insert(digest, (id.clone(), method, until, epoch));
        }
    }
}

/// Whether a bearer credential is shaped like a JWT (three base64url parts) rather than an API
/// key.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.starts_with("eyJ") && credential.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_refetched_when_the_provider_or_its_cache_headers_say() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            max_age("Max-Age = \"90\", must-revalidate"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("private"), None);
        assert_eq!(max_age("max-age=soon"), None);
        // Without a header: the provider's setting; a header shortens it, never below 5 min.
        assert_eq!(next_refresh(hour, None), hour);
        assert_eq!(
            next_refresh(hour, Some(Duration::from_secs(900))),
            Duration::from_secs(900)
        );
        assert_eq!(next_refresh(hour, Some(Duration::ZERO)), MAX_AGE_FLOOR);
        assert_eq!(next_refresh(hour, Some(Duration::from_secs(86_400))), hour);
        // A provider set to refresh more often than the floor keeps its own setting.
        let often = Duration::from_secs(2);
        assert_eq!(next_refresh(often, Some(Duration::from_secs(600))), often);
        assert_eq!(next_refresh(often, Some(Duration::ZERO)), often);
    }

    #[test]
    fn nested_claims_and_literal_dotted_names() {
        let c = json!({"realm_access": {"roles": ["a"]}, "x.y": 1});
        assert_eq!(claim(&c, "realm_access.roles"), Some(&json!(["a"])));
        assert_eq!(claim(&c, "x.y"), Some(&json!(1)));
        assert_eq!(claim(&c, "realm_access.missing"), None);
    }

    #[test]
    fn verified_tokens_are_kept_until_they_expire() {
        let cache = VerifiedTokens::default();
        let now = jiff::Timestamp::now().as_second();
        let id = |exp| TokenIdentity {
            principal: Principal::User("alice".into()),
            groups: vec![],
            team: None,
            provider: Arc::from("default/corp"),
            expires_at: exp,
        };
        cache.put([1; 32], &id(now + 60), "oidc", 0);
        cache.put([2; 32], &id(now - 1), "oidc", 0);
        assert_eq!(
            cache.get(&[1; 32], 0).map(|(i, m)| (i.expires_at, m)),
            Some((now + 60, "oidc"))
        );
        assert!(
            cache.get(&[2; 32], 0).is_none(),
            "an expired token is verified again (and refused)"
        );
        assert!(cache.get(&[3; 32], 0).is_none());
        assert!(
            cache.get(&[1; 32], 1).is_none(),
            "after an issuer dropped a key, every token is verified again"
        );
        // A token valid for an hour is trusted from the cache for 5 minutes at most, so a
        // revocation or a policy on the IdP's side shows within that bound.
        let t0 = 1_800_000_000;
        cache.put_at([4; 32], &id(t0 + 3600), "oidc", 0, t0);
        assert!(cache.get_at(&[4; 32], 0, t0 + 299).is_some());
        assert!(cache.get_at(&[4; 32], 0, t0 + 300).is_none());
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOi.eyJzdWIi.sig"));
        assert!(!looks_like_jwt("sk-llmgate-demo"));
        assert!(!looks_like_jwt("eyJ.only-one-dot"));
    }
}
