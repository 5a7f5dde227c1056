//! What llmgate needs from a SAML IdP's metadata: its entity ID, its single sign-on URL for the
//! HTTP-Redirect binding, and its signing certificates. Metadata without a signing certificate
//! is refused: without one, signatures could not be checked at all.

use uppsala::{Document, NodeId};

const MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpMetadata {
    pub entity_id: String,
    pub sso_redirect_url: String,
    /// Base64 DER, whitespace removed.
    pub signing_certs: Vec<String>,
}

pub fn parse(xml: &str) -> Result<IdpMetadata, String> {
    let doc = uppsala::parse(xml).map_err(|e| format!("metadata is not XML: {e}"))?;
    let root = doc
        .document_element()
        .ok_or("metadata has no root element")?;
    let entity = if is(&doc, root, MD, "EntityDescriptor") {
        root
    } else {
        doc.get_elements_by_tag_name_ns(MD, "EntityDescriptor")
            .into_iter()
            .next()
            .ok_or("metadata has no md:EntityDescriptor")?
    };
    let entity_id = doc
        .get_attribute(entity, "entityID")
        .ok_or("md:EntityDescriptor has no entityID")?
        .to_owned();
    let idp = doc
        .child_elements_by_name_ns(entity, MD, "IDPSSODescriptor")
        .into_iter()
        .next()
        .ok_or("metadata has no md:IDPSSODescriptor: it does not describe an IdP")?;
    let sso_redirect_url = doc
        .child_elements_by_name_ns(idp, MD, "SingleSignOnService")
        .into_iter()
        .find(|s| doc.get_attribute(*s, "Binding") == Some(REDIRECT))
        .and_then(|s| doc.get_attribute(s, "Location"))
        .ok_or("the IdP offers no SingleSignOnService with the HTTP-Redirect binding")?
        .to_owned();
    let mut signing_certs = Vec::new();
    for kd in doc.child_elements_by_name_ns(idp, MD, "KeyDescriptor") {
        if doc.get_attribute(kd, "use").is_some_and(|u| u != "signing") {
            continue;
        }
        for cert in doc.get_elements_by_tag_name_ns(DS, "X509Certificate") {
            if ancestor(&doc, cert, kd) {
                let b64: String = doc
                    .text_content_deep(cert)
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                if !b64.is_empty() && !signing_certs.contains(&b64) {
                    signing_certs.push(b64);
                }
            }
        }
    }
    if signing_certs.is_empty() {
        return Err(
            "the IdP metadata has no signing certificate (md:KeyDescriptor with ds:X509Certificate): assertions could not be verified".into(),
        );
    }
    Ok(IdpMetadata {
        entity_id,
        sso_redirect_url,
        signing_certs,
    })
}

fn is(doc: &Document<'_>, id: NodeId, ns: &str, local: &str) -> bool {
    doc.element(id)
        .is_some_and(|e| e.name.matches(Some(ns), local))
}

fn ancestor(doc: &Document<'_>, mut node: NodeId, of: NodeId) -> bool {
    while let Some(p) = doc.parent(node) {
        if p == of {
            return true;
        }
        node = p;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD_OK: &str = r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="http://idp.example/metadata">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="encryption"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>ENC</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>
      MIIB AAAA
    </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="http://idp.example/post"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="http://idp.example/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#;

    #[test]
    fn reads_entity_sso_and_signing_certs_only() {
        let md = parse(MD_OK).expect("parses");
        assert_eq!(md.entity_id, "http://idp.example/metadata");
        assert_eq!(md.sso_redirect_url, "http://idp.example/sso");
        assert_eq!(md.signing_certs, vec!["MIIBAAAA".to_string()]);
    }

    #[test]
    fn refuses_metadata_without_a_signing_certificate() {
        let no_sig = MD_OK.replace("use=\"signing\"", "use=\"encryption\"");
        let e = parse(&no_sig).expect_err("refused");
        assert!(e.contains("no signing certificate"), "{e}");
        assert!(parse("<not-metadata/>").is_err());
    }
}
