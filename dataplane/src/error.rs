//! Data-plane errors, classified for the wire: each maps to a bounded reason (a metric label and
//! the audit `error_reason`), an HTTP status, and an OpenAI-shaped body
//! `{"error": {"message", "type", "param", "code"}}` that the OpenAI SDKs turn into their typed
//! exceptions.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body was not received within {secs} s")]
    BodyTimeout { secs: u64 },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("Invalid identity token: {0}.")]
    InvalidToken(crate::identity::TokenError),
    #[error("{subject} may not use model `{model}`")]
    Forbidden { subject: String, model: String },
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),
    /// Declared, but left out of the configuration (a secret has no value).
    #[error("The model `{model}` is declared but not served: {why}")]
    ModelLeftOut { model: String, why: String },
    #[error("{0} is not supported by model `{1}`")]
    Unsupported(&'static str, String),
    /// The upstream answered with an error status; relayed with its own message.
    #[error("upstream returned {status}: {message}")]
    Upstream {
        status: StatusCode,
        message: String,
        /// The upstream's `error.type` and `error.code`, when it sent an OpenAI-shaped body.
        kind: Option<String>,
        code: Option<String>,
        retry_after: Option<HeaderValue>,
        /// Azure's (and the OpenAI SDKs' preferred) millisecond form, relayed when sent.
        retry_after_ms: Option<u32>,
    },
    /// The provider refused llmgate's own credentials (401/403). Its message is not relayed: it
    /// may echo part of the key, and the caller's key is not the one at fault.
    #[error(
        "the provider of model `{model}` refused the gateway's credentials; this is a gateway configuration problem, not your API key; the gateway's operators can see it in its log"
    )]
    UpstreamAuth { model: String },
    #[error("no replica of model `{0}` could be reached")]
    Unreachable(String),
    #[error("upstream of model `{0}` did not answer in time")]
    UpstreamTimeout(String),
    #[error("upstream sent a response llmgate cannot read: {0}")]
    BadUpstreamResponse(String),
    #[error(
        "Rate limit reached for {unit} on model `{model}`: {limit} allows no more {unit} per {per} right now"
    )]
    RateLimited {
        limit: std::sync::Arc<str>,
        unit: &'static str,
        per: &'static str,
        model: String,
        retry_after_us: u64,
    },
    #[error(
        "Request needs {needed} {unit}, more than {limit} allows in a whole {window} ({allowed})"
    )]
    ExceedsLimit {
        limit: std::sync::Arc<str>,
        unit: &'static str,
        needed: u64,
        allowed: u64,
        window: &'static str,
    },
    #[error(
        "Team `{team}` has spent its {period}ly budget {budget} (${amount_usd:.2}) for model `{model}`; it resets at {resets_at}"
    )]
    BudgetExhausted {
        budget: std::sync::Arc<str>,
        team: String,
        model: String,
        amount_usd: f64,
        period: &'static str,
        resets_at: String,
        retry_after_secs: u64,
    },
    #[error(
        "usage limits cannot be checked right now (the counter store is unreachable), and this model's limits fail closed"
    )]
    CountersUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whose fault an error is; decides the log level and whether the SDK should retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Client,
    Upstream,
    Internal,
}

impl GatewayError {
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest { .. }
            | GatewayError::InvalidJson(_)
            | GatewayError::Unsupported(..) => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::InvalidToken(crate::identity::TokenError::KeysUnavailable) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Unauthenticated(_) | GatewayError::InvalidToken(_) => {
                StatusCode::UNAUTHORIZED
            }
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound(_) | GatewayError::ModelLeftOut { .. } => {
                StatusCode::NOT_FOUND
            }
            // A client error upstream (bad parameters, its rate limit) is the caller's to see
            // as is; a server error upstream is a bad gateway from the caller's side.
            GatewayError::Upstream { status, .. } if status.is_client_error() => *status,
            GatewayError::Upstream { .. }
            | GatewayError::UpstreamAuth { .. }
            | GatewayError::BadUpstreamResponse(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::RateLimited { .. }
            | GatewayError::ExceedsLimit { .. }
            | GatewayError::BudgetExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::CountersUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Bounded label for metrics and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::BadRequest { .. } => "bad_request",
            GatewayError::InvalidJson(_) => "invalid_json",
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::BodyTimeout { .. } => "body_timeout",
            GatewayError::Unauthenticated(_) => "unauthenticated",
            GatewayError::InvalidToken(crate::identity::TokenError::KeysUnavailable) => {
                "identity_provider_unavailable"
            }
            GatewayError::InvalidToken(_) => "invalid_token",
            GatewayError::Forbidden { .. } => "forbidden",
            GatewayError::ModelNotFound(_) | GatewayError::ModelLeftOut { .. } => "model_not_found",
            GatewayError::Unsupported(..) => "unsupported",
            GatewayError::Upstream { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
                "upstream_rate_limited"
            }
            GatewayError::Upstream { status, .. } if status.is_client_error() => {
                "upstream_client_error"
            }
            GatewayError::Upstream { .. } => "upstream_server_error",
            GatewayError::UpstreamAuth { .. } => "upstream_auth_failed",
            GatewayError::Unreachable(_) => "upstream_unreachable",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::BadUpstreamResponse(_) => "bad_upstream_response",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::ExceedsLimit { .. } => "exceeds_rate_limit",
            GatewayError::BudgetExhausted { .. } => "budget_exhausted",
            GatewayError::CountersUnavailable => "counters_unavailable",
            GatewayError::Internal(_) => "internal",
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            GatewayError::Upstream { .. }
            | GatewayError::UpstreamAuth { .. }
            | GatewayError::Unreachable(_)
            | GatewayError::UpstreamTimeout(_)
            | GatewayError::BadUpstreamResponse(_) => Fault::Upstream,
            GatewayError::Internal(_) | GatewayError::CountersUnavailable => Fault::Internal,
            _ => Fault::Client,
        }
    }

    fn kind_and_code(&self) -> (&str, Option<&str>) {
        match self {
            GatewayError::BadRequest { .. } | GatewayError::Unsupported(..) => {
                ("invalid_request_error", None)
            }
            GatewayError::InvalidJson(_) => ("invalid_request_error", Some("invalid_json")),
            GatewayError::BodyTooLarge { .. } => {
                ("invalid_request_error", Some("request_too_large"))
            }
            GatewayError::BodyTimeout { .. } => ("invalid_request_error", Some("request_timeout")),
            GatewayError::Unauthenticated(_) => ("authentication_error", Some("invalid_api_key")),
            // The token may be fine: it cannot be checked now. Not an authentication error, so
            // a client keeps its token and retries.
            GatewayError::InvalidToken(crate::identity::TokenError::KeysUnavailable) => {
                ("api_error", Some("identity_provider_unavailable"))
            }
            GatewayError::InvalidToken(_) => ("authentication_error", Some("invalid_token")),
            GatewayError::Forbidden { .. } => ("permission_error", Some("model_not_allowed")),
            GatewayError::ModelNotFound(_) | GatewayError::ModelLeftOut { .. } => {
                ("invalid_request_error", Some("model_not_found"))
            }
            // A 4xx is about the caller's request: the provider's type and code say what. A 5xx
            // becomes llmgate's 502, with llmgate's code (the provider's message is kept).
            GatewayError::Upstream {
                kind, code, status, ..
            } if status.is_client_error() => (
                // Azure's 429 carries only a code; OpenAI calls its rate limits `requests`.
                kind.as_deref()
                    .unwrap_or(if *status == StatusCode::TOO_MANY_REQUESTS {
                        "requests"
                    } else {
                        "invalid_request_error"
                    }),
                code.as_deref().or(Some(self.reason())),
            ),
            GatewayError::Upstream { .. } => ("upstream_error", Some(self.reason())),
            GatewayError::UpstreamAuth { .. } => ("upstream_error", Some("upstream_auth_failed")),
            GatewayError::Unreachable(_) => ("upstream_error", Some("upstream_unreachable")),
            GatewayError::UpstreamTimeout(_) => ("upstream_error", Some("upstream_timeout")),
            GatewayError::BadUpstreamResponse(_) => {
                ("upstream_error", Some("bad_upstream_response"))
            }
            GatewayError::RateLimited { unit, .. } => (unit, Some("rate_limit_exceeded")),
            GatewayError::ExceedsLimit { unit, .. } => (unit, Some("rate_limit_exceeded")),
            GatewayError::BudgetExhausted { .. } => ("insufficient_quota", Some("budget_exceeded")),
            GatewayError::CountersUnavailable => ("server_error", Some("counters_unavailable")),
            GatewayError::Internal(_) => ("server_error", None),
        }
    }

    fn message(&self) -> String {
        match self {
            GatewayError::Upstream { message, .. } => message.clone(),
            GatewayError::Unauthenticated(m) => (*m).to_string(),
            GatewayError::Forbidden { .. } => format!(
                "{self}. Ask your platform team for access: access is granted by an AccessPolicy."
            ),
            GatewayError::ModelNotFound(_) => {
                format!("{self}. GET /v1/models lists the models you can use.")
            }
            _ => self.to_string(),
        }
    }

    /// The OpenAI-shaped JSON body.
    pub fn body(&self) -> Bytes {
        let (kind, code) = self.kind_and_code();
        let param = match self {
            GatewayError::BadRequest { param, .. } => *param,
            GatewayError::ModelNotFound(_)
            | GatewayError::ModelLeftOut { .. }
            | GatewayError::Forbidden { .. } => Some("model"),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorObject {
                message: &self.message(),
                r#type: kind,
                param,
                code,
            },
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The same error as one SSE event, for failures after a stream has started.
    pub fn sse_event(&self) -> Bytes {
        let mut v = b"data: ".to_vec();
        v.extend_from_slice(&self.body());
        v.extend_from_slice(b"\n\n");
        Bytes::from(v)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    r#type: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, self.body()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            GatewayError::Unauthenticated(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"llmgate\""),
                );
            }
            GatewayError::InvalidToken(crate::identity::TokenError::KeysUnavailable) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            GatewayError::InvalidToken(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"llmgate\", error=\"invalid_token\""),
                );
            }
            GatewayError::Upstream {
                retry_after,
                retry_after_ms,
                ..
            } => {
                if let Some(v) = retry_after {
                    h.insert(header::RETRY_AFTER, v.clone());
                }
                if let Some(ms) = retry_after_ms {
                    h.insert("retry-after-ms", HeaderValue::from(*ms));
                }
            }
            GatewayError::RateLimited { retry_after_us, .. } => {
                let secs = retry_after_us.div_ceil(1_000_000).max(1);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                h.insert(
                    "retry-after-ms",
                    HeaderValue::from(retry_after_us.div_ceil(1000).max(1)),
                );
            }
            GatewayError::BudgetExhausted {
                retry_after_secs, ..
            } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        // The SDKs retry 408/409/429/5xx; retrying our own client errors is pointless, but a
        // rate limit is worth waiting for.
        if self.fault() == Fault::Client && !matches!(self, GatewayError::RateLimited { .. }) {
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(e: &GatewayError) -> serde_json::Value {
        serde_json::from_slice(&e.body()).unwrap_or_default()
    }

    #[test]
    fn bodies_are_openai_shaped() {
        let e = GatewayError::ModelNotFound("gpt-9".into());
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let v = json(&e);
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("gpt-9")
        );

        let e = GatewayError::Upstream {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "slow down".into(),
            kind: Some("requests".into()),
            code: Some("rate_limit_exceeded".into()),
            retry_after: None,
            retry_after_ms: None,
        };
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.reason(), "upstream_rate_limited");
        assert_eq!(json(&e)["error"]["code"], "rate_limit_exceeded");

        let e = GatewayError::Upstream {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "boom".into(),
            kind: None,
            code: None,
            retry_after: None,
            retry_after_ms: None,
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(json(&e)["error"]["code"], "upstream_server_error");
    }

    #[test]
    fn unauthenticated_carries_www_authenticate() {
        let r = GatewayError::Unauthenticated("missing key").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(r.headers()["x-should-retry"], "false");
    }
}
