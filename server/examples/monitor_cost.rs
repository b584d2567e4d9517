//! Measures what the monitor adds to one request on a shard: `ShardMonitor::start` +
//! `record` (two clock reads, an hdrhistogram record, a bucket index) with the monitor on,
//! against the same loop with it off, in thread CPU time.
//!
//! Run: `cargo run --release -p subzero --example monitor_cost`.

use subzero::monitor::perf::{thread_cpu_ns, PerfEventOpener};
use subzero::monitor::{MonitorSettings, Op, ShardMonitor};

const N: u64 = 10_000_000;

fn per_request_ns(enabled: bool) -> f64 {
    let settings = MonitorSettings {
        enabled,
        ..MonitorSettings::default()
    };
    let mut monitor = ShardMonitor::new(1, &settings, &mut PerfEventOpener);
    let ops = [Op::AuthenticateHit, Op::TokenPoolHit, Op::Other];
    let before = thread_cpu_ns();
    for i in 0..N {
        let started = monitor.start();
        std::hint::black_box(i);
        monitor.record(ops[(i % 3) as usize], started);
    }
    let after = thread_cpu_ns();
    monitor.tick(0);
    (after - before) as f64 / N as f64
}

fn main() {
    for round in 0..3 {
        let on = per_request_ns(true);
        let off = per_request_ns(false);
        println!(
            "round {round}: monitor on {on:.1} ns/request, off {off:.1} ns/request, added {:.1} ns",
            on - off
        );
    }
}
