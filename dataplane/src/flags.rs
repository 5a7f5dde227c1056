//! Command-line flags of `llmgate-dataplane`; every flag is also an `LLMGATE_*` variable.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "llmgate-dataplane",
    version,
    about = "llmgate data plane: an OpenAI-compatible gateway in front of every model"
)]
pub struct Settings {
    /// Standalone mode: serve the llmgate YAML under this directory and apply edits as they
    /// are saved. Without it the embedded quickstart configuration is served.
    #[arg(long, env = "LLMGATE_CONFIG_DIR", conflicts_with = "control_plane")]
    pub config_dir: Option<PathBuf>,

    /// Operator mode: subscribe to the operator's snapshot stream at this URL (for example
    /// `http://llmgate-operator:8081`) instead of reading files.
    #[arg(
        long,
        env = "LLMGATE_CONTROL_PLANE",
        requires = "control_plane_token_file"
    )]
    pub control_plane: Option<String>,

    /// PEM CA certificate(s) to verify an `https://` operator with, instead of the public
    /// web roots.
    #[arg(long, env = "LLMGATE_CONTROL_PLANE_CA")]
    pub control_plane_ca: Option<PathBuf>,

    /// File holding the bearer token the operator accepts.
    #[arg(long, env = "LLMGATE_CONTROL_PLANE_TOKEN_FILE")]
    pub control_plane_token_file: Option<PathBuf>,

    /// Where the last applied snapshot is kept, so a restart serves it even when the operator
    /// is unreachable.
    #[arg(long, env = "LLMGATE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// This data plane's name towards the operator; defaults to the system's host name (a
    /// pod's name in Kubernetes).
    #[arg(long, env = "LLMGATE_NODE_NAME")]
    pub node_name: Option<String>,

    /// Check the llmgate YAML under this directory (with `--secrets-dir`, if given) and exit:
    /// 0 when it would be served, 1 with the same report a reload gives when it would not.
    /// Serves nothing.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config_dir", "control_plane"])]
    pub check_config: Option<PathBuf>,

    /// Directory of secrets for standalone mode: a reference to key K of secret S reads the
    /// file DIR/S/K. Without the file, the environment variable S_K (upper case, `-` and `.`
    /// as `_`) is used: secret `openai`, key `api-key` → OPENAI_API_KEY.
    #[arg(long, env = "LLMGATE_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Address of the OpenAI-compatible API. Default `0.0.0.0:8080` with `--config-dir` or
    /// `--control-plane`; `127.0.0.1:8080` for the embedded quickstart, whose demo key is
    /// public.
    #[arg(long, env = "LLMGATE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Address of /healthz, /readyz and /metrics. Default `0.0.0.0:9090`, or `127.0.0.1:9090`
    /// for the embedded quickstart.
    #[arg(long, env = "LLMGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Where audit records go, one JSON object per line: `-` for stdout, or a file appended to.
    #[arg(long, env = "LLMGATE_AUDIT_LOG", default_value = "-")]
    pub audit_log: String,

    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, env = "LLMGATE_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Time allowed for a request's headers to arrive. It also bounds how long an idle
    /// keep-alive connection stays open, since waiting for the next request is waiting for
    /// its headers.
    #[arg(long, env = "LLMGATE_HEADER_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub header_timeout: Duration,

    /// Time allowed for a request body to arrive in full (slow clients get 408).
    #[arg(long, env = "LLMGATE_BODY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub body_timeout: Duration,

    /// On SIGTERM/SIGINT, how long in-flight requests and streams may take to finish.
    #[arg(long, env = "LLMGATE_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// How long to wait after a file change before reloading, so a burst of saves is one reload.
    #[arg(long, env = "LLMGATE_RELOAD_DEBOUNCE", default_value = "200ms", value_parser = duration)]
    pub reload_debounce: Duration,

    /// Redis for the rate-limit and budget counters shared by every replica
    /// (`redis://[:password@]host:6379/0`, `rediss://` for TLS). Without it (and without
    /// `--redis-cluster-nodes`) counters live in this process: right for one replica only.
    #[arg(
        long,
        env = "LLMGATE_REDIS_URL",
        conflicts_with = "redis_cluster_nodes"
    )]
    pub redis_url: Option<String>,

    /// Redis Cluster seed nodes, comma-separated `redis://host:port` URLs.
    #[arg(long, env = "LLMGATE_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,

    /// How long one counter call may take before Redis counts as unreachable and each limit's
    /// fail mode applies.
    #[arg(long, env = "LLMGATE_REDIS_TIMEOUT", default_value = "100ms", value_parser = duration)]
    pub redis_timeout: Duration,

    /// Log format: `text` or `json`. The level comes from LLMGATE_LOG (e.g. `info,llmgate=debug`).
    #[arg(long, env = "LLMGATE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    llmgate_crds::duration::parse_millis(s).map(Duration::from_millis)
}

impl Settings {
    /// No configuration given: the embedded quickstart is served.
    pub fn is_quickstart(&self) -> bool {
        self.config_dir.is_none() && self.control_plane.is_none()
    }

    /// Where the API listens: `--listen`, else the mode's default.
    pub fn api_addr(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| self.default_addr(8080))
    }

    /// Where /healthz, /readyz and /metrics listen: `--admin-listen`, else the mode's default.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listen.unwrap_or_else(|| self.default_addr(9090))
    }

    /// Loopback for the quickstart, since anyone who can reach it holds its published demo
    /// key; every address otherwise, as a pod behind a Service needs.
    fn default_addr(&self, port: u16) -> SocketAddr {
        let ip = if self.is_quickstart() {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        SocketAddr::from((ip, port))
    }

    /// The name towards the operator: `--node-name`, else the system's host name (read from the
    /// kernel: `$HOSTNAME` is a shell variable most shells do not export), else `$HOSTNAME`.
    pub fn node(&self) -> String {
        self.node_name
            .clone()
            .or_else(system_host_name)
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "llmgate-dataplane".into())
    }

    /// Settings for tests: loopback ports chosen by the OS are not needed since tests drive the
    /// router directly.
    pub fn for_tests() -> Self {
        Settings::parse_from(["llmgate-dataplane", "--audit-log", "-"])
    }
}

/// The kernel's host name (Linux), or `/etc/hostname`.
fn system_host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_name_is_the_flag_else_the_system_host_name() {
        let s = Settings::parse_from(["llmgate-dataplane", "--node-name", "dp-7"]);
        assert_eq!(s.node(), "dp-7");
        let s = Settings::for_tests();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("Linux");
        assert_eq!(s.node(), kernel.trim());
    }

    #[test]
    fn only_the_quickstart_defaults_to_loopback() {
        let s = |args: &[&str]| {
            let mut argv = vec!["llmgate-dataplane"];
            argv.extend_from_slice(args);
            let s = Settings::parse_from(argv);
            (s.api_addr().to_string(), s.admin_addr().to_string())
        };
        let loopback = ("127.0.0.1:8080".to_owned(), "127.0.0.1:9090".to_owned());
        let every = ("0.0.0.0:8080".to_owned(), "0.0.0.0:9090".to_owned());
        assert_eq!(s(&[]), loopback);
        assert_eq!(s(&["--config-dir", "/etc/llmgate"]), every);
        let operator = [
            "--control-plane",
            "http://op:8081",
            "--control-plane-token-file",
            "/t",
        ];
        assert_eq!(s(&operator), every);
        let chosen = s(&["--listen", "0.0.0.0:80", "--admin-listen", "[::1]:9"]);
        assert_eq!(chosen, ("0.0.0.0:80".to_owned(), "[::1]:9".to_owned()));
    }
}
