//! Measures a mesh round trip between two pinned threads: the cost the two-level cache would add
//! to a local-cache miss (ask the owner shard) versus verifying the token locally.
//!
//! Run: `cargo run --release -p subzero --example mesh_rtt`. Prints wall-clock round trip and
//! CPU per round trip, for a parked (eventfd wake-up) and a busy (spinning) owner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use subzero::shard::mesh::Mesh;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn run(parked: bool, n_round_trips: u64) -> (f64, f64) {
    let Mesh { shards, wakers, .. } = Mesh::<u64>::build(2).expect("mesh");
    let mut ports = shards.into_iter();
    let (mut caller_out, mut caller_in) = ports.next().expect("shard 0");
    let (mut owner_out, mut owner_in) = ports.next().expect("shard 1");
    let stop = Arc::new(AtomicBool::new(false));
    let owner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
            let start = thread_cpu_ns();
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = owner_in.recv() {
                    while owner_out.send(0, v + 1).is_err() {}
                    continue;
                }
                if parked {
                    let waker = owner_in.waker();
                    waker.park();
                    if owner_in.depth() == 0 && !stop.load(Ordering::Relaxed) {
                        let mut buf = 0u64;
                        // SAFETY: 8-byte read from our eventfd into a u64 (non-blocking fd:
                        // poll first).
                        unsafe {
                            let mut pfd = libc::pollfd {
                                fd: waker.fd(),
                                events: libc::POLLIN,
                                revents: 0,
                            };
                            libc::poll(&raw mut pfd, 1, 100);
                            libc::read(waker.fd(), (&raw mut buf).cast(), 8);
                        }
                    }
                    waker.unpark();
                }
            }
            thread_cpu_ns() - start
        })
    };
    core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    let cpu_start = thread_cpu_ns();
    let wall = Instant::now();
    for i in 0..n_round_trips {
        while caller_out.send(1, i).is_err() {}
        loop {
            if let Some(v) = caller_in.recv() {
                assert_eq!(v, i + 1);
                break;
            }
            std::hint::spin_loop();
        }
    }
    let wall_ns = wall.elapsed().as_nanos() as f64;
    let caller_cpu = (thread_cpu_ns() - cpu_start) as f64;
    stop.store(true, Ordering::Relaxed);
    wakers.wake_all();
    let owner_cpu = owner.join().expect("owner") as f64;
    let n = n_round_trips as f64;
    // The caller spins while waiting, so its CPU is wall time; count only the owner's CPU plus
    // the caller's send/receive share (approximated by the busy-owner case).
    let _ = caller_cpu;
    (wall_ns / n, owner_cpu / n)
}

fn main() {
    for parked in [false, true] {
        let (rtt_ns, owner_cpu_ns) = run(parked, if parked { 20_000 } else { 200_000 });
        println!(
            "owner {}: round trip {:.2} µs wall, owner CPU {:.2} µs per round trip",
            if parked {
                "parked (eventfd wake)"
            } else {
                "busy (spinning)"
            },
            rtt_ns / 1000.0,
            owner_cpu_ns / 1000.0
        );
    }
}
