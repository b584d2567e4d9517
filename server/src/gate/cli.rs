//! `subzero stats` and `subzero block add|del|list`: work on the pinned maps, whether or not the server runs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use subzero_common::{Reason, N_REASONS, PIN_DIR};

use super::maps::{BlockItem, GateMaps};
use super::{boot_ns, parse_block_reason, until_ns, BlockReason, Cidr, GateError};

/// Offenders listed by `subzero stats`.
const TOP_N: usize = 10;
/// Longest `--watch` interval accepted (a day).
const MAX_WATCH_S: u64 = 86_400;

fn open() -> Result<GateMaps, GateError> {
    GateMaps::from_pins(Path::new(PIN_DIR))
}

fn expires_in_s(item: &BlockItem, now_ns: u64) -> Option<u64> {
    (item.until_ns != 0).then(|| item.until_ns.saturating_sub(now_ns).div_ceil(1_000_000_000))
}

fn item_json(item: &BlockItem, now_ns: u64) -> serde_json::Value {
    json!({
        "cidr": item.cidr.to_string(),
        "reason": item.reason.as_str(),
        "expires_in_s": expires_in_s(item, now_ns),
        "drops": item.drops,
    })
}

fn item_line(item: &BlockItem, now_ns: u64) -> String {
    let expiry = match expires_in_s(item, now_ns) {
        None => "never expires".to_owned(),
        Some(0) => "expired".to_owned(),
        Some(s) => format!("expires in {s} s"),
    };
    format!(
        "{:<43} {:<10} drops {:>12}  {expiry}",
        item.cidr.to_string(),
        item.reason.as_str(),
        item.drops
    )
}

/// The full stats document (also what `--json` prints).
fn stats_json(maps: &GateMaps, now_ns: u64) -> Result<serde_json::Value, GateError> {
    let per_cpu = maps.counters_per_cpu()?;
    let mut totals = [0u64; N_REASONS as usize];
    for row in &per_cpu {
        for (t, v) in totals.iter_mut().zip(row) {
            *t += v;
        }
    }
    let mut entries = maps.entries()?;
    let n_v4 = entries.iter().filter(|b| b.cidr.addr().is_ipv4()).count();
    let n_entries = entries.len();
    entries.sort_by_key(|b| std::cmp::Reverse(b.drops));
    let top_blocked: Vec<_> = entries
        .iter()
        .filter(|b| b.drops > 0)
        .take(TOP_N)
        .map(|b| item_json(b, now_ns))
        .collect();
    let top_rate: Vec<_> = maps
        .rate_offenders(TOP_N)?
        .iter()
        .map(|r| json!({"addr": r.addr.to_string(), "drops": r.drops, "last_seen_s_ago": now_ns.saturating_sub(r.last_ns) / 1_000_000_000}))
        .collect();
    let reasons = |row: &[u64; N_REASONS as usize]| {
        let mut m = serde_json::Map::new();
        for r in Reason::ALL {
            m.insert(r.as_str().to_owned(), json!(row[r as usize]));
        }
        serde_json::Value::Object(m)
    };
    let params = maps.params()?;
    Ok(json!({
        "pin_dir": PIN_DIR,
        "counters": reasons(&totals),
        "per_cpu": per_cpu.iter().map(reasons).collect::<Vec<_>>(),
        "blocklist_entries": n_entries,
        "blocklist_v4": n_v4,
        "blocklist_v6": n_entries - n_v4,
        "top_blocked": top_blocked,
        "top_rate": top_rate,
        "rate_params": {
            "syn_interval_ns": params.syn_interval_ns, "syn_limit_ns": params.syn_limit_ns,
            "pkt_interval_ns": params.pkt_interval_ns, "pkt_limit_ns": params.pkt_limit_ns,
        },
    }))
}

fn stats_text(doc: &serde_json::Value) -> String {
    let mut out = String::new();
    let per_cpu = doc["per_cpu"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "eBPF gate maps at {PIN_DIR}");
    let _ = write!(out, "{:<16} {:>14}", "reason", "total");
    for cpu in 0..per_cpu.len() {
        let _ = write!(out, " {:>12}", format!("cpu{cpu}"));
    }
    out.push('\n');
    for r in Reason::ALL {
        let _ = write!(
            out,
            "{:<16} {:>14}",
            r.as_str(),
            doc["counters"][r.as_str()]
        );
        for row in &per_cpu {
            let _ = write!(out, " {:>12}", row[r.as_str()]);
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "blocklist entries: {} (IPv4 {}, IPv6 {})",
        doc["blocklist_entries"], doc["blocklist_v4"], doc["blocklist_v6"]
    );
    let _ = writeln!(out, "top offenders (blocklist drops):");
    match doc["top_blocked"].as_array() {
        Some(v) if !v.is_empty() => {
            for b in v {
                let _ = writeln!(
                    out,
                    "  {:<43} {:<10} drops {}",
                    b["cidr"].as_str().unwrap_or("?"),
                    b["reason"].as_str().unwrap_or("?"),
                    b["drops"]
                );
            }
        }
        _ => out.push_str("  none\n"),
    }
    let _ = writeln!(out, "top offenders (rate-limit drops):");
    match doc["top_rate"].as_array() {
        Some(v) if !v.is_empty() => {
            for r in v {
                let _ = writeln!(
                    out,
                    "  {:<43} drops {}",
                    r["addr"].as_str().unwrap_or("?"),
                    r["drops"]
                );
            }
        }
        _ => out.push_str("  none\n"),
    }
    out
}

/// `subzero stats [--json] [--watch SECS]`: counters per reason and CPU, blocklist size, top
/// offenders; with `--watch` it then prints per-second rates every `SECS` until interrupted.
pub fn cli_stats(json: bool, watch_s: Option<u64>) -> Result<(), GateError> {
    let maps = open()?;
    let doc = stats_json(&maps, boot_ns())?;
    if json {
        println!("{doc}");
    } else {
        print!("{}", stats_text(&doc));
    }
    let Some(watch_s) = watch_s else {
        return Ok(());
    };
    let watch_s = watch_s.clamp(1, MAX_WATCH_S);
    let mut prev = totals_of(&maps)?;
    loop {
        std::thread::sleep(Duration::from_secs(watch_s));
        let now = totals_of(&maps)?;
        let rates: Vec<(Reason, f64)> = Reason::ALL
            .iter()
            .map(|&r| {
                (
                    r,
                    now[r as usize].saturating_sub(prev[r as usize]) as f64 / watch_s as f64,
                )
            })
            .collect();
        if json {
            let mut m = serde_json::Map::new();
            for (r, v) in &rates {
                m.insert(format!("{}_per_s", r.as_str()), json!(v));
            }
            println!("{}", serde_json::Value::Object(m));
        } else {
            let line: Vec<String> = rates
                .iter()
                .map(|(r, v)| format!("{} {v:.0}/s", r.as_str()))
                .collect();
            println!("{}", line.join("  "));
        }
        prev = now;
    }
}

/// The gate's counter totals per reason (for `subzero stats --server`).
pub fn cli_gate_totals() -> Result<Vec<(&'static str, u64)>, GateError> {
    let totals = totals_of(&open()?)?;
    Ok(Reason::ALL
        .iter()
        .map(|&r| (r.as_str(), totals[r as usize]))
        .collect())
}

fn totals_of(maps: &GateMaps) -> Result<[u64; N_REASONS as usize], GateError> {
    let mut totals = [0u64; N_REASONS as usize];
    for row in maps.counters_per_cpu()? {
        for (t, v) in totals.iter_mut().zip(row) {
            *t += v;
        }
    }
    Ok(totals)
}

/// `subzero block add CIDR [--ttl-s N] [--reason R]`: no TTL (or 0) blocks until removed;
/// reason defaults to `manual`.
pub fn cli_block_add(cidr: &str, ttl_s: Option<u64>, reason: &str) -> Result<(), GateError> {
    let cidr: Cidr = cidr.parse()?;
    let reason = if reason.is_empty() {
        BlockReason::Manual
    } else {
        parse_block_reason(reason).ok_or_else(|| GateError::UnknownReason(reason.to_owned()))?
    };
    let mut maps = open()?;
    let now_ns = boot_ns();
    maps.insert(cidr, reason, until_ns(now_ns, ttl_s.unwrap_or(0)))?;
    match ttl_s {
        Some(t) if t > 0 => println!("blocked {cidr} ({}) for {t} s", reason.as_str()),
        _ => println!("blocked {cidr} ({}) until removed", reason.as_str()),
    }
    Ok(())
}

/// `subzero block del CIDR`: removes the exact entry; an error when it is not there.
pub fn cli_block_del(cidr: &str) -> Result<(), GateError> {
    let cidr: Cidr = cidr.parse()?;
    let mut maps = open()?;
    if maps.remove(cidr)? {
        println!("unblocked {cidr}");
        Ok(())
    } else {
        Err(GateError::NotBlocked { cidr })
    }
}

/// `subzero block list [--json]`.
pub fn cli_block_list(json: bool) -> Result<(), GateError> {
    let maps = open()?;
    let now_ns = boot_ns();
    let mut entries = maps.entries()?;
    entries.sort_by_key(|b| b.cidr);
    if json {
        let v: Vec<_> = entries.iter().map(|b| item_json(b, now_ns)).collect();
        println!("{}", serde_json::Value::Array(v));
    } else if entries.is_empty() {
        println!("blocklist is empty");
    } else {
        for b in &entries {
            println!("{}", item_line(b, now_ns));
        }
    }
    Ok(())
}
