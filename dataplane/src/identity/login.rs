//! Browser login, ending in a gateway token a person pastes into an SDK or CLI.
//!
//! OIDC authorization code with PKCE: `GET /auth/login/<namespace>/<name>` sends the browser to
//! the IdentityProvider's authorization endpoint with a fresh `state`, `nonce` and PKCE
//! challenge, kept in a short-lived signed cookie (no server-side session: any replica can
//! finish the login); `GET /auth/callback/<namespace>/<name>` checks the state against the
//! cookie, exchanges the code (with the verifier and the gateway's client secret), verifies the
//! ID token (issuer, audience = the gateway's client, nonce, signature) and answers with a
//! gateway token ([`token`]) for the caller its claims describe.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{random_token, saml, token};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::http::url;

const COOKIE: &str = "llmgate_login";
const LOGIN_AUD: &str = "llmgate-login";
/// Time a person has to log in at the IdP.
const LOGIN_TTL_SECS: i64 = 600;

/// What the login cookie carries between the two requests.
#[derive(Serialize, Deserialize)]
struct Pending {
    aud: String,
    exp: i64,
    state: String,
    verifier: String,
    nonce: String,
    idp: String,
}

fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = GatewayError::bad_request(message, None).into_response();
    *r.status_mut() = status;
    r
}

/// `GET /auth/login/{namespace}/{name}`
#[derive(Deserialize)]
pub struct LoginParams {
    /// Passed to the IdP, which may preselect or prefill the account.
    login_hint: Option<String>,
}

pub async fn login(
    State(gw): State<Arc<Gateway>>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LoginParams>,
) -> Response {
    let rt = gw.runtime();
    let id = format!("{ns}/{name}");
    if let Some(sp) = rt.saml.iter().find(|s| s.id == id) {
        let Some(issuer) = &rt.gateway_tokens else {
            return failure(
                StatusCode::NOT_FOUND,
                "browser login needs a GatewayTokens resource to sign the tokens it ends in",
            );
        };
        let Some(key) = issuer.secrets().first().map(|k| k.to_vec()) else {
            return failure(StatusCode::INTERNAL_SERVER_ERROR, "no gateway token key");
        };
        let mut r = StatusCode::FOUND.into_response();
        if let Ok(loc) = HeaderValue::from_str(&sp.login_url(&saml::request_id(&key))) {
            r.headers_mut().insert(header::LOCATION, loc);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    let Some(v) = rt.verifiers.by_id(&id) else {
        return failure(StatusCode::NOT_FOUND, format!("no IdentityProvider {id}"));
    };
    let Some(login) = &v.oidc.login else {
        return failure(
            StatusCode::NOT_FOUND,
            format!("IdentityProvider {id} has no browser login configured"),
        );
    };
    let Some(issuer) = &rt.gateway_tokens else {
        return failure(
            StatusCode::NOT_FOUND,
            "browser login needs a GatewayTokens resource to sign the tokens it ends in",
        );
    };
    let endpoints = match v.keys.endpoints(&rt.idp_client).await {
        Ok(e) => e,
        Err(_) => {
            return failure(
                StatusCode::BAD_GATEWAY,
                format!("the identity provider {id} cannot be reached"),
            );
        }
    };
    let pending = Pending {
        aud: LOGIN_AUD.into(),
        exp: jiff::Timestamp::now().as_second() + LOGIN_TTL_SECS,
        state: random_token(24),
        verifier: random_token(48),
        nonce: random_token(24),
        idp: id,
    };
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(pending.verifier.as_bytes()));
    let Some(cookie) = issuer.sign_login(&pending) else {
        return failure(StatusCode::INTERNAL_SERVER_ERROR, "cannot sign the login");
    };
    let sep = if endpoints.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut location = format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={challenge}&code_challenge_method=S256",
        endpoints.authorization_endpoint,
        url::encode(&login.client_id),
        url::encode(&login.redirect_url),
        url::encode(&login.scopes.join(" ")),
        pending.state,
        pending.nonce,
    );
    if let Some(hint) = q.login_hint.filter(|h| !h.is_empty() && h.len() <= 256) {
        location.push_str("&login_hint=");
        location.push_str(&url::encode(&hint));
    }
    let secure = if login.redirect_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let mut r = StatusCode::FOUND.into_response();
    let h = r.headers_mut();
    if let (Ok(loc), Ok(c)) = (
        HeaderValue::from_str(&location),
        HeaderValue::from_str(&format!(
            "{COOKIE}={cookie}; Path=/auth; HttpOnly; SameSite=Lax; Max-Age={LOGIN_TTL_SECS}{secure}"
        )),
    ) {
        h.insert(header::LOCATION, loc);
        h.insert(header::SET_COOKIE, c);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback/{namespace}/{name}`
pub async fn callback(
    State(gw): State<Arc<Gateway>>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<CallbackParams>,
    headers: HeaderMap,
) -> Response {
    let rt = gw.runtime();
    let id = format!("{ns}/{name}");
    if let Some(e) = q.error {
        return failure(
            StatusCode::UNAUTHORIZED,
            format!(
                "the identity provider refused the login: {e} {}",
                q.error_description.unwrap_or_default()
            ),
        );
    }
    let (Some(v), Some(issuer)) = (rt.verifiers.by_id(&id), rt.gateway_tokens.as_ref()) else {
        return failure(StatusCode::NOT_FOUND, format!("no login through {id}"));
    };
    let Some(login) = &v.oidc.login else {
        return failure(StatusCode::NOT_FOUND, format!("no login through {id}"));
    };
    let pending = cookie(&headers).and_then(|c| issuer.open_login(c));
    let (Some(pending), Some(code), Some(state)) = (pending, q.code, q.state) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "this login was not started here, or took longer than 10 minutes: start again",
        );
    };
    if pending.state != state || pending.idp != id {
        return failure(
            StatusCode::BAD_REQUEST,
            "login state does not match: start again",
        );
    }
    let Ok(endpoints) = v.keys.endpoints(&rt.idp_client).await else {
        return failure(
            StatusCode::BAD_GATEWAY,
            "the identity provider cannot be reached",
        );
    };
    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
        url::encode(&code),
        url::encode(&login.redirect_url),
        url::encode(&pending.verifier),
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        url::encode(&login.client_id),
        url::encode(login.client_secret.expose())
    ));
    let req = Request::builder()
        .method(Method::POST)
        .uri(&endpoints.token_endpoint)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .body(Full::new(Bytes::from(form)));
    let Ok(req) = req else {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot build the token request",
        );
    };
    let exchanged = async {
        let resp = rt.idp_client.request(req).await.ok()?;
        let ok = resp.status().is_success();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((ok, body))
    };
    let Ok(Some((ok, body))) =
        tokio::time::timeout(std::time::Duration::from_secs(10), exchanged).await
    else {
        return failure(
            StatusCode::BAD_GATEWAY,
            "the identity provider's token endpoint did not answer",
        );
    };
    #[derive(Deserialize)]
    struct TokenResponse {
        id_token: Option<String>,
    }
    let id_token = serde_json::from_slice::<TokenResponse>(&body)
        .ok()
        .and_then(|t| t.id_token);
    let (true, Some(id_token)) = (ok, id_token) else {
        tracing::warn!(idp = %id, "authorization code exchange failed");
        return failure(
            StatusCode::UNAUTHORIZED,
            "the identity provider did not accept the login code: start again",
        );
    };
    let who = match v
        .verify_id_token(&id_token, &login.client_id, &pending.nonce, &rt.idp_client)
        .await
    {
        Ok(w) => w,
        Err(e) => {
            return GatewayError::InvalidToken(e).into_response();
        }
    };
    let (token, exp) = match issuer.mint(&who) {
        Ok(t) => t,
        Err(e) => return GatewayError::InvalidToken(e).into_response(),
    };
    tracing::info!(idp = %id, user = %who.principal.name(), "login: gateway token issued");
    token_page(&headers, &who, &token, exp)
}

/// The end of every login: the gateway token, as a page or as JSON.
fn token_page(
    headers: &HeaderMap,
    who: &crate::identity::TokenIdentity,
    token: &str,
    exp: i64,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let mut r = if wants_html {
        axum::response::Html(format!(
            "<!doctype html><meta charset=utf-8><title>llmgate login</title>\
             <h1>Logged in as {}</h1><p>Your llmgate token, valid until {}:</p>\
             <pre style=\"white-space:pre-wrap;word-break:break-all\">{token}</pre>\
             <p>Use it as the API key of any OpenAI SDK or CLI:</p>\
             <pre>export OPENAI_API_KEY={token}</pre>",
            html_escape(who.principal.name()),
            jiff::Timestamp::from_second(exp)
                .map(|t| t.to_string())
                .unwrap_or_default(),
        ))
        .into_response()
    } else {
        axum::Json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_at": exp,
            "user": who.principal.name(),
            "team": who.team.as_deref(),
            "groups": who.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
        }))
        .into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The login is finished: drop its cookie.
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("llmgate_login=; Path=/auth; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    r
}

#[derive(Deserialize)]
struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: String,
}

/// A SAML response is a few KiB (tens with many attributes); a cap well above that keeps the
/// unauthenticated ACS from buffering what `--max-body-bytes` allows on `/v1`.
const ACS_MAX_BODY: usize = 256 * 1024;
/// Signature checks run on the blocking pool, at most this many at once, so a flood of POSTs
/// can neither occupy the async workers that serve `/v1` nor every core.
static SAML_VERIFY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// How long a login waits for a verification slot before a 503.
const SAML_VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /auth/saml/acs/{namespace}/{name}`: the IdP's HTTP-POST binding.
pub async fn saml_acs(
    State(gw): State<Arc<Gateway>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let rt = gw.runtime();
    let id = format!("{ns}/{name}");
    if rt.gateway_tokens.is_none() || !rt.saml.iter().any(|s| s.id == id) {
        return failure(StatusCode::NOT_FOUND, format!("no SAML login through {id}"));
    }
    let body =
        match crate::http::body::read_limited(body, ACS_MAX_BODY, gw.settings.body_timeout).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
    let Ok(form) = serde_urlencoded::from_bytes::<AcsForm>(&body) else {
        return failure(StatusCode::BAD_REQUEST, "expected a form with SAMLResponse");
    };
    let Ok(Ok(slot)) = tokio::time::timeout(SAML_VERIFY_WAIT, SAML_VERIFY.acquire()).await else {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many SAML logins at once; retry in a few seconds",
        );
    };
    let verify_rt = rt.clone();
    let verify_id = id.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let sp = verify_rt.saml.iter().find(|s| s.id == verify_id)?;
        let keys = verify_rt.gateway_tokens.as_ref()?.secrets();
        Some(sp.consume(&form.saml_response, &|rid| saml::issued_by(rid, &keys)))
    })
    .await;
    drop(slot);
    let (who, assertion_id, until) = match verified {
        Ok(Some(Ok(x))) => x,
        Ok(Some(Err(e))) => {
            tracing::warn!(idp = %id, error = %e, "SAML assertion refused");
            return failure(StatusCode::UNAUTHORIZED, format!("SAML login refused: {e}"));
        }
        Ok(None) | Err(_) => {
            return failure(StatusCode::INTERNAL_SERVER_ERROR, "SAML login failed");
        }
    };
    let Some(issuer) = rt.gateway_tokens.as_ref() else {
        return failure(StatusCode::NOT_FOUND, format!("no SAML login through {id}"));
    };
    let ttl = (until - jiff::Timestamp::now().as_second()).max(1) as u64;
    if !gw
        .counters
        .claim_once(&format!("saml:{id}:{assertion_id}"), ttl)
        .await
    {
        tracing::warn!(idp = %id, assertion = %assertion_id, "SAML assertion replayed");
        return failure(
            StatusCode::UNAUTHORIZED,
            format!("SAML login refused: {}", saml::SamlError::Replayed),
        );
    }
    let (token, exp) = match issuer.mint(&who) {
        Ok(t) => t,
        Err(e) => return GatewayError::InvalidToken(e).into_response(),
    };
    tracing::info!(idp = %id, user = %who.principal.name(), "SAML login: gateway token issued");
    token_page(&headers, &who, &token, exp)
}

/// `GET /auth/saml/metadata/{namespace}/{name}`: this SP, for the IdP's administrators.
pub async fn saml_metadata(
    State(gw): State<Arc<Gateway>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let rt = gw.runtime();
    let id = format!("{ns}/{name}");
    let Some(sp) = rt.saml.iter().find(|s| s.id == id) else {
        return failure(
            StatusCode::NOT_FOUND,
            format!("no SAML IdentityProvider {id}"),
        );
    };
    let mut r = sp.metadata().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    r
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
        })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl token::Issuer {
    /// The login cookie: signed with the current gateway token key.
    fn sign_login(&self, p: &Pending) -> Option<String> {
        let (kid, key) = self.login_key()?;
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, p, key).ok()
    }

    fn open_login(&self, cookie: &str) -> Option<Pending> {
        let kid = super::jwt_header(cookie).ok()?.kid?;
        let key = self.login_decoding_key(&kid)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[LOGIN_AUD]);
        v.set_required_spec_claims(&["exp", "aud"]);
        jsonwebtoken::decode::<Pending>(cookie, key, &v)
            .ok()
            .map(|d| d.claims)
    }
}
