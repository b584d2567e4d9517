//! The JSON lines printed by the project's own tools: `loadgen` and `crypto-ceiling`.

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The one JSON line `loadgen` prints at the end of a fixed-rate run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LoadgenResult {
    pub requests: u64,
    pub responses: u64,
    pub errors: u64,
    pub non_2xx: u64,
    pub duration_s: f64,
    pub achieved_rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// The one JSON line `crypto-ceiling` prints.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CeilingResult {
    pub mode: String,
    pub ops_per_s: f64,
    pub us_per_op: f64,
}

/// Finds the last line of `stdout` that parses as `T` (tools may print other lines first).
pub fn last_json_line<T: DeserializeOwned>(stdout: &str) -> Result<T> {
    let mut last_err = None;
    for line in stdout
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
    {
        match serde_json::from_str(line) {
            Ok(value) => return Ok(value),
            Err(err) => last_err = Some(err),
        }
    }
    match last_err {
        Some(err) => Err(err).context("JSON result line did not have the expected fields"),
        None => anyhow::bail!("no JSON result line in output:\n{stdout}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadgen_line_after_chatter() {
        let out = "connecting 64\n{\"requests\":40000,\"responses\":39990,\"errors\":10,\"non_2xx\":0,\
            \"duration_s\":2.0,\"achieved_rps\":19995.0,\"p50_us\":80,\"p90_us\":120.5,\"p99_us\":300,\
            \"p999_us\":900,\"max_us\":2000}\n";
        let r: LoadgenResult = last_json_line(out).unwrap();
        assert_eq!(r.responses, 39_990);
        assert!((r.p99_us - 300.0).abs() < 1e-9);
    }

    #[test]
    fn parses_ceiling_and_reports_missing_fields() {
        let c: CeilingResult =
            last_json_line("{\"mode\":\"verify\",\"ops_per_s\":26000.0,\"us_per_op\":38.4}")
                .unwrap();
        assert_eq!(c.mode, "verify");
        assert!(last_json_line::<LoadgenResult>("{\"requests\":1}").is_err());
        assert!(last_json_line::<LoadgenResult>("nothing here").is_err());
    }
}
