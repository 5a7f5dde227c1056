//! `ApiKey` → the SHA-256 the gateway looks keys up by, and the caller it stands for.

use std::collections::BTreeMap;

use llmgate_snapshot::{self as snap, ResourceRef, Secret};

use super::{
    CompileError, Errs, Reason, Resources, SecretKeyRef, secret_value, sha256_hex, source,
};
use crate::object::Object;
use crate::resources::ApiKeySpec;

/// Every key that compiles; a second resource declaring the same key is refused.
pub(super) fn compile_all(
    resources: &Resources,
    errors: &mut Vec<CompileError>,
) -> Vec<snap::ApiKey> {
    let mut keys_in: Vec<&Object<ApiKeySpec>> = resources.api_keys.iter().collect();
    keys_in.sort_by_key(|r| source("ApiKey", &r.metadata));
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
    api_keys
}

fn compile_api_key(
    k: &Object<ApiKeySpec>,
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
        (None, Some(s)) => secret_value(&src.namespace, s, "spec.secretRef", secrets, errs)
            .map(|(_, v)| sha256_hex(v.expose().trim())),
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
