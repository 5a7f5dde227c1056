//! llmgate as a SAML 2.0 service provider: SP-initiated login (HTTP-Redirect `AuthnRequest`),
//! the assertion consumer service (HTTP-POST `Response`), and SP metadata.
//!
//! XML signatures are verified by `bergshamra` (pure-Rust XML-DSig with exclusive C14N, only
//! the IdP's certificates from its metadata trusted, duplicate IDs refused); the SAML rules are
//! ours, checked on the *same parsed document* the signature was verified on, so the assertion
//! consumed is exactly the element a valid signature covers (no signature wrapping):
//!
//! - the Response is a success, addressed (`Destination`) to our ACS;
//! - exactly one Assertion, itself signed or inside a signed Response;
//! - issued by the IdP of the metadata;
//! - bearer confirmation for our ACS (`Recipient`), in response to a request we issued
//!   (`InResponseTo`: request IDs carry an expiry and an HMAC under the gateway token key, so
//!   any replica can check them without shared state), not expired;
//! - `Conditions` time window with the clock skew, and our entity ID among the audiences;
//! - its ID not seen before (replay), remembered until it expires, across replicas when the
//!   counters live in Redis.

use std::collections::HashMap;
use std::io::Write;

use base64::Engine;
use bergshamra::{DsigContext, KeysManager, VerifyResult};
use llmgate_snapshot::{IdentityProvider, Principal, Saml};
use uppsala::{Document, NodeId};

use super::TokenIdentity;

const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// How long a login may take at the IdP.
const REQUEST_TTL_SECS: i64 = 600;

/// Why an assertion is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamlError {
    #[error("SAMLResponse is not base64 XML")]
    Malformed,
    #[error("the IdP reports a failed login ({0})")]
    Status(String),
    #[error("the response is addressed to another service (Destination)")]
    Destination,
    #[error("the response signature is invalid: {0}")]
    BadSignature(String),
    #[error("the assertion is not signed by the IdP")]
    Unsigned,
    #[error("expected exactly one assertion (encrypted assertions are not supported)")]
    AssertionCount,
    #[error("the assertion was issued by another IdP")]
    Issuer,
    #[error("the assertion is not for this service (Recipient)")]
    Recipient,
    #[error("the assertion answers no login started here (InResponseTo)")]
    InResponseTo,
    #[error("the assertion is expired or not valid yet")]
    Expired,
    #[error("this service is not among the assertion's audiences")]
    Audience,
    #[error("the assertion was already used")]
    Replayed,
    #[error("the assertion names no subject")]
    NoSubject,
}

/// One SAML IdP, ready to verify its responses.
pub struct ServiceProvider {
    pub spec: IdentityProvider,
    pub saml: Saml,
    pub id: String,
    certs: Vec<Vec<u8>>,
}

impl ServiceProvider {
    pub fn build(spec: &IdentityProvider, saml: &Saml) -> ServiceProvider {
        let b64 = base64::engine::general_purpose::STANDARD;
        ServiceProvider {
            id: format!("{}/{}", spec.source.namespace, spec.source.name),
            certs: saml
                .signing_certs
                .iter()
                .filter_map(|c| b64.decode(c).ok())
                .collect(),
            spec: spec.clone(),
            saml: saml.clone(),
        }
    }

    /// The HTTP-Redirect URL that starts a login, for a request ID from [`request_id`].
    pub fn login_url(&self, request_id: &str) -> String {
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
        let request = format!(
            r#"<samlp:AuthnRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="{request_id}" Version="2.0" IssueInstant="{now}" Destination="{}" AssertionConsumerServiceURL="{}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>{}</saml:Issuer><samlp:NameIDPolicy AllowCreate="true"/></samlp:AuthnRequest>"#,
            xml_escape(&self.saml.sso_url),
            xml_escape(&self.saml.acs_url),
            xml_escape(&self.saml.entity_id),
        );
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = z.write_all(request.as_bytes());
        let deflated = z.finish().unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD.encode(deflated);
        let sep = if self.saml.sso_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}SAMLRequest={}",
            self.saml.sso_url,
            crate::http::url::encode(&encoded)
        )
    }

    /// SP metadata for the IdP's administrators.
    pub fn metadata(&self) -> String {
        format!(
            r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="{SAMLP}">
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
            xml_escape(&self.saml.entity_id),
            xml_escape(&self.saml.acs_url),
        )
    }

    /// Checks a base64 `SAMLResponse`; the caller it names, and the assertion ID with its
    /// expiry (unix seconds) for the replay check. `issued` says whether a request ID is one of
    /// ours.
    pub fn consume(
        &self,
        saml_response: &str,
        issued: &dyn Fn(&str) -> bool,
    ) -> Result<(TokenIdentity, String, i64), SamlError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(saml_response.trim().replace(['\r', '\n', ' '], ""))
            .map_err(|_| SamlError::Malformed)?;
        let xml = String::from_utf8(raw).map_err(|_| SamlError::Malformed)?;
        let doc = uppsala::parse(&xml).map_err(|_| SamlError::Malformed)?;
        let root = doc.document_element().ok_or(SamlError::Malformed)?;
        if !is(&doc, root, SAMLP, "Response") {
            return Err(SamlError::Malformed);
        }
        if let Some(d) = doc.get_attribute(root, "Destination")
            && d != self.saml.acs_url
        {
            return Err(SamlError::Destination);
        }
        let status = doc
            .first_child_element_by_name_ns(root, SAMLP, "Status")
            .and_then(|s| doc.first_child_element_by_name_ns(s, SAMLP, "StatusCode"))
            .and_then(|c| doc.get_attribute(c, "Value"))
            .unwrap_or("");
        if status != SUCCESS {
            return Err(SamlError::Status(status.to_owned()));
        }

        // Signatures, on this very document.
        if doc
            .get_elements_by_tag_name_ns("http://www.w3.org/2000/09/xmldsig#", "Signature")
            .is_empty()
        {
            return Err(SamlError::Unsigned);
        }
        let mut km = KeysManager::new();
        for der in &self.certs {
            if let Ok(k) = bergshamra::keys::loader::load_x509_cert_der(der) {
                km.add_key(k);
            }
        }
        let ctx = DsigContext::new(km);
        let results =
            bergshamra::dsig::verify::verify_all_document_with_source(&ctx, &doc, Some(&xml))
                .map_err(|e| SamlError::BadSignature(e.to_string()))?;
        let mut covered: Vec<NodeId> = Vec::new();
        for r in &results {
            match r {
                VerifyResult::Valid { references, .. } => covered.extend(
                    references
                        .iter()
                        .filter(|r| r.digest_verified)
                        .filter_map(|r| r.resolved_node),
                ),
                VerifyResult::Invalid { reason } => {
                    return Err(SamlError::BadSignature(reason.clone()));
                }
            }
        }

        let assertions = doc.child_elements_by_name_ns(root, SAML, "Assertion");
        if assertions.len() != 1
            || !doc
                .child_elements_by_name_ns(root, SAML, "EncryptedAssertion")
                .is_empty()
        {
            return Err(SamlError::AssertionCount);
        }
        let a = assertions[0];
        if !covered.contains(&a) && !covered.contains(&root) {
            return Err(SamlError::Unsigned);
        }
        let text = |n: Option<NodeId>| n.map(|n| doc.text_content_deep(n).trim().to_owned());
        if text(doc.first_child_element_by_name_ns(a, SAML, "Issuer")).as_deref()
            != Some(self.saml.idp_entity_id.as_str())
        {
            return Err(SamlError::Issuer);
        }
        let now = jiff::Timestamp::now().as_second();
        let skew = self.saml.clock_skew_secs as i64;
        let subject = doc
            .first_child_element_by_name_ns(a, SAML, "Subject")
            .ok_or(SamlError::NoSubject)?;
        let name_id = text(doc.first_child_element_by_name_ns(subject, SAML, "NameID"))
            .filter(|n| !n.is_empty());
        let mut confirmed_until = None;
        for sc in doc.child_elements_by_name_ns(subject, SAML, "SubjectConfirmation") {
            if doc.get_attribute(sc, "Method") != Some(BEARER) {
                continue;
            }
            let Some(data) =
                doc.first_child_element_by_name_ns(sc, SAML, "SubjectConfirmationData")
            else {
                continue;
            };
            if doc.get_attribute(data, "Recipient") != Some(self.saml.acs_url.as_str()) {
                return Err(SamlError::Recipient);
            }
            if !doc.get_attribute(data, "InResponseTo").is_some_and(issued) {
                return Err(SamlError::InResponseTo);
            }
            let until = time(doc.get_attribute(data, "NotOnOrAfter")).ok_or(SamlError::Expired)?;
            if now >= until + skew {
                return Err(SamlError::Expired);
            }
            confirmed_until = Some(until);
        }
        let confirmed_until = confirmed_until.ok_or(SamlError::Recipient)?;
        let conditions = doc
            .first_child_element_by_name_ns(a, SAML, "Conditions")
            .ok_or(SamlError::Audience)?;
        if let Some(nb) = time(doc.get_attribute(conditions, "NotBefore"))
            && now + skew < nb
        {
            return Err(SamlError::Expired);
        }
        let not_after = time(doc.get_attribute(conditions, "NotOnOrAfter"));
        if not_after.is_some_and(|na| now >= na + skew) {
            return Err(SamlError::Expired);
        }
        let audiences: Vec<String> = doc
            .child_elements_by_name_ns(conditions, SAML, "AudienceRestriction")
            .into_iter()
            .flat_map(|r| doc.child_elements_by_name_ns(r, SAML, "Audience"))
            .map(|n| doc.text_content_deep(n).trim().to_owned())
            .collect();
        if !audiences.contains(&self.saml.entity_id) {
            return Err(SamlError::Audience);
        }
        let assertion_id = doc
            .get_attribute(a, "ID")
            .ok_or(SamlError::Malformed)?
            .to_owned();

        let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
        for st in doc.child_elements_by_name_ns(a, SAML, "AttributeStatement") {
            for at in doc.child_elements_by_name_ns(st, SAML, "Attribute") {
                let Some(name) = doc.get_attribute(at, "Name") else {
                    continue;
                };
                let values = doc
                    .child_elements_by_name_ns(at, SAML, "AttributeValue")
                    .into_iter()
                    .map(|v| doc.text_content_deep(v).trim().to_owned());
                attrs.entry(name.to_owned()).or_default().extend(values);
            }
        }
        let m = &self.spec.mapping;
        let user = if m.user == "NameID" {
            name_id
        } else {
            attrs.get(&m.user).and_then(|v| v.first().cloned())
        }
        .ok_or(SamlError::NoSubject)?;
        let groups: Vec<std::sync::Arc<str>> = attrs
            .get(&m.groups)
            .into_iter()
            .flatten()
            .map(|g| std::sync::Arc::from(g.as_str()))
            .collect();
        let principal = Principal::User(user);
        let claimed = m
            .team
            .claim
            .as_ref()
            .and_then(|c| attrs.get(c))
            .and_then(|v| v.first())
            .map(String::as_str);
        let team = super::team_of(&m.team, claimed, &groups, &principal);
        let expires = not_after.unwrap_or(confirmed_until).max(confirmed_until);
        Ok((
            TokenIdentity {
                principal,
                groups,
                team,
                provider: std::sync::Arc::from(self.id.as_str()),
                expires_at: expires,
            },
            assertion_id,
            expires + skew,
        ))
    }
}

fn is(doc: &Document<'_>, id: NodeId, ns: &str, local: &str) -> bool {
    doc.element(id)
        .is_some_and(|e| e.name.matches(Some(ns), local))
}

fn time(v: Option<&str>) -> Option<i64> {
    v?.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A request ID that proves itself: `_` + base64url(expiry ‖ nonce ‖ HMAC-SHA256(key, expiry ‖
/// nonce)[..16]), so `InResponseTo` can be checked by any replica without shared state.
pub fn request_id(key: &[u8]) -> String {
    let exp = (jiff::Timestamp::now().as_second() + REQUEST_TTL_SECS).to_be_bytes();
    let nonce = super::random_bytes(12);
    let mut body = exp.to_vec();
    body.extend_from_slice(&nonce);
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), &body);
    body.extend_from_slice(&tag.as_ref()[..16]);
    format!(
        "_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    )
}

/// Whether `id` came from [`request_id`] under one of `keys` and has not expired.
pub fn issued_by(id: &str, keys: &[&[u8]]) -> bool {
    let Some(b) = id.strip_prefix('_').and_then(|s| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
    }) else {
        return false;
    };
    if b.len() != 8 + 12 + 16 {
        return false;
    }
    let (body, tag) = b.split_at(20);
    let exp = i64::from_be_bytes(body[..8].try_into().unwrap_or([0; 8]));
    if exp < jiff::Timestamp::now().as_second() {
        return false;
    }
    keys.iter().any(|k| {
        let full = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k), body);
        use subtle::ConstantTimeEq;
        bool::from(full.as_ref()[..16].ct_eq(tag))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_verify_only_under_their_key() {
        let id = request_id(b"key-one-0123456789abcdef0123456789");
        assert!(issued_by(&id, &[b"key-one-0123456789abcdef0123456789"]));
        assert!(!issued_by(&id, &[b"key-two-0123456789abcdef0123456789"]));
        let mut forged = id.clone().into_bytes();
        let last = forged.len() - 3;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(!issued_by(
            &String::from_utf8(forged).unwrap_or_default(),
            &[b"key-one-0123456789abcdef0123456789"]
        ));
        assert!(!issued_by("_abc", &[b"k"]));
    }
}
