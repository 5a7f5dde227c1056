//! `GatewayTokens` → the signing keys, lifetime and revocations of gateway tokens. One per
//! installation.

use std::collections::BTreeMap;

use llmgate_snapshot::{self as snap, ResourceRef, Secret};

use super::{
    CompileError, Errs, Reason, Resources, SecretKeyRef, positive_millis, secret_value, source,
};
use crate::object::Object;
use crate::resources::GatewayTokensSpec;

/// The installation's gateway tokens; a second resource is refused.
pub(super) fn compile_all(
    resources: &Resources,
    errors: &mut Vec<CompileError>,
) -> Option<snap::GatewayTokens> {
    let mut gwt_in: Vec<&Object<GatewayTokensSpec>> = resources.gateway_tokens.iter().collect();
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
    gateway_tokens
}

fn compile_gateway_tokens(
    g: &Object<GatewayTokensSpec>,
    src: &ResourceRef,
    secrets: &BTreeMap<SecretKeyRef, Secret>,
    errs: &mut Errs<'_>,
) -> snap::GatewayTokens {
    let spec = &g.spec;
    let mut keys = Vec::new();
    for (i, k) in spec.signing_keys.iter().enumerate() {
        let field = format!("spec.signingKeys[{i}].secretRef");
        match secret_value(&src.namespace, &k.secret_ref, &field, secrets, errs) {
            Some((_, s)) if s.expose().len() >= 32 => keys.push((k.id.clone(), s.clone())),
            Some((r, _)) => errs.push(
                field,
                Reason::Invalid,
                format!(
                    "{r} is shorter than 32 bytes; generate one with `openssl rand -base64 48`"
                ),
            ),
            None => {}
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
