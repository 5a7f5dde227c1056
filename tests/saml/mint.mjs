// Mints a SAML Response whose Assertion is signed (rsa-sha256, exclusive C14N) with a given
// key, for the tests' edge cases that a real IdP will not produce on demand (an assertion
// already expired, say).
//
//   node mint.mjs '{"key": "idp.key", "cert": "idp.crt", "issuer": "...", "audience": "...",
//                   "recipient": "...", "inResponseTo": "...", "nameId": "...",
//                   "groups": ["ml-eng"], "notBefore": "...", "notOnOrAfter": "...",
//                   "destination": "..." (optional: the Response's Destination, default the
//                   recipient)}'
// prints the base64 Response.
import fs from 'node:fs';
import crypto from 'node:crypto';
import { SignedXml } from 'xml-crypto';

const o = JSON.parse(process.argv[2]);
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
const id = (p) => `${p}${crypto.randomBytes(16).toString('hex')}`;
const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const aid = id('_a');
const groups = (o.groups || []).map((g) => `<saml:AttributeValue>${esc(g)}</saml:AttributeValue>`).join('');
const assertion = `<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${aid}" Version="2.0" IssueInstant="${now}">`
  + `<saml:Issuer>${esc(o.issuer)}</saml:Issuer>`
  + `<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">${esc(o.nameId)}</saml:NameID>`
  + `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">`
  + `<saml:SubjectConfirmationData NotOnOrAfter="${o.notOnOrAfter}" Recipient="${esc(o.recipient)}" InResponseTo="${esc(o.inResponseTo)}"/>`
  + `</saml:SubjectConfirmation></saml:Subject>`
  + `<saml:Conditions NotBefore="${o.notBefore}" NotOnOrAfter="${o.notOnOrAfter}">`
  + `<saml:AudienceRestriction><saml:Audience>${esc(o.audience)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>`
  + `<saml:AuthnStatement AuthnInstant="${now}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>`
  + `<saml:AttributeStatement><saml:Attribute Name="groups">${groups}</saml:Attribute></saml:AttributeStatement>`
  + `</saml:Assertion>`;
const response = `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${id('_r')}" Version="2.0" IssueInstant="${now}" Destination="${esc(o.destination ?? o.recipient)}" InResponseTo="${esc(o.inResponseTo)}">`
  + `<saml:Issuer>${esc(o.issuer)}</saml:Issuer>`
  + `<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>`
  + assertion + `</samlp:Response>`;

const sig = new SignedXml({ privateKey: fs.readFileSync(o.key), publicCert: fs.readFileSync(o.cert) });
sig.addReference({
  xpath: "//*[local-name(.)='Assertion']",
  digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256',
  transforms: ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
});
sig.canonicalizationAlgorithm = 'http://www.w3.org/2001/10/xml-exc-c14n#';
sig.signatureAlgorithm = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256';
sig.computeSignature(response, {
  prefix: 'ds',
  location: { reference: "//*[local-name(.)='Assertion']/*[local-name(.)='Issuer']", action: 'after' },
});
process.stdout.write(Buffer.from(sig.getSignedXml()).toString('base64'));
