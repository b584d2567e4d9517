//! xtask: bootstrap, test, run and bench tooling that cargo alone cannot do.

mod bench;
mod bootstrap;
mod fuzz;
mod loadgen;
mod metrics;
mod netns;
mod package;
mod procstat;
mod report;
mod svg;
#[cfg(test)]
mod tidy;
mod util;
mod wrk;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "subzero project tasks: `cargo xtask test | run | package | bench | fuzz`"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and tests need (apt, rust-src, bpf-linker, bpffs, cargo-fuzz),
    /// check fmt, clippy and tidy, then build and test the default workspace members and the
    /// bench crate, and run every fuzz target briefly. CI runs this as root with `CI=true`
    /// (`.ci/run`).
    Test,
    /// Build release and run `subzero serve ARGS` (no args: the embedded default).
    Run {
        /// Arguments passed to `subzero serve`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build release and a Debian package (binary, systemd unit, /etc/subzero/subzero.toml,
    /// maintainer scripts) with `dpkg-deb`; prints the `.deb`'s path.
    Package {
        /// Where the `.deb` goes (default: target/debian).
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Benchmark subzero against its peers; writes target/bench/report.{md,json,svg}.
    Bench {
        /// Fewer and shorter runs (under three minutes).
        #[arg(long)]
        quick: bool,
        /// Run only these scenarios (repeatable): auth-hit, auth-cold, batch, token-issue,
        /// revoke, audit, permission, ratelimit, monitor, threat, mixed, xdp-flood, scaling, fleet,
        /// unix.
        #[arg(long = "scenario", value_name = "NAME")]
        scenarios: Vec<String>,
    },
    /// Build the cargo-fuzz targets in fuzz/ and run each (or TARGET) for a bounded time; a
    /// crash fails with the reproducer's path.
    Fuzz {
        /// Seconds per target.
        #[arg(long = "time-s", default_value_t = 60)]
        time_s: u64,
        /// One target: http, jwt, bodies, authz_schema, authz_eval, cuckoo, records, xdp.
        target: Option<String>,
    },
    /// (Used by `bench` inside its network namespace.) Send UDP datagrams at a fixed rate.
    #[command(hide = true)]
    Flood {
        #[arg(long)]
        src: String,
        #[arg(long)]
        dst: std::net::SocketAddr,
        #[arg(long)]
        pps: u64,
        #[arg(long)]
        seconds: u64,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Test => bootstrap::test(),
        Task::Run { args } => bootstrap::run(&args),
        Task::Package { out_dir } => bootstrap::package(out_dir.as_deref()),
        Task::Fuzz { time_s, target } => fuzz::fuzz(&fuzz::FuzzArgs { time_s, target }),
        Task::Bench { quick, scenarios } => bench::bench(&bench::BenchArgs { quick, scenarios }),
        Task::Flood {
            src,
            dst,
            pps,
            seconds,
        } => netns::flood(&src, dst, pps, seconds),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
