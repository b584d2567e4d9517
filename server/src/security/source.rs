//! The per-source table, owned by the shard that owns a source address: credential stuffing
//! (Elastic's Okta rule), brute force per username (Auth0's consecutive failures), failure
//! bursts (Wazuh's sshd rule), and the source's recent threat score and blocks for risk.

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::lru::{Lru, Ring};
use super::score::combine_score;
use super::{excerpt, ms, RecentScore, Signal, SignalKind, MAX_BLOCKS_REMEMBERED, SCORE_MEMORY_MS};
use crate::config::{RiskConfig, ThreatConfig};

/// Two blocks of one source closer than this are one block (the table records its own, and
/// the wiring may report the same one).
const BLOCK_DEDUP_MS: u64 = 1000;

/// What a source did, for its owner shard.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceObs {
    /// A login attempt for `username`.
    Login {
        /// The username tried.
        username: String,
        /// Its outcome.
        success: bool,
    },
    /// Nothing to count; only `prior_score` is remembered.
    Note,
}

/// The part of an event keyed by its source address.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePart {
    /// The key.
    pub source: IpAddr,
    /// What happened.
    pub obs: SourceObs,
    /// Score of the event's signals known when the part was sent (the stateless ones).
    pub prior_score: f64,
}

/// What the source's owner knows for a risk assessment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SourceFacts {
    /// Failed logins from the source within `risk.failures_window_s` (at most the ring).
    pub failures: usize,
    /// Its highest recent threat score within `risk.threat_memory_s`.
    pub threat_score: f64,
    /// Its blocks within `risk.block_memory_s`.
    pub blocks: usize,
}

#[derive(Debug, Clone, Copy)]
struct UserRun {
    user: u64,
    failures: u32,
    last_ms: u64,
}

struct SourceState {
    /// (time, username hash) of the most recent failed logins.
    failures: Ring<(u64, u64)>,
    /// Consecutive failures per username, at most `max_usernames_per_source`.
    users: Vec<UserRun>,
    blocks: Ring<u64>,
    score: RecentScore,
}

impl SourceState {
    fn heap_bytes(&self) -> usize {
        self.failures.heap_bytes()
            + self.users.capacity() * std::mem::size_of::<UserRun>()
            + self.blocks.heap_bytes()
    }
}

/// Per-source state for one shard's sources, at most `threat.max_sources`.
pub struct SourceTable {
    cfg: ThreatConfig,
    seed: u64,
    sources: Lru<IpAddr, SourceState>,
}

impl SourceTable {
    /// An empty table; `seed` keys the username hashes.
    pub fn new(cfg: &ThreatConfig, seed: u64) -> SourceTable {
        SourceTable {
            cfg: cfg.clone(),
            seed,
            sources: Lru::new(cfg.max_sources),
        }
    }

    fn ring_cap(cfg: &ThreatConfig) -> usize {
        cfg.max_tracked_attempts.max(cfg.burst_failures)
    }

    /// Counts the part and returns the signals that fired for its source.
    pub fn observe(&mut self, part: &SourcePart, now_ms: u64) -> Vec<Signal> {
        let cfg = &self.cfg;
        let (ring_cap, users_cap) = (Self::ring_cap(cfg), cfg.max_usernames_per_source);
        let state = self.sources.touch(
            &part.source,
            || part.source,
            || SourceState {
                failures: Ring::new(ring_cap),
                users: Vec::new(),
                blocks: Ring::new(MAX_BLOCKS_REMEMBERED),
                score: RecentScore::default(),
            },
        );
        let mut signals = Vec::new();
        if let SourceObs::Login { username, success } = &part.obs {
            let user = xxh3_64_with_seed(username.as_bytes(), self.seed);
            if *success {
                state.users.retain(|r| r.user != user);
            } else {
                state.failures.push((now_ms, user));
                let run = user_run(&mut state.users, users_cap, user, now_ms);
                if run >= cfg.brute_force_failures {
                    signals.push(Signal::new(
                        SignalKind::BruteForce,
                        format!(
                            "{run} consecutive failed logins for {:?} from {} (threshold {})",
                            excerpt(username),
                            part.source,
                            cfg.brute_force_failures
                        ),
                        &cfg.weights,
                    ));
                }
                signals.extend(burst(cfg, &state.failures, part.source, now_ms));
                signals.extend(stuffing(cfg, &state.failures, part.source, now_ms));
            }
        }
        let score = combine_score(part.prior_score, &signals);
        state.score.note(score, now_ms, SCORE_MEMORY_MS);
        if score >= cfg.block_threshold {
            note_block(&mut state.blocks, now_ms);
        }
        signals
    }

    /// Records that the source was put on the blocklist (by the wiring, for any reason).
    pub fn note_block(&mut self, source: IpAddr, now_ms: u64) {
        let state = self.sources.touch(
            &source,
            || source,
            || SourceState {
                failures: Ring::new(Self::ring_cap(&self.cfg)),
                users: Vec::new(),
                blocks: Ring::new(MAX_BLOCKS_REMEMBERED),
                score: RecentScore::default(),
            },
        );
        note_block(&mut state.blocks, now_ms);
    }

    /// What this table knows about `source` for a risk assessment.
    pub fn risk_facts(&self, source: IpAddr, risk: &RiskConfig, now_ms: u64) -> SourceFacts {
        let Some(state) = self.sources.get(&source) else {
            return SourceFacts::default();
        };
        let within = |at: u64, window_s: u64| now_ms.saturating_sub(at) <= ms(window_s);
        SourceFacts {
            failures: state
                .failures
                .iter()
                .filter(|(at, _)| within(*at, risk.failures_window_s))
                .count(),
            threat_score: state.score.within(ms(risk.threat_memory_s), now_ms),
            blocks: state
                .blocks
                .iter()
                .filter(|at| within(**at, risk.block_memory_s))
                .count(),
        }
    }

    /// Sources held.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is held.
    pub fn is_empty(&self) -> bool {
        self.sources.len() == 0
    }

    /// Sources evicted to make room so far.
    pub fn n_evictions(&self) -> u64 {
        self.sources.n_evictions()
    }

    /// Heap bytes held now.
    pub fn heap_bytes(&self) -> usize {
        self.sources.own_heap_bytes()
            + self
                .sources
                .values()
                .map(SourceState::heap_bytes)
                .sum::<usize>()
    }

    /// The most heap one source can cost under `cfg`.
    pub fn worst_case_key_bytes(cfg: &ThreatConfig) -> usize {
        Lru::<IpAddr, SourceState>::per_key_bytes()
            + Ring::<(u64, u64)>::worst_case_bytes(Self::ring_cap(cfg))
            + cfg.max_usernames_per_source * std::mem::size_of::<UserRun>()
            + Ring::<u64>::worst_case_bytes(MAX_BLOCKS_REMEMBERED)
    }
}

/// Adds a failure to `user`'s run (making room by dropping the least recent username) and
/// returns the run's length.
fn user_run(users: &mut Vec<UserRun>, cap: usize, user: u64, now_ms: u64) -> usize {
    if let Some(run) = users.iter_mut().find(|r| r.user == user) {
        run.failures = run.failures.saturating_add(1);
        run.last_ms = now_ms;
        return run.failures as usize;
    }
    if users.len() == cap {
        let oldest = users
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.last_ms)
            .map_or(0, |(idx, _)| idx);
        users.swap_remove(oldest);
    }
    if users.capacity() == 0 {
        users.reserve_exact(cap);
    }
    users.push(UserRun {
        user,
        failures: 1,
        last_ms: now_ms,
    });
    debug_assert!(users.len() <= cap);
    1
}

fn note_block(blocks: &mut Ring<u64>, now_ms: u64) {
    let recent = blocks
        .iter()
        .next_back()
        .is_some_and(|at| now_ms.saturating_sub(*at) < BLOCK_DEDUP_MS);
    if !recent {
        blocks.push(now_ms);
    }
}

/// `failure_burst`: the `burst_failures`-th most recent failure is within `burst_window_s`.
fn burst(
    cfg: &ThreatConfig,
    failures: &Ring<(u64, u64)>,
    source: IpAddr,
    now_ms: u64,
) -> Option<Signal> {
    let (oldest, _) = failures.iter().rev().nth(cfg.burst_failures - 1)?;
    let span_ms = now_ms.saturating_sub(*oldest);
    (span_ms <= ms(cfg.burst_window_s)).then(|| {
        Signal::new(
            SignalKind::FailureBurst,
            format!(
                "{} failed logins from {source} within {:.1} s (threshold {} in {} s)",
                cfg.burst_failures,
                span_ms as f64 / 1000.0,
                cfg.burst_failures,
                cfg.burst_window_s
            ),
            &cfg.weights,
        )
    })
}

/// `credential_stuffing`: within `stuffing_window_s`, at least `stuffing_min_attempts`
/// failures for at least `stuffing_min_usernames` distinct usernames, and at most
/// `stuffing_max_per_username` failures per username on average (many users tried once or
/// twice, not one user tried many times). Counted over the most recent `max_tracked_attempts`
/// failures in the window.
fn stuffing(
    cfg: &ThreatConfig,
    failures: &Ring<(u64, u64)>,
    source: IpAddr,
    now_ms: u64,
) -> Option<Signal> {
    let window_ms = ms(cfg.stuffing_window_s);
    let n_attempts = failures
        .iter()
        .rev()
        .take_while(|(at, _)| now_ms.saturating_sub(*at) <= window_ms)
        .count();
    if n_attempts < cfg.stuffing_min_attempts {
        return None;
    }
    let mut users: Vec<u64> = failures
        .iter()
        .rev()
        .take(n_attempts)
        .map(|(_, user)| *user)
        .collect();
    users.sort_unstable();
    users.dedup();
    let n_users = users.len();
    let fires = n_users >= cfg.stuffing_min_usernames
        && n_attempts <= cfg.stuffing_max_per_username * n_users;
    fires.then(|| {
        Signal::new(
            SignalKind::CredentialStuffing,
            format!(
                "{n_attempts} failed logins for {n_users} distinct usernames from {source} \
                 within {} s (thresholds: {} attempts, {} usernames, at most {} per username)",
                cfg.stuffing_window_s,
                cfg.stuffing_min_attempts,
                cfg.stuffing_min_usernames,
                cfg.stuffing_max_per_username
            ),
            &cfg.weights,
        )
    })
}
