"""SAML 2.0 login through a real IdP (SimpleSAMLphp): SP-initiated login at the gateway, the
IdP's login form filled in by script, the signed Response posted to the gateway's ACS, the
resulting gateway token used from the OpenAI SDK. Then responses that must be refused:
replayed (on the same replica and on another sharing Redis), tampered, unsigned, wrapped,
signed by a key the IdP's metadata does not hold, addressed to another ACS or from another
issuer, carrying two assertions, for another audience, answering a request the gateway never
issued."""

from __future__ import annotations

import base64
import datetime
import errno
import hashlib
import html
import http.cookiejar
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import openai
import pytest

import saml_idp
from conftest import assert_browser_hardened, free_port, port_open, start_service, wait_until

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
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    try:
        gw = make_gateway(saml_files(idp_port, acs), port=gw_port, env={"GATEWAY_TOKENS_K1": TOKEN_KEY}, cwd=workdir)
        yield gw, idp_port, acs
    finally:
        proc.kill()


def saml_files(idp_port: int, acs: str) -> dict[str, str]:
    """The config: the test IdP, gateway tokens, two mock models and who may use them."""
    return {
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
    assert_browser_hardened(e.value.headers, "login redirect")
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
        assert_browser_hardened(r.headers, "metadata")
    assert SP_ENTITY in md and acs in md

    # The token page a browser sees, and a refusal.
    page_request = urllib.request.Request(
        acs,
        data=urllib.parse.urlencode({"SAMLResponse": idp_login(gateway_login_redirect(gw), "alice")}).encode(),
        headers={"Accept": "text/html"},
    )
    with urllib.request.urlopen(page_request, timeout=10) as r:
        page = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html") and "Logged in as alice@example.test" in page
        assert_browser_hardened(r.headers, "token page")
    with pytest.raises(urllib.error.HTTPError) as refusal:
        urllib.request.urlopen(urllib.request.Request(acs, data=b"SAMLResponse=eA=="), timeout=10)
    assert refusal.value.code == 401
    assert_browser_hardened(refusal.value.headers, "refusal")

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
    refused(b64_of(unsigned), "no valid signature")

    # Wrapping: the Response signature removed, the signed assertion moved out of place, and a
    # forged unsigned assertion for alice put where the SP reads it.
    assertion = re.search(r"<saml:Assertion.*</saml:Assertion>", bob_response, flags=re.S).group(0)
    no_response_sig = re.sub(r"(<samlp:Response[^>]*>.*?)<ds:Signature.*?</ds:Signature>", r"\1", bob_response, count=1, flags=re.S)
    forged = re.sub(r"<ds:Signature.*?</ds:Signature>", "", assertion, flags=re.S)
    forged = forged.replace("bob@example.test", "alice@example.test").replace('ID="', 'ID="x', 1)
    wrapped = no_response_sig.replace(
        assertion, f"<samlp:Extensions>{assertion}</samlp:Extensions>{forged}"
    )
    refused(b64_of(wrapped), "no valid signature")

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


DS = "http://www.w3.org/2000/09/xmldsig#"
FIXED_REFUSAL = "SAML login refused: the response carries no valid signature of the IdP"


def hostile_response(acs: str, signatures: str) -> str:
    """A successful-looking Response for our ACS carrying `signatures` and nothing signed."""
    return b64_of(
        f'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:ds="{DS}" ID="_r" Version="2.0" '
        f'IssueInstant="2026-01-01T00:00:00Z" Destination="{acs}">'
        f'<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
        f"{signatures}</samlp:Response>"
    )


def reference_signature(uri: str, digest: str = "AAAA") -> str:
    return (
        f'<ds:Signature><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
        f'<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
        f'<ds:Reference URI="{uri}"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
        f"<ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>"
        f"<ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>"
    )


def timed_acs(acs: str, saml_response: str) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    status, body = post_acs(acs, saml_response)
    return status, body, time.monotonic() - t0


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/{pid}/status")


def test_an_unauthenticated_acs_post_costs_milliseconds_and_opens_no_file(saml_gateway, make_gateway, tmp_path):
    gw, idp_port, acs = saml_gateway
    cwd = tmp_path / "cwd"

    # Four hundred signatures over the whole document, as many as fit the ACS's body cap: each
    # would digest all of it.
    many = hostile_response(acs, reference_signature("") * 400)
    assert 150 * 1024 < len(urllib.parse.urlencode({"SAMLResponse": many})) < 256 * 1024
    for _ in range(3):
        status, body, took = timed_acs(acs, many)
        assert (status, body["error"]["message"]) == (401, FIXED_REFUSAL), body
        assert took < 1.0, f"a 400-signature response took {took:.2f}s to refuse"

    # Thousands: more than an ACS ever receives is not read at all, in the caller's API shape.
    status, body, took = timed_acs(acs, hostile_response(acs, reference_signature("") * 3000))
    assert status == 413 and body["error"]["code"] == "request_too_large", body
    assert took < 1.0, f"a 3000-signature response took {took:.2f}s to refuse"

    # A reference to a file in the working directory, with the right digest, reads exactly
    # like one to a file that does not exist: the answer tells nothing about either.
    (cwd / "probe.txt").write_text("hello")
    probe_digest = base64.b64encode(hashlib.sha256(b"hello").digest()).decode()
    _, present = post_acs(acs, hostile_response(acs, reference_signature("probe.txt", probe_digest)))
    _, absent = post_acs(acs, hostile_response(acs, reference_signature("absent.txt", probe_digest)))
    assert present == absent and present["error"]["message"] == FIXED_REFUSAL, (present, absent)

    # A FIFO blocks whoever opens it for reading until a writer comes: answered at once, and
    # afterwards nobody has it open (a non-blocking writer finds no reader).
    fifo = cwd / "pipe.txt"
    os.mkfifo(fifo)
    status, body, took = timed_acs(acs, hostile_response(acs, reference_signature("pipe.txt")))
    assert (status, body["error"]["message"]) == (401, FIXED_REFUSAL) and took < 1.0, (body, took)
    with pytest.raises(OSError) as e:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert e.value.errno == errno.ENXIO, "the gateway opened the FIFO named by a reference"

    # Working directory `/`: `dev/zero` would be read until memory runs out.
    port2 = free_port()
    acs2 = f"http://127.0.0.1:{port2}/auth/saml/acs/default/corp-saml"
    gw2 = make_gateway(saml_files(idp_port, acs2), port=port2, env={"GATEWAY_TOKENS_K1": TOKEN_KEY}, cwd="/")
    pid = gw2.service.proc.pid
    before = vm_kib(pid, "VmRSS")
    for uri in ("dev/zero", "dev/urandom", "proc/self/environ"):
        status, body, took = timed_acs(acs2, hostile_response(acs2, reference_signature(uri)))
        assert (status, body["error"]["message"]) == (401, FIXED_REFUSAL) and took < 1.0, (uri, body, took)
    assert gw2.service.alive()
    grown = vm_kib(pid, "VmHWM") - before
    assert grown < 50 * 1024, f"the gateway grew by {grown} KiB answering three ACS posts"

    # A DTD is refused before anything is expanded.
    doctype = b64_of('<!DOCTYPE r [<!ENTITY e "x">]>' + xml_of(hostile_response(acs, reference_signature("#_r"))))
    status, body = post_acs(acs, doctype)
    assert status == 401 and "DTD" in body["error"]["message"], body


def rogue_key(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh key and self-signed certificate that no metadata lists."""
    key, cert = tmp_path / "rogue.key", tmp_path / "rogue.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "1", "-subj", "/CN=llmgate-test-idp"],
        check=True, capture_output=True,
    )
    return key, cert


def test_each_trust_rule_refuses_a_response_that_breaks_only_it(saml_gateway, tmp_path):
    gw, idp_port, acs = saml_gateway
    ssp = tmp_path / "ssp" / "cert"
    now = datetime.datetime.now(datetime.timezone.utc)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    issuer = f"http://127.0.0.1:{idp_port}/saml2/idp/metadata.php"

    def response(**changes) -> str:
        fields = {
            "key": str(ssp / "idp.key"), "cert": str(ssp / "idp.crt"), "issuer": issuer,
            "audience": SP_ENTITY, "recipient": acs, "inResponseTo": request_id(gateway_login_redirect(gw)),
            "nameId": "dana@example.test", "groups": ["product"],
            "notBefore": iso(now - datetime.timedelta(minutes=1)),
            "notOnOrAfter": iso(now + datetime.timedelta(minutes=5)),
        }
        fields.update(changes)
        return mint(**fields)

    def refused(saml_response: str, says: str) -> None:
        status, err = post_acs(acs, saml_response)
        assert status == 401, (says, status, err)
        assert says in err["error"]["message"], (says, err)

    # The control: everything right is accepted, so each refusal below is for its one change.
    status, body = post_acs(acs, response())
    assert status == 200 and body["user"] == "dana@example.test", body

    # Validly signed, by a key the IdP's metadata does not list (its certificate in KeyInfo,
    # with the IdP's own subject name): the main trust rule.
    key, cert = rogue_key(tmp_path)
    rogue = response(key=str(key), cert=str(cert))
    assert "<ds:X509Certificate>" in xml_of(rogue), "the rogue certificate travels in KeyInfo"
    refused(rogue, "no valid signature")

    # Addressed to another ACS, confirmed for another ACS, issued by another IdP.
    elsewhere = "https://elsewhere.example/acs"
    refused(response(destination=elsewhere), "another service (Destination)")
    refused(response(recipient=elsewhere, destination=acs), "not for this service (Recipient)")
    refused(response(issuer="https://idp.elsewhere.example/metadata"), "issued by another IdP")

    # A second, unsigned assertion beside the signed one: a signature sits only on the
    # Response or on its one Assertion, so this is refused before any digest is computed.
    xml = xml_of(response())
    signed = re.search(r"<saml:Assertion.*</saml:Assertion>", xml, flags=re.S).group(0)
    extra = re.sub(r"<ds:Signature.*?</ds:Signature>", "", signed, flags=re.S).replace('ID="', 'ID="x', 1)
    refused(b64_of(xml.replace(signed, signed + extra)), "no valid signature")
    refused(b64_of(xml.replace(signed, extra + signed)), "no valid signature")


@pytest.fixture
def redis_url(tmp_path) -> str:
    port = free_port()
    svc = start_service(
        "redis-server",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        tmp_path / "redis",
    )
    wait_until(svc, lambda: port_open(port), 10, "redis-server listening")
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        svc.stop()


def test_a_response_used_on_one_replica_is_refused_on_every_other(make_gateway, redis_url, tmp_path):
    """Two replicas behind one ACS URL share Redis: a login started on one finishes on the other,
    and a response used once is refused everywhere."""
    if not saml_idp.available():
        pytest.fail("SimpleSAMLphp is not installed: apt-get install simplesamlphp php8.2-cli php8.2-xml")
    port_a, port_b, idp_port = free_port(), free_port(), free_port()
    acs = f"http://127.0.0.1:{port_a}/auth/saml/acs/default/corp-saml"
    acs_b = acs.replace(f":{port_a}/", f":{port_b}/")
    proc = saml_idp.start(tmp_path / "ssp", idp_port, SP_ENTITY, acs, OTHER_SP)
    try:
        env = {"GATEWAY_TOKENS_K1": TOKEN_KEY}
        args = ["--redis-url", redis_url]
        a = make_gateway(saml_files(idp_port, acs), port=port_a, env=env, args=args)
        make_gateway(saml_files(idp_port, acs), port=port_b, env=env, args=args)

        # Started on A, finished on B.
        first = idp_login(gateway_login_redirect(a), "alice")
        status, body = post_acs(acs_b, first)
        assert status == 200 and body["user"] == "alice@example.test", body
        # Replayed on A, which never saw it: refused, because B remembered it in Redis.
        status, err = post_acs(acs, first)
        assert status == 401 and "already used" in err["error"]["message"], err
        # And the other way round.
        second = idp_login(gateway_login_redirect(a), "bob")
        assert post_acs(acs, second)[0] == 200
        status, err = post_acs(acs_b, second)
        assert status == 401 and "already used" in err["error"]["message"], err
    finally:
        proc.kill()
