//! Real `redis-server` processes for the tests: one node, or a three-master cluster, on
//! ephemeral loopback ports, nothing written to disk, stopped when dropped. Inspected with
//! `redis-cli`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::launch(
            free_port().port(),
            false,
            tempfile::tempdir().expect("tempdir"),
        )
    }

    fn launch(port: u16, cluster: bool, dir: tempfile::TempDir) -> RedisServer {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path());
        if cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (install the redis-server package)");
        let mut s = RedisServer {
            child: Some(child),
            port,
            dir,
            cluster,
        };
        s.wait_up();
        s
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this server; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(if self.cluster { &["-c"][..] } else { &[][..] })
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the server (all data is gone: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        *self = Self::launch(self.port, self.cluster, dir);
    }

    /// `HGETALL` as pairs.
    pub fn hgetall(&self, key: &str) -> Vec<(String, String)> {
        let out = self.cli(&["HGETALL", key]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_owned(), c[1].to_owned()))
            .collect()
    }

    pub fn hget_i64(&self, key: &str, field: &str) -> i64 {
        self.cli(&["HGET", key, field]).trim().parse().unwrap_or(0)
    }

    /// Keys matching a pattern (this node only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `INFO commandstats` calls of one command (`fcall`, `function`, …).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three masters, no replicas, all 16384 slots assigned.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::launch(
                    free_port().port(),
                    true,
                    tempfile::tempdir().expect("tempdir"),
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    /// `--redis-cluster-nodes` value.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node holding `key`'s slot answers (redis-cli -c follows redirects).
    pub fn cli(&self, args: &[&str]) -> String {
        self.nodes[0].cli(args)
    }

    pub fn hget_i64(&self, key: &str, field: &str) -> i64 {
        self.cli(&["HGET", key, field]).trim().parse().unwrap_or(0)
    }

    /// Keys matching a pattern, on every node, with the port of the node holding each.
    pub fn keys(&self, pattern: &str) -> Vec<(u16, String)> {
        self.nodes
            .iter()
            .flat_map(|n| n.keys(pattern).into_iter().map(move |k| (n.port, k)))
            .collect()
    }

    pub fn calls(&self, command: &str) -> u64 {
        self.nodes.iter().map(|n| n.calls(command)).sum()
    }
}
