//! A block decided on one node of a fleet lands in another node's kernel gate: node A (no
//! gate, loopback) scores a credential-stuffing run through `POST /v1/threat/check` and
//! blocks the attacker; node B, with the XDP gate on a veth into a network namespace, gets
//! the entry through the Redis feed into its pinned `SZ_BLOCK_V4` (`subzero block list
//! --json`), drops the attacker's packets while the other namespace address is served, and
//! lets it back in when the entry's TTL has passed. A manual block added and removed through
//! A's `/v1/block` reaches B's gate the same way.
//!
//! Root and redis-server are required; with `CI=true` either missing fails the test,
//! otherwise it is skipped with a printed reason. It takes `support::PinLock` like every
//! test that touches the pins.

mod common;
mod redis_support;
#[path = "gate_support.rs"]
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{block_list, healthz_from, privileged, wait_for, NetNs, PinLock};

const T: Duration = Duration::from_millis(700);
const WAIT: Duration = Duration::from_secs(10);
const ADMIN: &str = "admin-token-for-gate-fleet";

/// `subzero serve`, SIGKILLed on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &std::path::Path, listen: SocketAddr, redis: &str, node: &str, gate: &str) -> Serve {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    let config = dir.join("subzero.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{listen}\"\ndata_dir = \"{}\"\nshards = 2\n\
             [admin]\ntoken_file = \"admin.token\"\n\
             [threat]\nblock_ttl_s = 3\n\
             [fleet]\nredis = \"{redis}\"\nnode_id = \"{node}\"\n{gate}",
            dir.join("data").display(),
        ),
    )
    .unwrap();
    let child = Command::new(common::bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start subzero serve");
    Serve(child)
}

#[test]
fn a_block_decided_on_one_node_is_enforced_by_another_nodes_xdp_gate_until_its_ttl() {
    if !privileged("fleet block in another node's gate")
        || !redis_support::available("fleet gate test")
    {
        return;
    }
    let _pins = PinLock::take_and_clear_pins();
    let redis = redis_support::Redis::start();
    let ns = NetNs::veth('f');
    let root = tempfile::tempdir().unwrap();
    let [caller, attacker] = ns.peer_ips;

    // B: the gate on the veth, listening on the root side of it.
    let b_addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
    let _b = serve(
        &root.path().join("b"),
        b_addr,
        &redis.url(),
        "b",
        &format!("[gate]\nxdp = [\"{}\"]\n", ns.host_if),
    );
    wait_for(
        "B answers /healthz from the namespace",
        Duration::from_secs(30),
        || match ns.run(move || healthz_from(attacker, b_addr, T)) {
            Ok(line) if line.contains("200") => Ok(()),
            other => Err(other),
        },
    );
    assert_eq!(block_list(), serde_json::json!([]), "nothing blocked yet");

    // A: no gate, on loopback; its login service reports 25 failed logins from the attacker.
    let a_addr = SocketAddr::from(([127, 0, 0, 1], support::free_port([127, 0, 0, 1].into())));
    let _a = serve(&root.path().join("a"), a_addr, &redis.url(), "a", "");
    let mut conn = common::poll("A is up", WAIT, || {
        std::net::TcpStream::connect(a_addr)
            .ok()
            .map(|_| common::Conn::new(a_addr))
    });
    let mut actions = Vec::new();
    for i in 0..25 {
        let body = format!(
            r#"{{"event":"login","subject":"user{i}","source_ip":"{attacker}","outcome":"failure"}}"#
        );
        conn.send(
            "POST",
            "/v1/threat/check",
            &[("Authorization", &common::bearer(ADMIN))],
            &body,
        );
        let resp = conn.read_response();
        assert_eq!(resp.status, 200, "{resp:?}");
        actions.push(resp.json()["action"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        actions.last().map(String::as_str),
        Some("block"),
        "{actions:?}"
    );

    // On B's pinned map, with the threat TTL, and enforced by B's XDP program.
    let list = support::wait_blocklisted("the attacker in B's pinned blocklist", WAIT);
    assert_eq!(list[0]["cidr"], format!("{attacker}/32"), "{list}");
    assert_eq!(list[0]["reason"], "threat", "{list}");
    assert!(list[0]["expires_in_s"].as_u64() <= Some(3), "{list}");
    let blocked = ns.run(move || healthz_from(attacker, b_addr, T));
    assert!(blocked.is_err(), "B drops the attacker: {blocked:?}");
    let served = ns.run(move || healthz_from(caller, b_addr, T));
    assert!(
        served.is_ok_and(|l| l.contains("200")),
        "B serves the caller"
    );

    // Gone after the TTL, on B too.
    wait_for("the attacker served by B after the TTL", WAIT, || match ns
        .run(move || healthz_from(attacker, b_addr, T))
    {
        Ok(line) if line.contains("200") => Ok(()),
        other => Err(other),
    });
    support::wait_blocklist_empty("B's blocklist empty again", WAIT);

    manual_block_and_removal_reach_b(&mut conn, &ns, attacker, b_addr);
}

/// A manual block through A's admin endpoint, then its removal, both reach B's gate.
fn manual_block_and_removal_reach_b(
    conn: &mut common::Conn,
    ns: &NetNs,
    attacker: std::net::Ipv4Addr,
    b_addr: SocketAddr,
) {
    let admin = [("Authorization", common::bearer(ADMIN))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = format!(r#"{{"cidr":"{attacker}/32","ttl_s":600,"reason":"manual"}}"#);
    conn.send("POST", "/v1/block", &admin, &body);
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{resp:?}");
    let list = support::wait_blocklisted("the manual block in B's pinned blocklist", WAIT);
    assert_eq!(list[0]["reason"], "manual", "{list}");
    let blocked = ns.run(move || healthz_from(attacker, b_addr, T));
    assert!(
        blocked.is_err(),
        "B drops the manually blocked source: {blocked:?}"
    );
    conn.send(
        "DELETE",
        "/v1/block",
        &admin,
        &format!(r#"{{"cidr":"{attacker}/32"}}"#),
    );
    assert_eq!(conn.read_response().status, 200);
    support::wait_blocklist_empty("the manual block lifted on B", WAIT);
}
