"""The gateway as the official `openai` Python SDK sees it: the mock model and the fake upstream
behind a real llmgate-dataplane process."""

from __future__ import annotations

import base64
import json
import struct
import time

import openai
import pytest

from conftest import (
    DEV_KEY,
    FAKE_EMBEDDING_DIMENSIONS,
    LIMITED_KEY,
    MOCK_COMPLETION_TOKENS,
    MOCK_CONTENT,
    MOCK_EMBEDDING_DIMENSIONS,
    MOCK_INPUT_PER_MILLION,
    MOCK_OUTPUT_PER_MILLION,
    MOCK_PROMPT_TOKENS,
    UNKNOWN_KEY,
    Gateway,
    http_get,
    metric_value,
    http_request,
    sdk_config,
    write_config,
)

DEV_MODELS = {"mock-1", "fake-gpt", "fake-429", "fake-500", "fake-slow", "fake-dead"}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
]


def assert_usage_consistent(usage) -> None:
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def assert_openai_error(err: openai.APIStatusError, status: int) -> None:
    """The body is OpenAI-shaped and the response still carries the gateway's headers."""
    assert err.status_code == status
    body = err.body
    assert isinstance(body, dict), f"error body is not the OpenAI error object: {err.response.text!r}"
    raw = json.loads(err.response.text)
    assert set(raw) == {"error"}, raw
    assert isinstance(body.get("message"), str) and body["message"], body
    assert isinstance(body.get("type"), str) and body["type"], body
    assert "code" in body and "param" in body, body
    assert err.response.headers.get("x-request-id"), "error response has no x-request-id"


def collect_stream(stream) -> list:
    chunks = list(stream)
    assert chunks, "stream produced no chunks"
    return chunks


def stream_content(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --------------------------------------------------------------------------------------------
# Chat, non-streaming


def test_chat_mock_non_streaming(gateway: Gateway):
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model="mock-1",
        messages=[{"role": "user", "content": "Say hello."}],
    )
    assert raw.status_code == 200
    assert raw.headers.get("x-llmgate-model") == "mock-1"
    assert raw.headers.get("x-request-id")
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == MOCK_CONTENT
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens == MOCK_PROMPT_TOKENS
    assert completion.usage.completion_tokens == MOCK_COMPLETION_TOKENS
    assert completion.usage.total_tokens == MOCK_PROMPT_TOKENS + MOCK_COMPLETION_TOKENS


def test_chat_upstream_non_streaming(gateway: Gateway):
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model="fake-gpt",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "what is the capital of France?"},
        ],
        temperature=0.2,
        max_tokens=64,
    )
    assert raw.status_code == 200
    assert raw.headers.get("x-llmgate-model") == "fake-gpt"
    assert raw.headers.get("x-request-id")
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    # The fake upstream answers with the last user message: proof the request went through it.
    assert completion.choices[0].message.content == "echo: what is the capital of France?"
    assert completion.choices[0].finish_reason == "stop"
    assert_usage_consistent(completion.usage)


def test_tools_are_passed_through(gateway: Gateway):
    # The fake upstream answers a request that carries `tools` with a call of the first tool,
    # so a tool call coming back proves the tools reached it.
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="fake-gpt",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=TOOLS,
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    assert raw.headers.get("x-llmgate-model") == "fake-gpt"
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_tools_streaming(gateway: Gateway):
    chunks = collect_stream(
        gateway.client().chat.completions.create(
            model="fake-gpt",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    name, arguments, ids = "", "", set()
    for c in chunks:
        for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            assert d.index == 0
            if d.id:
                ids.add(d.id)
            if d.function and d.function.name:
                name += d.function.name
            if d.function and d.function.arguments:
                arguments += d.function.arguments
    assert len(ids) == 1
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_tool_results_in_history(gateway: Gateway):
    # A conversation that already holds a tool call and its result; no tools offered now.
    completion = gateway.client().chat.completions.create(
        model="fake-gpt",
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temp_c": 21})},
            {"role": "user", "content": "and in Lyon?"},
        ],
    )
    assert completion.choices[0].message.content == "echo: and in Lyon?"
    assert_usage_consistent(completion.usage)


# --------------------------------------------------------------------------------------------
# Chat, streaming


@pytest.mark.parametrize("model", ["mock-1", "fake-gpt"])
def test_stream_include_usage(gateway: Gateway, model: str):
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.status_code == 200
    assert raw.headers.get("content-type", "").startswith("text/event-stream")
    assert raw.headers.get("x-llmgate-model") == model
    assert raw.headers.get("x-request-id")
    chunks = collect_stream(raw.parse())

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "chunks of one completion share one id"
    expected = MOCK_CONTENT if model == "mock-1" else "echo: stream this please"
    assert stream_content(chunks) == expected
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 2, "the reply was not streamed in pieces"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]

    final = chunks[-1]
    assert final.choices == []
    assert_usage_consistent(final.usage)
    assert all(c.usage is None for c in chunks[:-1]), "usage must only be on the final chunk"
    if model == "mock-1":
        assert final.usage.prompt_tokens == MOCK_PROMPT_TOKENS
        assert final.usage.completion_tokens == MOCK_COMPLETION_TOKENS


@pytest.mark.parametrize("model", ["mock-1", "fake-gpt"])
def test_stream_without_include_usage_has_no_usage_chunk(gateway: Gateway, model: str):
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "no usage wanted"}],
        stream=True,
    )
    request_id = raw.headers.get("x-request-id")
    assert request_id
    chunks = collect_stream(raw.parse())
    expected = MOCK_CONTENT if model == "mock-1" else "echo: no usage wanted"
    assert stream_content(chunks) == expected
    assert all(c.usage is None for c in chunks), [c.usage for c in chunks if c.usage is not None]
    assert all(c.choices for c in chunks), "a chunk without choices is the usage chunk, which was not asked for"
    assert chunks[-1].choices[0].finish_reason == "stop"

    # The gateway still accounts the tokens of the stream it did not show usage for.
    (record,) = gateway.audit_records([request_id])[request_id]
    usage = record.get("usage") or {}
    assert usage.get("prompt_tokens", 0) > 0, record
    assert usage.get("completion_tokens", 0) > 0, record
    assert usage.get("total_tokens") == usage["prompt_tokens"] + usage["completion_tokens"], record


@pytest.mark.parametrize("model", ["mock-1", "fake-gpt"])
def test_stream_wire_format_ends_with_done(gateway: Gateway, model: str):
    """What the SDK hides: SSE framing, `data: [DONE]` as the last event, the response body
    ending right after it, and no usage chunk on the wire."""
    started = time.monotonic()
    try:
        status, headers, body = http_request(
            "POST",
            f"{gateway.base_url}/chat/completions",
            body=json.dumps(
                {"model": model, "stream": True, "messages": [{"role": "user", "content": "wire"}]}
            ).encode(),
            headers={"Authorization": f"Bearer {DEV_KEY}", "Content-Type": "application/json"},
            timeout=10.0,
        )
    except TimeoutError:
        pytest.fail(
            f"the streamed response body did not end within {time.monotonic() - started:.0f}s "
            "(it should end right after `data: [DONE]`)"
        )
    assert status == 200, body
    assert headers.get("content-type", "").startswith("text/event-stream")
    events = [line[len("data:"):].strip() for line in body.decode().splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    assert events.count("[DONE]") == 1
    payloads = [json.loads(e) for e in events[:-1]]
    assert payloads
    assert all(p.get("usage") is None for p in payloads), "usage chunk leaked to a client that did not ask"
    assert all(p.get("choices") for p in payloads)


# --------------------------------------------------------------------------------------------
# Models


def test_models_list_is_filtered_by_key(gateway: Gateway):
    raw = gateway.client(DEV_KEY).models.with_raw_response.list()
    assert raw.headers.get("x-request-id")
    dev = {m.id for m in raw.parse()}
    assert dev == DEV_MODELS, "mock-restricted is denied to the dev key by a Deny rule"

    limited = list(gateway.client(LIMITED_KEY).models.list())
    assert [m.id for m in limited] == ["mock-1"]
    assert limited[0].object == "model"


def test_models_retrieve(gateway: Gateway):
    client = gateway.client()
    model = client.models.retrieve("mock-1")
    assert model.id == "mock-1"
    assert model.object == "model"
    assert model.owned_by == "mock"
    assert isinstance(model.created, int)

    upstream = client.models.retrieve("fake-gpt")
    assert upstream.id == "fake-gpt"
    assert upstream.owned_by == "openai-compatible"

    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert_openai_error(e.value, 404)

    # A model the key may not use is not shown to it either: the same 404 as a model that
    # does not exist, so a key cannot probe which models are configured.
    with pytest.raises(openai.NotFoundError) as e:
        gateway.client(LIMITED_KEY).models.retrieve("fake-gpt")
    assert_openai_error(e.value, 404)
    assert e.value.body["code"] == "model_not_found"


# --------------------------------------------------------------------------------------------
# Embeddings


def decode_base64_floats(text: str) -> list[float]:
    raw = base64.b64decode(text)
    assert len(raw) % 4 == 0
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.mark.parametrize(
    ("model", "dimensions"),
    [("mock-1", MOCK_EMBEDDING_DIMENSIONS), ("fake-gpt", FAKE_EMBEDDING_DIMENSIONS)],
)
def test_embeddings_base64_and_float(gateway: Gateway, model: str, dimensions: int):
    client = gateway.client()
    inputs = ["the quick brown fox", "jumps over the lazy dog"]

    # Default: the SDK asks for base64 and decodes it. Check the wire form as well, since the
    # SDK would silently accept floats in its place.
    raw = client.embeddings.with_raw_response.create(model=model, input=inputs)
    assert raw.headers.get("x-llmgate-model") == model
    wire = json.loads(raw.text)
    assert all(isinstance(d["embedding"], str) for d in wire["data"]), "base64 was asked for"
    default = raw.parse()
    assert default.object == "list"
    assert [d.index for d in default.data] == [0, 1]
    for d in default.data:
        assert d.object == "embedding"
        assert len(d.embedding) == dimensions
        assert all(isinstance(x, float) for x in d.embedding)
    assert [decode_base64_floats(d["embedding"]) for d in wire["data"]] == [d.embedding for d in default.data]
    assert default.usage.prompt_tokens > 0

    floats = client.embeddings.create(model=model, input=inputs, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    for d in floats.data:
        assert len(d.embedding) == dimensions
        assert all(isinstance(x, float) for x in d.embedding)
    # base64 carries float32; compare at that precision.
    for b, f in zip(default.data, floats.data):
        assert b.embedding == pytest.approx(f.embedding, rel=1e-6, abs=1e-7)
    assert floats.usage.prompt_tokens == default.usage.prompt_tokens


def test_embeddings_single_string(gateway: Gateway):
    result = gateway.client().embeddings.create(model="mock-1", input="one", encoding_format="float")
    assert len(result.data) == 1
    assert len(result.data[0].embedding) == MOCK_EMBEDDING_DIMENSIONS


# --------------------------------------------------------------------------------------------
# Errors as typed SDK exceptions


def test_bad_key_is_authentication_error(gateway: Gateway):
    with pytest.raises(openai.AuthenticationError) as e:
        gateway.client(UNKNOWN_KEY).chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "hi"}]
        )
    assert_openai_error(e.value, 401)

    with pytest.raises(openai.AuthenticationError):
        gateway.client(UNKNOWN_KEY).models.list()


def test_missing_key_is_401(gateway: Gateway):
    status, headers, body = http_request(
        "POST",
        f"{gateway.base_url}/chat/completions",
        body=json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 401, body
    assert "message" in json.loads(body)["error"]
    assert headers.get("x-request-id")


def test_unknown_model_is_not_found(gateway: Gateway):
    with pytest.raises(openai.NotFoundError) as e:
        gateway.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert_openai_error(e.value, 404)

    with pytest.raises(openai.NotFoundError):
        gateway.client().embeddings.create(model="no-such-model", input="hi")


def test_model_not_allowed_is_permission_denied(gateway: Gateway):
    # The limited key may only use mock-1.
    with pytest.raises(openai.PermissionDeniedError) as e:
        gateway.client(LIMITED_KEY).chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "hi"}]
        )
    assert_openai_error(e.value, 403)
    assert gateway.client(LIMITED_KEY).chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "hi"}]
    ).choices[0].message.content == MOCK_CONTENT

    # A Deny rule wins over the dev key's allow-all rule.
    with pytest.raises(openai.PermissionDeniedError) as e:
        gateway.client(DEV_KEY).chat.completions.create(
            model="mock-restricted", messages=[{"role": "user", "content": "hi"}]
        )
    assert_openai_error(e.value, 403)


def test_upstream_429_is_rate_limit_error(gateway: Gateway):
    with pytest.raises(openai.RateLimitError) as e:
        gateway.client().chat.completions.create(
            model="fake-429", messages=[{"role": "user", "content": "hi"}]
        )
    assert_openai_error(e.value, 429)


def test_upstream_500_is_internal_server_error(gateway: Gateway):
    with pytest.raises(openai.InternalServerError) as e:
        gateway.client().chat.completions.create(
            model="fake-500", messages=[{"role": "user", "content": "hi"}]
        )
    # Every attempt got a 5xx: a 502 of llmgate's own (the upstream was reached and failed).
    assert_openai_error(e.value, 502)
    assert e.value.body["code"] == "upstream_server_error"


def test_upstream_first_byte_timeout_is_504(gateway: Gateway):
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as e:
        gateway.client().chat.completions.create(
            model="fake-slow", messages=[{"role": "user", "content": "hi"}]
        )
    assert_openai_error(e.value, 504)
    assert time.monotonic() - started < 4.0, "the firstByte timeout (300ms) was not applied"


def test_unreachable_upstream_is_503(gateway: Gateway):
    with pytest.raises(openai.InternalServerError) as e:
        gateway.client().chat.completions.create(
            model="fake-dead", messages=[{"role": "user", "content": "hi"}]
        )
    assert_openai_error(e.value, 503)


def test_oversized_body_is_413(gateway: Gateway):
    huge = "x" * (9 * 1024 * 1024)  # the default limit is 8 MiB
    with pytest.raises(openai.APIStatusError) as e:
        gateway.client().chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": huge}]
        )
    assert_openai_error(e.value, 413)


def test_bad_request_is_400(gateway: Gateway):
    # No `messages`: not a chat completion request.
    with pytest.raises(openai.BadRequestError) as e:
        gateway.client().post("/chat/completions", body={"model": "mock-1"}, cast_to=object)
    assert_openai_error(e.value, 400)

    status, headers, body = http_request(
        "POST",
        f"{gateway.base_url}/chat/completions",
        body=b'{"model": "mock-1", "messages": [',
        headers={"Authorization": f"Bearer {DEV_KEY}", "Content-Type": "application/json"},
    )
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["message"] and error["type"]
    assert headers.get("x-request-id")


# --------------------------------------------------------------------------------------------
# Audit log


def test_audit_log_has_one_line_per_request(gateway: Gateway):
    dev = gateway.client(DEV_KEY)
    calls: dict[str, dict] = {}

    raw = dev.chat.completions.with_raw_response.create(
        model="mock-1", messages=[{"role": "user", "content": "audit me"}]
    )
    usage = raw.parse().usage
    calls[raw.headers["x-request-id"]] = {
        "model_requested": "mock-1",
        "model_served": "mock-1",
        "status": 200,
        "user": "dev@example.com",
        "team": "platform",
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    }

    raw = dev.chat.completions.with_raw_response.create(
        model="fake-gpt", messages=[{"role": "user", "content": "audit upstream"}]
    )
    usage = raw.parse().usage
    calls[raw.headers["x-request-id"]] = {
        "model_requested": "fake-gpt",
        "model_served": "fake-gpt",
        "status": 200,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    }

    raw = dev.embeddings.with_raw_response.create(model="mock-1", input="audit embeddings")
    calls[raw.headers["x-request-id"]] = {"model_requested": "mock-1", "status": 200}

    with pytest.raises(openai.PermissionDeniedError) as e:
        gateway.client(LIMITED_KEY).chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "hi"}]
        )
    calls[e.value.response.headers["x-request-id"]] = {
        "model_requested": "fake-gpt",
        "status": 403,
        "user": "intern@example.com",
        "team": "apps",
    }

    with pytest.raises(openai.AuthenticationError) as e:
        gateway.client(UNKNOWN_KEY).chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "hi"}]
        )
    calls[e.value.response.headers["x-request-id"]] = {"status": 401}

    with pytest.raises(openai.RateLimitError) as e:
        dev.chat.completions.create(model="fake-429", messages=[{"role": "user", "content": "hi"}])
    calls[e.value.response.headers["x-request-id"]] = {"model_requested": "fake-429", "status": 429}

    assert len(calls) == 6, "request ids must be unique"
    records = gateway.audit_records(calls)

    for request_id, expected in calls.items():
        assert len(records[request_id]) == 1, f"{request_id}: expected one audit line, got {records[request_id]}"
        record = records[request_id][0]
        for key, value in expected.items():
            assert record.get(key) == value, f"{request_id}: {key} = {record.get(key)!r}, want {value!r}\n{record}"

    by_model = {c.get("model_requested"): rid for rid, c in calls.items() if c["status"] == 200}
    mock_chat = next(rid for rid, c in calls.items() if c.get("usage") and c["model_requested"] == "mock-1")
    record = records[mock_chat][0]
    assert "dev" in str(record.get("key_id")), record
    want_cost = (
        MOCK_PROMPT_TOKENS * MOCK_INPUT_PER_MILLION + MOCK_COMPLETION_TOKENS * MOCK_OUTPUT_PER_MILLION
    ) / 1e6
    assert record.get("cost_usd") == pytest.approx(want_cost, rel=1e-6), record

    upstream = records[by_model["fake-gpt"]][0]
    assert upstream.get("replica") == "fake-0", upstream

    # Failed requests name why they failed; successful ones carry no reason.
    for request_id, expected in calls.items():
        record = records[request_id][0]
        assert "error_reason" in record, f"audit record has no error_reason field: {sorted(record)}"
        if expected["status"] >= 400:
            assert record["error_reason"], f"failed request without error_reason: {record}"
        else:
            assert record["error_reason"] is None, record


# --------------------------------------------------------------------------------------------
# Admin endpoints


def test_admin_endpoints(gateway: Gateway):
    status, _, _ = http_get(f"{gateway.admin_url}/healthz")
    assert status == 200

    status, headers, body = http_get(f"{gateway.admin_url}/readyz")
    assert status == 200
    assert isinstance(json.loads(body), dict)

    # One more call shows up as one more request, with its tokens.
    def served() -> tuple[float, float]:
        status, _, body = http_get(f"{gateway.admin_url}/metrics")
        assert status == 200
        text = body.decode()
        assert "# EOF" in text
        return (
            metric_value(text, "llmgate_requests_total", model="mock-1", status="200", reason="ok"),
            metric_value(text, "llmgate_tokens_total", model="mock-1", kind="completion"),
        )

    requests_before, tokens_before = served()
    answer = gateway.client().chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "m"}])
    requests_after, tokens_after = served()
    assert requests_after == requests_before + 1
    assert tokens_after == tokens_before + answer.usage.completion_tokens


# --------------------------------------------------------------------------------------------
# Config changes are picked up without a restart


def test_config_dir_is_watched(make_gateway, fake_upstream):
    gw = make_gateway(sdk_config(fake_upstream.base_url), env={"FAKE_API_KEY": fake_upstream.api_key})
    client = gw.client()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="mock-2", messages=[{"role": "user", "content": "hi"}])

    write_config(
        gw.config_dir,
        {
            "extra.yaml": """
                apiVersion: llmgate.dev/v1alpha1
                kind: ModelEndpoint
                metadata: {name: mock-2}
                spec:
                  model: mock-2
                  provider: mock
                  mock: {content: "second mock"}
            """
        },
    )
    deadline = time.monotonic() + 15
    while "mock-2" not in {m.id for m in client.models.list()}:
        assert time.monotonic() < deadline, "new ModelEndpoint not picked up within 15s"
        time.sleep(0.2)
    completion = client.chat.completions.create(model="mock-2", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "second mock"

    (gw.config_dir / "extra.yaml").unlink()
    deadline = time.monotonic() + 15
    while "mock-2" in {m.id for m in client.models.list()}:
        assert time.monotonic() < deadline, "removed ModelEndpoint still listed after 15s"
        time.sleep(0.2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="mock-2", messages=[{"role": "user", "content": "hi"}])
