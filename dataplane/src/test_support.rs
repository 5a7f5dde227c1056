//! Builders for unit tests.

use llmgate_snapshot::{Endpoint, Failover, Pricing, Provider, ResourceRef, Timeouts};

pub fn endpoint(model: &str, upstream: &str) -> Endpoint {
    Endpoint {
        model: model.into(),
        source: ResourceRef {
            kind: "ModelEndpoint".into(),
            namespace: "default".into(),
            name: model.into(),
        },
        provider: Provider::OpenAiCompatible,
        upstream_model: upstream.into(),
        replicas: vec![],
        api_key: None,
        pricing: Pricing::default(),
        timeouts: Timeouts::default(),
        failover: Failover::default(),
        labels: Default::default(),
        max_output_tokens: 4096,
        owned_by: "test".into(),
        created: 0,
    }
}
