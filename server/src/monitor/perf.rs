//! Per-shard perf-event counters (software always, hardware where the PMU exists), opened on
//! the shard's own thread at start and read once a second in its tick, never per request.
//!
//! Each counter is its own event on the calling thread (`pid = 0`, any CPU), so one that the
//! kernel or the hardware cannot count leaves the others working; it is then reported as
//! `subzero_perf_available{counter} 0` and never as a zero value. Counting includes the kernel
//! (`scope="user+kernel"`) when permitted (root, `CAP_PERFMON` or `perf_event_paranoid` ≤ 1):
//! on this server most of a request's cost is the kernel's TCP work. Otherwise user space only
//! (`scope="user"`), which the exposition says.
//!
//! Opening goes through [`Opener`], so tests inject "unsupported" and check the detection.

use std::fmt::Write as _;
use std::io;

/// The counters a shard tries to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerfCounter {
    /// CPU time of the thread (software).
    TaskClock,
    /// Context switches (software; kernel-side).
    ContextSwitches,
    /// Moves to another CPU (software).
    CpuMigrations,
    /// Page faults (software).
    PageFaults,
    /// CPU cycles (hardware).
    Cycles,
    /// Instructions retired (hardware).
    Instructions,
    /// Cache misses (hardware).
    CacheMisses,
    /// Branch misses (hardware).
    BranchMisses,
}

/// Number of counters.
pub const N_COUNTERS: usize = 8;

impl PerfCounter {
    /// All counters, in exposition order.
    pub const ALL: [PerfCounter; N_COUNTERS] = [
        PerfCounter::TaskClock,
        PerfCounter::ContextSwitches,
        PerfCounter::CpuMigrations,
        PerfCounter::PageFaults,
        PerfCounter::Cycles,
        PerfCounter::Instructions,
        PerfCounter::CacheMisses,
        PerfCounter::BranchMisses,
    ];

    /// The `counter` label.
    pub fn label(self) -> &'static str {
        match self {
            PerfCounter::TaskClock => "task_clock",
            PerfCounter::ContextSwitches => "context_switches",
            PerfCounter::CpuMigrations => "cpu_migrations",
            PerfCounter::PageFaults => "page_faults",
            PerfCounter::Cycles => "cycles",
            PerfCounter::Instructions => "instructions",
            PerfCounter::CacheMisses => "cache_misses",
            PerfCounter::BranchMisses => "branch_misses",
        }
    }

    /// The counter family its value is exposed as.
    fn family(self) -> &'static str {
        match self {
            PerfCounter::TaskClock => "subzero_perf_task_clock_seconds_total",
            PerfCounter::ContextSwitches => "subzero_perf_context_switches_total",
            PerfCounter::CpuMigrations => "subzero_perf_cpu_migrations_total",
            PerfCounter::PageFaults => "subzero_perf_page_faults_total",
            PerfCounter::Cycles => "subzero_perf_cycles_total",
            PerfCounter::Instructions => "subzero_perf_instructions_total",
            PerfCounter::CacheMisses => "subzero_perf_cache_misses_total",
            PerfCounter::BranchMisses => "subzero_perf_branch_misses_total",
        }
    }

    /// Whether it needs a PMU.
    pub fn is_hardware(self) -> bool {
        matches!(
            self,
            PerfCounter::Cycles
                | PerfCounter::Instructions
                | PerfCounter::CacheMisses
                | PerfCounter::BranchMisses
        )
    }
}

/// An open counter.
pub trait CounterRead {
    /// Its value since it was opened.
    fn read(&mut self) -> io::Result<u64>;
}

/// Opens counters on the calling thread.
pub trait Opener {
    /// Opens `counter` counting the kernel too when `include_kernel`.
    fn open(
        &mut self,
        counter: PerfCounter,
        include_kernel: bool,
    ) -> io::Result<Box<dyn CounterRead>>;
}

/// The real opener: `perf_event_open` through `perf-event2`.
pub struct PerfEventOpener;

struct PerfEventCounter(perf_event::Counter);

impl CounterRead for PerfEventCounter {
    fn read(&mut self) -> io::Result<u64> {
        self.0.read()
    }
}

impl Opener for PerfEventOpener {
    fn open(
        &mut self,
        counter: PerfCounter,
        include_kernel: bool,
    ) -> io::Result<Box<dyn CounterRead>> {
        use perf_event::events::{Hardware, Software};
        let mut builder = match counter {
            PerfCounter::TaskClock => perf_event::Builder::new(Software::TASK_CLOCK),
            PerfCounter::ContextSwitches => perf_event::Builder::new(Software::CONTEXT_SWITCHES),
            PerfCounter::CpuMigrations => perf_event::Builder::new(Software::CPU_MIGRATIONS),
            PerfCounter::PageFaults => perf_event::Builder::new(Software::PAGE_FAULTS),
            PerfCounter::Cycles => perf_event::Builder::new(Hardware::CPU_CYCLES),
            PerfCounter::Instructions => perf_event::Builder::new(Hardware::INSTRUCTIONS),
            PerfCounter::CacheMisses => perf_event::Builder::new(Hardware::CACHE_MISSES),
            PerfCounter::BranchMisses => perf_event::Builder::new(Hardware::BRANCH_MISSES),
        };
        // pid 0 without `inherit`: this thread only; any CPU it runs on.
        builder
            .observe_self()
            .any_cpu()
            .exclude_kernel(!include_kernel)
            .exclude_hv(true);
        let mut c = builder.build()?;
        c.enable()?;
        Ok(Box::new(PerfEventCounter(c)))
    }
}

/// Whether the error means "not permitted at this scope" (try user-only) rather than
/// "cannot count this at all".
fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// One shard's counters.
pub struct PerfCounters {
    slots: [Option<Box<dyn CounterRead>>; N_COUNTERS],
    /// Why each unavailable counter is (for the start-up log line).
    errors: [Option<String>; N_COUNTERS],
    values: [u64; N_COUNTERS],
    /// Values at the previous read (for IPC over the interval).
    previous: [u64; N_COUNTERS],
    include_kernel: bool,
}

impl PerfCounters {
    /// Opens every counter on this thread: kernel-side first, user-only if that is refused
    /// (decided on the first counter that opens or is refused for permission).
    pub fn open(opener: &mut dyn Opener) -> PerfCounters {
        let mut include_kernel = true;
        let mut slots: [Option<Box<dyn CounterRead>>; N_COUNTERS] = Default::default();
        let mut errors: [Option<String>; N_COUNTERS] = Default::default();
        for (idx, counter) in PerfCounter::ALL.into_iter().enumerate() {
            let mut result = opener.open(counter, include_kernel);
            if include_kernel && result.as_ref().err().is_some_and(is_permission) {
                include_kernel = false;
                result = opener.open(counter, false);
            }
            match result {
                Ok(c) => slots[idx] = Some(c),
                Err(e) => errors[idx] = Some(e.to_string()),
            }
        }
        PerfCounters {
            slots,
            errors,
            values: [0; N_COUNTERS],
            previous: [0; N_COUNTERS],
            include_kernel,
        }
    }

    /// No counters (the monitor is off).
    pub fn none() -> PerfCounters {
        PerfCounters {
            slots: Default::default(),
            errors: Default::default(),
            values: [0; N_COUNTERS],
            previous: [0; N_COUNTERS],
            include_kernel: false,
        }
    }

    /// Whether `counter` opened.
    pub fn available(&self, counter: PerfCounter) -> bool {
        self.slots[counter as usize].is_some()
    }

    /// `"user+kernel"` or `"user"`.
    pub fn scope(&self) -> &'static str {
        if self.include_kernel {
            "user+kernel"
        } else {
            "user"
        }
    }

    /// The counters that did not open, with the reason.
    pub fn unavailable(&self) -> impl Iterator<Item = (PerfCounter, &str)> {
        PerfCounter::ALL
            .into_iter()
            .zip(&self.errors)
            .filter_map(|(c, e)| e.as_deref().map(|e| (c, e)))
    }

    /// Reads every open counter (once a second, in the tick). A counter whose read fails
    /// keeps its last value.
    pub fn read(&mut self) {
        self.previous = self.values;
        for (slot, value) in self.slots.iter_mut().zip(self.values.iter_mut()) {
            if let Some(c) = slot {
                if let Ok(v) = c.read() {
                    *value = v;
                }
            }
        }
    }

    /// The last value read of `counter` (`None` when unavailable).
    pub fn value(&self, counter: PerfCounter) -> Option<u64> {
        self.available(counter)
            .then(|| self.values[counter as usize])
    }

    /// Instructions per cycle over the last interval, where both counters exist.
    pub fn ipc(&self) -> Option<f64> {
        let d = |c: PerfCounter| self.values[c as usize] - self.previous[c as usize];
        (self.available(PerfCounter::Cycles) && self.available(PerfCounter::Instructions))
            .then(|| d(PerfCounter::Cycles))
            .filter(|&cycles| cycles > 0)
            .map(|cycles| d(PerfCounter::Instructions) as f64 / cycles as f64)
    }

    /// `subzero_perf_available` for every counter, and the value of each available one.
    pub fn render(&self, shard: usize, out: &mut String) {
        let scope = self.scope();
        for counter in PerfCounter::ALL {
            let label = counter.label();
            let available = u8::from(self.available(counter));
            let _ = writeln!(
                out,
                "subzero_perf_available{{shard=\"{shard}\",counter=\"{label}\",scope=\"{scope}\"}} {available}"
            );
        }
        for counter in PerfCounter::ALL {
            let Some(v) = self.value(counter) else {
                continue;
            };
            let family = counter.family();
            if counter == PerfCounter::TaskClock {
                let s = v as f64 / 1e9;
                let _ = writeln!(
                    out,
                    "{family}{{shard=\"{shard}\",scope=\"{scope}\"}} {s:.9}"
                );
            } else {
                let _ = writeln!(out, "{family}{{shard=\"{shard}\",scope=\"{scope}\"}} {v}");
            }
        }
        if let Some(ipc) = self.ipc() {
            let _ = writeln!(
                out,
                "subzero_perf_ipc{{shard=\"{shard}\",scope=\"{scope}\"}} {ipc:.3}"
            );
        }
    }
}

/// CPU time of the calling thread in nanoseconds (user and kernel), from its CPU clock: the
/// shard's utilization works whether or not perf events do.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts up by `step` at each read.
    struct Fake {
        value: u64,
        step: u64,
    }

    impl CounterRead for Fake {
        fn read(&mut self) -> io::Result<u64> {
            self.value += self.step;
            Ok(self.value)
        }
    }

    /// Hardware refused as on a VM without a PMU (`ENOENT`) or `EOPNOTSUPP`; the kernel
    /// scope refused when `deny_kernel`.
    struct NoPmu {
        deny_kernel: bool,
        calls: Vec<(PerfCounter, bool)>,
    }

    impl Opener for NoPmu {
        fn open(
            &mut self,
            counter: PerfCounter,
            include_kernel: bool,
        ) -> io::Result<Box<dyn CounterRead>> {
            self.calls.push((counter, include_kernel));
            if include_kernel && self.deny_kernel {
                return Err(io::Error::from_raw_os_error(libc::EACCES));
            }
            match counter {
                PerfCounter::Cycles | PerfCounter::Instructions => {
                    Err(io::Error::from_raw_os_error(libc::ENOENT))
                }
                PerfCounter::CacheMisses | PerfCounter::BranchMisses => {
                    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
                }
                _ => Ok(Box::new(Fake { value: 0, step: 10 })),
            }
        }
    }

    #[test]
    fn unsupported_hardware_is_reported_unavailable_never_zero() {
        let mut opener = NoPmu {
            deny_kernel: false,
            calls: Vec::new(),
        };
        let mut perf = PerfCounters::open(&mut opener);
        assert_eq!(perf.scope(), "user+kernel");
        perf.read();
        perf.read();
        let mut out = String::new();
        perf.render(1, &mut out);
        for c in PerfCounter::ALL {
            let line = format!(
                "subzero_perf_available{{shard=\"1\",counter=\"{}\",scope=\"user+kernel\"}} {}",
                c.label(),
                u8::from(!c.is_hardware())
            );
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
        assert!(
            out.contains(
                "subzero_perf_context_switches_total{shard=\"1\",scope=\"user+kernel\"} 20"
            ),
            "{out}"
        );
        for family in [
            "cycles",
            "instructions",
            "cache_misses",
            "branch_misses",
            "ipc",
        ] {
            assert!(
                !out.contains(&format!("subzero_perf_{family}")),
                "{family} rendered:\n{out}"
            );
        }
        assert_eq!(perf.ipc(), None);
        assert_eq!(perf.unavailable().count(), 4);
    }

    #[test]
    fn kernel_scope_refused_falls_back_to_user_only() {
        let mut opener = NoPmu {
            deny_kernel: true,
            calls: Vec::new(),
        };
        let perf = PerfCounters::open(&mut opener);
        assert_eq!(perf.scope(), "user");
        assert!(perf.available(PerfCounter::TaskClock));
        // Asked with the kernel once, then user-only for every counter.
        assert_eq!(opener.calls[0], (PerfCounter::TaskClock, true));
        assert!(
            opener.calls[1..].iter().all(|&(_, k)| !k),
            "{:?}",
            opener.calls
        );
        let mut out = String::new();
        perf.render(0, &mut out);
        assert!(
            out.contains("counter=\"task_clock\",scope=\"user\"} 1"),
            "{out}"
        );
    }

    #[test]
    fn ipc_over_the_interval_when_the_pmu_exists() {
        struct All;
        impl Opener for All {
            fn open(&mut self, counter: PerfCounter, _: bool) -> io::Result<Box<dyn CounterRead>> {
                let step = match counter {
                    PerfCounter::Cycles => 1000,
                    PerfCounter::Instructions => 2500,
                    _ => 1,
                };
                Ok(Box::new(Fake { value: 0, step }))
            }
        }
        let mut perf = PerfCounters::open(&mut All);
        perf.read();
        perf.read();
        assert_eq!(perf.ipc(), Some(2.5));
        let mut out = String::new();
        perf.render(0, &mut out);
        assert!(
            out.contains("subzero_perf_ipc{shard=\"0\",scope=\"user+kernel\"} 2.500"),
            "{out}"
        );
        assert!(
            out.contains("subzero_perf_cycles_total{shard=\"0\",scope=\"user+kernel\"} 2000"),
            "{out}"
        );
    }

    #[test]
    fn software_counters_open_on_this_machine() {
        // Software events exist on every Linux this runs on (a VM without a PMU included).
        let mut perf = PerfCounters::open(&mut PerfEventOpener);
        assert!(
            perf.available(PerfCounter::TaskClock),
            "{:?}",
            perf.unavailable().collect::<Vec<_>>()
        );
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        perf.read();
        assert!(perf.value(PerfCounter::TaskClock).unwrap() > 0);
        assert!(thread_cpu_ns() > 0);
    }
}
