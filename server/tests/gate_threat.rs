//! A credential-stuffing run through `POST /v1/threat/check` blocks its source in the kernel:
//! the real binary on two shards with the XDP gate on a veth, the login service's checks sent
//! from one address inside a network namespace and reporting another (`source_ip` in the
//! body, the end user's address) as the attacker; the 25th check answers `block`, the
//! attacker is listed by `subzero block list --json` with reason `threat` and
//! `threat.block_ttl_s` (not the gate's longer `block_ttl_s`), its packets are dropped by XDP
//! while the caller is still served, and it is served again after the TTL.
//!
//! Root is required; with `CI=true` missing privileges fail the test, otherwise it is skipped
//! with a printed reason. It shares the pins with the other gate tests, so it takes
//! `support::PinLock`.

#[path = "gate_support.rs"]
mod support;

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{
    block_list, connect_from, healthz_from, privileged, subzero_ok, wait_for, NetNs, PinLock,
};

const T: Duration = Duration::from_millis(700);
const WAIT: Duration = Duration::from_secs(10);
const ADMIN: &str = "admin-token-for-gate-threat";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_subzero")
}

fn drop_block() -> u64 {
    let doc: serde_json::Value =
        serde_json::from_str(&subzero_ok(&["stats", "--json"])).expect("stats --json");
    doc["counters"]["drop_block"]
        .as_u64()
        .unwrap_or_else(|| panic!("no drop_block in {doc}"))
}

/// `POST path` with the admin token from `src` on a new connection: (status, body).
fn post_from(src: Ipv4Addr, addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = connect_from(src, addr, Duration::from_secs(5)).expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read to close");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// `subzero serve`, SIGKILLed on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `subzero serve` on two shards with the gate on `ns`'s veth and waits until a
/// namespace address gets `/healthz`.
fn start(
    ns: &NetNs,
    dir: &std::path::Path,
    addr: SocketAddr,
    gate_ttl_s: u64,
    threat_ttl_s: u64,
) -> Serve {
    let probe = ns.peer_ips[0];
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    let config = dir.join("subzero.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\ndata_dir = \"{}\"\nshards = 2\n\
             [admin]\ntoken_file = \"admin.token\"\n\
             [gate]\nxdp = [\"{}\"]\nblock_ttl_s = {gate_ttl_s}\n\
             [threat]\nblock_ttl_s = {threat_ttl_s}\n",
            dir.join("data").display(),
            ns.host_if
        ),
    )
    .unwrap();
    let child = Command::new(bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start subzero serve");
    let server = Serve(child);
    wait_for(
        "the server answers /healthz",
        Duration::from_secs(30),
        || match ns.run(move || healthz_from(probe, addr, T)) {
            Ok(line) if line.contains("200") => Ok(()),
            other => Err(other),
        },
    );
    server
}

#[test]
fn credential_stuffing_blocks_the_reported_source_in_the_kernel_until_the_threat_ttl() {
    if !privileged("gate threat block") {
        return;
    }
    let _pins = PinLock::take_and_clear_pins();
    let ns = NetNs::veth('t');
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
    let [caller, attacker] = ns.peer_ips;
    let (gate_ttl_s, threat_ttl_s) = (900u64, 3u64);
    let _server = start(&ns, dir.path(), addr, gate_ttl_s, threat_ttl_s);
    assert_eq!(block_list(), serde_json::json!([]), "nothing blocked yet");

    // The login service (caller) reports 25 failed logins of 25 users from the attacker, one
    // connection each, so both shards receive some.
    let actions: Vec<String> = ns.run(move || {
        (0..25)
            .map(|i| {
                let body = format!(
                    r#"{{"event":"login","subject":"user{i}","source_ip":"{attacker}","outcome":"failure"}}"#
                );
                let (status, out) = post_from(caller, addr, "/v1/threat/check", &body);
                assert_eq!(status, 200, "{out}");
                let out: serde_json::Value = serde_json::from_str(&out).expect("JSON");
                out["action"].as_str().unwrap().to_owned()
            })
            .collect()
    });
    assert_eq!(
        actions.iter().position(|a| a == "block"),
        Some(24),
        "{actions:?}"
    );

    let list = support::wait_blocklisted("the attacker on the blocklist", WAIT);
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "only the attacker: {list}"
    );
    assert_eq!(list[0]["cidr"], format!("{attacker}/32"), "{list}");
    assert_eq!(list[0]["reason"], "threat", "{list}");
    assert!(
        list[0]["expires_in_s"].as_u64() <= Some(threat_ttl_s),
        "threat.block_ttl_s, not the gate's {gate_ttl_s}: {list}"
    );

    // Dropped in XDP while listed; the caller is still served.
    let before = drop_block();
    let blocked = ns.run(move || healthz_from(attacker, addr, T));
    assert!(blocked.is_err(), "the attacker gets no answer: {blocked:?}");
    wait_for("drop_block counts its SYN", WAIT, || {
        let now = drop_block();
        if now > before {
            Ok(())
        } else {
            Err(now)
        }
    });
    let served = ns.run(move || healthz_from(caller, addr, T));
    assert!(served.is_ok_and(|l| l.contains("200")));
    wait_for("the attacker served after the TTL", WAIT, || {
        match ns.run(move || healthz_from(attacker, addr, T)) {
            Ok(line) if line.contains("200") => Ok(()),
            other => Err(other),
        }
    });
    support::wait_blocklist_empty("the expired entry leaves the list", WAIT);
}
