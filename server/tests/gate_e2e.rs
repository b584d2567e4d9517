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

use support::{
    block_list, healthz_from, privileged, raw_flood, subzero_ok, wait_for, NetNs, PinLock, PIN_DIR,
};

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

fn stats() -> serde_json::Value {
    serde_json::from_str(&subzero_ok(&["stats", "--json"])).expect("stats --json is JSON")
}

fn counter(doc: &serde_json::Value, reason: &str) -> u64 {
    doc["counters"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {reason} in {doc}"))
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

/// One `GET /healthz` on a keep-alive connection; returns the status code and the header block.
fn healthz_keep_alive(s: &mut std::net::TcpStream) -> std::io::Result<(u16, String)> {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // Headers end with an empty line; a response head over 8 KiB is a broken server.
    while !buf.ends_with(b"\r\n\r\n") {
        assert!(buf.len() < 8 * 1024, "response head too long");
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length is a number"));
    let mut body = vec![0u8; content_length];
    s.read_exact(&mut body)?;
    Ok((status, head))
}

/// The offender sends back to back on one connection until it has been refused `limit`
/// times (at most 20 requests); returns the statuses and when the last request was sent.
fn exceed_until_refused(
    ns: &NetNs,
    offender: Ipv4Addr,
    addr: SocketAddr,
    limit: usize,
) -> (Vec<u16>, Option<Instant>) {
    ns.run(move || {
        let mut s = support::connect_from(offender, addr, Duration::from_secs(5)).unwrap();
        let mut statuses = Vec::new();
        let mut reported_at = None;
        for _ in 0..20 {
            let sent_at = Instant::now();
            let (status, head) = healthz_keep_alive(&mut s).expect("an answer before the block");
            if status == 429 {
                assert!(head.contains("retry-after: "), "{head}");
            }
            statuses.push(status);
            if statuses.iter().filter(|&&c| c == 429).count() == limit {
                reported_at = Some(sent_at);
                break;
            }
        }
        // Abortive close: one RST, no FIN exchange with the now blocked peer.
        abort_on_close(&s);
        (statuses, reported_at)
    })
}

/// A source that keeps exceeding `[ratelimit] per_ip_rps` is reported by its shard, and the
/// control plane puts it on the kernel blocklist: listed with reason `ratelimit` and the
/// gate's `block_ttl_s`, its packets dropped in XDP from then on, other sources still served.
#[test]
fn rate_limit_offender_lands_on_the_kernel_blocklist() {
    let Some(_g) = setup("gate e2e rate-limit offender") else {
        return;
    };
    let ns = NetNs::veth('l');
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
    let [good, offender] = ns.peer_ips;
    let (burst, block_after, ttl_s) = (2usize, 3usize, 900u64);
    let config = dir.path().join("subzero.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\ndata_dir = \"{}\"\nshards = 1\n\
             [gate]\nxdp = [\"{}\"]\nblock_ttl_s = {ttl_s}\n\
             [ratelimit]\nper_ip_rps = 1\nper_ip_burst = {burst}\nblock_after_rejections = {block_after}\n",
            dir.path().join("data").display(),
            ns.host_if
        ),
    )
    .unwrap();
    let args = vec!["--config".to_owned(), config.display().to_string()];
    // The readiness probe is the good source's first request of its burst of 2.
    let _server = Server::start(&args, None, addr, &ns, good);
    assert_eq!(block_list(), serde_json::json!([]), "nothing blocked yet");

    let (statuses, reported_at) = exceed_until_refused(&ns, offender, addr, block_after);
    let mut want = vec![200; burst];
    want.extend(vec![429; block_after]);
    assert_eq!(statuses, want, "burst served, then refused until reported");
    let reported_at = reported_at.expect("refused often enough to be reported");

    // The control plane blocks it in the kernel with the gate's TTL.
    let offender_cidr = format!("{offender}/32");
    let list = support::wait_blocklisted("the offender on the blocklist", COUNT_WAIT);
    let waited_s = reported_at.elapsed().as_secs() + 1;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "only the offender: {list}"
    );
    assert_eq!(list[0]["cidr"], offender_cidr, "{list}");
    assert_eq!(list[0]["reason"], "ratelimit", "{list}");
    let left_s = list[0]["expires_in_s"].as_u64().expect("a TTL");
    assert!(
        (ttl_s - waited_s..=ttl_s).contains(&left_s),
        "expires_in_s {left_s}: not block_ttl_s = {ttl_s} counted from the report {waited_s} s ago"
    );

    // From now on the kernel drops it, and only it.
    let before = stats();
    let (r_good, r_offender) =
        ns.run(move || (healthz_from(good, addr, T), healthz_from(offender, addr, T)));
    assert!(
        r_good.as_ref().is_ok_and(|l| l.contains("200")),
        "the other source is served: {r_good:?}"
    );
    assert!(
        r_offender.is_err(),
        "the offender gets no answer: {r_offender:?}"
    );
    let n = 1_000u64;
    let host_ip = ns.host_ip;
    let sent = ns.run(move || raw_flood(offender, host_ip, 9, n as usize, false));
    assert_eq!(sent as u64, n);
    // Besides the flood, the gate also drops the offender's refused SYN (one within `T`) and
    // what its last TCP connection still sends: the server retransmits its unacknowledged 429
    // with exponential backoff from 200 ms, and each retransmission draws at most one ACK or
    // RST, so a handful within the seconds this takes.
    let stray_max = 16;
    let want_min = counter(&before, "drop_block") + n + 1;
    let after = wait_for(
        "drop_block counts the offender's packets",
        COUNT_WAIT,
        || {
            let doc = stats();
            if counter(&doc, "drop_block") >= want_min {
                Ok(doc)
            } else {
                Err(doc)
            }
        },
    );
    let dropped = counter(&after, "drop_block") - counter(&before, "drop_block");
    assert!(
        (n + 1..=n + 1 + stray_max).contains(&dropped),
        "drop_block rose by {dropped} for {n} datagrams and one SYN: {after}"
    );
    assert_eq!(after["top_blocked"][0]["cidr"], offender_cidr, "{after}");
    assert!(
        after["top_blocked"][0]["drops"].as_u64() >= Some(n + 1),
        "the entry counts its drops: {after}"
    );
}

/// The per-source route limit on two shards, end to end with the kernel: a source over its
/// `route = "public"` rate gets 429s with `Retry-After` and the RateLimit headers (its one
/// connection sits on one shard, which enforces half the burst), is reported and listed with
/// reason `ratelimit`, is dropped by XDP on the veth, and is served again once the short
/// `gate.block_ttl_s` has passed.
#[test]
fn route_limit_offender_is_blocked_in_the_kernel_then_served_after_the_ttl() {
    let Some(_g) = setup("gate e2e route-limit offender with TTL") else {
        return;
    };
    let ns = NetNs::veth('r');
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
    let [good, offender] = ns.peer_ips;
    let (block_after, ttl_s) = (3usize, 3u64);
    let config = dir.path().join("subzero.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\ndata_dir = \"{}\"\nshards = 2\n\
             [gate]\nxdp = [\"{}\"]\nblock_ttl_s = {ttl_s}\n\
             [ratelimit]\nblock_after_rejections = {block_after}\n\
             [[ratelimit.rules]]\nroute = \"public\"\nrate_per_s = 1.0\nburst = 4\n",
            dir.path().join("data").display(),
            ns.host_if
        ),
    )
    .unwrap();
    let args = vec!["--config".to_owned(), config.display().to_string()];
    let _server = Server::start(&args, None, addr, &ns, good);
    assert_eq!(block_list(), serde_json::json!([]), "nothing blocked yet");

    let (statuses, heads) = ns.run(move || {
        let mut s = support::connect_from(offender, addr, Duration::from_secs(5)).unwrap();
        let (mut statuses, mut heads) = (Vec::new(), Vec::new());
        while statuses.iter().filter(|&&c| c == 429).count() < block_after {
            assert!(statuses.len() < 20, "never refused: {statuses:?}");
            let (status, head) = healthz_keep_alive(&mut s).expect("an answer before the block");
            statuses.push(status);
            heads.push(head);
        }
        abort_on_close(&s);
        (statuses, heads)
    });
    let mut want = vec![200; 2];
    want.extend(vec![429; block_after]);
    assert_eq!(
        statuses, want,
        "this shard's half of the burst, then refused"
    );
    let refused = &heads[2];
    assert!(refused.contains("retry-after: 2\r\n"), "{refused}");
    assert!(
        refused.contains("ratelimit-policy: \"public\";q=4;w=4\r\n"),
        "{refused}"
    );
    assert!(
        refused.contains("ratelimit: \"public\";r=0;t=2\r\n"),
        "{refused}"
    );

    let list = support::wait_blocklisted("the offender on the blocklist", COUNT_WAIT);
    assert_eq!(list[0]["cidr"], format!("{offender}/32"), "{list}");
    assert_eq!(list[0]["reason"], "ratelimit", "{list}");
    assert!(list[0]["expires_in_s"].as_u64() <= Some(ttl_s), "{list}");

    // Dropped in the kernel while listed (one SYN counted as drop_block), the other source
    // served; then, past the TTL, served again.
    let before = stats();
    let blocked = ns.run(move || healthz_from(offender, addr, T));
    assert!(blocked.is_err(), "the offender gets no answer: {blocked:?}");
    wait_for("drop_block counts its SYN", COUNT_WAIT, || {
        let doc = stats();
        if counter(&doc, "drop_block") > counter(&before, "drop_block") {
            Ok(())
        } else {
            Err(doc)
        }
    });
    let served = ns.run(move || healthz_from(good, addr, T));
    assert!(served.is_ok_and(|l| l.contains("200")));
    wait_for("the offender served after the TTL", COUNT_WAIT, || match ns
        .run(move || healthz_from(offender, addr, T))
    {
        Ok(line) if line.contains("200") => Ok(()),
        other => Err(other),
    });
}

/// Makes `close` send one RST instead of a FIN that would be retransmitted.
fn abort_on_close(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket the stream owns, with a value of the size it states.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
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

/// `serve` arguments for the gate on `iface`, TCP on `addr`, a Unix socket under `dir`, root
/// as an admin uid over it and an admin token file; also the socket's and the token file's path.
fn unix_admin_args(
    addr: SocketAddr,
    dir: &Path,
    iface: &str,
) -> (Vec<String>, std::path::PathBuf, std::path::PathBuf) {
    let sock = dir.join("sz.sock");
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, "admin-token-for-gate-tests\n").unwrap();
    let config = dir.join("sz.toml");
    std::fs::write(
        &config,
        "[admin]\ntoken_file = \"admin.token\"\nunix_uids = [0]\n",
    )
    .unwrap();
    let mut args = serve_args(addr, &dir.join("data"), iface);
    args.extend([
        "--listen".into(),
        format!("unix:{}", sock.display()),
        "--config".into(),
        config.display().to_string(),
    ]);
    (args, sock, token_file)
}

/// The `gate.block.*` audit events as `"action" "resource" "outcome"`, read over the Unix
/// socket (as an `[admin] unix_uids` uid).
fn block_audit_events(sock: &Path) -> Vec<String> {
    let mut conn = std::os::unix::net::UnixStream::connect(sock).unwrap();
    conn.write_all(
        b"GET /v1/audit/events?after=0&limit=1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    doc["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("gate.block."))
        })
        .map(|e| format!("{} {} {}", e["action"], e["resource"], e["outcome"]))
        .collect()
}

/// `subzero block add|del|list --server unix:/path` (and `http://` with the admin token file)
/// edit the running gate through `/v1/block`: the pinned maps show the entry, its packets are
/// dropped, and deleting it lets them through again.
#[test]
fn block_through_the_running_server_over_its_unix_socket() {
    let Some(_g) = setup("gate e2e block --server") else {
        return;
    };
    let ns = NetNs::veth('u');
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
    let [good, bad] = ns.peer_ips;
    let (args, sock, token_file) = unix_admin_args(addr, dir.path(), &ns.host_if);
    let _server = Server::start(&args, None, addr, &ns, good);
    let server = format!("unix:{}", sock.display());
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let out = subzero_ok(&[
        "block",
        "add",
        "198.51.100.9/24",
        "--ttl-s",
        "600",
        "--reason",
        "threat",
        "--server",
        &server,
    ]);
    assert!(
        out.contains("blocked 198.51.100.0/24 (threat) until unix time"),
        "{out}"
    );
    // The pinned maps (no --server) show it.
    let pinned = block_list();
    let entry = pinned
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cidr"] == "198.51.100.0/24")
        .unwrap_or_else(|| panic!("not in the pinned maps: {pinned}"));
    assert_eq!(entry["reason"], "threat");
    let left_s = entry["expires_in_s"].as_u64().unwrap();
    assert!((590..=600).contains(&left_s), "{entry}");
    // The server's own listing names the expiry in unix seconds.
    let listed: serde_json::Value = serde_json::from_str(&subzero_ok(&[
        "block", "list", "--json", "--server", &server,
    ]))
    .unwrap();
    let until = listed["entries"][0]["until_unix_s"].as_u64().unwrap();
    assert!((now_s + 590..=now_s + 602).contains(&until), "{listed}");

    // Live in the kernel: the blocked peer gets nothing, the other one is served.
    subzero_ok(&["block", "add", &bad.to_string(), "--server", &server]);
    let (r_good, r_bad) = ns.run(move || (healthz_from(good, addr, T), healthz_from(bad, addr, T)));
    assert!(
        r_good.as_ref().is_ok_and(|l| l.contains("200")),
        "{r_good:?}"
    );
    assert!(r_bad.is_err(), "blocked source answered: {r_bad:?}");

    // Over TCP the admin token file is needed.
    let url = format!("http://{addr}");
    let refused = subzero(&["block", "del", &bad.to_string(), "--server", &url]);
    assert_eq!(refused.status.code(), Some(1));
    let token_arg = token_file.display().to_string();
    subzero_ok(&[
        "block",
        "del",
        &bad.to_string(),
        "--server",
        &url,
        "--admin-token-file",
        &token_arg,
    ]);
    let r_bad = ns.run(move || healthz_from(bad, addr, T));
    assert!(r_bad.as_ref().is_ok_and(|l| l.contains("200")), "{r_bad:?}");

    subzero_ok(&["block", "del", "198.51.100.0/24", "--server", &server]);
    assert_eq!(
        block_list(),
        serde_json::json!([]),
        "gone from the pinned maps"
    );
    let again = subzero(&["block", "del", "198.51.100.0/24", "--server", &server]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("404") && err.contains("not on the blocklist"),
        "{err}"
    );

    // Each add and delete is in the audit log (read over the socket as an admin uid).
    let noted = wait_for("the block edits in the audit log", COUNT_WAIT, || {
        let noted = block_audit_events(&sock);
        if noted.len() >= 5 {
            Ok(noted)
        } else {
            Err(noted)
        }
    });
    let bad_cidr = format!("{bad}/32");
    assert_eq!(
        noted,
        [
            r#""gate.block.add" "198.51.100.0/24" "ok""#.to_owned(),
            format!(r#""gate.block.add" "{bad_cidr}" "ok""#),
            format!(r#""gate.block.del" "{bad_cidr}" "ok""#),
            r#""gate.block.del" "198.51.100.0/24" "ok""#.to_owned(),
            r#""gate.block.del" "198.51.100.0/24" "not_found""#.to_owned(),
        ]
    );
}
