//! Authenticate stage: `Authorization: Bearer <key>` → the ApiKey it belongs to.
//!
//! Keys are stored as SHA-256 digests only. The presented key is hashed, looked up by digest, and
//! the digest compared in constant time; timing reveals nothing about stored keys beyond what a
//! hash lookup of an unpredictable digest does.

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::runtime::{KeyRt, Runtime};

pub fn authenticate<'r>(rt: &'r Runtime, headers: &HeaderMap) -> Result<&'r KeyRt, GatewayError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(GatewayError::Unauthenticated(
            "Missing credentials: send your llmgate API key as `Authorization: Bearer <key>`.",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(GatewayError::Unauthenticated(
            "Malformed Authorization header: expected `Bearer <key>`.",
        ))?;
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    rt.key_by_digest(&digest)
        .ok_or(GatewayError::Unauthenticated(
            "Incorrect API key provided. Check the key, or ask your platform team for one.",
        ))
}
