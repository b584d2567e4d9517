//! Builds the eBPF gate object (`subzero-ebpf`, release, bpfel) with aya-build and leaves it in `OUT_DIR`.
//!
//! aya-build runs `cargo +nightly build -Z build-std=core --release --target bpfel-unknown-none`
//! on the `subzero-ebpf` package into its own target dir under `OUT_DIR` and copies the
//! `subzero-gate` binary next to it; `gate::loader` embeds it with `include_bytes_aligned!`.
//! Set `AYA_BUILD_SKIP=1` to skip (the gate then loads an empty object and stays off).

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("server/ has no parent"))?;
    let ebpf_dir = root.join("ebpf");
    let common_dir = root.join("common");
    // Directories: cargo rescans their mtimes, so edits to any source file rebuild the object.
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!("cargo:rerun-if-changed={}", common_dir.display());
    // The eBPF release profile lives in the workspace manifest.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    let out_dir = std::env::var("OUT_DIR")?;
    let object = Path::new(&out_dir).join("subzero-gate");
    if std::env::var_os("AYA_BUILD_SKIP")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        && !object.exists()
    {
        std::fs::write(&object, [])?;
    }
    // aya-build forwards every line the nested cargo prints as a `cargo:warning`, which cargo
    // then replays on every build; a quiet nested cargo keeps only real diagnostics.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "subzero-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
