//! Privileged loader tests: the real XDP attach on a veth pair and on a namespace's `lo`, pins, persistence, SIGKILL, floods.
//!
//! These drive `Gate::start` directly (no server binary), with a tiny TCP responder standing in
//! for the shards' listener. They share `/sys/fs/bpf/subzero`, so they take a lock and run one
//! at a time. Root is required; with `CI=true` its absence fails the tests.

#[path = "gate_support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subzero::gate::{
    boot_ns, cli_block_add, cli_block_del, cli_block_list, cli_stats, BlockReason, Cidr, Gate,
    GateConfig, GateMode, Reason, PIN_DIR,
};
use support::{healthz_from, privileged, raw_flood, NetNs};

static PINS: Mutex<()> = Mutex::new(());

/// Serialises the tests that use the global pin directory and clears what an earlier test left.
fn lock() -> std::sync::MutexGuard<'static, ()> {
    let guard = PINS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Ok(rd) = std::fs::read_dir(PIN_DIR) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    guard
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

    // The CLI functions work on the pins, live.
    cli_block_del(&bad.to_string()).unwrap();
    let r_bad = ns.run(move || healthz_from(bad, addr, T));
    assert!(
        r_bad.as_ref().is_ok_and(|l| l.contains("200")),
        "unblocked by the CLI: {r_bad:?}"
    );
    cli_block_add(&format!("{bad}/32"), None, "threat").unwrap();
    let r_bad = ns.run(move || healthz_from(bad, addr, T));
    assert!(r_bad.is_err(), "blocked again by the CLI: {r_bad:?}");
    assert!(
        cli_block_del("10.255.255.255/32").is_err(),
        "deleting a missing entry is an error"
    );
    assert!(cli_block_add("10.0.0.0/33", None, "manual")
        .unwrap_err()
        .is_usage());
    cli_block_list(true).unwrap();
    cli_stats(true, None).unwrap();

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
    std::thread::sleep(Duration::from_millis(100));
    let after = gate.snapshot();
    let dropped = after.total(Reason::DropRate) - before.total(Reason::DropRate);
    let admitted_max = f64::from(burst) + f64::from(rate) * elapsed_s + 10.0;
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
        std::thread::sleep(Duration::from_millis(100));
        let dropped = gate.snapshot().total(Reason::DropBlock) - before;
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

/// SIGKILL the process holding the gate: the kernel detaches XDP (the link dies with the fd).
#[test]
fn sigkill_leaves_no_program_attached() {
    if !privileged("SIGKILL test") {
        return;
    }
    let _g = lock();
    let ns = NetNs::veth('f');
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hold_gate_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SZ_GATE_HOLD_IFACE", &ns.host_if)
        .env("SZ_GATE_HOLD_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("GATE-HELD") {
        let mut b = [0u8; 256];
        let n = out.read(&mut b).unwrap();
        assert!(
            n > 0 && Instant::now() < deadline,
            "helper exited early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&b[..n]);
    }
    assert!(ns.host_has_xdp(), "the helper attached XDP");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !ns.host_has_xdp(),
        "XDP detached when its holder was SIGKILLed"
    );
    // A restart replaces the stale pins and keeps the blocklist.
    let gate = Gate::start(&config(&[&ns.host_if], dir.path()), &[]);
    assert_eq!(gate.mode(), GateMode::Native);
    let list = gate.blocklist().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].cidr.to_string(), "192.0.2.99/32");
}

/// Helper for `sigkill_leaves_no_program_attached`, run in a child process: holds a gate until
/// killed. Without its environment variables (a normal test run) it checks nothing and returns.
#[test]
fn hold_gate_until_killed() {
    let (Ok(iface), Ok(dir)) = (
        std::env::var("SZ_GATE_HOLD_IFACE"),
        std::env::var("SZ_GATE_HOLD_DIR"),
    ) else {
        return;
    };
    let mut gate = Gate::start(&config(&[&iface], Path::new(&dir)), &[]);
    gate.block(
        "192.0.2.99".parse().unwrap(),
        Some(0),
        BlockReason::Manual,
        boot_ns(),
    )
    .unwrap();
    println!("GATE-HELD");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
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
