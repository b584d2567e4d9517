//! Plain-data gate counters and their Prometheus text exposition.

use std::fmt::Write as _;

use subzero_common::{Reason, N_REASONS};

use super::maps::GateMaps;
use super::GateMode;

/// What `/metrics` shows about the gate; no aya types, cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateSnapshot {
    /// Current mode.
    pub mode: GateMode,
    /// Packets per [`Reason`] summed over CPUs, indexed by `Reason as usize`.
    pub totals: [u64; N_REASONS as usize],
    /// Packets per CPU and reason.
    pub per_cpu: Vec<[u64; N_REASONS as usize]>,
    /// IPv4 blocklist entries.
    pub blocklist_v4: usize,
    /// IPv6 blocklist entries.
    pub blocklist_v6: usize,
    /// Set when the maps could not be read (the rest is then zero).
    pub error: Option<String>,
}

impl GateSnapshot {
    /// The snapshot of an `Off` gate.
    pub fn off() -> GateSnapshot {
        GateSnapshot {
            mode: GateMode::Off,
            totals: [0; N_REASONS as usize],
            per_cpu: Vec::new(),
            blocklist_v4: 0,
            blocklist_v6: 0,
            error: None,
        }
    }

    pub(crate) fn read(mode: GateMode, maps: &GateMaps) -> GateSnapshot {
        let mut snap = GateSnapshot {
            mode,
            ..GateSnapshot::off()
        };
        let res = maps.counters_per_cpu().and_then(|per_cpu| {
            let entries = maps.entries()?;
            Ok((per_cpu, entries))
        });
        match res {
            Ok((per_cpu, entries)) => {
                for row in &per_cpu {
                    for (total, v) in snap.totals.iter_mut().zip(row) {
                        *total += v;
                    }
                }
                snap.per_cpu = per_cpu;
                snap.blocklist_v4 = entries.iter().filter(|b| b.cidr.addr().is_ipv4()).count();
                snap.blocklist_v6 = entries.len() - snap.blocklist_v4;
            }
            Err(e) => snap.error = Some(e.to_string()),
        }
        snap
    }

    /// Packets for one reason, summed over CPUs.
    pub fn total(&self, reason: Reason) -> u64 {
        self.totals[reason as usize]
    }

    /// Blocklist entries, both families.
    pub fn blocklist_entries(&self) -> usize {
        self.blocklist_v4 + self.blocklist_v6
    }

    /// Appends the Prometheus text exposition of the gate metrics.
    pub fn write_prometheus(&self, out: &mut String) {
        // `write!` to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP subzero_gate_mode eBPF gate mode (1 for the active one)."
        );
        let _ = writeln!(out, "# TYPE subzero_gate_mode gauge");
        for mode in GateMode::ALL {
            let _ = writeln!(
                out,
                "subzero_gate_mode{{mode=\"{}\"}} {}",
                mode.as_str(),
                u8::from(mode == self.mode)
            );
        }
        let _ = writeln!(
            out,
            "# HELP subzero_gate_packets_total Packets seen by the eBPF gate, by verdict reason."
        );
        let _ = writeln!(out, "# TYPE subzero_gate_packets_total counter");
        for reason in Reason::ALL {
            let _ = writeln!(
                out,
                "subzero_gate_packets_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.total(reason)
            );
        }
        let _ = writeln!(out, "# HELP subzero_gate_cpu_packets_total Packets seen by the eBPF gate, by CPU and reason.");
        let _ = writeln!(out, "# TYPE subzero_gate_cpu_packets_total counter");
        for (cpu, row) in self.per_cpu.iter().enumerate() {
            for reason in Reason::ALL {
                let _ = writeln!(
                    out,
                    "subzero_gate_cpu_packets_total{{cpu=\"{cpu}\",reason=\"{}\"}} {}",
                    reason.as_str(),
                    row[reason as usize]
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP subzero_gate_blocklist_entries Entries in the kernel blocklist."
        );
        let _ = writeln!(out, "# TYPE subzero_gate_blocklist_entries gauge");
        let _ = writeln!(
            out,
            "subzero_gate_blocklist_entries {}",
            self.blocklist_entries()
        );
        let _ = writeln!(
            out,
            "# HELP subzero_gate_read_errors Whether the last read of the gate maps failed."
        );
        let _ = writeln!(out, "# TYPE subzero_gate_read_errors gauge");
        let _ = writeln!(
            out,
            "subzero_gate_read_errors {}",
            u8::from(self.error.is_some())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let mut snap = GateSnapshot {
            mode: GateMode::Generic,
            ..GateSnapshot::off()
        };
        snap.totals = [10, 3, 2, 1];
        snap.per_cpu = vec![[6, 3, 0, 1], [4, 0, 2, 0]];
        snap.blocklist_v4 = 2;
        snap.blocklist_v6 = 1;
        let mut out = String::new();
        snap.write_prometheus(&mut out);
        for line in [
            "subzero_gate_mode{mode=\"generic\"} 1",
            "subzero_gate_mode{mode=\"off\"} 0",
            "subzero_gate_packets_total{reason=\"pass\"} 10",
            "subzero_gate_packets_total{reason=\"drop_block\"} 3",
            "subzero_gate_packets_total{reason=\"drop_rate\"} 2",
            "subzero_gate_packets_total{reason=\"pass_malformed\"} 1",
            "subzero_gate_cpu_packets_total{cpu=\"1\",reason=\"drop_rate\"} 2",
            "subzero_gate_blocklist_entries 3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn off_reports_off() {
        let mut out = String::new();
        GateSnapshot::off().write_prometheus(&mut out);
        assert!(out.contains("subzero_gate_mode{mode=\"off\"} 1"));
        assert!(out.contains("subzero_gate_blocklist_entries 0"));
    }
}
