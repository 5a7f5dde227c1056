//! Upstream credentials: what an attempt carries to prove llmgate may call the provider. Kept
//! apart from translation (`llm/`), which stays pure: an adapter builds the request, and
//! the endpoint's [`BackendAuth`] stamps it, once per attempt.
//!
//! Built per endpoint when a snapshot is applied, and kept across reloads while the endpoint is
//! unchanged, so a credential that is fetched or refreshed (rather than configured) can keep
//! its cache.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, header};
use http_body_util::Full;
use llmgate_snapshot::{Endpoint, Provider};

use crate::error::GatewayError;
use crate::http::client::UpstreamClient;

pub mod entra;

/// How one endpoint's upstream requests are authenticated.
pub enum BackendAuth {
    /// No credential (a self-hosted server without a key).
    None,
    /// `Authorization: Bearer <key>`, the header built once and marked sensitive so it never
    /// reaches a log.
    Bearer(HeaderValue),
    /// The key in a header of its own (Anthropic's `x-api-key`, Azure's `api-key`), also marked
    /// sensitive.
    Header(HeaderName, HeaderValue),
    /// Microsoft Entra ID tokens (Azure), fetched and refreshed by client credentials.
    Entra(entra::EntraTokens),
    /// The configured key cannot be sent as a header (a control character in the secret);
    /// every attempt fails with this, as the key would be refused anyway.
    Invalid,
}

impl BackendAuth {
    pub fn build(ep: &Endpoint) -> BackendAuth {
        if let Some(cred) = &ep.entra {
            return BackendAuth::Entra(entra::EntraTokens::new(cred.clone()));
        }
        let Some(key) = &ep.api_key else {
            return BackendAuth::None;
        };
        let value = match ep.provider {
            Provider::Anthropic | Provider::AzureOpenAi { .. } => {
                HeaderValue::from_str(key.expose())
            }
            _ => HeaderValue::from_str(&format!("Bearer {}", key.expose())),
        };
        match value {
            Ok(mut v) => {
                v.set_sensitive(true);
                match ep.provider {
                    Provider::Anthropic => {
                        BackendAuth::Header(HeaderName::from_static("x-api-key"), v)
                    }
                    Provider::AzureOpenAi { .. } => {
                        BackendAuth::Header(HeaderName::from_static("api-key"), v)
                    }
                    _ => BackendAuth::Bearer(v),
                }
            }
            Err(_) => BackendAuth::Invalid,
        }
    }

    /// Adds the credential to one attempt's request.
    pub async fn apply(
        &self,
        req: &mut http::Request<Full<Bytes>>,
        client: &UpstreamClient,
        model: &str,
    ) -> Result<(), GatewayError> {
        match self {
            BackendAuth::Entra(tokens) => {
                let v = tokens.header(client).await.map_err(|e| {
                    tracing::warn!(model, error = %e, "no Entra ID token for the upstream");
                    GatewayError::UpstreamAuth {
                        model: model.to_owned(),
                    }
                })?;
                req.headers_mut().insert(header::AUTHORIZATION, v);
                Ok(())
            }
            BackendAuth::None => Ok(()),
            BackendAuth::Bearer(v) => {
                req.headers_mut().insert(header::AUTHORIZATION, v.clone());
                Ok(())
            }
            BackendAuth::Header(name, v) => {
                req.headers_mut().insert(name.clone(), v.clone());
                Ok(())
            }
            BackendAuth::Invalid => Err(GatewayError::Internal(
                "credential is not a valid header".into(),
            )),
        }
    }

    /// The upstream refused the credential: a fetched one is forgotten, so the next attempt
    /// gets a new one (a token revoked or rotated before its expiry).
    pub fn refused(&self) {
        if let BackendAuth::Entra(tokens) = self {
            tokens.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use llmgate_snapshot::Secret;

    use super::*;

    fn request() -> http::Request<Full<Bytes>> {
        http::Request::post("http://u/v1/chat/completions")
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_key_becomes_a_sensitive_bearer_header() {
        let client = crate::http::client::Clients::default().get(1000);
        let mut ep = crate::test_support::endpoint("m", "m");
        ep.api_key = Some(Secret::new("sk-upstream"));
        let mut req = request();
        BackendAuth::build(&ep)
            .apply(&mut req, &client, "m")
            .await
            .expect("applied");
        let v = &req.headers()[header::AUTHORIZATION];
        assert_eq!(v, "Bearer sk-upstream");
        assert!(v.is_sensitive());
        assert!(
            !format!("{req:?}").contains("sk-upstream"),
            "the key never shows in Debug"
        );

        ep.provider = Provider::AzureOpenAi { api_version: None };
        let mut req = request();
        BackendAuth::build(&ep)
            .apply(&mut req, &client, "m")
            .await
            .expect("applied");
        assert_eq!(req.headers()["api-key"], "sk-upstream");
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        ep.provider = Provider::OpenAiCompatible;

        ep.api_key = None;
        let mut req = request();
        BackendAuth::build(&ep)
            .apply(&mut req, &client, "m")
            .await
            .expect("applied");
        assert!(req.headers().get(header::AUTHORIZATION).is_none());

        ep.api_key = Some(Secret::new("bad\nkey"));
        assert!(
            BackendAuth::build(&ep)
                .apply(&mut request(), &client, "m")
                .await
                .is_err()
        );
    }
}
