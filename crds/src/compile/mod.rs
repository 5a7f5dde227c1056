//! Resources → one [`Snapshot`] and the errors of the resources left out.
//!
//! `compile` is pure: no I/O, no clock. Secrets are resolved by the caller (from the Kubernetes
//! API, environment variables or a directory) and passed in, so tests can state "these
//! resources in, this snapshot and these errors out".
//!
//! What is left out when a resource is wrong: a `ModelEndpoint` or `ApiKey` with any error is
//! left out whole (serving half an endpoint is worse than not serving it). An `AccessPolicy`
//! keeps its valid rules and loses only the broken subjects, models or rules: dropping a
//! reference to something that does not exist never grants access, while dropping a whole deny
//! rule could.
//!
//! One file per kind, each with a `compile_all` over the resources of that kind; [`compile`]
//! below calls them in order and reads as the table of contents. Shared here: the input
//! ([`Resources`]), the output ([`Compiled`]), the error vocabulary and the helpers every kind
//! uses.

mod access_policy;
mod api_key;
mod gateway_tokens;
mod identity_provider;
mod model_endpoint;
mod team_budget;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use llmgate_snapshot::{
    self as snap, ModelSelector, ResourceRef, Secret, Snapshot, SnapshotContent,
};
use sha2::{Digest, Sha256};

use crate::duration::parse_millis;
use crate::object::{Metadata, Object};
use crate::parse::Resource;
use crate::resources::{
    AccessPolicySpec, ApiKeySpec, FailModeSpec, GatewayTokensSpec, IdentityProviderSpec,
    ModelEndpointSpec, SecretKeySelector, TeamBudgetSpec,
};

/// Everything compile reads.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub model_endpoints: Vec<Object<ModelEndpointSpec>>,
    pub access_policies: Vec<Object<AccessPolicySpec>>,
    pub api_keys: Vec<Object<ApiKeySpec>>,
    pub team_budgets: Vec<Object<TeamBudgetSpec>>,
    pub identity_providers: Vec<Object<IdentityProviderSpec>>,
    pub gateway_tokens: Vec<Object<GatewayTokensSpec>>,
    /// Values of the secret keys that [`Resources::secret_refs`] asked for; absent ones are
    /// reported as unresolved.
    pub secrets: BTreeMap<SecretKeyRef, Secret>,
    /// The ready endpoints of Services, for `service` replicas. `None` when the source cannot
    /// see Services (files), which makes such replicas an error.
    pub services: Option<BTreeMap<ServiceKey, Vec<ServiceBackend>>>,
}

/// A Service by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

/// One ready endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceBackend {
    /// IP address (v4 or v6).
    pub address: String,
    /// Port by EndpointSlice port name (`""` for an unnamed port).
    pub ports: BTreeMap<String, u16>,
    /// The pod (target) name, for replica names.
    pub target: Option<String>,
}

/// One key of one Secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKeyRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

impl fmt::Display for SecretKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "secret {}/{} key {}",
            self.namespace, self.name, self.key
        )
    }
}

impl Resources {
    pub fn push(&mut self, resource: Resource) {
        match resource {
            Resource::ModelEndpoint(r) => self.model_endpoints.push(r),
            Resource::AccessPolicy(r) => self.access_policies.push(r),
            Resource::ApiKey(r) => self.api_keys.push(r),
            Resource::TeamBudget(r) => self.team_budgets.push(r),
            Resource::IdentityProvider(r) => self.identity_providers.push(r),
            Resource::GatewayTokens(r) => self.gateway_tokens.push(r),
        }
    }

    /// The secret keys compile will look up, so the caller can resolve exactly these. Invalid
    /// references are left out: compile refuses them, and nothing is read for them.
    pub fn secret_refs(&self) -> BTreeSet<SecretKeyRef> {
        let mut refs = BTreeSet::new();
        let mut insert = |namespace: &str, s: &SecretKeySelector| {
            if let Ok(r) = key_ref(namespace, s) {
                refs.insert(r);
            }
        };
        for me in &self.model_endpoints {
            if let Some(c) = &me.spec.credentials {
                if let Some(k) = &c.api_key {
                    insert(namespace_of(&me.metadata), &k.secret_ref);
                }
                if let Some(e) = &c.entra {
                    insert(namespace_of(&me.metadata), &e.client_secret.secret_ref);
                }
            }
        }
        for k in &self.api_keys {
            if let Some(s) = &k.spec.secret_ref {
                insert(namespace_of(&k.metadata), s);
            }
        }
        for i in &self.identity_providers {
            if let Some(l) = i.spec.oidc.as_ref().and_then(|o| o.login.as_ref()) {
                insert(namespace_of(&i.metadata), &l.client_secret.secret_ref);
            }
        }
        for g in &self.gateway_tokens {
            for k in &g.spec.signing_keys {
                insert(namespace_of(&g.metadata), &k.secret_ref);
            }
        }
        refs
    }
}

/// The output of [`compile`].
#[derive(Clone, Debug)]
pub struct Compiled {
    pub snapshot: Snapshot,
    pub errors: Vec<CompileError>,
}

/// Why a resource (or part of one) was left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// A field holds a value llmgate cannot use.
    Invalid,
    /// Another resource already claims the same name or key.
    Conflict,
    /// A reference names a resource that does not exist.
    DanglingRef,
    /// A referenced secret key has no value (yet).
    MissingSecret,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Invalid => "Invalid",
            Reason::Conflict => "Conflict",
            Reason::DanglingRef => "DanglingRef",
            Reason::MissingSecret => "MissingSecret",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("{resource}: {field}: {message}")]
pub struct CompileError {
    pub resource: ResourceRef,
    /// Path of the field at fault, e.g. `spec.replicas[1].url`.
    pub field: String,
    pub reason: Reason,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

/// Compiles resources into a snapshot. Output order is stable (sorted by namespace and name),
/// so equal inputs give equal versions.
pub fn compile(resources: &Resources) -> Compiled {
    let mut errors = Vec::new();
    // References are checked against what is declared, valid or not: a rule naming a broken
    // endpoint is not itself broken.
    let declared = Declared::new(resources);
    let endpoints = model_endpoint::compile_all(resources, &mut errors);
    let api_keys = api_key::compile_all(resources, &mut errors);
    let (policies, rate_limits) = access_policy::compile_all(resources, &declared, &mut errors);
    let budgets = team_budget::compile_all(resources, &declared, &mut errors);
    let identity_providers = identity_provider::compile_all(resources, &mut errors);
    let gateway_tokens = gateway_tokens::compile_all(resources, &mut errors);

    errors.sort();
    Compiled {
        snapshot: Snapshot::new(SnapshotContent {
            endpoints,
            api_keys,
            policies,
            rate_limits,
            budgets,
            identity_providers,
            gateway_tokens,
        }),
        errors,
    }
}

/// The model names and API keys the resources declare, for references to check against.
struct Declared<'a> {
    models: BTreeSet<&'a str>,
    /// `namespace/name` of every ApiKey.
    keys: BTreeSet<String>,
    /// `namespace/name` of every IdentityProvider.
    identity_providers: BTreeSet<String>,
}

impl<'a> Declared<'a> {
    fn new(resources: &'a Resources) -> Self {
        Declared {
            models: resources
                .model_endpoints
                .iter()
                .map(|r| r.spec.model.as_str())
                .collect(),
            keys: resources
                .api_keys
                .iter()
                .map(|k| qualified(namespace_of(&k.metadata), name_of(&k.metadata)))
                .collect(),
            identity_providers: resources
                .identity_providers
                .iter()
                .map(|i| qualified(namespace_of(&i.metadata), name_of(&i.metadata)))
                .collect(),
        }
    }
}

struct Errs<'a>(Vec<CompileError>, &'a ResourceRef);

impl<'a> Errs<'a> {
    fn new(src: &'a ResourceRef) -> Self {
        Errs(Vec::new(), src)
    }
    fn push(&mut self, field: impl Into<String>, reason: Reason, message: impl Into<String>) {
        self.0.push(CompileError {
            resource: self.1.clone(),
            field: field.into(),
            reason,
            message: message.into(),
        });
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn fail_mode(spec: Option<FailModeSpec>, default: snap::FailMode) -> snap::FailMode {
    match spec {
        None => default,
        Some(FailModeSpec::Open) => snap::FailMode::Open,
        Some(FailModeSpec::Closed) => snap::FailMode::Closed,
    }
}

fn positive_millis(text: &str) -> Result<u64, String> {
    match parse_millis(text)? {
        0 => Err(format!("{text:?} must be greater than zero")),
        ms => Ok(ms),
    }
}

/// Lowercase hex SHA-256, the form API keys are stored and looked up in.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn namespace_of(meta: &Metadata) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn name_of(meta: &Metadata) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn qualified(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn source(kind: &str, meta: &Metadata) -> ResourceRef {
    ResourceRef {
        kind: kind.to_string(),
        namespace: namespace_of(meta).to_string(),
        name: name_of(meta).to_string(),
    }
}

/// A Secret reference, refused unless its name and key are ones Kubernetes allows: outside a
/// cluster they become a file `--secrets-dir/<name>/<key>` and an environment variable, so an
/// absolute path or a `..` must never reach either.
fn key_ref(namespace: &str, s: &SecretKeySelector) -> Result<SecretKeyRef, String> {
    if !is_dns_subdomain(&s.name) {
        return Err(format!(
            "secret name {:?} must be a Kubernetes name: lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit",
            s.name
        ));
    }
    let key_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if s.key.is_empty()
        || s.key.len() > 253
        || !s.key.chars().all(key_chars)
        || s.key.contains("..")
        || s.key == "."
    {
        return Err(format!(
            "secret key {:?} may hold only letters, digits, '-', '_' and '.', and never '..'",
            s.key
        ));
    }
    Ok(SecretKeyRef {
        namespace: namespace.to_string(),
        name: s.name.clone(),
        key: s.key.clone(),
    })
}

/// RFC 1123 subdomain, as Kubernetes names Secrets.
fn is_dns_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label)
}

/// The value of the Secret key `s` refers to, or why there is none: an invalid reference is
/// `Invalid`, a key without a value `MissingSecret` (which only leaves the resource out).
fn secret_value<'s>(
    namespace: &str,
    s: &SecretKeySelector,
    field: &str,
    secrets: &'s BTreeMap<SecretKeyRef, Secret>,
    errs: &mut Errs<'_>,
) -> Option<(SecretKeyRef, &'s Secret)> {
    let r = match key_ref(namespace, s) {
        Ok(r) => r,
        Err(m) => {
            errs.push(field, Reason::Invalid, m);
            return None;
        }
    };
    match secrets.get(&r) {
        Some(v) if !v.expose().trim().is_empty() => Some((r, v)),
        _ => {
            errs.push(field, Reason::MissingSecret, format!("{r} has no value"));
            None
        }
    }
}

/// Checks an upstream base URL and returns it without a trailing slash, plus `host:port`.
fn parse_base_url(url: &str) -> Result<(String, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?} must start with http:// or https://"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?} has no host"));
    };
    if uri.query().is_some() {
        return Err(format!("{url:?} must not carry a query string"));
    }
    let host = match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None => format!(
            "{}:{}",
            authority.host(),
            if scheme == "https" { 443 } else { 80 }
        ),
    };
    Ok((url.trim_end_matches('/').to_string(), host))
}

/// Model names (which must be served) and globs.
fn compile_models(
    at: &str,
    names: &[String],
    declared_models: &BTreeSet<&str>,
    errs: &mut Errs<'_>,
) -> Vec<ModelSelector> {
    let mut models = Vec::new();
    for (i, m) in names.iter().enumerate() {
        if m.contains(['*', '?']) {
            models.push(ModelSelector::Glob(m.clone()));
        } else if declared_models.contains(m.as_str()) {
            models.push(ModelSelector::Name(m.clone()));
        } else {
            errs.push(
                format!("{at}.models[{i}]"),
                Reason::DanglingRef,
                format!("no ModelEndpoint serves model {m:?}"),
            );
        }
    }
    models
}
