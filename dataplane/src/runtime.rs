//! What the request path reads: a snapshot plus everything precomputed from it (indexes, policy
//! decisions per key, `/v1/models` bodies, replica state, metric handles). Built once per
//! snapshot, swapped atomically by [`crate::state::Gateway::apply`]; a request loads it once and
//! sees one config from start to end.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use llmgate_snapshot::{Endpoint, MockModel, Principal, Snapshot};
use serde_json::json;

use crate::http::client::{Clients, UpstreamClient};
use crate::metrics::{EndpointMetrics, Metrics};
use crate::pipeline::policy::{self, Decision};
use crate::pipeline::route::ReplicaState;
use crate::providers::{self, HttpAdapter, Serving};

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
}

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
        adapter: &'static dyn HttpAdapter,
        client: UpstreamClient,
        replicas: Vec<Arc<ReplicaState>>,
    },
}

/// Who a request speaks for, as far as this credentials go (API keys).
#[derive(Debug)]
pub struct Identity {
    /// `namespace/name` of the ApiKey resource.
    pub key_id: Arc<str>,
    pub principal: Principal,
    pub team: Option<Arc<str>>,
    /// The principal's name, shared into audit records.
    pub name: Arc<str>,
}

pub struct KeyRt {
    pub digest: [u8; 32],
    pub identity: Identity,
    /// Decision per endpoint index.
    pub decisions: Vec<Decision>,
    /// The `GET /v1/models` body for this key.
    pub models_body: Bytes,
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
                let backend = match providers::serving(&ep.provider) {
                    Serving::Mock(m) => Backend::Mock(m.clone()),
                    Serving::Http(adapter) => Backend::Http {
                        adapter,
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

        // Resources read from files have no creation time; report when this config was loaded.
        let loaded_at = jiff::Timestamp::now().as_second();
        let api_keys: Vec<KeyRt> = snapshot
            .api_keys
            .iter()
            .filter_map(|k| {
                let digest = decode_hex32(&k.sha256)?;
                let identity = Identity {
                    key_id: Arc::from(format!("{}/{}", k.source.namespace, k.source.name)),
                    name: Arc::from(k.principal.name()),
                    principal: k.principal.clone(),
                    team: k.team.as_deref().map(Arc::from),
                };
                let decisions: Vec<Decision> = snapshot
                    .endpoints
                    .iter()
                    .map(|ep| policy::decide(&snapshot.policies, &identity, ep))
                    .collect();
                let data: Vec<_> = snapshot
                    .endpoints
                    .iter()
                    .zip(&decisions)
                    .filter(|(_, d)| d.allowed)
                    .map(|(ep, _)| model_object(ep, loaded_at))
                    .collect();
                let models_body = Bytes::from(
                    serde_json::to_vec(&json!({"object": "list", "data": data}))
                        .unwrap_or_default(),
                );
                Some(KeyRt {
                    digest,
                    identity,
                    decisions,
                    models_body,
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
        }
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
