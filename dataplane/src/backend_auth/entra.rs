//! Microsoft Entra ID tokens for Azure OpenAI, by OAuth 2.0 client credentials.
//!
//! One token per endpoint, shared by all its requests: read lock-free from an `ArcSwap`,
//! refreshed five minutes before it expires (halfway for short-lived tokens). One refresh at a
//! time: while it runs, requests keep using the token that is still valid; only when there is
//! none do they wait for the fetch. A failed refresh keeps the old token until it expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use llmgate_snapshot::EntraCredential;
use serde::Deserialize;

use crate::http::client::UpstreamClient;

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

struct Token {
    header: HeaderValue,
    refresh_at: Instant,
    expires_at: Instant,
}

pub struct EntraTokens {
    cred: EntraCredential,
    token: ArcSwapOption<Token>,
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; Entra's v1 endpoint sends it as a string.
    expires_in: serde_json::Value,
}

impl EntraTokens {
    pub fn new(cred: EntraCredential) -> Self {
        EntraTokens {
            cred,
            token: ArcSwapOption::empty(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The `Authorization` header for the next attempt. The reason is for the log only.
    pub async fn header(&self, client: &UpstreamClient) -> Result<HeaderValue, String> {
        let now = Instant::now();
        let current = self.token.load_full();
        if let Some(t) = &current {
            if now < t.refresh_at {
                return Ok(t.header.clone());
            }
            if now < t.expires_at {
                // Still valid: one request refreshes, the others go on with it.
                let Ok(_guard) = self.refreshing.try_lock() else {
                    return Ok(t.header.clone());
                };
                return match self.fetch(client).await {
                    Ok(fresh) => Ok(fresh),
                    Err(e) => {
                        tracing::warn!(token_url = %self.cred.token_url, error = %e, "Entra ID token refresh failed; the current token is used until it expires");
                        Ok(t.header.clone())
                    }
                };
            }
        }
        let _guard = self.refreshing.lock().await;
        if let Some(t) = self.token.load_full()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.header.clone());
        }
        self.fetch(client).await
    }

    /// Forgets the token (the upstream refused it).
    pub fn forget(&self) {
        self.token.store(None);
    }

    async fn fetch(&self, client: &UpstreamClient) -> Result<HeaderValue, String> {
        let form = serde_urlencoded::to_string([
            ("grant_type", "client_credentials"),
            ("client_id", self.cred.client_id.as_str()),
            ("client_secret", self.cred.client_secret.expose()),
            ("scope", self.cred.scope.as_str()),
        ])
        .map_err(|e| e.to_string())?;
        let req = Request::post(&self.cred.token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let resp = tokio::time::timeout(FETCH_TIMEOUT, client.request(req))
            .await
            .map_err(|_| "the token endpoint did not answer in time".to_string())?
            .map_err(|e| format!("token endpoint: {e}"))?;
        let status = resp.status();
        let body = tokio::time::timeout(FETCH_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| "the token endpoint did not answer in time".to_string())?
            .map_err(|e| format!("token endpoint: {e}"))?
            .to_bytes();
        if !status.is_success() {
            // Entra's error body names the problem (AADSTS codes) and never echoes the secret.
            return Err(format!(
                "token endpoint answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        let t: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| format!("token response: {e}"))?;
        let lifetime = t
            .expires_in
            .as_u64()
            .or_else(|| t.expires_in.as_str().and_then(|s| s.parse().ok()))
            .map(Duration::from_secs)
            .ok_or("token response without expires_in")?;
        let mut header = HeaderValue::from_str(&format!("Bearer {}", t.access_token))
            .map_err(|_| "the token is not a valid header".to_string())?;
        header.set_sensitive(true);
        let refresh_in = lifetime
            .checked_sub(REFRESH_BEFORE)
            .filter(|d| *d >= lifetime / 2)
            .unwrap_or(lifetime / 2);
        self.token.store(Some(Arc::new(Token {
            header: header.clone(),
            refresh_at: started + refresh_in,
            expires_at: started + lifetime,
        })));
        Ok(header)
    }
}
