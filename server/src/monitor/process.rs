//! Process figures in the Prometheus client conventions (`process_resident_memory_bytes`,
//! `process_open_fds`, ...), read from `/proc/self` by the control plane's tick (file I/O:
//! never on a shard).

use std::fmt::Write as _;

/// Appends the `process_*` samples; a figure that cannot be read is left out.
pub fn render(out: &mut String) {
    // SAFETY: sysconf has no memory effects.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut fields = statm
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        if let (Some(size), Some(resident)) = (fields.next(), fields.next()) {
            let _ = writeln!(out, "process_virtual_memory_bytes {}", size * page);
            let _ = writeln!(out, "process_resident_memory_bytes {}", resident * page);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // Minus the descriptor of the directory being read.
        let _ = writeln!(out, "process_open_fds {}", dir.count().saturating_sub(1));
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0 {
        let _ = writeln!(out, "process_max_fds {}", limit.rlim_cur);
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        render_stat(&stat, out);
    }
}

/// utime, stime, num_threads and starttime from `/proc/self/stat`.
fn render_stat(stat: &str, out: &mut String) {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime 15, threads 20, start 22.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    // SAFETY: sysconf has no memory effects.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        let cpu_s = (utime + stime) as f64 / ticks as f64;
        let _ = writeln!(out, "process_cpu_seconds_total {cpu_s:.2}");
    }
    if let Some(threads) = field(20) {
        let _ = writeln!(out, "process_threads {threads}");
    }
    if let (Some(start), Some(boot_s)) = (field(22), boot_time_s()) {
        let _ = writeln!(out, "process_start_time_seconds {}", boot_s + start / ticks);
    }
}

/// The boot time in unix seconds (`btime` of `/proc/stat`).
fn boot_time_s() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let mut out = String::new();
        super::render(&mut out);
        let value = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{out}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_start_time_seconds") > 1.6e9);
        let _ = value("process_cpu_seconds_total");
        let _ = value("process_max_fds");
    }
}
