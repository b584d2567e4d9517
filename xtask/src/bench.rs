//! `cargo xtask bench`: builds release binaries, runs subzero and its peers pinned to cores
//! under wrk and the fixed-rate `loadgen`, measures server CPU per request, and writes
//! `target/bench/report.{md,json,svg}`.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::bootstrap::Apt;
use crate::loadgen::{last_json_line, CeilingResult, LoadgenResult};
use crate::metrics;
use crate::netns;
use crate::procstat;
use crate::report::{
    self, load_rate, median, Machine, Report, Row, Status, GLOMMIO_HELLO, HYPER_GATEWAY,
    HYPER_HELLO, LOAD_MONITOR_OFF, LOAD_MONITOR_ON, LOAD_PIPE, LOAD_SAT, NGINX, SCENARIOS, SUBZERO,
    URING_HELLO,
};
use crate::svg;
use crate::util::{self, step, ChildGuard};
use crate::wrk::{self, MixEntry};

mod fleet;
mod threat;
mod unix;

/// Peer binaries built from `subzero-benches`.
const PEER_BINS: [&str; 6] = [
    HYPER_HELLO,
    HYPER_GATEWAY,
    GLOMMIO_HELLO,
    URING_HELLO,
    "crypto-ceiling",
    "loadgen",
];
const CLIENT_ID: &str = "bench";
/// Server configs written under target/bench: the default one and a tiny-cache one for cold verify.
const CONFIG: &str = "subzero.toml";
const CONFIG_COLD: &str = "subzero-cold.toml";
/// The default config with `[monitor] enabled = false` (the monitor scenario's baseline).
const CONFIG_MONITOR_OFF: &str = "subzero-monitor-off.toml";
/// Unique tokens for auth-cold (rotating) and the batch body.
const N_TOKENS: usize = report::BATCH_TOKENS;
/// The smallest verified-token cache the server accepts; far fewer than the rotating tokens.
const COLD_CACHE_ENTRIES: usize = 16;
const CLIENT_SECRET: &str = "bench-secret-7f3a9c2e41d8b605";
/// The admin bearer token the revoke scenario uses, and its file beside the config.
const ADMIN_TOKEN: &str = "bench-admin-token-1c9e5b7d2f40a863";
const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The permission scenario's schema: nested groups and folders inheriting from parents.
const PERMISSION_SCHEMA_FILE: &str = "schema.zed";
const PERMISSION_SCHEMA: &str = "definition user {}
definition group {
    relation member: user | group#member
}
definition folder {
    relation parent: folder
    relation viewer: user | group#member
    permission view = viewer + parent->view
}
definition doc {
    relation parent: folder
    relation viewer: user | group#member
    permission view = viewer + parent->view
}
";
/// Users, groups, folders and documents of the generated permission graph.
const N_PERM_USERS: usize = 100_000;
const N_PERM_GROUPS: usize = 10_000;
const N_PERM_FOLDERS: usize = 1_000;
const N_PERM_DOCS: usize = 300_000;
/// Tuples per relationship write request (the server's limit).
const PERM_WRITE_TUPLES: usize = 1_000;
const AUTH_PATH: &str = "/v1/authenticate";
const PIPELINE_DEPTH: usize = 16;
/// A fraction of non-2xx responses above this makes a row FAILED: it did not measure success.
const MAX_NON_2XX_FRACTION: f64 = 0.01;
/// UDP packets per second the xdp-flood scenario sends from its blocked source.
const FLOOD_PPS: u64 = 200_000;
/// Fixed offered rate for the permission check's latency.
const PERMISSION_RATE_RPS: u64 = 20_000;
/// Fixed offered rate for cold-verify latency: well under one core's verify rate.
const COLD_RATE_RPS: u64 = 5_000;
/// Keys the ratelimit scenario rotates through (all under one generous rule).
const N_RATE_KEYS: usize = 10_000;
/// Fixed offered rate for the token-issue pool-hit measurement.
const TOKEN_RATE_RPS: u64 = 1_000;

/// Options of `cargo xtask bench`.
pub struct BenchArgs {
    pub quick: bool,
    pub scenarios: Vec<String>,
}

/// How long and how often to measure, and where things run.
struct Plan {
    quick: bool,
    n_runs: u32,
    run_s: u32,
    warmup_s: u32,
    rates_rps: Vec<u64>,
    n_connections: u32,
    n_cpus: usize,
    server_cpu: usize,
    load_cpus: Vec<usize>,
}

impl Plan {
    fn new(quick: bool, n_cpus: usize) -> Plan {
        let n_cpus = n_cpus.max(2);
        // Server on CPU 1, everything else drives load (CPU 0 on a two-core machine).
        let load_cpus: Vec<usize> = (0..n_cpus).filter(|&cpu| cpu != 1).collect();
        Plan {
            quick,
            n_runs: if quick { 1 } else { 3 },
            run_s: if quick { 2 } else { 8 },
            warmup_s: if quick { 1 } else { 3 },
            rates_rps: vec![20_000, 50_000],
            n_connections: 64,
            n_cpus,
            server_cpu: 1,
            load_cpus,
        }
    }

    fn pinning(&self) -> String {
        format!(
            "server under test `taskset -c {}` (one shard / one thread), load generators (wrk -t{}, loadgen) \
             `taskset -c {}`; scaling runs put N shards on CPUs 1..=N and load on the rest",
            self.server_cpu,
            self.load_cpus.len(),
            cpu_list(&self.load_cpus)
        )
    }
}

/// `taskset -c CPUS PROGRAM`.
fn taskset(cpus: &str, program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpus]).arg(program);
    cmd
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A server under test.
struct Server {
    name: String,
    guard: ChildGuard,
    addr: SocketAddr,
}

/// One way of offering load.
enum Load<'a> {
    /// wrk closed loop at saturation.
    Wrk {
        path: &'a str,
        headers: Vec<(&'a str, &'a str)>,
        script: Option<PathBuf>,
        n_connections: u32,
    },
    /// loadgen open loop at a fixed rate.
    Rate {
        path: &'a str,
        rate_rps: u64,
        headers: Vec<(&'a str, &'a str)>,
        post_body: Option<PathBuf>,
        /// One `Authorization: Bearer` token per request, rotating through this file's lines.
        bearer_file: Option<PathBuf>,
    },
}

/// One run's figures before medians.
struct Sample {
    requests_per_s: f64,
    cpu_us_per_req: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    p999_us: Option<f64>,
    max_us: Option<f64>,
    n_answered: u64,
    n_errors: u64,
    n_non_2xx: u64,
}

struct Bench {
    plan: Plan,
    dir: PathBuf,
    release_dir: PathBuf,
    ticks_per_s: u64,
    rows: Vec<Row>,
    notes: Vec<String>,
    ceilings: Vec<CeilingResult>,
    op_timings: Vec<metrics::OpTiming>,
    /// Run wrk inside the xdp-flood network namespace.
    in_netns: bool,
}

impl Bench {
    /// A release binary that must exist (a missing peer is an error, never a silent gap).
    fn bin(&self, name: &str) -> Result<PathBuf> {
        let path = self.release_dir.join(name);
        if !path.is_file() {
            bail!("missing benchmark binary {}", path.display());
        }
        Ok(path)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn subzero(&self) -> Result<Command> {
        Ok(Command::new(self.bin("subzero")?))
    }

    fn start(
        &self,
        name: &str,
        mut cmd: Command,
        ready_path: &str,
        any_status: bool,
        addr: SocketAddr,
    ) -> Result<Server> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))?;
        cmd.stdout(Stdio::null()).stderr(log);
        let mut guard = ChildGuard::spawn(name, &mut cmd)?;
        util::wait_ready(&mut guard, addr, ready_path, any_status)
            .with_context(|| format!("{name} did not become ready; see target/bench/{name}.log"))?;
        Ok(Server {
            name: name.to_string(),
            guard,
            addr,
        })
    }

    fn start_subzero(&self, cpus: &[usize], n_shards: usize, config: &str) -> Result<Server> {
        let port = util::free_port()?;
        self.start_subzero_at(
            SocketAddr::from(([127, 0, 0, 1], port)),
            cpus,
            n_shards,
            config,
            None,
        )
    }

    fn start_subzero_at(
        &self,
        addr: SocketAddr,
        cpus: &[usize],
        n_shards: usize,
        config: &str,
        xdp: Option<&str>,
    ) -> Result<Server> {
        let mut cmd = taskset(&cpu_list(cpus), &self.bin("subzero")?);
        cmd.arg("serve")
            .args(["--listen", &addr.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--shards", &n_shards.to_string()])
            .arg("--config")
            .arg(self.dir.join(config));
        if let Some(iface) = xdp {
            cmd.args(["--xdp", iface]);
        }
        self.start(SUBZERO, cmd, "/healthz", false, addr)
    }

    fn start_peer(&self, name: &str, extra: &[&str]) -> Result<Server> {
        let port = util::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = taskset(&self.plan.server_cpu.to_string(), &self.bin(name)?);
        cmd.args(["--listen", &addr.to_string()]).args(extra);
        self.start(name, cmd, "/", true, addr)
    }

    fn start_nginx(&self) -> Result<Server> {
        let nginx = util::find_executable("nginx").context("nginx is not installed")?;
        let port = util::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = self.dir.join("nginx");
        fs::create_dir_all(&dir)?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, nginx_conf(&dir, addr))?;
        let mut cmd = taskset(&self.plan.server_cpu.to_string(), &nginx);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"));
        self.start(NGINX, cmd, "/", false, addr)
    }

    /// Runs one load `n_runs` times against `server` and records a row (FAILED on error).
    fn measure(
        &mut self,
        server: &mut Server,
        scenario: &str,
        load_name: &str,
        load: &Load<'_>,
        note: &str,
    ) {
        let result = (0..self.plan.n_runs)
            .map(|_| self.one_run(server, load, self.plan.run_s))
            .collect::<Result<Vec<Sample>>>();
        let row = match result {
            Ok(samples) => summarize(scenario, &server.name, load_name, &samples, note),
            Err(err) => Row::unmeasured(
                scenario,
                &server.name,
                load_name,
                Status::Failed,
                &format!("{err:#}"),
            ),
        };
        println!(
            "    {scenario:12} {:20} {load_name:24} {:>10} req/s {:>8} µs/req  p99 {:>8} µs  {}",
            server.name,
            row.requests_per_s.map_or("-".into(), |v| format!("{v:.0}")),
            row.cpu_us_per_req.map_or("-".into(), |v| format!("{v:.2}")),
            row.p99_us.map_or("-".into(), |v| format!("{v:.0}")),
            if row.status == Status::Measured {
                String::new()
            } else {
                format!("{:?}: {}", row.status, row.note)
            }
        );
        self.rows.push(row);
    }

    /// `taskset -c CPUS wrk`, inside the flood namespace when the scenario asks for it.
    fn wrk_command(&self, load_cpus: &str) -> Command {
        if self.in_netns {
            let mut cmd = Command::new("ip");
            cmd.args([
                "netns",
                "exec",
                netns::NS,
                "taskset",
                "-c",
                load_cpus,
                "wrk",
            ]);
            cmd
        } else {
            taskset(load_cpus, Path::new("wrk"))
        }
    }

    fn warm_up(&self, server: &mut Server, load: &Load<'_>) -> Result<()> {
        self.one_run(server, load, self.plan.warmup_s).map(|_| ())
    }

    fn one_run(&self, server: &mut Server, load: &Load<'_>, run_s: u32) -> Result<Sample> {
        server.guard.check_alive()?;
        let load_cpus = cpu_list(&self.plan.load_cpus);
        let url_base = format!("http://{}", server.addr);
        let start = procstat::read(server.guard.pid())?;
        let mut sample = match load {
            Load::Wrk {
                path,
                headers,
                script,
                n_connections,
            } => {
                let mut cmd = self.wrk_command(&load_cpus);
                cmd.args([
                    "-t",
                    &self
                        .plan
                        .load_cpus
                        .len()
                        .min(*n_connections as usize)
                        .to_string(),
                ])
                .args(["-c", &n_connections.to_string()])
                .args(["-d", &format!("{run_s}s")])
                .arg("--latency");
                for (name, value) in headers {
                    cmd.args(["-H", &format!("{name}: {value}")]);
                }
                if let Some(script) = script {
                    cmd.arg("-s").arg(script);
                }
                cmd.arg(format!("{url_base}{path}"));
                let r = wrk::parse(&util::output(&mut cmd)?)?;
                Sample {
                    requests_per_s: r.requests_per_s,
                    cpu_us_per_req: None,
                    p50_us: r.percentile_us(50.0),
                    p99_us: r.percentile_us(99.0),
                    p999_us: None,
                    max_us: r.latency_max_us,
                    n_answered: r.n_requests,
                    n_errors: r.n_socket_errors,
                    n_non_2xx: r.n_non_2xx,
                }
            }
            Load::Rate {
                path,
                rate_rps,
                headers,
                post_body,
                bearer_file,
            } => {
                let mut cmd = taskset(&load_cpus, &self.bin("loadgen")?);
                cmd.args(["--url", &format!("{url_base}{path}")])
                    .args(["--rate", &rate_rps.to_string()])
                    .args(["--connections", &self.plan.n_connections.to_string()])
                    .args(["--duration-s", &run_s.to_string()]);
                for (name, value) in headers {
                    cmd.args(["--header", &format!("{name}: {value}")]);
                }
                if let Some(file) = bearer_file {
                    cmd.arg("--bearer-file").arg(file);
                }
                if let Some(body) = post_body {
                    cmd.args([
                        "--method",
                        "POST",
                        "--header",
                        "Content-Type: application/json",
                    ]);
                    cmd.arg("--body-file").arg(body);
                }
                let r: LoadgenResult = last_json_line(&util::output(&mut cmd)?)?;
                Sample {
                    requests_per_s: r.achieved_rps,
                    cpu_us_per_req: None,
                    p50_us: Some(r.p50_us),
                    p99_us: Some(r.p99_us),
                    p999_us: Some(r.p999_us),
                    max_us: Some(r.max_us),
                    n_answered: r.responses,
                    n_errors: r.errors,
                    n_non_2xx: r.non_2xx,
                }
            }
        };
        let end = procstat::read(server.guard.pid())?;
        server.guard.check_alive()?;
        sample.cpu_us_per_req =
            procstat::cpu_us_per_req(start, end, self.ticks_per_s, sample.n_answered);
        Ok(sample)
    }

    fn ceiling(&mut self, mode: &str) -> Result<()> {
        let mut cmd = taskset(
            &self.plan.server_cpu.to_string(),
            &self.bin("crypto-ceiling")?,
        );
        cmd.args(["--mode", mode, "--seconds", &self.plan.run_s.to_string()]);
        if mode == "verify-batch" {
            cmd.args(["--batch", "64"]);
        }
        let out = util::output(&mut cmd)?;
        let result: CeilingResult = last_json_line(&out)?;
        println!(
            "    crypto-ceiling {mode:14} {:>10.0} ops/s {:>8.2} µs/op",
            result.ops_per_s, result.us_per_op
        );
        self.ceilings.push(result);
        Ok(())
    }
}

fn summarize(scenario: &str, server: &str, load: &str, samples: &[Sample], note: &str) -> Row {
    let med = |f: &dyn Fn(&Sample) -> Option<f64>| {
        median(&samples.iter().filter_map(f).collect::<Vec<_>>())
    };
    let n_answered: u64 = samples.iter().map(|s| s.n_answered).sum();
    let n_non_2xx: u64 = samples.iter().map(|s| s.n_non_2xx).sum();
    let mut row = Row {
        requests_per_s: med(&|s| Some(s.requests_per_s)),
        cpu_us_per_req: med(&|s| s.cpu_us_per_req),
        p50_us: med(&|s| s.p50_us),
        p99_us: med(&|s| s.p99_us),
        p999_us: med(&|s| s.p999_us),
        max_us: med(&|s| s.max_us),
        n_errors: samples.iter().map(|s| s.n_errors).sum(),
        n_non_2xx,
        n_runs: samples.len() as u32,
        note: note.to_string(),
        ..Row::new(scenario, server, load)
    };
    if n_answered == 0 {
        row.status = Status::Failed;
        row.note = format!("no responses; {note}");
    } else if n_non_2xx as f64 > n_answered as f64 * MAX_NON_2XX_FRACTION {
        row.status = Status::Failed;
        row.note = format!("{n_non_2xx} of {n_answered} responses were not 2xx; {note}");
    }
    row
}

/// nginx `return 200` with one process pinned by taskset (`master_process off`: the single
/// process serves, so its /proc stat is the server's whole CPU time).
fn nginx_conf(dir: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "# Generated by cargo xtask bench.\n\
         daemon off;\n\
         master_process off;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 keepalive_requests 100000000;\n\
         \x20 client_body_temp_path {d}/client_body;\n\
         \x20 proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/uwsgi;\n\
         \x20 scgi_temp_path {d}/scgi;\n\
         \x20 server {{\n\
         \x20   listen {addr};\n\
         \x20   location / {{ return 200 \"ok\"; }}\n\
         \x20 }}\n\
         }}\n"
    )
}

fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown")
        .to_string();
    let n_cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let load_avg_1m = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu_model,
        n_cpus,
        kernel,
        load_avg_1m,
    }
}

/// Issues `n` tokens with `subzero token issue`, two processes at a time.
fn issue_tokens(subzero: &Path, data_dir: &Path, n: usize) -> Result<Vec<String>> {
    let issue = || -> Result<String> {
        let out = util::output(
            Command::new(subzero)
                .args(["token", "issue", "--data-dir"])
                .arg(data_dir)
                .args(["--sub", "bench", "--aud", "subzero", "--ttl-s", "3600"]),
        )?;
        let token = out.trim().to_string();
        if token.split('.').count() != 3 {
            bail!("`subzero token issue` printed something that is not a JWS: {token:?}");
        }
        Ok(token)
    };
    let half = n / 2;
    std::thread::scope(|scope| {
        let other = scope.spawn(|| (0..half).map(|_| issue()).collect::<Result<Vec<_>>>());
        let mut tokens = (half..n).map(|_| issue()).collect::<Result<Vec<_>>>()?;
        let mut first = other
            .join()
            .map_err(|_| anyhow::anyhow!("token issuing thread panicked"))??;
        first.append(&mut tokens);
        Ok(first)
    })
}

fn write_json_body(path: &Path, body: &serde_json::Value) -> Result<()> {
    fs::write(path, serde_json::to_vec(body)?)
        .with_context(|| format!("could not write {}", path.display()))
}

/// Bodies tried for POST /v1/token, in order: JSON, then form-encoded.
fn token_request_bodies() -> [(&'static str, String); 2] {
    [
        (
            "application/json",
            serde_json::json!({
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "audience": "api",
                "scope": "read",
            })
            .to_string(),
        ),
        (
            "application/x-www-form-urlencoded",
            format!("grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&audience=api&scope=read"),
        ),
    ]
}

/// Installs the load tools that are missing (apt): wrk, nginx, and for the fleet scenario
/// redis-server and redis-cli.
fn ensure_load_tools(fleet: bool) -> Result<()> {
    let mut apt = Apt::default();
    if util::find_executable("wrk").is_none() {
        apt.ensure("wrk")?;
    }
    if util::find_executable("nginx").is_none() {
        apt.ensure_one_of(&["nginx-light", "nginx"])?;
    }
    if fleet {
        if util::find_executable("redis-server").is_none() {
            apt.ensure("redis-server")?;
        }
        if util::find_executable("redis-cli").is_none() {
            apt.ensure("redis-tools")?;
        }
    }
    Ok(())
}

/// `cargo xtask bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    for name in &args.scenarios {
        if !SCENARIOS.contains(&name.as_str()) {
            bail!("unknown scenario {name:?}; known: {}", SCENARIOS.join(", "));
        }
    }
    let selected =
        |name: &str| args.scenarios.is_empty() || args.scenarios.iter().any(|s| s == name);
    let mut timings = Vec::new();
    step(&mut timings, "build release binaries", || {
        util::run(util::cargo().args(["build", "--release", "-p", "subzero"]))?;
        util::run(util::cargo().args(["build", "--release", "-p", "subzero-benches", "--bins"]))
    })?;
    let release_dir = util::target_dir().join("release");
    let mut missing: Vec<String> = ["subzero"]
        .iter()
        .chain(PEER_BINS.iter())
        .filter(|bin| !release_dir.join(bin).is_file())
        .map(ToString::to_string)
        .collect();
    step(&mut timings, "load tools (wrk, nginx, redis)", || {
        ensure_load_tools(selected(fleet::SCENARIO))
    })?;
    if util::find_executable("nginx").is_none() {
        missing.push("nginx".into());
    }
    // A missing binary is an error: its rows become FAILED and the run exits non-zero, but
    // everything that can be measured still is.
    let missing_note = (!missing.is_empty()).then(|| {
        let note = format!(
            "ERROR: missing benchmark binaries: {} (subzero from crate subzero, peers from subzero-benches, nginx from apt)",
            missing.join(", ")
        );
        eprintln!("error: {note}");
        note
    });
    let machine = machine();
    let plan = Plan::new(args.quick, machine.n_cpus);
    let dir = util::target_dir().join("bench");
    fs::create_dir_all(&dir)?;
    let mut b = Bench {
        plan,
        dir,
        release_dir,
        ticks_per_s: procstat::ticks_per_s(),
        rows: Vec::new(),
        notes: missing_note.into_iter().collect(),
        ceilings: Vec::new(),
        op_timings: Vec::new(),
        in_netns: false,
    };
    let scaling_note = run_scenarios(&mut b, &selected, &mut timings);
    let rates = b.plan.rates_rps.clone();
    let mut report = Report {
        date_utc: report::format_utc(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
        machine,
        pinning: b.plan.pinning(),
        quick: b.plan.quick,
        n_runs: b.plan.n_runs,
        run_s: b.plan.run_s,
        rows: std::mem::take(&mut b.rows),
        ceilings: std::mem::take(&mut b.ceilings),
        server_op_timings: std::mem::take(&mut b.op_timings),
        targets: Vec::new(),
        notes: std::mem::take(&mut b.notes),
    };
    report.evaluate_targets(&rates, &scaling_note);
    let md = report.to_markdown();
    fs::write(b.dir.join("report.md"), &md)?;
    fs::write(b.dir.join("report.json"), report.to_json())?;
    fs::write(b.dir.join("report.svg"), svg::render(&report, &rates))?;
    println!("\n{md}");
    println!("Wrote {}/report.{{md,json,svg}}", b.dir.display());
    println!("\nStep times:");
    for (name, elapsed) in &timings {
        println!("  {:>7.1} s  {name}", Duration::as_secs_f64(elapsed));
    }
    let n_failed = report
        .rows
        .iter()
        .filter(|r| r.status == Status::Failed)
        .count();
    if n_failed > 0 {
        bail!("{n_failed} measurement(s) FAILED; see the report");
    }
    Ok(())
}

/// Everything shared by the subzero scenarios.
struct Fixtures {
    bearer: String,
    /// A token with scope `ratelimit`, for `POST /v1/ratelimit/check`.
    ratelimit_bearer: String,
    n_tokens: usize,
    tokens_file: PathBuf,
    batch_body: PathBuf,
    jwks_file: PathBuf,
}

fn prepare(b: &mut Bench) -> Result<Fixtures> {
    let data_dir = b.data_dir();
    if data_dir.exists() {
        fs::remove_dir_all(&data_dir)?;
    }
    fs::create_dir_all(&data_dir)?;
    util::run(b.subzero()?.args(["keygen", "--data-dir"]).arg(&data_dir))?;
    let clients = format!(
        "[[clients]]\nid = \"{CLIENT_ID}\"\nsecret = \"{CLIENT_SECRET}\"\naudiences = [\"api\"]\nscopes = [\"read\"]\n"
    );
    fs::write(
        b.dir.join(CONFIG_COLD),
        format!(
            "# Generated by cargo xtask bench: a tiny verified-token cache so every request verifies.\n\
             [auth]\ncache_entries_per_shard = {COLD_CACHE_ENTRIES}\n\n{clients}"
        ),
    )?;
    fs::write(b.dir.join(ADMIN_TOKEN_FILE), ADMIN_TOKEN)?;
    fs::write(b.dir.join(PERMISSION_SCHEMA_FILE), PERMISSION_SCHEMA)?;
    fs::write(
        b.dir.join(CONFIG),
        format!(
            "# Generated by cargo xtask bench. Revocations are not rate-limited: the revoke\n\
             # scenario measures the revocation path itself.\n\
             [admin]\ntoken_file = \"{ADMIN_TOKEN_FILE}\"\n\
             [permissions]\nschema_file = \"{PERMISSION_SCHEMA_FILE}\"\n\
             [ratelimit]\nrevocations_per_s = 0\n\
             [[ratelimit.rules]]\nkey_prefix = \"bench:\"\nrate_per_s = 1000000.0\nburst = 1000000\n\n{clients}"
        ),
    )?;
    let config = fs::read_to_string(b.dir.join(CONFIG))?;
    fs::write(
        b.dir.join(CONFIG_MONITOR_OFF),
        format!("{config}\n[monitor]\nenabled = false\n"),
    )?;
    let subzero = b.bin("subzero")?;
    let token = issue_tokens(&subzero, &data_dir, 1)?.remove(0);
    let ratelimit_token = util::output(
        Command::new(&subzero)
            .args(["token", "issue", "--data-dir"])
            .arg(&data_dir)
            .args(["--sub", "bench", "--aud", "subzero", "--ttl-s", "3600"])
            .args(["--scope", "ratelimit"]),
    )?
    .trim()
    .to_string();
    let started = std::time::Instant::now();
    let tokens = issue_tokens(&subzero, &data_dir, N_TOKENS)?;
    println!(
        "    issued {} tokens in {:.1} s",
        tokens.len(),
        started.elapsed().as_secs_f64()
    );
    let tokens_file = b.dir.join("tokens.txt");
    fs::write(&tokens_file, tokens.join("\n") + "\n")?;
    let batch_body = b.dir.join("batch.json");
    let batch: Vec<&String> = tokens.iter().cycle().take(report::BATCH_TOKENS).collect();
    write_json_body(&batch_body, &serde_json::json!({ "tokens": batch }))?;
    Ok(Fixtures {
        bearer: format!("Bearer {token}"),
        ratelimit_bearer: format!("Bearer {ratelimit_token}"),
        n_tokens: tokens.len(),
        tokens_file,
        batch_body,
        jwks_file: b.dir.join("jwks.json"),
    })
}

fn write_script(b: &Bench, name: &str, script: &str) -> Result<PathBuf> {
    let path = b.dir.join(name);
    fs::write(&path, script)?;
    Ok(path)
}

/// The auth-hit loads every server gets: saturation, pipelined, fixed rates.
fn auth_hit(b: &mut Bench, server: &mut Server, bearer: &str, note: &str) -> Result<()> {
    let headers = vec![("Authorization", bearer)];
    let sat = Load::Wrk {
        path: AUTH_PATH,
        headers: headers.clone(),
        script: None,
        n_connections: b.plan.n_connections,
    };
    b.warm_up(server, &sat)?;
    b.measure(server, "auth-hit", LOAD_SAT, &sat, note);
    let script = write_script(
        b,
        "pipeline.lua",
        &wrk::pipeline_script(AUTH_PATH, &headers, PIPELINE_DEPTH),
    )?;
    let pipe = Load::Wrk {
        path: AUTH_PATH,
        headers: vec![],
        script: Some(script),
        n_connections: b.plan.n_connections,
    };
    b.measure(server, "auth-hit", LOAD_PIPE, &pipe, note);
    // wrk's latency figures are not trustworthy when pipelining (TOOLCHAIN.md): keep only
    // throughput and CPU for these rows.
    if let Some(row) = b
        .rows
        .last_mut()
        .filter(|r| r.load == LOAD_PIPE && r.status == Status::Measured)
    {
        row.p50_us = None;
        row.p99_us = None;
        row.max_us = None;
        let sep = if row.note.is_empty() { "" } else { "; " };
        let _ = write!(
            row.note,
            "{sep}latency omitted: wrk misreports it when pipelining"
        );
    }
    for rate_rps in b.plan.rates_rps.clone() {
        let load = Load::Rate {
            path: AUTH_PATH,
            rate_rps,
            headers: headers.clone(),
            post_body: None,
            bearer_file: None,
        };
        b.measure(server, "auth-hit", &load_rate(rate_rps), &load, note);
    }
    Ok(())
}

fn auth_cold(b: &mut Bench, server: &mut Server, fx: &Fixtures, note: &str) -> Result<()> {
    let script = write_script(
        b,
        "rotate.lua",
        &wrk::rotate_tokens_script(AUTH_PATH, &fx.tokens_file.to_string_lossy()),
    )?;
    let load = Load::Wrk {
        path: AUTH_PATH,
        headers: vec![],
        script: Some(script),
        n_connections: b.plan.n_connections,
    };
    b.measure(server, "auth-cold", LOAD_SAT, &load, note);
    let load = Load::Rate {
        path: AUTH_PATH,
        rate_rps: COLD_RATE_RPS,
        headers: vec![],
        post_body: None,
        bearer_file: Some(fx.tokens_file.clone()),
    };
    b.measure(server, "auth-cold", &load_rate(COLD_RATE_RPS), &load, note);
    Ok(())
}

fn batch(b: &mut Bench, server: &mut Server, fx: &Fixtures) -> Result<()> {
    let script = write_script(
        b,
        "batch.lua",
        &wrk::post_file_script(
            "/v1/authenticate/batch",
            &fx.batch_body.to_string_lossy(),
            &[],
        ),
    )?;
    let load = Load::Wrk {
        path: "/v1/authenticate/batch",
        headers: vec![],
        script: Some(script),
        n_connections: 1,
    };
    let note = format!(
        "one connection; req/s = batches/s of {} tokens; CPU µs per batch",
        report::BATCH_TOKENS
    );
    b.measure(server, "batch", LOAD_SAT, &load, &note);
    Ok(())
}

/// Probes an endpoint; `None` when it answers 404 (not there yet).
fn probe(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<Option<util::HttpResponse>> {
    let res = util::http_request(
        addr,
        method,
        path,
        &[("Content-Type", content_type)],
        body.as_bytes(),
    )?;
    Ok((res.status != 404).then_some(res))
}

fn token_issue(b: &mut Bench, server: &mut Server) -> Result<Option<(String, String)>> {
    let mut last = String::from("no answer");
    for (content_type, body) in token_request_bodies() {
        match probe(server.addr, "POST", "/v1/token", content_type, &body)? {
            None => {
                b.rows.push(Row::unmeasured(
                    "token-issue",
                    SUBZERO,
                    LOAD_SAT,
                    Status::NotImplemented,
                    "POST /v1/token answers 404: not yet implemented in server",
                ));
                return Ok(None);
            }
            Some(res) if res.status == 200 => {
                let body_file = b.dir.join("token-request.body");
                fs::write(&body_file, &body)?;
                let script = write_script(
                    b,
                    "token.lua",
                    &wrk::mixed_script(&[MixEntry {
                        method: "POST",
                        path: "/v1/token",
                        headers: vec![("Content-Type", content_type)],
                        body: &body,
                        weight: 1,
                    }]),
                )?;
                let sat = Load::Wrk {
                    path: "/v1/token",
                    headers: vec![],
                    script: Some(script),
                    n_connections: b.plan.n_connections,
                };
                b.measure(
                    server,
                    "token-issue",
                    LOAD_SAT,
                    &sat,
                    "saturation: pool drained, most requests sign",
                );
                if content_type == "application/json" {
                    let rate = Load::Rate {
                        path: "/v1/token",
                        rate_rps: TOKEN_RATE_RPS,
                        headers: vec![],
                        post_body: Some(body_file),
                        bearer_file: None,
                    };
                    b.measure(
                        server,
                        "token-issue",
                        &load_rate(TOKEN_RATE_RPS),
                        &rate,
                        "low fixed rate: pool hits; CPU includes background refill",
                    );
                }
                return Ok(Some((content_type.to_string(), body)));
            }
            Some(res) => last = format!("status {} body {}", res.status, res.body.trim()),
        }
    }
    b.rows.push(Row::unmeasured(
        "token-issue",
        SUBZERO,
        LOAD_SAT,
        Status::Failed,
        &format!("POST /v1/token did not answer 200 to client credentials ({last})"),
    ));
    Ok(None)
}

/// Admin revocations by `jti`, each unique, at saturation: the control plane's group commit
/// (one fdatasync per batch of queued revocations) and the broadcast to every shard. Each
/// entry expires 3 s after it is sent, so the live table stays far below its bound.
fn revoke(b: &mut Bench, server: &mut Server) -> Result<()> {
    let probe_body = format!(
        "{{\"jti\":\"bench-probe\",\"exp\":{}}}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3
    );
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let res = util::http_request(
        server.addr,
        "POST",
        "/v1/revoke",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        probe_body.as_bytes(),
    )?;
    if res.status != 200 {
        b.rows.push(Row::unmeasured(
            "revoke",
            SUBZERO,
            LOAD_SAT,
            Status::Failed,
            &format!(
                "admin revocation answered {}: {}",
                res.status,
                res.body.trim()
            ),
        ));
        return Ok(());
    }
    let script = write_script(b, "revoke.lua", &wrk::revoke_script(&bearer))?;
    let load = Load::Wrk {
        path: "/v1/revoke",
        headers: vec![],
        script: Some(script),
        n_connections: b.plan.n_connections,
    };
    b.measure(
        server,
        "revoke",
        LOAD_SAT,
        &load,
        "admin revocations by unique jti; group commit: one fdatasync per batch",
    );
    Ok(())
}

/// A `POST /v1/audit/events` body of `n` events.
fn audit_body(n: u64) -> serde_json::Value {
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "actor": "bench-client",
                "action": "bench.write",
                "resource": format!("doc:{i}"),
                "outcome": "ok",
                "source": "198.51.100.7",
            })
        })
        .collect();
    serde_json::json!({ "events": events })
}

/// Durable audit writes: batches of 100 at saturation (events/s = req/s × 100), and the
/// time-to-ack of batches of 10 offered at 10,000 events/s. Each `200` comes after the group
/// commit's fdatasync on the bench data dir's file system.
fn audit(b: &mut Bench, server: &mut Server) -> Result<()> {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let sat_body = b.dir.join("audit-100.json");
    write_json_body(&sat_body, &audit_body(report::AUDIT_SAT_EVENTS_PER_BATCH))?;
    let rate_body = b.dir.join("audit-10.json");
    write_json_body(&rate_body, &audit_body(report::AUDIT_RATE_EVENTS_PER_BATCH))?;
    let probe = fs::read(&sat_body)?;
    let res = util::http_request(
        server.addr,
        "POST",
        "/v1/audit/events",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        &probe,
    )?;
    if res.status != 200 {
        let status = if res.status == 404 {
            Status::NotImplemented
        } else {
            Status::Failed
        };
        let note = format!(
            "POST /v1/audit/events answered {}: {}",
            res.status,
            res.body.trim()
        );
        b.rows
            .push(Row::unmeasured("audit", SUBZERO, LOAD_SAT, status, &note));
        return Ok(());
    }
    let script = write_script(
        b,
        "audit.lua",
        &wrk::post_file_script(
            "/v1/audit/events",
            &sat_body.to_string_lossy(),
            &[("Authorization", &bearer)],
        ),
    )?;
    let load = Load::Wrk {
        path: "/v1/audit/events",
        headers: vec![],
        script: Some(script),
        n_connections: b.plan.n_connections,
    };
    let note = format!(
        "req/s = batches/s of {} events (events/s = req/s × {0}); CPU µs per batch",
        report::AUDIT_SAT_EVENTS_PER_BATCH
    );
    b.measure(server, "audit", LOAD_SAT, &load, &note);
    let rate_rps = report::AUDIT_RATE_EVENTS_PER_S / report::AUDIT_RATE_EVENTS_PER_BATCH;
    let load = Load::Rate {
        path: "/v1/audit/events",
        rate_rps,
        headers: vec![("Authorization", bearer.as_str())],
        post_body: Some(rate_body),
        bearer_file: None,
    };
    let note = format!(
        "{} events/s offered as batches of {}; latency = time to the durable 200",
        report::AUDIT_RATE_EVENTS_PER_S,
        report::AUDIT_RATE_EVENTS_PER_BATCH
    );
    b.measure(server, "audit", &load_rate(rate_rps), &load, &note);
    Ok(())
}

/// The generated permission graph, about 1.01M tuples as `(object, relation, subject)`:
/// every user in two groups, groups nested in `g/10` (so three and four levels deep), folders
/// with parents and group viewers, documents with a parent folder, a group viewer and (for the
/// first 200k) a user viewer.
fn permission_graph() -> Vec<(String, &'static str, String)> {
    let mut tuples = Vec::with_capacity(1_020_000);
    for g in 10..N_PERM_GROUPS {
        tuples.push((
            format!("group:g{}", g / 10),
            "member",
            format!("group:g{g}#member"),
        ));
    }
    for u in 0..N_PERM_USERS {
        for g in [u % N_PERM_GROUPS, (u * 7 + 1) % N_PERM_GROUPS] {
            tuples.push((format!("group:g{g}"), "member", format!("user:u{u}")));
        }
    }
    for f in 0..N_PERM_FOLDERS {
        tuples.push((
            format!("folder:f{f}"),
            "viewer",
            format!("group:g{}#member", f % 10),
        ));
        if f >= 10 {
            tuples.push((
                format!("folder:f{f}"),
                "parent",
                format!("folder:f{}", f / 10),
            ));
        }
    }
    for d in 0..N_PERM_DOCS {
        let doc = format!("doc:d{d}");
        tuples.push((
            doc.clone(),
            "parent",
            format!("folder:f{}", d % N_PERM_FOLDERS),
        ));
        tuples.push((doc.clone(), "viewer", format!("group:g{}#member", d % 100)));
        if d < 200_000 {
            tuples.push((doc, "viewer", format!("user:u{}", d % N_PERM_USERS)));
        }
    }
    tuples
}

/// Writes the graph through `POST /v1/relationships`; returns (tuples, seconds).
fn load_permission_graph(server: &Server) -> Result<(usize, f64)> {
    let tuples = permission_graph();
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let started = std::time::Instant::now();
    for chunk in tuples.chunks(PERM_WRITE_TUPLES) {
        let body: Vec<serde_json::Value> = chunk
            .iter()
            .map(|(object, relation, subject)| {
                serde_json::json!({"object": object, "relation": relation, "subject": subject})
            })
            .collect();
        let body = serde_json::json!({ "tuples": body }).to_string();
        let res = util::http_request(
            server.addr,
            "POST",
            "/v1/relationships",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &bearer),
            ],
            body.as_bytes(),
        )?;
        if res.status != 200 {
            bail!(
                "relationship write answered {}: {}",
                res.status,
                res.body.trim()
            );
        }
    }
    Ok((tuples.len(), started.elapsed().as_secs_f64()))
}

/// Permission checks on a generated graph of about 1M tuples: a repeated check (decision-cache
/// hit) at saturation and at a fixed rate, and rotating distinct checks (mostly misses).
fn permission(b: &mut Bench, server: &mut Server, fx: &Fixtures) -> Result<()> {
    // user:u1234 is in g1234 ⊂ g123 ⊂ g12 ⊂ g1, and g1 views doc:d1: three nested groups.
    let body =
        serde_json::json!({"subject": "user:u1234", "permission": "view", "object": "doc:d1"})
            .to_string();
    let probe = |server: &Server| {
        util::http_request(
            server.addr,
            "POST",
            "/v1/permissions/check",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &fx.bearer),
            ],
            body.as_bytes(),
        )
    };
    let res = probe(server)?;
    if res.status == 404 {
        b.rows.push(Row::unmeasured(
            "permission",
            SUBZERO,
            LOAD_SAT,
            Status::NotImplemented,
            &format!(
                "POST /v1/permissions/check answers 404: {}",
                res.body.trim()
            ),
        ));
        return Ok(());
    }
    let (n_tuples, load_s) = load_permission_graph(server)?;
    b.notes.push(format!(
        "permission graph: {n_tuples} tuples written through POST /v1/relationships in {load_s:.1} s \
         ({:.0} durable tuples/s, {PERM_WRITE_TUPLES} per request, group commit)",
        n_tuples as f64 / load_s
    ));
    let res = probe(server)?;
    if res.status != 200 || !res.body.contains("\"allowed\":true") {
        bail!(
            "the nested-group check answered {}: {}",
            res.status,
            res.body.trim()
        );
    }
    let body_file = b.dir.join("permission.json");
    fs::write(&body_file, &body)?;
    let script = write_script(
        b,
        "permission.lua",
        &wrk::post_file_script(
            "/v1/permissions/check",
            &body_file.to_string_lossy(),
            &[("Authorization", &fx.bearer)],
        ),
    )?;
    let hit = Load::Wrk {
        path: "/v1/permissions/check",
        headers: vec![],
        script: Some(script),
        n_connections: b.plan.n_connections,
    };
    let note = format!("decision-cache hit: one check, three nested groups, {n_tuples} tuples");
    b.measure(server, "permission", LOAD_SAT, &hit, &note);
    let rate = Load::Rate {
        path: "/v1/permissions/check",
        rate_rps: PERMISSION_RATE_RPS,
        headers: vec![("Authorization", fx.bearer.as_str())],
        post_body: Some(body_file),
        bearer_file: None,
    };
    b.measure(
        server,
        "permission",
        &load_rate(PERMISSION_RATE_RPS),
        &rate,
        "decision-cache hit at a fixed rate",
    );
    let script = write_script(
        b,
        "permission-rotate.lua",
        &wrk::permission_rotate_script(&fx.bearer, N_PERM_USERS, N_PERM_DOCS),
    )?;
    let miss = Load::Wrk {
        path: "/v1/permissions/check",
        headers: vec![],
        script: Some(script),
        n_connections: b.plan.n_connections,
    };
    b.measure(
        server,
        "permission",
        "wrk saturation, uncached",
        &miss,
        "rotating distinct (user, doc) checks: mostly decision-cache misses, most denied",
    );
    Ok(())
}

/// `POST /v1/ratelimit/check` against a cache-hit authenticate on the same server, in the
/// same run: rotating keys under one generous rule (every check allowed, every one does the
/// GCRA work), a bearer token with scope `ratelimit` (a cache hit, like the baseline). On two
/// shards about half the checks go to the key's owner over the mesh.
fn ratelimit(b: &mut Bench, server: &mut Server, fx: &Fixtures, shards: &str) -> Result<()> {
    let probe = util::http_request(
        server.addr,
        "POST",
        "/v1/ratelimit/check",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &fx.ratelimit_bearer),
        ],
        b"{\"key\":\"bench:probe\"}",
    )?;
    if probe.status != 200 {
        b.rows.push(Row::unmeasured(
            "ratelimit",
            SUBZERO,
            &format!("check, {shards}"),
            if probe.status == 404 {
                Status::NotImplemented
            } else {
                Status::Failed
            },
            &format!(
                "POST /v1/ratelimit/check answered {}: {}",
                probe.status,
                probe.body.trim()
            ),
        ));
        return Ok(());
    }
    let script = write_script(
        b,
        "ratelimit-baseline.lua",
        &wrk::scripted_get_script(AUTH_PATH, &fx.bearer),
    )?;
    let baseline = Load::Wrk {
        path: AUTH_PATH,
        headers: vec![],
        script: Some(script),
        n_connections: b.plan.n_connections,
    };
    b.warm_up(server, &baseline)?;
    b.measure(
        server,
        "ratelimit",
        &format!("auth-hit baseline, {shards}"),
        &baseline,
        "GET /v1/authenticate cache hit on the same server, just before the checks, from a wrk script as costly per request as the checks' one",
    );
    let script = write_script(
        b,
        "ratelimit.lua",
        &wrk::ratelimit_rotate_script(&fx.ratelimit_bearer, N_RATE_KEYS),
    )?;
    let checks = Load::Wrk {
        path: "/v1/ratelimit/check",
        headers: vec![],
        script: Some(script),
        n_connections: b.plan.n_connections,
    };
    b.warm_up(server, &checks)?;
    let before = scrape(server)?;
    b.measure(
        server,
        "ratelimit",
        &format!("check, {shards}"),
        &checks,
        &format!("{N_RATE_KEYS} rotating keys, all allowed; bearer token with scope ratelimit (cache hit)"),
    );
    let after = scrape(server)?;
    let delta = |name: &str| metrics::sum(&after, name) - metrics::sum(&before, name);
    let hops = delta("subzero_owned_hops_sent_total");
    let checks_done = delta("subzero_ratelimit_checks_total");
    if let Some(row) = b.rows.last_mut().filter(|r| r.status == Status::Measured) {
        let _ = write!(
            row.note,
            "; {:.0}% of checks crossed the mesh to their owner shard",
            if checks_done > 0.0 {
                hops * 100.0 / checks_done
            } else {
                0.0
            }
        );
    }
    Ok(())
}

fn mixed(
    b: &mut Bench,
    server: &mut Server,
    fx: &Fixtures,
    token_req: Option<&(String, String)>,
) -> Result<()> {
    let mut entries = vec![
        MixEntry {
            method: "GET",
            path: AUTH_PATH,
            headers: vec![("Authorization", &fx.bearer)],
            body: "",
            weight: 8,
        },
        MixEntry {
            method: "GET",
            path: "/healthz",
            headers: vec![],
            body: "",
            weight: 1,
        },
    ];
    let mut note = "8 auth-hit : 1 healthz".to_string();
    if let Some((content_type, body)) = token_req {
        entries.push(MixEntry {
            method: "POST",
            path: "/v1/token",
            headers: vec![("Content-Type", content_type)],
            body,
            weight: 1,
        });
        note.push_str(" : 1 token issue");
    }
    let script = write_script(b, "mixed.lua", &wrk::mixed_script(&entries))?;
    let load = Load::Wrk {
        path: "/",
        headers: vec![],
        script: Some(script),
        n_connections: b.plan.n_connections,
    };
    b.measure(server, "mixed", LOAD_SAT, &load, &note);
    Ok(())
}

fn scaling(b: &mut Bench, fx: &Fixtures) -> Result<String> {
    let n_server_cpus_max = b.plan.n_cpus - 1;
    let headers = vec![("Authorization", fx.bearer.as_str())];
    let mut note = String::new();
    for n_shards in 1..=n_server_cpus_max {
        let server_cpus: Vec<usize> = (1..=n_shards).collect();
        let load_cpus: Vec<usize> = (0..b.plan.n_cpus)
            .filter(|c| !server_cpus.contains(c))
            .collect();
        let saved = std::mem::replace(&mut b.plan.load_cpus, load_cpus.clone());
        let result = (|| -> Result<()> {
            let mut server = b.start_subzero(&server_cpus, n_shards, CONFIG)?;
            let load = Load::Wrk {
                path: AUTH_PATH,
                headers: headers.clone(),
                script: None,
                n_connections: b.plan.n_connections,
            };
            b.warm_up(&mut server, &load)?;
            let bottleneck = if load_cpus.len() < n_shards {
                "; load generator has fewer cores than the server: likely the bottleneck"
            } else {
                ""
            };
            let label = if n_shards == 1 {
                "1 shard".to_string()
            } else {
                format!("{n_shards} shards")
            };
            b.measure(
                &mut server,
                "scaling",
                &label,
                &load,
                &format!(
                    "server CPUs {}, wrk CPUs {}{bottleneck}",
                    cpu_list(&server_cpus),
                    cpu_list(&load_cpus)
                ),
            );
            if !bottleneck.is_empty() {
                note = format!("with {n_shards} shards the load generator had {} core(s): it is the bottleneck", load_cpus.len());
            }
            Ok(())
        })();
        b.plan.load_cpus = saved;
        result?;
    }
    if n_server_cpus_max < 2 {
        note = format!(
            "not measurable on this machine: {} CPUs, one is needed for the load generator, so at most one shard",
            b.plan.n_cpus
        );
        b.rows.push(Row::unmeasured(
            "scaling",
            SUBZERO,
            "2 shards",
            Status::NotAvailable,
            &note,
        ));
    }
    Ok(note)
}

/// The ratelimit scenario on two shards: about half the keys are owned by the other shard (one
/// mesh hop each). On a machine without a spare core per shard both share the server's CPU.
fn ratelimit_two_shards(b: &mut Bench, fx: &Fixtures) -> Result<()> {
    let cpus: Vec<usize> = if b.plan.n_cpus >= 4 {
        vec![1, 2]
    } else {
        vec![b.plan.server_cpu]
    };
    let saved = std::mem::replace(
        &mut b.plan.load_cpus,
        (0..b.plan.n_cpus).filter(|c| !cpus.contains(c)).collect(),
    );
    let result = b
        .start_subzero(&cpus, 2, CONFIG)
        .and_then(|mut two| ratelimit(b, &mut two, fx, "2 shards"));
    b.plan.load_cpus = saved;
    result
}

/// Cache-hit saturation with the monitor on, then off, one shard each, in the same run.
fn monitor_overhead(b: &mut Bench, fx: &Fixtures) -> Result<()> {
    let server_cpu = [b.plan.server_cpu];
    for (config, load_name, note) in [
        (CONFIG, LOAD_MONITOR_ON, "[monitor] enabled (default)"),
        (
            CONFIG_MONITOR_OFF,
            LOAD_MONITOR_OFF,
            "[monitor] enabled = false: no request timing, histograms or perf counters",
        ),
    ] {
        let mut server = b.start_subzero(&server_cpu, 1, config)?;
        let sat = Load::Wrk {
            path: AUTH_PATH,
            headers: vec![("Authorization", &fx.bearer)],
            script: None,
            n_connections: b.plan.n_connections,
        };
        b.warm_up(&mut server, &sat)?;
        b.measure(&mut server, "monitor", load_name, &sat, note);
    }
    Ok(())
}

/// The one-shard subzero scenarios, on one server instance.
fn subzero_scenarios(b: &mut Bench, fx: &Fixtures, selected: &dyn Fn(&str) -> bool) -> Result<()> {
    let server_cpu = [b.plan.server_cpu];
    let mut token_req = None;
    let mut server = b.start_subzero(&server_cpu, 1, CONFIG)?;
    let jwks = util::http_request(server.addr, "GET", "/.well-known/jwks.json", &[], b"")?;
    if jwks.status != 200 {
        bail!("GET /.well-known/jwks.json answered {}", jwks.status);
    }
    fs::write(&fx.jwks_file, jwks.body.as_bytes())?;
    let hit = util::http_request(
        server.addr,
        "GET",
        AUTH_PATH,
        &[("Authorization", &fx.bearer)],
        b"",
    )?;
    if hit.status != 200 {
        b.notes.push(format!(
            "subzero answered {} to a valid token on {AUTH_PATH}: {}",
            hit.status,
            hit.body.trim()
        ));
    }
    if selected("auth-hit") {
        auth_hit(b, &mut server, &fx.bearer, "")?;
    }
    if selected("token-issue") || selected("mixed") {
        token_req = token_issue(b, &mut server)?;
        if !selected("token-issue") {
            b.rows.retain(|r| r.scenario != "token-issue");
        }
    }
    if selected("revoke") {
        revoke(b, &mut server)?;
    }
    if selected("audit") {
        audit(b, &mut server)?;
    }
    if selected("permission") {
        permission(b, &mut server, fx)?;
    }
    if selected("mixed") {
        mixed(b, &mut server, fx, token_req.as_ref())?;
    }
    if selected("ratelimit") {
        ratelimit(b, &mut server, fx, "1 shard")?;
    }
    threat::threat(b, &mut server, fx, selected("threat"))?;
    b.op_timings = scrape_op_timings(&server)?;
    drop(server);
    if selected("ratelimit") {
        ratelimit_two_shards(b, fx)?;
    }
    if selected("monitor") {
        monitor_overhead(b, fx)?;
    }
    if selected("auth-cold") || selected("batch") {
        let mut cold = b.start_subzero(&server_cpu, 1, CONFIG_COLD)?;
        if selected("auth-cold") {
            let before = scrape(&cold)?;
            auth_cold(b, &mut cold, fx, "")?;
            let after = scrape(&cold)?;
            let hits = metrics::sum(&after, "subzero_cache_hits_total")
                - metrics::sum(&before, "subzero_cache_hits_total");
            let misses = metrics::sum(&after, "subzero_cache_misses_total")
                - metrics::sum(&before, "subzero_cache_misses_total");
            let note = format!(
                "{} tokens rotating, server cache {COLD_CACHE_ENTRIES} entries: {:.1}% of lookups missed ({misses:.0} misses, {hits:.0} hits)",
                fx.n_tokens,
                if hits + misses > 0.0 { misses * 100.0 / (hits + misses) } else { 0.0 }
            );
            for row in b
                .rows
                .iter_mut()
                .filter(|r| r.scenario == "auth-cold" && r.server == SUBZERO)
            {
                row.note = if row.note.is_empty() {
                    note.clone()
                } else {
                    format!("{}; {note}", row.note)
                };
            }
        }
        if selected("batch") {
            batch(b, &mut cold, fx)?;
        }
        for timing in scrape_op_timings(&cold)? {
            if timing.op.contains("verify") || timing.op.contains("batch") {
                b.op_timings.retain(|t| t.op != timing.op);
                b.op_timings.push(timing);
            }
        }
    }
    Ok(())
}

/// `GET /metrics` after the shards' once-a-second publish.
fn scrape(server: &Server) -> Result<Vec<metrics::Sample>> {
    std::thread::sleep(Duration::from_millis(1_100));
    let res = util::http_request(server.addr, "GET", "/metrics", &[], b"")?;
    if res.status != 200 {
        bail!("GET /metrics answered {}", res.status);
    }
    Ok(metrics::parse(&res.body))
}

fn scrape_op_timings(server: &Server) -> Result<Vec<metrics::OpTiming>> {
    Ok(metrics::op_timings(&scrape(server)?))
}

/// Legitimate goodput (wrk from the namespace's first address) with the gate off and on, each
/// without and with a UDP flood from a second address that the gate blocklists.
fn xdp_flood(b: &mut Bench, fx: &Fixtures) -> Result<()> {
    let ns = netns::Netns::create()?;
    let load_cpus = cpu_list(&b.plan.load_cpus);
    let server_cpu = [b.plan.server_cpu];
    let flood_s = (b.plan.run_s * b.plan.n_runs + 2).to_string();
    for gate_on in [false, true] {
        let port = util::free_port()?;
        let host: std::net::Ipv4Addr = netns::HOST_ADDR.parse()?;
        let addr = SocketAddr::from((host, port));
        let mut server = b.start_subzero_at(
            addr,
            &server_cpu,
            1,
            CONFIG,
            gate_on.then_some(netns::HOST_IF),
        )?;
        let mode = scrape(&server)?
            .iter()
            .find(|s| s.name == "subzero_gate_mode" && s.value > 0.0)
            .and_then(|s| s.label("mode").map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string());
        let gate = if gate_on { "gate on" } else { "gate off" };
        if gate_on {
            if mode == "off" {
                bail!(
                    "the gate did not attach to {} (gate mode off); see target/bench/subzero.log",
                    netns::HOST_IF
                );
            }
            util::run(b.subzero()?.args([
                "block",
                "add",
                &format!("{}/32", netns::FLOOD_ADDR),
                "--ttl-s",
                "3600",
            ]))?;
        }
        let note = format!(
            "gate mode {mode}; wrk from {} in netns {}",
            netns::LEGIT_ADDR,
            netns::NS
        );
        let load = Load::Wrk {
            path: AUTH_PATH,
            headers: vec![("Authorization", fx.bearer.as_str())],
            script: None,
            n_connections: b.plan.n_connections,
        };
        b.in_netns = true;
        let result = (|| -> Result<()> {
            let mut counters = if gate_on {
                gate_counters(b)?
            } else {
                GateCounters::default()
            };
            b.warm_up(&mut server, &load)?;
            b.measure(
                &mut server,
                "xdp-flood",
                &format!("{gate}, no flood"),
                &load,
                &note,
            );
            if gate_on {
                note_gate_delta(b, &mut counters)?;
            }
            let flooder = start_flooder(&ns, &load_cpus, addr, &flood_s)?;
            b.measure(
                &mut server,
                "xdp-flood",
                &format!(
                    "{gate}, UDP flood {FLOOD_PPS} pps from {}",
                    netns::FLOOD_ADDR
                ),
                &load,
                &format!("{note}; flooder shares the load generator's CPUs"),
            );
            drop(flooder);
            if gate_on {
                note_gate_delta(b, &mut counters)?;
            }
            Ok(())
        })();
        b.in_netns = false;
        result?;
        if gate_on {
            util::run(
                b.subzero()?
                    .args(["block", "del", &format!("{}/32", netns::FLOOD_ADDR)]),
            )?;
        }
    }
    drop(ns);
    Ok(())
}

/// `xtask flood` inside the namespace, from the blocklisted address, on the load CPUs.
fn start_flooder(
    ns: &netns::Netns,
    load_cpus: &str,
    dst: SocketAddr,
    seconds: &str,
) -> Result<ChildGuard> {
    let mut cmd = ns.exec("taskset");
    cmd.args(["-c", load_cpus])
        .arg(std::env::current_exe()?)
        .args([
            "flood",
            "--src",
            netns::FLOOD_ADDR,
            "--dst",
            &dst.to_string(),
        ])
        .args(["--pps", &FLOOD_PPS.to_string(), "--seconds", seconds])
        .stdout(Stdio::null());
    ChildGuard::spawn("flood", &mut cmd)
}

/// The gate's packet counters, summed over CPUs (from `subzero stats --json`).
#[derive(Debug, Default, Clone, Copy)]
struct GateCounters {
    pass: u64,
    drop_block: u64,
    drop_rate: u64,
}

fn gate_counters(b: &Bench) -> Result<GateCounters> {
    let stats = util::output(b.subzero()?.args(["stats", "--json"]))?;
    let doc: serde_json::Value =
        serde_json::from_str(&stats).context("`subzero stats --json` is not JSON")?;
    let counter = |name: &str| {
        doc["counters"][name]
            .as_u64()
            .with_context(|| format!("`subzero stats --json` has no counters.{name}"))
    };
    Ok(GateCounters {
        pass: counter("pass")?,
        drop_block: counter("drop_block")?,
        drop_rate: counter("drop_rate")?,
    })
}

/// Appends what the gate did since `before` to the last row's note.
fn note_gate_delta(b: &mut Bench, before: &mut GateCounters) -> Result<()> {
    let now = gate_counters(b)?;
    if let Some(row) = b.rows.last_mut() {
        let _ = write!(
            row.note,
            "; gate during this row (with warm-up): passed {}, dropped {} from blocked sources and {} over rate limits",
            now.pass - before.pass,
            now.drop_block - before.drop_block,
            now.drop_rate - before.drop_rate
        );
    }
    *before = now;
    Ok(())
}

/// Runs one phase as a timed step; a failure becomes FAILED rows for the phase's selected
/// scenarios (so the report says so plainly) and the run goes on with the next phase.
fn phase(
    b: &mut Bench,
    timings: &mut Vec<(String, Duration)>,
    name: &str,
    server: &str,
    scenarios: &[&str],
    f: impl FnOnce(&mut Bench) -> Result<()>,
) {
    if let Err(err) = step(timings, name, || f(b)) {
        eprintln!("error: {err:#}");
        for scenario in scenarios {
            b.rows.push(Row::unmeasured(
                scenario,
                server,
                "(setup)",
                Status::Failed,
                &format!("{err:#}"),
            ));
        }
    }
}

/// The peers: the hyper gateway, hello responders, nginx and the crypto ceiling.
fn peer_scenarios(
    b: &mut Bench,
    fx: Option<&Fixtures>,
    selected: &dyn Fn(&str) -> bool,
    timings: &mut Vec<(String, Duration)>,
) {
    let gateway_scenarios: Vec<&str> = ["auth-hit", "auth-cold", "batch"]
        .into_iter()
        .filter(|s| selected(s))
        .collect();
    if !gateway_scenarios.is_empty() {
        phase(
            b,
            timings,
            HYPER_GATEWAY,
            HYPER_GATEWAY,
            &gateway_scenarios,
            |b| {
                let fx = fx.context("no tokens or JWKS: the subzero setup failed")?;
                let jwks = fx.jwks_file.to_string_lossy().into_owned();
                let mut server = b.start_peer(HYPER_GATEWAY, &["--jwks", &jwks])?;
                if selected("auth-hit") {
                    auth_hit(
                        b,
                        &mut server,
                        &fx.bearer,
                        "tokio+hyper+jsonwebtoken, HashMap cache",
                    )?;
                }
                if selected("auth-cold") {
                    auth_cold(
                        b,
                        &mut server,
                        fx,
                        "unbounded HashMap cache: hits after the first pass",
                    )?;
                }
                if selected("batch") {
                    batch(b, &mut server, fx)?;
                }
                Ok(())
            },
        );
    }
    // Hello responders ignore the header; it keeps request bytes the same as subzero's.
    let bearer = fx.map_or_else(
        || "Bearer placeholder.token.bytes".to_string(),
        |fx| fx.bearer.clone(),
    );
    if selected("auth-hit") {
        for peer in [HYPER_HELLO, GLOMMIO_HELLO, URING_HELLO] {
            phase(b, timings, peer, peer, &["auth-hit"], |b| {
                let mut server = b.start_peer(peer, &[])?;
                auth_hit(b, &mut server, &bearer, "hello responder: no auth work")
            });
        }
        phase(b, timings, "nginx return 200", NGINX, &["auth-hit"], |b| {
            let mut server = b.start_nginx()?;
            auth_hit(
                b,
                &mut server,
                &bearer,
                "return 200, one process (master_process off)",
            )
        });
    }
    if selected("auth-cold") || selected("batch") || selected("token-issue") {
        phase(
            b,
            timings,
            "crypto-ceiling",
            "crypto-ceiling",
            &["auth-cold"],
            |b| {
                for mode in ["verify", "verify-strict", "verify-batch", "sign"] {
                    b.ceiling(mode)?;
                }
                Ok(())
            },
        );
    }
}

/// Runs the selected scenarios; returns the note for the scaling target.
fn run_scenarios(
    b: &mut Bench,
    selected: &dyn Fn(&str) -> bool,
    timings: &mut Vec<(String, Duration)>,
) -> String {
    // The fleet scenario makes its own nodes, keys and tokens.
    let ours: Vec<&str> = SCENARIOS
        .into_iter()
        .filter(|s| selected(s) && *s != "xdp-flood" && *s != fleet::SCENARIO)
        .collect();
    let mut fx = None;
    if !ours.is_empty() || selected("xdp-flood") {
        phase(
            b,
            timings,
            "keys, tokens and config under target/bench",
            SUBZERO,
            &ours,
            |b| {
                fx = Some(prepare(b)?);
                Ok(())
            },
        );
    }
    let mut scaling_note = String::from("scaling not selected");
    if let Some(fx) = &fx {
        let one_shard: Vec<&str> = ours.iter().copied().filter(|s| *s != "scaling").collect();
        phase(
            b,
            timings,
            "subzero (one shard)",
            SUBZERO,
            &one_shard,
            |b| subzero_scenarios(b, fx, selected),
        );
        if selected("scaling") {
            phase(
                b,
                timings,
                "scaling (subzero, 1..N shards)",
                SUBZERO,
                &["scaling"],
                |b| {
                    scaling_note = scaling(b, fx)?;
                    Ok(())
                },
            );
        }
    }
    if selected("xdp-flood") {
        match &fx {
            Some(fx) => phase(
                b,
                timings,
                "xdp-flood (network namespace)",
                SUBZERO,
                &["xdp-flood"],
                |b| xdp_flood(b, fx),
            ),
            None => b.rows.push(Row::unmeasured(
                "xdp-flood",
                SUBZERO,
                "(setup)",
                Status::Failed,
                "no tokens: the subzero setup failed",
            )),
        }
    }
    if let Some(fx) = fx.as_ref().filter(|_| selected(unix::SCENARIO)) {
        phase(
            b,
            timings,
            "unix (Unix socket beside TCP; nginx auth_request end to end)",
            SUBZERO,
            &[unix::SCENARIO],
            |b| unix::unix(b, fx),
        );
    }
    if selected(fleet::SCENARIO) {
        phase(
            b,
            timings,
            "fleet (two subzero nodes through redis-server)",
            SUBZERO,
            &[fleet::SCENARIO],
            fleet::fleet,
        );
    }
    peer_scenarios(b, fx.as_ref(), selected, timings);
    scaling_note
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rps: f64, cpu: f64, n_answered: u64, n_non_2xx: u64) -> Sample {
        Sample {
            requests_per_s: rps,
            cpu_us_per_req: Some(cpu),
            p50_us: Some(10.0),
            p99_us: Some(100.0),
            p999_us: None,
            max_us: Some(1000.0),
            n_answered,
            n_errors: 0,
            n_non_2xx,
        }
    }

    #[test]
    fn summarize_takes_medians_and_fails_on_non_2xx() {
        let row = summarize(
            "auth-hit",
            "x",
            LOAD_SAT,
            &[
                sample(3.0, 1.0, 100, 0),
                sample(1.0, 9.0, 100, 0),
                sample(2.0, 5.0, 100, 1),
            ],
            "n",
        );
        assert_eq!(row.status, Status::Measured);
        assert_eq!(row.requests_per_s, Some(2.0));
        assert_eq!(row.cpu_us_per_req, Some(5.0));
        assert_eq!(row.p999_us, None);
        assert_eq!(row.n_runs, 3);
        let bad = summarize("auth-hit", "x", LOAD_SAT, &[sample(3.0, 1.0, 100, 50)], "n");
        assert_eq!(bad.status, Status::Failed);
        assert!(bad.note.contains("50 of 100"));
        let empty = summarize("auth-hit", "x", LOAD_SAT, &[sample(0.0, 1.0, 0, 0)], "n");
        assert_eq!(empty.status, Status::Failed);
    }

    #[test]
    fn plan_pins_server_to_cpu1_and_load_elsewhere() {
        let two = Plan::new(true, 2);
        assert_eq!(two.load_cpus, vec![0]);
        assert!(two.pinning().contains("taskset -c 1"));
        let eight = Plan::new(false, 8);
        assert_eq!(cpu_list(&eight.load_cpus), "0,2,3,4,5,6,7");
        assert!(eight.n_runs > two.n_runs && eight.run_s > two.run_s);
    }

    #[test]
    fn nginx_conf_is_single_process_on_the_address() {
        let conf = nginx_conf(Path::new("/t/b/nginx"), "127.0.0.1:9999".parse().unwrap());
        assert!(conf.contains("listen 127.0.0.1:9999;"));
        assert!(conf.contains("master_process off;"));
        assert!(conf.contains("pid /t/b/nginx/nginx.pid;"));
        assert!(conf.contains("return 200"));
    }
}
