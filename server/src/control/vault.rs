//! The token vault on the control plane: the master key, every sealed entry in memory, and the
//! group commit of vault writes through the store.
//!
//! Shards authenticate the caller and validate names, values and expiries; everything that
//! touches a sealed value happens here, on the one thread that holds the master key. A put is
//! sealed under the caller's namespace key (HKDF from the master key) with a fresh nonce and
//! the namespace, name and version as associated data, written as `Op::PutVault` and answered
//! only once the commit is durable. A get opens the entry and answers with the plaintext.
//!
//! Architecture Invariant: a request sees only its own namespace. The map is keyed by
//! (namespace, name) and every lookup builds that key from the caller's verified namespace,
//! so another caller's entry and a missing one are the same `NotFound`.
//! Architecture Invariant: the plaintext is never logged; it lives in `Zeroizing` buffers,
//! whose `Debug` is redacted, from the shard's parse to the rendered response.
//! Architecture Invariant: the map mirrors the store, expired entries included until the store
//! purged them, so the next version is always above the stored one (the store refuses a put
//! that is not: `Outcome::Stale`).

use std::collections::BTreeMap;

use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::plane::{ControlReply, ReplyTo, VaultOp, VaultReply};
use crate::store::{Op, Outcome, Purged, Store, VaultEntry, VaultKey};
use crate::vault::{self, MasterKey, Namespace, VaultError};

/// Most live entries in one namespace (one caller).
pub const MAX_ENTRIES_PER_NAMESPACE: usize = 1024;

/// Most sealed bytes the vault holds in memory (and on disk), all namespaces together: 32,768
/// entries of the largest size. Beyond it a put is answered `503` until entries are deleted or
/// expire.
pub const MAX_SEALED_BYTES_HELD: usize = 512 << 20;

const _: () = assert!(MAX_SEALED_BYTES_HELD >= vault::MAX_VALUE_BYTES + vault::ENVELOPE_OVERHEAD);

/// One vault request as the control plane queues it.
pub type VaultRequest = (ReplyTo, Namespace, VaultOp);

/// The vault's state, owned by the control plane thread.
pub struct Vault {
    master_key: MasterKey,
    /// Every stored entry by (namespace, name), expired ones until the store purged them.
    entries: BTreeMap<VaultKey, VaultEntry>,
    /// Sealed bytes in `entries`.
    sealed_bytes: usize,
    /// The earliest expiry in `entries` (`u64::MAX` when none expires).
    next_expiry_s: u64,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("n_entries", &self.entries.len())
            .field("sealed_bytes", &self.sealed_bytes)
            .finish_non_exhaustive()
    }
}

/// What one request in a batch will be answered, once the batch's commit is known.
enum Pending {
    /// Answered as is (reads, refusals).
    Ready(VaultReply),
    /// A write: `op_idx` in the batch's ops, and its answer if the op took effect.
    Write { op_idx: usize, reply: VaultReply },
}

/// Writes of one batch not yet committed: later requests of the batch see them.
#[derive(Default)]
struct Staged {
    /// `None`: deleted.
    entries: BTreeMap<VaultKey, Option<VaultEntry>>,
    ops: Vec<Op>,
    sealed_bytes: usize,
}

impl Vault {
    /// The vault over `entries` (the store snapshot's `State.vault`).
    pub fn new(master_key: MasterKey, entries: BTreeMap<VaultKey, VaultEntry>) -> Vault {
        let sealed_bytes = entries.values().map(|e| e.sealed.len()).sum();
        let next_expiry_s = earliest_expiry(&entries);
        Vault {
            master_key,
            entries,
            sealed_bytes,
            next_expiry_s,
        }
    }

    /// Whether the master key opens the first stored entry (true when there is none): a wrong
    /// or damaged key file opens none of them, so the server refuses to start on it rather
    /// than answer every read with a server error. A single damaged entry is caught by the
    /// store's page checksums before this runs.
    pub fn master_key_opens_entries(&self) -> bool {
        let Some((key, entry)) = self.entries.iter().next() else {
            return true;
        };
        let Some((iss, sub)) = key.namespace.split_once('\0') else {
            return false;
        };
        Namespace::new(iss, sub)
            .and_then(|ns| {
                let ns_key = self.master_key.namespace_key(&ns)?;
                vault::open(&ns_key, &ns, &key.name, entry.version, &entry.sealed)
            })
            .is_ok()
    }

    /// Entries held, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Answers a batch of requests in arrival order (each sees the writes before it), with
    /// ONE durable commit for all their writes. When the commit fails, every request of the
    /// batch is answered `StoreFailed`, reads included, since they may have seen its writes.
    pub fn handle_batch(
        &mut self,
        store: &mut dyn Store,
        requests: Vec<VaultRequest>,
        now_s: u64,
    ) -> Vec<(ReplyTo, ControlReply)> {
        let mut staged = Staged::default();
        let mut pending = Vec::with_capacity(requests.len());
        for (reply_to, namespace, op) in requests {
            let answer = match ns_string(&namespace) {
                Ok(ns) => self.stage(&mut staged, &namespace, ns, op, now_s),
                Err(e) => Pending::Ready(refusal(&e)),
            };
            pending.push((reply_to, answer));
        }
        if staged.ops.is_empty() {
            return pending
                .into_iter()
                .map(|(to, p)| match p {
                    Pending::Ready(r) | Pending::Write { reply: r, .. } => (to, reply(r)),
                })
                .collect();
        }
        let outcomes = match store.write(&staged.ops, now_s) {
            Ok(committed) => committed.outcomes,
            Err(e) => {
                tracing::error!(error = %e, n_ops = staged.ops.len(), "cannot persist vault writes");
                let failed = pending
                    .into_iter()
                    .map(|(to, _)| (to, super::failed_write(&e)));
                return failed.collect();
            }
        };
        debug_assert_eq!(outcomes.len(), staged.ops.len());
        self.commit(staged.ops, &outcomes);
        pending
            .into_iter()
            .map(|(to, p)| match p {
                Pending::Ready(r) => (to, reply(r)),
                Pending::Write { op_idx, reply: r } => match outcomes.get(op_idx) {
                    Some(Outcome::Applied | Outcome::Unchanged) => (to, reply(r)),
                    other => {
                        tracing::error!(?other, "vault write not applied by the store");
                        (to, ControlReply::StoreFailed)
                    }
                },
            })
            .collect()
    }

    /// After the store purged expired records at `now_s`: once nothing due is left in the
    /// store, drop the expired entries from the map too (never earlier, so a put's version
    /// stays above any stored one).
    pub fn after_purge(&mut self, purged: &Purged, now_s: u64) {
        if purged.more || now_s < self.next_expiry_s {
            return;
        }
        let before = self.entries.len();
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let keep = vault::is_visible(e.expires_at_s, now_s);
            if !keep {
                freed += e.sealed.len();
            }
            keep
        });
        self.sealed_bytes = self.sealed_bytes.saturating_sub(freed);
        self.next_expiry_s = earliest_expiry(&self.entries);
        tracing::debug!(
            n_expired = before - self.entries.len(),
            "expired vault entries dropped"
        );
    }

    /// Decides one request against the map plus `staged`; a write joins `staged`.
    fn stage(
        &self,
        staged: &mut Staged,
        namespace: &Namespace,
        ns: String,
        op: VaultOp,
        now_s: u64,
    ) -> Pending {
        match op {
            VaultOp::Get { name } => {
                let key = VaultKey {
                    namespace: ns,
                    name,
                };
                match self.lookup(staged, &key) {
                    Some(entry) if vault::is_visible(entry.expires_at_s, now_s) => {
                        Pending::Ready(self.open(namespace, key.name, entry))
                    }
                    _ => Pending::Ready(VaultReply::NotFound),
                }
            }
            VaultOp::List => Pending::Ready(VaultReply::Names(self.names(staged, &ns, now_s))),
            VaultOp::Delete { name } => {
                let key = VaultKey {
                    namespace: ns,
                    name,
                };
                let visible = self
                    .lookup(staged, &key)
                    .is_some_and(|e| vault::is_visible(e.expires_at_s, now_s));
                if !visible {
                    return Pending::Ready(VaultReply::NotFound);
                }
                let reply = VaultReply::Deleted {
                    name: key.name.clone(),
                };
                let op_idx = staged.ops.len();
                staged.ops.push(Op::DeleteVault { key: key.clone() });
                staged.entries.insert(key, None);
                Pending::Write { op_idx, reply }
            }
            VaultOp::Put {
                name,
                token,
                expires_at_s,
            } => {
                let key = VaultKey {
                    namespace: ns,
                    name,
                };
                match self.stage_put(staged, namespace, key, &token, expires_at_s, now_s) {
                    Ok(pending) => pending,
                    Err(reply) => Pending::Ready(reply),
                }
            }
        }
    }

    fn stage_put(
        &self,
        staged: &mut Staged,
        namespace: &Namespace,
        key: VaultKey,
        token: &Zeroizing<String>,
        expires_at_s: Option<u64>,
        now_s: u64,
    ) -> Result<Pending, VaultReply> {
        // Checked again at the control plane's clock: the store drops a put already expired.
        vault::validate_expiry(expires_at_s, now_s).map_err(|e| refusal(&e))?;
        let previous = self.lookup(staged, &key);
        let replaces_live = previous.is_some_and(|e| vault::is_visible(e.expires_at_s, now_s));
        if !replaces_live && self.n_live(staged, &key.namespace, now_s) >= MAX_ENTRIES_PER_NAMESPACE
        {
            return Err(VaultReply::Full {
                max: MAX_ENTRIES_PER_NAMESPACE,
            });
        }
        let version = previous.map_or(1, |e| e.version + 1);
        let namespace_key = self
            .master_key
            .namespace_key(namespace)
            .map_err(|e| refusal(&e))?;
        let sealed = vault::seal(
            &namespace_key,
            namespace,
            &key.name,
            version,
            token.as_bytes(),
            &mut OsRng,
        )
        .map_err(|e| refusal(&e))?;
        let held = self.sealed_bytes + staged.sealed_bytes + sealed.len();
        if held > MAX_SEALED_BYTES_HELD {
            return Err(VaultReply::OutOfSpace {
                max_bytes: MAX_SEALED_BYTES_HELD,
            });
        }
        let entry = VaultEntry {
            sealed,
            version,
            expires_at_s,
        };
        let op = Op::PutVault {
            key: key.clone(),
            entry: entry.clone(),
        };
        if let Err(e) = op.check() {
            // A namespace (issuer and subject) longer than the store takes.
            return Err(VaultReply::Refused {
                description: e.to_string(),
            });
        }
        staged.sealed_bytes += entry.sealed.len();
        staged.entries.insert(key.clone(), Some(entry));
        let op_idx = staged.ops.len();
        staged.ops.push(op);
        Ok(Pending::Write {
            op_idx,
            reply: VaultReply::Stored {
                name: key.name,
                version,
            },
        })
    }

    /// Applies the committed ops that took effect to the map.
    fn commit(&mut self, ops: Vec<Op>, outcomes: &[Outcome]) {
        for (op, outcome) in ops.into_iter().zip(outcomes) {
            if !matches!(outcome, Outcome::Applied | Outcome::Unchanged) {
                continue;
            }
            match op {
                Op::PutVault { key, entry } => {
                    self.sealed_bytes += entry.sealed.len();
                    if let Some(exp_s) = entry.expires_at_s {
                        self.next_expiry_s = self.next_expiry_s.min(exp_s);
                    }
                    if let Some(old) = self.entries.insert(key, entry) {
                        self.sealed_bytes = self.sealed_bytes.saturating_sub(old.sealed.len());
                    }
                }
                Op::DeleteVault { key } => {
                    if let Some(old) = self.entries.remove(&key) {
                        self.sealed_bytes = self.sealed_bytes.saturating_sub(old.sealed.len());
                    }
                }
                _ => {}
            }
        }
    }

    /// Applies a vault op another node wrote (already applied to the store, in feed order).
    pub fn apply_feed_op(&mut self, op: Op) {
        self.commit(vec![op], &[Outcome::Applied]);
    }

    /// Replaces every entry with the store's (after a fleet snapshot, or when another node's
    /// write landed between this node's staging and its commit).
    pub fn replace_entries(&mut self, entries: BTreeMap<VaultKey, VaultEntry>) {
        self.sealed_bytes = entries.values().map(|e| e.sealed.len()).sum();
        self.next_expiry_s = earliest_expiry(&entries);
        self.entries = entries;
    }

    /// The entry at `key` as the batch sees it so far.
    fn lookup<'a>(&'a self, staged: &'a Staged, key: &VaultKey) -> Option<&'a VaultEntry> {
        match staged.entries.get(key) {
            Some(staged) => staged.as_ref(),
            None => self.entries.get(key),
        }
    }

    /// Opens `entry`; a failure is a server fault, logged without the value.
    fn open(&self, namespace: &Namespace, name: String, entry: &VaultEntry) -> VaultReply {
        let opened = self
            .master_key
            .namespace_key(namespace)
            .and_then(|key| vault::open(&key, namespace, &name, entry.version, &entry.sealed));
        let plaintext = match opened {
            Ok(plaintext) => plaintext,
            Err(e) => {
                tracing::error!(error = %e, %name, version = entry.version, "vault entry does not open");
                return VaultReply::Unreadable;
            }
        };
        match std::str::from_utf8(&plaintext) {
            Ok(text) => VaultReply::Entry {
                name,
                token: Zeroizing::new(text.to_owned()),
                version: entry.version,
                expires_at_s: entry.expires_at_s,
            },
            Err(_) => VaultReply::Unreadable,
        }
    }

    /// The live names of namespace `ns` as the batch sees them, sorted.
    fn names(&self, staged: &Staged, ns: &str, now_s: u64) -> Vec<String> {
        let mut live: BTreeMap<&str, bool> = BTreeMap::new();
        for (key, entry) in in_namespace(&self.entries, ns) {
            live.insert(&key.name, vault::is_visible(entry.expires_at_s, now_s));
        }
        for (key, entry) in in_namespace(&staged.entries, ns) {
            let visible = entry
                .as_ref()
                .is_some_and(|e| vault::is_visible(e.expires_at_s, now_s));
            live.insert(&key.name, visible);
        }
        live.into_iter()
            .filter(|&(_, visible)| visible)
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    fn n_live(&self, staged: &Staged, ns: &str, now_s: u64) -> usize {
        self.names(staged, ns, now_s).len()
    }
}

/// The entries of namespace `ns`: a range of the (namespace, name) order.
fn in_namespace<'a, V>(
    map: &'a BTreeMap<VaultKey, V>,
    ns: &'a str,
) -> impl Iterator<Item = (&'a VaultKey, &'a V)> + 'a {
    let start = VaultKey {
        namespace: ns.to_owned(),
        name: String::new(),
    };
    map.range(start..)
        .take_while(move |(k, _)| k.namespace == ns)
}

fn earliest_expiry(entries: &BTreeMap<VaultKey, VaultEntry>) -> u64 {
    entries
        .values()
        .filter_map(|e| e.expires_at_s)
        .min()
        .unwrap_or(u64::MAX)
}

/// The store's form of a namespace (`iss NUL sub`, valid UTF-8 since both parts are).
fn ns_string(namespace: &Namespace) -> Result<String, VaultError> {
    String::from_utf8(namespace.as_bytes().to_vec()).map_err(|_| VaultError::BadNamespace)
}

fn refusal(e: &VaultError) -> VaultReply {
    if e.is_client_error() {
        VaultReply::Refused {
            description: e.to_string(),
        }
    } else {
        tracing::error!(error = %e, "vault key derivation failed");
        VaultReply::Unreadable
    }
}

fn reply(r: VaultReply) -> ControlReply {
    ControlReply::Vault(r)
}

#[cfg(test)]
mod tests;
