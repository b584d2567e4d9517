//! End to end over loopback: the monitor of a running server. Software perf counters open and
//! advance under load; the degradation detector raises `subzero_degraded` (and a log line)
//! when authenticate's p99 is over a tiny SLO for K intervals and clears it after the load
//! stops; `subzero stats --server URL --json` shows the shard's rate, CPU and the flag.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bearer, cli, issue, poll, Server};

/// Every cache-hit authenticate takes longer than 1 µs of server time in a debug build, so
/// the SLO is always missed while requests flow.
const CONFIG: &str = "[monitor]\nraise_after_intervals = 2\nclear_after_intervals = 2\nmin_samples = 5\n[monitor.slo_p99_us]\nauthenticate = 1\n";

const DEGRADED: &str = "subzero_degraded{shard=\"0\",reason=\"slo_authenticate_cache_hit\"}";

/// The value of the one sample that starts with `series` (labels may follow).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sends cache-hit authenticates on one keep-alive connection until stopped (at most 60 s).
fn load(server: &Server, token: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut conn = server.connect();
    let auth = bearer(token);
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_mins(1);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            conn.send("GET", "/v1/authenticate", &[("Authorization", &auth)], "");
            assert_eq!(conn.read_response().status, 200);
            n += 1;
        }
        n
    })
}

#[test]
fn perf_counters_advance_and_the_detector_raises_and_clears() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("monitor.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &["--config", config.to_str().unwrap(), "--shards", "1"],
    );
    let token = issue(&data, "alice", "subzero", &[]);

    let first = server.wait_metrics("perf counters", |t| {
        value(t, "subzero_perf_task_clock_seconds_total{shard=\"0\"").is_some()
    });
    // Software counters open here, counting the kernel too when root (as CI is); hardware
    // ones are either available with a value or unavailable without one, never a zero.
    // SAFETY: geteuid has no preconditions.
    let scope = if unsafe { libc::geteuid() } == 0 {
        "user+kernel"
    } else {
        "user"
    };
    for counter in [
        "task_clock",
        "context_switches",
        "cpu_migrations",
        "page_faults",
    ] {
        assert!(
            first.contains(&format!(
                "subzero_perf_available{{shard=\"0\",counter=\"{counter}\",scope=\"{scope}\"}} 1"
            )),
            "{counter} not available:\n{first}"
        );
    }
    for (counter, family) in [("cycles", "cycles"), ("instructions", "instructions")] {
        let available = value(
            &first,
            &format!("subzero_perf_available{{shard=\"0\",counter=\"{counter}\""),
        );
        let has_value = first.contains(&format!("subzero_perf_{family}_total{{"));
        assert_eq!(available == Some(1.0), has_value, "{counter}:\n{first}");
    }
    assert_eq!(value(&first, DEGRADED), Some(0.0), "{first}");

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(&server, &token, Arc::clone(&stop));
    let raised = server.wait_metrics("the SLO flag raised", |t| value(t, DEGRADED) == Some(1.0));
    let clock = |t: &str| value(t, "subzero_perf_task_clock_seconds_total{shard=\"0\"").unwrap();
    let switches = |t: &str| value(t, "subzero_perf_context_switches_total{shard=\"0\"").unwrap();
    assert!(clock(&raised) > clock(&first), "task clock did not advance");
    assert!(switches(&raised) >= switches(&first));
    assert!(
        value(&raised, "subzero_shard_cpu_utilization{shard=\"0\"}").unwrap() > 0.0,
        "{raised}"
    );

    // The operator's screen, while the load runs: one refresh as JSON.
    let url = format!("http://{}", server.addr);
    let (code, out, err) = cli(&["stats", "--server", &url, "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let shard = &doc["shards"][0];
    assert_eq!(shard["shard"], "0", "{doc}");
    assert!(shard["requests_per_s"].as_f64().unwrap() > 0.0, "{doc}");
    assert!(shard["cpu"].as_f64().unwrap() > 0.0, "{doc}");
    assert!(shard["p99_s"].as_f64().unwrap() > 0.0, "{doc}");
    assert!(
        shard["perf"]["task_clock_seconds"].as_f64().is_some(),
        "{doc}"
    );
    assert!(
        shard["degraded"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("slo_authenticate_cache_hit")),
        "{doc}"
    );

    stop.store(true, Ordering::Relaxed);
    assert!(loader.join().unwrap() > 0);
    server.wait_metrics("the SLO flag cleared", |t| value(t, DEGRADED) == Some(0.0));
    let mut log = String::new();
    let log = poll(
        "the raise and clear log lines",
        Duration::from_secs(5),
        || {
            log.push_str(&server.drain_log().join("\n"));
            (log.contains("degraded") && log.contains("degradation cleared")).then(|| log.clone())
        },
    );
    assert!(log.contains("slo_authenticate_cache_hit"), "{log}");
}
