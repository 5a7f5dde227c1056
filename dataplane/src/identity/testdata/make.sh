#!/usr/bin/env bash
# Regenerates the XML-DSig fixtures of identity/xmldsig.rs with xmlsec1 (Debian's `xmlsec1`), an
# implementation independent of ours: SAML responses whose Assertion is signed the way IdPs sign
# (enveloped, exclusive C14N, the prefixes declared only on the Response, `xs` used only in an
# attribute value so only the PrefixList brings it in, a comment), by an RSA-2048 and a P-256 key,
# and a second RSA certificate that signed nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
subj=/CN=idp.example
openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj $subj -keyout "$tmp/rsa.key" -out rsa.crt 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj $subj -keyout "$tmp/other.key" -out other.crt 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 -subj $subj -keyout "$tmp/p256.key" -out p256.crt 2>/dev/null

template() { # $1 = signature method URI
cat <<XML
<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="_r1" Version="2.0" IssueInstant="2026-01-01T00:00:00Z"><saml:Issuer>https://idp.example</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status><saml:Assertion ID="_a1" Version="2.0" IssueInstant="2026-01-01T00:00:00Z"><saml:Issuer>https://idp.example</saml:Issuer><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="$1"/><ds:Reference URI="#_a1"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="xs"/></ds:Transform></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature><saml:Subject><saml:NameID>alice@example.com</saml:NameID></saml:Subject><!-- comments are not signed --><saml:AttributeStatement><saml:Attribute Name="groups"><saml:AttributeValue xsi:type="xs:string">ml-eng</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion></samlp:Response>
XML
}
template http://www.w3.org/2001/04/xmldsig-more#rsa-sha256 > "$tmp/rsa.xml"
template http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256 > "$tmp/p256.xml"
for k in rsa p256; do
  xmlsec1 --sign --privkey-pem "$tmp/$k.key" --id-attr:ID urn:oasis:names:tc:SAML:2.0:assertion:Assertion \
    --output "signed-$k.xml" "$tmp/$k.xml"
done
