"""`llmgate-operator --source kubernetes` wired to a fake API server (PyPI kmock) and a real
data plane: the operator lists and watches the llmgate resources and Secrets, takes the Lease,
publishes what compiles, writes each resource's conditions, and reacts to a Secret appearing.

kmock is an in-memory emulator without resourceVersion, generation or server-side apply
semantics: this shows the wiring, the mocked-API-server tests in operator/tests/kube_api.rs
show the exact requests.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    DEV_KEY,
    UPSTREAM_KEY,
    HERE,
    free_port,
    http_get,
    http_request,
    sha256_hex,
    start_service,
    wait_until,
)

NS = "ai"


def obj(kind: str, name: str, api: str = "llmgate.dev/v1alpha1", **body) -> dict:
    return {"apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": NS, "generation": 1, "resourceVersion": "1"},
            **body}


SEED = [
    obj("ModelEndpoint", "chat", spec={"model": "mock-chat", "provider": "mock",
                                       "mock": {"content": "from the cluster"}}),
    obj("ModelEndpoint", "gpt", spec={"model": "gpt-4o", "provider": "openai",
                                      "credentials": {"apiKey": {"secretRef": {"name": "llm-keys", "key": "openai-api-key"}}}}),
    obj("ApiKey", "dev", spec={"user": "dev@example.com", "team": "ml", "sha256": sha256_hex(DEV_KEY)}),
    obj("AccessPolicy", "ml", spec={"rules": [{"name": "ml-all", "subjects": [{"team": "ml"}], "models": ["*"]}]}),
]


def service_backed(upstream_port: int) -> list[dict]:
    """A model served by the pods of a Service: the EndpointSlice points at the fake upstream."""
    return [
        obj("ModelEndpoint", "pool", spec={
            "model": "pool", "provider": "openai-compatible", "upstreamModel": "pool-model",
            "replicas": [{"service": {"name": "vllm", "port": "http"}}],
            "credentials": {"apiKey": {"secretRef": {"name": "upstream", "key": "api-key"}}}}),
        obj("Secret", "upstream", api="v1", data={"api-key": base64.b64encode(UPSTREAM_KEY.encode()).decode()}),
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
         "metadata": {"name": "vllm-abc", "namespace": NS, "resourceVersion": "1",
                      "labels": {"kubernetes.io/service-name": "vllm"}},
         "ports": [{"name": "http", "port": upstream_port, "protocol": "TCP"}],
         "endpoints": [
             {"addresses": ["127.0.0.1"], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": "vllm-0"}},
             {"addresses": ["127.0.0.2"], "conditions": {"ready": False}, "targetRef": {"kind": "Pod", "name": "vllm-1"}},
         ]},
    ]


TOKEN = "dist-token"


def token_secret() -> dict:
    """The data-plane token, read by the operator from a Secret in its own namespace."""
    secret = obj("Secret", "llmgate-token", api="v1", data={"token": base64.b64encode(TOKEN.encode()).decode()})
    secret["metadata"]["namespace"] = "llmgate"
    return secret


@pytest.fixture
def cluster(bin_dir: Path, tmp_path: Path, fake_upstream):
    seed = tmp_path / "objects.json"
    seed.write_text(json.dumps(SEED + service_backed(fake_upstream.port) + [token_secret()]))
    port_file = tmp_path / "port"
    api = start_service("kmock", [sys.executable, str(HERE / "kmock_apiserver.py"), str(seed), str(port_file)], tmp_path)
    wait_until(api, lambda: port_file.exists() and port_file.read_text().strip() != "", 30, "kmock listening")
    api_url = f"http://127.0.0.1:{port_file.read_text().strip()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": api_url}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": "llmgate"}}],
    }))
    token = tmp_path / "token"  # the data plane's copy, as a mounted Secret would be
    token.write_text(TOKEN + "\n")
    dist, admin = free_port(), free_port()
    operator = start_service("llmgate-operator", [
        str(bin_dir / "llmgate-operator"), "--source", "kubernetes", "--namespaces", NS,
        "--token-secret", "llmgate-token", "--distribution-listen", f"127.0.0.1:{dist}",
        "--admin-listen", f"127.0.0.1:{admin}", "--identity", "operator-0", "--lease-namespace", "llmgate", "--debounce", "50ms",
    ], tmp_path, env={"KUBECONFIG": str(kubeconfig), "LLMGATE_LOG": "info,kube=warn"})
    wait_until(operator, lambda: http_get(f"http://127.0.0.1:{admin}/readyz")[0] == 200, 30, "operator ready")
    port, dp_admin = free_port(), free_port()
    dataplane = start_service("llmgate-dataplane", [
        str(bin_dir / "llmgate-dataplane"), "--control-plane", f"http://127.0.0.1:{dist}",
        "--control-plane-token-file", str(token), "--state-dir", str(tmp_path / "state"),
        "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{dp_admin}",
        "--audit-log", str(tmp_path / "audit.jsonl"), "--node-name", "dp-0",
    ], tmp_path)
    wait_until(dataplane, lambda: http_get(f"http://127.0.0.1:{dp_admin}/readyz")[0] == 200, 30, "data plane ready")
    yield {"api": api_url, "operator_admin": f"http://127.0.0.1:{admin}", "gateway": f"http://127.0.0.1:{port}/v1",
           "gateway_admin": f"http://127.0.0.1:{dp_admin}", "operator": operator}
    dataplane.stop()
    operator.stop()
    api.stop()


def get(url: str) -> dict:
    status, _, body = http_get(url)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)


def condition(resource: dict, kind: str) -> dict:
    for c in resource.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return c
    return {}


def wait_for(check, timeout: float, what: str, svc):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"{what} not reached within {timeout}s (last: {last}):\n{svc.log_tail()}", pytrace=False)


def model_ids(gateway: str) -> list[str]:
    status, _, body = http_request("GET", f"{gateway}/models", headers={"Authorization": f"Bearer {DEV_KEY}"})
    return sorted(m["id"] for m in json.loads(body)["data"]) if status == 200 else []


def test_the_cluster_source_publishes_writes_status_and_follows_secrets(cluster):
    import openai

    api, gateway = cluster["api"], cluster["gateway"]
    # What compiles is served through the data plane...
    client = openai.OpenAI(base_url=gateway, api_key=DEV_KEY, max_retries=0)
    reply = client.chat.completions.create(model="mock-chat", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "from the cluster"
    assert model_ids(gateway) == ["mock-chat", "pool"]

    # A Service's ready endpoints are the replicas: the one ready pod (the fake upstream)
    # answers; the pod that is not ready is never tried.
    reply = client.chat.completions.create(model="pool", messages=[{"role": "user", "content": "via the service"}])
    assert reply.choices[0].message.content == "echo: via the service"
    _, _, metrics = http_get(f"{cluster['gateway_admin']}/metrics")
    metrics = metrics.decode()
    assert 'replica="vllm/vllm-0"' in metrics
    assert "vllm-1" not in metrics, "the pod that is not ready is not a replica"

    # ... and what does not is left out, saying why on the object itself.
    gpt_url = f"{api}/apis/llmgate.dev/v1alpha1/namespaces/{NS}/modelendpoints/gpt"
    gpt = wait_for(lambda: (lambda o: o if condition(o, "ResolvedRefs") else None)(get(gpt_url)),
                   15, "status on ModelEndpoint gpt", cluster["operator"])
    resolved = condition(gpt, "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "MissingSecret")
    assert "llm-keys" in resolved["message"] and "openai-api-key" in resolved["message"]
    assert condition(gpt, "Ready")["status"] == "False"
    assert condition(gpt, "Accepted")["status"] == "True"
    chat = get(f"{api}/apis/llmgate.dev/v1alpha1/namespaces/{NS}/modelendpoints/chat")
    assert condition(chat, "Ready")["status"] == "True"

    # The operator took the Lease, which is why it wrote status.
    lease = get(f"{api}/apis/coordination.k8s.io/v1/namespaces/llmgate/leases/llmgate-operator")
    assert lease["spec"]["holderIdentity"] == "operator-0"

    # The Secret appears: the operator sees it, gpt-4o ships and its status turns Ready.
    secret = obj("Secret", "llm-keys", api="v1", data={"openai-api-key": base64.b64encode(b"sk-test").decode()})
    status, _, body = http_request("POST", f"{api}/api/v1/namespaces/{NS}/secrets",
                                   body=json.dumps(secret).encode(), headers={"Content-Type": "application/json"})
    assert status in (200, 201), body[:300]
    wait_for(lambda: model_ids(gateway) == ["gpt-4o", "mock-chat", "pool"], 15, "gpt-4o served", cluster["operator"])
    wait_for(lambda: condition(get(gpt_url), "Ready").get("status") == "True", 15, "gpt Ready", cluster["operator"])

    fleet = get(f"{cluster['operator_admin']}/dataplanes")
    assert [d["node"] for d in fleet["dataplanes"]] == ["dp-0"]
