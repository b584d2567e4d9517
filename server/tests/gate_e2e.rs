//! End-to-end gate tests against the real binary: `subzero serve --xdp IFACE` in network namespaces, `subzero block`/`stats` as second processes.
//!
//! Root is required; with `CI=true` missing privileges (or a binary without the gate
//! subcommands) fail the tests, otherwise they are skipped with a printed reason. Tests share
//! `/sys/fs/bpf/subzero` with each other and with `gate_loader`, so they take the cross-process
//! pin lock (`support::PinLock`) and clear the pins first.

#[path = "gate_support.rs"]
mod support;

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{healthz_from, privileged, raw_flood, wait_for, NetNs, PinLock, PIN_DIR};

const T: Duration = Duration::from_millis(700);
/// Longest wait for counters to show packets that were already sent.
const COUNT_WAIT: Duration = Duration::from_secs(10);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_subzero")
}

/// Takes the pin lock and clears the pins; `None` (skip) when the test cannot run here.
fn setup(what: &str) -> Option<PinLock> {
    if !privileged(what) {
        return None;
    }
    let has_cli = Command::new(bin())
        .args(["block", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cli {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but `subzero block` is missing: the gate CLI is not wired into the binary"
        );
        eprintln!("skipping {what}: this `subzero` binary has no `block`/`stats` subcommands yet");
        return None;
    }
    Some(PinLock::take_and_clear_pins())
}

/// `subzero ARGS` as a second process.
fn subzero(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run subzero")
}

fn subzero_ok(args: &[&str]) -> String {
    let out = subzero(args);
    assert!(
        out.status.success(),
        "subzero {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stats() -> serde_json::Value {
    serde_json::from_str(&subzero_ok(&["stats", "--json"])).expect("stats --json is JSON")
}

fn counter(doc: &serde_json::Value, reason: &str) -> u64 {
    doc["counters"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {reason} in {doc}"))
}

fn block_list() -> serde_json::Value {
    serde_json::from_str(&subzero_ok(&["block", "list", "--json"])).expect("block list --json")
}

/// Sends `n` UDP datagrams from `src` (inside `ns`) to `dst` and waits until `drop_block` has
/// counted exactly `n` more than in `before`; then checks that it stays there (nothing else
/// from a blocked source reaches the gate). Returns the stats document at the end.
fn flood_and_count_block_drops(
    ns: &NetNs,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    n: usize,
    before: &serde_json::Value,
) -> serde_json::Value {
    let sent = ns.run(move || raw_flood(src, dst, 9, n, false));
    assert_eq!(sent, n, "the kernel took every datagram");
    let want = counter(before, "drop_block") + n as u64;
    let doc = wait_for("drop_block counts the flood", COUNT_WAIT, || {
        let doc = stats();
        if counter(&doc, "drop_block") >= want {
            Ok(doc)
        } else {
            Err(doc)
        }
    });
    assert_eq!(
        counter(&doc, "drop_block"),
        want,
        "exactly the flood: {doc}"
    );
    // Three more reads over a few milliseconds: a late duplicate would show here.
    for _ in 0..3 {
        assert_eq!(
            counter(&stats(), "drop_block"),
            want,
            "and nothing after it"
        );
    }
    doc
}

/// A `subzero serve` child, SIGKILLed on drop.
struct Server {
    child: Child,
}

impl Server {
    /// Starts the server (inside `netns` when given) and waits until `probe_src` gets `/healthz`.
    fn start(
        args: &[String],
        netns: Option<String>,
        addr: SocketAddr,
        probe: &NetNs,
        probe_src: Ipv4Addr,
    ) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(path) = netns {
            let f = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns is async-signal-safe; the fd stays open until exec.
            unsafe {
                cmd.pre_exec(move || {
                    use std::os::fd::AsRawFd;
                    if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start subzero serve");
        let server = Server { child };
        let what = format!("server on {addr} answers /healthz");
        wait_for(&what, Duration::from_secs(30), || {
            match probe.run(move || healthz_from(probe_src, addr, T)) {
                Ok(line) if line.contains("200") => Ok(()),
                other => Err(other),
            }
        });
        server
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve_args(addr: SocketAddr, data_dir: &Path, iface: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        addr.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--shards".into(),
        "1".into(),
        "--xdp".into(),
        iface.into(),
    ]
}

#[test]
fn cli_block_is_live_and_stats_count_the_traffic() {
    let Some(_g) = setup("gate e2e (veth)") else {
        return;
    };
    let ns = NetNs::veth('g');
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
    let [good, bad] = ns.peer_ips;
    let _server = Server::start(
        &serve_args(addr, dir.path(), &ns.host_if),
        None,
        addr,
        &ns,
        good,
    );
    assert!(ns.host_has_xdp());

    // /metrics reports the mode.
    let metrics = ns.run(move || {
        let mut s = support::connect_from(good, addr, T).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    });
    assert!(
        metrics.contains("subzero_gate_mode{mode=\"native\"} 1"),
        "{metrics}"
    );

    // Block one source from a second process: it gets no response, the other still does.
    subzero_ok(&["block", "add", &format!("{bad}/32"), "--reason", "manual"]);
    let (r_good, r_bad) = ns.run(move || (healthz_from(good, addr, T), healthz_from(bad, addr, T)));
    assert!(
        r_good.as_ref().is_ok_and(|l| l.contains("200")),
        "{r_good:?}"
    );
    assert!(r_bad.is_err(), "blocked source answered: {r_bad:?}");
    let list = block_list();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["cidr"], format!("{bad}/32"), "{list}");
    assert_eq!(list[0]["reason"], "manual", "{list}");
    assert!(list[0]["expires_in_s"].is_null(), "no TTL: {list}");

    // Exactly the packets sent from the blocked source are counted as drop_block.
    let before = stats();
    let after = flood_and_count_block_drops(&ns, bad, ns.host_ip, 1_000, &before);
    assert!(after["per_cpu"].as_array().is_some_and(|v| !v.is_empty()));
    assert_eq!(after["blocklist_entries"], 1);
    assert_eq!(after["top_blocked"][0]["cidr"], format!("{bad}/32"));

    // Unblock live.
    subzero_ok(&["block", "del", &bad.to_string()]);
    assert_eq!(block_list(), serde_json::json!([]), "gone from the list");
    let r_bad = ns.run(move || healthz_from(bad, addr, T));
    assert!(r_bad.as_ref().is_ok_and(|l| l.contains("200")), "{r_bad:?}");

    // Usage and runtime errors have the documented exit codes.
    assert_eq!(
        subzero(&["block", "add", "10.0.0.0/33"]).status.code(),
        Some(2)
    );
    let missing = subzero(&["block", "del", "10.255.255.254"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn syn_flood_is_cut_to_the_configured_rate_while_the_other_source_is_served() {
    let Some(_g) = setup("gate e2e SYN flood") else {
        return;
    };
    let ns = NetNs::veth('h');
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
    let [good, flooder] = ns.peer_ips;
    let config = dir.path().join("subzero.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\ndata_dir = \"{}\"\nshards = 1\n[gate]\nxdp = [\"{}\"]\nsyn_rate_per_s = 100\nsyn_burst = 50\n",
            dir.path().join("data").display(),
            ns.host_if
        ),
    )
    .unwrap();
    let args = vec!["--config".to_owned(), config.display().to_string()];
    let _server = Server::start(&args, None, addr, &ns, good);
    let before = stats();
    let started = Instant::now();
    let (sent, served) = support::flood_while_probing(&ns, flooder, good, addr, 20_000);
    let elapsed_s = started.elapsed().as_secs_f64();
    // At most the burst, the rate over the flood's duration and a few packets of slack for the
    // clock reads around it pass; every other SYN must be counted as drop_rate.
    let admitted_max = 50.0 + 100.0 * elapsed_s + 10.0;
    let dropped_min = (sent as f64 - admitted_max).max(0.0) as u64;
    let after = wait_for("drop_rate counts the flood", COUNT_WAIT, || {
        let doc = stats();
        if counter(&doc, "drop_rate") - counter(&before, "drop_rate") >= dropped_min {
            Ok(doc)
        } else {
            Err(doc)
        }
    });
    let dropped = counter(&after, "drop_rate") - counter(&before, "drop_rate");
    eprintln!("e2e SYN flood: sent {sent} in {elapsed_s:.2} s, drop_rate {dropped}");
    assert_eq!(served, 3, "the other source is served during the flood");
    assert!(
        dropped < sent as u64,
        "the burst passes: dropped {dropped} of {sent}"
    );
    assert_eq!(after["top_rate"][0]["addr"], flooder.to_string(), "{after}");
}

#[test]
fn generic_mode_on_loopback() {
    let Some(_g) = setup("gate e2e on lo") else {
        return;
    };
    let ns = NetNs::lo_only('i');
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 18_080));
    let [good, bad] = ns.peer_ips;
    let mut server = Server::start(
        &serve_args(addr, dir.path(), "lo"),
        Some(ns.path()),
        addr,
        &ns,
        good,
    );
    assert!(ns.lo_has_xdp(), "XDP on the namespace's lo");
    assert!(
        Path::new(PIN_DIR).join("SZ_COUNTERS").exists(),
        "pins visible from the root namespace"
    );
    subzero_ok(&[
        "block",
        "add",
        &bad.to_string(),
        "--ttl-s",
        "600",
        "--reason",
        "threat",
    ]);
    let (r_good, r_bad) = ns.run(move || (healthz_from(good, addr, T), healthz_from(bad, addr, T)));
    assert!(
        r_good.as_ref().is_ok_and(|l| l.contains("200")),
        "{r_good:?}"
    );
    assert!(r_bad.is_err(), "{r_bad:?}");
    let doc = stats();
    assert!(counter(&doc, "drop_block") >= 1);
    server.kill();
    assert!(!ns.lo_has_xdp(), "XDP gone with the server");
}

#[test]
fn sigkill_and_restart_leave_no_stale_program_and_keep_the_blocklist() {
    let Some(_g) = setup("gate e2e SIGKILL") else {
        return;
    };
    let ns = NetNs::veth('j');
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
    let [good, bad] = ns.peer_ips;
    let args = serve_args(addr, dir.path(), &ns.host_if);
    let mut server = Server::start(&args, None, addr, &ns, good);
    subzero_ok(&["block", "add", &bad.to_string()]);
    let doc = flood_and_count_block_drops(&ns, bad, ns.host_ip, 500, &stats());
    assert_eq!(
        counter(&doc, "drop_block"),
        500,
        "fresh pins at the first start"
    );
    assert!(counter(&doc, "pass") > 0, "the health probes passed: {doc}");
    server.kill(); // SIGKILL
    assert!(
        !ns.host_has_xdp(),
        "no XDP program left attached after SIGKILL"
    );
    // The pins outlive the process: the CLI still reads them.
    assert!(subzero(&["stats"]).status.success());

    let _server = Server::start(&args, None, addr, &ns, good);
    assert!(ns.host_has_xdp());
    // The counters start again from zero (the old pins were replaced; only the good source's
    // health probes have reached the gate since), while the carried-over entry keeps dropping.
    let doc = stats();
    assert_eq!(counter(&doc, "drop_block"), 0, "counters restarted: {doc}");
    let list = block_list();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["cidr"], format!("{bad}/32"), "{list}");
    flood_and_count_block_drops(&ns, bad, ns.host_ip, 300, &doc);
    let r_bad = ns.run(move || healthz_from(bad, addr, T));
    assert!(r_bad.is_err(), "still blocked after restart: {r_bad:?}");
}

#[test]
fn cli_without_pins_says_how_to_start_the_gate() {
    let Some(_g) = setup("gate CLI without pins") else {
        return;
    };
    for args in [
        &["stats"][..],
        &["block", "list"],
        &["block", "add", "10.0.0.1"],
    ] {
        let out = subzero(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no gate maps pinned at /sys/fs/bpf/subzero: start `subzero serve --xdp IFACE` first"),
            "{args:?}: {err}"
        );
    }
}
