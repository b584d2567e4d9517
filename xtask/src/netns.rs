//! The xdp-flood topology: one network namespace joined to the host by a veth pair, removed
//! on drop; and the UDP flooder `cargo xtask bench` runs inside it.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util;

pub const NS: &str = "szbench";
pub const HOST_IF: &str = "szbench0";
pub const NS_IF: &str = "szbench1";
pub const HOST_ADDR: &str = "10.201.0.1";
/// Legitimate clients use the namespace's first address.
pub const LEGIT_ADDR: &str = "10.201.0.2";
/// The flood comes from a second address, which the gate blocklists.
pub const FLOOD_ADDR: &str = "10.201.0.3";
const PREFIX_LEN: u8 = 24;
/// Upper bounds for the flooder's arguments.
const FLOOD_PPS_MAX: u64 = 10_000_000;
const FLOOD_SECONDS_MAX: u64 = 600;
const FLOOD_PAYLOAD: [u8; 18] = *b"subzero-bench-fld!";

/// A namespace with a veth pair; deleted (with its links) when dropped.
pub struct Netns {
    _private: (),
}

fn ip(args: &[&str]) -> Result<()> {
    util::run(Command::new("ip").args(args))
}

impl Netns {
    /// Creates the topology, removing a stale one first.
    pub fn create() -> Result<Netns> {
        remove();
        let netns = Netns { _private: () };
        let host_cidr = format!("{HOST_ADDR}/{PREFIX_LEN}");
        let legit_cidr = format!("{LEGIT_ADDR}/{PREFIX_LEN}");
        let flood_cidr = format!("{FLOOD_ADDR}/{PREFIX_LEN}");
        ip(&["netns", "add", NS])?;
        ip(&[
            "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF,
        ])?;
        ip(&["link", "set", NS_IF, "netns", NS])?;
        ip(&["addr", "add", &host_cidr, "dev", HOST_IF])?;
        ip(&["link", "set", HOST_IF, "up"])?;
        ip(&["-n", NS, "addr", "add", &legit_cidr, "dev", NS_IF])?;
        ip(&["-n", NS, "addr", "add", &flood_cidr, "dev", NS_IF])?;
        ip(&["-n", NS, "link", "set", NS_IF, "up"])?;
        ip(&["-n", NS, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// `ip netns exec NS PROGRAM`.
    #[allow(
        clippy::unused_self,
        reason = "borrowing the guard proves the namespace exists"
    )]
    pub fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", NS, program]);
        cmd
    }
}

fn remove() {
    // Deleting one end of a veth pair deletes both; errors mean "was not there".
    let quiet = |args: &[&str]| {
        let _ = Command::new("ip")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    };
    quiet(&["link", "del", HOST_IF]);
    quiet(&["netns", "del", NS]);
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove();
    }
}

/// Paces `pps` packets per second in 1 ms slots; returns how many were due by `elapsed`.
pub fn packets_due(pps: u64, elapsed: Duration) -> u64 {
    (u128::from(pps) * elapsed.as_micros() / 1_000_000) as u64
}

/// `xtask flood`: sends UDP datagrams from `src` to `dst` at `pps` for `seconds`, then prints
/// `{"sent":N,"errors":N,"duration_s":F}`.
pub fn flood(src: &str, dst: SocketAddr, pps: u64, seconds: u64) -> Result<()> {
    if pps == 0 || pps > FLOOD_PPS_MAX || seconds == 0 || seconds > FLOOD_SECONDS_MAX {
        bail!("flood: pps must be 1..={FLOOD_PPS_MAX} and seconds 1..={FLOOD_SECONDS_MAX}");
    }
    let socket =
        UdpSocket::bind((src, 0)).with_context(|| format!("could not bind UDP to {src}"))?;
    socket.connect(dst)?;
    let start = Instant::now();
    let deadline = Duration::from_secs(seconds);
    let mut n_sent: u64 = 0;
    let mut n_errors: u64 = 0;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            break;
        }
        let due = packets_due(pps, elapsed);
        while n_sent + n_errors < due {
            match socket.send(&FLOOD_PAYLOAD) {
                Ok(_) => n_sent += 1,
                Err(_) => n_errors += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "{}",
        serde_json::json!({"sent": n_sent, "errors": n_errors, "duration_s": start.elapsed().as_secs_f64()})
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_packets() {
        assert_eq!(packets_due(100_000, Duration::from_millis(10)), 1_000);
        assert_eq!(packets_due(100_000, Duration::from_secs(2)), 200_000);
        assert_eq!(packets_due(1, Duration::from_millis(999)), 0);
    }

    #[test]
    fn flood_rejects_unbounded_arguments() {
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(flood("127.0.0.1", dst, 0, 1).is_err());
        assert!(flood("127.0.0.1", dst, FLOOD_PPS_MAX + 1, 1).is_err());
        assert!(flood("127.0.0.1", dst, 10, FLOOD_SECONDS_MAX + 1).is_err());
    }

    #[test]
    fn flood_sends_to_loopback() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        flood("127.0.0.1", sink.local_addr().unwrap(), 1_000, 1).unwrap();
        let mut buf = [0u8; 64];
        let n = sink.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &FLOOD_PAYLOAD);
    }
}
