//! One shard's monitor: its latency histograms, perf counters, CPU share and degradation
//! detector, built on the shard's own thread and ticked once a second from its background
//! work (perf reads and the detector run there, never per request).

use std::fmt::Write as _;
use std::time::Instant;

use super::detector::{reason_label, Detector, DetectorConfig, Interval, N_REASONS};
use super::hist::OpHistograms;
use super::perf::{thread_cpu_ns, Opener, PerfCounters};
use super::Op;

/// `[monitor]` after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSettings {
    /// Off: no per-request timing or histograms, no perf counters (the detector then sees
    /// only CPU and queue depth).
    pub enabled: bool,
    /// What raises a degradation.
    pub detector: DetectorConfig,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        let mut slo_p99_ns = [0; Op::ALL.len()];
        for (op, us) in DEFAULT_SLO_P99_US {
            slo_p99_ns[op as usize] = us * 1000;
        }
        MonitorSettings {
            enabled: true,
            detector: DetectorConfig {
                slo_p99_ns,
                min_samples: 10,
                cpu_saturation: 0.95,
                queue_high_water: 1024,
                raise_after: 3,
                clear_after: 5,
            },
        }
    }
}

/// Default p99 SLO of each op in µs (server time on the shard, not the client's round trip).
pub const DEFAULT_SLO_P99_US: [(Op, u64); Op::ALL.len()] = [
    (Op::AuthenticateHit, 1_000),
    (Op::AuthenticateVerify, 5_000),
    (Op::AuthenticateBatch, 50_000),
    (Op::TokenPoolHit, 1_000),
    (Op::TokenSign, 5_000),
    (Op::Revoke, 5_000),
    (Op::PermissionHit, 1_000),
    (Op::PermissionCheck, 50_000),
    (Op::Vault, 5_000),
    (Op::Audit, 5_000),
    (Op::RateLimitCheck, 1_000),
    (Op::ThreatCheck, 5_000),
    (Op::RiskAssess, 5_000),
    (Op::Other, 10_000),
];

/// One shard's monitor.
pub struct ShardMonitor {
    shard: usize,
    enabled: bool,
    /// Per-op latency (recorded only when enabled).
    pub hists: OpHistograms,
    perf: PerfCounters,
    detector: Detector,
    /// Thread CPU time and wall clock at the last tick.
    last_cpu_ns: u64,
    last_tick: Instant,
    /// CPU share over the last interval.
    cpu_utilization: f64,
}

impl ShardMonitor {
    /// Opens the perf counters on the calling thread (call it on the shard's own thread).
    pub fn new(shard: usize, settings: &MonitorSettings, opener: &mut dyn Opener) -> ShardMonitor {
        let perf = if settings.enabled {
            PerfCounters::open(opener)
        } else {
            PerfCounters::none()
        };
        if settings.enabled && shard == 0 {
            let missing: Vec<String> = perf
                .unavailable()
                .map(|(c, e)| format!("{} ({e})", c.label()))
                .collect();
            tracing::info!(
                scope = perf.scope(),
                unavailable = missing.join(", "),
                "perf-event counters opened"
            );
        }
        ShardMonitor {
            shard,
            enabled: settings.enabled,
            hists: OpHistograms::new(),
            perf,
            detector: Detector::new(settings.detector.clone()),
            last_cpu_ns: thread_cpu_ns(),
            last_tick: Instant::now(),
            cpu_utilization: 0.0,
        }
    }

    /// When a request started, if requests are timed.
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.enabled.then(Instant::now)
    }

    /// Records a request of `op` that started at `started`.
    #[inline]
    pub fn record(&mut self, op: Op, started: Option<Instant>) {
        if let Some(started) = started {
            let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.hists.record(op, ns);
        }
    }

    /// The once-a-second tick: reads the perf counters and the thread's CPU clock, closes the
    /// latency interval and feeds the detector (logging each raise and clear).
    pub fn tick(&mut self, queue_depth: usize) {
        self.perf.read();
        let cpu_ns = thread_cpu_ns();
        let now = Instant::now();
        let wall_ns = now.duration_since(self.last_tick).as_nanos().max(1) as f64;
        self.cpu_utilization = (cpu_ns.saturating_sub(self.last_cpu_ns) as f64 / wall_ns).min(1.0);
        self.last_cpu_ns = cpu_ns;
        self.last_tick = now;
        let interval = Interval {
            ops: self.hists.tick(),
            cpu: self.cpu_utilization,
            queue_depth,
        };
        self.observe(&interval);
    }

    /// Feeds one interval to the detector and logs what changed.
    fn observe(&mut self, interval: &Interval) {
        for change in self.detector.observe(interval) {
            let reason = reason_label(change.reason);
            if change.raised {
                tracing::warn!(
                    shard = self.shard,
                    reason,
                    cpu = interval.cpu,
                    queue_depth = interval.queue_depth,
                    "degraded"
                );
            } else {
                tracing::info!(shard = self.shard, reason, "degradation cleared");
            }
        }
    }

    /// CPU share of the shard over the last interval.
    pub fn cpu_utilization(&self) -> f64 {
        self.cpu_utilization
    }

    /// The shard's monitor section: histograms, perf counters, CPU, degraded flags.
    pub fn render(&self, out: &mut String) {
        let shard = self.shard;
        self.hists.render(shard, out);
        let _ = writeln!(
            out,
            "subzero_monitor_enabled{{shard=\"{shard}\"}} {}",
            u8::from(self.enabled)
        );
        if self.enabled {
            self.perf.render(shard, out);
        }
        let _ = writeln!(
            out,
            "subzero_shard_cpu_utilization{{shard=\"{shard}\"}} {:.4}",
            self.cpu_utilization
        );
        let _ = writeln!(
            out,
            "subzero_shard_cpu_seconds_total{{shard=\"{shard}\"}} {:.6}",
            self.last_cpu_ns as f64 / 1e9
        );
        for reason in 0..N_REASONS {
            let _ = writeln!(
                out,
                "subzero_degraded{{shard=\"{shard}\",reason=\"{}\"}} {}",
                reason_label(reason),
                u8::from(self.detector.is_raised(reason))
            );
        }
    }
}
