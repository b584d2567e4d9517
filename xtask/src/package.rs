//! The Debian package: stages the binary, systemd unit, conffile and maintainer scripts under a
//! tree and runs `dpkg-deb --build`.
//!
//! Std only, so `server/tests/pkg_install.rs` includes this file (`#[path]`) and builds the
//! package it installs through the same code as `cargo xtask package`. The files themselves
//! live in `scripts/` and are embedded here, so the package and the checkout cannot drift.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Package name, also the system user, the state directory and the pin directory's name.
pub const NAME: &str = "subzero";
/// Where the unit is installed (merged /usr: the same directory as /lib/systemd/system).
pub const UNIT_PATH: &str = "/usr/lib/systemd/system/subzero.service";
/// The conffile.
pub const CONFIG_PATH: &str = "/etc/subzero/subzero.toml";
/// The installed binary.
pub const BIN_PATH: &str = "/usr/bin/subzero";
/// The service's data directory (`StateDirectory=subzero`, `data_dir` in the conffile).
#[allow(
    dead_code,
    reason = "read by server/tests/pkg_install.rs, which includes this file"
)]
pub const DATA_DIR: &str = "/var/lib/subzero";

/// The systemd unit (`scripts/subzero.service`).
pub const UNIT: &str = include_str!("../../scripts/subzero.service");
/// The configuration installed as a conffile (`scripts/subzero.toml`).
pub const CONFIG: &str = include_str!("../../scripts/subzero.toml");
const POSTINST: &str = include_str!("../../scripts/deb/postinst");
const PRERM: &str = include_str!("../../scripts/deb/prerm");
const POSTRM: &str = include_str!("../../scripts/deb/postrm");
const README: &str = include_str!("../../README.md");

/// What goes into one package.
pub struct PackageSpec<'a> {
    /// The `subzero` executable to ship (the release build for `cargo xtask package`).
    pub binary: &'a Path,
    /// Debian version (the crate's version).
    pub version: &'a str,
    /// Staging happens in `<out_dir>/stage`; the `.deb` is written to `out_dir`.
    pub out_dir: &'a Path,
    /// `dpkg-deb -Z`: `xz` for a release (a third smaller), `gzip` where build time matters
    /// (the package test: xz takes ~20 s on the debug binary).
    pub compression: &'a str,
}

/// Stages the tree and builds the `.deb`; returns its path.
pub fn build(spec: &PackageSpec<'_>) -> io::Result<PathBuf> {
    let arch = dpkg_architecture()?;
    let stage = spec.out_dir.join("stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let root = stage.join(format!("{NAME}_{}_{arch}", spec.version));
    let binary = std::fs::read(spec.binary)?;
    let files: [(&str, &[u8], u32); 8] = [
        (BIN_PATH, &binary, 0o755),
        (UNIT_PATH, UNIT.as_bytes(), 0o644),
        (CONFIG_PATH, CONFIG.as_bytes(), 0o640),
        ("/usr/share/doc/subzero/README.md", README.as_bytes(), 0o644),
        ("/DEBIAN/postinst", POSTINST.as_bytes(), 0o755),
        ("/DEBIAN/prerm", PRERM.as_bytes(), 0o755),
        ("/DEBIAN/postrm", POSTRM.as_bytes(), 0o755),
        ("/DEBIAN/conffiles", b"/etc/subzero/subzero.toml\n", 0o644),
    ];
    for (path, bytes, mode) in files {
        write_file(&root, path, bytes, mode)?;
    }
    strip_debug(&root.join(BIN_PATH.trim_start_matches('/')))?;
    let stripped_len = std::fs::metadata(root.join(BIN_PATH.trim_start_matches('/')))?.len();
    let installed_kib = stripped_len.div_ceil(1024) + 64;
    let control = control(spec.version, &arch, installed_kib);
    write_file(&root, "/DEBIAN/control", control.as_bytes(), 0o644)?;
    let deb = spec
        .out_dir
        .join(format!("{NAME}_{}_{arch}.deb", spec.version));
    let out = Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg(format!("-Z{}", spec.compression))
        .arg("--build")
        .arg(&root)
        .arg(&deb)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "dpkg-deb --build {} failed: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(deb)
}

/// The `DEBIAN/control` file.
fn control(version: &str, arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: subzero maintainers <subzero@localhost>\n\
         Section: net\n\
         Priority: optional\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6 (>= 2.34), libgcc-s1, adduser\n\
         Recommends: bpftool\n\
         Description: zero-trust authentication gateway (thread-per-core, io_uring, XDP)\n \
         subzero verifies bearer tokens, issues them, checks permissions, rate limits\n \
         and audits at line rate, with an eBPF pre-filter that drops blocklisted\n \
         sources in the kernel. Runs as the `subzero` system user under systemd with\n \
         CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON and CAP_NET_BIND_SERVICE only.\n"
    )
}

/// Drops the debug sections from the staged binary (the release profile keeps them for
/// profiling; the package ships symbols only, a fifth of the size).
fn strip_debug(binary: &Path) -> io::Result<()> {
    let out = Command::new("strip")
        .arg("--strip-debug")
        .arg(binary)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "strip --strip-debug {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `dpkg --print-architecture` (e.g. `amd64`).
fn dpkg_architecture() -> io::Result<String> {
    let out = Command::new("dpkg").arg("--print-architecture").output()?;
    let arch = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || arch.is_empty() {
        return Err(io::Error::other("`dpkg --print-architecture` failed"));
    }
    Ok(arch)
}

/// Writes `bytes` at `root` + `path` (absolute inside the package) with `mode`.
fn write_file(root: &Path, path: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let at = root.join(path.trim_start_matches('/'));
    if let Some(dir) = at.parent() {
        std::fs::create_dir_all(dir)?;
        // dpkg-deb wants 0755 directories (umask may have made them tighter).
        let mut d = dir.to_path_buf();
        while d.starts_with(root) && d != root {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
            if !d.pop() {
                break;
            }
        }
    }
    std::fs::write(&at, bytes)?;
    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode))
}
