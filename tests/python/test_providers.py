"""Providers side by side.

The `anthropic` SDK (a client nobody on the project wrote) proves the fake Messages API speaks
Anthropic: messages, the SDK's stream accumulator, tool use, typed errors. Then one gateway
serves a real llama.cpp model (openai-compatible), an Azure deployment and an Anthropic model
(both on the fake) with one API key, one team budget and one audit log, and the same OpenAI
client code streams from all three."""

from __future__ import annotations

import anthropic
import pytest

from conftest import UPSTREAM_KEY, LLAMACPP_MODEL_ALIAS, FakeUpstream, LlamaCpp, team_access_yaml

KEY = "sk-llmgate-side-by-side-9a1e"


def sdk(fake: FakeUpstream, key: str = UPSTREAM_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{fake.port}", api_key=key, max_retries=0)


def test_the_fake_messages_api_answers_the_anthropic_sdk(fake_upstream: FakeUpstream):
    client = sdk(fake_upstream)
    msg = client.messages.create(
        model="claude-x", max_tokens=50, system="Be brief.", messages=[{"role": "user", "content": "hello there"}]
    )
    assert msg.content[0].text == "echo: hello there"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 2 and msg.usage.cache_read_input_tokens == 3

    with client.messages.stream(
        model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "stream these words"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream these words" == final.content[0].text
    assert final.usage.output_tokens == 4

    tools = [{"name": "weather", "description": "Weather now", "input_schema": {"type": "object"}}]
    call = client.messages.create(
        model="claude-x", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "weather?"}]
    )
    assert call.stop_reason == "tool_use"
    (use,) = [b for b in call.content if b.type == "tool_use"]
    assert use.name == "weather" and use.input == {"city": "Oslo"}
    # The round trip: the tool's result answers the call in the next user turn.
    after = client.messages.create(
        model="claude-x",
        max_tokens=50,
        tools=tools,
        tool_choice={"type": "none"},
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [b.model_dump() for b in call.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rain"}]},
        ],
    )
    assert after.stop_reason == "end_turn"

    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model="claude-x", max_tokens=50,
            messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        )
    assert "alternate" in e.value.message
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model="claude-x", max_tokens=50,
            messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}, {"role": "user", "content": "b"}],
        )
    with pytest.raises(anthropic.AuthenticationError):
        sdk(fake_upstream, "wrong").messages.create(
            model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model="fail-529", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"


def test_one_gateway_three_providers(make_gateway, fake_upstream: FakeUpstream, llamacpp_server: LlamaCpp):
    fake = f"http://127.0.0.1:{fake_upstream.port}"
    files = {
        "access.yaml": team_access_yaml(KEY),
        "budget.yaml": """
            apiVersion: llmgate.dev/v1alpha1
            kind: TeamBudget
            metadata: {name: apps}
            spec: {team: apps, amountUsd: 5, period: day}
        """,
        "models.yaml": f"""
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: local}}
            spec:
              model: local
              provider: openai-compatible
              upstreamModel: {LLAMACPP_MODEL_ALIAS}
              replicas: [{{url: "{llamacpp_server.base_url}"}}]
              credentials: {{apiKey: {{secretRef: {{name: llama, key: api-key}}}}}}
              timeouts: {{firstByte: 60s, total: 120s}}
              pricing: {{inputPerMillion: 0.1, outputPerMillion: 0.2}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: azure}}
            spec:
              model: azure
              provider: azure-openai
              upstreamModel: gpt-4.1
              azure: {{apiVersion: "2024-10-21"}}
              replicas: [{{url: "{fake}"}}]
              credentials: {{apiKey: {{secretRef: {{name: fake, key: api-key}}}}}}
              pricing: {{inputPerMillion: 2, outputPerMillion: 8}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: claude}}
            spec:
              model: claude
              provider: anthropic
              upstreamModel: claude-x
              replicas: [{{url: "{fake}"}}]
              credentials: {{apiKey: {{secretRef: {{name: fake, key: api-key}}}}}}
              pricing: {{inputPerMillion: 3, outputPerMillion: 15}}
        """,
    }
    gw = make_gateway(
        files, secrets={("llama", "api-key"): llamacpp_server.api_key, ("fake", "api-key"): UPSTREAM_KEY}
    )
    client = gw.client(KEY, timeout=120.0)
    ids = {}
    for model in ("local", "azure", "claude"):
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": "say hello"}],
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        ids[model] = raw.headers["x-request-id"]
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text, f"{model}: nothing streamed"
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finishes) == 1 and finishes[0] in ("stop", "length"), (model, finishes)
        usage = chunks[-1].usage
        assert usage and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 6, (model, usage)

    records = gw.audit_records(ids.values(), timeout=10)
    charged = 0
    for model, rid in ids.items():
        (r,) = records[rid]
        assert r["status"] == 200 and r["team"] == "apps" and r["model_requested"] == model, r
        assert r["cost_usd_micros"] > 0 and r["budget_charged_usd_micros"] == r["cost_usd_micros"], r
        charged += r["budget_charged_usd_micros"]
    assert charged > 0
