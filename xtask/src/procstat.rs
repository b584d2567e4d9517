//! Server CPU time from `/proc/PID/stat` (utime + stime, all threads of the process).

use anyhow::{bail, Context, Result};

/// CPU time a process has used so far, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    pub utime: u64,
    pub stime: u64,
}

impl CpuTicks {
    pub fn total(self) -> u64 {
        self.utime + self.stime
    }
}

// After the comm, fields start at 3 (state); utime is field 14 and stime field 15.
const UTIME_IDX: usize = 14 - 3;
const STIME_IDX: usize = 15 - 3;

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<CpuTicks> {
    let Some(close) = text.rfind(')') else {
        bail!("no `)` in /proc stat line");
    };
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    if fields.len() <= STIME_IDX {
        bail!(
            "/proc stat line has only {} fields after comm",
            fields.len()
        );
    }
    let utime = fields[UTIME_IDX].parse().context("utime is not a number")?;
    let stime = fields[STIME_IDX].parse().context("stime is not a number")?;
    Ok(CpuTicks { utime, stime })
}

/// Reads the CPU ticks of a live process.
pub fn read(pid: u32) -> Result<CpuTicks> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("could not read {path}"))?;
    parse_stat(&text)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Server CPU µs per request answered over a window; `None` when nothing was answered.
pub fn cpu_us_per_req(
    start: CpuTicks,
    end: CpuTicks,
    ticks_per_s: u64,
    n_answered: u64,
) -> Option<f64> {
    if n_answered == 0 || ticks_per_s == 0 {
        return None;
    }
    let ticks = end.total().saturating_sub(start.total());
    let cpu_us = ticks as f64 * 1e6 / ticks_per_s as f64;
    Some(cpu_us / n_answered as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "4242 (peer hello (x)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
        731 269 0 0 20 0 2 0 123456 10000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_utime_and_stime_past_a_tricky_comm() {
        let ticks = parse_stat(SAMPLE).unwrap();
        assert_eq!(
            ticks,
            CpuTicks {
                utime: 731,
                stime: 269
            }
        );
        assert_eq!(ticks.total(), 1000);
    }

    #[test]
    fn rejects_truncated_lines() {
        assert!(parse_stat("1 (x) S 1 2 3").is_err());
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn reads_own_process() {
        let ticks = read(std::process::id()).unwrap();
        // Burn a little CPU so the counter is plausibly non-decreasing; it must never go back.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(read(std::process::id()).unwrap().total() >= ticks.total());
    }

    #[test]
    fn cpu_per_request() {
        let start = CpuTicks {
            utime: 100,
            stime: 50,
        };
        let end = CpuTicks {
            utime: 300,
            stime: 150,
        };
        // 300 ticks at 100 Hz = 3 s = 3e6 µs over 500k requests = 6 µs each.
        let us = cpu_us_per_req(start, end, 100, 500_000).unwrap();
        assert!((us - 6.0).abs() < 1e-9);
        assert_eq!(cpu_us_per_req(start, end, 100, 0), None);
    }
}
