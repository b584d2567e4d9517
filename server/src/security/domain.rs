//! The per-domain table, owned by the shard that owns an e-mail domain: signups per domain per
//! hour (`signup_burst`). The domain is the address's whole domain, lowercase: without a public
//! suffix list, cutting it to a "registrable" part would lump every `co.uk` signup together.

use std::sync::Arc;

use super::lru::{Lru, Ring};
use super::{Signal, SignalKind};
use crate::config::ThreatConfig;

/// Longest domain, in bytes (RFC 1035).
const MAX_DOMAIN_BYTES: usize = 253;
/// The signup window.
const HOUR_MS: u64 = 3_600_000;

/// A signup, for the owner of its e-mail domain.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainPart {
    /// The key: the address's domain, lowercase.
    pub domain: String,
}

struct DomainState {
    signups: Ring<u64>,
}

/// Per-domain state for one shard's domains, at most `threat.max_domains`.
pub struct DomainTable {
    cfg: ThreatConfig,
    domains: Lru<Arc<str>, DomainState>,
}

impl DomainTable {
    /// An empty table.
    pub fn new(cfg: &ThreatConfig) -> DomainTable {
        DomainTable {
            cfg: cfg.clone(),
            domains: Lru::new(cfg.max_domains),
        }
    }

    /// Counts the signup and returns the signals that fired for its domain.
    pub fn observe(&mut self, part: &DomainPart, now_ms: u64) -> Vec<Signal> {
        let cfg = &self.cfg;
        let threshold = cfg.signups_per_domain_per_hour;
        let state = self.domains.touch(
            part.domain.as_str(),
            || Arc::from(part.domain.as_str()),
            || DomainState {
                signups: Ring::new(threshold),
            },
        );
        state.signups.push(now_ms);
        state
            .signups
            .drop_while(|at| now_ms.saturating_sub(*at) > HOUR_MS);
        let mut signals = Vec::new();
        if state.signups.len() >= threshold {
            signals.push(Signal::new(
                SignalKind::SignupBurst,
                format!(
                    "{} signups with e-mail domain {:?} within an hour (threshold {threshold})",
                    state.signups.len(),
                    super::excerpt(&part.domain)
                ),
                &cfg.weights,
            ));
        }
        signals
    }

    /// Domains held.
    pub fn len(&self) -> usize {
        self.domains.len()
    }

    /// Whether no domain is held.
    pub fn is_empty(&self) -> bool {
        self.domains.len() == 0
    }

    /// Domains evicted to make room so far.
    pub fn n_evictions(&self) -> u64 {
        self.domains.n_evictions()
    }

    /// Heap bytes held now.
    pub fn heap_bytes(&self) -> usize {
        self.domains.own_heap_bytes()
            + self
                .domains
                .entries()
                .map(|(k, s)| 16 + k.len() + s.signups.heap_bytes())
                .sum::<usize>()
    }

    /// The most heap one domain can cost under `cfg` (its key at the longest).
    pub fn worst_case_key_bytes(cfg: &ThreatConfig) -> usize {
        Lru::<Arc<str>, DomainState>::per_key_bytes()
            + 16
            + MAX_DOMAIN_BYTES
            + Ring::<u64>::worst_case_bytes(cfg.signups_per_domain_per_hour)
    }
}
