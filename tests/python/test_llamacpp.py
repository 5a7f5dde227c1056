"""A real model behind the gateway: Gemma-3-270M on llama.cpp, as an `openai-compatible`
ModelEndpoint with two replicas, one of which is dead, and as an `anthropic` ModelEndpoint: the
same server's Anthropic Messages API, a real server of that protocol.

Gemma-3-270M is a base model: the tests check shape, usage and determinism, never the text.
The model makes ~10 tokens/s on one CPU thread, so the module sends only a few short requests.
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from conftest import LLAMACPP_MODEL_ALIAS, Gateway, LlamaCpp, free_port, http_get, metric_value, start_gateway

GEMMA_KEY = "sk-llmgate-gemma-5d1e2f"
MAX_TOKENS = 8
PROMPT = [{"role": "user", "content": "Write a short greeting."}]


@pytest.fixture(scope="module")
def gemma_gateway(bin_dir: Path, llamacpp_server: LlamaCpp, tmp_path_factory) -> Gateway:
    dead_port = free_port()  # nothing listens there once the probe socket is closed
    files = {
        "gemma.yaml": f"""
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: gemma}}
            spec:
              model: gemma
              provider: openai-compatible
              upstreamModel: {LLAMACPP_MODEL_ALIAS}
              replicas:
                - {{url: "http://127.0.0.1:{dead_port}/v1", name: dead-0}}
                - {{url: "{llamacpp_server.base_url}", name: llama-0}}
              credentials: {{apiKey: {{secretRef: {{name: llama, key: api-key}}}}}}
              timeouts: {{connect: 1s, firstByte: 60s, total: 120s}}
              failover: {{maxAttempts: 2}}
              pricing: {{inputPerMillion: 0.1, outputPerMillion: 0.4}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: gemma-anthropic}}
            spec:
              model: gemma-anthropic
              provider: anthropic
              upstreamModel: {LLAMACPP_MODEL_ALIAS}
              replicas: [{{url: "{llamacpp_server.base_url}", name: llama-messages}}]
              credentials: {{apiKey: {{secretRef: {{name: llama, key: api-key}}}}}}
              timeouts: {{connect: 1s, firstByte: 60s, total: 120s}}
              maxOutputTokens: {MAX_TOKENS}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ApiKey
            metadata: {{name: gemma-user}}
            spec: {{user: gemma@example.com, team: research, secretRef: {{name: gateway-keys, key: gemma-user}}}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: AccessPolicy
            metadata: {{name: research}}
            spec:
              rules:
                - subjects: [{{team: research}}]
                  models: ["gem*"]
        """
    }
    # Both the upstream credential and the gateway key come from --secrets-dir files.
    gw = start_gateway(
        bin_dir,
        tmp_path_factory.mktemp("gemma-gateway"),
        files,
        secrets={("llama", "api-key"): llamacpp_server.api_key, ("gateway-keys", "gemma-user"): GEMMA_KEY},
    )
    yield gw
    gw.service.stop()


@pytest.fixture(scope="module")
def client(gemma_gateway: Gateway) -> openai.OpenAI:
    return gemma_gateway.client(GEMMA_KEY, timeout=120.0)


@pytest.fixture(scope="module")
def first_answer(client: openai.OpenAI):
    """The reference non-streaming answer at temperature 0 and its response headers."""
    raw = client.chat.completions.with_raw_response.create(
        model="gemma", messages=PROMPT, temperature=0, max_tokens=MAX_TOKENS
    )
    return raw.headers, raw.parse()


def check_usage(usage) -> None:
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= MAX_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_models_list(client: openai.OpenAI):
    assert sorted(m.id for m in client.models.list()) == ["gemma", "gemma-anthropic"]


def test_non_streaming_is_deterministic(gemma_gateway: Gateway, client: openai.OpenAI, first_answer):
    headers, first = first_answer
    assert headers.get("x-llmgate-model") == "gemma"
    assert first.object == "chat.completion"
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].message.content, "the model produced no text"
    assert first.choices[0].finish_reason in ("length", "stop")
    check_usage(first.usage)

    raw = client.chat.completions.with_raw_response.create(
        model="gemma", messages=PROMPT, temperature=0, max_tokens=MAX_TOKENS
    )
    second = raw.parse()
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.completion_tokens == first.usage.completion_tokens

    # Both were served by the live replica, whatever the dead one did.
    ids = [headers["x-request-id"], raw.headers["x-request-id"]]
    records = gemma_gateway.audit_records(ids, timeout=10)
    for rid in ids:
        (record,) = records[rid]
        assert record.get("status") == 200, record
        assert record.get("replica") == "llama-0", record
        assert record.get("model_served") == "gemma", record
        assert record.get("team") == "research", record
        assert (record.get("usage") or {}).get("completion_tokens") == first.usage.completion_tokens, record


def test_streaming_with_usage(client: openai.OpenAI, first_answer):
    _, first = first_answer
    chunks = list(
        client.chat.completions.create(
            model="gemma",
            messages=PROMPT,
            temperature=0,
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert content_chunks, "no content was streamed"
    text = "".join(c.choices[0].delta.content for c in content_chunks)
    assert text == first.choices[0].message.content, "streamed text differs from the non-streamed answer"

    final = chunks[-1]
    assert final.choices == []
    check_usage(final.usage)
    assert final.usage.completion_tokens == first.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_usage(client: openai.OpenAI):
    chunks = list(
        client.chat.completions.create(
            model="gemma", messages=PROMPT, temperature=0, max_tokens=4, stream=True
        )
    )
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finish in (["length"], ["stop"])


def test_failover_past_dead_replica(gemma_gateway: Gateway, client: openai.OpenAI):
    """Every request of this module succeeded on the live replica although the other refuses
    connections, and at least one of them got there by a second attempt. The balancer favours
    a replica never measured, so the dead one is tried until it is ejected; when this test runs
    alone it sends one-token requests until that has happened."""
    def records() -> list[dict]:
        lines = [json.loads(line) for line in gemma_gateway.audit_lines()]
        return [r for r in lines if r.get("model_requested") == "gemma"]

    for _ in range(6):
        if any((r.get("attempts") or 1) >= 2 for r in records()):
            break
        raw = client.chat.completions.with_raw_response.create(
            model="gemma", messages=PROMPT, temperature=0, max_tokens=1
        )
        rid = raw.headers["x-request-id"]
        gemma_gateway.audit_records([rid])
    all_records = records()
    assert all_records
    for r in all_records:
        assert r.get("status") == 200, r
        assert r.get("replica") == "llama-0", r
    assert any((r.get("attempts") or 1) >= 2 for r in all_records), (
        f"the dead replica was never tried, failover not exercised: {[r.get('attempts') for r in all_records]}"
    )

    status, _, body = http_get(f"{gemma_gateway.admin_url}/metrics")
    assert status == 200
    failed = metric_value(body.decode(), "llmgate_upstream_attempts_total", replica="dead-0", outcome="connect_error")
    retried = sum(1 for r in all_records if (r.get("attempts") or 1) >= 2)
    assert failed >= retried >= 1, f"{failed} failed attempts on the dead replica counted, {retried} retried requests"


def test_the_anthropic_protocol_of_a_real_server(gemma_gateway: Gateway, client: openai.OpenAI):
    """OpenAI chat in, Anthropic Messages to llama.cpp (`x-api-key`, `anthropic-version`,
    `max_tokens` from the model's maximum as the caller sets none), OpenAI out; the stream is
    translated event by event and carries the same text and the usage chunk."""
    raw = client.chat.completions.with_raw_response.create(
        model="gemma-anthropic", messages=[{"role": "system", "content": "You are brief."}, *PROMPT], temperature=0
    )
    answer = raw.parse()
    assert raw.headers.get("x-llmgate-model") == "gemma-anthropic"
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content, "the model produced no text"
    assert answer.choices[0].finish_reason in ("length", "stop")
    check_usage(answer.usage)

    chunks = list(
        client.chat.completions.create(
            model="gemma-anthropic",
            messages=[{"role": "system", "content": "You are brief."}, *PROMPT],
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [answer.choices[0].finish_reason]
    assert chunks[-1].choices == []
    check_usage(chunks[-1].usage)
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens

    (record,) = gemma_gateway.audit_records([raw.headers["x-request-id"]], timeout=10)[raw.headers["x-request-id"]]
    assert record.get("status") == 200, record
    assert record.get("replica") == "llama-messages", record
    assert (record.get("usage") or {}).get("completion_tokens") == answer.usage.completion_tokens, record
