//! `cargo xtask fuzz [--time-s N] [TARGET]`: build the cargo-fuzz targets in `fuzz/` (nightly,
//! libFuzzer, no sanitizer) and run each for a bounded time over its committed seed corpus
//! and dictionary; `cargo xtask test` runs every target briefly. A crash fails the command
//! with the reproducer's path and the command that replays it.
//!
//! Why no sanitizer: the fuzzed code is safe Rust (its few `unsafe` blocks are in the shard
//! runtime and the gate, which no target reaches), so AddressSanitizer would find nothing a
//! panic does not, at about twice the build time and half the executions. Debug assertions
//! and overflow checks are on (`-a`), so an arithmetic overflow is a crash.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util;

/// cargo-fuzz release line the xtask installs (`cargo install --locked`).
const CARGO_FUZZ_VERSION: &str = "0.13";
/// Every target in `fuzz/Cargo.toml`, in the order they run (a unit test keeps them equal).
pub const TARGETS: &[&str] = &[
    "http",
    "jwt",
    "bodies",
    "authz_schema",
    "authz_eval",
    "cuckoo",
    "records",
    "xdp",
];
/// Seconds each target runs under `cargo xtask test` (eight targets: about 1.2 minutes).
pub const TEST_TIME_S: u64 = 8;
/// Largest input libFuzzer generates, in bytes: an HTTP head or a token fits, and small
/// inputs keep executions fast.
const MAX_INPUT_BYTES: u32 = 16 * 1024;

/// What `cargo xtask fuzz` was asked to do.
pub struct FuzzArgs {
    /// Seconds per target.
    pub time_s: u64,
    /// One target, or every target when `None`.
    pub target: Option<String>,
}

/// One target's run, from libFuzzer's final statistics.
struct RunStats {
    target: String,
    elapsed_s: f64,
    n_execs: Option<u64>,
    coverage: Option<u64>,
    features: Option<u64>,
    corpus_units: Option<u64>,
}

fn fuzz_dir() -> PathBuf {
    util::workspace_root().join("fuzz")
}

fn dict_for(target: &str) -> &'static str {
    if target == "http" {
        "http.dict"
    } else {
        "json.dict"
    }
}

/// Installs cargo-fuzz when `cargo fuzz --version` does not report the pinned line.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let version = util::cargo()
        .args(["fuzz", "--version"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    if version
        .split_whitespace()
        .any(|w| w.starts_with(&format!("{CARGO_FUZZ_VERSION}.")))
    {
        println!("    cargo-fuzz {}: installed", version.trim());
        return Ok(());
    }
    util::run(util::cargo().args([
        "install",
        "cargo-fuzz",
        "--version",
        &format!("^{CARGO_FUZZ_VERSION}"),
        "--locked",
    ]))
}

/// `cargo +nightly fuzz` with the flags every invocation shares.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(util::workspace_root())
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["+nightly", "fuzz", subcommand, "--debug-assertions"])
        .args(["--sanitizer", "none"]);
    cmd
}

/// Builds every target (one cargo invocation, so the dependencies build once).
fn build() -> Result<()> {
    util::run(&mut cargo_fuzz("build"))
}

/// Checks the fuzz crate's formatting (it is outside the workspace `cargo fmt --all` sees).
pub fn check_fmt() -> Result<()> {
    util::run(util::cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))
}

/// Runs one target for `time_s` seconds; new inputs go to a scratch corpus under
/// `fuzz/target/`, so the committed seeds only change by hand.
fn run_one(target: &str, time_s: u64) -> Result<RunStats> {
    let dir = fuzz_dir();
    let work = dir.join("target/work-corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    for d in [&work, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("could not create {}", d.display()))?;
    }
    let mut cmd = cargo_fuzz("run");
    cmd.arg(target)
        .arg(&work)
        .arg(dir.join("corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={time_s}"))
        .arg(format!("-max_len={MAX_INPUT_BYTES}"))
        .arg(format!(
            "-dict={}",
            dir.join("dict").join(dict_for(target)).display()
        ))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    println!("    $ {}", util::display(&cmd));
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{}`", util::display(&cmd)))?;
    let elapsed_s = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // The panic message (and the lines after it), then libFuzzer's last words.
        let lines: Vec<&str> = log.lines().collect();
        if let Some(at) = lines.iter().position(|l| l.contains("panicked at")) {
            eprintln!("{}", lines[at..lines.len().min(at + 6)].join("\n"));
        }
        eprintln!("{}", lines[lines.len().saturating_sub(25)..].join("\n"));
        let reproducer = reproducer_path(&log).map_or_else(
            || "(libFuzzer wrote no test unit; see the output above)".to_owned(),
            |p| p.display().to_string(),
        );
        bail!(
            "fuzz target `{target}` failed after {elapsed_s:.0} s; reproducer: {reproducer}\n  \
             replay: cargo +nightly fuzz run --debug-assertions --sanitizer none {target} \
             {reproducer}\n  then fix it, add a unit test next to the code, and copy the \
             reproducer into fuzz/corpus/{target}/"
        );
    }
    Ok(RunStats {
        target: target.to_owned(),
        elapsed_s,
        n_execs: final_stat(&log, "stat::number_of_executed_units:"),
        coverage: last_field(&log, "cov: "),
        features: last_field(&log, "ft: "),
        corpus_units: last_field(&log, "corp: "),
    })
}

/// The path in libFuzzer's `Test unit written to PATH` line, if any.
fn reproducer_path(log: &str) -> Option<PathBuf> {
    log.lines()
        .filter_map(|l| l.split_once("Test unit written to "))
        .map(|(_, path)| PathBuf::from(path.trim()))
        .next_back()
}

fn final_stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .next_back()?
        .trim()
        .parse()
        .ok()
}

/// The number after `key` in the last status line that has it (`cov: 123 ft: 456 ...`).
fn last_field(log: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(key))?;
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn render(stats: &[RunStats]) -> String {
    let mut out = String::from("target        execs       seconds  cov     features  corpus\n");
    let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for s in stats {
        let _ = writeln!(
            out,
            "{:<13} {:<11} {:<8.0} {:<7} {:<9} {}",
            s.target,
            show(s.n_execs),
            s.elapsed_s,
            show(s.coverage),
            show(s.features),
            show(s.corpus_units)
        );
    }
    out
}

/// `cargo xtask fuzz`: build, then run the chosen targets; the first crash stops the run.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "no fuzz target `{t}`; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    if args.time_s == 0 {
        bail!("--time-s must be at least 1");
    }
    ensure_cargo_fuzz()?;
    build()?;
    let mut stats = Vec::new();
    let result = targets.iter().try_for_each(|target| {
        stats.push(run_one(target, args.time_s)?);
        Ok(())
    });
    println!("\n{}", render(&stats));
    result
}

/// The `[[bin]]` names of `fuzz/Cargo.toml`.
#[cfg(test)]
fn manifest_targets(manifest: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("could not read {}", manifest.display()))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(value) = line.strip_prefix("name = ").filter(|_| in_bin) {
            names.push(value.trim_matches('"').to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_target_runs_and_has_seeds() {
        let names = manifest_targets(&fuzz_dir().join("Cargo.toml")).unwrap();
        assert_eq!(
            names, TARGETS,
            "fuzz/Cargo.toml [[bin]] names vs fuzz::TARGETS"
        );
        for target in TARGETS {
            let seeds = fuzz_dir().join("corpus").join(target);
            let n_seeds = std::fs::read_dir(&seeds)
                .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
                .count();
            assert!(n_seeds > 0, "{} has no seed", seeds.display());
            assert!(fuzz_dir().join("dict").join(dict_for(target)).is_file());
        }
    }

    #[test]
    fn reads_libfuzzer_statistics_and_the_reproducer() {
        let log = "#2048\tpulse  cov: 310 ft: 900 corp: 41/2Kb exec/s: 1024 rss: 40Mb\n\
                   #4096\tDONE   cov: 312 ft: 905 corp: 42/2Kb lim: 40 exec/s: 1000 rss: 41Mb\n\
                   ==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='a/'; Test unit written to fuzz/artifacts/http/crash-ab12\n\
                   stat::number_of_executed_units: 4096\n";
        assert_eq!(last_field(log, "cov: "), Some(312));
        assert_eq!(last_field(log, "ft: "), Some(905));
        assert_eq!(last_field(log, "corp: "), Some(42));
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units:"),
            Some(4096)
        );
        assert_eq!(
            reproducer_path(log),
            Some(PathBuf::from("fuzz/artifacts/http/crash-ab12"))
        );
        assert_eq!(reproducer_path("no crash here\n"), None);
    }
}
