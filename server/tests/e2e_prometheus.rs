//! End to end with the real Prometheus (Debian's `prometheus` package, installed by
//! `cargo xtask test`): it scrapes a two-shard server on loopback every second; after load,
//! PromQL over its HTTP API returns per-shard request rates and a cross-shard p99 from the
//! histogram buckets. `promtool check metrics` passes on the live `/metrics`, and `promtool
//! check rules` on the shipped alerting rules (which this Prometheus also loads).
//!
//! With `CI=true` a missing `prometheus`/`promtool` fails the test; elsewhere it is skipped
//! with the reason printed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bearer, issue, poll, Server};

/// `name` on the PATH.
fn find(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The tools, or `None` (skip) outside CI; panics in CI.
fn tools() -> Option<(PathBuf, PathBuf)> {
    match (find("prometheus"), find("promtool")) {
        (Some(p), Some(t)) => Some((p, t)),
        _ => {
            let why = "prometheus/promtool not installed (apt-get install prometheus; `cargo xtask test` does it)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {why}"
            );
            eprintln!("skipping e2e_prometheus: {why}");
            None
        }
    }
}

/// The Prometheus this test started; killed by its pid on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/prometheus-alerts.yml")
}

fn start_prometheus(bin: &Path, dir: &Path, target: SocketAddr) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: subzero\n    static_configs:\n      - targets: ['{target}']\n",
            rules_file().display()
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = dir.join("prometheus.log");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start prometheus");
    Prometheus { child, addr, log }
}

/// `GET path` on `addr` with `Connection: close`: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut bytes = Vec::new();
    conn.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    // Prometheus answers small bodies whole, large ones chunked.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((status, dechunk(body)));
    }
    Some((status, body.to_owned()))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a query parameter.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query: the result vector's (labels, value).
fn query(prom: &Prometheus, promql: &str) -> Vec<(serde_json::Value, f64)> {
    let Some((200, body)) = http_get(
        prom.addr,
        &format!("/api/v1/query?query={}", encode(promql)),
    ) else {
        return Vec::new();
    };
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    doc["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let v: f64 = r["value"][1].as_str()?.parse().ok()?;
            Some((r["metric"].clone(), v))
        })
        .collect()
}

/// Load on `n` keep-alive connections (SO_REUSEPORT spreads them over the shards) until
/// stopped, at most 2 minutes.
fn load(
    server: &Server,
    token: &str,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let mut conn = server.connect();
            let auth = bearer(token);
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_mins(2);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    conn.send("GET", "/v1/authenticate", &[("Authorization", &auth)], "");
                    assert_eq!(conn.read_response().status, 200);
                }
            })
        })
        .collect()
}

fn promtool(bin: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn prometheus_scrapes_rates_per_shard_and_a_cross_shard_p99() {
    let Some((prometheus, promtool_bin)) = tools() else {
        return;
    };
    let (ok, out) = promtool(
        &promtool_bin,
        &["check", "rules", rules_file().to_str().unwrap()],
        None,
    );
    assert!(ok, "promtool check rules:\n{out}");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--shards", "2"]);
    let token = issue(&data, "alice", "subzero", &[]);
    let prom = start_prometheus(&prometheus, dir.path(), server.addr);
    poll("prometheus ready", Duration::from_secs(30), || {
        http_get(prom.addr, "/-/ready").filter(|(s, _)| *s == 200)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let loaders = load(&server, &token, 8, &stop);
    let rates = poll(
        "request rates of both shards",
        Duration::from_mins(1),
        || {
            let r = query(
                &prom,
                "sum by (shard) (rate(subzero_http_requests_total{job=\"subzero\"}[5s]))",
            );
            (r.len() == 2 && r.iter().all(|(_, v)| *v > 0.0)).then_some(r)
        },
    );
    let p99 = poll("a cross-shard p99", Duration::from_secs(30), || {
        let r = query(
            &prom,
            "histogram_quantile(0.99, sum by (le, op) (rate(subzero_request_duration_seconds_bucket{op=\"authenticate_cache_hit\"}[5s])))",
        );
        r.first()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite() && *v > 0.0)
    });
    let text = server.metrics();
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    let mut shards: Vec<&str> = rates
        .iter()
        .map(|(m, _)| m["shard"].as_str().unwrap())
        .collect();
    shards.sort_unstable();
    assert_eq!(shards, ["0", "1"], "{rates:?}");
    // A cache-hit authenticate takes microseconds of server time; the quantile interpolates
    // within a bucket, so it is above 0 and at most the 10 ms bucket even in a debug build.
    assert!(p99 > 0.0 && p99 <= 0.01, "p99 {p99} s");

    let (ok, out) = promtool(&promtool_bin, &["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics:\n{out}");
    // The rules loaded into this Prometheus too.
    let (status, body) = http_get(prom.addr, "/api/v1/rules").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("SubzeroDegraded"),
        "{body}\n{}",
        std::fs::read_to_string(&prom.log).unwrap_or_default()
    );
}
