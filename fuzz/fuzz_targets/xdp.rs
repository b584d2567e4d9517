//! Fuzz target: the XDP gate's packet parser and verdict, as the kernel runs them
//! (`BPF_PROG_TEST_RUN` on the embedded eBPF object through `subzero::gate::harness`), against
//! a reference parser written here: every frame must get the reference's verdict, counted
//! under exactly one reason. The parser is eBPF code over `XdpContext`, so it cannot run on
//! the host; the reference gives libFuzzer its coverage, the kernel gives the answers.
//!
//! Needs root (`CAP_BPF`). Without it the target prints why once and checks nothing, unless
//! `CI=true`, where that is a failure.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use subzero::gate::harness::{GateHarness, XDP_DROP, XDP_PASS};
use subzero::gate::{BlockReason, Cidr, Reason};

/// Blocked sources; every other address passes (rate limits are off).
const BLOCKED: [&str; 3] = ["203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32"];
/// `BPF_PROG_TEST_RUN` takes an Ethernet frame of at least 14 bytes and at most about a page.
const MIN_FRAME: usize = 14;
const MAX_FRAME: usize = 1514;

fn harness() -> Option<&'static Mutex<GateHarness>> {
    static HARNESS: OnceLock<Option<Mutex<GateHarness>>> = OnceLock::new();
    HARNESS
        .get_or_init(|| match GateHarness::load() {
            Ok(mut h) => {
                for cidr in BLOCKED {
                    let cidr: Cidr = cidr.parse().expect("cidr");
                    h.maps.insert(cidr, BlockReason::Manual, 0).expect("block");
                }
                Some(Mutex::new(h))
            }
            Err(e) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true");
                assert!(
                    !ci,
                    "CI=true but the gate object did not load (root needed): {e}"
                );
                eprintln!("xdp target: the gate did not load ({e}); checking nothing");
                None
            }
        })
        .as_ref()
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

fn is_blocked_v4(a: [u8; 4]) -> bool {
    (a[..3] == [203, 0, 113]) || a == [198, 51, 100, 7]
}

fn is_blocked_v6(a: &[u8]) -> bool {
    a[..4] == [0x20, 0x01, 0x0d, 0xb8]
}

/// Whether the 20-byte TCP header at `at` is cut short.
fn tcp_cut(f: &[u8], at: usize) -> bool {
    f.len() < at + 20
}

/// The verdict a correct gate gives `f` (Ethernet onwards).
fn reference(f: &[u8]) -> Reason {
    let Some(mut ether_type) = be16(f, 12) else {
        return Reason::PassMalformed;
    };
    let mut l3 = 14;
    for _ in 0..2 {
        if ether_type != 0x8100 && ether_type != 0x88a8 {
            break;
        }
        let Some(inner) = be16(f, l3 + 2) else {
            return Reason::PassMalformed;
        };
        ether_type = inner;
        l3 += 4;
    }
    let (blocked, cut) = match ether_type {
        0x0800 => {
            let Some(h) = f.get(l3..l3 + 20) else {
                return Reason::PassMalformed;
            };
            let ihl = usize::from(h[0] & 0x0f);
            if h[0] >> 4 != 4 || ihl < 5 {
                return Reason::PassMalformed;
            }
            let first_fragment = u16::from_be_bytes([h[6], h[7]]) & 0x1fff == 0;
            let cut = h[9] == 6 && first_fragment && tcp_cut(f, l3 + ihl * 4);
            (is_blocked_v4([h[12], h[13], h[14], h[15]]), cut)
        }
        0x86dd => {
            let Some(h) = f.get(l3..l3 + 40) else {
                return Reason::PassMalformed;
            };
            if h[0] >> 4 != 6 {
                return Reason::PassMalformed;
            }
            (is_blocked_v6(&h[8..24]), h[6] == 6 && tcp_cut(f, l3 + 40))
        }
        0x8100 | 0x88a8 => return Reason::PassMalformed,
        _ => return Reason::Pass,
    };
    if blocked {
        Reason::DropBlock
    } else if cut {
        Reason::PassMalformed
    } else {
        Reason::Pass
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < MIN_FRAME || data.len() > MAX_FRAME {
        return;
    }
    let Some(harness) = harness() else {
        return;
    };
    let want = reference(data);
    let mut h = harness.lock().expect("one fuzzing thread");
    let before = h.counters().expect("counters");
    let action = h.run_xdp(data).expect("BPF_PROG_TEST_RUN");
    let after = h.counters().expect("counters");
    let want_action = if want == Reason::DropBlock {
        XDP_DROP
    } else {
        XDP_PASS
    };
    assert_eq!(action, want_action, "XDP action for {want:?}");
    for r in Reason::ALL {
        let delta = after[r as usize] - before[r as usize];
        assert_eq!(
            delta,
            u64::from(r == want),
            "counter {} for {want:?}",
            r.as_str()
        );
    }
});
