"""README.md's first section, run as a newcomer would: the gateway started with no flags but
free ports (so the embedded quickstart answers), then the README's own curl commands and Python
snippet, taken from README.md itself, so the page and the binary cannot drift apart."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import time
from pathlib import Path

import openai
import pytest

from conftest import REPO_ROOT, Gateway, free_port, http_get, start_service

README = (REPO_ROOT / "README.md").read_text()
DEMO_KEY = "sk-llmgate-demo"


@pytest.fixture
def quickstart(bin_dir: Path, tmp_path: Path):
    port, admin = free_port(), free_port()
    env = {k: "" for k in os.environ if k.startswith("LLMGATE_")}
    env["OPENAI_API_KEY"] = ""
    svc = start_service(
        "llmgate-dataplane",
        [str(bin_dir / "llmgate-dataplane"), "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
         "--audit-log", str(tmp_path / "audit.jsonl")],
        tmp_path,
        env=env,
    )
    gw = Gateway(port=port, admin_port=admin, config_dir=tmp_path, audit_log=tmp_path / "audit.jsonl", service=svc)
    try:
        gw.wait_ready()
        yield gw
    finally:
        svc.stop()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_readme_curl_commands_answer_as_described(quickstart):
    shell = next(b for b in blocks("sh") if "sk-llmgate-demo" in b)
    commands = [c.strip() for c in re.split(r"\n(?=curl )", shell.replace("localhost:8080", f"127.0.0.1:{quickstart.port}"))]
    commands = [re.sub(r"^#.*\n", "", c).strip() for c in commands if "curl" in c]
    assert len(commands) == 3, commands
    out = [subprocess.run(["bash", "-c", c], capture_output=True, text=True, timeout=30, check=True).stdout for c in commands]

    reply = json.loads(out[0])
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    # Streaming: the words come back one per event, then the usage chunk, then [DONE].
    events = [line.removeprefix("data: ") for line in out[1].splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.split() == "stream these words back to me".split(), text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    # Without OPENAI_API_KEY, gpt-4o-mini is left out: the two mock models are served.
    models = sorted(m["id"] for m in json.loads(out[2])["data"])
    assert models == ["mock-echo", "mock-gpt"], models


def test_the_readme_python_snippet_runs_against_the_quickstart(quickstart):
    snippet = next(b for b in blocks("python") if "OpenAI(" in b)
    snippet = snippet.replace("http://localhost:8080/v1", quickstart.base_url)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "README.md", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert "CompletionUsage" in lines[0], lines
    assert "one word at a time" in "\n".join(lines), lines
    assert any(line.strip().isdigit() and int(line) > 0 for line in lines), "the embedding length"
    assert lines[-1] == "['mock-gpt', 'mock-echo']" or lines[-1] == "['mock-echo', 'mock-gpt']", lines


def test_mock_echo_streams_one_word_every_20_ms(quickstart):
    client = openai.OpenAI(base_url=quickstart.base_url, api_key=DEMO_KEY, max_retries=0)
    arrivals = []
    for chunk in client.chat.completions.create(
        model="mock-echo", stream=True, messages=[{"role": "user", "content": "a b c d e f g h i j"}]
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) == 10
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
    # The cadence is the gateway's, not the client's: no gap shorter than it, typical gaps near it.
    assert gaps[0] >= 0.015, gaps
    assert gaps[len(gaps) // 2] < 0.2, gaps


def test_every_test_the_promise_index_names_exists():
    """docs/promises.md maps promises to tests: a renamed or deleted test must not leave the
    index pointing at nothing."""
    index = (REPO_ROOT / "docs" / "promises.md").read_text()
    named = set(re.findall(r"::([a-z][a-z0-9_]+)", index)) - {"name"}
    assert len(named) > 40, named
    sources = [
        p.read_text()
        for d in ("tests", "dataplane", "crds", "operator", "snapshot")
        for p in (REPO_ROOT / d).rglob("*")
        if p.suffix in (".rs", ".py") and "node_modules" not in p.parts
    ]
    defined = set()
    for text in sources:
        defined.update(re.findall(r"\b(?:async )?(?:fn|def) ([a-z][a-z0-9_]+)", text))
    missing = sorted(named - defined)
    assert not missing, f"docs/promises.md names tests that do not exist: {missing}"


def test_a_model_left_out_for_its_key_says_which_variable_to_set(quickstart):
    """Without OPENAI_API_KEY, gpt-4o-mini is declared but not served: a caller is told why and
    what to set, and /readyz names the built-in copy, not a file an edit would change."""
    client = openai.OpenAI(base_url=quickstart.base_url, api_key=DEMO_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    message = e.value.body["message"]
    assert "declared but not served" in message and "set OPENAI_API_KEY" in message, message
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-5-nowhere", messages=[{"role": "user", "content": "hi"}])
    assert "does not exist" in e.value.body["message"]

    status, _, body = http_get(f"{quickstart.admin_url}/readyz")
    warnings = json.loads(body)["config"]["warnings"]
    assert [w["file"] for w in warnings] == ["embedded:config/quickstart/models.yaml"], warnings
    assert "set OPENAI_API_KEY" in warnings[0]["message"]
    assert "OPENAI_API_KEY" in quickstart.service.log_path.read_text()
