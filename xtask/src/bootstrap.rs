//! `cargo xtask test`: install what the build and the tests need (idempotently), check the
//! house rules (fmt, clippy, tidy), then build and test the default workspace members and the
//! bench crate. Also the package helpers `bench` reuses.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::util::{self, step};

/// bpf-linker release that matches nightly's LLVM 22 (see shared TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPFFS_PATH: &str = "/sys/fs/bpf";

/// Installs Debian packages on demand; runs `apt-get update` once, before the first install.
#[derive(Default)]
pub struct Apt {
    updated: bool,
}

impl Apt {
    pub fn is_installed(package: &str) -> bool {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", package])
            .output()
            .is_ok_and(|out| {
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).contains("install ok installed")
            })
    }

    /// Installs the first of `alternatives` that apt knows, unless one of them is installed.
    pub fn ensure_one_of(&mut self, alternatives: &[&str]) -> Result<()> {
        if let Some(found) = alternatives.iter().find(|p| Apt::is_installed(p)) {
            println!("    {found}: installed");
            return Ok(());
        }
        self.update_once()?;
        for package in alternatives {
            let known = Command::new("apt-cache")
                .args(["show", package])
                .output()
                .is_ok_and(|out| out.status.success() && !out.stdout.is_empty());
            if known {
                return util::run(
                    Command::new("apt-get")
                        .args(["install", "-y", "--no-install-recommends", package])
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                );
            }
        }
        bail!("none of the packages {alternatives:?} is known to apt")
    }

    pub fn ensure(&mut self, package: &str) -> Result<()> {
        self.ensure_one_of(&[package])
    }

    fn update_once(&mut self) -> Result<()> {
        if !self.updated {
            util::run(
                Command::new("apt-get")
                    .args(["update", "-q"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            self.updated = true;
        }
        Ok(())
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Debian packages the build (bpf-linker needs LLVM 22) and the privileged tests need.
fn ensure_packages(apt: &mut Apt) -> Result<()> {
    if !is_root() {
        if in_ci() {
            bail!("CI=true but not running as root: cannot install packages");
        }
        println!("    not root: skipping package installation (install llvm-22-dev, wrk, nginx, bpftool, iproute2, strace, prometheus, caddy, curl, redis-server, redis-tools by hand)");
        return Ok(());
    }
    apt.ensure("llvm-22-dev")?;
    apt.ensure("wrk")?;
    apt.ensure_one_of(&["nginx-light", "nginx"])?;
    apt.ensure("bpftool")?;
    apt.ensure("iproute2")?;
    // e2e_lifecycle runs the server under strace to order fdatasync before the 200 and to
    // inject a failing fdatasync.
    apt.ensure("strace")?;
    // e2e_prometheus scrapes the server with the real Prometheus and lints with promtool.
    apt.ensure("prometheus")?;
    // e2e_unix puts Caddy's forward_auth and curl --unix-socket in front of the Unix socket.
    apt.ensure("caddy")?;
    apt.ensure("curl")?;
    // e2e_fleet and the bench's fleet scenario run a real redis-server (and redis-cli).
    apt.ensure("redis-server")?;
    apt.ensure("redis-tools")?;
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let installed = util::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context("rustup could not list nightly's components; is the nightly toolchain installed?")?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        println!("    rust-src (nightly): installed");
        return Ok(());
    }
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// rustfmt and clippy for the stable toolchain: CI checks formatting and lints before testing.
fn ensure_lint_tools() -> Result<()> {
    let installed = util::output(Command::new("rustup").args(["component", "list", "--installed"]))
        .context("rustup could not list the toolchain's components")?;
    for component in ["rustfmt", "clippy"] {
        if installed.lines().any(|l| l.trim().starts_with(component)) {
            println!("    {component}: installed");
        } else {
            util::run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

fn ensure_bpf_linker() -> Result<()> {
    let version = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    if version.split_whitespace().any(|w| w == BPF_LINKER_VERSION) {
        println!("    bpf-linker {BPF_LINKER_VERSION}: installed");
        return Ok(());
    }
    if !Path::new(LLVM_PREFIX).exists() {
        bail!("{LLVM_PREFIX} is missing: bpf-linker needs llvm-22-dev");
    }
    util::run(
        util::cargo()
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}

fn bpffs_mounted(mounts: &str) -> bool {
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 3 && fields[1] == BPFFS_PATH && fields[2] == "bpf"
    })
}

fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("could not read /proc/mounts")?;
    if bpffs_mounted(&mounts) {
        println!("    bpffs at {BPFFS_PATH}: mounted");
        return Ok(());
    }
    if !is_root() {
        if in_ci() {
            bail!("CI=true but not root: cannot mount bpffs at {BPFFS_PATH}");
        }
        println!("    not root: bpffs not mounted; privileged tests will skip");
        return Ok(());
    }
    util::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS_PATH]))
}

/// `cargo xtask test`.
pub fn test() -> Result<()> {
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut apt = Apt::default();
    let result = (|| {
        step(
            &mut timings,
            "apt packages (llvm-22-dev, wrk, nginx, bpftool, iproute2, strace, prometheus, caddy, curl, redis-server, redis-tools)",
            || ensure_packages(&mut apt),
        )?;
        step(&mut timings, "rust-src for nightly", ensure_rust_src)?;
        step(
            &mut timings,
            &format!("bpf-linker {BPF_LINKER_VERSION} (LLVM 22)"),
            ensure_bpf_linker,
        )?;
        step(&mut timings, "bpffs mount", ensure_bpffs)?;
        step(&mut timings, "rustfmt and clippy", ensure_lint_tools)?;
        step(
            &mut timings,
            "cargo-fuzz (for the fuzz targets)",
            crate::fuzz::ensure_cargo_fuzz,
        )?;
        // The house rules, cheapest first, so a broken rule fails in seconds, not after the
        // build. `--all` formats every member, ebpf and benches included.
        step(&mut timings, "cargo fmt --all -- --check", || {
            util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))
        })?;
        step(
            &mut timings,
            "cargo fmt --manifest-path fuzz/Cargo.toml -- --check",
            crate::fuzz::check_fmt,
        )?;
        // Plain `cargo build`/`cargo test`/`cargo clippy` at the root act on `default-members`
        // (server, common, xtask); `--workspace` would pull in ebpf (bpf target only) and the
        // bench peers.
        step(
            &mut timings,
            "cargo clippy --all-targets -- -D warnings (default members)",
            || util::run(util::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"])),
        )?;
        // A broken rule's message is the violation list; a panic backtrace would bury it.
        step(&mut timings, "tidy (cargo test -p xtask tidy)", || {
            util::run(
                util::cargo()
                    .args(["test", "-p", "xtask", "tidy"])
                    .env("RUST_BACKTRACE", "0"),
            )
        })?;
        step(&mut timings, "cargo build (default members)", || {
            util::run(util::cargo().arg("build"))
        })?;
        step(&mut timings, "cargo test (default members)", || {
            util::run(util::cargo().arg("test"))
        })?;
        // The bench crate is not a default member (tokio, hyper, glommio), but its peers,
        // loadgen and criterion benches are what `cargo xtask bench` trusts: test them, and run
        // each bench once in test mode (`--all-targets`) so a bench that stops compiling fails
        // here rather than in the next bench run.
        step(
            &mut timings,
            "cargo test -p subzero-benches --all-targets",
            || util::run(util::cargo().args(["test", "-p", "subzero-benches", "--all-targets"])),
        )?;
        // Every fuzz target over its seeds and then new inputs for a few seconds: a parser
        // that starts panicking on a committed seed or a near neighbour fails CI here.
        step(
            &mut timings,
            &format!(
                "cargo xtask fuzz --time-s {} (every target)",
                crate::fuzz::TEST_TIME_S
            ),
            || {
                crate::fuzz::fuzz(&crate::fuzz::FuzzArgs {
                    time_s: crate::fuzz::TEST_TIME_S,
                    target: None,
                })
            },
        )
    })();
    println!("\nStep times:");
    for (name, elapsed) in &timings {
        println!("  {:>7.1} s  {name}", elapsed.as_secs_f64());
    }
    result
}

/// `cargo xtask run [-- ARGS]`: install the eBPF build toolchain if missing (the server embeds
/// the XDP object), build release and exec `subzero serve ARGS`.
pub fn run(args: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    build_release()?;
    let binary = util::target_dir().join("release/subzero");
    let mut cmd = Command::new(&binary);
    cmd.arg("serve").args(args);
    println!("    $ {}", util::display(&cmd));
    let err = cmd.exec();
    Err(err).with_context(|| format!("could not exec {}", binary.display()))
}

/// `cargo xtask package [--out-dir DIR]`: build release and the Debian package from it
/// (`crate::package`); prints the `.deb`'s path.
pub fn package(out_dir: Option<&Path>) -> Result<()> {
    build_release()?;
    let binary = util::target_dir().join("release/subzero");
    let out_dir = out_dir.map_or_else(|| util::target_dir().join("debian"), Path::to_path_buf);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("could not create {}", out_dir.display()))?;
    let manifest = std::fs::read_to_string(util::workspace_root().join("server/Cargo.toml"))
        .context("could not read server/Cargo.toml")?;
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .context("no version in server/Cargo.toml")?;
    let deb = crate::package::build(&crate::package::PackageSpec {
        binary: &binary,
        version: &version,
        out_dir: &out_dir,
        compression: "xz",
    })
    .context("could not build the Debian package")?;
    println!("{}", deb.display());
    Ok(())
}

/// Installs the eBPF build toolchain if missing (the server embeds the XDP object) and builds
/// the release binary.
fn build_release() -> Result<()> {
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut apt = Apt::default();
    step(&mut timings, "llvm-22-dev (for bpf-linker)", || {
        if is_root() {
            apt.ensure("llvm-22-dev")
        } else {
            println!("    not root: skipping package installation (install llvm-22-dev by hand)");
            Ok(())
        }
    })?;
    step(&mut timings, "rust-src for nightly", ensure_rust_src)?;
    step(
        &mut timings,
        &format!("bpf-linker {BPF_LINKER_VERSION} (LLVM 22)"),
        ensure_bpf_linker,
    )?;
    util::run(util::cargo().args(["build", "--release", "-p", "subzero"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_bpffs_mount() {
        let without = "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n";
        let with = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n";
        let elsewhere = "bpf /mnt/bpf bpf rw 0 0\n";
        assert!(!bpffs_mounted(without));
        assert!(bpffs_mounted(with));
        assert!(!bpffs_mounted(elsewhere));
    }

    #[test]
    fn dpkg_query_knows_an_installed_package_and_rejects_a_bogus_one() {
        // `dpkg` itself is always installed on Debian; a name with spaces never is.
        if Path::new("/usr/bin/dpkg-query").exists() {
            assert!(Apt::is_installed("dpkg"));
        }
        assert!(!Apt::is_installed("no such package"));
    }
}
