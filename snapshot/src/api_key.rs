//! What an `ApiKey` compiles to: a SHA-256 and the caller it speaks for.

use serde::{Deserialize, Serialize};

use crate::ResourceRef;

/// A gateway API key: only its SHA-256 is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub source: ResourceRef,
    /// Lowercase hex SHA-256 of the full key.
    pub sha256: String,
    pub principal: Principal,
    pub team: Option<String>,
}

/// Who a credential speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "camelCase")]
pub enum Principal {
    User(String),
    ServiceAccount(String),
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::User(n) | Principal::ServiceAccount(n) => n,
        }
    }
}
