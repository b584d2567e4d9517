//! Test harness for the fleet: a real `redis-server` (or a three-master Redis Cluster) on free
//! loopback ports with its data in a temporary directory, never the system's 6379. Each
//! instance is this process's child and is killed on Drop. Without redis-server the tests skip
//! with a printed reason, except under CI=true where they fail loudly.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING or a cluster to report `cluster_state:ok`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether redis-server and redis-cli are installed; prints why not (and panics under
/// CI=true) when they are not.
pub fn available(what: &str) -> bool {
    let have = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("redis-server") && have("redis-cli") {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "CI=true but redis-server/redis-cli are missing (cargo xtask test installs them): {what} must run in CI"
    );
    eprintln!("skipping {what}: redis-server or redis-cli is not installed (cargo xtask test installs them)");
    false
}

/// A loopback port free now whose cluster bus port (port + 10000) is free too.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
        let port = listener.local_addr().expect("local addr").port();
        if port != 6379
            && port < 55_000
            && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

/// Runs `redis-cli -p PORT ARGS` and returns its stdout (None when it could not run or failed).
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One redis-server child.
pub struct Redis {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    /// Owns the data directory (standalone servers); a cluster's nodes share the cluster's.
    _tmp: Option<tempfile::TempDir>,
}

impl Redis {
    /// A standalone redis-server on a free loopback port: no RDB snapshots, an append-only
    /// file fsynced on every write, in a fresh temporary directory. Returns once it answers
    /// PING.
    pub fn start() -> Redis {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        Redis::start_in(dir, Vec::new(), Some(tmp))
    }

    fn start_in(dir: PathBuf, extra: Vec<String>, tmp: Option<tempfile::TempDir>) -> Redis {
        let mut redis = Redis {
            port: free_port(),
            dir,
            extra,
            child: None,
            _tmp: tmp,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--logfile")
            .arg(self.dir.join(format!("redis-{}.log", self.port)))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            &format!("redis-server on port {port} answers PING"),
            START_TIMEOUT,
            || cli(port, &["PING"]).is_some_and(|o| o.trim() == "PONG"),
        );
    }

    /// Kills the server (SIGKILL to its own pid) and waits for it; the port stops answering.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        wait_for(&format!("port {port} closed"), START_TIMEOUT, || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
        });
    }

    /// Starts the server again on the same port and directory (it reloads its append-only
    /// file).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this server.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        cli(self.port, args)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis Cluster of `n` masters (no replicas), each a child redis-server.
pub struct RedisCluster {
    /// The nodes (dropped before the directory).
    pub nodes: Vec<Redis>,
    _tmp: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `n` (≥ 3) `cluster-enabled` servers, joins them with `redis-cli --cluster
    /// create ... --cluster-replicas 0 --cluster-yes` and waits for `cluster_state:ok` on
    /// every node.
    pub fn start(n: usize) -> RedisCluster {
        assert!(
            n >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Redis> = (0..n)
            .map(|i| {
                let dir = tmp.path().join(format!("node{i}"));
                std::fs::create_dir_all(&dir).expect("node dir");
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ];
                Redis::start_in(dir, extra.map(String::from).to_vec(), None)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for node in &nodes {
            wait_for(
                &format!("cluster_state:ok on port {}", node.port),
                START_TIMEOUT,
                || {
                    node.cli(&["CLUSTER", "INFO"])
                        .is_some_and(|o| o.contains("cluster_state:ok"))
                },
            );
        }
        RedisCluster { nodes, _tmp: tmp }
    }

    /// The seed URLs, `redis://127.0.0.1:P` per node.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }
}
