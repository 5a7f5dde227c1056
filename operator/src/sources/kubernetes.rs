//! `--source kubernetes`: the llmgate custom resources and the Secrets they reference, kept in
//! reflector stores by watches on the API server. Every change (after a quiet `debounce`)
//! compiles the whole set; what compiles ships, a resource that does not is left out and says
//! why in its status. Only the leader writes status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use llmgate_crds::files::{Loaded, Problem};
use llmgate_crds::status::{Observed, changed_statuses};
use llmgate_crds::{
    AccessPolicy, ApiKey, GatewayTokens, IdentityProvider, ModelEndpoint, Object, Resources,
    SecretKeyRef, ServiceBackend, ServiceKey, TeamBudget, compile,
};
use llmgate_snapshot::{ResourceRef, Secret};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::Operator;
use crate::compile::publish;
use crate::leader::Leader;

/// How often the whole set is reconciled without any change.
const RESYNC: Duration = Duration::from_secs(30);

/// One store per namespace watched (a single store when all namespaces are).
struct Stores {
    endpoints: Vec<Store<ModelEndpoint>>,
    policies: Vec<Store<AccessPolicy>>,
    keys: Vec<Store<ApiKey>>,
    budgets: Vec<Store<TeamBudget>>,
    idps: Vec<Store<IdentityProvider>>,
    tokens: Vec<Store<GatewayTokens>>,
    secrets: Vec<Store<KubeSecret>>,
    slices: Vec<Store<EndpointSlice>>,
}

fn watch<K>(
    client: &Client,
    namespaces: &[String],
    changed: &mpsc::UnboundedSender<()>,
) -> Vec<Store<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let apis: Vec<Api<K>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    apis.into_iter()
        .map(|api| {
            let (reader, writer) = reflector::store();
            let tx = changed.clone();
            let stream = reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff()
                .touched_objects();
            tokio::spawn(async move {
                futures_util::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(_) => {
                            let _ = tx.send(());
                        }
                        Err(e) => tracing::warn!(error = %e, kind = %K::kind(&()), "watch error; retrying"),
                    }
                }
            });
            reader
        })
        .collect()
}

pub async fn run(
    op: Arc<Operator>,
    client: Client,
    namespaces: Vec<String>,
    debounce: Duration,
    leader: Arc<Leader>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stores = Stores {
        endpoints: watch(&client, &namespaces, &tx),
        policies: watch(&client, &namespaces, &tx),
        keys: watch(&client, &namespaces, &tx),
        budgets: watch(&client, &namespaces, &tx),
        idps: watch(&client, &namespaces, &tx),
        tokens: watch(&client, &namespaces, &tx),
        secrets: watch(&client, &namespaces, &tx),
        slices: watch(&client, &namespaces, &tx),
    };
    // The first snapshot waits for every initial list: a partial view would drop models.
    ready(&stores.endpoints).await;
    ready(&stores.policies).await;
    ready(&stores.keys).await;
    ready(&stores.budgets).await;
    ready(&stores.idps).await;
    ready(&stores.tokens).await;
    ready(&stores.secrets).await;
    ready(&stores.slices).await;
    loop {
        reconcile(&op, &client, &stores, &leader).await;
        // Wait for a change, then for the burst to settle. Without changes, resync now and
        // then: a status write that failed, or a replica that just became leader, catches up.
        if let Ok(None) = tokio::time::timeout(RESYNC, rx.recv()).await {
            return;
        }
        loop {
            match tokio::time::timeout(debounce, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
    }
}

async fn ready<K: Resource + Clone + 'static>(stores: &[Store<K>])
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    for s in stores {
        let _ = s.wait_until_ready().await;
    }
}

fn all<K: Resource + Clone>(stores: &[Store<K>]) -> Vec<Arc<K>>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    stores.iter().flat_map(Store::state).collect()
}

async fn reconcile(op: &Operator, client: &Client, stores: &Stores, leader: &Leader) {
    let endpoints = all(&stores.endpoints);
    let policies = all(&stores.policies);
    let keys = all(&stores.keys);
    let budgets = all(&stores.budgets);
    let idps = all(&stores.idps);
    let tokens = all(&stores.tokens);
    let mut resources = Resources {
        model_endpoints: endpoints.iter().map(|r| Object::of(r.as_ref())).collect(),
        access_policies: policies.iter().map(|r| Object::of(r.as_ref())).collect(),
        api_keys: keys.iter().map(|r| Object::of(r.as_ref())).collect(),
        team_budgets: budgets.iter().map(|r| Object::of(r.as_ref())).collect(),
        identity_providers: idps.iter().map(|r| Object::of(r.as_ref())).collect(),
        gateway_tokens: tokens.iter().map(|r| Object::of(r.as_ref())).collect(),
        secrets: BTreeMap::new(),
        services: Some(services(&all(&stores.slices))),
    };
    resources.secrets = resolve_secrets(&resources, &all(&stores.secrets));
    let compiled = compile(&resources);
    let problems: Vec<Problem> = compiled
        .errors
        .iter()
        .map(|e| Problem::from_compile(e, None))
        .collect();
    // Resources that do not compile are left out and report it in their status; the rest ships.
    publish(
        op,
        Ok(Loaded {
            snapshot: compiled.snapshot,
            warnings: problems,
            // A cluster's left-out resources say why in their status.
            left_out: BTreeMap::new(),
        }),
    );
    if !leader.is_leader() {
        return;
    }
    let observed = endpoints
        .iter()
        .map(|r| observed("ModelEndpoint", r.as_ref(), r.status.as_ref()))
        .chain(
            policies
                .iter()
                .map(|r| observed("AccessPolicy", r.as_ref(), r.status.as_ref())),
        )
        .chain(
            keys.iter()
                .map(|r| observed("ApiKey", r.as_ref(), r.status.as_ref())),
        )
        .chain(
            budgets
                .iter()
                .map(|r| observed("TeamBudget", r.as_ref(), r.status.as_ref())),
        )
        .chain(
            idps.iter()
                .map(|r| observed("IdentityProvider", r.as_ref(), r.status.as_ref())),
        )
        .chain(
            tokens
                .iter()
                .map(|r| observed("GatewayTokens", r.as_ref(), r.status.as_ref())),
        );
    let changed = changed_statuses(observed, &compiled.errors, jiff::Timestamp::now());
    match crate::status::write(client, changed).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(statuses = n, "status written"),
        Err(e) => tracing::warn!(error = %e, "status write failed; the next change retries"),
    }
}

fn observed<'a, K: Resource>(
    kind: &str,
    obj: &K,
    status: Option<&'a llmgate_crds::resources::ResourceStatus>,
) -> Observed<'a> {
    Observed {
        resource: ResourceRef {
            kind: kind.to_string(),
            namespace: obj
                .meta()
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: obj.meta().name.clone().unwrap_or_default(),
        },
        generation: obj.meta().generation,
        current: status,
    }
}

/// Ready endpoints per Service, from its EndpointSlices (label `kubernetes.io/service-name`).
fn services(slices: &[Arc<EndpointSlice>]) -> BTreeMap<ServiceKey, Vec<ServiceBackend>> {
    let mut out: BTreeMap<ServiceKey, Vec<ServiceBackend>> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice.labels().get("kubernetes.io/service-name") else {
            continue;
        };
        let ports: BTreeMap<String, u16> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.port?).ok()?;
                Some((p.name.clone().unwrap_or_default(), port))
            })
            .collect();
        let key = ServiceKey {
            namespace: slice.namespace().unwrap_or_default(),
            name: service.clone(),
        };
        let backends = out.entry(key).or_default();
        for ep in slice.endpoints.iter().flatten() {
            // Unknown readiness counts as ready, as kube-proxy does.
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            if let Some(address) = ep.addresses.first() {
                backends.push(ServiceBackend {
                    address: address.clone(),
                    ports: ports.clone(),
                    target: ep.target_ref.as_ref().and_then(|t| t.name.clone()),
                });
            }
        }
    }
    for backends in out.values_mut() {
        backends.sort_by(|a, b| a.address.cmp(&b.address));
        backends.dedup_by(|a, b| a.address == b.address);
    }
    out
}

/// The values of exactly the Secret keys the resources reference.
fn resolve_secrets(
    resources: &Resources,
    secrets: &[Arc<KubeSecret>],
) -> BTreeMap<SecretKeyRef, Secret> {
    let mut out = BTreeMap::new();
    for r in resources.secret_refs() {
        let value = secrets
            .iter()
            .find(|s| {
                s.namespace().as_deref() == Some(r.namespace.as_str()) && s.name_any() == r.name
            })
            .and_then(|s| s.data.as_ref()?.get(&r.key).cloned())
            .and_then(|b| String::from_utf8(b.0).ok());
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            out.insert(r, Secret::new(v.trim_end_matches(['\n', '\r'])));
        }
    }
    out
}
