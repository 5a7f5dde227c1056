//! What the request path reads: a snapshot plus everything precomputed from it (indexes, policy
//! decisions per key, `/v1/models` bodies, replica state, metric handles). Built once per
//! snapshot, swapped atomically by `Gateway::apply`; a request loads it once and
//! sees one config from start to end.

use std::collections::HashMap;
use std::sync::Arc;

use llmgate_snapshot::{Endpoint, MockModel, Snapshot};
use serde_json::json;

pub mod caller;

pub use self::caller::{Caller, KeyRt, TokenCaller};
use self::caller::{models_body, team_tag};
use crate::backend_auth::BackendAuth;
use crate::http::client::{Clients, UpstreamClient};
use crate::identity::Identity;
use crate::llm::providers::{self, HttpAdapter, Serving};
use crate::pipeline::budget::BudgetRt;
use crate::pipeline::policy::{self, Decision};
use crate::pipeline::ratelimit::LimitRt;
use crate::pipeline::route::ReplicaState;
use crate::telemetry::metrics::{EndpointMetrics, Metrics};

pub struct Runtime {
    pub snapshot: Arc<Snapshot>,
    /// The snapshot version, shared into every audit record.
    pub version: Arc<str>,
    /// Unix seconds when this runtime was built.
    pub loaded_at: i64,
    pub endpoints: Vec<EndpointRt>,
    by_model: HashMap<Arc<str>, usize>,
    keys: HashMap<[u8; 32], usize>,
    pub api_keys: Vec<KeyRt>,
    pub limits: Vec<LimitRt>,
    pub budgets: Vec<BudgetRt>,
    /// Token verifiers of the snapshot's identity providers, by issuer.
    pub verifiers: crate::identity::oidc::Verifiers,
    /// Signs and verifies gateway tokens, when configured.
    pub gateway_tokens: Option<crate::identity::token::Issuer>,
    /// SAML identity providers.
    pub saml: Vec<crate::identity::saml::ServiceProvider>,
    /// Tokens already verified under this configuration.
    pub verified_tokens: crate::identity::oidc::VerifiedTokens,
    /// For fetching identity providers' keys.
    pub idp_client: UpstreamClient,
    /// Per endpoint: the limits whose models cover it.
    limits_by_endpoint: Vec<Vec<usize>>,
    /// Per endpoint: the budgets whose models cover it.
    budgets_by_endpoint: Vec<Vec<usize>>,
}

/// What an endpoint of the previous runtime may hand on: its spec, adapter and credentials.
type OldParts<'a> = (&'a Endpoint, &'a Arc<dyn HttpAdapter>, &'a Arc<BackendAuth>);

pub struct EndpointRt {
    pub spec: Endpoint,
    pub model: Arc<str>,
    pub upstream_model: Arc<str>,
    pub backend: Backend,
    pub metrics: EndpointMetrics,
}

pub enum Backend {
    Mock(MockModel),
    Http {
        adapter: Arc<dyn HttpAdapter>,
        auth: Arc<BackendAuth>,
        client: UpstreamClient,
        replicas: Vec<Arc<ReplicaState>>,
    },
}

impl Runtime {
    /// Builds the runtime for `snapshot`, keeping the live state (latency averages, ejections)
    /// of replicas that `previous` already had.
    pub fn build(
        snapshot: Arc<Snapshot>,
        previous: Option<&Runtime>,
        clients: &Clients,
        metrics: &Metrics,
    ) -> Runtime {
        // An unchanged endpoint keeps its adapter and credentials (and whatever they cache).
        let old_parts: HashMap<&str, OldParts<'_>> = previous
            .into_iter()
            .flat_map(|p| p.endpoints.iter())
            .filter_map(|e| match &e.backend {
                Backend::Http { adapter, auth, .. } => {
                    Some((e.spec.model.as_str(), (&e.spec, adapter, auth)))
                }
                Backend::Mock(_) => None,
            })
            .collect();
        let old_replicas: HashMap<(&str, &str), &Arc<ReplicaState>> = previous
            .into_iter()
            .flat_map(|p| p.endpoints.iter())
            .flat_map(|e| match &e.backend {
                Backend::Http { replicas, .. } => replicas
                    .iter()
                    .map(|r| ((e.spec.model.as_str(), r.url.as_str()), r))
                    .collect::<Vec<_>>(),
                Backend::Mock(_) => Vec::new(),
            })
            .collect();

        let endpoints: Vec<EndpointRt> = snapshot
            .endpoints
            .iter()
            .map(|ep| {
                let kept = old_parts
                    .get(ep.model.as_str())
                    .filter(|(old, ..)| *old == ep);
                let serving = match kept {
                    Some((_, adapter, _)) => Serving::Http(Arc::clone(adapter)),
                    None => providers::build(ep),
                };
                let backend = match serving {
                    Serving::Mock(m) => Backend::Mock(m.clone()),
                    Serving::Http(adapter) => Backend::Http {
                        adapter,
                        auth: kept.map_or_else(
                            || Arc::new(BackendAuth::build(ep)),
                            |(_, _, auth)| Arc::clone(auth),
                        ),
                        client: clients.get(ep.timeouts.connect_ms),
                        replicas: ep
                            .replicas
                            .iter()
                            .map(|r| {
                                old_replicas
                                    .get(&(ep.model.as_str(), r.url.as_str()))
                                    .filter(|old| *old.name == *r.name)
                                    .map(|old| Arc::clone(old))
                                    .unwrap_or_else(|| {
                                        let ok = metrics.attempts(&ep.model, &r.name, "ok");
                                        Arc::new(ReplicaState::new(r, ok))
                                    })
                            })
                            .collect(),
                    },
                };
                EndpointRt {
                    model: Arc::from(ep.model.as_str()),
                    upstream_model: Arc::from(ep.upstream_model.as_str()),
                    metrics: metrics.endpoint(&ep.model),
                    spec: ep.clone(),
                    backend,
                }
            })
            .collect();
        let by_model = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (Arc::clone(&e.model), i))
            .collect();

        let limits: Vec<LimitRt> = snapshot.rate_limits.iter().map(LimitRt::build).collect();
        let budgets: Vec<BudgetRt> = snapshot.budgets.iter().map(BudgetRt::build).collect();
        let limits_by_endpoint = snapshot
            .endpoints
            .iter()
            .map(|ep| {
                (0..limits.len())
                    .filter(|&i| limits[i].applies_to_model(ep))
                    .collect()
            })
            .collect();
        let budgets_by_endpoint = snapshot
            .endpoints
            .iter()
            .map(|ep| {
                (0..budgets.len())
                    .filter(|&i| budgets[i].covers(ep))
                    .collect()
            })
            .collect();

        let verifiers = crate::identity::oidc::Verifiers::build(
            &snapshot.identity_providers,
            previous.map(|p| &p.verifiers),
        );
        let idp_client = clients.get(2_000);
        let saml = snapshot
            .identity_providers
            .iter()
            .filter_map(|p| {
                p.saml
                    .as_ref()
                    .map(|s| crate::identity::saml::ServiceProvider::build(p, s))
            })
            .collect();
        let gateway_tokens = snapshot
            .gateway_tokens
            .as_ref()
            .map(crate::identity::token::Issuer::build);
        // Load the issuers' keys now, so the first token does not wait for them, and keep them
        // fresh.
        for keys in verifiers.key_sets() {
            keys.start(&idp_client);
        }

        // Resources read from files have no creation time; report when this config was loaded.
        let loaded_at = jiff::Timestamp::now().as_second();
        let api_keys: Vec<KeyRt> = snapshot
            .api_keys
            .iter()
            .filter_map(|k| {
                let digest = decode_hex32(&k.sha256)?;
                let identity = Identity {
                    key_id: Some(Arc::from(format!(
                        "{}/{}",
                        k.source.namespace, k.source.name
                    ))),
                    name: Arc::from(k.principal.name()),
                    principal: k.principal.clone(),
                    team: k.team.as_deref().map(Arc::from),
                    groups: Vec::new(),
                    auth_method: "api_key",
                    provider: None,
                };
                let decisions: Vec<Decision> = snapshot
                    .endpoints
                    .iter()
                    .map(|ep| policy::decide(&snapshot.policies, &identity, ep))
                    .collect();
                let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
                let models_body = models_body(&snapshot.endpoints, &allowed, loaded_at);
                let limits = limits
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.applies_to_caller(&identity))
                    .map(|(i, _)| i)
                    .collect();
                Some(KeyRt {
                    digest,
                    tag: team_tag(identity.team.as_deref()),
                    identity,
                    decisions,
                    models_body,
                    limits,
                })
            })
            .collect();
        let keys = api_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.digest, i))
            .collect();

        Runtime {
            version: Arc::from(snapshot.version.as_str()),
            snapshot,
            loaded_at,
            endpoints,
            by_model,
            keys,
            api_keys,
            limits,
            budgets,
            verifiers,
            gateway_tokens,
            saml,
            verified_tokens: Default::default(),
            idp_client,
            limits_by_endpoint,
            budgets_by_endpoint,
        }
    }

    /// The rate limits that apply to this caller on endpoint `i`.
    pub fn limits_for<'a>(
        &'a self,
        caller: &'a Caller<'_>,
        i: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        self.limits_by_endpoint[i]
            .iter()
            .copied()
            .filter(|l| caller.limits().contains(l))
    }

    /// A verified token's caller, with the limits that name them.
    pub fn token_caller(&self, t: crate::identity::TokenIdentity) -> TokenCaller {
        let identity = Identity {
            key_id: None,
            name: Arc::from(t.principal.name()),
            principal: t.principal,
            team: t.team,
            groups: t.groups,
            auth_method: "oidc",
            provider: Some(t.provider),
        };
        let limits = self
            .limits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.applies_to_caller(&identity))
            .map(|(i, _)| i)
            .collect();
        TokenCaller {
            tag: team_tag(identity.team.as_deref()),
            identity,
            limits,
        }
    }

    /// The budgets that count this caller's use of endpoint `i`: those of the caller's team,
    /// or, when the team has none covering the model, the `*` budgets.
    pub fn budgets_for(&self, caller: &Caller<'_>, i: usize) -> Vec<usize> {
        let covering = &self.budgets_by_endpoint[i];
        if covering.is_empty() {
            return Vec::new();
        }
        let team = caller.identity().team.as_deref();
        let own: Vec<usize> = covering
            .iter()
            .copied()
            .filter(|&b| team == Some(self.budgets[b].spec.team.as_str()))
            .collect();
        if !own.is_empty() {
            return own;
        }
        covering
            .iter()
            .copied()
            .filter(|&b| self.budgets[b].spec.team == "*")
            .collect()
    }

    /// Whether any limit or budget is configured (the tokenizer is then warmed up).
    pub fn counts(&self) -> bool {
        !self.limits.is_empty() || !self.budgets.is_empty()
    }

    pub fn endpoint(&self, model: &str) -> Option<(usize, &EndpointRt)> {
        let i = *self.by_model.get(model)?;
        Some((i, &self.endpoints[i]))
    }

    /// The key whose digest equals `digest`, compared in constant time once found.
    pub fn key_by_digest(&self, digest: &[u8; 32]) -> Option<&KeyRt> {
        use subtle::ConstantTimeEq;
        let k = &self.api_keys[*self.keys.get(digest)?];
        bool::from(k.digest.ct_eq(digest)).then_some(k)
    }
}

/// One entry of `/v1/models`: exactly the four standard fields.
pub fn model_object(ep: &Endpoint, default_created: i64) -> serde_json::Value {
    let created = if ep.created > 0 {
        ep.created
    } else {
        default_created
    };
    json!({"id": ep.model, "object": "model", "created": created, "owned_by": ep.owned_by})
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
        out[i] = d(pair[0])? << 4 | d(pair[1])?;
    }
    Some(out)
}
