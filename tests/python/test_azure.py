"""Azure OpenAI: the OpenAI SDK's own `AzureOpenAI` client proves the fake speaks Azure (URL,
`api-version`, `api-key`, the prompt-filter chunk, the string-coded 429), then the gateway's
`azure-openai` endpoints (deployments API and v1 API) are called with the plain OpenAI SDK."""

from __future__ import annotations

import openai
import pytest

from conftest import UPSTREAM_KEY, FakeUpstream, team_access_yaml

KEY = "sk-llmgate-azure-71c0"
MESSAGES = [{"role": "user", "content": "hello azure"}]


def test_the_fake_answers_the_sdks_azure_client(fake_upstream: FakeUpstream):
    az = openai.AzureOpenAI(
        azure_endpoint=f"http://127.0.0.1:{fake_upstream.port}",
        api_key=UPSTREAM_KEY,
        api_version="2024-10-21",
        max_retries=0,
    )
    reply = az.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert reply.choices[0].message.content == "echo: hello azure"
    chunks = list(
        az.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices == [] and chunks[0].prompt_filter_results, chunks[0]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello azure"
    assert chunks[-1].usage.completion_tokens == 3
    with pytest.raises(openai.RateLimitError) as e:
        az.chat.completions.create(model="fail-429", messages=MESSAGES)
    assert e.value.body["code"] == "429" and e.value.response.headers["retry-after-ms"] == "2000"
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(
            azure_endpoint=f"http://127.0.0.1:{fake_upstream.port}", api_key="wrong", api_version="2024-10-21",
            max_retries=0,
        ).chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    v1 = openai.OpenAI(base_url=f"http://127.0.0.1:{fake_upstream.port}/openai/v1", api_key=UPSTREAM_KEY, max_retries=0)
    assert v1.chat.completions.create(model="gpt-4.1", messages=MESSAGES).choices[0].message.content


def endpoint(name: str, deployment: str, url: str, api_version: str | None) -> str:
    azure = f"\n              azure: {{apiVersion: \"{api_version}\"}}" if api_version else ""
    return f"""
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: {name}}}
            spec:
              model: {name}
              provider: azure-openai
              upstreamModel: {deployment}
              replicas: [{{url: "{url}"}}]
              credentials: {{apiKey: {{secretRef: {{name: azure, key: api-key}}}}}}{azure}
        """


def test_azure_deployments_behind_the_openai_api(make_gateway, fake_upstream: FakeUpstream):
    base = f"http://127.0.0.1:{fake_upstream.port}"
    files = {
        "access.yaml": team_access_yaml(KEY),
        "models.yaml": endpoint("gpt-41", "gpt-4.1", base, "2024-10-21")
        + endpoint("gpt-41-v1", "gpt-4.1", base, None)
        + endpoint("filtered", "content-filter", base, "2024-10-21")
        + endpoint("throttled", "fail-429", base, "2024-10-21"),
    }
    gw = make_gateway(files, secrets={("azure", "api-key"): UPSTREAM_KEY})
    client = gw.client(KEY)

    for model in ("gpt-41", "gpt-41-v1"):
        reply = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50)
        assert reply.choices[0].message.content == "echo: hello azure", model
        assert reply.usage.completion_tokens == 3

    chunks = list(
        client.chat.completions.create(
            model="gpt-41", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    # Azure's prompt-filter chunk passes through; the SDK reads it as a chunk without choices.
    assert chunks[0].choices == [] and chunks[0].prompt_filter_results
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello azure"
    assert chunks[-1].usage.completion_tokens == 3

    finishes = [
        c.choices[0].finish_reason
        for c in client.chat.completions.create(model="filtered", messages=MESSAGES, stream=True)
        if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["content_filter"]

    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="throttled", messages=MESSAGES)
    assert e.value.response.headers.get("retry-after") == "2"
    assert e.value.response.headers.get("retry-after-ms") == "2000"
    assert e.value.body["code"] == "429" and e.value.body["type"] == "requests"

