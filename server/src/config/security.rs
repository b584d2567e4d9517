//! `[threat]` and `[risk]`: thresholds, windows, weights and table bounds of the threat-check
//! and risk-assessment decision code (`crate::security`), parsed from the file and validated
//! once at start.
//!
//! Defaults follow what the products the issue names ship: credential stuffing as Elastic's
//! Okta rule (≥ 25 failures, ≥ 15 usernames in 15 min, ≤ 2 per username), brute force as
//! Auth0's (10 consecutive failures per username and source) and Wazuh's sshd rule (8 failures
//! in 120 s), MFA push bombing as Elastic's (≥ 5 denials in 10 min).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{check_range, ConfigError};

/// Most entries of `risk.scope_sensitivity`.
const MAX_SCOPE_SENSITIVITIES: usize = 1024;
/// Largest `threat.max_tracked_attempts` (failures remembered per source for stuffing).
const MAX_TRACKED_ATTEMPTS: usize = 1024;
/// Largest count threshold of the windowed signals (ring sizes follow the threshold).
const MAX_COUNT_THRESHOLD: usize = 256;
/// Largest per-shard table size for each keyed table.
const MAX_TABLE_KEYS: usize = 1 << 22;
/// Longest window or memory, in seconds (a week).
const MAX_WINDOW_S: u64 = 7 * 86_400;

/// Weight of each threat signal in [0, 1]; the score is `1 - Π(1 - w)` over the signals that
/// fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalWeights {
    /// `credential_stuffing` (by source).
    pub credential_stuffing: f64,
    /// `brute_force`: consecutive failures for one username from one source.
    pub brute_force: f64,
    /// `failure_burst`: failures from one source within a short window.
    pub failure_burst: f64,
    /// `mfa_push_bombing`: denied pushes for one subject.
    pub mfa_push_bombing: f64,
    /// `mfa_success_after_denials`: an approval right after a run of denials (critical).
    pub mfa_success_after_denials: f64,
    /// `impossible_travel`.
    pub impossible_travel: f64,
    /// `disposable_email`: a signup with a listed disposable domain.
    pub disposable_email: f64,
    /// `signup_burst`: signups per e-mail domain per hour.
    pub signup_burst: f64,
    /// `prompt_injection`.
    pub prompt_injection: f64,
}

/// `[threat]` after validation. Table sizes are per shard: each shard owns the keys routed to
/// it, so the whole server holds up to `n_shards` times as many.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreatConfig {
    /// Score at or above which the action is `flag`.
    pub flag_threshold: f64,
    /// Score at or above which the action is `block` (the source goes on the blocklist).
    pub block_threshold: f64,
    /// How long a `block` keeps the source on the kernel blocklist.
    pub block_ttl_s: u64,
    /// Longest `text` of a `prompt` event, in bytes (longer bodies are refused).
    pub max_text_bytes: usize,
    /// Most source addresses one shard tracks (least recently seen evicted).
    pub max_sources: usize,
    /// Most subjects one shard tracks.
    pub max_subjects: usize,
    /// Most e-mail domains one shard tracks.
    pub max_domains: usize,
    /// Credential stuffing window.
    pub stuffing_window_s: u64,
    /// Credential stuffing: at least this many failed logins from the source in the window…
    pub stuffing_min_attempts: usize,
    /// …for at least this many distinct usernames…
    pub stuffing_min_usernames: usize,
    /// …and at most this many attempts per username on average.
    pub stuffing_max_per_username: usize,
    /// Failed logins remembered per source for stuffing (the most recent ones in the window).
    pub max_tracked_attempts: usize,
    /// Brute force: consecutive failures for one username from one source.
    pub brute_force_failures: usize,
    /// Usernames with a consecutive-failure counter per source (least recent evicted).
    pub max_usernames_per_source: usize,
    /// Failure burst: this many failures from one source…
    pub burst_failures: usize,
    /// …within this many seconds.
    pub burst_window_s: u64,
    /// MFA push bombing: this many denied pushes for one subject…
    pub mfa_denials: usize,
    /// …within this many seconds (also the window of the critical approval).
    pub mfa_window_s: u64,
    /// An approval after at least this many denials in the window is critical.
    pub mfa_critical_after_denials: usize,
    /// Impossible travel: speed between consecutive successful logins above this.
    pub travel_max_kmh: f64,
    /// Impossible travel: ignore hops shorter than this (geolocation jitter).
    pub travel_min_km: f64,
    /// Signup burst: this many signups with one e-mail domain within an hour.
    pub signups_per_domain_per_hour: usize,
    /// Devices and networks remembered per subject (each; least recent evicted).
    pub max_known_per_subject: usize,
    /// Signal weights.
    pub weights: SignalWeights,
}

impl Default for ThreatConfig {
    fn default() -> Self {
        ThreatConfig {
            flag_threshold: 0.5,
            block_threshold: 0.9,
            block_ttl_s: 900,
            max_text_bytes: 16_384,
            max_sources: 16_384,
            max_subjects: 32_768,
            max_domains: 16_384,
            stuffing_window_s: 900,
            stuffing_min_attempts: 25,
            stuffing_min_usernames: 15,
            stuffing_max_per_username: 2,
            max_tracked_attempts: 32,
            brute_force_failures: 10,
            max_usernames_per_source: 16,
            burst_failures: 8,
            burst_window_s: 120,
            mfa_denials: 5,
            mfa_window_s: 600,
            mfa_critical_after_denials: 3,
            travel_max_kmh: 1000.0,
            travel_min_km: 100.0,
            signups_per_domain_per_hour: 20,
            max_known_per_subject: 8,
            weights: SignalWeights {
                credential_stuffing: 0.9,
                brute_force: 0.7,
                failure_burst: 0.5,
                mfa_push_bombing: 0.7,
                mfa_success_after_denials: 0.95,
                impossible_travel: 0.6,
                disposable_email: 0.6,
                signup_burst: 0.5,
                prompt_injection: 0.8,
            },
        }
    }
}

/// Weight of each risk factor in [0, 1]: a factor contributes `weight × strength` (strength in
/// [0, 1]) and the score is `1 - Π(1 - contribution)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskWeights {
    /// `recent_failures` of the subject (strength: count / `failures_saturate`).
    pub recent_failures: f64,
    /// `subject_threat`: the subject's recent threat score.
    pub subject_threat: f64,
    /// `source_threat`: the source's recent threat score.
    pub source_threat: f64,
    /// `source_blocks`: blocks of the source (strength: count / `blocks_saturate`).
    pub source_blocks: f64,
    /// `new_device`: a device the subject never logged in from.
    pub new_device: f64,
    /// `new_network`: a /24 (IPv4) or /48 (IPv6) the subject never logged in from.
    pub new_network: f64,
    /// `scope_sensitivity`: the most sensitive requested scope.
    pub scope_sensitivity: f64,
    /// `stale_strong_auth`: time since the last strong authentication (strength: age /
    /// `strong_auth_max_age_s`, 1 when there was none).
    pub stale_strong_auth: f64,
}

/// `[risk]` after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskConfig {
    /// Score at or above which the decision is `step_up`.
    pub step_up_threshold: f64,
    /// Score at or above which the decision is `deny`.
    pub deny_threshold: f64,
    /// Failures of the subject counted over this window.
    pub failures_window_s: u64,
    /// This many recent failures give the factor its full weight.
    pub failures_saturate: usize,
    /// Threat scores of subject and source count for this long.
    pub threat_memory_s: u64,
    /// Blocks of the source count for this long.
    pub block_memory_s: u64,
    /// This many remembered blocks give the factor its full weight.
    pub blocks_saturate: usize,
    /// A strong authentication this old or older (or none) gives the factor its full weight.
    pub strong_auth_max_age_s: u64,
    /// Scope → sensitivity in [0, 1].
    pub scope_sensitivity: BTreeMap<String, f64>,
    /// Sensitivity of a scope not in the map.
    pub default_scope_sensitivity: f64,
    /// Factor weights.
    pub weights: RiskWeights,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            step_up_threshold: 0.5,
            deny_threshold: 0.85,
            failures_window_s: 900,
            failures_saturate: 5,
            threat_memory_s: 3600,
            block_memory_s: 86_400,
            blocks_saturate: 2,
            strong_auth_max_age_s: 3600,
            scope_sensitivity: ["admin", "write", "delete", "payments"]
                .into_iter()
                .map(|s| (s.to_owned(), 1.0))
                .collect(),
            default_scope_sensitivity: 0.0,
            weights: RiskWeights {
                recent_failures: 0.4,
                subject_threat: 0.5,
                source_threat: 0.5,
                source_blocks: 0.6,
                new_device: 0.15,
                new_network: 0.15,
                scope_sensitivity: 0.4,
                stale_strong_auth: 0.2,
            },
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileThreat {
    flag_threshold: Option<f64>,
    block_threshold: Option<f64>,
    block_ttl_s: Option<u64>,
    max_text_bytes: Option<usize>,
    max_sources: Option<usize>,
    max_subjects: Option<usize>,
    max_domains: Option<usize>,
    stuffing_window_s: Option<u64>,
    stuffing_min_attempts: Option<usize>,
    stuffing_min_usernames: Option<usize>,
    stuffing_max_per_username: Option<usize>,
    max_tracked_attempts: Option<usize>,
    brute_force_failures: Option<usize>,
    max_usernames_per_source: Option<usize>,
    burst_failures: Option<usize>,
    burst_window_s: Option<u64>,
    mfa_denials: Option<usize>,
    mfa_window_s: Option<u64>,
    mfa_critical_after_denials: Option<usize>,
    travel_max_kmh: Option<f64>,
    travel_min_km: Option<f64>,
    signups_per_domain_per_hour: Option<usize>,
    max_known_per_subject: Option<usize>,
    #[serde(default)]
    weights: FileSignalWeights,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSignalWeights {
    credential_stuffing: Option<f64>,
    brute_force: Option<f64>,
    failure_burst: Option<f64>,
    mfa_push_bombing: Option<f64>,
    mfa_success_after_denials: Option<f64>,
    impossible_travel: Option<f64>,
    disposable_email: Option<f64>,
    signup_burst: Option<f64>,
    prompt_injection: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRisk {
    step_up_threshold: Option<f64>,
    deny_threshold: Option<f64>,
    failures_window_s: Option<u64>,
    failures_saturate: Option<usize>,
    threat_memory_s: Option<u64>,
    block_memory_s: Option<u64>,
    blocks_saturate: Option<usize>,
    strong_auth_max_age_s: Option<u64>,
    scope_sensitivity: Option<BTreeMap<String, f64>>,
    default_scope_sensitivity: Option<f64>,
    #[serde(default)]
    weights: FileRiskWeights,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileRiskWeights {
    recent_failures: Option<f64>,
    subject_threat: Option<f64>,
    source_threat: Option<f64>,
    source_blocks: Option<f64>,
    new_device: Option<f64>,
    new_network: Option<f64>,
    scope_sensitivity: Option<f64>,
    stale_strong_auth: Option<f64>,
}

/// `slot = value` when the file set it.
fn over<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

impl ThreatConfig {
    /// The file's `[threat]` over the defaults.
    pub(super) fn from_file(f: FileThreat) -> ThreatConfig {
        let mut c = ThreatConfig::default();
        over(&mut c.flag_threshold, f.flag_threshold);
        over(&mut c.block_threshold, f.block_threshold);
        over(&mut c.block_ttl_s, f.block_ttl_s);
        over(&mut c.max_text_bytes, f.max_text_bytes);
        over(&mut c.max_sources, f.max_sources);
        over(&mut c.max_subjects, f.max_subjects);
        over(&mut c.max_domains, f.max_domains);
        over(&mut c.stuffing_window_s, f.stuffing_window_s);
        over(&mut c.stuffing_min_attempts, f.stuffing_min_attempts);
        over(&mut c.stuffing_min_usernames, f.stuffing_min_usernames);
        over(
            &mut c.stuffing_max_per_username,
            f.stuffing_max_per_username,
        );
        over(&mut c.max_tracked_attempts, f.max_tracked_attempts);
        over(&mut c.brute_force_failures, f.brute_force_failures);
        over(&mut c.max_usernames_per_source, f.max_usernames_per_source);
        over(&mut c.burst_failures, f.burst_failures);
        over(&mut c.burst_window_s, f.burst_window_s);
        over(&mut c.mfa_denials, f.mfa_denials);
        over(&mut c.mfa_window_s, f.mfa_window_s);
        over(
            &mut c.mfa_critical_after_denials,
            f.mfa_critical_after_denials,
        );
        over(&mut c.travel_max_kmh, f.travel_max_kmh);
        over(&mut c.travel_min_km, f.travel_min_km);
        over(
            &mut c.signups_per_domain_per_hour,
            f.signups_per_domain_per_hour,
        );
        over(&mut c.max_known_per_subject, f.max_known_per_subject);
        let (w, fw) = (&mut c.weights, f.weights);
        over(&mut w.credential_stuffing, fw.credential_stuffing);
        over(&mut w.brute_force, fw.brute_force);
        over(&mut w.failure_burst, fw.failure_burst);
        over(&mut w.mfa_push_bombing, fw.mfa_push_bombing);
        over(
            &mut w.mfa_success_after_denials,
            fw.mfa_success_after_denials,
        );
        over(&mut w.impossible_travel, fw.impossible_travel);
        over(&mut w.disposable_email, fw.disposable_email);
        over(&mut w.signup_burst, fw.signup_burst);
        over(&mut w.prompt_injection, fw.prompt_injection);
        c
    }

    /// Ranges and relations between the keys.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_unit("threat.flag_threshold", self.flag_threshold, false)?;
        check_unit("threat.block_threshold", self.block_threshold, false)?;
        if self.flag_threshold > self.block_threshold {
            return Err(ConfigError::Invalid(format!(
                "threat.flag_threshold ({}) must not exceed threat.block_threshold ({})",
                self.flag_threshold, self.block_threshold
            )));
        }
        check_secs("threat.block_ttl_s", self.block_ttl_s)?;
        check_range("threat.max_text_bytes", self.max_text_bytes, 64, 1 << 20)?;
        check_range("threat.max_sources", self.max_sources, 16, MAX_TABLE_KEYS)?;
        check_range("threat.max_subjects", self.max_subjects, 16, MAX_TABLE_KEYS)?;
        check_range("threat.max_domains", self.max_domains, 16, MAX_TABLE_KEYS)?;
        check_secs("threat.stuffing_window_s", self.stuffing_window_s)?;
        check_count("threat.stuffing_min_usernames", self.stuffing_min_usernames)?;
        check_count(
            "threat.stuffing_max_per_username",
            self.stuffing_max_per_username,
        )?;
        check_range(
            "threat.stuffing_min_attempts",
            self.stuffing_min_attempts,
            self.stuffing_min_usernames,
            MAX_COUNT_THRESHOLD,
        )?;
        check_range(
            "threat.max_tracked_attempts",
            self.max_tracked_attempts,
            self.stuffing_min_attempts,
            MAX_TRACKED_ATTEMPTS,
        )?;
        check_count("threat.brute_force_failures", self.brute_force_failures)?;
        check_range(
            "threat.max_usernames_per_source",
            self.max_usernames_per_source,
            1,
            MAX_COUNT_THRESHOLD,
        )?;
        check_count("threat.burst_failures", self.burst_failures)?;
        check_secs("threat.burst_window_s", self.burst_window_s)?;
        check_count("threat.mfa_denials", self.mfa_denials)?;
        check_secs("threat.mfa_window_s", self.mfa_window_s)?;
        check_count(
            "threat.mfa_critical_after_denials",
            self.mfa_critical_after_denials,
        )?;
        check_positive("threat.travel_max_kmh", self.travel_max_kmh, 100_000.0)?;
        check_positive("threat.travel_min_km", self.travel_min_km, 20_100.0)?;
        check_count(
            "threat.signups_per_domain_per_hour",
            self.signups_per_domain_per_hour,
        )?;
        check_range(
            "threat.max_known_per_subject",
            self.max_known_per_subject,
            1,
            64,
        )?;
        let w = &self.weights;
        for (name, weight) in [
            ("credential_stuffing", w.credential_stuffing),
            ("brute_force", w.brute_force),
            ("failure_burst", w.failure_burst),
            ("mfa_push_bombing", w.mfa_push_bombing),
            ("mfa_success_after_denials", w.mfa_success_after_denials),
            ("impossible_travel", w.impossible_travel),
            ("disposable_email", w.disposable_email),
            ("signup_burst", w.signup_burst),
            ("prompt_injection", w.prompt_injection),
        ] {
            check_unit(&format!("threat.weights.{name}"), weight, true)?;
        }
        Ok(())
    }
}

impl RiskConfig {
    /// The file's `[risk]` over the defaults; a `scope_sensitivity` table replaces the default
    /// map as a whole.
    pub(super) fn from_file(f: FileRisk) -> RiskConfig {
        let mut c = RiskConfig::default();
        over(&mut c.step_up_threshold, f.step_up_threshold);
        over(&mut c.deny_threshold, f.deny_threshold);
        over(&mut c.failures_window_s, f.failures_window_s);
        over(&mut c.failures_saturate, f.failures_saturate);
        over(&mut c.threat_memory_s, f.threat_memory_s);
        over(&mut c.block_memory_s, f.block_memory_s);
        over(&mut c.blocks_saturate, f.blocks_saturate);
        over(&mut c.strong_auth_max_age_s, f.strong_auth_max_age_s);
        over(&mut c.scope_sensitivity, f.scope_sensitivity);
        over(
            &mut c.default_scope_sensitivity,
            f.default_scope_sensitivity,
        );
        let (w, fw) = (&mut c.weights, f.weights);
        over(&mut w.recent_failures, fw.recent_failures);
        over(&mut w.subject_threat, fw.subject_threat);
        over(&mut w.source_threat, fw.source_threat);
        over(&mut w.source_blocks, fw.source_blocks);
        over(&mut w.new_device, fw.new_device);
        over(&mut w.new_network, fw.new_network);
        over(&mut w.scope_sensitivity, fw.scope_sensitivity);
        over(&mut w.stale_strong_auth, fw.stale_strong_auth);
        c
    }

    /// Ranges and relations between the keys. The tables remember at most
    /// `crate::security::MAX_RECENT_FAILURES` failures and `MAX_BLOCKS_REMEMBERED` blocks, so
    /// the saturation counts are capped there.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_unit("risk.step_up_threshold", self.step_up_threshold, false)?;
        check_unit("risk.deny_threshold", self.deny_threshold, false)?;
        if self.step_up_threshold > self.deny_threshold {
            return Err(ConfigError::Invalid(format!(
                "risk.step_up_threshold ({}) must not exceed risk.deny_threshold ({})",
                self.step_up_threshold, self.deny_threshold
            )));
        }
        check_secs("risk.failures_window_s", self.failures_window_s)?;
        check_range("risk.failures_saturate", self.failures_saturate, 1, 32)?;
        check_secs("risk.threat_memory_s", self.threat_memory_s)?;
        check_secs("risk.block_memory_s", self.block_memory_s)?;
        check_range("risk.blocks_saturate", self.blocks_saturate, 1, 8)?;
        check_secs("risk.strong_auth_max_age_s", self.strong_auth_max_age_s)?;
        if self.scope_sensitivity.len() > MAX_SCOPE_SENSITIVITIES {
            return Err(ConfigError::Invalid(format!(
                "risk.scope_sensitivity may list at most {MAX_SCOPE_SENSITIVITIES} scopes"
            )));
        }
        for (scope, sensitivity) in &self.scope_sensitivity {
            if scope.is_empty() || scope.len() > 128 {
                return Err(ConfigError::Invalid(format!(
                    "risk.scope_sensitivity: scope names are 1 to 128 bytes, got {scope:?}"
                )));
            }
            check_unit(
                &format!("risk.scope_sensitivity.{scope}"),
                *sensitivity,
                true,
            )?;
        }
        check_unit(
            "risk.default_scope_sensitivity",
            self.default_scope_sensitivity,
            true,
        )?;
        let w = &self.weights;
        for (name, weight) in [
            ("recent_failures", w.recent_failures),
            ("subject_threat", w.subject_threat),
            ("source_threat", w.source_threat),
            ("source_blocks", w.source_blocks),
            ("new_device", w.new_device),
            ("new_network", w.new_network),
            ("scope_sensitivity", w.scope_sensitivity),
            ("stale_strong_auth", w.stale_strong_auth),
        ] {
            check_unit(&format!("risk.weights.{name}"), weight, true)?;
        }
        Ok(())
    }
}

/// A value in [0, 1] (`zero_ok`) or (0, 1].
fn check_unit(name: &str, value: f64, zero_ok: bool) -> Result<(), ConfigError> {
    let low_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    if low_ok && value <= 1.0 {
        Ok(())
    } else {
        let low = if zero_ok { "[0" } else { "(0" };
        Err(ConfigError::Invalid(format!(
            "{name} must be in {low}, 1], got {value}"
        )))
    }
}

/// A finite value in (0, max].
fn check_positive(name: &str, value: f64, max: f64) -> Result<(), ConfigError> {
    if value > 0.0 && value <= max {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{name} must be above 0 and at most {max}, got {value}"
        )))
    }
}

fn check_secs(name: &str, value: u64) -> Result<(), ConfigError> {
    check_range(name, value as usize, 1, MAX_WINDOW_S as usize)
}

fn check_count(name: &str, value: usize) -> Result<(), ConfigError> {
    check_range(name, value, 1, MAX_COUNT_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::{RiskConfig, ThreatConfig};

    fn refused(text: &str) -> String {
        Config::from_toml(text, Path::new("."))
            .and_then(|c| c.validate().map(|()| c))
            .err()
            .unwrap_or_else(|| panic!("{text:?} was accepted"))
            .to_string()
    }

    #[test]
    fn defaults_are_the_issue_values_and_validate() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.threat, ThreatConfig::default());
        assert_eq!(c.risk, RiskConfig::default());
        let t = &c.threat;
        assert_eq!(
            (
                t.stuffing_min_attempts,
                t.stuffing_min_usernames,
                t.stuffing_window_s
            ),
            (25, 15, 900)
        );
        assert_eq!((t.brute_force_failures, t.burst_failures), (10, 8));
        assert_eq!(
            (t.burst_window_s, t.mfa_denials, t.mfa_window_s),
            (120, 5, 600)
        );
        assert!(t.weights.mfa_success_after_denials >= t.block_threshold);
        assert!(t.weights.credential_stuffing >= t.block_threshold);
        assert_eq!(c.risk.scope_sensitivity.get("admin"), Some(&1.0));
    }

    #[test]
    fn the_readme_block_parses_to_exactly_the_defaults() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("[threat]\nflag_threshold")
            .expect("README has [threat]");
        let len = readme[start..].find("```").expect("the block ends");
        let c = Config::from_toml(&readme[start..start + len], Path::new(".")).unwrap();
        assert_eq!(c.threat, ThreatConfig::default());
        assert_eq!(c.risk, RiskConfig::default());
    }

    #[test]
    fn keys_override_the_defaults() {
        let text = r#"
[threat]
block_threshold = 0.8
stuffing_min_attempts = 30
max_tracked_attempts = 40
weights.prompt_injection = 0.9

[risk]
deny_threshold = 0.9
scope_sensitivity = { "billing" = 0.7 }
weights.new_device = 0.3
"#;
        let c = Config::from_toml(text, Path::new(".")).unwrap();
        c.validate().unwrap();
        assert!((c.threat.block_threshold - 0.8).abs() < f64::EPSILON);
        assert_eq!(c.threat.stuffing_min_attempts, 30);
        assert!((c.threat.weights.prompt_injection - 0.9).abs() < f64::EPSILON);
        assert!((c.threat.weights.brute_force - 0.7).abs() < f64::EPSILON);
        assert!((c.risk.deny_threshold - 0.9).abs() < f64::EPSILON);
        assert_eq!(
            c.risk.scope_sensitivity.len(),
            1,
            "a map replaces the default"
        );
        assert!((c.risk.weights.new_device - 0.3).abs() < f64::EPSILON);
    }

    #[test]
    fn out_of_range_and_unknown_keys_are_refused_by_name() {
        for (text, key) in [
            (
                "[threat]\nblock_threshold = 1.5\n",
                "threat.block_threshold",
            ),
            ("[threat]\nflag_threshold = 0\n", "threat.flag_threshold"),
            (
                "[threat]\nflag_threshold = 0.95\n",
                "threat.flag_threshold (0.95) must not exceed",
            ),
            ("[threat]\nmax_sources = 1\n", "threat.max_sources"),
            ("[threat]\nmax_text_bytes = 0\n", "threat.max_text_bytes"),
            (
                "[threat]\nmax_tracked_attempts = 10\n",
                "threat.max_tracked_attempts",
            ),
            (
                "[threat]\nstuffing_min_attempts = 10\n",
                "threat.stuffing_min_attempts",
            ),
            ("[threat]\nburst_window_s = 0\n", "threat.burst_window_s"),
            ("[threat]\ntravel_max_kmh = -1.0\n", "threat.travel_max_kmh"),
            (
                "[threat]\nweights.brute_force = 2.0\n",
                "threat.weights.brute_force",
            ),
            ("[risk]\ndeny_threshold = 0.3\n", "risk.step_up_threshold"),
            (
                "[risk]\nfailures_saturate = 100\n",
                "risk.failures_saturate",
            ),
            (
                "[risk]\nscope_sensitivity = { admin = 3.0 }\n",
                "risk.scope_sensitivity.admin",
            ),
            (
                "[risk]\nweights.new_network = -0.1\n",
                "risk.weights.new_network",
            ),
        ] {
            let err = refused(text);
            assert!(err.contains(key), "{text:?}: {err}");
        }
        for (text, key) in [
            ("[threat]\nblock_ttl = 5\n", "block_ttl"),
            ("[threat.weights]\nstuffing = 0.5\n", "stuffing"),
            ("[risk]\nstep_up = 0.5\n", "step_up"),
            ("[risk.weights]\nfailures = 0.5\n", "failures"),
        ] {
            let err = Config::from_toml(text, Path::new(".")).unwrap_err();
            assert!(err.to_string().contains(key), "{text:?}: {err}");
        }
    }
}
