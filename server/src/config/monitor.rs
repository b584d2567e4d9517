//! `[monitor]`: per-request histograms and perf counters on or off, and the degradation
//! detector's SLOs and thresholds, parsed onto [`MonitorSettings`] and validated at start.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{check_range, ConfigError};
use crate::monitor::{MonitorSettings, Op};

/// Longest SLO accepted (60 s), in µs.
const MAX_SLO_P99_US: u64 = 60_000_000;
/// Most intervals the detector may wait to raise or clear.
const MAX_INTERVALS: u32 = 3600;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMonitor {
    enabled: Option<bool>,
    /// Op label (`authenticate_cache_hit`, ...; `authenticate` sets both authenticate ops)
    /// → p99 SLO in µs; 0 turns an op's SLO off.
    #[serde(default)]
    slo_p99_us: BTreeMap<String, u64>,
    min_samples: Option<u64>,
    cpu_saturation: Option<f64>,
    queue_high_water: Option<usize>,
    raise_after_intervals: Option<u32>,
    clear_after_intervals: Option<u32>,
}

/// The file's `[monitor]` over the defaults, validated.
pub(super) fn from_file(file: FileMonitor) -> Result<MonitorSettings, ConfigError> {
    let mut m = MonitorSettings::default();
    if let Some(enabled) = file.enabled {
        m.enabled = enabled;
    }
    for (name, us) in file.slo_p99_us {
        if us > MAX_SLO_P99_US {
            return Err(ConfigError::Invalid(format!(
                "monitor.slo_p99_us.{name} must be at most {MAX_SLO_P99_US}, got {us}"
            )));
        }
        let ops: Vec<Op> = if name == "authenticate" {
            vec![Op::AuthenticateHit, Op::AuthenticateVerify]
        } else {
            Op::ALL
                .into_iter()
                .filter(|op| op.label() == name)
                .collect()
        };
        if ops.is_empty() {
            let known: Vec<&str> = Op::ALL.iter().map(|op| op.label()).collect();
            return Err(ConfigError::Invalid(format!(
                "monitor.slo_p99_us: unknown operation {name:?} (known: authenticate, {})",
                known.join(", ")
            )));
        }
        for op in ops {
            m.detector.slo_p99_ns[op as usize] = us * 1000;
        }
    }
    let d = &mut m.detector;
    if let Some(v) = file.min_samples {
        d.min_samples = v;
    }
    if let Some(v) = file.cpu_saturation {
        if !(v > 0.0 && v <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "monitor.cpu_saturation must be in (0, 1], got {v}"
            )));
        }
        d.cpu_saturation = v;
    }
    if let Some(v) = file.queue_high_water {
        d.queue_high_water = v;
    }
    if let Some(v) = file.raise_after_intervals {
        d.raise_after = v;
    }
    if let Some(v) = file.clear_after_intervals {
        d.clear_after = v;
    }
    check_range("monitor.min_samples", d.min_samples as usize, 1, 1 << 30)?;
    check_range("monitor.queue_high_water", d.queue_high_water, 1, 1 << 30)?;
    for (name, v) in [
        ("monitor.raise_after_intervals", d.raise_after),
        ("monitor.clear_after_intervals", d.clear_after),
    ] {
        check_range(name, v as usize, 1, MAX_INTERVALS as usize)?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::monitor::Op;

    #[test]
    fn monitor_section_parses_and_refuses_unknown_ops() {
        let c = Config::from_toml(
            "[monitor]\nenabled = false\nraise_after_intervals = 2\n[monitor.slo_p99_us]\nauthenticate = 1\nvault = 0\n",
            std::path::Path::new("."),
        )
        .unwrap();
        assert!(!c.monitor.enabled);
        assert_eq!(c.monitor.detector.raise_after, 2);
        assert_eq!(
            c.monitor.detector.slo_p99_ns[Op::AuthenticateHit as usize],
            1000
        );
        assert_eq!(
            c.monitor.detector.slo_p99_ns[Op::AuthenticateVerify as usize],
            1000
        );
        assert_eq!(c.monitor.detector.slo_p99_ns[Op::Vault as usize], 0);
        let err = Config::from_toml(
            "[monitor.slo_p99_us]\nauthenticat = 1\n",
            std::path::Path::new("."),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown operation"), "{err}");
        assert!(Config::from_toml(
            "[monitor]\ncpu_saturation = 1.5\n",
            std::path::Path::new(".")
        )
        .is_err());
        assert!(Config::from_toml("[monitor]\nbogus = 1\n", std::path::Path::new(".")).is_err());
    }
}
