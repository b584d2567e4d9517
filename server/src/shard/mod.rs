//! The thread-per-core runtime: one pinned io_uring loop per shard; the only module that drives
//! sockets.
//!
//! Each shard owns a ring (SINGLE_ISSUER + DEFER_TASKRUN where the kernel has them), its own
//! SO_REUSEPORT listener with a multishot accept, multishot receives into a provided-buffer
//! ring, and a slab of connections. Requests are parsed straight out of the receive buffer;
//! every response produced by one pass is written with one send per connection; the loop enters
//! the kernel once per iteration (`submit_with_args`: submit, and wait with a timeout only when
//! idle). What a request *means* lives behind [`Handler`], so
//! nothing outside this module knows how the loop is built.

mod bufring;
mod listen;
pub mod mesh;
mod runtime;
pub mod spsc;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};

pub use listen::{
    bind_unix_listener, group_id, is_unix_peer_key, remove_unix_socket, unix_peer_key, Listeners,
    PeerCred,
};
pub use runtime::{run_shard, RuntimeStats, ShardLimits, MAX_CONNECTIONS_PER_SHARD};

use crate::http::Request;

/// Identifies a deferred response: the handler answers it later through [`Handler::on_message`]
/// or [`Handler::background`].
pub type Ticket = u64;

/// What the handler did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response is already in the output buffer.
    Done,
    /// The response comes later under this ticket (from [`Cx::defer`]).
    Deferred(Ticket),
    /// Not handled: the request needs costly work and this pass's budget for it is spent.
    /// Nothing may have been written; the runtime offers the same request again at the
    /// connection's next turn, after the other connections had theirs.
    Later,
}

/// Per-request context the runtime hands to the handler.
pub struct Cx<'a> {
    /// Source address of the connection; for a Unix-socket peer its per-uid key
    /// ([`unix_peer_key`]), so per-source limits apply per uid.
    pub peer: IpAddr,
    /// `SO_PEERCRED` uid of a Unix-socket peer; `None` over TCP.
    pub peer_uid: Option<u32>,
    /// `SO_PEERCRED` pid of a Unix-socket peer (for audit events and logs only; limits and
    /// admin checks key on the uid); `None` over TCP.
    pub peer_pid: Option<u32>,
    /// Wall clock, unix seconds, read once per loop iteration.
    pub now_s: u64,
    /// Shard index.
    pub shard_idx: usize,
    /// Loop pass number: per-pass budgets reset when it changes.
    pub pass: u64,
    /// Runtime counters of this shard (for `/metrics`).
    pub runtime: &'a RuntimeStats,
    next_ticket: &'a mut Ticket,
}

impl Cx<'_> {
    /// Allocates a ticket for a deferred response.
    pub fn defer(&mut self) -> Ticket {
        *self.next_ticket += 1;
        *self.next_ticket
    }
}

/// Deferred responses that became ready: `(ticket, whole HTTP response bytes)`.
pub type Ready = Vec<(Ticket, Vec<u8>)>;

/// A shard's request logic. Built on the shard's own thread; never shared.
pub trait Handler {
    /// Messages from the control plane and other shards.
    type Msg: Send + 'static;

    /// Answers one request: writes the whole response to `out` and returns `Done`, or returns
    /// `Deferred` with a ticket from `cx.defer()` and answers later.
    fn handle(&mut self, req: &Request<'_>, cx: &mut Cx<'_>, out: &mut Vec<u8>) -> Outcome;

    /// Handles one mesh message; may complete deferred responses.
    fn on_message(&mut self, msg: Self::Msg, now_s: u64, ready: &mut Ready);

    /// Background work (pool refill, cache sweeps, metrics) bounded by `budget` units. Returns
    /// true when more work is pending, so the loop polls instead of sleeping.
    fn background(&mut self, now_s: u64, budget: u32, ready: &mut Ready) -> bool;
}

/// Creates a listening socket with SO_REUSEPORT so each shard can have its own.
pub fn bind_listener(addr: SocketAddr, backlog: i32) -> std::io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); fd checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: valid fd and a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let (storage, len) = sockaddr_of(addr);
    // SAFETY: storage holds a sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&raw const storage).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: bound socket.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned)
}

/// The address a listener actually bound (port 0 resolves here).
pub fn local_addr(fd: &OwnedFd) -> std::io::Result<SocketAddr> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage is large enough for any address.
    if unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut storage).cast(), &raw mut len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    sockaddr_to(&storage).ok_or_else(|| std::io::Error::other("unknown address family"))
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

pub(crate) fn sockaddr_to(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says this is a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*std::ptr::from_ref(storage).cast() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this is a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 = unsafe { &*std::ptr::from_ref(storage).cast() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}
