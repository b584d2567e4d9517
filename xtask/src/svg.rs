//! A hand-written SVG chart for the report: throughput bars and a latency-percentile plot.
//! Plain SVG text keeps xtask free of a plotting dependency.

use std::fmt::Write as _;

use crate::report::{load_rate, Report, Status, LOAD_SAT, SUBZERO, SUSTAINED_FRACTION_MIN};

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 360.0;
const MARGIN_L: f64 = 90.0;
const MARGIN_R: f64 = 200.0;
const COLORS: [&str; 8] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the chart; `rates_rps` are the fixed offered rates (the highest with data is plotted).
pub fn render(report: &Report, rates_rps: &[u64]) -> String {
    let mut svg = String::new();
    let height = PANEL_H * 2.0 + 40.0;
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    throughput_panel(&mut svg, report, 0.0);
    latency_panel(&mut svg, report, rates_rps, PANEL_H + 30.0);
    svg.push_str("</svg>\n");
    svg
}

fn throughput_panel(svg: &mut String, report: &Report, top: f64) {
    let bars: Vec<(&str, f64)> = report
        .rows
        .iter()
        .filter(|r| r.scenario == "auth-hit" && r.load == LOAD_SAT && r.status == Status::Measured)
        .filter_map(|r| Some((r.server.as_str(), r.requests_per_s?)))
        .collect();
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="15" font-weight="bold">auth-hit, wrk saturation: requests/s (one server core)</text>"#,
        MARGIN_L,
        top + 20.0
    );
    let plot_top = top + 40.0;
    let plot_h = PANEL_H - 90.0;
    let plot_w = WIDTH - MARGIN_L - MARGIN_R;
    let max = bars.iter().map(|&(_, v)| v).fold(0.0, f64::max);
    if bars.is_empty() || max <= 0.0 {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">no data</text>"#,
            MARGIN_L,
            plot_top + 40.0
        );
        return;
    }
    let axis_y = plot_top + plot_h;
    let _ = writeln!(
        svg,
        r#"<line x1="{MARGIN_L}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="black"/>"#,
        MARGIN_L + plot_w
    );
    let slot = plot_w / bars.len() as f64;
    for (idx, &(server, value)) in bars.iter().enumerate() {
        let h = value / max * plot_h;
        let x = MARGIN_L + slot * idx as f64 + slot * 0.15;
        let w = slot * 0.7;
        let color = COLORS[idx % COLORS.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="{color}"/>"#,
            axis_y - h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}k</text>"#,
            x + w / 2.0,
            axis_y - h - 4.0,
            value / 1e3
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + w / 2.0,
            axis_y + 16.0,
            escape(server)
        );
    }
}

/// One server's latency points: p50, p99, p99.9, max (µs).
type Series = (String, [f64; 4]);

/// The auth-hit latency series to plot: at the highest offered rate subzero kept up with,
/// else the highest with any data.
fn latency_series(report: &Report, rates_rps: &[u64]) -> Option<(u64, Vec<Series>)> {
    // The highest offered rate that subzero kept up with (or any, if it kept up with none).
    let kept_up = |rate: u64| {
        report
            .row("auth-hit", SUBZERO, &load_rate(rate))
            .is_some_and(|r| {
                r.requests_per_s
                    .is_some_and(|rps| rps >= rate as f64 * SUSTAINED_FRACTION_MIN)
            })
    };
    let series_for = |rate: u64| -> Vec<Series> {
        let load = load_rate(rate);
        report
            .rows
            .iter()
            .filter(|r| r.scenario == "auth-hit" && r.load == load && r.status == Status::Measured)
            .filter_map(|r| {
                Some((
                    r.server.clone(),
                    [r.p50_us?, r.p99_us?, r.p999_us?, r.max_us?],
                ))
            })
            .collect()
    };
    rates_rps
        .iter()
        .rev()
        .filter(|&&rate| kept_up(rate))
        .chain(rates_rps.iter().rev())
        .map(|&rate| (rate, series_for(rate)))
        .find(|(_, series)| !series.is_empty())
}

fn latency_panel(svg: &mut String, report: &Report, rates_rps: &[u64], top: f64) {
    let Some((rate, series)) = latency_series(report, rates_rps) else {
        let _ = writeln!(
            svg,
            r#"<text x="{MARGIN_L}" y="{}">no fixed-rate latency data</text>"#,
            top + 40.0
        );
        return;
    };
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN_L}" y="{}" font-size="15" font-weight="bold">auth-hit latency at {rate} req/s offered (loadgen, open loop), µs, log scale</text>"#,
        top + 20.0
    );
    let plot_top = top + 40.0;
    let plot_h = PANEL_H - 90.0;
    let plot_w = WIDTH - MARGIN_L - MARGIN_R;
    let values = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| *v > 0.0);
    let lo = values
        .clone()
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let hi = values.fold(1.0, f64::max).log10().ceil().max(lo + 1.0);
    let y_of = |us: f64| plot_top + plot_h - (us.max(1.0).log10() - lo) / (hi - lo) * plot_h;
    let labels = ["p50", "p99", "p99.9", "max"];
    let x_of = |idx: usize| MARGIN_L + plot_w * (idx as f64 + 0.5) / labels.len() as f64;
    for decade in (lo as i32)..=(hi as i32) {
        let us = 10f64.powi(decade);
        let y = y_of(us);
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN_L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{us}</text>"##,
            MARGIN_L + plot_w,
            MARGIN_L - 6.0,
            y + 4.0
        );
    }
    for (idx, label) in labels.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            x_of(idx),
            plot_top + plot_h + 18.0
        );
    }
    for (series_idx, (server, points)) in series.iter().enumerate() {
        let color = COLORS[series_idx % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(idx, &us)| format!("{:.1},{:.1}", x_of(idx), y_of(us)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        let legend_y = plot_top + 16.0 * series_idx as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            WIDTH - MARGIN_R + 20.0,
            legend_y,
            WIDTH - MARGIN_R + 38.0,
            legend_y + 10.0,
            escape(server)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Machine, Row};

    #[test]
    fn renders_bars_and_lines() {
        let mut hit = Row::new("auth-hit", "subzero", LOAD_SAT);
        hit.requests_per_s = Some(120_000.0);
        let mut lat = Row::new("auth-hit", "subzero", &load_rate(20_000));
        lat.requests_per_s = Some(19_990.0);
        lat.p50_us = Some(50.0);
        lat.p99_us = Some(200.0);
        lat.p999_us = Some(900.0);
        lat.max_us = Some(5000.0);
        let report = Report {
            date_utc: String::new(),
            machine: Machine {
                cpu_model: String::new(),
                n_cpus: 2,
                kernel: String::new(),
                load_avg_1m: 0.0,
            },
            pinning: String::new(),
            quick: true,
            n_runs: 1,
            run_s: 1,
            rows: vec![hit, lat],
            ceilings: vec![],
            server_op_timings: vec![],
            targets: vec![],
            notes: vec![],
        };
        let svg = render(&report, &[20_000, 50_000]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">120k<"));
        assert!(svg.contains("at 20000 req/s offered"));
        assert_eq!(svg.matches("<polyline").count(), 1);
    }
}
