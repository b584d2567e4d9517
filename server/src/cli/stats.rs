//! `subzero stats --server URL` (`http://host:port` or `unix:/path`): one screen per refresh with each shard's requests/s, p99, CPU,
//! perf counters and degraded flags (from the server's `/metrics`) beside the eBPF gate's
//! counters (from the pinned maps, when the gate is loaded).
//!
//! It reads `GET /metrics` on the server's own listener: the same figures Prometheus scrapes,
//! counts only, no secrets. Anyone who can reach the listener can read them; keep the listener
//! on a private address, or put `/metrics` behind the proxy's own access rule.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::json;

use super::remote::Target;
/// Longest `--watch` interval (a day).
const MAX_WATCH_S: u64 = 86_400;

/// One sample: name, labels, value.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition (labels without escaped quotes, as ours are).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels = BTreeMap::new();
                for pair in rest.trim_end_matches('}').split("\",") {
                    if let Some((k, v)) = pair.split_once("=\"") {
                        labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                    }
                }
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

/// `GET /metrics`, over TCP or the Unix socket.
fn fetch(target: &Target) -> Result<String, String> {
    let resp = super::remote::request(target, "GET", "/metrics", None, "")
        .map_err(|e| format!("cannot read /metrics: {e}"))?;
    if resp.status != 200 {
        return Err(format!("{target}: /metrics answered {}", resp.status));
    }
    Ok(resp.body)
}

/// One shard's row.
fn shard_rows(now: &[Sample], before: Option<(&[Sample], f64)>) -> Vec<serde_json::Value> {
    let shards: std::collections::BTreeSet<String> = now
        .iter()
        .filter(|s| s.name == "subzero_http_requests_total")
        .filter_map(|s| s.labels.get("shard").cloned())
        .collect();
    let value = |samples: &[Sample], name: &str, shard: &str| {
        samples
            .iter()
            .find(|s| s.name == name && s.labels.get("shard").map(String::as_str) == Some(shard))
            .map(|s| s.value)
    };
    let mut rows = Vec::new();
    for shard in shards.iter().map(String::as_str) {
        let requests = value(now, "subzero_http_requests_total", shard).unwrap_or(0.0);
        let rate = before.map(|(b, dt)| {
            (requests - value(b, "subzero_http_requests_total", shard).unwrap_or(0.0)).max(0.0) / dt
        });
        let mut p99: Vec<(String, f64)> = now
            .iter()
            .filter(|s| {
                s.name == "subzero_request_p99_seconds"
                    && s.labels.get("shard").map(String::as_str) == Some(shard)
                    && s.value > 0.0
            })
            .map(|s| (s.labels.get("op").cloned().unwrap_or_default(), s.value))
            .collect();
        p99.sort_by(|a, b| b.1.total_cmp(&a.1));
        let degraded: Vec<String> = now
            .iter()
            .filter(|s| {
                s.name == "subzero_degraded"
                    && s.labels.get("shard").map(String::as_str) == Some(shard)
                    && s.value > 0.0
            })
            .filter_map(|s| s.labels.get("reason").cloned())
            .collect();
        let mut perf = serde_json::Map::new();
        for s in now.iter().filter(|s| {
            s.name.starts_with("subzero_perf_")
                && s.name != "subzero_perf_available"
                && s.labels.get("shard").map(String::as_str) == Some(shard)
        }) {
            let key = s.name["subzero_perf_".len()..].trim_end_matches("_total");
            perf.insert(key.to_owned(), json!(s.value));
        }
        let unavailable: Vec<String> = now
            .iter()
            .filter(|s| {
                s.name == "subzero_perf_available"
                    && s.labels.get("shard").map(String::as_str) == Some(shard)
                    && s.value == 0.0
            })
            .filter_map(|s| s.labels.get("counter").cloned())
            .collect();
        rows.push(json!({
            "shard": shard,
            "requests_total": requests,
            "requests_per_s": rate,
            "p99_s": p99.first().map(|p| p.1),
            "p99_op": p99.first().map(|p| p.0.clone()),
            "p99_by_op": p99.iter().map(|(op, v)| (op.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "cpu": value(now, "subzero_shard_cpu_utilization", shard),
            "connections_open": value(now, "subzero_connections_open", shard),
            "mesh_queue_depth": value(now, "subzero_mesh_queue_depth", shard),
            "perf": perf,
            "perf_unavailable": unavailable,
            "degraded": degraded,
        }));
    }
    rows
}

/// A count from the document as a whole number, or `-`.
fn whole(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |n| format!("{n:.0}"))
}

/// The screen (or JSON document) of one refresh.
fn render(doc: &serde_json::Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "subzero at {}", doc["server"].as_str().unwrap_or("?"));
    let _ = writeln!(
        out,
        "{:>5} {:>10} {:>10} {:>34} {:>6} {:>7} {:>12} {:>10}  degraded",
        "shard", "req/s", "requests", "worst p99 (op)", "cpu", "conns", "ctx switch", "faults"
    );
    for row in doc["shards"].as_array().into_iter().flatten() {
        let rate = row["requests_per_s"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        let p99 = match (row["p99_s"].as_f64(), row["p99_op"].as_str()) {
            (Some(s), Some(op)) => format!("{:.1}us ({op})", s * 1e6),
            _ => "-".to_owned(),
        };
        let degraded: Vec<&str> = row["degraded"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let _ = writeln!(
            out,
            "{:>5} {:>10} {:>10} {:>34} {:>5.0}% {:>7} {:>12} {:>10}  {}",
            row["shard"].as_str().unwrap_or("?"),
            rate,
            whole(&row["requests_total"]),
            p99,
            row["cpu"].as_f64().unwrap_or(0.0) * 100.0,
            whole(&row["connections_open"]),
            whole(&row["perf"]["context_switches"]),
            whole(&row["perf"]["page_faults"]),
            if degraded.is_empty() {
                "no".to_owned()
            } else {
                degraded.join(",")
            }
        );
    }
    if let Some(first) = doc["shards"].as_array().and_then(|a| a.first()) {
        let missing: Vec<&str> = first["perf_unavailable"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        if !missing.is_empty() {
            let _ = writeln!(out, "perf counters unavailable: {}", missing.join(", "));
        }
    }
    match doc["gate"].as_object() {
        Some(gate) => {
            let parts: Vec<String> = gate
                .iter()
                .map(|(k, v)| format!("{k} {}", whole(v)))
                .collect();
            let _ = writeln!(out, "eBPF gate: {}", parts.join("  "));
        }
        None => {
            let _ = writeln!(
                out,
                "eBPF gate: {}",
                doc["gate_error"].as_str().unwrap_or("not loaded")
            );
        }
    }
    out
}

/// `subzero stats --server URL [--json] [--watch SECS]`: one refresh (two scrapes a second
/// apart, for the rates), or one every `SECS` until interrupted.
pub fn server_stats(server: &str, json: bool, watch_s: Option<u64>) -> Result<(), String> {
    let target = Target::parse(server)?;
    let mut before = parse(&fetch(&target)?);
    let mut at = Instant::now();
    let interval = Duration::from_secs(watch_s.unwrap_or(1).clamp(1, MAX_WATCH_S));
    loop {
        std::thread::sleep(interval);
        let now = parse(&fetch(&target)?);
        let dt = at.elapsed().as_secs_f64();
        at = Instant::now();
        let mut doc = json!({
            "server": server,
            "interval_s": dt,
            "shards": shard_rows(&now, Some((&before, dt))),
        });
        match crate::gate::cli_gate_totals() {
            Ok(totals) => {
                doc["gate"] = totals
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), json!(v)))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            Err(e) => doc["gate_error"] = json!(format!("not loaded ({e})")),
        }
        if json {
            println!("{doc}");
        } else {
            if watch_s.is_some() {
                // Clear the screen and go home: a refreshing table.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&doc));
        }
        if watch_s.is_none() {
            return Ok(());
        }
        before = now;
    }
}
