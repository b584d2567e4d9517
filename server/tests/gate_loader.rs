//! Privileged loader tests: the real XDP attach on a veth pair and on a namespace's `lo`, pins, persistence, SIGKILL, floods.
//!
//! These drive `Gate::start` directly, with a tiny TCP responder standing in for the shards'
//! listener; the `subzero` binary is used only as the CLI on the pins. They share
//! `/sys/fs/bpf/subzero` with each other and with `gate_e2e`, so they take the cross-process pin
//! lock (`support::PinLock`) and run one at a time. Root is required; with `CI=true` its absence
//! fails the tests.

#[path = "gate_support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use subzero::gate::{
    boot_ns, cli_block_add, cli_block_del, BlockItem, BlockReason, Cidr, Gate, GateConfig,
    GateMode, Reason, PIN_DIR,
};
use support::{healthz_from, privileged, raw_flood, wait_for, NetNs, PinLock};

/// Longest wait for counters to show packets that were already sent.
const COUNT_WAIT: Duration = Duration::from_secs(10);

/// Serialises the tests that use the global pin directory (across processes) and clears what
/// an earlier test left.
fn lock() -> PinLock {
    assert_eq!(PIN_DIR, support::PIN_DIR);
    PinLock::take_and_clear_pins()
}

/// `subzero ARGS --json` as a second process (the CLI users run), parsed.
fn cli_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_subzero"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run subzero");
    assert!(
        out.status.success(),
        "subzero {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// The entry for exactly `cidr` in the gate's map, if any.
fn entry(gate: &Gate, cidr: &str) -> Option<BlockItem> {
    gate.blocklist()
        .unwrap()
        .into_iter()
        .find(|b| b.cidr.to_string() == cidr)
}

/// A minimal HTTP responder: answers every connection with `200 ok`.
fn responder(ip: Ipv4Addr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("bind responder");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    addr
}

fn config(ifaces: &[&str], data_dir: &Path) -> GateConfig {
    GateConfig {
        xdp_ifaces: ifaces.iter().map(|s| (*s).to_owned()).collect(),
        data_dir: data_dir.to_path_buf(),
        ..GateConfig::default()
    }
}

const T: Duration = Duration::from_millis(700);

#[test]
fn native_xdp_on_veth_blocks_one_source_serves_the_other_and_persists() {
    if !privileged("XDP veth test") {
        return;
    }
    let _g = lock();
    let ns = NetNs::veth('a');
    let dir = tempfile::tempdir().unwrap();
    let addr = responder(ns.host_ip);
    let [good, bad] = ns.peer_ips;

    let mut gate = Gate::start(&config(&[&ns.host_if], dir.path()), &[]);
    assert_eq!(
        gate.mode(),
        GateMode::Native,
        "veth supports driver-mode XDP"
    );
    assert!(ns.host_has_xdp(), "ip link shows the XDP program");
    for name in ["SZ_BLOCK_V4", "SZ_BLOCK_V6", "SZ_RATE", "SZ_COUNTERS"] {
        assert!(Path::new(PIN_DIR).join(name).exists(), "{name} pinned");
    }

    gate.block(
        Cidr::host(bad.into()),
        Some(0),
        BlockReason::Manual,
        boot_ns(),
    )
    .unwrap();
    let (r_good, r_bad) = ns.run(move || (healthz_from(good, addr, T), healthz_from(bad, addr, T)));
    assert!(
        r_good.as_ref().is_ok_and(|l| l.contains("200")),
        "allowed source served: {r_good:?}"
    );
    assert!(r_bad.is_err(), "blocked source gets nothing: {r_bad:?}");
    let snap = gate.snapshot();
    assert!(snap.total(Reason::DropBlock) >= 1, "{snap:?}");
    assert!(snap.total(Reason::Pass) >= 1, "{snap:?}");
    assert_eq!(snap.blocklist_entries(), 1);
    let mut text = String::new();
    snap.write_prometheus(&mut text);
    assert!(
        text.contains("subzero_gate_mode{mode=\"native\"} 1"),
        "{text}"
    );

    cli_changes_show_in_the_maps_and_the_list(&gate, &ns, addr, bad);

    // expire() notices the CLI's change and writes blocklist.json.
    assert_eq!(gate.expire(), 0);
    let json = std::fs::read_to_string(dir.path().join("blocklist.json")).unwrap();
    assert!(
        json.contains(&format!("{bad}/32")) && json.contains("threat"),
        "{json}"
    );

    // Drop detaches; the pins stay for the CLI.
    drop(gate);
    assert!(!ns.host_has_xdp(), "no XDP left after drop");
    assert!(Path::new(PIN_DIR).join("SZ_BLOCK_V4").exists());

    // Restart with persistence: the entry comes back from the old pins.
    let gate = Gate::start(&config(&[&ns.host_if], dir.path()), &[]);
    let list = gate.blocklist().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].reason, BlockReason::Threat);
    let r_bad = ns.run(move || healthz_from(bad, addr, T));
    assert!(r_bad.is_err(), "still blocked after restart");
    drop(gate);

    // Without persistence the stale pins are replaced by empty maps.
    let cfg = GateConfig {
        persist_blocklist: false,
        ..config(&[&ns.host_if], dir.path())
    };
    let gate = Gate::start(&cfg, &[]);
    assert!(gate.blocklist().unwrap().is_empty());
    assert_eq!(
        gate.snapshot().total(Reason::DropBlock),
        0,
        "fresh counters"
    );
    drop(gate);

    // No pins at all (as after a reboot): the entry comes back from blocklist.json.
    for e in std::fs::read_dir(PIN_DIR).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let gate = Gate::start(&config(&[&ns.host_if], dir.path()), &[]);
    let list = gate.blocklist().unwrap();
    assert_eq!(
        list.iter().map(|b| b.cidr.to_string()).collect::<Vec<_>>(),
        vec![format!("{bad}/32")]
    );
}

/// `subzero block add|del` (the CLI functions, on the pins) while `gate` runs: each change is
/// in the map the gate reads, in `subzero block list --json`, and in what the kernel drops.
/// Leaves `bad` blocked with reason `threat` and no TTL.
fn cli_changes_show_in_the_maps_and_the_list(
    gate: &Gate,
    ns: &NetNs,
    addr: SocketAddr,
    bad: Ipv4Addr,
) {
    // The CLI functions work on the pins, live: each change is in the map the running gate
    // reads, in `subzero block list --json`, and in what the kernel drops.
    let bad_cidr = format!("{bad}/32");
    cli_block_del(&bad.to_string()).unwrap();
    assert_eq!(entry(gate, &bad_cidr), None, "deleted from the map");
    assert_eq!(cli_json(&["block", "list"]), serde_json::json!([]));
    let r_bad = ns.run(move || healthz_from(bad, addr, T));
    assert!(
        r_bad.as_ref().is_ok_and(|l| l.contains("200")),
        "unblocked by the CLI: {r_bad:?}"
    );
    cli_block_add(&bad_cidr, None, "threat").unwrap();
    let e = entry(gate, &bad_cidr).expect("added to the map");
    assert_eq!((e.reason, e.until_ns), (BlockReason::Threat, 0), "{e:?}");
    let r_bad = ns.run(move || healthz_from(bad, addr, T));
    assert!(r_bad.is_err(), "blocked again by the CLI: {r_bad:?}");

    // With a TTL: the map holds `now + ttl` on CLOCK_BOOTTIME, the list shows the seconds left.
    let ttl_s = 600;
    let net = "198.51.100.0/24";
    let t0 = boot_ns();
    cli_block_add(net, Some(ttl_s), "manual").unwrap();
    let t1 = boot_ns();
    let e = entry(gate, net).expect("TTL entry in the map");
    assert_eq!(e.reason, BlockReason::Manual);
    let ttl_ns = ttl_s * 1_000_000_000;
    assert!(
        (t0 + ttl_ns..=t1 + ttl_ns).contains(&e.until_ns),
        "until_ns {} not within [{}, {}]",
        e.until_ns,
        t0 + ttl_ns,
        t1 + ttl_ns
    );
    let t_list = Instant::now();
    let list = cli_json(&["block", "list"]);
    let waited_s = t_list.elapsed().as_secs() + 1;
    let listed: Vec<(String, String, Option<u64>)> = list
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| {
            (
                v["cidr"].as_str().unwrap().to_owned(),
                v["reason"].as_str().unwrap().to_owned(),
                v["expires_in_s"].as_u64(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 2, "{list}");
    assert_eq!(
        listed[0],
        (bad_cidr.clone(), "threat".to_owned(), None),
        "{list}"
    );
    assert_eq!((&listed[1].0[..], &listed[1].1[..]), (net, "manual"));
    let left_s = listed[1].2.expect("a TTL entry lists its expiry");
    assert!(
        (ttl_s - waited_s..=ttl_s).contains(&left_s),
        "expires_in_s {left_s} for a {ttl_s} s TTL"
    );
    cli_block_del(net).unwrap();
    assert_eq!(entry(gate, net), None, "TTL entry deleted from the map");
    assert_eq!(
        cli_json(&["block", "list"])
            .as_array()
            .map(|v| v.iter().map(|e| e["cidr"].clone()).collect::<Vec<_>>()),
        Some(vec![serde_json::json!(bad_cidr)]),
        "only the other entry is left"
    );

    assert!(
        cli_block_del("10.255.255.255/32").is_err(),
        "deleting a missing entry is an error"
    );
    assert!(cli_block_add("10.0.0.0/33", None, "manual")
        .unwrap_err()
        .is_usage());
    assert_eq!(entry(gate, "10.255.255.255/32"), None);
    let stats = cli_json(&["stats"]);
    assert_eq!(stats["blocklist_entries"], 1, "{stats}");
    assert_eq!(
        stats["counters"]["drop_block"].as_u64(),
        Some(gate.snapshot().total(Reason::DropBlock)),
        "the CLI reads the counters the gate reads: {stats}"
    );
}

#[test]
fn generic_xdp_on_namespace_loopback() {
    if !privileged("XDP lo test") {
        return;
    }
    let _g = lock();
    let ns = NetNs::lo_only('b');
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let (mode, r_good, r_bad, drops, attached_after_drop) = ns.run(move || {
        let addr = responder(Ipv4Addr::LOCALHOST);
        let mut gate = Gate::start(&config(&["lo"], &data_dir), &[]);
        let mode = gate.mode();
        gate.block(
            "127.0.0.3".parse().unwrap(),
            None,
            BlockReason::Threat,
            boot_ns(),
        )
        .unwrap();
        let r_good = healthz_from(Ipv4Addr::new(127, 0, 0, 2), addr, T);
        let r_bad = healthz_from(Ipv4Addr::new(127, 0, 0, 3), addr, T);
        let drops = gate.snapshot().total(Reason::DropBlock);
        drop(gate);
        let out = std::process::Command::new("ip")
            .args(["link", "show", "dev", "lo"])
            .output()
            .unwrap();
        (
            mode,
            r_good,
            r_bad,
            drops,
            String::from_utf8_lossy(&out.stdout).contains("xdp"),
        )
    });
    assert_eq!(
        mode,
        GateMode::Generic,
        "lo has no driver mode: generic fallback"
    );
    assert!(
        r_good.as_ref().is_ok_and(|l| l.contains("200")),
        "{r_good:?}"
    );
    assert!(r_bad.is_err(), "{r_bad:?}");
    assert!(drops >= 1);
    assert!(!attached_after_drop);
}

#[test]
fn socket_filter_fallback_when_xdp_cannot_attach() {
    if !privileged("socket filter fallback test") {
        return;
    }
    let _g = lock();
    let ns = NetNs::lo_only('c');
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let (mode, r_good, r_bad) = ns.run(move || {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.as_raw_fd();
        // An interface that does not exist: XDP fails, the socket filter takes over.
        let mut gate = Gate::start(&config(&["nonexistent0"], &data_dir), &[fd]);
        let mode = gate.mode();
        gate.block(
            "127.0.0.3".parse().unwrap(),
            None,
            BlockReason::Manual,
            boot_ns(),
        )
        .unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 512];
                let _ = c.read(&mut buf);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        let r_good = healthz_from(Ipv4Addr::new(127, 0, 0, 2), addr, T);
        let r_bad = healthz_from(Ipv4Addr::new(127, 0, 0, 3), addr, T);
        drop(gate);
        (mode, r_good, r_bad)
    });
    assert_eq!(mode, GateMode::Socket);
    assert!(
        r_good.as_ref().is_ok_and(|l| l.contains("200")),
        "{r_good:?}"
    );
    assert!(r_bad.is_err(), "{r_bad:?}");
}

#[test]
fn gate_is_off_without_interfaces_and_refuses_changes() {
    let mut gate = Gate::start(&GateConfig::default(), &[]);
    assert_eq!(gate.mode(), GateMode::Off);
    assert!(gate
        .block("10.0.0.1".parse().unwrap(), None, BlockReason::Manual, 0)
        .is_err());
    assert_eq!(gate.expire(), 0);
    let mut text = String::new();
    gate.snapshot().write_prometheus(&mut text);
    assert!(text.contains("subzero_gate_mode{mode=\"off\"} 1"));
}

#[test]
fn syn_flood_is_cut_to_the_configured_rate_while_another_source_is_served() {
    if !privileged("SYN flood test") {
        return;
    }
    let _g = lock();
    let ns = NetNs::veth('d');
    let dir = tempfile::tempdir().unwrap();
    let addr = responder(ns.host_ip);
    let [good, flooder] = ns.peer_ips;
    let (rate, burst) = (100u32, 50u32);
    let cfg = GateConfig {
        syn_rate_per_s: rate,
        syn_burst: burst,
        ..config(&[&ns.host_if], dir.path())
    };
    let gate = Gate::start(&cfg, &[]);
    assert_eq!(gate.mode(), GateMode::Native);
    let before = gate.snapshot();
    let n_syn = 20_000;
    let started = Instant::now();
    // While the flood runs, the other source still gets answers.
    let (sent, served) = support::flood_while_probing(&ns, flooder, good, addr, n_syn);
    let elapsed_s = started.elapsed().as_secs_f64();
    // At most the burst, the rate over the flood's duration and a few packets of slack for the
    // clock reads around it pass; every other SYN must be counted as drop_rate.
    let admitted_max = f64::from(burst) + f64::from(rate) * elapsed_s + 10.0;
    let dropped_min = (sent as f64 - admitted_max).max(0.0) as u64;
    let dropped = wait_for("drop_rate counts the flood", COUNT_WAIT, || {
        let d = gate.snapshot().total(Reason::DropRate) - before.total(Reason::DropRate);
        if d >= dropped_min {
            Ok(d)
        } else {
            Err(d)
        }
    });
    eprintln!("SYN flood: sent {sent} in {elapsed_s:.2} s, drop_rate {dropped}, admitted at most {admitted_max:.0}");
    assert_eq!(served, 3, "the other source is served during the flood");
    assert!(sent > 1_000);
    assert!(
        dropped as f64 >= sent as f64 - admitted_max,
        "dropped {dropped} of {sent}; at most {admitted_max:.0} may pass"
    );
    assert!(dropped < sent as u64, "some SYNs (the burst) pass");
}

/// Measures a UDP flood from a blocked source in driver and generic mode: drops per second,
/// and drops per second of softirq CPU (where the receive path, XDP included, runs). Asserts
/// that every flood packet that reached the gate was dropped.
#[test]
fn flood_drop_rate_native_vs_generic() {
    if !privileged("XDP flood measurement") {
        return;
    }
    let _g = lock();
    let ns = NetNs::veth('e');
    let dir = tempfile::tempdir().unwrap();
    let [_, flooder] = ns.peer_ips;
    for force_generic in [false, true, false, true] {
        let cfg = GateConfig {
            force_generic,
            pkt_rate_per_s: 0,
            syn_rate_per_s: 0,
            ..config(&[&ns.host_if], dir.path())
        };
        let mut gate = Gate::start(&cfg, &[]);
        let want = if force_generic {
            GateMode::Generic
        } else {
            GateMode::Native
        };
        assert_eq!(gate.mode(), want);
        gate.block(
            Cidr::host(flooder.into()),
            Some(0),
            BlockReason::Manual,
            boot_ns(),
        )
        .unwrap();
        let before = gate.snapshot().total(Reason::DropBlock);
        let cpu0 = cpu_jiffies();
        let t0 = Instant::now();
        let host_ip = ns.host_ip;
        let sent = ns.run(move || raw_flood(flooder, host_ip, 9, 1_000_000, false));
        let secs = t0.elapsed().as_secs_f64();
        let cpu1 = cpu_jiffies();
        let dropped = wait_for("drop_block counts the flood", COUNT_WAIT, || {
            let d = gate.snapshot().total(Reason::DropBlock) - before;
            if d >= sent as u64 * 99 / 100 {
                Ok(d)
            } else {
                Err(d)
            }
        });
        let softirq_s = (cpu1.1 - cpu0.1) as f64 / 100.0;
        let busy_s = (cpu1.0 - cpu0.0) as f64 / 100.0;
        eprintln!(
            "{:>7} mode: sent {sent}, dropped {dropped} in {secs:.2} s = {:.0} drops/s; softirq CPU {softirq_s:.2} s = {:.0} drops per softirq-second; machine busy {busy_s:.2} CPU-s",
            want.as_str(),
            dropped as f64 / secs,
            dropped as f64 / softirq_s.max(0.01),
        );
        assert!(
            dropped >= sent as u64 * 99 / 100,
            "{dropped} of {sent} dropped"
        );
        drop(gate);
    }
}

/// (busy, softirq) jiffies (`USER_HZ` = 100) over all CPUs, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu = stat.lines().next().unwrap();
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal
    (v[0] + v[1] + v[2] + v[5] + v[6] + v[7], v[6])
}

/// The source the holder process blocks in `sigkill_leaves_no_program_attached`.
const HELD_CIDR: &str = "192.0.2.99/32";
/// Longest the holder waits to be killed before it gives up (and fails its parent's test).
const MAX_HOLD: Duration = Duration::from_mins(2);

/// SIGKILL the process holding the gate: the kernel detaches XDP (the link dies with the fd),
/// the pins and the blocklist outlive it.
///
/// The holder is this same test, re-run in a child process with `SZ_GATE_HOLD_IFACE` and
/// `SZ_GATE_HOLD_DIR` set ([`hold_gate_until_killed`]); a normal run has no helper test that
/// passes without checking anything.
#[test]
fn sigkill_leaves_no_program_attached() {
    if let (Ok(iface), Ok(dir)) = (
        std::env::var("SZ_GATE_HOLD_IFACE"),
        std::env::var("SZ_GATE_HOLD_DIR"),
    ) {
        // The child role: the parent holds the pin lock for us.
        hold_gate_until_killed(&iface, Path::new(&dir));
    }
    if !privileged("SIGKILL test") {
        return;
    }
    let _g = lock();
    let ns = NetNs::veth('f');
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_leaves_no_program_attached",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SZ_GATE_HOLD_IFACE", &ns.host_if)
        .env("SZ_GATE_HOLD_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the helper's output on a thread, so the wait below has a deadline even when the
    // helper hangs without printing.
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { break };
            if line.ends_with("GATE-HELD") {
                let _ = tx.send(());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    let held = rx.recv_timeout(Duration::from_secs(30));
    if held.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the helper did not report GATE-HELD: {held:?}; its output:\n{}",
            reader.join().unwrap()
        );
    }
    assert!(ns.host_has_xdp(), "the helper attached XDP");
    let listed = cli_json(&["block", "list"]);
    assert_eq!(
        listed[0]["cidr"], HELD_CIDR,
        "the helper's entry is pinned: {listed}"
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the helper was still holding the gate when killed: {status}"
    );
    assert!(
        !ns.host_has_xdp(),
        "XDP detached when its holder was SIGKILLed"
    );
    // A restart replaces the stale pins and keeps the blocklist.
    let gate = Gate::start(&config(&[&ns.host_if], dir.path()), &[]);
    assert_eq!(gate.mode(), GateMode::Native);
    let list = gate.blocklist().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].cidr.to_string(), HELD_CIDR);
    assert_eq!(list[0].reason, BlockReason::Manual);
    let _ = reader.join();
}

/// The child role of `sigkill_leaves_no_program_attached`: attaches a gate in driver mode to
/// `iface`, blocks [`HELD_CIDR`], checks that both happened, says `GATE-HELD`, then waits to be
/// SIGKILLed. Never returns: not being killed within [`MAX_HOLD`] is a failure.
fn hold_gate_until_killed(iface: &str, dir: &Path) -> ! {
    let mut gate = Gate::start(&config(&[iface], dir), &[]);
    assert_eq!(
        gate.mode(),
        GateMode::Native,
        "the holder attached in driver mode"
    );
    gate.block(
        HELD_CIDR.parse().unwrap(),
        Some(0),
        BlockReason::Manual,
        boot_ns(),
    )
    .unwrap();
    for name in ["SZ_BLOCK_V4", "SZ_BLOCK_V6", "SZ_RATE", "SZ_COUNTERS"] {
        assert!(
            Path::new(PIN_DIR).join(name).exists(),
            "the holder pinned {name}"
        );
    }
    let link = support::ip(&["link", "show", "dev", iface]);
    assert!(
        link.contains("xdp"),
        "the holder's program is attached: {link}"
    );
    assert!(
        entry(&gate, HELD_CIDR).is_some_and(|e| e.until_ns == 0),
        "the holder's entry is in the map, without expiry"
    );
    println!("GATE-HELD");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(MAX_HOLD);
    panic!("the holder was not killed within {MAX_HOLD:?}");
}

/// With no bpffs at /sys/fs/bpf (a private mount namespace with it unmounted), the loader
/// mounts one and pins there.
#[test]
fn mounts_bpffs_when_missing() {
    if !privileged("bpffs mount test") {
        return;
    }
    let _g = lock();
    let ns = NetNs::lo_only('k');
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let (was_bpffs, mode, now_bpffs, pinned) = ns.run(move || {
        // SAFETY: this thread gets its own mount namespace; the strings are NUL-terminated.
        unsafe {
            assert_eq!(
                libc::unshare(libc::CLONE_NEWNS),
                0,
                "unshare: {}",
                std::io::Error::last_os_error()
            );
            let rc = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            assert_eq!(rc, 0, "make / private: {}", std::io::Error::last_os_error());
            while is_bpffs("/sys/fs/bpf") {
                assert_eq!(libc::umount2(c"/sys/fs/bpf".as_ptr(), libc::MNT_DETACH), 0);
            }
        }
        let was_bpffs = is_bpffs("/sys/fs/bpf");
        let gate = Gate::start(&config(&["lo"], &data_dir), &[]);
        let mode = gate.mode();
        let now_bpffs = is_bpffs("/sys/fs/bpf");
        let pinned = Path::new(PIN_DIR).join("SZ_COUNTERS").exists();
        drop(gate);
        (was_bpffs, mode, now_bpffs, pinned)
    });
    assert!(!was_bpffs, "bpffs was unmounted for the test");
    assert_eq!(mode, GateMode::Generic);
    assert!(now_bpffs, "the loader mounted bpffs");
    assert!(pinned, "and pinned there");
}

fn is_bpffs(path: &str) -> bool {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: `statfs` is plain integers, for which all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and outlives the call; `st` is a valid out-buffer.
    (unsafe { libc::statfs(c.as_ptr(), &raw mut st) }) == 0 && st.f_type == 0xcafe_4a11
}

/// The pin lock is a file lock: while a test holds it, another process (`flock(1)` here, a
/// second `cargo test` run in practice) cannot take it.
#[test]
fn pin_lock_excludes_other_processes() {
    if !privileged("pin lock test") {
        return;
    }
    let _g = lock();
    let status = Command::new("flock")
        .args(["--nonblock", "--conflict-exit-code", "75"])
        .arg(support::LOCK_PATH)
        .arg("true")
        .status()
        .expect("run flock(1)");
    assert_eq!(
        status.code(),
        Some(75),
        "another process got the pin lock while a test held it"
    );
}
