//! The compiled llmgate configuration: what a data plane needs to serve, and nothing of
//! Kubernetes.
//!
//! A [`Snapshot`] is produced by `llmgate_crds::compile` (in the operator, or in the data
//! plane's standalone mode) and is immutable once built. Its [`Snapshot::version`] is a content
//! hash, so two compiles of the same resources give the same version and a publisher can skip
//! no-op updates. Secrets resolved at compile time travel inside the snapshot as [`Secret`],
//! whose `Debug` never prints the value.
//!
//! One file per resource kind, re-exported here so every type keeps its path
//! (`llmgate_snapshot::Endpoint`, …).

mod access_policy;
mod api_key;
pub mod distribution;
mod endpoint;
mod identity;
mod team_budget;

pub use access_policy::*;
pub use api_key::*;
pub use endpoint::*;
pub use identity::*;
pub use team_budget::*;

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One validated, self-contained configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `sha256:<first 16 bytes hex>` of the canonical JSON of everything below.
    pub version: String,
    pub endpoints: Vec<Endpoint>,
    pub api_keys: Vec<ApiKey>,
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    #[serde(default)]
    pub budgets: Vec<Budget>,
    #[serde(default)]
    pub identity_providers: Vec<IdentityProvider>,
    #[serde(default)]
    pub gateway_tokens: Option<GatewayTokens>,
}

/// The parts of a snapshot that its version hashes over.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotContent {
    pub endpoints: Vec<Endpoint>,
    pub api_keys: Vec<ApiKey>,
    pub policies: Vec<Policy>,
    pub rate_limits: Vec<RateLimit>,
    pub budgets: Vec<Budget>,
    pub identity_providers: Vec<IdentityProvider>,
    pub gateway_tokens: Option<GatewayTokens>,
}

impl Snapshot {
    /// Stamps content with its hash. Inputs are expected in a stable order (compile sorts them),
    /// so equal content gives equal versions.
    pub fn new(content: SnapshotContent) -> Self {
        // Serializing plain data structs to JSON cannot fail (no maps with non-string keys).
        let canonical = serde_json::to_vec(&content).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let version = format!("sha256:{}", hex(&digest[..16]));
        let SnapshotContent {
            endpoints,
            api_keys,
            policies,
            rate_limits,
            budgets,
            identity_providers,
            gateway_tokens,
        } = content;
        Snapshot {
            version,
            endpoints,
            api_keys,
            policies,
            rate_limits,
            budgets,
            identity_providers,
            gateway_tokens,
        }
    }

    /// Whether any limit or budget needs shared counters.
    pub fn needs_counters(&self) -> bool {
        !self.rate_limits.is_empty() || !self.budgets.is_empty()
    }

    /// An empty snapshot: serves nothing, denies everything.
    pub fn empty() -> Self {
        Self::new(SnapshotContent::default())
    }
}

/// Where a compiled entry came from, for errors, audit and `explain`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What a limit or budget does when the shared counter store cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailMode {
    /// Admit within a bounded allowance counted on each replica, reconciled when the store
    /// returns.
    Open,
    /// Refuse with 503 until the store returns.
    #[default]
    Closed,
}

/// Iterative wildcard match with backtracking to the last `*`: linear in practice, no regex.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A credential value. Serializes as itself (snapshots carry credentials to authenticated data
/// planes) but never shows in `Debug` output, so logs and traces cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match(b"gpt-*", b"gpt-4o"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"*-mini", b"gpt-4o-mini"));
        assert!(glob_match(b"g?t-4", b"gpt-4"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"gpt-*", b"llama-3"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(!glob_match(b"gpt-4", b"gpt-4o"));
    }

    #[test]
    fn version_is_a_content_hash() {
        let a = Snapshot::empty();
        let b = Snapshot::empty();
        assert_eq!(a.version, b.version);
        assert!(a.version.starts_with("sha256:"));
        let mut content = SnapshotContent::default();
        content.policies.push(Policy {
            source: ResourceRef {
                kind: "AccessPolicy".into(),
                namespace: "default".into(),
                name: "p".into(),
            },
            rules: vec![],
        });
        assert_ne!(Snapshot::new(content).version, a.version);
    }

    #[test]
    fn secret_debug_never_shows_the_value() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(
            serde_json::to_string(&s).unwrap_or_default(),
            "\"sk-live-123\""
        );
    }
}
