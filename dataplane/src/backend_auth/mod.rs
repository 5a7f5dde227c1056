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
    /// The configured key cannot be sent as a header (a control character in the secret);
    /// every attempt fails with this, as the key would be refused anyway.
    Invalid,
}

impl BackendAuth {
    pub fn build(ep: &Endpoint) -> BackendAuth {
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
    pub fn apply(&self, req: &mut http::Request<Full<Bytes>>) -> Result<(), GatewayError> {
        match self {
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

    #[test]
    fn a_key_becomes_a_sensitive_bearer_header() {
        let mut ep = crate::test_support::endpoint("m", "m");
        ep.api_key = Some(Secret::new("sk-upstream"));
        let mut req = request();
        BackendAuth::build(&ep).apply(&mut req).expect("applied");
        let v = &req.headers()[header::AUTHORIZATION];
        assert_eq!(v, "Bearer sk-upstream");
        assert!(v.is_sensitive());
        assert!(
            !format!("{req:?}").contains("sk-upstream"),
            "the key never shows in Debug"
        );

        ep.api_key = None;
        let mut req = request();
        BackendAuth::build(&ep).apply(&mut req).expect("applied");
        assert!(req.headers().get(header::AUTHORIZATION).is_none());

        ep.api_key = Some(Secret::new("bad\nkey"));
        assert!(BackendAuth::build(&ep).apply(&mut request()).is_err());
    }
}
