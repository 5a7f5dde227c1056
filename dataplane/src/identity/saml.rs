//! llmgate as a SAML 2.0 service provider: SP-initiated login (HTTP-Redirect `AuthnRequest`),
//! the assertion consumer service (HTTP-POST `Response`), and SP metadata.
//!
//! XML signatures are verified by [`super::xmldsig`] (exclusive C14N by `bergshamra-c14n`,
//! digests and signatures by `ring`, only the keys of the IdP's metadata certificates trusted,
//! duplicate IDs refused); the SAML rules are checked on the *same parsed document* the signature was verified on, so the assertion
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
//!
//! The assertion consumer is unauthenticated, so before any digest is computed the document
//! must have the shape a SAML response has ([`signature_shape`]): no DTD, at most two
//! signatures (one on the Response, one on its Assertion), each with a single same-document
//! `#id` reference to the element it sits in and only the enveloped + exclusive-C14N
//! transforms, and no `Object`, `Manifest` or `RetrievalMethod`. That bounds the work of one
//! POST to one or two digests of a size-capped body, and no reference can name a file or a URL.
//! Every signature refusal reads the same, so the answer says nothing about files or digests.

use std::collections::HashMap;
use std::io::Write;

use base64::Engine;
use llmgate_snapshot::{IdentityProvider, Principal, Saml};
use uppsala::{Document, NodeId};

use super::TokenIdentity;
use super::xmldsig::{self, DIGEST_METHODS, SIGNATURE_METHODS, TrustedKey};

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
    #[error("the response carries a DTD, which SAML forbids")]
    Doctype,
    #[error("the IdP reports a failed login ({0})")]
    Status(String),
    #[error("the response is addressed to another service (Destination)")]
    Destination,
    /// Unsigned, badly signed, or not shaped like a signed SAML response: one text for all,
    /// so a caller learns nothing about what was looked at.
    #[error("the response carries no valid signature of the IdP")]
    Signature,
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
    keys: Vec<TrustedKey>,
}

impl ServiceProvider {
    pub fn build(spec: &IdentityProvider, saml: &Saml) -> ServiceProvider {
        let b64 = base64::engine::general_purpose::STANDARD;
        let id = format!("{}/{}", spec.source.namespace, spec.source.name);
        let keys = saml
            .signing_certs
            .iter()
            .filter_map(|c| {
                let key = b64.decode(c).ok().and_then(|der| TrustedKey::from_certificate(&der));
                if key.is_none() {
                    tracing::warn!(idp = %id, "a signing certificate of the IdP's metadata has no RSA, P-256 or P-384 key; it is not trusted");
                }
                key
            })
            .collect();
        ServiceProvider {
            id,
            keys,
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
        // SAML forbids DTDs (SAML core §1.3): no entities, no internal subset to expand.
        if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
            return Err(SamlError::Doctype);
        }
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

        // Signatures, on this very document, once it has the shape a SAML response has.
        if let Err(why) = signature_shape(&doc, root) {
            tracing::debug!(idp = %self.id, why, "SAML response refused before verification");
            return Err(SamlError::Signature);
        }
        if !xmldsig::ids_are_unique(&doc) {
            tracing::debug!(idp = %self.id, "SAML response refused: an ID is repeated");
            return Err(SamlError::Signature);
        }
        let mut covered: Vec<NodeId> = Vec::with_capacity(MAX_SIGNATURES);
        for sig in doc.get_elements_by_tag_name_ns(DSIG, "Signature") {
            match xmldsig::verify(&doc, sig, &self.keys) {
                Ok(signed) => covered.push(signed),
                Err(why) => {
                    tracing::debug!(idp = %self.id, %why, "SAML signature refused");
                    return Err(SamlError::Signature);
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
            return Err(SamlError::Signature);
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

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// The most signatures a SAML response carries: one on the Response, one on its Assertion.
const MAX_SIGNATURES: usize = 2;

/// The signature structure a SAML response may have, checked before any digest is computed
/// (see the module docs). The reason is for the log, never for the caller.
pub fn signature_shape(doc: &Document<'_>, root: NodeId) -> Result<(), &'static str> {
    for banned in ["Object", "Manifest", "RetrievalMethod"] {
        if !doc.get_elements_by_tag_name_ns(DSIG, banned).is_empty() {
            return Err("a ds:Object, ds:Manifest or ds:RetrievalMethod");
        }
    }
    let signatures = doc.get_elements_by_tag_name_ns(DSIG, "Signature");
    if signatures.is_empty() {
        return Err("no signature");
    }
    if signatures.len() > MAX_SIGNATURES {
        return Err("more signatures than a SAML response carries");
    }
    let assertions = doc.child_elements_by_name_ns(root, SAML, "Assertion");
    let mut signed: Vec<NodeId> = Vec::with_capacity(MAX_SIGNATURES);
    for sig in signatures {
        let parent = doc.parent(sig).ok_or("a signature outside any element")?;
        if parent != root && !(assertions.len() == 1 && assertions[0] == parent) {
            return Err("a signature in neither the Response nor its Assertion");
        }
        if signed.contains(&parent) {
            return Err("two signatures on one element");
        }
        signed.push(parent);
        let id = doc
            .get_attribute(parent, "ID")
            .ok_or("a signed element without an ID")?;
        let info = only_child(doc, sig, "SignedInfo")?;
        let c14n = only_child(doc, info, "CanonicalizationMethod")?;
        if doc.get_attribute(c14n, "Algorithm") != Some(EXC_C14N) {
            return Err("a canonicalization other than exclusive C14N");
        }
        let method = only_child(doc, info, "SignatureMethod")?;
        if !doc
            .get_attribute(method, "Algorithm")
            .is_some_and(|a| SIGNATURE_METHODS.contains(&a))
        {
            return Err("a signature method outside RSA/ECDSA with SHA-2");
        }
        let reference = only_child(doc, info, "Reference")?;
        let digest = only_child(doc, reference, "DigestMethod")?;
        if !doc
            .get_attribute(digest, "Algorithm")
            .is_some_and(|a| DIGEST_METHODS.contains(&a))
        {
            return Err("a digest other than SHA-2");
        }
        if doc
            .get_attribute(reference, "URI")
            .and_then(|u| u.strip_prefix('#'))
            != Some(id)
        {
            return Err("a reference to anything but the signed element's own #ID");
        }
        let transforms = doc.child_elements_by_name_ns(reference, DSIG, "Transforms");
        if transforms.len() > 1 {
            return Err("more than one Transforms list");
        }
        if let Some(&list) = transforms.first() {
            let all = doc.child_elements_by_name_ns(list, DSIG, "Transform");
            if all.len() > 2 || all.len() != element_children(doc, list) {
                return Err("more transforms than enveloped + exclusive C14N");
            }
            let mut seen: Vec<&str> = Vec::with_capacity(2);
            for t in all {
                let alg = doc.get_attribute(t, "Algorithm").unwrap_or("");
                if !(alg == ENVELOPED || alg == EXC_C14N) || seen.contains(&alg) {
                    return Err("a transform other than enveloped + exclusive C14N");
                }
                seen.push(alg);
            }
        }
    }
    Ok(())
}

/// The one `ds:<local>` child of `parent`, refusing none or several.
fn only_child(
    doc: &Document<'_>,
    parent: NodeId,
    local: &'static str,
) -> Result<NodeId, &'static str> {
    match doc.child_elements_by_name_ns(parent, DSIG, local)[..] {
        [one] => Ok(one),
        [] => Err("a signature part is missing"),
        _ => Err("a signature part is repeated"),
    }
}

fn element_children(doc: &Document<'_>, id: NodeId) -> usize {
    doc.children(id)
        .into_iter()
        .filter(|&c| doc.element(c).is_some())
        .count()
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
    request_id_at(key, jiff::Timestamp::now().as_second())
}

fn request_id_at(key: &[u8], now: i64) -> String {
    let exp = (now + REQUEST_TTL_SECS).to_be_bytes();
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
    issued_by_at(id, keys, jiff::Timestamp::now().as_second())
}

fn issued_by_at(id: &str, keys: &[&[u8]], now: i64) -> bool {
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
    if exp < now {
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

    /// A login may take 10 minutes at the IdP; an answer to a request older than that is
    /// refused though its HMAC is sound.
    #[test]
    fn request_ids_expire_after_ten_minutes() {
        let key: &[u8] = b"key-one-0123456789abcdef0123456789";
        let issued = 1_800_000_000;
        let id = request_id_at(key, issued);
        assert!(issued_by_at(&id, &[key], issued));
        assert!(issued_by_at(&id, &[key], issued + 600));
        assert!(!issued_by_at(&id, &[key], issued + 601));
        // Minted now, valid now.
        assert!(issued_by(&request_id(key), &[key]));
    }

    /// A Response with an Assertion; `sig(id)` is the signature put in each element.
    fn response(on_response: Option<String>, on_assertion: Option<String>) -> String {
        format!(
            r#"<samlp:Response xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" xmlns:ds="{DSIG}" ID="_r"><saml:Issuer>i</saml:Issuer>{}<samlp:Status/><saml:Assertion ID="_a"><saml:Issuer>i</saml:Issuer>{}</saml:Assertion></samlp:Response>"#,
            on_response.unwrap_or_default(),
            on_assertion.unwrap_or_default()
        )
    }

    fn signature(uri: &str, transforms: &[&str], digest: &str) -> String {
        let t: String = transforms
            .iter()
            .map(|a| format!(r#"<ds:Transform Algorithm="{a}"/>"#))
            .collect();
        format!(
            r#"<ds:Signature><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/><ds:SignatureMethod Algorithm="{}"/><ds:Reference URI="{uri}"><ds:Transforms>{t}</ds:Transforms><ds:DigestMethod Algorithm="{digest}"/><ds:DigestValue>AAAA</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>"#,
            SIGNATURE_METHODS[0]
        )
    }

    fn shape(xml: &str) -> Result<(), &'static str> {
        let doc = uppsala::parse(xml).expect("test XML parses");
        let root = doc.document_element().expect("a root");
        signature_shape(&doc, root)
    }

    #[test]
    fn only_the_signatures_a_saml_response_carries_reach_the_verifier() {
        let sha256 = DIGEST_METHODS[0];
        let good = |uri: &str| signature(uri, &[ENVELOPED, EXC_C14N], sha256);
        assert_eq!(shape(&response(None, Some(good("#_a")))), Ok(()));
        assert_eq!(
            shape(&response(Some(good("#_r")), Some(good("#_a")))),
            Ok(())
        );
        assert_eq!(
            shape(&response(None, Some(signature("#_a", &[], sha256)))),
            Ok(())
        );

        let refused = |xml: String, why: &str| {
            let got = shape(&xml);
            assert!(got.is_err(), "{why}: accepted");
        };
        refused(response(None, None), "unsigned");
        refused(
            response(None, Some(good("#_a").repeat(2))),
            "two on one element",
        );
        refused(
            response(Some(good("#_r").repeat(2)), Some(good("#_a"))),
            "three signatures",
        );
        refused(response(None, Some(good(""))), "the whole document");
        refused(response(None, Some(good("probe.txt"))), "a relative file");
        refused(response(None, Some(good("dev/zero"))), "a device");
        refused(response(None, Some(good("http://x/"))), "a URL");
        refused(response(None, Some(good("#_r"))), "another element's ID");
        refused(
            response(
                None,
                Some(signature(
                    "#_a",
                    &["http://www.w3.org/2002/06/xmldsig-filter2"],
                    sha256,
                )),
            ),
            "an XPath transform",
        );
        refused(
            response(
                None,
                Some(signature("#_a", &[ENVELOPED, ENVELOPED, EXC_C14N], sha256)),
            ),
            "repeated transforms",
        );
        refused(
            response(
                None,
                Some(signature(
                    "#_a",
                    &[ENVELOPED],
                    "http://www.w3.org/2000/09/xmldsig#sha1",
                )),
            ),
            "SHA-1",
        );
        refused(
            response(
                None,
                Some(good("#_a").replace(
                    "</ds:Signature>",
                    "<ds:Object><x/></ds:Object></ds:Signature>",
                )),
            ),
            "an Object",
        );
        refused(
            response(
                None,
                Some(good("#_a").replace(
                    "<ds:SignatureValue>",
                    r#"<ds:KeyInfo><ds:RetrievalMethod URI="probe.txt"/></ds:KeyInfo><ds:SignatureValue>"#,
                )),
            ),
            "a RetrievalMethod",
        );
        // A signature in an element the SP does not read (the wrapping attack's first step).
        let wrapped = response(None, None).replace(
            "<samlp:Status/>",
            &format!(
                r#"<samlp:Extensions><saml:Assertion ID="_w">{}</saml:Assertion></samlp:Extensions><samlp:Status/>"#,
                good("#_w")
            ),
        );
        refused(
            wrapped,
            "a signature outside the Response and its Assertion",
        );
    }
}
