//! The per-subject table, owned by the shard that owns a subject: MFA push bombing and the
//! critical approval after denials (Elastic), impossible travel between consecutive successful
//! logins, and what risk needs: recent failures, known devices and networks, the last strong
//! authentication and the recent threat score.
//!
//! A strong authentication is an approved MFA push, or a successful login the caller marks
//! `mfa: true`. Devices and networks become known by a successful login from them.

use std::net::IpAddr;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::body::GeoPoint;
use super::lru::{Lru, Ring};
use super::score::combine_score;
use super::{
    ms, RecentScore, Signal, SignalKind, MAX_NAME_BYTES, MAX_RECENT_FAILURES, SCORE_MEMORY_MS,
};
use crate::config::{RiskConfig, ThreatConfig};

/// Mean Earth radius (IUGG), km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A subject's network: the /24 of an IPv4 address, the /48 of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// The first three octets.
    V4([u8; 3]),
    /// The first six bytes.
    V6([u8; 6]),
}

impl Network {
    /// The network `ip` is in (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> Network {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Network::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Network::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
            }
        }
    }

    fn bytes(self) -> [u8; 7] {
        match self {
            Network::V4([a, b, c]) => [4, a, b, c, 0, 0, 0],
            Network::V6([a, b, c, d, e, f]) => [6, a, b, c, d, e, f],
        }
    }
}

/// What a subject did, for its owner shard.
#[derive(Debug, Clone, PartialEq)]
pub enum SubjectObs {
    /// A login attempt.
    Login {
        /// Its outcome.
        success: bool,
        /// Caller-supplied location.
        point: Option<GeoPoint>,
        /// Caller-supplied device.
        device: Option<String>,
        /// The network it came from.
        network: Network,
        /// The login included a second factor.
        mfa: bool,
    },
    /// An MFA push and its answer.
    MfaPush {
        /// Approved (`true`) or denied.
        approved: bool,
    },
    /// Nothing to count; only `prior_score` is remembered.
    Note,
}

/// The part of an event keyed by its subject.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectPart {
    /// The key.
    pub subject: String,
    /// What happened.
    pub obs: SubjectObs,
    /// Score of the event's signals known when the part was sent.
    pub prior_score: f64,
}

/// A risk question for the subject's owner.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectQuery {
    /// The key.
    pub subject: String,
    /// The device of the request, if given.
    pub device: Option<String>,
    /// The network of the request's source.
    pub network: Network,
}

/// What the subject's owner knows for a risk assessment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SubjectFacts {
    /// Failed logins for the subject within `risk.failures_window_s`.
    pub failures: usize,
    /// Its highest recent threat score within `risk.threat_memory_s`.
    pub threat_score: f64,
    /// The request's device was never used for a successful login (`None`: no device given).
    pub new_device: Option<bool>,
    /// The request's network was never used for a successful login.
    pub new_network: bool,
    /// When the subject last authenticated strongly, if remembered.
    pub last_strong_auth_ms: Option<u64>,
}

struct SubjectState {
    /// Denied pushes since the last approval, within the MFA window.
    denials: Ring<u64>,
    failures: Ring<u64>,
    last_login: Option<(GeoPoint, u64)>,
    /// (hash, last seen) of devices and networks, at most `max_known_per_subject` each.
    devices: Vec<(u64, u64)>,
    networks: Vec<(u64, u64)>,
    last_strong_ms: Option<u64>,
    score: RecentScore,
}

impl SubjectState {
    fn heap_bytes(&self) -> usize {
        self.denials.heap_bytes()
            + self.failures.heap_bytes()
            + (self.devices.capacity() + self.networks.capacity()) * 16
    }
}

/// Per-subject state for one shard's subjects, at most `threat.max_subjects`.
pub struct SubjectTable {
    cfg: ThreatConfig,
    seed: u64,
    subjects: Lru<Arc<str>, SubjectState>,
}

impl SubjectTable {
    /// An empty table; `seed` keys the device and network hashes.
    pub fn new(cfg: &ThreatConfig, seed: u64) -> SubjectTable {
        SubjectTable {
            cfg: cfg.clone(),
            seed,
            subjects: Lru::new(cfg.max_subjects),
        }
    }

    fn denial_cap(cfg: &ThreatConfig) -> usize {
        cfg.mfa_denials.max(cfg.mfa_critical_after_denials)
    }

    /// Counts the part and returns the signals that fired for its subject.
    pub fn observe(&mut self, part: &SubjectPart, now_ms: u64) -> Vec<Signal> {
        let cfg = &self.cfg;
        let seed = self.seed;
        let denial_cap = Self::denial_cap(cfg);
        let state = self.subjects.touch(
            part.subject.as_str(),
            || Arc::from(part.subject.as_str()),
            || SubjectState {
                denials: Ring::new(denial_cap),
                failures: Ring::new(MAX_RECENT_FAILURES),
                last_login: None,
                devices: Vec::new(),
                networks: Vec::new(),
                last_strong_ms: None,
                score: RecentScore::default(),
            },
        );
        let mut signals = Vec::new();
        match &part.obs {
            SubjectObs::MfaPush { approved } => {
                let window_ms = ms(cfg.mfa_window_s);
                state
                    .denials
                    .drop_while(|at| now_ms.saturating_sub(*at) > window_ms);
                if *approved {
                    let n = state.denials.len();
                    if n >= cfg.mfa_critical_after_denials {
                        signals.push(Signal::new(
                            SignalKind::MfaSuccessAfterDenials,
                            format!(
                                "push approved for {:?} right after {n} denied pushes within \
                                 {} s (threshold {})",
                                super::excerpt(&part.subject),
                                cfg.mfa_window_s,
                                cfg.mfa_critical_after_denials
                            ),
                            &cfg.weights,
                        ));
                    }
                    state.denials.clear();
                    state.last_strong_ms = Some(now_ms);
                } else {
                    state.denials.push(now_ms);
                    let n = state.denials.len();
                    if n >= cfg.mfa_denials {
                        signals.push(Signal::new(
                            SignalKind::MfaPushBombing,
                            format!(
                                "{n} denied pushes for {:?} within {} s (threshold {})",
                                super::excerpt(&part.subject),
                                cfg.mfa_window_s,
                                cfg.mfa_denials
                            ),
                            &cfg.weights,
                        ));
                    }
                }
            }
            SubjectObs::Login { success: false, .. } => state.failures.push(now_ms),
            SubjectObs::Login {
                success: true,
                point,
                device,
                network,
                mfa,
            } => {
                if let Some(point) = point {
                    if let Some((from, at)) = state.last_login {
                        signals.extend(travel(cfg, &part.subject, from, at, *point, now_ms));
                    }
                    state.last_login = Some((*point, now_ms));
                }
                let cap = cfg.max_known_per_subject;
                if let Some(device) = device {
                    remember(&mut state.devices, cap, hash_device(seed, device), now_ms);
                }
                remember(
                    &mut state.networks,
                    cap,
                    xxh3_64_with_seed(&network.bytes(), seed),
                    now_ms,
                );
                if *mfa {
                    state.last_strong_ms = Some(now_ms);
                }
            }
            SubjectObs::Note => {}
        }
        let score = combine_score(part.prior_score, &signals);
        state.score.note(score, now_ms, SCORE_MEMORY_MS);
        signals
    }

    /// What this table knows about the query's subject for a risk assessment.
    pub fn risk_facts(&self, q: &SubjectQuery, risk: &RiskConfig, now_ms: u64) -> SubjectFacts {
        let Some(state) = self.subjects.get(q.subject.as_str()) else {
            return SubjectFacts {
                new_device: q.device.as_ref().map(|_| true),
                new_network: true,
                ..SubjectFacts::default()
            };
        };
        let known = |set: &[(u64, u64)], hash: u64| set.iter().any(|(h, _)| *h == hash);
        let failures_ms = ms(risk.failures_window_s);
        SubjectFacts {
            failures: state
                .failures
                .iter()
                .filter(|at| now_ms.saturating_sub(**at) <= failures_ms)
                .count(),
            threat_score: state.score.within(ms(risk.threat_memory_s), now_ms),
            new_device: q
                .device
                .as_ref()
                .map(|d| !known(&state.devices, hash_device(self.seed, d))),
            new_network: !known(
                &state.networks,
                xxh3_64_with_seed(&q.network.bytes(), self.seed),
            ),
            last_strong_auth_ms: state.last_strong_ms,
        }
    }

    /// Subjects held.
    pub fn len(&self) -> usize {
        self.subjects.len()
    }

    /// Whether no subject is held.
    pub fn is_empty(&self) -> bool {
        self.subjects.len() == 0
    }

    /// Subjects evicted to make room so far.
    pub fn n_evictions(&self) -> u64 {
        self.subjects.n_evictions()
    }

    /// Heap bytes held now (keys counted at their length).
    pub fn heap_bytes(&self) -> usize {
        self.subjects.own_heap_bytes()
            + self
                .subjects
                .entries()
                .map(|(k, s)| 16 + k.len() + s.heap_bytes())
                .sum::<usize>()
    }

    /// The most heap one subject can cost under `cfg` (its key at the longest).
    pub fn worst_case_key_bytes(cfg: &ThreatConfig) -> usize {
        Lru::<Arc<str>, SubjectState>::per_key_bytes()
            + 16
            + MAX_NAME_BYTES
            + Ring::<u64>::worst_case_bytes(Self::denial_cap(cfg))
            + Ring::<u64>::worst_case_bytes(MAX_RECENT_FAILURES)
            + 2 * cfg.max_known_per_subject * 16
    }
}

fn hash_device(seed: u64, device: &str) -> u64 {
    xxh3_64_with_seed(device.as_bytes(), seed ^ 0x6465_7669_6365)
}

/// Marks `hash` seen at `now_ms`, making room by dropping the least recently seen.
fn remember(set: &mut Vec<(u64, u64)>, cap: usize, hash: u64, now_ms: u64) {
    if let Some(entry) = set.iter_mut().find(|(h, _)| *h == hash) {
        entry.1 = now_ms;
        return;
    }
    if set.len() == cap {
        let oldest = set
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, at))| *at)
            .map_or(0, |(idx, _)| idx);
        set.swap_remove(oldest);
    }
    if set.capacity() == 0 {
        set.reserve_exact(cap);
    }
    set.push((hash, now_ms));
    debug_assert!(set.len() <= cap);
}

/// Great-circle distance in km (haversine).
pub(crate) fn haversine_km(a: GeoPoint, b: GeoPoint) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let d_lat = lat2 - lat1;
    let d_lon = (b.lon - a.lon).to_radians();
    let h = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// `impossible_travel`: the hop from the previous successful login is at least
/// `travel_min_km` long and faster than `travel_max_kmh` (two logins in the same millisecond
/// are infinitely fast).
fn travel(
    cfg: &ThreatConfig,
    subject: &str,
    from: GeoPoint,
    from_ms: u64,
    to: GeoPoint,
    now_ms: u64,
) -> Option<Signal> {
    let km = haversine_km(from, to);
    if km < cfg.travel_min_km {
        return None;
    }
    let hours = now_ms.saturating_sub(from_ms) as f64 / 3_600_000.0;
    let kmh = if hours > 0.0 {
        km / hours
    } else {
        f64::INFINITY
    };
    (kmh > cfg.travel_max_kmh).then(|| {
        Signal::new(
            SignalKind::ImpossibleTravel,
            format!(
                "successful logins for {:?} at ({:.4}, {:.4}) and ({:.4}, {:.4}): {km:.0} km \
                 in {:.0} s, {kmh:.0} km/h (limit {} km/h)",
                super::excerpt(subject),
                from.lat,
                from.lon,
                to.lat,
                to.lon,
                hours * 3600.0,
                cfg.travel_max_kmh
            ),
            &cfg.weights,
        )
    })
}
