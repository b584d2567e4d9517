//! Reading subzero's Prometheus text exposition (`GET /metrics`): per-operation server time
//! quantiles and cache/pool counters.

use serde::Serialize;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the lines we can read (`name{k="v",...} value` or `name value`); comments and lines
/// that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(char::is_whitespace)?;
    let value: f64 = value.parse().ok()?;
    let head = head.trim();
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (head, Vec::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let end = after.find('"')?;
        labels.push((key.trim().to_string(), after[..end].to_string()));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(labels)
}

/// Sum of a counter over all shards.
pub fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// Server time for one operation, from `subzero_request_latency_seconds` (worst shard).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpTiming {
    pub op: String,
    pub p50_us: f64,
    pub p99_us: f64,
    pub count: u64,
}

pub fn op_timings(samples: &[Sample]) -> Vec<OpTiming> {
    let mut ops: Vec<String> = samples
        .iter()
        .filter(|s| s.name == "subzero_request_latency_seconds")
        .filter_map(|s| s.label("op").map(str::to_string))
        .collect();
    ops.sort();
    ops.dedup();
    ops.into_iter()
        .map(|op| {
            let quantile = |q: &str| {
                samples
                    .iter()
                    .filter(|s| {
                        s.name == "subzero_request_latency_seconds"
                            && s.label("op") == Some(op.as_str())
                            && s.label("quantile") == Some(q)
                    })
                    .map(|s| s.value * 1e6)
                    .fold(0.0, f64::max)
            };
            let count = samples
                .iter()
                .filter(|s| {
                    s.name == "subzero_request_latency_seconds_count"
                        && s.label("op") == Some(op.as_str())
                })
                .map(|s| s.value as u64)
                .sum();
            OpTiming {
                p50_us: quantile("0.5"),
                p99_us: quantile("0.99"),
                count,
                op,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "the parsed values are exact decimal literals"
)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# TYPE subzero_request_latency_seconds summary
subzero_request_latency_seconds{shard=\"0\",op=\"token_pool_hit\",quantile=\"0.5\"} 0.000000750
subzero_request_latency_seconds{shard=\"0\",op=\"token_pool_hit\",quantile=\"0.99\"} 0.000002000
subzero_request_latency_seconds_count{shard=\"0\",op=\"token_pool_hit\"} 1200
subzero_request_latency_seconds{shard=\"1\",op=\"token_pool_hit\",quantile=\"0.5\"} 0.000000900
subzero_request_latency_seconds_count{shard=\"1\",op=\"token_pool_hit\"} 300
subzero_cache_hits_total{shard=\"0\"} 10
subzero_cache_hits_total{shard=\"1\"} 5
subzero_signing_keys 1
garbage line without value x
";

    #[test]
    fn parses_labels_and_values() {
        let samples = parse(SAMPLE);
        assert_eq!(samples.len(), 8);
        assert_eq!(samples[0].label("op"), Some("token_pool_hit"));
        assert_eq!(samples[0].label("quantile"), Some("0.5"));
        assert_eq!(sum(&samples, "subzero_cache_hits_total"), 15.0);
        assert_eq!(sum(&samples, "subzero_signing_keys"), 1.0);
        assert_eq!(sum(&samples, "absent"), 0.0);
    }

    #[test]
    fn op_timings_take_the_worst_shard_and_sum_counts() {
        let timings = op_timings(&parse(SAMPLE));
        assert_eq!(timings.len(), 1);
        let t = &timings[0];
        assert_eq!(t.op, "token_pool_hit");
        assert!((t.p50_us - 0.9).abs() < 1e-9);
        assert!((t.p99_us - 2.0).abs() < 1e-9);
        assert_eq!(t.count, 1500);
    }
}
