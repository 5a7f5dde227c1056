//! Command-line flags of `llmgate-operator`; every flag is also an `LLMGATE_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "llmgate-operator",
    version,
    about = "llmgate operator: compiles llmgate resources into one snapshot and pushes it to every data plane"
)]
pub struct Settings {
    /// Where the desired state comes from. `kubernetes`: the llmgate custom resources and the
    /// Secrets they reference, watched through the API server (in-cluster config or
    /// $KUBECONFIG). `dir:PATH`: the llmgate YAML under PATH, watched (GitOps without a
    /// cluster, development, VMs).
    #[arg(long, env = "LLMGATE_SOURCE", value_parser = source, default_value = "kubernetes")]
    pub source: SourceSpec,

    /// Kubernetes source: the namespaces to watch (comma-separated); all when empty.
    #[arg(long, env = "LLMGATE_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Kubernetes source: the namespace of the leader-election Lease; defaults to
    /// $POD_NAMESPACE, else `default`.
    #[arg(long, env = "LLMGATE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease; defaults to the host name and process id, unique
    /// per replica.
    #[arg(long, env = "LLMGATE_IDENTITY")]
    pub identity: Option<String>,

    /// Secrets for the directory source: a reference to key K of secret S reads DIR/S/K, else
    /// the environment variable S_K (upper case, other characters as `_`).
    #[arg(long, env = "LLMGATE_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Address data planes subscribe to.
    #[arg(
        long,
        env = "LLMGATE_DISTRIBUTION_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub distribution_listen: SocketAddr,

    /// Address of /healthz, /readyz, /metrics and /dataplanes.
    #[arg(long, env = "LLMGATE_ADMIN_LISTEN", default_value = "0.0.0.0:9091")]
    pub admin_listen: SocketAddr,

    /// File holding the bearer token data planes must present (trailing newline ignored).
    #[arg(
        long,
        env = "LLMGATE_TOKEN_FILE",
        required_unless_present = "token_secret"
    )]
    pub token_file: Option<PathBuf>,

    /// In a cluster: the Secret (in the operator's namespace, see `--lease-namespace`) whose
    /// key `token` holds the bearer token, read through the API instead of a file.
    #[arg(long, env = "LLMGATE_TOKEN_SECRET")]
    pub token_secret: Option<String>,

    /// PEM certificate chain for TLS on the distribution port (with `--tls-key`).
    #[arg(long, env = "LLMGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "LLMGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Quiet time after a change before compiling, so a burst of edits is one compile.
    #[arg(long, env = "LLMGATE_DEBOUNCE", default_value = "200ms", value_parser = duration)]
    pub debounce: Duration,
}

/// A source of desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Kubernetes,
    Dir(PathBuf),
}

fn source(s: &str) -> Result<SourceSpec, String> {
    if s == "kubernetes" {
        return Ok(SourceSpec::Kubernetes);
    }
    match s.split_once(':') {
        Some(("dir", path)) if !path.is_empty() => Ok(SourceSpec::Dir(PathBuf::from(path))),
        _ => Err(format!(
            "unknown source {s:?}; expected kubernetes or dir:PATH"
        )),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    llmgate_crds::duration::parse_millis(s).map(Duration::from_millis)
}
