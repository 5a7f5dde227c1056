//! The API router: the OpenAI-compatible operations, the browser-login routes, and OpenAI-shaped
//! answers for unknown paths and methods.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::pipeline;

/// The OpenAI-compatible API.
pub fn api_router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(pipeline::chat))
        .route("/v1/embeddings", post(pipeline::embeddings))
        .route("/v1/models", get(pipeline::list_models))
        .route("/v1/models/{*id}", get(pipeline::get_model))
        .merge(login_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gw)
}

/// The browser-login routes. Their pages carry a token, so every answer forbids framing,
/// scripts, sniffing, caching and referrers.
fn login_routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route(
            "/auth/login/{namespace}/{name}",
            get(crate::identity::login::login),
        )
        .route(
            "/auth/callback/{namespace}/{name}",
            get(crate::identity::login::callback),
        )
        .route(
            "/auth/saml/acs/{namespace}/{name}",
            post(crate::identity::login::saml_acs),
        )
        .route(
            "/auth/saml/metadata/{namespace}/{name}",
            get(crate::identity::login::saml_metadata),
        )
        .layer(axum::middleware::map_response(browser_hardening))
}

async fn browser_hardening(mut r: axum::response::Response) -> axum::response::Response {
    use http::{HeaderValue, header};
    let h = r.headers_mut();
    // The token page is static HTML with one inline style attribute and nothing else.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn not_found(uri: http::Uri, headers: http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut r = GatewayError::bad_request(
        format!(
            "Unknown request URL: {}. llmgate serves /v1/chat/completions, /v1/embeddings and /v1/models.",
            uri.path()
        ),
        None,
    )
    .into_response();
    *r.status_mut() = http::StatusCode::NOT_FOUND;
    with_request_id(r, &headers)
}

async fn method_not_allowed(
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut r =
        GatewayError::bad_request(format!("{method} is not allowed on {}", uri.path()), None)
            .into_response();
    *r.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    with_request_id(r, &headers)
}

/// Requests outside the API still get an id to quote in a support ticket.
fn with_request_id(
    mut r: axum::response::Response,
    headers: &http::HeaderMap,
) -> axum::response::Response {
    if let Ok(v) = http::HeaderValue::from_str(&crate::pipeline::ctx::request_id(headers)) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}
