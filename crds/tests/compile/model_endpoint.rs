//! ModelEndpoint: one endpoint per model name, Service replicas.

use super::resources;
use llmgate_crds::{Reason, compile};

#[test]
fn two_endpoints_claiming_one_model_conflict() {
    let yaml = r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: a}
spec: {model: m, provider: mock}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: b}
spec: {model: m, provider: mock}
"#;
    let c = compile(&resources(yaml));
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].reason, Reason::Conflict);
    assert_eq!(c.errors[0].resource.name, "b");
    assert!(c.errors[0].message.contains("ModelEndpoint default/a"));
    assert_eq!(c.snapshot.endpoints[0].source.name, "a");
}

#[test]
fn service_replicas_become_one_replica_per_ready_endpoint() {
    use llmgate_crds::{ServiceBackend, ServiceKey};
    use std::collections::BTreeMap;
    let yaml = r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: llama, namespace: ai}
spec:
  model: llama
  provider: openai-compatible
  replicas:
    - service: {name: vllm, port: http}
    - url: http://static:8000/v1
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: gone, namespace: ai}
spec:
  model: gone
  provider: openai-compatible
  replicas: [{service: {name: nothing}}]
"#;
    let backend = |ip: &str, pod: &str| ServiceBackend {
        address: ip.into(),
        ports: BTreeMap::from([("http".to_string(), 8000), ("metrics".to_string(), 9000)]),
        target: Some(pod.into()),
    };
    let mut r = resources(yaml);
    r.services = Some(BTreeMap::from([(
        ServiceKey {
            namespace: "ai".into(),
            name: "vllm".into(),
        },
        vec![backend("10.1.0.7", "vllm-0"), backend("fd00::8", "vllm-1")],
    )]));
    let c = compile(&r);
    let llama = &c.snapshot.endpoints[0];
    let got: Vec<(&str, &str)> = llama
        .replicas
        .iter()
        .map(|r| (r.name.as_str(), r.url.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("vllm/vllm-0", "http://10.1.0.7:8000/v1"),
            ("vllm/vllm-1", "http://[fd00::8]:8000/v1"),
            ("static:8000", "http://static:8000/v1"),
        ]
    );
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].resource.name, "gone");
    assert_eq!(c.errors[0].reason, Reason::DanglingRef);
    assert!(
        c.errors[0]
            .message
            .contains("service ai/nothing has no ready endpoints")
    );

    // From files there are no Services to resolve: say so.
    r.services = None;
    let c = compile(&r);
    assert!(
        c.errors
            .iter()
            .any(|e| e.field == "spec.replicas[0].service" && e.reason == Reason::Invalid)
    );
}

/// A model name is what callers type and what labels metrics: 1 to 256 characters, no
/// whitespace or control characters.
#[test]
fn a_model_name_is_one_to_256_printable_characters() {
    let endpoint = |model: &str| {
        format!(
            "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {{name: e}}\nspec: {{model: {model}, provider: mock}}\n"
        )
    };
    let longest = "m".repeat(256);
    for ok in ["m", "gpt-4o-mini", "meta/llama-3:8b", longest.as_str()] {
        let c = compile(&resources(&endpoint(
            &serde_json::to_string(ok).expect("json"),
        )));
        assert_eq!(c.errors, vec![], "{ok}");
        assert_eq!(c.snapshot.endpoints[0].model, ok);
    }
    let too_long = "m".repeat(257);
    for bad in ["", "gpt 4", "gpt\t4", "gpt\u{7}4", too_long.as_str()] {
        let c = compile(&resources(&endpoint(
            &serde_json::to_string(bad).expect("json"),
        )));
        let got: Vec<_> = c
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.reason))
            .collect();
        assert_eq!(got, vec![("spec.model", Reason::Invalid)], "{bad:?}");
        assert!(c.snapshot.endpoints.is_empty(), "{bad:?}");
    }
}

/// Which providers take replicas: the mock none (it runs in the gateway), OpenAI its public API
/// by default, an openai-compatible server at least one URL.
#[test]
fn each_provider_takes_the_replicas_it_can_use() {
    let endpoint = |provider: &str, replicas: &str| {
        format!(
            "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {{name: e}}\nspec: {{model: m, provider: {provider}{replicas}}}\n"
        )
    };
    let compiled = |provider: &str, replicas: &str| {
        let r = super::with_secret(
            resources(&endpoint(provider, replicas)),
            "default",
            "o",
            "k",
            "sk-up",
        );
        let c = compile(&r);
        let errors: Vec<String> = c.errors.iter().map(|e| e.field.clone()).collect();
        let urls: Option<Vec<String>> = c
            .snapshot
            .endpoints
            .first()
            .map(|e| e.replicas.iter().map(|r| r.url.clone()).collect());
        (errors, urls)
    };
    let one = ", replicas: [{url: \"http://vllm:8000/v1\"}]";
    assert_eq!(compiled("mock", ""), (vec![], Some(vec![])));
    assert_eq!(
        compiled("mock", one),
        (vec!["spec.replicas".to_string()], None)
    );
    let openai = "openai, credentials: {apiKey: {secretRef: {name: o, key: k}}}";
    assert_eq!(
        compiled(openai, ""),
        (vec![], Some(vec!["https://api.openai.com/v1".to_string()]))
    );
    assert_eq!(
        compiled(openai, one),
        (vec![], Some(vec!["http://vllm:8000/v1".to_string()]))
    );
    assert_eq!(
        compiled("openai-compatible", ""),
        (vec!["spec.replicas".to_string()], None)
    );
    assert_eq!(
        compiled("openai-compatible", one),
        (vec![], Some(vec!["http://vllm:8000/v1".to_string()]))
    );
    // Anthropic: its API by default, with a key; any Messages server without one.
    let anthropic = "anthropic, credentials: {apiKey: {secretRef: {name: o, key: k}}}";
    assert_eq!(
        compiled(anthropic, ""),
        (vec![], Some(vec!["https://api.anthropic.com".to_string()]))
    );
    assert_eq!(
        compiled("anthropic", ""),
        (vec!["spec.credentials".to_string()], None)
    );
    assert_eq!(
        compiled("anthropic", one),
        (vec![], Some(vec!["http://vllm:8000/v1".to_string()]))
    );
    // Azure: the resource URL and a key, an api-version from 2024-10-21 on (or none: v1 API),
    // a deployment name kept whole.
    let azure = |extra: &str| {
        format!("azure-openai, credentials: {{apiKey: {{secretRef: {{name: o, key: k}}}}}}{extra}")
    };
    let res = ", replicas: [{url: \"https://res.openai.azure.com\"}]";
    assert_eq!(
        compiled(&azure(""), ""),
        (vec!["spec.replicas".to_string()], None)
    );
    assert_eq!(
        compiled("azure-openai", res),
        (vec!["spec.credentials".to_string()], None)
    );
    for (extra, errors) in [
        ("", vec![]),
        (
            ", upstreamModel: gpt-4.1, azure: {apiVersion: \"2024-10-21\"}",
            vec![],
        ),
        (", azure: {apiVersion: \"2025-04-01-preview\"}", vec![]),
        (
            ", azure: {apiVersion: \"2024-06-01\"}",
            vec!["spec.azure.apiVersion"],
        ),
        (
            ", azure: {apiVersion: \"latest\"}",
            vec!["spec.azure.apiVersion"],
        ),
        (", upstreamModel: \"gpt 4/1\"", vec!["spec.upstreamModel"]),
    ] {
        let (got, _) = compiled(&azure(extra), res);
        assert_eq!(got, errors, "{extra}");
    }
    // Entra ID instead of a key, for Azure only, never both.
    let entra = "entra: {tenantId: contoso.onmicrosoft.com, clientId: c, clientSecret: {secretRef: {name: o, key: k}}}";
    let (got, _) = compiled(&format!("azure-openai, credentials: {{{entra}}}"), res);
    assert_eq!(got, Vec::<String>::new());
    let (got, _) = compiled(
        &format!(
            "azure-openai, credentials: {{{entra}, apiKey: {{secretRef: {{name: o, key: k}}}}}}"
        ),
        res,
    );
    assert_eq!(got, vec!["spec.credentials".to_string()]);
    let (got, _) = compiled(&format!("openai, credentials: {{{entra}}}"), "");
    assert_eq!(got, vec!["spec.credentials.entra".to_string()]);
    let (got, _) = compiled(
        &format!(
            "azure-openai, credentials: {{{}}}",
            entra.replace("contoso.onmicrosoft.com", "\"a/b\"")
        ),
        res,
    );
    assert_eq!(got, vec!["spec.credentials.entra.tenantId".to_string()]);
    let (got, _) = compiled("mock, azure: {apiVersion: \"2024-10-21\"}", "");
    assert_eq!(got, vec!["spec.azure".to_string()]);
}

/// Every bounded field, on each side of its bound: refused where it is, accepted next to it.
#[test]
fn bounded_fields_are_refused_past_their_bounds_only() {
    let endpoint = |provider: &str, extra: &str| {
        format!(
            "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {{name: e}}\nspec:\n  model: m\n  provider: {provider}\n{extra}"
        )
    };
    let compat = "openai-compatible\n  replicas: [{url: \"http://vllm:8000/v1\"}]";
    let cases: [(&str, &str, Option<&str>); 14] = [
        ("openai", "", Some("spec.credentials")),
        (
            compat,
            "  pricing: {inputPerMillion: -1, outputPerMillion: 1}\n",
            Some("spec.pricing.inputPerMillion"),
        ),
        (
            compat,
            "  pricing: {inputPerMillion: 1, outputPerMillion: -0.5}\n",
            Some("spec.pricing.outputPerMillion"),
        ),
        (
            compat,
            "  pricing: {inputPerMillion: 0, outputPerMillion: 0}\n",
            None,
        ),
        (
            compat,
            "  failover: {maxAttempts: 0}\n",
            Some("spec.failover.maxAttempts"),
        ),
        (
            compat,
            "  failover: {maxAttempts: 11}\n",
            Some("spec.failover.maxAttempts"),
        ),
        (compat, "  failover: {maxAttempts: 1}\n", None),
        (compat, "  failover: {maxAttempts: 10}\n", None),
        (
            "mock",
            "  mock: {embeddingDimensions: 0}\n",
            Some("spec.mock.embeddingDimensions"),
        ),
        (
            "mock",
            "  mock: {embeddingDimensions: 8193}\n",
            Some("spec.mock.embeddingDimensions"),
        ),
        ("mock", "  mock: {embeddingDimensions: 1}\n", None),
        ("mock", "  mock: {embeddingDimensions: 8192}\n", None),
        (
            "mock",
            "  mock: {chunkWords: 0}\n",
            Some("spec.mock.chunkWords"),
        ),
        (compat, "  mock: {chunkWords: 2}\n", Some("spec.mock")),
    ];
    for (provider, extra, refused) in cases {
        let c = compile(&resources(&endpoint(provider, extra)));
        let fields: Vec<&str> = c.errors.iter().map(|e| e.field.as_str()).collect();
        match refused {
            Some(f) => {
                assert_eq!(fields, vec![f], "{provider} {extra}");
                assert!(c.snapshot.endpoints.is_empty());
            }
            None => {
                assert_eq!(fields, Vec::<&str>::new(), "{provider} {extra}");
                assert_eq!(c.snapshot.endpoints.len(), 1);
            }
        }
    }
}

/// A Service replica without `port` takes the Service's only port; with several it must name
/// one.
#[test]
fn a_service_without_a_named_port_needs_exactly_one() {
    use llmgate_crds::{ServiceBackend, ServiceKey};
    use std::collections::BTreeMap;
    let yaml = "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: llama, namespace: ai}\nspec: {model: llama, provider: openai-compatible, replicas: [{service: {name: vllm}}]}\n";
    let with_ports = |ports: &[(&str, u16)]| {
        let mut r = resources(yaml);
        r.services = Some(BTreeMap::from([(
            ServiceKey {
                namespace: "ai".into(),
                name: "vllm".into(),
            },
            vec![ServiceBackend {
                address: "10.1.0.7".into(),
                ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
                target: Some("vllm-0".into()),
            }],
        )]));
        compile(&r)
    };
    let c = with_ports(&[("http", 8000)]);
    assert_eq!(c.errors, vec![]);
    assert_eq!(
        c.snapshot.endpoints[0].replicas[0].url,
        "http://10.1.0.7:8000/v1"
    );
    let c = with_ports(&[("http", 8000), ("metrics", 9000)]);
    let got: Vec<_> = c
        .errors
        .iter()
        .map(|e| (e.field.as_str(), e.reason))
        .collect();
    assert_eq!(
        got,
        vec![("spec.replicas[0].service.port", Reason::DanglingRef)]
    );
    assert!(
        c.errors[0].message.contains("several ports"),
        "{}",
        c.errors[0].message
    );
}
