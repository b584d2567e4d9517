//! The benchmark report: rows of measurements, target evaluation, and rendering to Markdown
//! and JSON. Pure: no I/O here, so all of it is unit-tested.

use std::fmt::Write as _;

use serde::Serialize;

use crate::loadgen::CeilingResult;
use crate::metrics::OpTiming;

/// Scenario names accepted by `--scenario`, in report order.
pub const SCENARIOS: [&str; 15] = [
    "auth-hit",
    "auth-cold",
    "batch",
    "token-issue",
    "revoke",
    "audit",
    "permission",
    "ratelimit",
    "monitor",
    "threat",
    "mixed",
    "xdp-flood",
    "scaling",
    "fleet",
    "unix",
];

/// Our server's name in rows.
pub const SUBZERO: &str = "subzero";
/// The ratelimit scenario's target: a check costs at most this many cache-hit authenticates.
pub const RATELIMIT_CHECK_MAX_RATIO: f64 = 1.2;
/// The monitor scenario's target: server CPU per cache-hit request with the monitor on, at
/// most this many times the CPU with it off (`[monitor] enabled = false`).
pub const MONITOR_MAX_RATIO: f64 = 1.03;
/// Load names of the monitor scenario's two rows.
pub const LOAD_MONITOR_ON: &str = "wrk saturation, monitor on";
pub const LOAD_MONITOR_OFF: &str = "wrk saturation, monitor off";
pub const HYPER_HELLO: &str = "peer-hyper-hello";
pub const HYPER_GATEWAY: &str = "peer-hyper-gateway";
pub const GLOMMIO_HELLO: &str = "peer-glommio-hello";
pub const URING_HELLO: &str = "peer-uring-hello";
pub const NGINX: &str = "nginx";

/// Load descriptions used as row keys.
pub const LOAD_SAT: &str = "wrk saturation";
pub const LOAD_PIPE: &str = "wrk pipelined x16";

/// Load names (row keys) of the fleet scenario's rows (`bench/fleet.rs`). The lease row for
/// rate limits across the fleet joins them as `ratelimit-fleet`.
pub const LOAD_FLEET_PROPAGATION: &str = "fleet-propagation";
pub const LOAD_FLEET_REVOKE: &str = "fleet-revoke";
/// A rate-limit check of a fleet-wide rule answered from the node's leases (default `lease_ms`).
pub const LOAD_FLEET_RATELIMIT: &str = "ratelimit-fleet";
/// The same check with `lease_ms = 0`: one Redis round trip per check.
pub const LOAD_FLEET_RATELIMIT_RTT: &str = "ratelimit-fleet-rtt";
/// Issue 13's target for a revocation's propagation between two nodes on loopback.
pub const FLEET_PROPAGATION_P99_MAX_US: f64 = 10_000.0;

/// The unix scenario (`bench/unix.rs`, issue 14): cache-hit authenticate over the Unix socket
/// beside loopback TCP on one server, and through nginx `auth_request` end to end.
pub const UNIX_SCENARIO: &str = "unix";
/// Issue 14's target: server CPU per request over the Unix socket ÷ the same over loopback TCP.
pub const UNIX_TCP_MAX_RATIO: f64 = 0.6;
/// Issue 14's target: (nginx + subzero over the Unix socket) ÷ (nginx + the tokio/hyper
/// gateway peer over TCP), CPU per authenticated API request.
pub const NGINX_UNIX_VS_GATEWAY_MAX_RATIO: f64 = 0.8;
/// The closed-loop (saturation) offer of the direct rows: `loadgen --closed-loop`.
pub const LOAD_CLOSED_LOOP: &str = "loadgen closed loop";
pub const TRANSPORT_TCP: &str = "loopback TCP";
pub const TRANSPORT_UNIX: &str = "Unix socket";
/// Server names of the end-to-end rows: one nginx worker and what answers its `auth_request`.
pub const E2E_NGINX_SUBZERO_TCP: &str = "nginx + subzero (TCP)";
pub const E2E_NGINX_SUBZERO_UNIX: &str = "nginx + subzero (Unix socket)";
pub const E2E_NGINX_GATEWAY_TCP: &str = "nginx + peer-hyper-gateway (TCP)";
/// The end-to-end rows' fixed offered rate (one core holds nginx and the auth server).
pub const E2E_RATE_RPS: u64 = 10_000;

/// A direct row's load name: the offer (closed loop or `load_rate`) and the transport.
pub fn unix_load(offer: &str, transport: &str) -> String {
    format!("{offer}, {transport}")
}

/// Events per `POST /v1/audit/events` in the audit saturation run.
pub const AUDIT_SAT_EVENTS_PER_BATCH: u64 = 100;
/// Events per batch in the audit fixed-rate run.
pub const AUDIT_RATE_EVENTS_PER_BATCH: u64 = 10;
/// Offered events per second in the audit fixed-rate run (the time-to-ack target).
pub const AUDIT_RATE_EVENTS_PER_S: u64 = 10_000;

pub fn load_rate(rate_rps: u64) -> String {
    format!("loadgen {rate_rps} req/s")
}

/// Whether a row holds a measurement or says plainly why it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Measured,
    /// The server does not have the endpoint yet.
    NotImplemented,
    /// The machine or the build cannot run it (e.g. too few cores, no gate).
    NotAvailable,
    /// It was attempted and failed; the note says how.
    Failed,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Measured => "measured",
            Status::NotImplemented => "NOT IMPLEMENTED in server",
            Status::NotAvailable => "NOT AVAILABLE",
            Status::Failed => "FAILED",
        }
    }
}

/// One server under one load in one scenario (medians over the repeated runs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub scenario: String,
    pub server: String,
    pub load: String,
    pub status: Status,
    pub requests_per_s: Option<f64>,
    pub cpu_us_per_req: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub n_errors: u64,
    pub n_non_2xx: u64,
    pub n_runs: u32,
    pub note: String,
}

impl Row {
    pub fn new(scenario: &str, server: &str, load: &str) -> Row {
        Row {
            scenario: scenario.to_string(),
            server: server.to_string(),
            load: load.to_string(),
            status: Status::Measured,
            requests_per_s: None,
            cpu_us_per_req: None,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            max_us: None,
            n_errors: 0,
            n_non_2xx: 0,
            n_runs: 0,
            note: String::new(),
        }
    }

    /// Share of one core the server was busy: req/s × CPU µs/req. Well below 100% at
    /// saturation means something else limited it: the load generator, or other work.
    pub fn server_busy_pct(&self) -> Option<f64> {
        Some(self.requests_per_s? * self.cpu_us_per_req? / 1e4)
    }

    pub fn unmeasured(scenario: &str, server: &str, load: &str, status: Status, note: &str) -> Row {
        Row {
            status,
            note: note.to_string(),
            ..Row::new(scenario, server, load)
        }
    }
}

/// The machine the run happened on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub n_cpus: usize,
    pub kernel: String,
    /// 1-minute load average when the run started: other work on the machine skews results.
    pub load_avg_1m: f64,
}

/// How a measured value is compared with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    AtMost,
    AtLeast,
    Below,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    NotMet,
    NotMeasured,
}

/// One target from the issue, with what was measured against it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub name: String,
    pub cmp: Cmp,
    pub threshold: f64,
    pub value: Option<f64>,
    pub verdict: Verdict,
    /// How the value was obtained, or why it could not be.
    pub detail: String,
}

fn target(name: &str, cmp: Cmp, threshold: f64, value: Option<f64>, detail: String) -> Target {
    Target {
        name: name.to_string(),
        cmp,
        threshold,
        value,
        verdict: evaluate(value, cmp, threshold),
        detail,
    }
}

pub fn evaluate(value: Option<f64>, cmp: Cmp, threshold: f64) -> Verdict {
    match value {
        None => Verdict::NotMeasured,
        Some(v) if !v.is_finite() => Verdict::NotMeasured,
        Some(v) => {
            let met = match cmp {
                Cmp::AtMost => v <= threshold,
                Cmp::AtLeast => v >= threshold,
                Cmp::Below => v < threshold,
            };
            if met {
                Verdict::Met
            } else {
                Verdict::NotMet
            }
        }
    }
}

/// `a / b` when both exist and `b` is positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Median of the values (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    } else {
        sorted[mid]
    })
}

/// Everything one `cargo xtask bench` run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub date_utc: String,
    pub machine: Machine,
    pub pinning: String,
    pub quick: bool,
    pub n_runs: u32,
    pub run_s: u32,
    pub rows: Vec<Row>,
    pub ceilings: Vec<CeilingResult>,
    /// subzero's own per-operation server time (from `/metrics`).
    pub server_op_timings: Vec<OpTiming>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(&self, scenario: &str, server: &str, load: &str) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.scenario == scenario
                && r.server == server
                && r.load == load
                && r.status == Status::Measured
        })
    }

    fn metric(
        &self,
        scenario: &str,
        server: &str,
        load: &str,
        f: impl Fn(&Row) -> Option<f64>,
    ) -> Option<f64> {
        self.row(scenario, server, load).and_then(f)
    }

    pub fn ceiling(&self, mode: &str) -> Option<f64> {
        self.ceilings
            .iter()
            .find(|c| c.mode == mode)
            .map(|c| c.ops_per_s)
    }

    /// Fills `targets` from the rows and ceilings (the targets named in issue 4).
    pub fn evaluate_targets(&mut self, rates_rps: &[u64], scaling_note: &str) {
        let mut targets = Vec::new();
        self.hit_targets(rates_rps, &mut targets);
        self.crypto_targets(scaling_note, &mut targets);
        self.audit_targets(&mut targets);
        self.ratelimit_targets(&mut targets);
        self.monitor_targets(&mut targets);
        self.fleet_targets(&mut targets);
        self.unix_targets(rates_rps, &mut targets);
        self.targets = targets;
    }

    /// Issue 14: CPU per cache-hit authenticate over the Unix socket against loopback TCP (same
    /// server, same run), and nginx + subzero over the Unix socket against nginx + the
    /// tokio/hyper gateway, per authenticated API request.
    fn unix_targets(&self, rates_rps: &[u64], targets: &mut Vec<Target>) {
        let cpu = |server: &str, load: &str| {
            self.metric(UNIX_SCENARIO, server, load, |r| r.cpu_us_per_req)
        };
        let offers = std::iter::once(LOAD_CLOSED_LOOP.to_string())
            .chain(rates_rps.iter().map(|&r| load_rate(r)));
        for offer in offers {
            let tcp = cpu(SUBZERO, &unix_load(&offer, TRANSPORT_TCP));
            let unix = cpu(SUBZERO, &unix_load(&offer, TRANSPORT_UNIX));
            targets.push(target(
                &format!(
                    "Unix socket ÷ loopback TCP, server CPU per cache-hit authenticate ({offer})"
                ),
                Cmp::AtMost,
                UNIX_TCP_MAX_RATIO,
                ratio(unix, tcp),
                format!(
                    "one shard listening on both; Unix {} µs, TCP {} µs",
                    fmt_num(unix, 2),
                    fmt_num(tcp, 2)
                ),
            ));
        }
        for load in [LOAD_SAT.to_string(), load_rate(E2E_RATE_RPS)] {
            let via_tcp = cpu(E2E_NGINX_SUBZERO_TCP, &load);
            let via_unix = cpu(E2E_NGINX_SUBZERO_UNIX, &load);
            let gateway = cpu(E2E_NGINX_GATEWAY_TCP, &load);
            targets.push(target(
                &format!("nginx auth_request: (nginx + subzero, Unix socket) ÷ (nginx + hyper gateway, TCP), CPU per API request ({load})"),
                Cmp::AtMost,
                NGINX_UNIX_VS_GATEWAY_MAX_RATIO,
                ratio(via_unix, gateway),
                format!(
                    "nginx + subzero Unix {} µs, nginx + subzero TCP {} µs (Unix ÷ TCP {}), nginx + gateway {} µs",
                    fmt_num(via_unix, 2),
                    fmt_num(via_tcp, 2),
                    fmt_ratio(ratio(via_unix, via_tcp)),
                    fmt_num(gateway, 2)
                ),
            ));
        }
    }

    /// Issue 13: a revocation acknowledged by node A is refused by node B within the p99.
    fn fleet_targets(&self, targets: &mut Vec<Target>) {
        let row = self.row("fleet", SUBZERO, LOAD_FLEET_PROPAGATION);
        targets.push(target(
            "fleet revocation propagation p99 µs (node A's 200 → node B's 401, loopback)",
            Cmp::AtMost,
            FLEET_PROPAGATION_P99_MAX_US,
            row.and_then(|r| r.p99_us),
            format!(
                "one redis-server, appendfsync always; p50 {} µs, max {} µs",
                fmt_num(row.and_then(|r| r.p50_us), 0),
                fmt_num(row.and_then(|r| r.max_us), 0)
            ),
        ));
    }

    /// Issue 10's audit targets: durable events/s on one shard, p99 time-to-ack at 10k/s.
    fn audit_targets(&self, targets: &mut Vec<Target>) {
        let events_per_s = self
            .metric("audit", SUBZERO, LOAD_SAT, |r| r.requests_per_s)
            .map(|rps| rps * AUDIT_SAT_EVENTS_PER_BATCH as f64);
        targets.push(target(
            "audit durable events/s (one shard)",
            Cmp::AtLeast,
            50_000.0,
            events_per_s,
            format!(
                "wrk saturation, batches of {AUDIT_SAT_EVENTS_PER_BATCH} events; 200 only after the group commit's fdatasync"
            ),
        ));
        let rate_load = load_rate(AUDIT_RATE_EVENTS_PER_S / AUDIT_RATE_EVENTS_PER_BATCH);
        targets.push(target(
            "audit p99 time-to-ack µs at 10,000 events/s",
            Cmp::AtMost,
            10_000.0,
            self.metric("audit", SUBZERO, &rate_load, |r| r.p99_us),
            format!(
                "loadgen open loop, batches of {AUDIT_RATE_EVENTS_PER_BATCH} events; request sent to 200 after fdatasync"
            ),
        ));
    }

    fn hit_targets(&self, rates_rps: &[u64], targets: &mut Vec<Target>) {
        let cpu = |r: &Row| r.cpu_us_per_req;
        let rps = |r: &Row| r.requests_per_s;
        let mut push =
            |name: &str, cmp: Cmp, threshold: f64, value: Option<f64>, detail: String| {
                targets.push(target(name, cmp, threshold, value, detail));
            };
        let hit = "auth-hit";
        for (peer, threshold) in [(HYPER_HELLO, 1.0), (URING_HELLO, 1.25)] {
            push(
                &format!("auth-hit CPU/req ÷ {peer} CPU/req (saturation, one shard)"),
                Cmp::AtMost,
                threshold,
                ratio(
                    self.metric(hit, SUBZERO, LOAD_SAT, cpu),
                    self.metric(hit, peer, LOAD_SAT, cpu),
                ),
                "server CPU µs per request, wrk saturation".to_string(),
            );
        }
        for (peer, threshold) in [(HYPER_HELLO, 1.0), (NGINX, 0.9)] {
            push(
                &format!("auth-hit req/s ÷ {peer} req/s (one shard)"),
                Cmp::AtLeast,
                threshold,
                ratio(self.metric(hit, SUBZERO, LOAD_SAT, rps), self.metric(hit, peer, LOAD_SAT, rps)),
                format!(
                    "wrk saturation; server busy: subzero {}, {peer} {} (below ~90%, something other than the server's own CPU limited it: the load generator, or other work on a busy machine)",
                    fmt_pct(self.row(hit, SUBZERO, LOAD_SAT).and_then(Row::server_busy_pct)),
                    fmt_pct(self.row(hit, peer, LOAD_SAT).and_then(Row::server_busy_pct)),
                ),
            );
        }
        push(
            "auth-hit pipelined x16 req/s on one core",
            Cmp::AtLeast,
            1e6,
            self.metric(hit, SUBZERO, LOAD_PIPE, rps),
            match self.row(hit, SUBZERO, LOAD_PIPE) {
                Some(row) => format!(
                    "wrk, 16 requests per write; server busy {}; one-core capacity at the measured CPU/req = {} req/s",
                    fmt_pct(row.server_busy_pct()),
                    fmt_num(row.cpu_us_per_req.filter(|&c| c > 0.0).map(|c| 1e6 / c), 0)
                ),
                None => "wrk, 16 requests per write".to_string(),
            },
        );
        // p99 against the hyper gateway at the highest offered rate both completed.
        // p99 is only comparable where both servers kept up with the offered rate.
        let p99_pair = rates_rps.iter().rev().find_map(|&rate| {
            let load = load_rate(rate);
            let kept_up = |r: &Row| {
                r.requests_per_s
                    .is_some_and(|rps| rps >= rate as f64 * SUSTAINED_FRACTION_MIN)
            };
            let ours = self
                .row(hit, SUBZERO, &load)
                .filter(|r| kept_up(r))?
                .p99_us?;
            let theirs = self
                .row(hit, HYPER_GATEWAY, &load)
                .filter(|r| kept_up(r))?
                .p99_us?;
            Some((rate, ours, theirs))
        });
        push(
            "auth-hit p99 ÷ peer-hyper-gateway p99 at the same offered rate",
            Cmp::Below,
            1.0,
            p99_pair.and_then(|(_, ours, theirs)| ratio(Some(ours), Some(theirs))),
            match p99_pair {
                Some((rate, ours, theirs)) => {
                    format!("loadgen at {rate} req/s: {ours:.0} µs vs {theirs:.0} µs")
                }
                None => "no offered rate that both servers sustained (≥ 95% achieved)".to_string(),
            },
        );
    }

    /// The monitor's overhead: cache-hit CPU per request on vs off, same run.
    fn monitor_targets(&self, targets: &mut Vec<Target>) {
        let cpu = |r: &Row| r.cpu_us_per_req;
        let on = self.metric("monitor", SUBZERO, LOAD_MONITOR_ON, cpu);
        let off = self.metric("monitor", SUBZERO, LOAD_MONITOR_OFF, cpu);
        targets.push(target(
            "monitor on ÷ off, server CPU µs per cache-hit request",
            Cmp::AtMost,
            MONITOR_MAX_RATIO,
            ratio(on, off),
            format!(
                "wrk saturation, one shard, same run: on {} µs, off {} µs (histograms, perf counters, detector)",
                fmt_num(on, 2),
                fmt_num(off, 2)
            ),
        ));
    }

    /// A rate-limit check against a cache-hit authenticate on the same server in the same run.
    fn ratelimit_targets(&self, targets: &mut Vec<Target>) {
        let cpu = |r: &Row| r.cpu_us_per_req;
        for (shards, what) in [
            ("1 shard", "all local"),
            ("2 shards", "about half cross-shard"),
        ] {
            let check = self.metric("ratelimit", SUBZERO, &format!("check, {shards}"), cpu);
            let base = self.metric(
                "ratelimit",
                SUBZERO,
                &format!("auth-hit baseline, {shards}"),
                cpu,
            );
            targets.push(target(
                &format!("ratelimit check CPU/req ÷ auth-hit CPU/req ({shards}, {what})"),
                Cmp::AtMost,
                RATELIMIT_CHECK_MAX_RATIO,
                ratio(check, base),
                format!(
                    "server CPU µs per request, wrk saturation, same server and run: check {} µs, auth-hit {} µs",
                    fmt_num(check, 2),
                    fmt_num(base, 2)
                ),
            ));
        }
    }

    fn crypto_targets(&self, scaling_note: &str, targets: &mut Vec<Target>) {
        let rps = |r: &Row| r.requests_per_s;
        let mut push =
            |name: &str, cmp: Cmp, threshold: f64, value: Option<f64>, detail: String| {
                targets.push(target(name, cmp, threshold, value, detail));
            };
        let verify_mode = if self.ceiling("verify-strict").is_some() {
            "verify-strict"
        } else {
            "verify"
        };
        let verify_rate = self.ceiling(verify_mode);
        push(
            "auth-cold req/s ÷ raw verify loop ops/s (one core)",
            Cmp::AtLeast,
            0.85,
            ratio(
                self.metric("auth-cold", SUBZERO, LOAD_SAT, rps),
                verify_rate,
            ),
            format!("crypto-ceiling --mode {verify_mode}"),
        );
        let batch_tokens_per_s = self
            .metric("batch", SUBZERO, LOAD_SAT, rps)
            .map(|batches_per_s| batches_per_s * BATCH_TOKENS as f64);
        push(
            "batch tokens/s ÷ single-verify ops/s (one core)",
            Cmp::AtLeast,
            1.8,
            ratio(batch_tokens_per_s, verify_rate),
            format!("POST /v1/authenticate/batch of {BATCH_TOKENS}, one connection; crypto-ceiling --mode {verify_mode}"),
        );
        push(
            &format!("batch of {BATCH_TOKENS} tokens, ms per batch (one core)"),
            Cmp::Below,
            20.0,
            self.metric("batch", SUBZERO, LOAD_SAT, rps)
                .and_then(|r| (r > 0.0).then(|| 1e3 / r)),
            "one connection, back to back: wall time per batch".to_string(),
        );
        for (op, name, threshold) in [
            (
                "token_sign",
                "token-issue sign: server µs per request (p50)",
                25.0,
            ),
            (
                "token_pool_hit",
                "token-issue pool hit: server µs per request (p50)",
                1.0,
            ),
        ] {
            let timing = self
                .server_op_timings
                .iter()
                .find(|t| t.op == op && t.count > 0);
            push(
                name,
                Cmp::AtMost,
                threshold,
                timing.map(|t| t.p50_us),
                match timing {
                    Some(t) => format!(
                        "subzero's own histogram (/metrics op=\"{op}\"): p50 {:.2} µs, p99 {:.2} µs over {} requests",
                        t.p50_us, t.p99_us, t.count
                    ),
                    None => format!("no op=\"{op}\" requests in /metrics during the token-issue runs"),
                },
            );
        }
        push(
            "scaling: N shards req/s ÷ (N × one shard req/s)",
            Cmp::AtLeast,
            0.9,
            self.scaling_efficiency(),
            scaling_note.to_string(),
        );
    }

    /// Throughput at the most shards measured, over N × one shard.
    fn scaling_efficiency(&self) -> Option<f64> {
        let mut best: Option<(u32, f64)> = None;
        let mut one = None;
        for row in self
            .rows
            .iter()
            .filter(|r| r.scenario == "scaling" && r.status == Status::Measured)
        {
            let n_shards: u32 = row.load.split_whitespace().next()?.parse().ok()?;
            let rps = row.requests_per_s?;
            if n_shards == 1 {
                one = Some(rps);
            }
            if n_shards > 1 && best.is_none_or(|(n, _)| n_shards > n) {
                best = Some((n_shards, rps));
            }
        }
        let (n, rps) = best?;
        ratio(Some(rps), one.map(|one| one * f64::from(n)))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# subzero benchmark report\n");
        let _ = writeln!(md, "- Date (UTC): {}", self.date_utc);
        let _ = writeln!(
            md,
            "- Machine: {} · {} CPUs · kernel {}",
            self.machine.cpu_model, self.machine.n_cpus, self.machine.kernel
        );
        let busy = if self.machine.load_avg_1m > 0.5 {
            " — **the machine was busy: other work skews these figures; rerun on an idle machine**"
        } else {
            " (idle)"
        };
        let _ = writeln!(
            md,
            "- Load average (1 min) at start: {:.2}{busy}",
            self.machine.load_avg_1m
        );
        let _ = writeln!(md, "- Pinning: {}", self.pinning);
        let _ = writeln!(
            md,
            "- Runs: {} ({} run(s) of {} s per measurement, medians reported, after a warm-up)",
            if self.quick { "quick" } else { "full" },
            self.n_runs,
            self.run_s
        );
        let _ = writeln!(
            md,
            "- CPU µs/req = server (utime+stime from /proc/PID/stat, end − start) ÷ responses in that window. \
             Latency percentiles from `loadgen` rows are open-loop (no coordinated omission); wrk rows give \
             wrk's closed-loop p50/p99/max.\n"
        );
        self.render_targets(&mut md);
        for scenario in SCENARIOS {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.scenario == scenario)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(md, "## {scenario}\n");
            let _ = writeln!(
                md,
                "| server | load | req/s | CPU µs/req | server busy | p50 µs | p99 µs | p99.9 µs | max µs | errors | non-2xx | status / note |"
            );
            let _ = writeln!(
                md,
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for row in &rows {
                let status = if row.status == Status::Measured {
                    row.note.clone()
                } else {
                    format!("**{}**: {}", row.status.label(), row.note)
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.server,
                    row.load,
                    fmt_num(row.requests_per_s, 0),
                    fmt_num(row.cpu_us_per_req, 2),
                    fmt_pct(row.server_busy_pct()),
                    fmt_num(row.p50_us, 0),
                    fmt_num(row.p99_us, 0),
                    fmt_num(row.p999_us, 0),
                    fmt_num(row.max_us, 0),
                    row.n_errors,
                    row.n_non_2xx,
                    status
                );
            }
            self.render_ratios(&mut md, scenario);
            md.push('\n');
        }
        self.render_tail(&mut md);
        md
    }

    /// Crypto ceiling, server op timings and notes.
    fn render_tail(&self, md: &mut String) {
        if !self.ceilings.is_empty() {
            let _ = writeln!(md, "## crypto ceiling (raw ed25519-dalek, one core)\n");
            let _ = writeln!(md, "| mode | ops/s | µs/op |\n|---|---:|---:|");
            for c in &self.ceilings {
                let _ = writeln!(
                    md,
                    "| {} | {:.0} | {:.2} |",
                    c.mode, c.ops_per_s, c.us_per_op
                );
            }
            md.push('\n');
        }
        if !self.server_op_timings.is_empty() {
            let _ = writeln!(
                md,
                "## subzero server time per operation (its own histograms, /metrics)\n"
            );
            let _ = writeln!(
                md,
                "| op | p50 µs | p99 µs | requests |\n|---|---:|---:|---:|"
            );
            for t in &self.server_op_timings {
                let _ = writeln!(
                    md,
                    "| {} | {:.2} | {:.2} | {} |",
                    t.op, t.p50_us, t.p99_us, t.count
                );
            }
            md.push('\n');
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "## Notes\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
    }

    fn render_targets(&self, md: &mut String) {
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(
            md,
            "| target | measured | wanted | verdict | how |\n|---|---:|---|---|---|"
        );
        for t in &self.targets {
            let wanted = match t.cmp {
                Cmp::AtMost => format!("≤ {}", t.threshold),
                Cmp::AtLeast => format!("≥ {}", t.threshold),
                Cmp::Below => format!("< {}", t.threshold),
            };
            let verdict = match t.verdict {
                Verdict::Met => "met",
                Verdict::NotMet => "**NOT met**",
                Verdict::NotMeasured => "**not measured**",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                t.name,
                fmt_num(t.value, 3),
                wanted,
                verdict,
                t.detail
            );
        }
        let n_met = self
            .targets
            .iter()
            .filter(|t| t.verdict == Verdict::Met)
            .count();
        let n_not_met = self
            .targets
            .iter()
            .filter(|t| t.verdict == Verdict::NotMet)
            .count();
        let n_unmeasured = self.targets.len() - n_met - n_not_met;
        let _ = writeln!(
            md,
            "\nIn plain words: {n_met} of {} targets met, {n_not_met} NOT met, {n_unmeasured} not measured in this run.",
            self.targets.len()
        );
        for t in self.targets.iter().filter(|t| t.verdict != Verdict::Met) {
            let what = if t.verdict == Verdict::NotMet {
                "NOT met"
            } else {
                "not measured"
            };
            let _ = writeln!(md, "- {what}: {} ({})", t.name, t.detail);
        }
        md.push('\n');
    }

    /// For each peer row with the same load as a subzero row: subzero ÷ peer.
    fn render_ratios(&self, md: &mut String, scenario: &str) {
        let mut lines = Vec::new();
        for ours in self.rows.iter().filter(|r| {
            r.scenario == scenario && r.server == SUBZERO && r.status == Status::Measured
        }) {
            for peer in self.rows.iter().filter(|r| {
                r.scenario == scenario
                    && r.server != SUBZERO
                    && r.load == ours.load
                    && r.status == Status::Measured
            }) {
                let cpu = ratio(ours.cpu_us_per_req, peer.cpu_us_per_req);
                let rps = ratio(ours.requests_per_s, peer.requests_per_s);
                let p99 = ratio(ours.p99_us, peer.p99_us);
                lines.push(format!(
                    "| {} | {} | {} | {} | {} |",
                    peer.server,
                    ours.load,
                    fmt_ratio(cpu),
                    fmt_ratio(rps),
                    fmt_ratio(p99)
                ));
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(
                md,
                "\nRatios, subzero ÷ peer (CPU/req: lower is better; req/s: higher is better):\n"
            );
            let _ = writeln!(
                md,
                "| peer | load | CPU/req | req/s | p99 |\n|---|---|---:|---:|---:|"
            );
            for line in lines {
                let _ = writeln!(md, "{line}");
            }
        }
    }
}

/// A fixed-rate run "kept up" when it achieved at least this fraction of the offered rate.
pub const SUSTAINED_FRACTION_MIN: f64 = 0.95;

/// Tokens per request in the batch scenario.
pub const BATCH_TOKENS: usize = 1000;

fn fmt_num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".to_string(),
    }
}

fn fmt_pct(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.0}%"),
        _ => "–".to_string(),
    }
}

fn fmt_ratio(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.2}×"),
        _ => "–".to_string(),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (civil calendar, proleptic Gregorian).
pub fn format_utc(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Days-to-civil (Howard Hinnant's algorithm, re-derived): shift the epoch to 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(scenario: &str, server: &str, load: &str, rps: f64, cpu: f64, p99: f64) -> Row {
        Row {
            requests_per_s: Some(rps),
            cpu_us_per_req: Some(cpu),
            p99_us: Some(p99),
            n_runs: 1,
            ..Row::new(scenario, server, load)
        }
    }

    fn sample() -> Report {
        let rate = load_rate(50_000);
        Report {
            date_utc: "2026-01-01T00:00:00Z".into(),
            machine: Machine {
                cpu_model: "Test CPU".into(),
                n_cpus: 2,
                kernel: "6.18".into(),
                load_avg_1m: 3.0,
            },
            pinning: "server CPU 1, load CPU 0".into(),
            quick: true,
            n_runs: 1,
            run_s: 2,
            rows: vec![
                measured("auth-hit", SUBZERO, LOAD_SAT, 130_000.0, 5.0, 900.0),
                measured("auth-hit", HYPER_HELLO, LOAD_SAT, 120_000.0, 7.0, 1000.0),
                measured("auth-hit", URING_HELLO, LOAD_SAT, 130_000.0, 5.5, 800.0),
                measured("auth-hit", NGINX, LOAD_SAT, 150_000.0, 6.0, 700.0),
                measured("auth-hit", SUBZERO, LOAD_PIPE, 900_000.0, 1.0, 0.0),
                measured("auth-hit", SUBZERO, &rate, 50_000.0, 8.0, 100.0),
                measured("auth-hit", HYPER_GATEWAY, &rate, 50_000.0, 12.0, 400.0),
                // At 90k the gateway fell behind: that rate must not be compared.
                measured(
                    "auth-hit",
                    SUBZERO,
                    &load_rate(90_000),
                    89_000.0,
                    8.0,
                    100.0,
                ),
                measured(
                    "auth-hit",
                    HYPER_GATEWAY,
                    &load_rate(90_000),
                    60_000.0,
                    12.0,
                    9e6,
                ),
                measured("auth-cold", SUBZERO, LOAD_SAT, 22_000.0, 45.0, 5000.0),
                measured("batch", SUBZERO, LOAD_SAT, 60.0, 16_000.0, 17_000.0),
                Row::unmeasured(
                    "permission",
                    SUBZERO,
                    LOAD_SAT,
                    Status::NotImplemented,
                    "endpoint answers 404",
                ),
                measured("scaling", SUBZERO, "1 shard", 100.0, 5.0, 1.0),
                measured("scaling", SUBZERO, "2 shards", 190.0, 5.0, 1.0),
            ],
            server_op_timings: vec![
                OpTiming {
                    op: "token_sign".into(),
                    p50_us: 21.0,
                    p99_us: 30.0,
                    count: 100,
                },
                OpTiming {
                    op: "token_pool_hit".into(),
                    p50_us: 1.5,
                    p99_us: 3.0,
                    count: 1000,
                },
            ],
            ceilings: vec![CeilingResult {
                mode: "verify-strict".into(),
                ops_per_s: 25_000.0,
                us_per_op: 40.0,
            }],
            targets: vec![],
            notes: vec!["a note".into()],
        }
    }

    fn target<'a>(report: &'a Report, prefix: &str) -> &'a Target {
        report
            .targets
            .iter()
            .find(|t| t.name.starts_with(prefix))
            .unwrap()
    }

    #[test]
    fn evaluates_targets_from_rows() {
        let mut report = sample();
        report.evaluate_targets(&[20_000, 50_000, 90_000], "two cores");
        let t = target(&report, "auth-hit CPU/req ÷ peer-hyper-hello");
        assert!((t.value.unwrap() - 5.0 / 7.0).abs() < 1e-9);
        assert_eq!(t.verdict, Verdict::Met);
        // 5.0 / 5.5 = 0.91 ≤ 1.25.
        assert_eq!(
            target(&report, "auth-hit CPU/req ÷ peer-uring-hello").verdict,
            Verdict::Met
        );
        // 130k / 150k = 0.867 < 0.9.
        assert_eq!(
            target(&report, "auth-hit req/s ÷ nginx").verdict,
            Verdict::NotMet
        );
        assert_eq!(
            target(&report, "auth-hit pipelined").verdict,
            Verdict::NotMet
        );
        let p99 = target(&report, "auth-hit p99");
        assert!((p99.value.unwrap() - 0.25).abs() < 1e-9);
        assert!(p99.detail.contains("50000"));
        // 22k / 25k = 0.88 ≥ 0.85.
        assert_eq!(target(&report, "auth-cold").verdict, Verdict::Met);
        // 60 × 1000 / 25k = 2.4 ≥ 1.8; 1000/60 = 16.7 ms < 20.
        assert_eq!(target(&report, "batch tokens/s").verdict, Verdict::Met);
        assert_eq!(target(&report, "batch of 1000").verdict, Verdict::Met);
        assert_eq!(target(&report, "token-issue sign").verdict, Verdict::Met);
        // 1.5 µs p50 > 1 µs.
        let pool = target(&report, "token-issue pool hit");
        assert_eq!(pool.verdict, Verdict::NotMet);
        assert!(pool.detail.contains("over 1000 requests"));
        let scaling = target(&report, "scaling");
        assert!((scaling.value.unwrap() - 0.95).abs() < 1e-9);
        assert_eq!(scaling.verdict, Verdict::Met);
    }

    #[test]
    fn fleet_propagation_row_feeds_its_target_and_its_section() {
        let mut report = sample();
        report.evaluate_targets(&[20_000], "two cores");
        assert_eq!(
            target(&report, "fleet revocation propagation").verdict,
            Verdict::NotMeasured
        );
        let mut row = Row::new("fleet", SUBZERO, LOAD_FLEET_PROPAGATION);
        row.p50_us = Some(900.0);
        row.p99_us = Some(12_000.0);
        row.max_us = Some(15_000.0);
        report.rows.push(row.clone());
        report.evaluate_targets(&[20_000], "two cores");
        let t = target(&report, "fleet revocation propagation");
        assert_eq!(t.verdict, Verdict::NotMet);
        assert!(
            t.detail.contains("p50 900 µs, max 15000 µs"),
            "{}",
            t.detail
        );
        row.p99_us = Some(4_000.0);
        report.rows.retain(|r| r.scenario != "fleet");
        report.rows.push(row);
        report.evaluate_targets(&[20_000], "two cores");
        assert_eq!(
            target(&report, "fleet revocation propagation").verdict,
            Verdict::Met
        );
        let md = report.to_markdown();
        assert!(md.contains("## fleet\n"));
        assert!(md.contains("| subzero | fleet-propagation |"), "{md}");
    }

    #[test]
    fn unix_rows_feed_the_ratio_targets_with_their_verdicts() {
        let mut report = sample();
        report.evaluate_targets(&[20_000], "two cores");
        let direct = "Unix socket ÷ loopback TCP, server CPU per cache-hit authenticate";
        let sat = format!("{direct} ({LOAD_CLOSED_LOOP})");
        let at_20k = format!("{direct} ({})", load_rate(20_000));
        let e2e =
            "nginx auth_request: (nginx + subzero, Unix socket) ÷ (nginx + hyper gateway, TCP)";
        let e2e_sat = format!("{e2e}, CPU per API request ({LOAD_SAT})");
        assert_eq!(target(&report, &sat).verdict, Verdict::NotMeasured);
        let direct_row = |offer: &str, transport: &str, cpu: f64| {
            measured(
                UNIX_SCENARIO,
                SUBZERO,
                &unix_load(offer, transport),
                1e4,
                cpu,
                1.0,
            )
        };
        report.rows.extend([
            direct_row(LOAD_CLOSED_LOOP, TRANSPORT_TCP, 10.0),
            direct_row(LOAD_CLOSED_LOOP, TRANSPORT_UNIX, 5.0),
            direct_row(&load_rate(20_000), TRANSPORT_TCP, 10.0),
            direct_row(&load_rate(20_000), TRANSPORT_UNIX, 7.0),
            measured(
                UNIX_SCENARIO,
                E2E_NGINX_SUBZERO_TCP,
                LOAD_SAT,
                1e4,
                40.0,
                1.0,
            ),
            measured(
                UNIX_SCENARIO,
                E2E_NGINX_SUBZERO_UNIX,
                LOAD_SAT,
                1e4,
                30.0,
                1.0,
            ),
            measured(
                UNIX_SCENARIO,
                E2E_NGINX_GATEWAY_TCP,
                LOAD_SAT,
                1e4,
                50.0,
                1.0,
            ),
        ]);
        report.evaluate_targets(&[20_000], "two cores");
        let t = target(&report, &sat);
        assert_eq!((t.value, t.verdict), (Some(0.5), Verdict::Met));
        assert!(
            t.detail.contains("Unix 5.00 µs, TCP 10.00 µs"),
            "{}",
            t.detail
        );
        let t = target(&report, &at_20k);
        assert!((t.value.unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(t.verdict, Verdict::NotMet);
        let t = target(&report, &e2e_sat);
        assert!((t.value.unwrap() - 0.6).abs() < 1e-9);
        assert_eq!(t.verdict, Verdict::Met);
        assert!(t.detail.contains("(Unix ÷ TCP 0.75×)"), "{}", t.detail);
        let e2e_rate = format!("{e2e}, CPU per API request ({})", load_rate(E2E_RATE_RPS));
        assert_eq!(target(&report, &e2e_rate).verdict, Verdict::NotMeasured);
        // A FAILED row is not a measurement.
        for row in report
            .rows
            .iter_mut()
            .filter(|r| r.server == E2E_NGINX_GATEWAY_TCP)
        {
            row.status = Status::Failed;
        }
        report.evaluate_targets(&[20_000], "two cores");
        assert_eq!(target(&report, &e2e_sat).verdict, Verdict::NotMeasured);
        assert!(report.to_markdown().contains("## unix\n"));
    }

    #[test]
    fn evaluate_and_helpers() {
        assert_eq!(evaluate(Some(1.0), Cmp::AtMost, 1.0), Verdict::Met);
        assert_eq!(evaluate(Some(1.0), Cmp::Below, 1.0), Verdict::NotMet);
        assert_eq!(evaluate(Some(0.9), Cmp::AtLeast, 0.9), Verdict::Met);
        assert_eq!(evaluate(None, Cmp::AtLeast, 0.9), Verdict::NotMeasured);
        assert_eq!(
            evaluate(Some(f64::NAN), Cmp::AtLeast, 0.9),
            Verdict::NotMeasured
        );
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn renders_markdown_with_targets_ratios_and_plain_gaps() {
        let mut report = sample();
        report.evaluate_targets(&[20_000, 50_000], "two cores");
        let md = report.to_markdown();
        assert!(md.contains("## Targets"));
        assert!(md.contains("the machine was busy"));
        assert!(md.contains("Test CPU · 2 CPUs · kernel 6.18"));
        // 130k req/s × 5 µs = 65% of a core.
        assert!(md.contains("| subzero | wrk saturation | 130000 | 5.00 | 65% |"));
        let pipe = target(&report, "auth-hit pipelined");
        assert!(pipe.detail.contains("server busy 90%"), "{}", pipe.detail);
        assert!(pipe.detail.contains("= 1000000 req/s"), "{}", pipe.detail);
        assert!(md.contains("| peer-hyper-hello | wrk saturation | 0.71× | 1.08× |"));
        assert!(md.contains("**NOT IMPLEMENTED in server**: endpoint answers 404"));
        assert!(md.contains("- NOT met: auth-hit req/s ÷ nginx req/s"));
        assert!(md.contains("| verify-strict | 25000 | 40.00 |"));
        assert!(md.contains("| token_pool_hit | 1.50 | 3.00 | 1000 |"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["rows"][11]["status"], "not_implemented");
        assert_eq!(json["targets"][0]["verdict"], "met");
    }

    #[test]
    fn formats_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
