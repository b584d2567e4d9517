//! Test harness: loads the gate object unpinned and unattached and runs it on crafted frames (`BPF_PROG_TEST_RUN`).
//!
//! Used by `server/tests/gate_fixtures.rs`; it never touches `/sys/fs/bpf/subzero`, so it can
//! run next to a live server.

use aya::programs::{TestRun as _, TestRunOptions};
use aya::Ebpf;
use subzero_common::{GateParams, N_REASONS};

use super::loader::{load_object, socket_program, xdp_program};
use super::maps::GateMaps;
use super::GateError;

/// XDP verdict codes returned by [`GateHarness::run_xdp`].
pub const XDP_DROP: u32 = 1;
/// See [`XDP_DROP`].
pub const XDP_PASS: u32 = 2;

/// A private, unpinned instance of the gate programs and maps.
pub struct GateHarness {
    /// The maps, to seed the blocklist and rate parameters and read counters.
    pub maps: GateMaps,
    ebpf: Ebpf,
}

impl GateHarness {
    /// Loads the embedded object (needs `CAP_BPF` / root).
    pub fn load() -> Result<GateHarness, GateError> {
        let mut ebpf = load_object()?;
        let maps = GateMaps::from_ebpf(&mut ebpf, None)?;
        Ok(GateHarness { maps, ebpf })
    }

    /// Sets the per-source rate parameters.
    pub fn set_rates(
        &mut self,
        syn_rate_per_s: u32,
        syn_burst: u32,
        pkt_rate_per_s: u32,
        pkt_burst: u32,
    ) -> Result<(), GateError> {
        self.maps.set_params(GateParams::from_rates(
            syn_rate_per_s,
            syn_burst,
            pkt_rate_per_s,
            pkt_burst,
        ))
    }

    /// Runs the XDP program once on `frame` (Ethernet onwards); returns the XDP action.
    pub fn run_xdp(&mut self, frame: &[u8]) -> Result<u32, GateError> {
        self.time_xdp(frame, 1).map(|(action, _)| action)
    }

    /// Runs the XDP program `repeat` times on `frame` in the kernel; returns the action and the
    /// kernel-measured mean time per run.
    pub fn time_xdp(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), GateError> {
        let prog = xdp_program(&mut self.ebpf)?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        };
        prog.test_run(opts)
            .map(|r| (r.return_value, r.duration))
            .map_err(|e| GateError::Load {
                what: "XDP test run",
                message: e.to_string(),
            })
    }

    /// Runs the socket filter once on `frame` (Ethernet onwards; the kernel strips it);
    /// returns the bytes kept (0 = dropped).
    pub fn run_socket(&mut self, frame: &[u8]) -> Result<u32, GateError> {
        let prog = socket_program(&mut self.ebpf)?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        prog.test_run(opts)
            .map(|r| r.return_value)
            .map_err(|e| GateError::Load {
                what: "socket filter test run",
                message: e.to_string(),
            })
    }

    /// Counters per reason, summed over CPUs.
    pub fn counters(&self) -> Result<[u64; N_REASONS as usize], GateError> {
        let mut totals = [0; N_REASONS as usize];
        for row in self.maps.counters_per_cpu()? {
            for (t, v) in totals.iter_mut().zip(row) {
                *t += v;
            }
        }
        Ok(totals)
    }
}
