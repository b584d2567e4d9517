//! Shared helpers for the privileged gate tests: root check, network namespaces with veth pairs, source-bound clients, raw SYN floods.
//!
//! Included by the gate test files with `#[path = "gate_support.rs"] mod support;`. Everything a
//! test creates (namespaces, links) carries the test process id in its name and is removed on
//! drop, also when the test fails.
//!
//! Waiting is always a poll against a deadline ([`wait_for`]): a sleep never stands in for
//! "the thing has happened".
#![allow(
    dead_code,
    reason = "included by several test files, each using a different subset"
)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::time::{Duration, Instant};

/// The lock every gate test binary takes before touching `/sys/fs/bpf/subzero`.
pub const LOCK_PATH: &str = "/run/subzero-gate-tests.lock";
/// The gate's pin directory (`subzero_common::PIN_DIR`, repeated so this file needs no crate).
pub const PIN_DIR: &str = "/sys/fs/bpf/subzero";
/// Longest wait for another test run to release [`LOCK_PATH`]: longer than any gate test binary
/// takes, short enough that a hung holder fails the run instead of stalling it.
const MAX_LOCK_WAIT: Duration = Duration::from_mins(10);
/// Pause between two polls in [`wait_for`] and while waiting for the lock.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Exclusive use of the pinned gate maps, across threads and processes: an `flock` on
/// [`LOCK_PATH`], released when dropped (or when the process dies, however it dies).
///
/// Every taker opens the file itself, so two threads of one test binary exclude each other as
/// well as two concurrent `cargo test` runs. The descriptor is close-on-exec: a helper process
/// spawned while it is held neither inherits nor keeps the lock.
pub struct PinLock {
    file: File,
}

impl PinLock {
    /// Takes the lock (polling, at most [`MAX_LOCK_WAIT`]) and removes every pin an earlier
    /// test left, so each test starts from "no gate maps pinned".
    pub fn take_and_clear_pins() -> PinLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_PATH)
            .unwrap_or_else(|e| panic!("open {LOCK_PATH}: {e}"));
        let deadline = Instant::now() + MAX_LOCK_WAIT;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::EWOULDBLOCK),
                "flock {LOCK_PATH}: {err}"
            );
            assert!(
                Instant::now() < deadline,
                "{LOCK_PATH} still held by another gate test run after {MAX_LOCK_WAIT:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
        if let Ok(rd) = std::fs::read_dir(PIN_DIR) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        PinLock { file }
    }
}

/// Polls `probe` every few milliseconds until it returns `Some`, and returns that; panics with
/// `what` and the last observation when `timeout` passes first. The poll count is bounded by
/// the timeout.
pub fn wait_for<T, O: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, O>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "not within {timeout:?}: {what}; last seen: {last:?}"
            ),
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// True when the test may run; false (after printing why) when it should skip. Panics under
/// `CI=true` when privileges are missing, so CI never silently skips.
pub fn privileged(what: &str) -> bool {
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let have_ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && have_ip {
        return true;
    }
    let why = if root {
        "the `ip` tool (iproute2) is missing"
    } else {
        "not root"
    };
    assert!(!ci, "CI=true but {why}: {what} must run in CI");
    eprintln!("skipping {what}: {why}");
    false
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip ARGS`, ignoring failure (cleanup).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// A network namespace joined to the root namespace by a veth pair.
///
/// Root side: `host_if` with `host_ip/24`. Namespace side: `peer_if` with two addresses
/// (`peer_ips`), so tests can send from a blocked and an allowed source.
pub struct NetNs {
    pub name: String,
    pub host_if: String,
    pub peer_if: String,
    pub host_ip: Ipv4Addr,
    pub peer_ips: [Ipv4Addr; 2],
}

impl NetNs {
    /// Creates the namespace and the veth pair. `tag` (one char) keeps names unique per test.
    pub fn veth(tag: char) -> NetNs {
        let pid = std::process::id();
        let n = pid % 100_000;
        let name = format!("szgate-{pid}-{tag}");
        let host_if = format!("szh{n}{tag}");
        let peer_if = format!("szp{n}{tag}");
        // 10.(200..250).(pid-derived).0/24: unlikely to collide with anything on the host.
        let second = 200 + (tag as u32 % 50) as u8;
        let third = (pid % 250) as u8 + 1;
        let host_ip = Ipv4Addr::new(10, second, third, 1);
        let peer_ips = [
            Ipv4Addr::new(10, second, third, 2),
            Ipv4Addr::new(10, second, third, 3),
        ];
        // Leftovers from an earlier run with the same pid.
        ip_quiet(&["netns", "del", &name]);
        ip_quiet(&["link", "del", &host_if]);
        let ns = NetNs {
            name,
            host_if,
            peer_if,
            host_ip,
            peer_ips,
        };
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.peer_if,
        ]);
        ip(&["link", "set", &ns.peer_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        for a in ns.peer_ips {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &ns.peer_if,
            ]);
        }
        ip(&["-n", &ns.name, "link", "set", &ns.peer_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        // The pair carries traffic once both ends report carrier (operational state UP); IPv4
        // addresses have no duplicate address detection to wait for.
        let (host_if, peer_if, name) = (ns.host_if.clone(), ns.peer_if.clone(), ns.name.clone());
        wait_for("both veth ends up", Duration::from_secs(10), || {
            let host = ip(&["-o", "link", "show", "dev", &host_if]);
            let peer = ip(&["-n", &name, "-o", "link", "show", "dev", &peer_if]);
            if host.contains("state UP") && peer.contains("state UP") {
                Ok(())
            } else {
                Err((host, peer))
            }
        });
        ns
    }

    /// A namespace with only `lo` (for generic-mode tests on loopback).
    pub fn lo_only(tag: char) -> NetNs {
        let pid = std::process::id();
        let name = format!("szgate-{pid}-{tag}");
        ip_quiet(&["netns", "del", &name]);
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        NetNs {
            name,
            host_if: String::new(),
            peer_if: String::new(),
            host_ip: Ipv4Addr::LOCALHOST,
            peer_ips: [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
        }
    }

    /// Runs `f` on a thread that has joined this namespace (network namespace only).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Path of the namespace handle (for `setns`).
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Whether `ip link show dev IFACE` (in the root namespace) reports an XDP program.
    pub fn host_has_xdp(&self) -> bool {
        has_xdp(&ip(&["link", "show", "dev", &self.host_if]))
    }

    /// Whether `lo` inside the namespace reports an XDP program.
    pub fn lo_has_xdp(&self) -> bool {
        has_xdp(&ip(&["-n", &self.name, "link", "show", "dev", "lo"]))
    }
}

fn has_xdp(link_show: &str) -> bool {
    link_show.contains("xdp") || link_show.contains("prog/xdp")
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if !self.host_if.is_empty() {
            ip_quiet(&["link", "del", &self.host_if]);
        }
        ip_quiet(&["netns", "del", &self.name]);
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: valid fd; CLONE_NEWNET only changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// TCP connect from `src` (bound first) to `dst` with a timeout.
pub fn connect_from(
    src: Ipv4Addr,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let IpAddr::V4(dst_ip) = dst.ip() else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    // SAFETY: plain socket calls on an fd we own; sockaddr structs are fully initialised.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = sa(src, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sa(dst_ip, dst.port());
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(err);
            }
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let n = libc::poll(&raw mut pfd, 1, timeout.as_millis() as i32);
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ));
        }
        let mut so_err: libc::c_int = 0;
        let mut so_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut so_err).cast(),
            &raw mut so_len,
        );
        if so_err != 0 {
            return Err(std::io::Error::from_raw_os_error(so_err));
        }
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(stream)
    }
}

/// `GET /healthz` from `src`; `Ok(status line)` or the error (timeout when the gate drops us).
pub fn healthz_from(src: Ipv4Addr, dst: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut s = connect_from(src, dst, timeout)?;
    s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {dst}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 64 * 1024 {
                    break;
                }
            }
            Err(e) if buf.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// Sends `n` crafted packets from `src` to `dst:port` through a raw IPv4 socket (`IP_HDRINCL`),
/// 256 per `sendmmsg`: TCP SYNs with varying source ports, or UDP datagrams. Returns how many
/// the kernel accepted.
pub fn raw_flood(src: Ipv4Addr, dst: Ipv4Addr, port: u16, n: usize, syn: bool) -> usize {
    const BATCH: usize = 256;
    let packets: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| packet(src, dst, 10_000 + i as u16, port, syn))
        .collect();
    // SAFETY: raw socket owned here and closed at the end; the iovecs and headers point into
    // `packets` and `to`, which outlive every call.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        );
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let on: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_HDRINCL,
            (&raw const on).cast(),
            4,
        );
        let mut to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut iovs: Vec<libc::iovec> = packets
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut h: libc::msghdr = std::mem::zeroed();
                h.msg_name = (&raw mut to).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_iov = iov;
                h.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                }
            })
            .collect();
        let mut sent = 0;
        let mut n_errors = 0;
        while sent < n && n_errors < 1_000 {
            let want = (n - sent).min(BATCH);
            let rc = libc::sendmmsg(fd, msgs.as_mut_ptr(), want as u32, 0);
            if rc > 0 {
                sent += rc as usize;
            } else {
                // ENOBUFS under pressure: back off briefly.
                n_errors += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        libc::close(fd);
        sent
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet with a TCP SYN or an 18-byte UDP payload, valid checksums.
fn packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    let l4: Vec<u8> = if syn {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&u32::from(sport).wrapping_mul(2_654_435_761).to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x02;
        t[14..16].copy_from_slice(&64_240u16.to_be_bytes());
        t
    } else {
        let mut u = vec![0u8; 26];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&26u16.to_be_bytes());
        u
    };
    let proto = if syn { 6u8 } else { 17u8 };
    let mut pseudo = Vec::with_capacity(12 + l4.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&l4);
    let csum = checksum(&pseudo);
    let mut l4 = l4;
    let at = if syn { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(&l4);
    h
}

/// A free TCP port on `ip` (bind to 0 and read it back).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// SYN-floods `dst` from `flooder` (`n` packets) while `good` probes `/healthz` three times
/// from the same namespace; returns (SYNs sent, probes answered 200).
pub fn flood_while_probing(
    ns: &NetNs,
    flooder: Ipv4Addr,
    good: Ipv4Addr,
    dst: SocketAddr,
    n: usize,
) -> (usize, usize) {
    let path = ns.path();
    let host_ip = ns.host_ip;
    let flood = std::thread::spawn(move || {
        enter_netns(&path);
        raw_flood(flooder, host_ip, dst.port(), n, true)
    });
    let served = ns.run(move || {
        (0..3)
            .filter(|_| {
                healthz_from(good, dst, Duration::from_secs(2)).is_ok_and(|l| l.contains("200"))
            })
            .count()
    });
    (flood.join().unwrap(), served)
}

/// `subzero ARGS` as a second process (the gate CLI against the pinned maps); panics with its
/// stderr unless it exits 0. Returns its stdout.
pub fn subzero_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_subzero"))
        .args(args)
        .output()
        .expect("run subzero");
    assert!(
        out.status.success(),
        "subzero {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pinned blocklist, as `subzero block list --json` prints it.
pub fn block_list() -> serde_json::Value {
    serde_json::from_str(&subzero_ok(&["block", "list", "--json"])).expect("block list --json")
}

/// Polls the pinned blocklist until it lists something (at most `timeout`); returns it.
pub fn wait_blocklisted(what: &str, timeout: Duration) -> serde_json::Value {
    wait_for(what, timeout, || {
        let list = block_list();
        if list.as_array().is_some_and(|v| !v.is_empty()) {
            Ok(list)
        } else {
            Err(list)
        }
    })
}

/// Polls the pinned blocklist until it is empty (at most `timeout`).
pub fn wait_blocklist_empty(what: &str, timeout: Duration) {
    wait_for(what, timeout, || {
        let list = block_list();
        if list == serde_json::json!([]) {
            Ok(())
        } else {
            Err(list)
        }
    });
}
