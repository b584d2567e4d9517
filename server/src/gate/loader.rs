//! Start-up: mount bpffs, read back the old blocklist, replace stale pins, load, pin, attach XDP or the socket filter.

use std::ffi::CString;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use aya::programs::{SocketFilter, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use subzero_common::{GateParams, BPFFS_DIR, PIN_DIR, PROG_SOCKET, PROG_XDP};

use super::maps::{BlockItem, GateMaps};
use super::{boot_ns, persist, GateConfig, GateError, GateMode};

/// The object built by `server/build.rs` (release, bpfel).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/subzero-gate"));

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A loaded gate: the object (owning the XDP links and programs) and the maps.
pub(crate) struct Loaded {
    pub(crate) maps: GateMaps,
    pub(crate) block_ttl_s: u64,
    /// `<data_dir>/blocklist.json` when persisting.
    persist_path: Option<PathBuf>,
    /// Fingerprint of the blocklist last written to `persist_path`.
    saved_fingerprint: Option<u64>,
    // Dropped last: closing the object detaches the XDP links.
    _ebpf: Ebpf,
}

impl Loaded {
    /// Writes `blocklist.json` when the blocklist differs from what was last written.
    pub(crate) fn save_if_changed(&mut self) {
        let Some(path) = &self.persist_path else {
            return;
        };
        let entries = match self.maps.entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("gate: could not read the blocklist to persist it: {e}");
                return;
            }
        };
        let fp = persist::fingerprint(&entries);
        if self.saved_fingerprint == Some(fp) {
            return;
        }
        match persist::save(path, &entries, boot_ns()) {
            Ok(()) => self.saved_fingerprint = Some(fp),
            Err(e) => tracing::warn!("gate: {e}"),
        }
    }
}

/// Loads the embedded object without pinning or attaching anything.
pub(crate) fn load_object() -> Result<Ebpf, GateError> {
    if OBJECT.is_empty() {
        return Err(GateError::Load {
            what: "object",
            message: "subzero was built with AYA_BUILD_SKIP, so it carries no eBPF object".into(),
        });
    }
    let mut ebpf = EbpfLoader::new()
        .load(OBJECT)
        .map_err(|e| GateError::Load {
            what: "object",
            message: e.to_string(),
        })?;
    xdp_program(&mut ebpf)?
        .load()
        .map_err(|e| GateError::Load {
            what: "XDP program",
            message: verbose(&e),
        })?;
    socket_program(&mut ebpf)?
        .load()
        .map_err(|e| GateError::Load {
            what: "socket filter",
            message: verbose(&e),
        })?;
    Ok(ebpf)
}

/// An error with its sources, `a: b: c` (aya keeps the errno in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

fn verbose(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            format!("{io_error}; verifier log:\n{verifier_log}")
        }
        other => chain(other),
    }
}

pub(crate) fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, GateError> {
    ebpf.program_mut(PROG_XDP)
        .ok_or(GateError::MissingProgram { name: PROG_XDP })?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| GateError::Load {
            what: "XDP program",
            message: e.to_string(),
        })
}

pub(crate) fn socket_program(ebpf: &mut Ebpf) -> Result<&mut SocketFilter, GateError> {
    ebpf.program_mut(PROG_SOCKET)
        .ok_or(GateError::MissingProgram { name: PROG_SOCKET })?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| GateError::Load {
            what: "socket filter",
            message: e.to_string(),
        })
}

/// The kernel-side rate parameters for a config.
pub(crate) fn params(cfg: &GateConfig) -> GateParams {
    GateParams::from_rates(
        cfg.syn_rate_per_s,
        cfg.syn_burst,
        cfg.pkt_rate_per_s,
        cfg.pkt_burst,
    )
}

/// What [`start`] hands back: the loaded gate, its mode, and each interface's mode.
pub(crate) type Started = (Loaded, GateMode, Vec<(String, GateMode)>);

pub(crate) fn start(cfg: &GateConfig, listener_fds: &[RawFd]) -> Result<Started, GateError> {
    if cfg.xdp_ifaces.is_empty() {
        return Err(GateError::NoInterfaces);
    }
    let mut ebpf = load_object()?;
    ensure_bpffs()?;
    let pin_dir = Path::new(PIN_DIR);
    let persist_path = cfg
        .persist_blocklist
        .then(|| cfg.data_dir.join("blocklist.json"));
    let now_ns = boot_ns();
    let restore = match &persist_path {
        Some(path) => previous_blocklist(pin_dir, path, now_ns),
        None => Vec::new(),
    };
    remove_stale_pins(pin_dir)?;
    let mut maps = GateMaps::from_ebpf(&mut ebpf, Some(pin_dir))?;
    maps.set_params(params(cfg))?;
    let mut n_restored = 0;
    for item in &restore {
        match maps.insert(item.cidr, item.reason, item.until_ns) {
            Ok(()) => n_restored += 1,
            Err(e) => tracing::warn!("gate: could not restore blocklist entry {}: {e}", item.cidr),
        }
    }
    if n_restored > 0 {
        tracing::info!("gate: restored {n_restored} blocklist entries");
    }

    let mut ifaces = Vec::with_capacity(cfg.xdp_ifaces.len());
    {
        let xdp = xdp_program(&mut ebpf)?;
        for iface in &cfg.xdp_ifaces {
            ifaces.push((iface.clone(), attach_xdp(xdp, iface, cfg.force_generic)));
        }
    }
    let n_failed = ifaces.iter().filter(|(_, m)| *m == GateMode::Off).count();
    let xdp_mode = if ifaces.iter().any(|(_, m)| *m == GateMode::Generic) {
        GateMode::Generic
    } else if n_failed < ifaces.len() {
        GateMode::Native
    } else {
        GateMode::Off
    };
    let mut mode = xdp_mode;
    if n_failed > 0 && cfg.socket_filter && !listener_fds.is_empty() {
        let sock = socket_program(&mut ebpf)?;
        let mut n_attached = 0;
        for &fd in listener_fds {
            // SAFETY: the caller passes listener fds that stay open for the server's lifetime;
            // the borrow only lasts for the setsockopt inside `attach`.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            match sock.attach(borrowed) {
                Ok(()) => n_attached += 1,
                Err(e) => {
                    tracing::warn!("gate: socket filter did not attach to listener fd {fd}: {e}");
                }
            }
        }
        if n_attached > 0 && mode == GateMode::Off {
            tracing::warn!("gate: XDP unavailable on {:?}; filtering with a socket filter on {n_attached} listener(s)", cfg.xdp_ifaces);
            mode = GateMode::Socket;
        }
    }
    if mode == GateMode::Off {
        return Err(GateError::NotAttached {
            ifaces: cfg.xdp_ifaces.clone(),
        });
    }
    tracing::info!(
        "gate: mode {} on {:?}; maps pinned at {PIN_DIR}",
        mode.as_str(),
        ifaces
    );
    let mut loaded = Loaded {
        maps,
        block_ttl_s: cfg.block_ttl_s,
        persist_path,
        saved_fingerprint: None,
        _ebpf: ebpf,
    };
    loaded.save_if_changed();
    Ok((loaded, mode, ifaces))
}

/// Driver mode first, then generic with a warning; `Off` when neither works.
fn attach_xdp(xdp: &mut Xdp, iface: &str, force_generic: bool) -> GateMode {
    if force_generic {
        return match xdp.attach(iface, XdpMode::Skb) {
            Ok(_) => GateMode::Generic,
            Err(e) => {
                tracing::warn!(
                    "gate: XDP generic mode could not attach to {iface}: {}",
                    chain(&e)
                );
                GateMode::Off
            }
        };
    }
    match xdp.attach(iface, XdpMode::Driver) {
        Ok(_) => GateMode::Native,
        Err(native_err) => match xdp.attach(iface, XdpMode::Skb) {
            Ok(_) => {
                tracing::warn!(
                    "gate: XDP driver mode unavailable on {iface} ({}); using generic (SKB) mode",
                    chain(&native_err)
                );
                GateMode::Generic
            }
            Err(generic_err) => {
                tracing::warn!(
                    "gate: XDP could not attach to {iface}: driver mode: {}; generic mode: {}",
                    chain(&native_err),
                    chain(&generic_err)
                );
                GateMode::Off
            }
        },
    }
}

/// The blocklist to carry over: from the old pins when they exist (same boot, exact), else
/// from `blocklist.json` (survives reboots). Expired entries are dropped.
fn previous_blocklist(pin_dir: &Path, json_path: &Path, now_ns: u64) -> Vec<BlockItem> {
    let from_pins = if pin_dir.join(subzero_common::MAP_BLOCK_V4).exists() {
        match GateMaps::from_pins(pin_dir).and_then(|m| m.entries()) {
            Ok(entries) => Some(entries),
            Err(e) => {
                tracing::warn!(
                    "gate: could not read the previous pinned blocklist ({e}); trying {}",
                    json_path.display()
                );
                None
            }
        }
    } else {
        None
    };
    let entries = match from_pins {
        Some(e) => e,
        None => match persist::load(json_path, now_ns) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("gate: {e}; starting with an empty blocklist");
                Vec::new()
            }
        },
    };
    entries
        .into_iter()
        .filter(|b| b.until_ns == 0 || b.until_ns > now_ns)
        .collect()
}

/// Mounts bpffs at /sys/fs/bpf unless something bpffs is already there.
fn ensure_bpffs() -> Result<(), GateError> {
    let dir = Path::new(BPFFS_DIR);
    let c_dir = CString::new(BPFFS_DIR)
        .map_err(|_| io_err("bad path", dir, std::io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: `statfs` is plain integers, for which all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and outlives the call; `st` is a valid out-buffer.
    let rc = unsafe { libc::statfs(c_dir.as_ptr(), &raw mut st) };
    if rc == 0 && st.f_type == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err("could not create", dir, e))?;
    let fstype = c"bpf";
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c_dir.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io_err(
            "could not mount bpffs at",
            dir,
            std::io::Error::last_os_error(),
        ));
    }
    tracing::info!("gate: mounted bpffs at {BPFFS_DIR}");
    Ok(())
}

/// Removes every pin under our directory (a previous run's maps) and recreates it.
pub(crate) fn remove_stale_pins(pin_dir: &Path) -> Result<(), GateError> {
    if pin_dir.exists() {
        let rd = std::fs::read_dir(pin_dir).map_err(|e| io_err("could not list", pin_dir, e))?;
        for entry in rd.flatten() {
            let path = entry.path();
            std::fs::remove_file(&path)
                .map_err(|e| io_err("could not remove stale pin", &path, e))?;
        }
    }
    std::fs::create_dir_all(pin_dir).map_err(|e| io_err("could not create", pin_dir, e))
}

fn io_err(what: &'static str, path: &Path, source: std::io::Error) -> GateError {
    GateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
