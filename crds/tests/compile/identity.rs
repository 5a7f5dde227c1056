//! IdentityProvider, GatewayTokens and ApiKey principals: compiled, or refused where they are.

use super::{resources, with_secret};
use llmgate_crds::{Reason, compile};
use llmgate_snapshot::Principal;

const LONG: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn gateway_tokens_compile_their_keys_lifetime_and_revocations() {
    let yaml = r#"
apiVersion: llmgate.dev/v1alpha1
kind: GatewayTokens
metadata: {name: tokens}
spec:
  signingKeys:
    - {id: k1, secretRef: {name: gt, key: k1}}
    - {id: short, secretRef: {name: gt, key: short}}
  ttl: 90m
  revoked:
    - {user: alice, issuedBefore: "2026-01-01T00:00:00Z"}
    - {serviceAccount: ci, issuedBefore: "2026-02-01T00:00:00Z"}
    - {user: bob, serviceAccount: ci, issuedBefore: "2026-01-01T00:00:00Z"}
    - {issuedBefore: "2026-01-01T00:00:00Z"}
    - {user: carol, issuedBefore: "yesterday"}
---
apiVersion: llmgate.dev/v1alpha1
kind: GatewayTokens
metadata: {name: z-second}
spec:
  signingKeys: [{id: k1, secretRef: {name: gt, key: k1}}]
"#;
    let r = with_secret(resources(yaml), "default", "gt", "k1", LONG);
    let r = with_secret(r, "default", "gt", "short", &LONG[..31]);
    let c = compile(&r);
    let got: Vec<_> = c
        .errors
        .iter()
        .map(|e| (e.resource.name.as_str(), e.field.as_str(), e.reason))
        .collect();
    assert_eq!(
        got,
        vec![
            ("tokens", "spec.revoked[2]", Reason::Invalid),
            ("tokens", "spec.revoked[3]", Reason::Invalid),
            ("tokens", "spec.revoked[4].issuedBefore", Reason::Invalid),
            ("tokens", "spec.signingKeys[1].secretRef", Reason::Invalid),
        ]
    );
    assert!(c.errors[3].message.contains("shorter than 32 bytes"));
    // A resource with errors is left out whole; the other one, alone now, is the installation's.
    let t = c.snapshot.gateway_tokens.expect("the valid one");
    assert_eq!(t.source.name, "z-second");

    // Fixed, it compiles: 32 bytes is enough, 90 minutes is 5400 s, revocations are kept.
    let fixed = yaml
        .replace("    - {id: short, secretRef: {name: gt, key: short}}\n", "")
        .replace(
            "    - {user: bob, serviceAccount: ci, issuedBefore: \"2026-01-01T00:00:00Z\"}\n    - {issuedBefore: \"2026-01-01T00:00:00Z\"}\n    - {user: carol, issuedBefore: \"yesterday\"}\n",
            "",
        );
    let fixed = &fixed[..fixed.find("---\napiVersion: llmgate.dev/v1alpha1\nkind: GatewayTokens\nmetadata: {name: z-second}").expect("second")];
    let c = compile(&with_secret(resources(fixed), "default", "gt", "k1", LONG));
    assert_eq!(c.errors, vec![]);
    let t = c.snapshot.gateway_tokens.expect("gateway tokens");
    assert_eq!(t.keys.len(), 1);
    assert_eq!(t.keys[0].0, "k1");
    assert_eq!(t.ttl_secs, 5400);
    let revoked: Vec<(Principal, i64)> = t
        .revoked
        .iter()
        .map(|r| (r.principal.clone(), r.before))
        .collect();
    assert_eq!(
        revoked,
        vec![
            (Principal::User("alice".into()), 1_767_225_600),
            (Principal::ServiceAccount("ci".into()), 1_769_904_000),
        ]
    );
    // Two valid ones: the second is refused.
    let two = format!(
        "{fixed}---\napiVersion: llmgate.dev/v1alpha1\nkind: GatewayTokens\nmetadata: {{name: z-second}}\nspec:\n  signingKeys: [{{id: k1, secretRef: {{name: gt, key: k1}}}}]\n"
    );
    let c = compile(&with_secret(resources(&two), "default", "gt", "k1", LONG));
    let got: Vec<_> = c
        .errors
        .iter()
        .map(|e| (e.resource.name.as_str(), e.field.as_str(), e.reason))
        .collect();
    assert_eq!(got, vec![("z-second", "metadata.name", Reason::Conflict)]);
    assert_eq!(
        c.snapshot.gateway_tokens.expect("first").source.name,
        "tokens"
    );
    // Without a ttl: 12 hours; under a second: one second.
    let c = compile(&with_secret(
        resources(&fixed.replace("  ttl: 90m\n", "")),
        "default",
        "gt",
        "k1",
        LONG,
    ));
    assert_eq!(
        c.snapshot.gateway_tokens.expect("tokens").ttl_secs,
        12 * 3600
    );
    let c = compile(&with_secret(
        resources(&fixed.replace("ttl: 90m", "ttl: 500ms")),
        "default",
        "gt",
        "k1",
        LONG,
    ));
    assert_eq!(c.snapshot.gateway_tokens.expect("tokens").ttl_secs, 1);
}

#[test]
fn identity_providers_keep_their_clock_skew_and_never_share_an_issuer() {
    let idp = |name: &str, issuer: &str, extra: &str| {
        format!(
            "---\napiVersion: llmgate.dev/v1alpha1\nkind: IdentityProvider\nmetadata: {{name: {name}}}\nspec:\n  oidc: {{issuer: \"{issuer}\", audiences: [llmgate]{extra}}}\n"
        )
    };
    let yaml = idp("a", "https://one.example", "")
        + &idp("b", "https://two.example", ", clockSkew: 5s")
        + &idp("c", "https://one.example", "");
    let c = compile(&resources(&yaml));
    let got: Vec<_> = c
        .errors
        .iter()
        .map(|e| (e.resource.name.as_str(), e.field.as_str(), e.reason))
        .collect();
    assert_eq!(got, vec![("c", "spec.oidc.issuer", Reason::Conflict)]);
    assert!(
        c.errors[0].message.contains("default/a"),
        "{}",
        c.errors[0].message
    );
    let skews: Vec<(String, u64)> = c
        .snapshot
        .identity_providers
        .iter()
        .map(|p| {
            let o = p.oidc.as_ref().expect("oidc");
            (o.issuer.clone(), o.clock_skew_secs)
        })
        .collect();
    assert_eq!(
        skews,
        vec![
            ("https://one.example".to_string(), 60),
            ("https://two.example".to_string(), 5)
        ]
    );
}

#[test]
fn an_api_key_speaks_for_exactly_one_named_principal() {
    let key = |spec: &str| {
        format!(
            "apiVersion: llmgate.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: k}}\nspec: {{{spec}, sha256: \"{}\"}}\n",
            "a".repeat(64)
        )
    };
    for spec in [
        "user: \"\"",
        "serviceAccount: \"\"",
        "user: ada, serviceAccount: ci",
        "team: ml",
    ] {
        let c = compile(&resources(&key(spec)));
        let got: Vec<_> = c
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.reason))
            .collect();
        assert_eq!(got, vec![("spec", Reason::Invalid)], "{spec}");
        assert!(c.snapshot.api_keys.is_empty(), "{spec}");
    }
    // The digest: 64 hex digits (either case), nothing else.
    let digest = |d: &str| {
        format!(
            "apiVersion: llmgate.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: k}}\nspec: {{user: ada, sha256: \"{d}\"}}\n"
        )
    };
    let upper = "A".repeat(64);
    let short = "a".repeat(63);
    let long = "a".repeat(65);
    let not_hex = format!("{}g", "a".repeat(63));
    for (d, ok) in [
        (upper.as_str(), true),
        (&short, false),
        (&long, false),
        (&not_hex, false),
    ] {
        let c = compile(&resources(&digest(d)));
        let fields: Vec<_> = c.errors.iter().map(|e| e.field.as_str()).collect();
        if ok {
            assert_eq!(fields, Vec::<&str>::new());
            assert_eq!(
                c.snapshot.api_keys[0].sha256,
                "a".repeat(64),
                "stored lower-case"
            );
        } else {
            assert_eq!(fields, vec!["spec.sha256"], "{d}");
        }
    }
    for (spec, who) in [
        ("user: ada", Principal::User("ada".into())),
        ("serviceAccount: ci", Principal::ServiceAccount("ci".into())),
    ] {
        let c = compile(&resources(&key(spec)));
        assert_eq!(c.errors, vec![], "{spec}");
        assert_eq!(c.snapshot.api_keys[0].principal, who);
    }
}

#[test]
fn oidc_keys_are_refreshed_on_the_declared_schedule_never_below_a_second() {
    let idp = |extra: &str| {
        format!(
            "apiVersion: llmgate.dev/v1alpha1\nkind: IdentityProvider\nmetadata: {{name: corp}}\nspec:\n  oidc: {{issuer: \"https://one.example\", audiences: [llmgate]{extra}}}\n"
        )
    };
    let refresh = |extra: &str| {
        let c = compile(&resources(&idp(extra)));
        let errors: Vec<_> = c.errors.iter().map(|e| e.field.clone()).collect();
        let secs = c
            .snapshot
            .identity_providers
            .first()
            .and_then(|p| p.oidc.as_ref())
            .map(|o| o.keys_refresh_secs);
        (errors, secs)
    };
    assert_eq!(refresh(""), (vec![], Some(3600)));
    assert_eq!(refresh(", keysRefresh: 2m"), (vec![], Some(120)));
    assert_eq!(refresh(", keysRefresh: 1s"), (vec![], Some(1)));
    let refused = vec!["spec.oidc.keysRefresh".to_string()];
    assert_eq!(refresh(", keysRefresh: 999ms"), (refused.clone(), None));
    assert_eq!(refresh(", keysRefresh: soon"), (refused, None));
}

#[test]
fn the_saml_sample_compiles_to_its_idp_and_service() {
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/identity/saml.yaml"
    ))
    .expect("sample");
    for (skew, want) in [("clockSkew: 60s", 60), ("clockSkew: 5s", 5), ("", 60)] {
        let c = compile(&resources(&sample.replace("clockSkew: 60s", skew)));
        assert_eq!(c.errors, vec![], "{skew}");
        let saml = c.snapshot.identity_providers[0].saml.clone().expect("saml");
        assert_eq!(saml.idp_entity_id, "https://idp.example.com/saml");
        assert_eq!(saml.sso_url, "https://idp.example.com/saml/sso");
        assert_eq!(saml.entity_id, "https://llmgate.example.com/saml");
        assert_eq!(
            saml.acs_url,
            "https://llmgate.example.com/auth/saml/acs/default/corp-saml"
        );
        assert_eq!(saml.signing_certs.len(), 1);
        assert_eq!(saml.clock_skew_secs, want, "{skew}");
    }
    // Metadata without a signing certificate is refused where it is.
    let unsigned = sample.replace(
        "<md:KeyDescriptor use=\"signing\">",
        "<md:KeyDescriptor use=\"encryption\">",
    );
    let c = compile(&resources(&unsigned));
    let fields: Vec<_> = c.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, vec!["spec.saml.idpMetadata"]);
    assert!(c.snapshot.identity_providers.is_empty());
}
