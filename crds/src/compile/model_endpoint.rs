//! `ModelEndpoint` → `Endpoint`: the provider, its replicas (URLs or a Service's ready
//! endpoints), credentials, pricing, timeouts and failover.

use std::collections::{BTreeMap, BTreeSet};

use llmgate_snapshot::{
    self as snap, Endpoint, Failover, Pricing, Provider, ResourceRef, Secret, Timeouts,
};

use super::{
    CompileError, Errs, Reason, Resources, SecretKeyRef, ServiceBackend, ServiceKey,
    parse_base_url, positive_millis, secret_value, source,
};
use crate::duration::parse_millis;
use crate::object::Object;
use crate::resources::{ModelEndpointSpec, ProviderKind};

/// Every endpoint that compiles, at most one per model name: the first by namespace and name
/// keeps it.
pub(super) fn compile_all(resources: &Resources, errors: &mut Vec<CompileError>) -> Vec<Endpoint> {
    let mut endpoints_in: Vec<&Object<ModelEndpointSpec>> =
        resources.model_endpoints.iter().collect();
    endpoints_in.sort_by_key(|r| source("ModelEndpoint", &r.metadata));
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
    endpoints
}

fn compile_endpoint(
    me: &Object<ModelEndpointSpec>,
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
        ProviderKind::Anthropic => Provider::Anthropic,
        ProviderKind::AzureOpenAi => Provider::AzureOpenAi {
            api_version: compile_azure(spec, errs),
        },
        ProviderKind::Mock => Provider::Mock(compile_mock(spec.mock.as_ref(), errs)),
    };
    if spec.azure.is_some() && spec.provider != ProviderKind::AzureOpenAi {
        errs.push(
            "spec.azure",
            Reason::Invalid,
            "azure settings are only valid with provider: azure-openai",
        );
    }
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
        ProviderKind::Anthropic if spec.replicas.is_empty() => replicas.push(snap::Replica {
            name: "api.anthropic.com".into(),
            url: "https://api.anthropic.com".into(),
        }),
        ProviderKind::AzureOpenAi if spec.replicas.is_empty() => errs.push(
            "spec.replicas",
            Reason::Invalid,
            "azure-openai needs the resource URL as a replica, e.g. https://my-resource.openai.azure.com",
        ),
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

    let mut entra = None;
    let api_key = match &spec.credentials {
        Some(c) => {
            match (&c.api_key, &c.entra) {
                (Some(_), Some(_)) | (None, None) => errs.push(
                    "spec.credentials",
                    Reason::Invalid,
                    "set exactly one of apiKey, entra",
                ),
                (_, Some(_)) if spec.provider != ProviderKind::AzureOpenAi => errs.push(
                    "spec.credentials.entra",
                    Reason::Invalid,
                    "entra credentials are for provider azure-openai",
                ),
                _ => {}
            }
            if let Some(e) = &c.entra {
                entra = compile_entra(&src.namespace, e, secrets, errs);
            }
            c.api_key.as_ref().and_then(|k| {
                secret_value(
                    &src.namespace,
                    &k.secret_ref,
                    "spec.credentials.apiKey.secretRef",
                    secrets,
                    errs,
                )
                .map(|(_, v)| v.clone())
            })
        }
        None if spec.provider == ProviderKind::OpenAi => {
            errs.push(
                "spec.credentials",
                Reason::Invalid,
                "provider openai needs credentials.apiKey.secretRef",
            );
            None
        }
        None if spec.provider == ProviderKind::AzureOpenAi => {
            errs.push(
                "spec.credentials",
                Reason::Invalid,
                "provider azure-openai needs credentials: apiKey.secretRef or entra",
            );
            None
        }
        None if spec.provider == ProviderKind::Anthropic && spec.replicas.is_empty() => {
            errs.push(
                "spec.credentials",
                Reason::Invalid,
                "provider anthropic needs credentials.apiKey.secretRef for api.anthropic.com",
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
        entra,
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
            .map(|t| t.as_second())
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

/// Entra ID client credentials: the token URL of the tenant, the client secret resolved.
fn compile_entra(
    namespace: &str,
    e: &crate::resources::EntraSpec,
    secrets: &BTreeMap<SecretKeyRef, Secret>,
    errs: &mut Errs<'_>,
) -> Option<snap::EntraCredential> {
    let host = e
        .authority_host
        .as_deref()
        .unwrap_or("https://login.microsoftonline.com")
        .trim_end_matches('/');
    if !(host.starts_with("https://") || host.starts_with("http://")) {
        errs.push(
            "spec.credentials.entra.authorityHost",
            Reason::Invalid,
            "authorityHost must be an http(s) URL",
        );
    }
    // The tenant goes into the token URL's path: a GUID or a domain name, nothing else.
    if e.tenant_id.is_empty()
        || !e
            .tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    {
        errs.push(
            "spec.credentials.entra.tenantId",
            Reason::Invalid,
            "tenantId must be a tenant GUID or domain",
        );
        return None;
    }
    let (_, secret) = secret_value(
        namespace,
        &e.client_secret.secret_ref,
        "spec.credentials.entra.clientSecret.secretRef",
        secrets,
        errs,
    )?;
    Some(snap::EntraCredential {
        token_url: format!("{host}/{}/oauth2/v2.0/token", e.tenant_id),
        client_id: e.client_id.clone(),
        client_secret: secret.clone(),
        scope: e
            .scope
            .clone()
            .unwrap_or_else(|| "https://cognitiveservices.azure.com/.default".into()),
    })
}

/// The `api-version` of an `azure-openai` endpoint, checked; `None` is the v1 API.
fn compile_azure(spec: &ModelEndpointSpec, errs: &mut Errs<'_>) -> Option<String> {
    let deployment = spec.upstream_model.as_deref().unwrap_or(&spec.model);
    // Deployment names keep their dots: `gpt-4.1` is not `gpt-41`.
    if deployment.is_empty()
        || deployment.len() > 64
        || !deployment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errs.push(
            "spec.upstreamModel",
            Reason::Invalid,
            "the Azure deployment name (upstreamModel) must be 1-64 letters, digits, '-', '_' or '.'",
        );
    }
    let version = spec.azure.as_ref()?.api_version.clone()?;
    let b = version.as_bytes();
    let dated = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && (b.len() == 10 || &version[10..] == "-preview");
    if !dated {
        errs.push(
            "spec.azure.apiVersion",
            Reason::Invalid,
            "apiVersion must be a date like 2024-10-21, optionally with -preview",
        );
    } else if version[..10] < *"2024-10-21" {
        // Older versions refuse stream_options, and a stream without usage cannot be accounted.
        errs.push(
            "spec.azure.apiVersion",
            Reason::Invalid,
            "apiVersion must be 2024-10-21 or later: older ones cannot report a stream's usage",
        );
    }
    Some(version)
}
