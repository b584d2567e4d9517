//! The eBPF gate: the only module that imports aya (loader, pinned maps, blocklist sync, stats CLI).
//!
//! Architecture Invariant: nothing outside `gate/` sees an aya type. The server holds a [`Gate`]
//! (owned by the control-plane thread), the CLI calls the `cli_*` functions, and tests use
//! [`harness::GateHarness`]. Starting the gate never fails the server: any error turns it
//! [`GateMode::Off`] with one warning.
//!
//! Times: the kernel compares blocklist expiry against `CLOCK_BOOTTIME` (`bpf_ktime_get_boot_ns`),
//! so every `now_ns` here is `CLOCK_BOOTTIME` nanoseconds; read it with [`boot_ns`].

mod cidr;
mod cli;
pub mod harness;
mod loader;
mod maps;
mod persist;
mod snapshot;

use std::os::fd::RawFd;
use std::path::PathBuf;

pub use cidr::{parse_block_reason, BlockReason, Cidr, CidrError};
pub use cli::{cli_block_add, cli_block_del, cli_block_list, cli_gate_totals, cli_stats};
pub use maps::{BlockItem, GateMaps, RateItem};
pub use snapshot::GateSnapshot;
pub use subzero_common::{Reason, N_REASONS, PIN_DIR};

/// Gate settings: the one home of the `[gate]` keys and their defaults. `config` parses
/// `[gate]` onto this and validates the ranges once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateConfig {
    /// Interfaces to attach XDP to (driver mode, generic as fallback). Empty → gate off.
    pub xdp_ifaces: Vec<String>,
    /// Attach in generic (SKB) mode only, skipping driver mode (tests, misbehaving drivers).
    pub force_generic: bool,
    /// Attach the socket filter to the listeners on interfaces where XDP could not attach.
    pub socket_filter: bool,
    /// New TCP connections (SYN) per second per source.
    pub syn_rate_per_s: u32,
    /// SYNs a source may send back to back.
    pub syn_burst: u32,
    /// Packets per second per source; 0 (the default) turns the packet bucket off.
    ///
    /// Off by default because one legitimate source can need any rate: nginx or Envoy in front
    /// of subzero sends every user's traffic from one address, and `xdp-flood` in
    /// `cargo xtask bench` measured a 20k packets/s default cutting such a client's goodput by
    /// 60% with 200 ms retransmit stalls. The SYN bucket and the blocklist stay on.
    pub pkt_rate_per_s: u32,
    /// Packets a source may send back to back.
    pub pkt_burst: u32,
    /// TTL of entries added by [`Gate::block`] with `ttl_s: None`.
    pub block_ttl_s: u64,
    /// Keep blocklist entries across restarts (old pins, else `<data_dir>/blocklist.json`).
    pub persist_blocklist: bool,
    /// Where `blocklist.json` lives: `[server] data_dir`, copied by `config` once it is final.
    pub data_dir: PathBuf,
}

impl Default for GateConfig {
    fn default() -> GateConfig {
        GateConfig {
            xdp_ifaces: Vec::new(),
            force_generic: false,
            socket_filter: true,
            syn_rate_per_s: 200,
            syn_burst: 400,
            pkt_rate_per_s: 0,
            pkt_burst: 0,
            block_ttl_s: 300,
            persist_blocklist: true,
            data_dir: PathBuf::from("var/subzero"),
        }
    }
}

/// How the gate is filtering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMode {
    /// XDP in the driver.
    Native,
    /// XDP in generic (SKB) mode.
    Generic,
    /// Socket filter on the listeners only.
    Socket,
    /// Not filtering.
    Off,
}

impl GateMode {
    /// Every mode, for metrics.
    pub const ALL: [GateMode; 4] = [
        GateMode::Native,
        GateMode::Generic,
        GateMode::Socket,
        GateMode::Off,
    ];

    /// `"native"`, `"generic"`, `"socket"` or `"off"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            GateMode::Native => "native",
            GateMode::Generic => "generic",
            GateMode::Socket => "socket",
            GateMode::Off => "off",
        }
    }
}

/// Everything that can go wrong in the gate; each message is one sentence saying what and what to do.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The CLI found no pinned maps.
    #[error("no gate maps pinned at {}: start `subzero serve --xdp IFACE` first", dir.display())]
    NotPinned { dir: PathBuf },
    /// The gate is off, so there is no map to change.
    #[error("the eBPF gate is off (no XDP interface, no privileges, or load failed); blocklist changes need a running gate")]
    Off,
    /// Bad CIDR text.
    #[error(transparent)]
    Cidr(#[from] CidrError),
    /// Bad block reason text.
    #[error("unknown block reason {0:?}: use manual, threat, ratelimit or other")]
    UnknownReason(String),
    /// `block del` of a network that is not on the list.
    #[error("{cidr} is not on the blocklist (see `subzero block list`)")]
    NotBlocked { cidr: Cidr },
    /// The LPM trie is full.
    #[error(
        "the blocklist is full; remove entries with `subzero block del` or wait for TTLs to expire"
    )]
    BlocklistFull,
    /// No interface was configured.
    #[error("no XDP interface configured (`--xdp IFACE` or `[gate] xdp = [...]`)")]
    NoInterfaces,
    /// The embedded object lacks a map.
    #[error("the eBPF object has no map {name}; rebuild subzero")]
    MissingMap { name: &'static str },
    /// The embedded object lacks a program.
    #[error("the eBPF object has no program {name}; rebuild subzero")]
    MissingProgram { name: &'static str },
    /// Loading the object or a program failed (privileges, verifier, empty object).
    #[error("could not load the eBPF gate ({what}): {message}")]
    Load { what: &'static str, message: String },
    /// Every configured interface refused XDP and no socket fallback was possible.
    #[error("XDP could not attach to any of {ifaces:?} and no listener socket was available for the socket filter")]
    NotAttached { ifaces: Vec<String> },
    /// A map operation failed.
    #[error("gate map operation failed ({op}): {source}")]
    Map {
        op: &'static str,
        source: Box<aya::maps::MapError>,
    },
    /// Pinning failed.
    #[error("could not pin a gate map at {}: {message}", path.display())]
    Pin { path: PathBuf, message: String },
    /// A map entry could not be decoded.
    #[error("map {map} holds an entry that does not decode; remove the pins under /sys/fs/bpf/subzero and restart")]
    Corrupt { map: &'static str },
    /// Filesystem or syscall failure.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// `blocklist.json` does not parse.
    #[error("{} is not a valid blocklist file: {message}", path.display())]
    BadBlocklistFile { path: PathBuf, message: String },
}

impl GateError {
    /// Whether this is a usage error (exit code 2) rather than a runtime failure (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, GateError::Cidr(_) | GateError::UnknownReason(_))
    }
}

/// `CLOCK_BOOTTIME` in nanoseconds: the clock the kernel side compares expiry against.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_BOOTTIME always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `until_ns` for a TTL from `now_ns`; a TTL of 0 means forever (stored as 0).
pub fn until_ns(now_ns: u64, ttl_s: u64) -> u64 {
    if ttl_s == 0 {
        0
    } else {
        now_ns
            .saturating_add(ttl_s.saturating_mul(1_000_000_000))
            .max(1)
    }
}

/// The running gate. Owned by the control-plane thread; `Send`, not `Sync`-shared.
///
/// Dropping it detaches XDP (the links close) and leaves the pinned maps for the CLI.
pub struct Gate {
    mode: GateMode,
    ifaces: Vec<(String, GateMode)>,
    // Declared before nothing that needs it: dropping `inner` closes the links.
    inner: Option<loader::Loaded>,
}

impl Gate {
    /// Loads, pins and attaches; never fails: on any error it logs one warning and returns an
    /// `Off` gate. `listener_fds` are the shards' listeners (for the socket-filter fallback).
    pub fn start(cfg: &GateConfig, listener_fds: &[RawFd]) -> Gate {
        match loader::start(cfg, listener_fds) {
            Ok((loaded, mode, ifaces)) => Gate {
                mode,
                ifaces,
                inner: Some(loaded),
            },
            Err(e) => {
                tracing::warn!("eBPF gate off: {e}");
                Gate::off()
            }
        }
    }

    /// A gate that filters nothing.
    pub fn off() -> Gate {
        Gate {
            mode: GateMode::Off,
            ifaces: Vec::new(),
            inner: None,
        }
    }

    /// How it is filtering.
    pub fn mode(&self) -> GateMode {
        self.mode
    }

    /// Per-interface attach modes (`Off` for interfaces that refused XDP).
    pub fn interfaces(&self) -> &[(String, GateMode)] {
        &self.ifaces
    }

    /// Blocks `cidr` until `now_ns + ttl_s` (`None` → the configured `block_ttl_s`; `Some(0)` → forever).
    pub fn block(
        &mut self,
        cidr: Cidr,
        ttl_s: Option<u64>,
        reason: BlockReason,
        now_ns: u64,
    ) -> Result<(), GateError> {
        let loaded = self.inner.as_mut().ok_or(GateError::Off)?;
        let ttl_s = ttl_s.unwrap_or(loaded.block_ttl_s);
        loaded.maps.insert(cidr, reason, until_ns(now_ns, ttl_s))?;
        loaded.save_if_changed();
        Ok(())
    }

    /// Removes the exact entry for `cidr`; `Ok(false)` when it was not there.
    pub fn unblock(&mut self, cidr: Cidr) -> Result<bool, GateError> {
        let loaded = self.inner.as_mut().ok_or(GateError::Off)?;
        let removed = loaded.maps.remove(cidr)?;
        loaded.save_if_changed();
        Ok(removed)
    }

    /// Removes expired entries (call about once a second) and persists the blocklist when it
    /// changed, including changes made by `subzero block` from another process.
    pub fn expire(&mut self) -> usize {
        let Some(loaded) = self.inner.as_mut() else {
            return 0;
        };
        let n_removed = match loaded.maps.expire(boot_ns()) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("gate expire failed: {e}");
                0
            }
        };
        loaded.save_if_changed();
        n_removed
    }

    /// Current entries (for an admin endpoint).
    pub fn blocklist(&self) -> Result<Vec<BlockItem>, GateError> {
        self.inner.as_ref().ok_or(GateError::Off)?.maps.entries()
    }

    /// Plain-data counters for `/metrics`.
    pub fn snapshot(&self) -> GateSnapshot {
        match &self.inner {
            Some(loaded) => GateSnapshot::read(self.mode, &loaded.maps),
            None => GateSnapshot::off(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_is_send_and_off_by_default() {
        fn assert_send<T: Send>() {}
        assert_send::<Gate>();
        let gate = Gate::start(&GateConfig::default(), &[]);
        assert_eq!(gate.mode(), GateMode::Off);
        assert_eq!(GateMode::Generic.as_str(), "generic");
    }

    #[test]
    fn until_ns_zero_ttl_is_forever() {
        assert_eq!(until_ns(5, 0), 0);
        assert_eq!(until_ns(5, 2), 2_000_000_005);
        assert_eq!(until_ns(u64::MAX - 1, 10), u64::MAX);
    }
}
