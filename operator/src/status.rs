//! Status writing: patch each resource whose conditions changed (computed purely by
//! `llmgate_crds::status`); resources whose status already says the right thing get no patch.
//! Only the leader calls this, so replicas never fight over a status.

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use llmgate_crds::resources::ResourceStatus;
use llmgate_crds::{
    AccessPolicy, ApiKey, GatewayTokens, IdentityProvider, ModelEndpoint, TeamBudget,
};
use llmgate_snapshot::ResourceRef;
use serde::de::DeserializeOwned;

pub const FIELD_MANAGER: &str = "llmgate-operator";

/// Patches the given statuses; returns how many were written. Stops at the first API error
/// (the next compile retries what is still different).
pub async fn write(
    client: &Client,
    changed: Vec<(ResourceRef, ResourceStatus)>,
) -> Result<usize, kube::Error> {
    let mut written = 0;
    for (r, status) in changed {
        let patch = serde_json::json!({ "status": status });
        match r.kind.as_str() {
            "ModelEndpoint" => patch_one::<ModelEndpoint>(client, &r, &patch).await?,
            "AccessPolicy" => patch_one::<AccessPolicy>(client, &r, &patch).await?,
            "ApiKey" => patch_one::<ApiKey>(client, &r, &patch).await?,
            "TeamBudget" => patch_one::<TeamBudget>(client, &r, &patch).await?,
            "IdentityProvider" => patch_one::<IdentityProvider>(client, &r, &patch).await?,
            "GatewayTokens" => patch_one::<GatewayTokens>(client, &r, &patch).await?,
            other => {
                tracing::warn!(kind = other, "no status subresource for this kind");
                continue;
            }
        }
        written += 1;
        tracing::debug!(resource = %r, "status written");
    }
    Ok(written)
}

async fn patch_one<K>(
    client: &Client,
    r: &ResourceRef,
    patch: &serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &r.namespace);
    // A merge patch replaces the conditions list whole, which is what a recomputed status is.
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch_status(&r.name, &params, &Patch::Merge(patch))
        .await
        .map(|_| ())
}
