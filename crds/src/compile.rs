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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use llmgate_snapshot::{
    self as snap, Endpoint, Failover, ModelSelector, Pricing, Provider, ResourceRef, Secret,
    Snapshot, SnapshotContent, Timeouts,
};
use sha2::{Digest, Sha256};

use crate::duration::parse_millis;
use crate::parse::Resource;
use crate::resources::{
    AccessPolicy, ApiKey, EffectSpec, FailModeSpec, GatewayTokens, IdentityProvider,
    LimitDimensionSpec, ModelEndpoint, PeriodSpec, ProviderKind, RateLimitSpec, RuleSpec,
    SecretKeySelector, SubjectSpec, TeamBudget, WindowSpec,
};

/// Everything compile reads.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub model_endpoints: Vec<ModelEndpoint>,
    pub access_policies: Vec<AccessPolicy>,
    pub api_keys: Vec<ApiKey>,
    pub team_budgets: Vec<TeamBudget>,
    pub identity_providers: Vec<IdentityProvider>,
    pub gateway_tokens: Vec<GatewayTokens>,
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

    /// The secret keys compile will look up, so the caller can resolve exactly these.
    pub fn secret_refs(&self) -> BTreeSet<SecretKeyRef> {
        let mut refs = BTreeSet::new();
        for me in &self.model_endpoints {
            if let Some(c) = &me.spec.credentials {
                refs.insert(key_ref(namespace_of(&me.metadata), &c.api_key.secret_ref));
            }
        }
        for k in &self.api_keys {
            if let Some(s) = &k.spec.secret_ref {
                refs.insert(key_ref(namespace_of(&k.metadata), s));
            }
        }
        for i in &self.identity_providers {
            if let Some(l) = i.spec.oidc.as_ref().and_then(|o| o.login.as_ref()) {
                refs.insert(key_ref(
                    namespace_of(&i.metadata),
                    &l.client_secret.secret_ref,
                ));
            }
        }
        for g in &self.gateway_tokens {
            for k in &g.spec.signing_keys {
                refs.insert(key_ref(namespace_of(&g.metadata), &k.secret_ref));
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

    let mut endpoints_in: Vec<&ModelEndpoint> = resources.model_endpoints.iter().collect();
    endpoints_in.sort_by_key(|r| source("ModelEndpoint", &r.metadata));
    let declared_models: BTreeSet<&str> =
        endpoints_in.iter().map(|r| r.spec.model.as_str()).collect();
    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut seen_models: BTreeMap<String, ResourceRef> = BTreeMap::new();
    for me in endpoints_in {
        let src = source("ModelEndpoint", &me.metadata);
        let mut errs = Errs::new(&src);
        let endpoint = compile_endpoint(
            me,
            &src,
            &resources.secrets,
            resources.services.as_ref(),
            &mut errs,
        );
        if let Some(first) = seen_models.get(&me.spec.model) {
            errs.push(
                "spec.model",
                Reason::Conflict,
                format!("model {:?} is already served by {first}", me.spec.model),
            );
        }
        if let Some(e) = endpoint.filter(|_| errs.is_empty()) {
            seen_models.insert(e.model.clone(), src.clone());
            endpoints.push(e);
        }
        errors.extend(errs.0);
    }

    let mut keys_in: Vec<&ApiKey> = resources.api_keys.iter().collect();
    keys_in.sort_by_key(|r| source("ApiKey", &r.metadata));
    let declared_keys: BTreeSet<String> = keys_in
        .iter()
        .map(|k| qualified(namespace_of(&k.metadata), name_of(&k.metadata)))
        .collect();
    let mut api_keys = Vec::new();
    let mut seen_hashes: BTreeMap<String, ResourceRef> = BTreeMap::new();
    for k in keys_in {
        let src = source("ApiKey", &k.metadata);
        let mut errs = Errs::new(&src);
        if let Some(key) = compile_api_key(k, &src, &resources.secrets, &mut errs) {
            if let Some(first) = seen_hashes.get(&key.sha256) {
                errs.push(
                    "spec",
                    Reason::Conflict,
                    format!("the same key is already declared by {first}"),
                );
            } else if errs.is_empty() {
                seen_hashes.insert(key.sha256.clone(), src.clone());
                api_keys.push(key);
            }
        }
        errors.extend(errs.0);
    }

    let mut policies_in: Vec<&AccessPolicy> = resources.access_policies.iter().collect();
    policies_in.sort_by_key(|r| source("AccessPolicy", &r.metadata));
    let mut policies = Vec::new();
    let mut rate_limits = Vec::new();
    for p in policies_in {
        let src = source("AccessPolicy", &p.metadata);
        let mut errs = Errs::new(&src);
        let ns = namespace_of(&p.metadata);
        let rules = p
            .spec
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                compile_rule(i, r, ns, &declared_models, &declared_keys, &mut errs)
            })
            .collect::<Vec<_>>();
        if !rules.is_empty() {
            policies.push(snap::Policy {
                source: src.clone(),
                rules,
            });
        }
        let mut names = BTreeSet::new();
        for (i, l) in p.spec.rate_limits.iter().enumerate() {
            if !names.insert(l.name.as_str()) {
                errs.push(
                    format!("spec.rateLimits[{i}].name"),
                    Reason::Conflict,
                    format!(
                        "another rate limit of this policy is already named {:?}",
                        l.name
                    ),
                );
                continue;
            }
            let before = errs.0.len();
            let limit = compile_rate_limit(i, l, &src, &declared_models, &declared_keys, &mut errs);
            // A limit is kept whole or not at all: dropping a broken subject would widen it to
            // callers it was never meant for.
            if errs.0.len() == before {
                rate_limits.push(limit);
            }
        }
        errors.extend(errs.0);
    }

    let mut budgets_in: Vec<&TeamBudget> = resources.team_budgets.iter().collect();
    budgets_in.sort_by_key(|r| source("TeamBudget", &r.metadata));
    let mut budgets = Vec::new();
    for b in budgets_in {
        let src = source("TeamBudget", &b.metadata);
        let mut errs = Errs::new(&src);
        let budget = compile_budget(b, &src, &declared_models, &mut errs);
        if errs.is_empty() {
            budgets.push(budget);
        }
        errors.extend(errs.0);
    }

    let mut idps_in: Vec<&IdentityProvider> = resources.identity_providers.iter().collect();
    idps_in.sort_by_key(|r| source("IdentityProvider", &r.metadata));
    let mut identity_providers: Vec<snap::IdentityProvider> = Vec::new();
    for idp in idps_in {
        let src = source("IdentityProvider", &idp.metadata);
        let mut errs = Errs::new(&src);
        let compiled = compile_identity_provider(idp, &src, &resources.secrets, &mut errs);
        let issuer = |p: &snap::IdentityProvider| p.oidc.as_ref().map(|o| o.issuer.clone());
        if let Some(first) = identity_providers
            .iter()
            .find(|p| issuer(p).is_some() && issuer(p) == issuer(&compiled))
        {
            errs.push(
                "spec.oidc.issuer",
                Reason::Conflict,
                format!(
                    "issuer {:?} is already declared by {}",
                    issuer(&compiled).unwrap_or_default(),
                    first.source
                ),
            );
        }
        if errs.is_empty() {
            identity_providers.push(compiled);
        }
        errors.extend(errs.0);
    }

    let mut gwt_in: Vec<&GatewayTokens> = resources.gateway_tokens.iter().collect();
    gwt_in.sort_by_key(|r| source("GatewayTokens", &r.metadata));
    let mut gateway_tokens: Option<snap::GatewayTokens> = None;
    for g in gwt_in {
        let src = source("GatewayTokens", &g.metadata);
        let mut errs = Errs::new(&src);
        let compiled = compile_gateway_tokens(g, &src, &resources.secrets, &mut errs);
        if let Some(first) = &gateway_tokens {
            errs.push(
                "metadata.name",
                Reason::Conflict,
                format!("gateway tokens are already configured by {}", first.source),
            );
        }
        if errs.is_empty() {
            gateway_tokens = Some(compiled);
        }
        errors.extend(errs.0);
    }

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

fn compile_endpoint(
    me: &ModelEndpoint,
    src: &ResourceRef,
    secrets: &BTreeMap<SecretKeyRef, Secret>,
    services: Option<&BTreeMap<ServiceKey, Vec<ServiceBackend>>>,
    errs: &mut Errs<'_>,
) -> Option<Endpoint> {
    let spec = &me.spec;
    if spec.model.is_empty()
        || spec.model.len() > 256
        || spec
            .model
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        errs.push(
            "spec.model",
            Reason::Invalid,
            "model must be 1-256 characters without whitespace",
        );
    }
    let provider = match spec.provider {
        ProviderKind::OpenAi => Provider::OpenAi,
        ProviderKind::OpenAiCompatible => Provider::OpenAiCompatible,
        ProviderKind::Mock => Provider::Mock(compile_mock(spec.mock.as_ref(), errs)),
    };
    if spec.mock.is_some() && spec.provider != ProviderKind::Mock {
        errs.push(
            "spec.mock",
            Reason::Invalid,
            "mock settings are only valid with provider: mock",
        );
    }

    let mut replicas = Vec::new();
    match spec.provider {
        ProviderKind::Mock if !spec.replicas.is_empty() => errs.push(
            "spec.replicas",
            Reason::Invalid,
            "the mock provider runs inside the gateway and takes no replicas",
        ),
        ProviderKind::Mock => {}
        ProviderKind::OpenAi if spec.replicas.is_empty() => replicas.push(snap::Replica {
            name: "api.openai.com".into(),
            url: "https://api.openai.com/v1".into(),
        }),
        ProviderKind::OpenAiCompatible if spec.replicas.is_empty() => errs.push(
            "spec.replicas",
            Reason::Invalid,
            "openai-compatible needs at least one replica URL, e.g. http://vllm:8000/v1",
        ),
        _ => {}
    }
    let mut names = BTreeSet::new();
    let mut add = |i: usize, name: String, url: String, errs: &mut Errs<'_>| {
        if !names.insert(name.clone()) {
            errs.push(
                format!("spec.replicas[{i}]"),
                Reason::Conflict,
                format!("replica name {name:?} is used twice; give each a distinct name"),
            );
        }
        replicas.push(snap::Replica { name, url });
    };
    for (i, r) in spec.replicas.iter().enumerate() {
        match (&r.url, &r.service) {
            (Some(u), None) => match parse_base_url(u) {
                Ok((url, host)) => add(i, r.name.clone().unwrap_or(host), url, errs),
                Err(m) => errs.push(format!("spec.replicas[{i}].url"), Reason::Invalid, m),
            },
            (None, Some(svc)) => {
                for (name, url) in service_replicas(i, &src.namespace, svc, services, errs) {
                    add(i, name, url, errs);
                }
            }
            _ => errs.push(
                format!("spec.replicas[{i}]"),
                Reason::Invalid,
                "set exactly one of url, service",
            ),
        }
    }

    let api_key = match &spec.credentials {
        Some(c) => {
            let r = key_ref(&src.namespace, &c.api_key.secret_ref);
            match secrets.get(&r) {
                Some(v) if !v.expose().trim().is_empty() => Some(v.clone()),
                _ => {
                    errs.push(
                        "spec.credentials.apiKey.secretRef",
                        Reason::MissingSecret,
                        format!("{r} has no value"),
                    );
                    None
                }
            }
        }
        None if spec.provider == ProviderKind::OpenAi => {
            errs.push(
                "spec.credentials",
                Reason::Invalid,
                "provider openai needs credentials.apiKey.secretRef",
            );
            None
        }
        None => None,
    };

    let pricing = spec
        .pricing
        .as_ref()
        .map(|p| Pricing {
            input_per_million: p.input_per_million,
            output_per_million: p.output_per_million,
        })
        .unwrap_or_default();
    for (field, v) in [
        ("spec.pricing.inputPerMillion", pricing.input_per_million),
        ("spec.pricing.outputPerMillion", pricing.output_per_million),
    ] {
        if !v.is_finite() || v < 0.0 {
            errs.push(field, Reason::Invalid, "price must be a number ≥ 0");
        }
    }

    let mut timeouts = Timeouts::default();
    if let Some(t) = &spec.timeouts {
        for (field, value, slot) in [
            (
                "spec.timeouts.connect",
                &t.connect,
                &mut timeouts.connect_ms,
            ),
            (
                "spec.timeouts.firstByte",
                &t.first_byte,
                &mut timeouts.first_byte_ms,
            ),
            ("spec.timeouts.total", &t.total, &mut timeouts.total_ms),
        ] {
            if let Some(v) = value {
                match positive_millis(v) {
                    Ok(ms) => *slot = ms,
                    Err(m) => errs.push(field, Reason::Invalid, m),
                }
            }
        }
    }

    let mut failover = Failover::default();
    if let Some(f) = &spec.failover {
        if let Some(n) = f.max_attempts {
            if n == 0 || n > 10 {
                errs.push(
                    "spec.failover.maxAttempts",
                    Reason::Invalid,
                    "maxAttempts must be between 1 and 10",
                );
            }
            failover.max_attempts = n;
        }
        if let Some(n) = f.eject_after_failures {
            if n == 0 {
                errs.push(
                    "spec.failover.ejectAfterFailures",
                    Reason::Invalid,
                    "ejectAfterFailures must be at least 1",
                );
            }
            failover.eject_after_failures = n;
        }
        if let Some(d) = &f.eject_for {
            match positive_millis(d) {
                Ok(ms) => failover.eject_base_ms = ms,
                Err(m) => errs.push("spec.failover.ejectFor", Reason::Invalid, m),
            }
        }
    }

    Some(Endpoint {
        model: spec.model.clone(),
        source: src.clone(),
        upstream_model: spec
            .upstream_model
            .clone()
            .unwrap_or_else(|| spec.model.clone()),
        owned_by: spec
            .owned_by
            .clone()
            .unwrap_or_else(|| provider.kind().to_string()),
        provider,
        replicas,
        api_key,
        pricing,
        timeouts,
        failover,
        labels: me.metadata.labels.clone().unwrap_or_default(),
        max_output_tokens: spec
            .max_output_tokens
            .unwrap_or(snap::DEFAULT_MAX_OUTPUT_TOKENS)
            .max(1),
        created: me
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
    })
}

fn compile_mock(spec: Option<&crate::resources::MockSpec>, errs: &mut Errs<'_>) -> snap::MockModel {
    let default = crate::resources::MockSpec::default();
    let m = spec.unwrap_or(&default);
    let mut millis = |field: &str, v: &Option<String>| match v {
        None => 0,
        Some(s) => parse_millis(s).unwrap_or_else(|e| {
            errs.push(field, Reason::Invalid, e);
            0
        }),
    };
    let latency_ms = millis("spec.mock.latency", &m.latency);
    let chunk_interval_ms = millis("spec.mock.chunkInterval", &m.chunk_interval);
    let chunk_words = m.chunk_words.unwrap_or(1);
    if chunk_words == 0 {
        errs.push(
            "spec.mock.chunkWords",
            Reason::Invalid,
            "chunkWords must be at least 1",
        );
    }
    let embedding_dimensions = m.embedding_dimensions.unwrap_or(8);
    if embedding_dimensions == 0 || embedding_dimensions > 8192 {
        errs.push(
            "spec.mock.embeddingDimensions",
            Reason::Invalid,
            "embeddingDimensions must be between 1 and 8192",
        );
    }
    snap::MockModel {
        content: m
            .content
            .clone()
            .unwrap_or_else(|| "This is a mock response from llmgate.".into()),
        echo: m.echo,
        latency_ms,
        chunk_interval_ms,
        chunk_words: chunk_words.max(1),
        completion_tokens: m.completion_tokens,
        prompt_tokens: m.prompt_tokens,
        embedding_dimensions,
    }
}

fn compile_api_key(
    k: &ApiKey,
    src: &ResourceRef,
    secrets: &BTreeMap<SecretKeyRef, Secret>,
    errs: &mut Errs<'_>,
) -> Option<snap::ApiKey> {
    let spec = &k.spec;
    let principal = match (&spec.user, &spec.service_account) {
        (Some(u), None) if !u.is_empty() => Some(snap::Principal::User(u.clone())),
        (None, Some(s)) if !s.is_empty() => Some(snap::Principal::ServiceAccount(s.clone())),
        _ => {
            errs.push(
                "spec",
                Reason::Invalid,
                "set exactly one of user, serviceAccount",
            );
            None
        }
    };
    let sha256 = match (&spec.sha256, &spec.secret_ref) {
        (Some(h), None) => {
            let h = h.trim().to_ascii_lowercase();
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                Some(h)
            } else {
                errs.push(
                    "spec.sha256",
                    Reason::Invalid,
                    "sha256 must be 64 hex digits (printf %s \"$KEY\" | sha256sum)",
                );
                None
            }
        }
        (None, Some(s)) => {
            let r = key_ref(&src.namespace, s);
            match secrets.get(&r) {
                Some(v) if !v.expose().is_empty() => Some(sha256_hex(v.expose().trim())),
                _ => {
                    errs.push(
                        "spec.secretRef",
                        Reason::MissingSecret,
                        format!("{r} has no value"),
                    );
                    None
                }
            }
        }
        _ => {
            errs.push(
                "spec",
                Reason::Invalid,
                "set exactly one of sha256, secretRef",
            );
            None
        }
    };
    Some(snap::ApiKey {
        source: src.clone(),
        sha256: sha256?,
        principal: principal?,
        team: spec.team.clone().filter(|t| !t.is_empty()),
    })
}

fn compile_rule(
    index: usize,
    rule: &RuleSpec,
    namespace: &str,
    declared_models: &BTreeSet<&str>,
    declared_keys: &BTreeSet<String>,
    errs: &mut Errs<'_>,
) -> Option<snap::Rule> {
    let at = format!("spec.rules[{index}]");
    let subjects = compile_subjects(&at, &rule.subjects, namespace, declared_keys, errs);
    let mut models = compile_models(&at, &rule.models, declared_models, errs);
    if let Some(sel) = &rule.model_selector {
        models.push(ModelSelector::Labels(sel.match_labels.clone()));
    }
    if rule.subjects.is_empty() {
        errs.push(
            format!("{at}.subjects"),
            Reason::Invalid,
            "a rule needs at least one subject",
        );
    }
    if rule.models.is_empty() && rule.model_selector.is_none() {
        errs.push(
            format!("{at}.models"),
            Reason::Invalid,
            "a rule needs models or a modelSelector",
        );
    }
    if subjects.is_empty() || models.is_empty() {
        return None;
    }
    Some(snap::Rule {
        name: rule.name.clone().unwrap_or_else(|| format!("rule-{index}")),
        effect: match rule.effect {
            EffectSpec::Allow => snap::Effect::Allow,
            EffectSpec::Deny => snap::Effect::Deny,
        },
        subjects,
        models,
    })
}

fn compile_subjects(
    at: &str,
    specs: &[SubjectSpec],
    namespace: &str,
    declared_keys: &BTreeSet<String>,
    errs: &mut Errs<'_>,
) -> Vec<snap::Subject> {
    let mut subjects = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let field = format!("{at}.subjects[{i}]");
        let set = [
            s.user.is_some(),
            s.service_account.is_some(),
            s.team.is_some(),
            s.group.is_some(),
            s.api_key.is_some(),
            s.authenticated.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            errs.push(
                field,
                Reason::Invalid,
                "set exactly one of user, serviceAccount, team, group, apiKey, authenticated",
            );
            continue;
        }
        let subject = if let Some(v) = &s.user {
            snap::Subject::User(v.clone())
        } else if let Some(v) = &s.service_account {
            snap::Subject::ServiceAccount(v.clone())
        } else if let Some(v) = &s.team {
            snap::Subject::Team(v.clone())
        } else if let Some(v) = &s.group {
            snap::Subject::Group(v.clone())
        } else if let Some(v) = &s.api_key {
            let q = if v.contains('/') {
                v.clone()
            } else {
                qualified(namespace, v)
            };
            if !declared_keys.contains(&q) {
                errs.push(
                    format!("{field}.apiKey"),
                    Reason::DanglingRef,
                    format!("ApiKey {q} does not exist"),
                );
                continue;
            }
            snap::Subject::ApiKey(q)
        } else if s.authenticated == Some(true) {
            snap::Subject::Authenticated
        } else {
            errs.push(
                format!("{field}.authenticated"),
                Reason::Invalid,
                "authenticated can only be true",
            );
            continue;
        };
        subjects.push(subject);
    }
    subjects
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

fn fail_mode(spec: Option<FailModeSpec>, default: snap::FailMode) -> snap::FailMode {
    match spec {
        None => default,
        Some(FailModeSpec::Open) => snap::FailMode::Open,
        Some(FailModeSpec::Closed) => snap::FailMode::Closed,
    }
}

fn compile_rate_limit(
    index: usize,
    spec: &RateLimitSpec,
    src: &ResourceRef,
    declared_models: &BTreeSet<&str>,
    declared_keys: &BTreeSet<String>,
    errs: &mut Errs<'_>,
) -> snap::RateLimit {
    let at = format!("spec.rateLimits[{index}]");
    let subjects = compile_subjects(&at, &spec.subjects, &src.namespace, declared_keys, errs);
    let models = compile_models(&at, &spec.models, declared_models, errs);
    if spec.requests.is_none() && spec.tokens.is_none() {
        errs.push(at.clone(), Reason::Invalid, "set requests, tokens or both");
    }
    if spec.requests == Some(0) || spec.tokens == Some(0) {
        errs.push(
            at.clone(),
            Reason::Invalid,
            "a limit of 0 refuses everything; use a deny rule instead",
        );
    }
    let mut per: Vec<snap::LimitDimension> = spec
        .per
        .iter()
        .map(|d| match d {
            LimitDimensionSpec::User => snap::LimitDimension::User,
            LimitDimensionSpec::Team => snap::LimitDimension::Team,
            LimitDimensionSpec::Model => snap::LimitDimension::Model,
        })
        .collect();
    per.sort();
    per.dedup();
    snap::RateLimit {
        source: src.clone(),
        name: spec.name.clone(),
        subjects,
        models,
        per,
        window: match spec.window {
            WindowSpec::Minute => snap::Window::Minute,
            WindowSpec::Hour => snap::Window::Hour,
            WindowSpec::Day => snap::Window::Day,
        },
        requests: spec.requests,
        tokens: spec.tokens,
        fail_mode: fail_mode(spec.fail_mode, snap::FailMode::Open),
        local_allowance_percent: spec.local_allowance_percent.unwrap_or(10).min(100),
    }
}

fn compile_budget(
    b: &TeamBudget,
    src: &ResourceRef,
    declared_models: &BTreeSet<&str>,
    errs: &mut Errs<'_>,
) -> snap::Budget {
    let spec = &b.spec;
    let models = compile_models("spec", &spec.models, declared_models, errs);
    let time_zone = spec.time_zone.clone().unwrap_or_else(|| "UTC".to_owned());
    if jiff::tz::TimeZone::get(&time_zone).is_err() {
        errs.push(
            "spec.timeZone",
            Reason::Invalid,
            format!("unknown time zone {time_zone:?}; use an IANA name such as Europe/Berlin"),
        );
    }
    if !(spec.amount_usd.is_finite() && spec.amount_usd >= 0.0) {
        errs.push(
            "spec.amountUsd",
            Reason::Invalid,
            "amountUsd must be a number of USD, 0 or more",
        );
    }
    for (i, m) in spec.fallback.iter().enumerate() {
        let field = format!("spec.fallback[{i}]");
        if !declared_models.contains(m.as_str()) {
            errs.push(
                field,
                Reason::DanglingRef,
                format!("no ModelEndpoint serves model {m:?}"),
            );
        } else if models.iter().any(|s| s.matches(m, &BTreeMap::new())) || spec.models.is_empty() {
            errs.push(
                field,
                Reason::Invalid,
                format!("fallback model {m:?} is covered by this same budget, so it cannot help once the budget is spent"),
            );
        }
    }
    if spec.clamp_max_tokens == Some(true) && !spec.fallback.is_empty() {
        errs.push(
            "spec.clampMaxTokens",
            Reason::Invalid,
            "choose clampMaxTokens or fallback, not both",
        );
    }
    let mut alert_thresholds = Vec::new();
    let mut alert_webhook = None;
    if let Some(a) = &spec.alerts {
        alert_thresholds = if a.thresholds.is_empty() {
            vec![50, 80, 100]
        } else {
            a.thresholds.clone()
        };
        if let Some(t) = alert_thresholds.iter().find(|t| **t == 0 || **t > 100) {
            errs.push(
                "spec.alerts.thresholds",
                Reason::Invalid,
                format!("threshold {t} is not a percent between 1 and 100"),
            );
        }
        alert_thresholds.sort_unstable();
        alert_thresholds.dedup();
        if let Err(m) = parse_base_url(&a.webhook_url) {
            errs.push("spec.alerts.webhookUrl", Reason::Invalid, m);
        }
        alert_webhook = Some(a.webhook_url.clone());
    }
    snap::Budget {
        source: src.clone(),
        team: spec.team.clone(),
        amount_micros: (spec.amount_usd.max(0.0) * 1e6).round() as u64,
        period: match spec.period {
            PeriodSpec::Day => snap::Period::Day,
            PeriodSpec::Month => snap::Period::Month,
        },
        time_zone,
        models,
        fallback: spec.fallback.clone(),
        clamp_max_tokens: spec.clamp_max_tokens.unwrap_or(false),
        fail_mode: fail_mode(spec.fail_mode, snap::FailMode::Closed),
        local_allowance_percent: spec.local_allowance_percent.unwrap_or(5).min(100),
        alert_thresholds,
        alert_webhook,
    }
}

fn compile_identity_provider(
    idp: &IdentityProvider,
    src: &ResourceRef,
    secrets: &BTreeMap<SecretKeyRef, Secret>,
    errs: &mut Errs<'_>,
) -> snap::IdentityProvider {
    let spec = &idp.spec;
    if spec.oidc.is_some() == spec.saml.is_some() {
        errs.push("spec", Reason::Invalid, "set exactly one of oidc, saml");
    }
    let oidc = spec
        .oidc
        .as_ref()
        .map(|o| compile_oidc(o, src, secrets, errs));
    let saml = spec.saml.as_ref().and_then(|s| compile_saml(s, errs));
    let claims = spec.claims.clone().unwrap_or_default();
    let teams = spec.teams.clone().unwrap_or_default();
    let default_user = if saml.is_some() { "NameID" } else { "sub" };
    snap::IdentityProvider {
        source: src.clone(),
        oidc,
        saml,
        mapping: snap::ClaimMapping {
            user: claims.user.unwrap_or_else(|| default_user.to_owned()),
            groups: claims.groups.unwrap_or_else(|| "groups".to_owned()),
            client_id: claims.client_id.unwrap_or_else(|| "client_id".to_owned()),
            team: snap::TeamRule {
                claim: teams.claim,
                from_groups: teams
                    .from_groups
                    .into_iter()
                    .map(|g| (g.group, g.team))
                    .collect(),
                service_accounts: teams
                    .service_accounts
                    .into_iter()
                    .map(|s| (s.service_account, s.team))
                    .collect(),
            },
        },
    }
}

/// Seconds of leeway for token and assertion times (default 60).
fn clock_skew(text: Option<&str>, field: &str, errs: &mut Errs<'_>) -> u64 {
    match text.map(parse_millis) {
        None => 60,
        Some(Ok(ms)) => ms / 1000,
        Some(Err(m)) => {
            errs.push(field, Reason::Invalid, m);
            60
        }
    }
}

fn compile_saml(s: &crate::resources::SamlSpec, errs: &mut Errs<'_>) -> Option<snap::Saml> {
    if let Err(m) = parse_base_url(&s.acs_url) {
        errs.push("spec.saml.acsUrl", Reason::Invalid, m);
    }
    let clock_skew_secs = clock_skew(s.clock_skew.as_deref(), "spec.saml.clockSkew", errs);
    match crate::saml_metadata::parse(&s.idp_metadata) {
        Ok(md) => Some(snap::Saml {
            idp_entity_id: md.entity_id,
            sso_url: md.sso_redirect_url,
            signing_certs: md.signing_certs,
            entity_id: s.entity_id.clone(),
            acs_url: s.acs_url.clone(),
            clock_skew_secs,
        }),
        Err(m) => {
            errs.push("spec.saml.idpMetadata", Reason::Invalid, m);
            None
        }
    }
}

fn compile_oidc(
    o: &crate::resources::OidcSpec,
    src: &ResourceRef,
    secrets: &BTreeMap<SecretKeyRef, Secret>,
    errs: &mut Errs<'_>,
) -> snap::Oidc {
    if let Err(m) = parse_base_url(&o.issuer) {
        errs.push("spec.oidc.issuer", Reason::Invalid, m);
    }
    if let Some(u) = &o.jwks_uri
        && let Err(m) = parse_base_url(u)
    {
        errs.push("spec.oidc.jwksUri", Reason::Invalid, m);
    }
    if o.audiences.is_empty() {
        errs.push(
            "spec.oidc.audiences",
            Reason::Invalid,
            "name at least one audience: a token for another service must not pass",
        );
    }
    let clock_skew_secs = clock_skew(o.clock_skew.as_deref(), "spec.oidc.clockSkew", errs);
    let algorithms = if o.algorithms.is_empty() {
        vec!["RS256".to_owned(), "ES256".to_owned()]
    } else {
        o.algorithms
            .iter()
            .map(|a| {
                serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect()
    };
    let login = o.login.as_ref().and_then(|l| {
        if let Err(m) = parse_base_url(&l.redirect_url) {
            errs.push("spec.oidc.login.redirectUrl", Reason::Invalid, m);
        }
        let r = key_ref(&src.namespace, &l.client_secret.secret_ref);
        let Some(secret) = secrets.get(&r) else {
            errs.push(
                "spec.oidc.login.clientSecret.secretRef",
                Reason::MissingSecret,
                format!("{r} has no value"),
            );
            return None;
        };
        Some(snap::OidcLogin {
            client_id: l.client_id.clone(),
            client_secret: secret.clone(),
            scopes: if l.scopes.is_empty() {
                vec!["openid".into(), "email".into(), "profile".into()]
            } else {
                l.scopes.clone()
            },
            redirect_url: l.redirect_url.clone(),
        })
    });
    snap::Oidc {
        issuer: o.issuer.trim_end_matches('/').to_owned(),
        audiences: o.audiences.clone(),
        algorithms,
        clock_skew_secs,
        jwks_uri: o.jwks_uri.clone(),
        login,
    }
}

fn compile_gateway_tokens(
    g: &GatewayTokens,
    src: &ResourceRef,
    secrets: &BTreeMap<SecretKeyRef, Secret>,
    errs: &mut Errs<'_>,
) -> snap::GatewayTokens {
    let spec = &g.spec;
    let mut keys = Vec::new();
    for (i, k) in spec.signing_keys.iter().enumerate() {
        let r = key_ref(&src.namespace, &k.secret_ref);
        match secrets.get(&r) {
            Some(s) if s.expose().len() >= 32 => keys.push((k.id.clone(), s.clone())),
            Some(_) => errs.push(
                format!("spec.signingKeys[{i}].secretRef"),
                Reason::Invalid,
                format!(
                    "{r} is shorter than 32 bytes; generate one with `openssl rand -base64 48`"
                ),
            ),
            None => errs.push(
                format!("spec.signingKeys[{i}].secretRef"),
                Reason::MissingSecret,
                format!("{r} has no value"),
            ),
        }
    }
    if spec.signing_keys.is_empty() {
        errs.push(
            "spec.signingKeys",
            Reason::Invalid,
            "at least one signing key is needed",
        );
    }
    let mut ttl_secs = 12 * 3600;
    if let Some(t) = &spec.ttl {
        match positive_millis(t) {
            Ok(ms) => ttl_secs = (ms / 1000).max(1),
            Err(m) => errs.push("spec.ttl", Reason::Invalid, m),
        }
    }
    let mut revoked = Vec::new();
    for (i, r) in spec.revoked.iter().enumerate() {
        let principal = match (&r.user, &r.service_account) {
            (Some(u), None) => snap::Principal::User(u.clone()),
            (None, Some(s)) => snap::Principal::ServiceAccount(s.clone()),
            _ => {
                errs.push(
                    format!("spec.revoked[{i}]"),
                    Reason::Invalid,
                    "set exactly one of user, serviceAccount",
                );
                continue;
            }
        };
        match r.issued_before.parse::<jiff::Timestamp>() {
            Ok(t) => revoked.push(snap::Revocation {
                principal,
                before: t.as_second(),
            }),
            Err(e) => errs.push(
                format!("spec.revoked[{i}].issuedBefore"),
                Reason::Invalid,
                format!("{:?} is not an RFC 3339 time: {e}", r.issued_before),
            ),
        }
    }
    snap::GatewayTokens {
        source: src.clone(),
        keys,
        ttl_secs,
        revoked,
    }
}

/// The replicas a `service` replica stands for: one per ready endpoint, named
/// `service/pod`.
fn service_replicas(
    i: usize,
    namespace: &str,
    svc: &crate::resources::ServiceReplicaSpec,
    services: Option<&BTreeMap<ServiceKey, Vec<ServiceBackend>>>,
    errs: &mut Errs<'_>,
) -> Vec<(String, String)> {
    let field = format!("spec.replicas[{i}].service");
    let Some(services) = services else {
        errs.push(
            field,
            Reason::Invalid,
            "service replicas are resolved by the operator's Kubernetes source; from files, list URLs",
        );
        return Vec::new();
    };
    let key = ServiceKey {
        namespace: namespace.to_string(),
        name: svc.name.clone(),
    };
    let backends = services.get(&key).map(Vec::as_slice).unwrap_or_default();
    if backends.is_empty() {
        errs.push(
            field,
            Reason::DanglingRef,
            format!("service {namespace}/{} has no ready endpoints", svc.name),
        );
        return Vec::new();
    }
    let scheme = match svc.scheme {
        crate::resources::SchemeSpec::Http => "http",
        crate::resources::SchemeSpec::Https => "https",
    };
    let path = svc.path.as_deref().unwrap_or("/v1").trim_end_matches('/');
    let mut out = Vec::new();
    for b in backends {
        let port = match &svc.port {
            Some(p) => b.ports.get(p).copied(),
            None if b.ports.len() == 1 => b.ports.values().next().copied(),
            None => None,
        };
        let Some(port) = port else {
            errs.push(
                format!("{field}.port"),
                Reason::DanglingRef,
                match &svc.port {
                    Some(p) => format!("service {namespace}/{} has no port named {p:?}", svc.name),
                    None => format!(
                        "service {namespace}/{} has several ports; name one in port",
                        svc.name
                    ),
                },
            );
            return Vec::new();
        };
        let host = if b.address.contains(':') {
            format!("[{}]", b.address)
        } else {
            b.address.clone()
        };
        let who = b.target.clone().unwrap_or_else(|| b.address.clone());
        out.push((
            format!("{}/{who}", svc.name),
            format!("{scheme}://{host}:{port}{path}"),
        ));
    }
    out
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

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn qualified(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn source(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ResourceRef {
    ResourceRef {
        kind: kind.to_string(),
        namespace: namespace_of(meta).to_string(),
        name: name_of(meta).to_string(),
    }
}

fn key_ref(namespace: &str, s: &SecretKeySelector) -> SecretKeyRef {
    SecretKeyRef {
        namespace: namespace.to_string(),
        name: s.name.clone(),
        key: s.key.clone(),
    }
}
