//! The fake's Azure OpenAI routes, checking what Azure checks and answering in its shapes:
//!
//! - `POST /openai/deployments/{deployment}/chat/completions` and `…/embeddings` need the
//!   `api-version` query parameter (404 `Resource not found` without it, as Azure answers);
//!   the deployment in the path chooses the behaviour, the body's `model` is ignored;
//! - `POST /openai/v1/chat/completions` and `…/embeddings`: the deployment is the body's `model`;
//! - the key is the `api-key` header, or `Authorization: Bearer` with the key or a token of the
//!   fake's Entra ID token endpoint: 401 with Azure's body (`code: "401"`, no `type`);
//! - `POST /{tenant}/oauth2/v2.0/token` is Entra ID's client-credentials grant: the form's
//!   `client_secret` must be the fake's key and `scope` Azure OpenAI's; tokens live an hour
//!   (2 s for tenant `short-lived`);
//! - deployment `fail-429` answers 429 with `code: "429"` (a string), `retry-after` and
//!   `retry-after-ms`; streams start with Azure's prompt-filter chunk (`choices: []`, empty `id`
//!   and `model`, `prompt_filter_results`); deployment `content-filter` ends its stream with
//!   `finish_reason: content_filter`.
//!
//! Everything else is the OpenAI fake's answer for that deployment as the model.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::state::Shared;

fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

const PROMPT_FILTER: &str = "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"},\"self_harm\":{\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{\"filtered\":false,\"severity\":\"safe\"},\"violence\":{\"filtered\":false,\"severity\":\"safe\"}}}]}\n\n";

async fn answer(
    s: Arc<Shared>,
    mut headers: HeaderMap,
    deployment: Option<String>,
    query: Option<String>,
    body: Bytes,
    embeddings: bool,
) -> Response {
    if deployment.is_some()
        && !query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .any(|kv| kv.starts_with("api-version=") && kv.len() > "api-version=".len())
    {
        return azure_error(StatusCode::NOT_FOUND, "404", "Resource not found");
    }
    let key = headers.get("api-key").and_then(|v| v.to_str().ok());
    let bearer = format!("Bearer {}", s.api_key);
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token_issued = auth.strip_prefix("Bearer ").is_some_and(|t| {
        s.issued_tokens
            .lock()
            .is_ok_and(|issued| issued.iter().any(|i| i == t))
    });
    let authorized = key == Some(s.api_key.as_str()) || auth == bearer || token_issued;
    if !authorized {
        s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        );
    }
    let mut req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Deployment names cannot hold ':', so `chunks-20` stands for the behaviour `chunks:20`.
    let chosen = deployment
        .clone()
        .or_else(|| req["model"].as_str().map(str::to_owned))
        .unwrap_or_default()
        .replacen("chunks-", "chunks:", 1);
    if s.behaviour_for(&chosen) == "fail-429" {
        s.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut r = azure_error(
            StatusCode::TOO_MANY_REQUESTS,
            "429",
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 2 seconds.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        r.headers_mut()
            .insert("retry-after-ms", HeaderValue::from_static("2000"));
        return r;
    }
    // The deployment decides; the OpenAI fake answers as if it were the model.
    if req.is_object() {
        req["model"] = Value::String(chosen.clone());
    }
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&bearer).unwrap_or(HeaderValue::from_static("")),
    );
    let body = Bytes::from(req.to_string());
    let inner = if embeddings {
        super::openai::embeddings(State(Arc::clone(&s)), headers, body).await
    } else {
        super::openai::chat(State(Arc::clone(&s)), headers, body).await
    };
    let streaming = inner
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        return inner;
    }
    let filter = chosen == "content-filter";
    let (parts, body) = inner.into_parts();
    let rest = body.into_data_stream().map(move |chunk| {
        chunk.map(|b| {
            if filter {
                // The last content chunk's finish becomes the filter's.
                Bytes::from(String::from_utf8_lossy(&b).replace(
                    "\"finish_reason\":\"stop\"",
                    "\"finish_reason\":\"content_filter\"",
                ))
            } else {
                b
            }
        })
    });
    let first =
        futures_util::stream::once(async { Ok(Bytes::from_static(PROMPT_FILTER.as_bytes())) });
    Response::from_parts(parts, Body::from_stream(first.chain(rest)))
}

pub(crate) async fn deployment_chat(
    State(s): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(s, headers, Some(deployment), q, body, false).await
}

pub(crate) async fn deployment_embeddings(
    State(s): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(s, headers, Some(deployment), q, body, true).await
}

pub(crate) async fn v1_chat(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(s, headers, None, None, body, false).await
}

pub(crate) async fn v1_embeddings(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(s, headers, None, None, body, true).await
}

pub(crate) async fn entra_token(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: String,
) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let oauth_error = |code: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": code, "error_description": description}).to_string(),
        )
            .into_response()
    };
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            "unsupported_grant_type",
            "AADSTS70003: grant_type must be client_credentials",
        );
    }
    if field("client_id").is_none_or(str::is_empty) {
        return oauth_error(
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
        );
    }
    if field("client_secret") != Some(s.api_key.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}).to_string(),
        )
            .into_response();
    }
    if field("scope") != Some("https://cognitiveservices.azure.com/.default") {
        return oauth_error(
            "invalid_scope",
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        );
    }
    let n = s.stats.tokens_issued.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("entra-{tenant}-{n}");
    if let Ok(mut issued) = s.issued_tokens.lock() {
        issued.push(token.clone());
    }
    let lifetime = if tenant == "short-lived" { 2 } else { 3599 };
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}).to_string(),
    )
        .into_response()
}
