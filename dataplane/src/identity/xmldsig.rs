//! XML-DSig verification for the one signature profile SAML uses: an enveloped signature over
//! its parent element, referenced by that element's `#ID`, exclusive C14N, RSA or ECDSA with
//! SHA-2, and only keys the IdP's metadata names (`KeyInfo` in the document is never read).
//!
//! Canonicalization is `bergshamra-c14n` (the W3C C14N variants over an `uppsala` document);
//! digests and signatures are `ring`, the crypto the TLS stack already links.
//! The general XML-DSig machinery (XPath and XSLT transforms, external references, manifests,
//! key retrieval) is exactly what a SAML consumer must refuse, so it is not linked at all: the
//! SAML module's `signature_shape` has refused every other structure before this runs.
//!
//! Pure: a parsed document and trusted keys in, the signed element or a reason out.

use base64::Engine;
use bergshamra_c14n::C14nMode;
use bergshamra_xml::NodeSet;
use uppsala::{Document, NodeId};

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// Attributes XML-DSig resolves `#id` references against; a document repeating one of their
/// values could make the signed element and the element read differ, so it is refused.
const ID_ATTRIBUTES: [&str; 4] = ["ID", "Id", "id", "AssertionID"];

/// The signature methods accepted (SHA-1 is refused: collisions are practical).
pub const SIGNATURE_METHODS: [&str; 5] = [
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
];
/// The digest methods accepted.
pub const DIGEST_METHODS: [&str; 3] = [
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];

/// A public key taken from one of the IdP's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedKey {
    /// PKCS#1 `RSAPublicKey` DER.
    Rsa(Vec<u8>),
    /// An uncompressed point on P-256.
    P256(Vec<u8>),
    /// An uncompressed point on P-384.
    P384(Vec<u8>),
}

impl TrustedKey {
    /// The key of an X.509 certificate (DER), when it is RSA, P-256 or P-384.
    pub fn from_certificate(der: &[u8]) -> Option<TrustedKey> {
        const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
        let (algorithm, key) = der::subject_public_key_info(der)?;
        let (oid, params) = der::algorithm(algorithm)?;
        match oid {
            RSA => Some(TrustedKey::Rsa(key.to_vec())),
            EC if params == Some(P256) => Some(TrustedKey::P256(key.to_vec())),
            EC if params == Some(P384) => Some(TrustedKey::P384(key.to_vec())),
            _ => None,
        }
    }

    /// ECDSA pairs each curve with its own hash (P-256 with SHA-256, P-384 with SHA-384), as
    /// every IdP does and as `ring` offers for the fixed-width signatures XML-DSig carries.
    fn verifies(&self, method: &str, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        let (alg, key): (&dyn sig::VerificationAlgorithm, &[u8]) = match (self, method) {
            (TrustedKey::Rsa(k), m) if m.ends_with("#rsa-sha256") => {
                (&sig::RSA_PKCS1_2048_8192_SHA256, k)
            }
            (TrustedKey::Rsa(k), m) if m.ends_with("#rsa-sha384") => {
                (&sig::RSA_PKCS1_2048_8192_SHA384, k)
            }
            (TrustedKey::Rsa(k), m) if m.ends_with("#rsa-sha512") => {
                (&sig::RSA_PKCS1_2048_8192_SHA512, k)
            }
            (TrustedKey::P256(k), m) if m.ends_with("#ecdsa-sha256") => {
                (&sig::ECDSA_P256_SHA256_FIXED, k)
            }
            (TrustedKey::P384(k), m) if m.ends_with("#ecdsa-sha384") => {
                (&sig::ECDSA_P384_SHA384_FIXED, k)
            }
            _ => return false,
        };
        sig::UnparsedPublicKey::new(alg, key)
            .verify(message, signature)
            .is_ok()
    }
}

/// Why a signature does not verify; for the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsigError {
    #[error("the signature is not shaped as SAML signs ({0})")]
    Shape(&'static str),
    #[error("an ID is repeated in the document")]
    DuplicateId,
    #[error("canonicalization failed")]
    Canonicalization,
    #[error("the digest of the signed element does not match")]
    Digest,
    #[error("no trusted key verifies the signature value")]
    SignatureValue,
}

/// Whether no two elements of `doc` share an ID value.
pub fn ids_are_unique(doc: &Document<'_>) -> bool {
    let mut seen = std::collections::HashSet::new();
    for node in doc.descendants(doc.root()) {
        let Some(e) = doc.element(node) else { continue };
        for a in &e.attributes {
            if ID_ATTRIBUTES.contains(&a.name.local_name.as_ref()) && !seen.insert(&*a.value) {
                return false;
            }
        }
    }
    true
}

/// Verifies the enveloped signature `signature` and answers the element it signs (its parent).
/// The caller has checked the document's shape and that IDs are unique.
pub fn verify(
    doc: &Document<'_>,
    signature: NodeId,
    keys: &[TrustedKey],
) -> Result<NodeId, DsigError> {
    let signed = doc.parent(signature).ok_or(DsigError::Shape("no parent"))?;
    let info = child(doc, signature, "SignedInfo")?;
    let reference = child(doc, info, "Reference")?;

    // The reference: the parent's subtree without comments, minus this signature (the
    // enveloped-signature transform), canonicalized as its transform list says.
    let mut nodes = NodeSet::tree_without_comments(signed, doc);
    let mut enveloped = false;
    let mut mode = C14nMode::Inclusive;
    let mut prefixes = Vec::new();
    let mut canonicalized = false;
    if let Ok(list) = child(doc, reference, "Transforms") {
        for t in doc.child_elements_by_name_ns(list, DSIG, "Transform") {
            match doc.get_attribute(t, "Algorithm") {
                Some(ENVELOPED) if !enveloped && !canonicalized => {
                    remove_subtree(doc, signature, &mut nodes);
                    enveloped = true;
                }
                Some(EXC_C14N) if !canonicalized => {
                    mode = C14nMode::Exclusive;
                    prefixes = inclusive_prefixes(doc, t);
                    canonicalized = true;
                }
                _ => return Err(DsigError::Shape("transforms")),
            }
        }
    }
    if !enveloped {
        // Without it the digest would cover the signature itself: no valid signature exists.
        return Err(DsigError::Shape("no enveloped-signature transform"));
    }
    let digest_method = doc
        .get_attribute(child(doc, reference, "DigestMethod")?, "Algorithm")
        .unwrap_or("");
    let digest_alg = match digest_method {
        m if m == DIGEST_METHODS[0] => &ring::digest::SHA256,
        m if m == DIGEST_METHODS[1] => &ring::digest::SHA384,
        m if m == DIGEST_METHODS[2] => &ring::digest::SHA512,
        _ => return Err(DsigError::Shape("digest method")),
    };
    let expected = base64_text(doc, child(doc, reference, "DigestValue")?)
        .ok_or(DsigError::Shape("digest value"))?;
    let canonical = bergshamra_c14n::canonicalize_doc(doc, mode, Some(&nodes), &prefixes)
        .map_err(|_| DsigError::Canonicalization)?;
    if ring::digest::digest(digest_alg, &canonical).as_ref() != expected.as_slice() {
        return Err(DsigError::Digest);
    }

    // SignedInfo, canonicalized as it says, under one of the trusted keys.
    let c14n = child(doc, info, "CanonicalizationMethod")?;
    if doc.get_attribute(c14n, "Algorithm") != Some(EXC_C14N) {
        return Err(DsigError::Shape("canonicalization method"));
    }
    let method = doc
        .get_attribute(child(doc, info, "SignatureMethod")?, "Algorithm")
        .filter(|m| SIGNATURE_METHODS.contains(m))
        .ok_or(DsigError::Shape("signature method"))?;
    let signed_info = bergshamra_c14n::canonicalize_doc(
        doc,
        C14nMode::Exclusive,
        Some(&NodeSet::tree_without_comments(info, doc)),
        &inclusive_prefixes(doc, c14n),
    )
    .map_err(|_| DsigError::Canonicalization)?;
    let value = base64_text(doc, child(doc, signature, "SignatureValue")?)
        .ok_or(DsigError::Shape("signature value"))?;
    if keys
        .iter()
        .any(|k| k.verifies(method, &signed_info, &value))
    {
        Ok(signed)
    } else {
        Err(DsigError::SignatureValue)
    }
}

/// The one `ds:<local>` child of `parent`.
fn child(doc: &Document<'_>, parent: NodeId, local: &'static str) -> Result<NodeId, DsigError> {
    match doc.child_elements_by_name_ns(parent, DSIG, local)[..] {
        [one] => Ok(one),
        _ => Err(DsigError::Shape(local)),
    }
}

fn remove_subtree(doc: &Document<'_>, id: NodeId, nodes: &mut NodeSet) {
    for n in doc.descendants(id) {
        nodes.remove_id(n);
    }
    nodes.remove_id(id);
}

/// The `ec:InclusiveNamespaces PrefixList` of a C14N transform or method.
fn inclusive_prefixes(doc: &Document<'_>, node: NodeId) -> Vec<String> {
    doc.child_elements_by_name_ns(node, EXC_C14N, "InclusiveNamespaces")
        .first()
        .and_then(|&n| doc.get_attribute(n, "PrefixList"))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The base64 text of an element, whitespace (line breaks in long values) ignored.
fn base64_text(doc: &Document<'_>, node: NodeId) -> Option<Vec<u8>> {
    let text: String = doc
        .text_content_deep(node)
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Just enough DER to find a certificate's `SubjectPublicKeyInfo`; `ring` then parses and checks
/// the key itself.
mod der {
    /// One TLV at the start of `input`: (tag, contents, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (t, contents, rest) = tlv(input)?;
        (t == tag).then_some((contents, rest))
    }

    const SEQUENCE: u8 = 0x30;

    /// (algorithm identifier contents, public key bits) of a certificate.
    pub fn subject_public_key_info(cert: &[u8]) -> Option<(&[u8], &[u8])> {
        let (certificate, _) = expect(cert, SEQUENCE)?;
        let (tbs, _) = expect(certificate, SEQUENCE)?;
        let mut rest = tbs;
        // [0] version (absent in v1 certificates), serial, signature, issuer, validity, subject.
        if rest.first() == Some(&0xa0) {
            rest = tlv(rest)?.2;
        }
        for _ in 0..5 {
            rest = tlv(rest)?.2;
        }
        let (spki, _) = expect(rest, SEQUENCE)?;
        let (algorithm, rest) = expect(spki, SEQUENCE)?;
        let (bits, _) = expect(rest, 0x03)?;
        // A BIT STRING of whole bytes: the first octet (unused bits) is 0.
        let (&unused, key) = bits.split_first()?;
        (unused == 0).then_some((algorithm, key))
    }

    /// (OID, OID parameter if the parameter is an OID) of an algorithm identifier.
    pub fn algorithm(contents: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
        let (oid, rest) = expect(contents, 0x06)?;
        Some((oid, expect(rest, 0x06).map(|(p, _)| p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key is found in a v1 certificate (no `[0]` version) too; truncated DER has none.
    #[test]
    fn finds_the_key_of_rsa_and_ec_certificates() {
        let rsa = v1_der(
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            None,
        );
        assert!(matches!(
            TrustedKey::from_certificate(&rsa),
            Some(TrustedKey::Rsa(k)) if k == [1, 2, 3]
        ));
        let ec = v1_der(
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
            Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        );
        assert!(matches!(
            TrustedKey::from_certificate(&ec),
            Some(TrustedKey::P256(_))
        ));
        assert_eq!(TrustedKey::from_certificate(&rsa[..rsa.len() - 2]), None);
        assert_eq!(TrustedKey::from_certificate(b"not DER"), None);
    }

    /// A v1 certificate shape (no `[0]` version) with the given key algorithm and key bits
    /// `01 02 03`; the other TBS fields are empty placeholders.
    fn v1_der(oid: &[u8], param: Option<&[u8]>) -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut v = vec![tag, u8::try_from(body.len()).unwrap_or(0)];
            v.extend_from_slice(body);
            v
        }
        let mut alg = tlv(0x06, oid);
        if let Some(p) = param {
            alg.extend(tlv(0x06, p));
        }
        let mut spki = tlv(0x30, &alg);
        spki.extend(tlv(0x03, &[0, 1, 2, 3]));
        let mut tbs = Vec::new();
        for tag in [0x02, 0x30, 0x30, 0x30, 0x30] {
            tbs.extend(tlv(tag, &[]));
        }
        tbs.extend(tlv(0x30, &spki));
        tlv(0x30, &tlv(0x30, &tbs))
    }

    const RSA_SIGNED: &str = include_str!("testdata/signed-rsa.xml");
    const P256_SIGNED: &str = include_str!("testdata/signed-p256.xml");

    fn key(pem: &str) -> TrustedKey {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("fixture PEM");
        TrustedKey::from_certificate(&der).expect("fixture key")
    }

    fn rsa() -> TrustedKey {
        key(include_str!("testdata/rsa.crt"))
    }

    /// Verifies the one signature of `xml` under `keys`; the signed element's local name.
    fn check(xml: &str, keys: &[TrustedKey]) -> Result<String, DsigError> {
        let doc = uppsala::parse(xml).expect("fixture parses");
        let sig = doc.get_elements_by_tag_name_ns(DSIG, "Signature")[0];
        verify(&doc, sig, keys).map(|n| {
            doc.element(n)
                .map(|e| e.name.local_name.to_string())
                .unwrap_or_default()
        })
    }

    /// The fixtures are signed by xmlsec1 (`testdata/make.sh`), an independent implementation.
    #[test]
    fn signatures_made_by_xmlsec1_verify_under_their_certificate_only() {
        assert_eq!(check(RSA_SIGNED, &[rsa()]), Ok("Assertion".into()));
        let p256 = key(include_str!("testdata/p256.crt"));
        assert!(matches!(p256, TrustedKey::P256(_)));
        assert_eq!(
            check(P256_SIGNED, std::slice::from_ref(&p256)),
            Ok("Assertion".into())
        );
        // Any of several trusted keys (metadata during a key rollover).
        assert_eq!(
            check(RSA_SIGNED, &[p256.clone(), rsa()]),
            Ok("Assertion".into())
        );

        let other = key(include_str!("testdata/other.crt"));
        assert_eq!(check(RSA_SIGNED, &[other]), Err(DsigError::SignatureValue));
        assert_eq!(check(RSA_SIGNED, &[p256]), Err(DsigError::SignatureValue));
        assert_eq!(check(RSA_SIGNED, &[]), Err(DsigError::SignatureValue));
    }

    #[test]
    fn a_changed_signed_byte_fails_and_an_unsigned_comment_does_not() {
        let changed = RSA_SIGNED.replace("alice@example.com", "mallory@example.com");
        assert_eq!(check(&changed, &[rsa()]), Err(DsigError::Digest));
        let group = RSA_SIGNED.replace(">ml-eng<", ">admins<");
        assert_eq!(check(&group, &[rsa()]), Err(DsigError::Digest));
        // Comments are outside a `#id` reference's node set (XML-DSig 4.3.3.3).
        let comment = RSA_SIGNED.replace("comments are not signed", "anything");
        assert_eq!(check(&comment, &[rsa()]), Ok("Assertion".into()));
        // SignedInfo itself is what the signature value covers.
        let info = RSA_SIGNED.replace("<ds:SignedInfo>", "<ds:SignedInfo> ");
        assert_eq!(check(&info, &[rsa()]), Err(DsigError::SignatureValue));
        let value = RSA_SIGNED.replacen("<ds:SignatureValue>", "<ds:SignatureValue>AAAA", 1);
        assert_eq!(check(&value, &[rsa()]), Err(DsigError::SignatureValue));
    }

    /// `xs` is used only inside an attribute value, so exclusive C14N renders it only because
    /// the transform's PrefixList names it: without the list the digest differs.
    #[test]
    fn the_inclusive_prefix_list_is_honoured() {
        let without = RSA_SIGNED.replace(r#"PrefixList="xs""#, r#"PrefixList="""#);
        assert_eq!(check(&without, &[rsa()]), Err(DsigError::Digest));
    }

    #[test]
    fn the_enveloped_transform_is_required_and_comes_first() {
        const ENV: &str =
            r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#;
        let without = RSA_SIGNED.replace(ENV, "");
        assert_eq!(
            check(&without, &[rsa()]),
            Err(DsigError::Shape("no enveloped-signature transform"))
        );
        let after = without.replace("</ds:Transforms>", &format!("{ENV}</ds:Transforms>"));
        assert_eq!(check(&after, &[rsa()]), Err(DsigError::Shape("transforms")));
    }

    #[test]
    fn repeated_ids_anywhere_are_found() {
        let doc = uppsala::parse(r#"<a ID="x"><b Id="y"/><c id="z"/></a>"#).expect("parses");
        assert!(ids_are_unique(&doc));
        let doc = uppsala::parse(r#"<a ID="x"><b><c ID="x"/></b></a>"#).expect("parses");
        assert!(!ids_are_unique(&doc));
        let doc = uppsala::parse(r#"<a ID="x"><b AssertionID="x"/></a>"#).expect("parses");
        assert!(!ids_are_unique(&doc));
    }
}
