//! Listening sockets beside the per-shard TCP one: the shared Unix-socket listener (stale-file
//! replacement, mode and group), and what a connection's peer is (IP or `SO_PEERCRED` uid).

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

/// A shard's listening sockets: its own SO_REUSEPORT TCP socket and, when configured, the one
/// Unix-socket listener that every shard arms a single-shot accept on (the kernel hands each
/// connection to one of them). At least one of the two is there.
pub struct Listeners {
    /// This shard's TCP listener; `None` for a Unix-only server.
    pub tcp: Option<OwnedFd>,
    /// The shared Unix-socket listener.
    pub unix: Option<Arc<OwnedFd>>,
}

impl From<OwnedFd> for Listeners {
    fn from(tcp: OwnedFd) -> Self {
        Self {
            tcp: Some(tcp),
            unix: None,
        }
    }
}

pub(super) fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: valid fd, c_int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
}

/// A Unix-socket peer's credentials from `SO_PEERCRED`, as of its `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Its effective uid: the rate-limit and admin key.
    pub uid: u32,
    /// Its pid (for audit events and logs; several pids of one uid share one budget).
    pub pid: u32,
}

/// The credentials of a Unix-socket peer (`SO_PEERCRED`), `None` when the kernel does not say.
pub(super) fn peer_cred(fd: RawFd) -> Option<PeerCred> {
    // SAFETY: all-zero is a valid ucred.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    (rc == 0).then_some(PeerCred {
        uid: cred.uid,
        pid: u32::try_from(cred.pid).unwrap_or(0),
    })
}

pub(super) fn peer_ip(fd: RawFd) -> IpAddr {
    // SAFETY: zeroed storage is valid; getpeername writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    let rc = unsafe { libc::getpeername(fd, (&raw mut storage).cast(), &raw mut len) };
    if rc != 0 {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    }
    super::sockaddr_to(&storage).map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    })
}

/// The per-source key of a Unix-socket peer: `100::<uid>` in the discard-only prefix
/// 100::/64 (RFC 6666), which no real packet comes from, so the per-source limiters key Unix
/// peers by uid with no second code path; `is_unix_peer_key` keeps it off the kernel blocklist.
pub fn unix_peer_key(uid: u32) -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::new(
        0x0100,
        0,
        0,
        0,
        0,
        0,
        (uid >> 16) as u16,
        (uid & 0xffff) as u16,
    ))
}

/// Whether `ip` is a [`unix_peer_key`] rather than a network address.
pub fn is_unix_peer_key(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[..6] == [0x0100, 0, 0, 0, 0, 0])
}

/// Binds the Unix stream socket at `path`, then applies `mode` (e.g. `0o660`) and `gid`.
///
/// A file already at `path` is replaced only when it is a socket and nothing answers a connect
/// on it (a stale socket left by a crash); a live socket or any other kind of file is an error,
/// so a second server or a mistyped path never deletes something it should not.
pub fn bind_unix_listener(path: &Path, mode: u32, gid: Option<u32>) -> io::Result<OwnedFd> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "a server already answers on this socket",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
            Err(e) => return Err(e),
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(OwnedFd::from(listener))
}

/// Removes the socket file at `path` if it is still a socket (at shutdown).
pub fn remove_unix_socket(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// The gid of group `name`, or `None` when there is no such group.
pub fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.split(':');
        (parts.next()? == name).then_some(())?;
        parts.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sz-listen-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_stale_socket_is_replaced_and_mode_applied() {
        use std::os::unix::fs::PermissionsExt;
        let path = dir().join("s.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves a socket file nobody answers on
        assert!(path.exists());
        let fd = bind_unix_listener(&path, 0o640, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        UnixStream::connect(&path).unwrap();
        drop(fd);
        remove_unix_socket(&path);
        assert!(!path.exists());
    }

    #[test]
    fn a_live_socket_or_a_plain_file_is_left_alone() {
        let d = dir();
        let live = d.join("live.sock");
        let _held = UnixListener::bind(&live).unwrap();
        let err = bind_unix_listener(&live, 0o660, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        UnixStream::connect(&live).unwrap();
        let file = d.join("plain");
        std::fs::write(&file, b"keep").unwrap();
        assert!(bind_unix_listener(&file, 0o660, None).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    }

    #[test]
    fn peer_cred_names_the_connecting_uid_and_pid() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_cred(std::os::fd::AsRawFd::as_raw_fd(&a)).unwrap();
        assert_eq!(cred.pid, std::process::id());
        // SAFETY: geteuid has no preconditions.
        assert_eq!(cred.uid, unsafe { libc::geteuid() });
    }

    #[test]
    fn unix_peer_keys_are_per_uid_and_never_network_addresses() {
        assert_ne!(unix_peer_key(0), unix_peer_key(65534));
        assert!(is_unix_peer_key(unix_peer_key(u32::MAX)));
        assert!(!is_unix_peer_key("127.0.0.1".parse().unwrap()));
        assert!(!is_unix_peer_key("::1".parse().unwrap()));
    }

    #[test]
    fn group_names_resolve() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
    }
}
