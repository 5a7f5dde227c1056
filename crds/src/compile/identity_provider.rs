//! `IdentityProvider` → an OIDC issuer (keys, audiences, claims, browser login) or a SAML IdP.

use std::collections::BTreeMap;

use llmgate_snapshot::{self as snap, ResourceRef, Secret};

use super::{
    CompileError, Errs, Reason, Resources, SecretKeyRef, parse_base_url, secret_value, source,
};
use crate::duration::parse_millis;
use crate::object::Object;
use crate::resources::IdentityProviderSpec;

/// Every provider that compiles, at most one per OIDC issuer.
pub(super) fn compile_all(
    resources: &Resources,
    errors: &mut Vec<CompileError>,
) -> Vec<snap::IdentityProvider> {
    let mut idps_in: Vec<&Object<IdentityProviderSpec>> =
        resources.identity_providers.iter().collect();
    idps_in.sort_by_key(|r| source("IdentityProvider", &r.metadata));
    let mut identity_providers: Vec<snap::IdentityProvider> = Vec::new();
    for idp in idps_in {
        let src = source("IdentityProvider", &idp.metadata);
        let mut errs = Errs::new(&src);
        let compiled = compile_identity_provider(idp, &src, &resources.secrets, &mut errs);
        let issuer = |p: &snap::IdentityProvider| p.oidc.as_ref().map(|o| o.issuer.clone());
        if let Some(first) = identity_providers
            .iter()
            .find(|p| issuer(p).is_some() && issuer(p) == issuer(&compiled))
        {
            errs.push(
                "spec.oidc.issuer",
                Reason::Conflict,
                format!(
                    "issuer {:?} is already declared by {}",
                    issuer(&compiled).unwrap_or_default(),
                    first.source
                ),
            );
        }
        if errs.is_empty() {
            identity_providers.push(compiled);
        }
        errors.extend(errs.0);
    }
    identity_providers
}

fn compile_identity_provider(
    idp: &Object<IdentityProviderSpec>,
    src: &ResourceRef,
    secrets: &BTreeMap<SecretKeyRef, Secret>,
    errs: &mut Errs<'_>,
) -> snap::IdentityProvider {
    let spec = &idp.spec;
    if spec.oidc.is_some() == spec.saml.is_some() {
        errs.push("spec", Reason::Invalid, "set exactly one of oidc, saml");
    }
    let oidc = spec
        .oidc
        .as_ref()
        .map(|o| compile_oidc(o, src, secrets, errs));
    let saml = spec.saml.as_ref().and_then(|s| compile_saml(s, errs));
    let claims = spec.claims.clone().unwrap_or_default();
    let teams = spec.teams.clone().unwrap_or_default();
    let default_user = if saml.is_some() { "NameID" } else { "sub" };
    snap::IdentityProvider {
        source: src.clone(),
        oidc,
        saml,
        mapping: snap::ClaimMapping {
            user: claims.user.unwrap_or_else(|| default_user.to_owned()),
            groups: claims.groups.unwrap_or_else(|| "groups".to_owned()),
            client_id: claims.client_id.unwrap_or_else(|| "client_id".to_owned()),
            team: snap::TeamRule {
                claim: teams.claim,
                from_groups: teams
                    .from_groups
                    .into_iter()
                    .map(|g| (g.group, g.team))
                    .collect(),
                service_accounts: teams
                    .service_accounts
                    .into_iter()
                    .map(|s| (s.service_account, s.team))
                    .collect(),
            },
        },
    }
}

/// Seconds of leeway for token and assertion times (default 60).
fn clock_skew(text: Option<&str>, field: &str, errs: &mut Errs<'_>) -> u64 {
    match text.map(parse_millis) {
        None => 60,
        Some(Ok(ms)) => ms / 1000,
        Some(Err(m)) => {
            errs.push(field, Reason::Invalid, m);
            60
        }
    }
}

fn compile_saml(s: &crate::resources::SamlSpec, errs: &mut Errs<'_>) -> Option<snap::Saml> {
    if let Err(m) = parse_base_url(&s.acs_url) {
        errs.push("spec.saml.acsUrl", Reason::Invalid, m);
    }
    let clock_skew_secs = clock_skew(s.clock_skew.as_deref(), "spec.saml.clockSkew", errs);
    match crate::saml_metadata::parse(&s.idp_metadata) {
        Ok(md) => Some(snap::Saml {
            idp_entity_id: md.entity_id,
            sso_url: md.sso_redirect_url,
            signing_certs: md.signing_certs,
            entity_id: s.entity_id.clone(),
            acs_url: s.acs_url.clone(),
            clock_skew_secs,
        }),
        Err(m) => {
            errs.push("spec.saml.idpMetadata", Reason::Invalid, m);
            None
        }
    }
}

fn compile_oidc(
    o: &crate::resources::OidcSpec,
    src: &ResourceRef,
    secrets: &BTreeMap<SecretKeyRef, Secret>,
    errs: &mut Errs<'_>,
) -> snap::Oidc {
    if let Err(m) = parse_base_url(&o.issuer) {
        errs.push("spec.oidc.issuer", Reason::Invalid, m);
    }
    if let Some(u) = &o.jwks_uri
        && let Err(m) = parse_base_url(u)
    {
        errs.push("spec.oidc.jwksUri", Reason::Invalid, m);
    }
    if o.audiences.is_empty() {
        errs.push(
            "spec.oidc.audiences",
            Reason::Invalid,
            "name at least one audience: a token for another service must not pass",
        );
    }
    let clock_skew_secs = clock_skew(o.clock_skew.as_deref(), "spec.oidc.clockSkew", errs);
    let keys_refresh_secs = match o.keys_refresh.as_deref().map(parse_millis) {
        None => snap::DEFAULT_KEYS_REFRESH_SECS,
        Some(Ok(ms)) if ms >= 1000 => ms / 1000,
        Some(Ok(_)) => {
            errs.push(
                "spec.oidc.keysRefresh",
                Reason::Invalid,
                "keysRefresh must be at least 1s",
            );
            snap::DEFAULT_KEYS_REFRESH_SECS
        }
        Some(Err(m)) => {
            errs.push("spec.oidc.keysRefresh", Reason::Invalid, m);
            snap::DEFAULT_KEYS_REFRESH_SECS
        }
    };
    let algorithms = if o.algorithms.is_empty() {
        vec!["RS256".to_owned(), "ES256".to_owned()]
    } else {
        o.algorithms
            .iter()
            .map(|a| {
                serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect()
    };
    let login = o.login.as_ref().and_then(|l| {
        if let Err(m) = parse_base_url(&l.redirect_url) {
            errs.push("spec.oidc.login.redirectUrl", Reason::Invalid, m);
        }
        let (_, secret) = secret_value(
            &src.namespace,
            &l.client_secret.secret_ref,
            "spec.oidc.login.clientSecret.secretRef",
            secrets,
            errs,
        )?;
        Some(snap::OidcLogin {
            client_id: l.client_id.clone(),
            client_secret: secret.clone(),
            scopes: if l.scopes.is_empty() {
                vec!["openid".into(), "email".into(), "profile".into()]
            } else {
                l.scopes.clone()
            },
            redirect_url: l.redirect_url.clone(),
        })
    });
    snap::Oidc {
        issuer: o.issuer.trim_end_matches('/').to_owned(),
        audiences: o.audiences.clone(),
        algorithms,
        clock_skew_secs,
        jwks_uri: o.jwks_uri.clone(),
        keys_refresh_secs,
        login,
    }
}
