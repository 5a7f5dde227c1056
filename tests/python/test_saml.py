"""SAML 2.0 login through a real IdP (SimpleSAMLphp): SP-initiated login at the gateway, the
IdP's login form filled in by script, the signed Response posted to the gateway's ACS, the
resulting gateway token used from the OpenAI SDK. Then responses that must be refused:
replayed, tampered, unsigned, wrapped, for another audience, answering a request the gateway
never issued."""

from __future__ import annotations

import base64
import datetime
import html
import http.cookiejar
import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import openai
import pytest

import saml_idp
from conftest import free_port

SP_ENTITY = "urn:llmgate:test-sp"
OTHER_SP = "urn:someone-else:sp"
TOKEN_KEY = "k1-0123456789abcdef0123456789abcdef-signing"


@pytest.fixture
def saml_gateway(make_gateway, tmp_path):
    if not saml_idp.available():
        pytest.fail("SimpleSAMLphp is not installed: apt-get install simplesamlphp php8.2-cli php8.2-xml")
    gw_port, idp_port = free_port(), free_port()
    acs = f"http://127.0.0.1:{gw_port}/auth/saml/acs/default/corp-saml"
    proc = saml_idp.start(tmp_path / "ssp", idp_port, SP_ENTITY, acs, OTHER_SP)
    try:
        files = {
            "identity.yaml": f"""
                apiVersion: llmgate.dev/v1alpha1
                kind: IdentityProvider
                metadata: {{name: corp-saml}}
                spec:
                  saml:
                    idpMetadata: {json.dumps(saml_idp.metadata(idp_port))}
                    entityId: "{SP_ENTITY}"
                    acsUrl: "{acs}"
                  claims: {{groups: groups}}
                  teams:
                    fromGroups:
                      - {{group: ml-eng, team: llm-engineering}}
                      - {{group: product, team: product}}
                ---
                apiVersion: llmgate.dev/v1alpha1
                kind: GatewayTokens
                metadata: {{name: tokens}}
                spec:
                  signingKeys: [{{id: k1, secretRef: {{name: gateway-tokens, key: k1}}}}]
            """,
            "models.yaml": """
                apiVersion: llmgate.dev/v1alpha1
                kind: ModelEndpoint
                metadata: {name: gpt-4}
                spec: {model: gpt-4, provider: mock}
                ---
                apiVersion: llmgate.dev/v1alpha1
                kind: ModelEndpoint
                metadata: {name: llama-3}
                spec: {model: llama-3, provider: mock}
                ---
                apiVersion: llmgate.dev/v1alpha1
                kind: AccessPolicy
                metadata: {name: models}
                spec:
                  rules:
                    - name: ml-eng-chat
                      subjects: [{group: ml-eng}]
                      models: [gpt-4, llama-3]
                    - name: product-llama
                      subjects: [{group: product}]
                      models: [llama-3]
            """,
        }
        gw = make_gateway(files, port=gw_port, env={"GATEWAY_TOKENS_K1": TOKEN_KEY})
        yield gw, idp_port, acs
    finally:
        proc.kill()


def idp_login(sso_url: str, user: str) -> str:
    """Follows the IdP's redirect to its login form, logs in; the base64 SAMLResponse."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(sso_url, timeout=30)
    body, login_url = page.read().decode(), page.geturl()
    state = re.search(r'name="AuthState" value="([^"]+)"', body).group(1)
    form = urllib.parse.urlencode({"username": user, "password": f"{user}pass", "AuthState": html.unescape(state)})
    body = opener.open(urllib.request.Request(login_url.split("?")[0], data=form.encode()), timeout=30).read().decode()
    return html.unescape(re.search(r'name="SAMLResponse" value="([^"]+)"', body).group(1))


def gateway_login_redirect(gw) -> str:
    """GET /auth/login: where the gateway sends the browser (the IdP, with an AuthnRequest)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    base = gw.base_url.removesuffix("/v1")
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(f"{base}/auth/login/default/corp-saml", timeout=10)
    assert e.value.code == 302
    return e.value.headers["Location"]


def post_acs(acs: str, saml_response: str) -> tuple[int, dict]:
    data = urllib.parse.urlencode({"SAMLResponse": saml_response}).encode()
    req = urllib.request.Request(acs, data=data, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def request_id(location: str) -> str:
    q = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)
    xml = zlib.decompress(base64.b64decode(q["SAMLRequest"][0]), -15).decode()
    return re.search(r'ID="([^"]+)"', xml).group(1)


def foreign_request(sso_base: str, issuer: str, req_id: str, acs: str) -> str:
    """An AuthnRequest llmgate did not send, for the IdP to answer."""
    authn = (
        f'<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{req_id}" Version="2.0" '
        f'IssueInstant="2026-01-01T00:00:00Z" AssertionConsumerServiceURL="{acs}" '
        f'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
        f"<saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>"
    )
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = co.compress(authn.encode()) + co.flush()
    return sso_base + "?" + urllib.parse.urlencode({"SAMLRequest": base64.b64encode(deflated).decode()})


def xml_of(b64: str) -> str:
    return base64.b64decode(b64).decode()


def b64_of(xml: str) -> str:
    return base64.b64encode(xml.encode()).decode()


def test_saml_login_gives_a_token_and_bad_responses_are_refused(saml_gateway):
    gw, idp_port, acs = saml_gateway
    base = gw.base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{base}/auth/saml/metadata/default/corp-saml", timeout=5) as r:
        md = r.read().decode()
    assert SP_ENTITY in md and acs in md

    # alice: the whole SP-initiated flow.
    location = gateway_login_redirect(gw)
    alice_response = idp_login(location, "alice")
    status, body = post_acs(acs, alice_response)
    assert status == 200, body
    assert body["user"] == "alice@example.test"
    assert body["groups"] == ["ml-eng"] and body["team"] == "llm-engineering"
    sdk = gw.client(body["access_token"])
    sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])

    # bob is in product: llama-3 only.
    status, bob = post_acs(acs, idp_login(gateway_login_redirect(gw), "bob"))
    assert status == 200, bob
    bob_sdk = gw.client(bob["access_token"])
    bob_sdk.chat.completions.create(model="llama-3", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        bob_sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])

    def refused(saml_response: str, says: str) -> None:
        status, err = post_acs(acs, saml_response)
        assert status == 401, (says, status, err)
        assert says in err["error"]["message"], (says, err)

    # The same response again.
    refused(alice_response, "already used")

    # bob promotes himself: an attribute edited after signing.
    bob_response = xml_of(idp_login(gateway_login_redirect(gw), "bob"))
    refused(b64_of(bob_response.replace(">product<", ">ml-eng<")), "signature")

    # Every signature stripped.
    unsigned = re.sub(r"<ds:Signature.*?</ds:Signature>", "", bob_response, flags=re.S)
    refused(b64_of(unsigned), "not signed")

    # Wrapping: the Response signature removed, the signed assertion moved out of place, and a
    # forged unsigned assertion for alice put where the SP reads it.
    assertion = re.search(r"<saml:Assertion.*</saml:Assertion>", bob_response, flags=re.S).group(0)
    no_response_sig = re.sub(r"(<samlp:Response[^>]*>.*?)<ds:Signature.*?</ds:Signature>", r"\1", bob_response, count=1, flags=re.S)
    forged = re.sub(r"<ds:Signature.*?</ds:Signature>", "", assertion, flags=re.S)
    forged = forged.replace("bob@example.test", "alice@example.test").replace('ID="', 'ID="x', 1)
    wrapped = no_response_sig.replace(
        assertion, f"<samlp:Extensions>{assertion}</samlp:Extensions>{forged}"
    )
    refused(b64_of(wrapped), "not signed")

    # A valid response to a request llmgate never issued.
    sso = location.split("?")[0]
    stray = idp_login(foreign_request(sso, SP_ENTITY, "_not-ours-123", acs), "alice")
    refused(stray, "InResponseTo")

    # A valid response to our request, but for another service provider (audience).
    ours = request_id(gateway_login_redirect(gw))
    other = idp_login(foreign_request(sso, OTHER_SP, ours, acs), "alice")
    refused(other, "audience")

    records = [json.loads(line) for line in gw.audit_lines()]
    rec = next(r for r in records if r.get("user") == "alice@example.test" and r.get("status") == 200)
    assert rec["auth_method"] == "gateway_token" and rec["identity_provider"] == "default/corp-saml"
    assert rec["policy_rule"] == "default/models#ml-eng-chat"


SAML_DIR = Path(__file__).resolve().parents[1] / "saml"


def mint(**fields) -> str:
    """A Response signed with the test IdP's own key: what it would send for these fields."""
    if not (SAML_DIR / "node_modules" / "xml-crypto").exists():
        pytest.fail("the SAML minting helper is not installed: run `npm ci --prefix tests/saml`")
    out = subprocess.run(
        ["node", str(SAML_DIR / "mint.mjs"), json.dumps(fields)], check=True, capture_output=True
    )
    return out.stdout.decode()


def test_assertions_outside_their_time_window_are_refused(saml_gateway, tmp_path):
    gw, idp_port, acs = saml_gateway
    ssp = tmp_path / "ssp" / "cert"
    now = datetime.datetime.now(datetime.timezone.utc)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    issuer = f"http://127.0.0.1:{idp_port}/saml2/idp/metadata.php"

    def fields(req_id: str, not_before, not_after, user: str) -> dict:
        return {
            "key": str(ssp / "idp.key"), "cert": str(ssp / "idp.crt"), "issuer": issuer,
            "audience": SP_ENTITY, "recipient": acs, "inResponseTo": req_id, "nameId": user,
            "groups": ["product"], "notBefore": iso(not_before), "notOnOrAfter": iso(not_after),
        }

    # The minted response is accepted when in its window: the minting is sound...
    fresh = mint(**fields(request_id(gateway_login_redirect(gw)), now - datetime.timedelta(minutes=1),
                          now + datetime.timedelta(minutes=5), "dana@example.test"))
    status, body = post_acs(acs, fresh)
    assert status == 200 and body["user"] == "dana@example.test", body
    # ...so these fail for their times alone: expired beyond the skew, and not valid yet.
    for not_before, not_after in [
        (now - datetime.timedelta(minutes=10), now - datetime.timedelta(minutes=5)),
        (now + datetime.timedelta(minutes=5), now + datetime.timedelta(minutes=10)),
    ]:
        late = mint(**fields(request_id(gateway_login_redirect(gw)), not_before, not_after, "erin@example.test"))
        status, err = post_acs(acs, late)
        assert status == 401 and "expired or not valid yet" in err["error"]["message"], err
