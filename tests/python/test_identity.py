"""Logging in through a real OpenID Provider (panva's oidc-provider) and calling models with the
resulting gateway token from the OpenAI Python SDK; services with client-credentials tokens.

The authorization-code flow runs without a browser: a cookie-keeping urllib opener follows the
redirects gateway → provider → (non-interactive login) → gateway callback."""

from __future__ import annotations

import base64
import http.cookiejar
import hashlib
import hmac
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import openai
import pytest

from conftest import REPO_ROOT, assert_browser_hardened, free_port, start_service, wait_until

OIDC_DIR = REPO_ROOT / "tests" / "oidc"
USERS = {"alice": ["ml-eng"], "pat": ["product"], "carol": ["ml-eng"]}
TOKEN_KEY = "k1-0123456789abcdef0123456789abcdef-signing"


@pytest.fixture
def idp(tmp_path: Path):
    if not (OIDC_DIR / "node_modules" / "oidc-provider").exists() or not shutil.which("node"):
        pytest.fail("the test OpenID Provider is not installed: run `npm ci --prefix tests/oidc`")

    def start(redirect_uri: str) -> str:
        out = tmp_path / "idp-ready"
        svc = start_service(
            "idp",
            ["sh", "-c", f"exec node {OIDC_DIR / 'idp.mjs'} > {out}"],
            tmp_path,
            env={
                "KEYS_DIR": str(tmp_path),
                "KIDS": "k1",
                "USERS_JSON": json.dumps(USERS),
                "REDIRECT_URI": redirect_uri,
                "PORT": "0",
            },
        )
        wait_until(svc, lambda: out.exists() and "READY" in out.read_text(), 30, "the OpenID Provider")
        return out.read_text().split()[1]

    return start


def config(issuer: str, port: int) -> dict[str, str]:
    return {
        "identity.yaml": f"""
            apiVersion: llmgate.dev/v1alpha1
            kind: IdentityProvider
            metadata: {{name: corp}}
            spec:
              oidc:
                issuer: "{issuer}"
                audiences: [urn:llmgate]
                login:
                  clientId: gw-web
                  clientSecret: {{secretRef: {{name: gw-web, key: client-secret}}}}
                  redirectUrl: "http://127.0.0.1:{port}/auth/callback/default/corp"
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
              ttl: 1h
        """,
        "models.yaml": """
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {name: gpt-4}
            spec: {model: gpt-4, provider: mock, mock: {content: "gpt-4 answer"}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {name: llama-3}
            spec: {model: llama-3, provider: mock}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {name: embed}
            spec: {model: embed, provider: mock}
        """,
        "access.yaml": """
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
                - name: services-embed
                  subjects: [{serviceAccount: svc-embed}]
                  models: [embed]
                - name: no-gpt-4-for-carol
                  effect: Deny
                  subjects: [{user: carol}]
                  models: [gpt-4]
        """,
    }


def login(gateway_url: str, user: str) -> dict:
    """The browser's part, scripted: follow redirects with a cookie jar, end at the callback."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    url = f"{gateway_url}/auth/login/default/corp?login_hint={user}"
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with opener.open(req, timeout=30) as resp:
        assert resp.geturl().startswith(f"{gateway_url}/auth/callback/default/corp?"), resp.geturl()
        assert_browser_hardened(resp.headers, "OIDC callback")
        return json.loads(resp.read())


def client_credentials(issuer: str, client: str) -> str:
    body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "llmgate"}).encode()
    basic = base64.b64encode(f"{client}:{client}-secret".encode()).decode()
    req = urllib.request.Request(f"{issuer}/token", data=body, headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["access_token"]


def test_login_gives_a_token_the_sdk_uses_and_policy_decides(make_gateway, idp):
    port = free_port()
    issuer = idp(f"http://127.0.0.1:{port}/auth/callback/default/corp")
    gw = make_gateway(
        config(issuer, port),
        port=port,
        env={"GW_WEB_CLIENT_SECRET": "gw-web-secret", "GATEWAY_TOKENS_K1": TOKEN_KEY},
    )

    alice = login(gw.base_url.removesuffix("/v1"), "alice")
    assert alice["user"] == "alice" and alice["team"] == "llm-engineering"
    assert alice["groups"] == ["ml-eng"]
    sdk = gw.client(alice["access_token"])
    answer = sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "gpt-4 answer"
    assert sorted(m.id for m in sdk.models.list()) == ["gpt-4", "llama-3"]

    pat = gw.client(login(gw.base_url.removesuffix("/v1"), "pat")["access_token"])
    pat.chat.completions.create(model="llama-3", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError) as e:
        pat.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert "user pat" in e.value.message and "alice" not in e.value.message

    # A deny rule beats carol's group allow.
    carol = gw.client(login(gw.base_url.removesuffix("/v1"), "carol")["access_token"])
    carol.chat.completions.create(model="llama-3", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError) as e:
        carol.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert "user carol" in e.value.message

    # A service with a client-credentials token from the provider: embeddings only.
    svc = gw.client(client_credentials(issuer, "svc-embed"))
    assert len(svc.embeddings.create(model="embed", input="hello").data) == 1
    with pytest.raises(openai.PermissionDeniedError):
        svc.chat.completions.create(model="llama-3", messages=[{"role": "user", "content": "hi"}])

    # A gateway token re-signed with the gateway's own key: accepted with its header as minted,
    # refused once the header lists a critical extension llmgate does not understand.
    def resigned(token: str, **extra) -> str:
        head, payload, _ = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        header.update(extra)
        head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        mac = hmac.new(TOKEN_KEY.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
        return f"{head}.{payload}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    assert len(gw.client(resigned(alice["access_token"])).models.list().data) == 2
    with pytest.raises(openai.AuthenticationError) as e:
        gw.client(resigned(alice["access_token"], crit=["urn:x"], **{"urn:x": 1})).models.list()
    assert "critical header" in e.value.message

    # A tampered token is a 401 the SDK reports as such.
    bad = alice["access_token"][:-8] + ("A" * 8 if not alice["access_token"].endswith("A" * 8) else "B" * 8)
    with pytest.raises(openai.AuthenticationError) as e:
        gw.client(bad).models.list()
    assert e.value.code == "invalid_token"

    # Revoking alice's tokens (a reviewed config change) refuses the one she has.
    revoke_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    files = config(issuer, port)
    files["identity.yaml"] = files["identity.yaml"].replace(
        "              ttl: 1h",
        f'              ttl: 1h\n              revoked: [{{user: alice, issuedBefore: "{revoke_before}"}}]',
    )
    from conftest import write_config

    write_config(gw.config_dir, files)
    deadline = time.monotonic() + 15
    while True:
        try:
            sdk.models.list()
        except openai.AuthenticationError as e:
            assert "revoked" in e.message
            break
        assert time.monotonic() < deadline, "revocation not applied within 15 s"
        time.sleep(0.2)

    records = [json.loads(line) for line in gw.audit_lines()]
    by = {(r.get("user") or r.get("service_account"), r.get("model_requested"), r["status"]): r for r in records}
    rec = by[("alice", "gpt-4", 200)]
    assert rec["auth_method"] == "gateway_token"
    assert rec["identity_provider"] == "default/corp"
    assert rec["policy_rule"] == "default/models#ml-eng-chat"
    assert rec["team"] == "llm-engineering"
    svc_rec = by[("svc-embed", "embed", 200)]
    assert svc_rec["auth_method"] == "oidc" and svc_rec["policy_rule"] == "default/models#services-embed"
    denied = by[("carol", "gpt-4", 403)]
    assert denied["policy_rule"] == "default/models#no-gpt-4-for-carol" and denied["groups"] == ["ml-eng"]


def test_a_login_not_started_here_is_refused(make_gateway, idp):
    port = free_port()
    issuer = idp(f"http://127.0.0.1:{port}/auth/callback/default/corp")
    gw = make_gateway(
        config(issuer, port),
        port=port,
        env={"GW_WEB_CLIENT_SECRET": "gw-web-secret", "GATEWAY_TOKENS_K1": TOKEN_KEY},
    )
    base = gw.base_url.removesuffix("/v1")
    # A callback with a code but no login cookie (a forged or replayed redirect).
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{base}/auth/callback/default/corp?code=abc&state=xyz", timeout=10)
    assert e.value.code == 400
    assert_browser_hardened(e.value.headers, "OIDC callback refusal")


def test_a_login_started_on_one_replica_finishes_on_another(make_gateway, idp):
    """Behind a load balancer the callback may reach another replica: the login cookie and the
    gateway-token key are all it needs. A callback whose state is not the cookie's is refused."""
    port_a, port_b = free_port(), free_port()
    issuer = idp(f"http://127.0.0.1:{port_b}/auth/callback/default/corp")
    env = {"GW_WEB_CLIENT_SECRET": "gw-web-secret", "GATEWAY_TOKENS_K1": TOKEN_KEY}
    a = make_gateway(config(issuer, port_b), port=port_a, env=env)
    make_gateway(config(issuer, port_b), port=port_b, env=env)
    base_a = a.base_url.removesuffix("/v1")

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    req = urllib.request.Request(f"{base_a}/auth/login/default/corp?login_hint=alice", headers={"Accept": "application/json"})
    with opener.open(req, timeout=30) as resp:
        assert resp.geturl().startswith(f"http://127.0.0.1:{port_b}/auth/callback/default/corp?"), resp.geturl()
        body = json.loads(resp.read())
    assert body["user"] == "alice" and body["team"] == "llm-engineering", body
    answer = a.client(body["access_token"]).chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "gpt-4 answer"

    # A login started (its cookie set), then a callback carrying another state.
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(jar))
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(f"{base_a}/auth/login/default/corp?login_hint=alice", timeout=10)
    assert e.value.code == 302
    state = urllib.parse.parse_qs(urllib.parse.urlparse(e.value.headers["Location"]).query)["state"][0]
    assert len(jar) == 1, "the login cookie"
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(f"http://127.0.0.1:{port_b}/auth/callback/default/corp?code=abc&state={state}x", timeout=10)
    assert e.value.code == 400
    assert "does not match" in e.value.read().decode()


def test_the_local_login_sample_works_as_its_comments_say(make_gateway, idp):
    """config/local-login, on free ports instead of 9400 and 8080: log in as alice
    (login_hint, no password), then call gpt-4 with the gateway token; pat may not."""
    port = free_port()
    issuer = idp(f"http://127.0.0.1:{port}/auth/callback/default/corp")
    sample = REPO_ROOT / "config" / "local-login"
    files = {
        p.name: p.read_text().replace("http://127.0.0.1:9400", issuer).replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        for p in sample.glob("*.yaml")
    }
    gw = make_gateway(files, port=port, env={"GW_WEB_CLIENT_SECRET": "gw-web-secret", "GATEWAY_TOKENS_K1": TOKEN_KEY})
    base = gw.base_url.removesuffix("/v1")
    alice = login(base, "alice")
    answer = gw.client(alice["access_token"]).chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "an answer from the gpt-4 mock"
    pat = login(base, "pat")
    with pytest.raises(openai.PermissionDeniedError):
        gw.client(pat["access_token"]).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
