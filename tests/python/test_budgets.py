"""Budgets, fallback and rate limits as the OpenAI Python SDK sees them: headers on the raw
response, typed exceptions for refusals (standalone mode: counters in the gateway process)."""

from __future__ import annotations

import openai
import pytest

from conftest import sha256_hex

TEAM_KEY = "sk-team-budget"
SOLO_KEY = "sk-solo-budget"

CONFIG = {
    "models.yaml": """
        apiVersion: llmgate.dev/v1alpha1
        kind: ModelEndpoint
        metadata: {name: premium}
        spec:
          model: premium
          provider: mock
          pricing: {inputPerMillion: 30, outputPerMillion: 60}
          maxOutputTokens: 1000
          mock: {content: "premium answer", completionTokens: 1000}
        ---
        apiVersion: llmgate.dev/v1alpha1
        kind: ModelEndpoint
        metadata: {name: budget-model}
        spec:
          model: budget-model
          provider: mock
          pricing: {inputPerMillion: 0.1, outputPerMillion: 0.1}
          mock: {content: "cheaper answer"}
    """,
    "access.yaml": f"""
        apiVersion: llmgate.dev/v1alpha1
        kind: ApiKey
        metadata: {{name: team}}
        spec: {{user: ada@example.com, team: research, sha256: "{sha256_hex(TEAM_KEY)}"}}
        ---
        apiVersion: llmgate.dev/v1alpha1
        kind: ApiKey
        metadata: {{name: solo}}
        spec: {{user: sol@example.com, team: solo, sha256: "{sha256_hex(SOLO_KEY)}"}}
        ---
        apiVersion: llmgate.dev/v1alpha1
        kind: AccessPolicy
        metadata: {{name: everyone}}
        spec:
          rules:
            - subjects: [{{authenticated: true}}]
              models: ["*"]
          rateLimits:
            - name: solo-per-hour
              subjects: [{{team: solo}}]
              per: [user]
              window: hour
              requests: 3
    """,
    "budgets.yaml": """
        apiVersion: llmgate.dev/v1alpha1
        kind: TeamBudget
        metadata: {name: research}
        spec:
          team: research
          amountUsd: 0.2
          period: day
          models: [premium]
          fallback: [budget-model]
        ---
        apiVersion: llmgate.dev/v1alpha1
        kind: TeamBudget
        metadata: {name: solo}
        spec: {team: solo, amountUsd: 0.07, period: month, models: [premium]}
    """,
}

HELLO = [{"role": "user", "content": "hello"}]


def test_budget_fallback_is_visible_in_headers(make_gateway):
    gw = make_gateway(CONFIG)
    client = gw.client(TEAM_KEY)
    served = []
    # Each premium answer costs 1000 × $60/M = $0.06 (+ the prompt): three fit in $0.20.
    for _ in range(5):
        raw = client.chat.completions.with_raw_response.create(model="premium", messages=HELLO)
        completion = raw.parse()
        served.append((raw.headers["x-llmgate-model"], completion.choices[0].message.content))
        if raw.headers["x-llmgate-model"] == "budget-model":
            assert raw.headers["x-llmgate-fallback-from"] == "premium"
            assert "budget=default/research" in raw.headers["x-llmgate-fallback-reason"]
        else:
            assert float(raw.headers["x-llmgate-budget-remaining-usd"]) < 0.2
    assert served == [("premium", "premium answer")] * 3 + [("budget-model", "cheaper answer")] * 2


def test_spent_budget_and_rate_limit_raise_rate_limit_errors(make_gateway):
    gw = make_gateway(CONFIG)
    client = gw.client(SOLO_KEY)
    client.chat.completions.create(model="premium", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="premium", messages=HELLO)
    assert e.value.code == "budget_exceeded"
    assert e.value.body["type"] == "insufficient_quota"
    assert "default/solo" in e.value.message

    # A refused request does not count against the limit: one of three used so far.
    client.chat.completions.create(model="budget-model", messages=HELLO)
    client.chat.completions.create(model="budget-model", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="budget-model", messages=HELLO)
    assert e.value.code == "rate_limit_exceeded"
    headers = e.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert int(headers["retry-after"]) > 0
