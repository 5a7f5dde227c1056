//! Runs the real `llmgate-dataplane` binary on loopback ports with a configuration directory of
//! its own, and talks to it over plain HTTP/1.1.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The key every test configuration grants, and its SHA-256 for `ApiKey.spec.sha256`.
pub const TEST_KEY: &str = "sk-test-alice";
pub const UPSTREAM_KEY: &str = "sk-upstream-secret";

pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A binary built by this workspace (`target/<profile>/<name>`), next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Test executables live in target/<profile>/deps, binaries in target/<profile>.
    let here = exe.parent().expect("executable directory");
    let path = [here, here.parent().unwrap_or(here)]
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| here.join(name));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (the test command in README.md does)",
        path.display()
    );
    path
}

/// A loopback port nothing listens on now, never the same one twice in this process: tests run
/// in parallel, and a port handed out but not bound yet must not be handed out again.
pub fn free_port() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let addr = l.local_addr().expect("local addr");
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if !handed.contains(&addr.port()) {
            handed.push(addr.port());
            return addr;
        }
    }
}

/// ApiKey + AccessPolicy granting [`TEST_KEY`] (user alice, team ml) every model.
pub fn access_yaml() -> String {
    format!(
        r#"
apiVersion: llmgate.dev/v1alpha1
kind: ApiKey
metadata: {{name: alice}}
spec: {{user: alice@example.com, team: ml, sha256: "{}"}}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: ml}}
spec:
  rules:
    - name: ml-everything
      subjects: [{{team: ml}}]
      models: ["*"]
"#,
        sha256_hex(TEST_KEY)
    )
}

/// An `openai-compatible` ModelEndpoint over the given base URLs, with the upstream key from the
/// secret `upstream`/`api-key` (the harness sets UPSTREAM_API_KEY).
pub fn endpoint_yaml(name: &str, upstream_model: &str, urls: &[String], extra: &str) -> String {
    provider_endpoint_yaml("openai-compatible", name, upstream_model, urls, extra)
}

/// [`endpoint_yaml`] for another provider.
pub fn provider_endpoint_yaml(
    provider: &str,
    name: &str,
    upstream_model: &str,
    urls: &[String],
    extra: &str,
) -> String {
    let replicas: Vec<String> = urls.iter().map(|u| format!("{{url: \"{u}\"}}")).collect();
    format!(
        r#"
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: {name}}}
spec:
  model: {name}
  provider: {provider}
  upstreamModel: "{upstream_model}"
  replicas: [{}]
  credentials: {{apiKey: {{secretRef: {{name: upstream, key: api-key}}}}}}
  pricing: {{inputPerMillion: 2.0, outputPerMillion: 8.0}}
{extra}
"#,
        replicas.join(", ")
    )
}

pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config_dir: PathBuf,
    pub audit_log: PathBuf,
    stderr_log: PathBuf,
    _tmp: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Gateway {
    /// Starts the gateway on `config` (written to `<tmp>/config/main.yaml`) and waits until
    /// `/readyz` says it serves.
    pub async fn start(config: &str, extra_args: &[&str]) -> Gateway {
        // Another process may still take a port between picking and binding it (an outgoing
        // connection's ephemeral port): start again on fresh ports then.
        for attempt in 0.. {
            let tmp = tempfile::tempdir().expect("tempdir");
            let config_dir = tmp.path().join("config");
            std::fs::create_dir_all(&config_dir).expect("config dir");
            std::fs::write(config_dir.join("main.yaml"), config).expect("write config");
            let mut args: Vec<String> =
                vec!["--config-dir".into(), config_dir.display().to_string()];
            args.extend(extra_args.iter().map(|s| s.to_string()));
            let mut gw = Gateway::launch(tmp, config_dir, args);
            let exited = gw.wait_ready_or_exit().await;
            if exited && attempt < 3 && gw.stderr().contains("Address already in use") {
                continue;
            }
            if exited {
                gw.wait_ready().await;
            }
            return gw;
        }
        unreachable!("the loop returns")
    }

    /// Waits until `/readyz` answers 200 (false) or the process exits (true).
    async fn wait_ready_or_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some()
            {
                return true;
            }
            if let Ok((StatusCode::OK, _)) = self.admin_get("/readyz").await {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready after 30 s:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a gateway subscribed to an operator, keeping its state in `state_dir`. Does not
    /// wait for readiness: callers decide what they expect.
    pub fn start_subscribed(
        operator_url: &str,
        token_file: &Path,
        state_dir: &Path,
        node: &str,
        extra_args: &[&str],
    ) -> Gateway {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut args = vec![
            "--control-plane".to_string(),
            operator_url.to_string(),
            "--control-plane-token-file".into(),
            token_file.display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--node-name".into(),
            node.to_string(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let config_dir = tmp.path().join("unused");
        Gateway::launch(tmp, config_dir, args)
    }

    fn launch(tmp: tempfile::TempDir, config_dir: PathBuf, args: Vec<String>) -> Gateway {
        let audit_log = tmp.path().join("audit.jsonl");
        let stderr_log = tmp.path().join("stderr.log");
        let addr = free_port();
        let admin = free_port();
        let child = Command::new(binary("llmgate-dataplane"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--audit-log")
            .arg(&audit_log)
            .args(["--reload-debounce", "50ms"])
            .args(&args)
            .env("UPSTREAM_API_KEY", UPSTREAM_KEY)
            .env("LLMGATE_LOG", "info,llmgate_dataplane=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_log).expect("stderr log"))
            .spawn()
            .expect("start llmgate-dataplane");
        let mut client_builder = Client::builder(TokioExecutor::new());
        client_builder.pool_max_idle_per_host(64);
        Gateway {
            child: Some(child),
            addr,
            admin,
            config_dir,
            audit_log,
            stderr_log,
            _tmp: tmp,
            client: client_builder.build(HttpConnector::new()),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("llmgate-dataplane exited with {status}:\n{}", self.stderr());
            }
            if let Ok((StatusCode::OK, _)) = self.admin_get("/readyz").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready after 30 s:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL: the process dies mid-request, without draining.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The exit status, once the process ends on its own within `limit`.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Sends SIGTERM and waits for the exit status; a process still running after 30 s is
    /// killed and the test fails (a gateway ignoring SIGTERM must not hang the suite).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for exit") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the process did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn write_config(&self, file: &str, text: &str) {
        let tmp = self.config_dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_dir.join(file)).expect("rename config");
    }

    /// Audit records written so far.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `n` audit records are written (the writer is asynchronous).
    pub async fn audit_until(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = self.audit();
            if records.len() >= n || Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn admin_get(&self, path: &str) -> Result<(StatusCode, String), String> {
        let req = Request::get(format!("http://{}{path}", self.admin))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// The sum of every `/metrics` sample of `name` whose labels include `labels` (0 when
    /// there is none), for asserting deltas.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (_, text) = self.admin_get("/metrics").await.expect("metrics");
        metric_sum(&text, name, labels)
    }

    pub async fn readyz(&self) -> Value {
        let (_, body) = self.admin_get("/readyz").await.expect("readyz");
        serde_json::from_str(&body).expect("readyz JSON")
    }

    /// A request with the test key; the whole response.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call_with_key(method, path, body, Some(TEST_KEY)).await
    }

    pub async fn call_with_key(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Reply {
        Reply::read(
            self.send(method, path, body.map(|b| b.to_string()), key)
                .await,
        )
        .await
    }

    /// `POST /v1/chat/completions` with the test key; the caller reads the (SSE) body.
    pub async fn chat_stream(&self, body: &Value) -> http::Response<Incoming> {
        self.send(
            "POST",
            "/v1/chat/completions",
            Some(body.to_string()),
            Some(TEST_KEY),
        )
        .await
    }

    /// A request whose response body the caller reads itself (streams).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        key: Option<&str>,
    ) -> http::Response<Incoming> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json");
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        self.client.request(req).await.expect("gateway answers")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The whole response, body read to its end.
    pub async fn read(resp: http::Response<Incoming>) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Reads SSE `data:` payloads from a streaming response as they arrive.
pub struct SseReader {
    body: Incoming,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(body: Incoming) -> Self {
        SseReader {
            body,
            buf: Vec::new(),
        }
    }

    /// The next `data:` payload, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8_lossy(&event).into_owned();
                if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return Some(data.to_string());
                }
                continue;
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
                _ => return None,
            }
        }
    }

    pub async fn all(mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(d) = self.next().await {
            out.push(d);
        }
        out
    }
}

/// A running `llmgate-operator` with the directory source.
pub struct Operator {
    child: Option<Child>,
    /// With TLS: the self-signed certificate the data planes must trust.
    pub ca_file: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    pub dist: SocketAddr,
    pub admin: SocketAddr,
    pub config_dir: PathBuf,
    pub token_file: PathBuf,
    stderr_log: PathBuf,
    _tmp: tempfile::TempDir,
}

pub const OPERATOR_TOKEN: &str = "dp-token-7f3a";

impl Operator {
    /// Starts the operator on `config` with a token file holding [`OPERATOR_TOKEN`], and waits
    /// until it publishes.
    pub async fn start(config: &str) -> Operator {
        Operator::launch(config, false).await
    }

    /// The same, serving the distribution port over TLS with a fresh self-signed certificate
    /// for `localhost`.
    pub async fn start_tls(config: &str) -> Operator {
        Operator::launch(config, true).await
    }

    async fn launch(config: &str, tls: bool) -> Operator {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (ca_file, tls_key) = if tls {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("self-signed certificate");
            let (c, k) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
            std::fs::write(&c, cert.cert.pem()).expect("write cert");
            std::fs::write(&k, cert.signing_key.serialize_pem()).expect("write key");
            (Some(c), Some(k))
        } else {
            (None, None)
        };
        let config_dir = tmp.path().join("config");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        std::fs::write(config_dir.join("main.yaml"), config).expect("write config");
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, format!("{OPERATOR_TOKEN}\n")).expect("token");
        let mut op = Operator {
            child: None,
            ca_file,
            tls_key,
            dist: free_port(),
            admin: free_port(),
            config_dir,
            token_file,
            stderr_log: tmp.path().join("operator.log"),
            _tmp: tmp,
        };
        op.restart().await;
        op
    }

    /// (Re)starts the process on the same ports and directory.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "operator already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .expect("operator log");
        let mut cmd = Command::new(binary("llmgate-operator"));
        if let (Some(c), Some(k)) = (&self.ca_file, &self.tls_key) {
            cmd.arg("--tls-cert").arg(c).arg("--tls-key").arg(k);
        }
        let child = cmd
            .arg("--source")
            .arg(format!("dir:{}", self.config_dir.display()))
            .arg("--token-file")
            .arg(&self.token_file)
            .arg("--distribution-listen")
            .arg(self.dist.to_string())
            .arg("--admin-listen")
            .arg(self.admin.to_string())
            .args(["--debounce", "50ms"])
            .env("UPSTREAM_API_KEY", UPSTREAM_KEY)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start llmgate-operator");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.admin_json("/readyz").await.map(|v| v["ready"] == true) != Some(true) {
            assert!(
                Instant::now() < deadline,
                "operator not ready:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        match self.ca_file {
            Some(_) => format!("https://localhost:{}", self.dist.port()),
            None => format!("http://{}", self.dist),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn write_config(&self, file: &str, text: &str) {
        let tmp = self.config_dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_dir.join(file)).expect("rename config");
    }

    pub async fn admin_json(&self, path: &str) -> Option<Value> {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let req = Request::get(format!("http://{}{path}", self.admin))
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = client.request(req).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sum of the samples of `name` in a Prometheus text exposition whose labels include every
/// pair of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let have: Vec<&str> = rest.split(',').collect();
            let all = labels
                .iter()
                .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
