//! The control plane's vault over a real store: namespaces, versions, expiry, limits, one
//! commit per batch, and what a failed commit answers.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::*;
use crate::store::{Change, Committed, RedbStore, Snapshot, StoreError, StoreOptions, STORE_FILE};

const NOW: u64 = 1_000_000;
const SECRET: &str = "1//0g-refresh-token-must-never-be-on-disk";

fn reply_to(ticket: u64) -> ReplyTo {
    ReplyTo {
        shard_idx: 0,
        ticket,
        keep_alive: true,
    }
}

fn ns(sub: &str) -> Namespace {
    Namespace::new("https://issuer.example", sub).unwrap()
}

fn put(name: &str, token: &str, expires_at_s: Option<u64>) -> VaultOp {
    VaultOp::Put {
        name: name.into(),
        token: Zeroizing::new(token.into()),
        expires_at_s,
    }
}

fn get(name: &str) -> VaultOp {
    VaultOp::Get { name: name.into() }
}

struct Fixture {
    dir: tempfile::TempDir,
    store: RedbStore,
    vault: Vault,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
        let key = MasterKey::from_bytes([7; 32]);
        Fixture {
            dir,
            store,
            vault: Vault::new(key, BTreeMap::new()),
        }
    }

    /// One batch; the vault replies in order.
    fn batch(&mut self, requests: Vec<(Namespace, VaultOp)>, now_s: u64) -> Vec<VaultReply> {
        let requests = requests
            .into_iter()
            .enumerate()
            .map(|(i, (ns, op))| (reply_to(i as u64), ns, op))
            .collect();
        self.vault
            .handle_batch(&mut self.store, requests, now_s)
            .into_iter()
            .enumerate()
            .map(|(i, (to, reply))| {
                assert_eq!(to.ticket, i as u64, "replies in request order");
                match reply {
                    ControlReply::Vault(r) => r,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    fn one(&mut self, ns: Namespace, op: VaultOp, now_s: u64) -> VaultReply {
        self.batch(vec![(ns, op)], now_s).pop().unwrap()
    }
}

fn stored(version: u64) -> VaultReply {
    VaultReply::Stored {
        name: "google".into(),
        version,
    }
}

fn entry_token(reply: &VaultReply) -> (&str, u64) {
    match reply {
        VaultReply::Entry { token, version, .. } => (token.as_str(), *version),
        other => panic!("{other:?}"),
    }
}

#[test]
fn owner_reads_back_others_see_nothing_and_versions_increase() {
    let mut f = Fixture::new();
    assert_eq!(
        f.one(ns("alice"), put("google", SECRET, None), NOW),
        stored(1)
    );
    assert_eq!(
        entry_token(&f.one(ns("alice"), get("google"), NOW)),
        (SECRET, 1)
    );
    // Another subject: a missing entry, the same answer as a name nobody has.
    assert_eq!(
        f.one(ns("mallory"), get("google"), NOW),
        VaultReply::NotFound
    );
    assert_eq!(f.one(ns("alice"), get("nope"), NOW), VaultReply::NotFound);
    let delete = VaultOp::Delete {
        name: "google".into(),
    };
    assert_eq!(f.one(ns("mallory"), delete, NOW), VaultReply::NotFound);
    // Mallory's put lands in mallory's namespace; alice's entry is untouched.
    assert_eq!(
        f.one(ns("mallory"), put("google", "evil", None), NOW),
        stored(1)
    );
    assert_eq!(
        entry_token(&f.one(ns("alice"), get("google"), NOW)),
        (SECRET, 1)
    );
    // Same subject from another issuer is another namespace.
    let other_iss = Namespace::new("https://other.example", "alice").unwrap();
    assert_eq!(f.one(other_iss, get("google"), NOW), VaultReply::NotFound);
    assert_eq!(
        f.one(ns("alice"), put("google", "rt-2", None), NOW),
        stored(2)
    );
    assert_eq!(
        entry_token(&f.one(ns("alice"), get("google"), NOW)),
        ("rt-2", 2)
    );
    assert_eq!(
        f.one(ns("alice"), put("drive", "rt-3", None), NOW),
        VaultReply::Stored {
            name: "drive".into(),
            version: 1
        }
    );
    assert_eq!(
        f.one(ns("alice"), VaultOp::List, NOW),
        VaultReply::Names(vec!["drive".into(), "google".into()])
    );
    assert_eq!(
        f.one(ns("mallory"), VaultOp::List, NOW),
        VaultReply::Names(vec!["google".into()])
    );
    let delete = VaultOp::Delete {
        name: "google".into(),
    };
    assert_eq!(
        f.one(ns("alice"), delete, NOW),
        VaultReply::Deleted {
            name: "google".into()
        }
    );
    assert_eq!(f.one(ns("alice"), get("google"), NOW), VaultReply::NotFound);
}

#[test]
fn the_store_holds_only_sealed_bytes_and_a_reload_opens_them() {
    let mut f = Fixture::new();
    f.one(ns("alice"), put("google", SECRET, None), NOW);
    let snapshot = f.store.snapshot().unwrap();
    let (key, entry) = snapshot.state.vault.iter().next().unwrap();
    assert_eq!(key.name, "google");
    assert!(!entry
        .sealed
        .windows(SECRET.len())
        .any(|w| w == SECRET.as_bytes()));
    let file = std::fs::read(f.dir.path().join(STORE_FILE)).unwrap();
    assert!(!file.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    // A restart: a new vault over the snapshot opens it with the same master key ...
    let mut reloaded = Vault::new(MasterKey::from_bytes([7; 32]), snapshot.state.vault.clone());
    let requests = vec![(reply_to(0), ns("alice"), get("google"))];
    let replies = reloaded.handle_batch(&mut f.store, requests, NOW);
    assert!(matches!(&replies[0].1, ControlReply::Vault(r) if entry_token(r) == (SECRET, 1)));
    // ... and with another key it is a server fault, never a 404.
    let mut wrong = Vault::new(MasterKey::from_bytes([8; 32]), snapshot.state.vault);
    let requests = vec![(reply_to(0), ns("alice"), get("google"))];
    let replies = wrong.handle_batch(&mut f.store, requests, NOW);
    assert_eq!(replies[0].1, ControlReply::Vault(VaultReply::Unreadable));
}

#[test]
fn expired_entries_are_refused_hidden_then_purged() {
    let mut f = Fixture::new();
    let refused = f.one(ns("alice"), put("google", SECRET, Some(NOW)), NOW);
    assert!(matches!(refused, VaultReply::Refused { .. }), "{refused:?}");
    assert_eq!(
        f.one(ns("alice"), put("google", SECRET, Some(NOW + 10)), NOW),
        stored(1)
    );
    assert_eq!(
        entry_token(&f.one(ns("alice"), get("google"), NOW + 9)),
        (SECRET, 1)
    );
    let later = NOW + 10;
    assert_eq!(
        f.one(ns("alice"), get("google"), later),
        VaultReply::NotFound
    );
    assert_eq!(
        f.one(ns("alice"), VaultOp::List, later),
        VaultReply::Names(vec![])
    );
    let delete = VaultOp::Delete {
        name: "google".into(),
    };
    assert_eq!(f.one(ns("alice"), delete, later), VaultReply::NotFound);
    // Held (invisible) until the store purged it; a put before then still gets a version
    // above the stored one.
    assert_eq!(f.vault.len(), 1);
    let purged = f.store.purge_expired(later, 16).unwrap();
    assert_eq!(purged.n_records, 1);
    f.vault.after_purge(&purged, later);
    assert!(f.vault.is_empty());
    assert!(f.store.snapshot().unwrap().state.vault.is_empty());
    assert_eq!(
        f.one(ns("alice"), put("google", "again", None), later),
        stored(1)
    );
}

#[test]
fn a_batch_is_one_commit_and_each_request_sees_the_writes_before_it() {
    let mut f = Fixture::new();
    let revision = f.store.revision();
    let replies = f.batch(
        vec![
            (ns("alice"), get("google")),
            (ns("alice"), put("google", "v1", None)),
            (ns("bob"), put("google", "b1", None)),
            (ns("alice"), put("google", "v2", None)),
            (ns("alice"), get("google")),
            (ns("alice"), VaultOp::List),
        ],
        NOW,
    );
    assert_eq!(f.store.revision(), revision + 1, "one commit for the batch");
    assert_eq!(replies[0], VaultReply::NotFound);
    assert_eq!(replies[1], stored(1));
    assert_eq!(replies[2], stored(1));
    assert_eq!(replies[3], stored(2));
    assert_eq!(entry_token(&replies[4]), ("v2", 2));
    assert_eq!(replies[5], VaultReply::Names(vec!["google".into()]));
    // Reads alone commit nothing.
    f.batch(vec![(ns("alice"), get("google"))], NOW);
    assert_eq!(f.store.revision(), revision + 1);
}

#[test]
fn a_namespace_is_bounded_but_overwrites_always_fit() {
    let mut f = Fixture::new();
    let puts = (0..MAX_ENTRIES_PER_NAMESPACE)
        .map(|i| (ns("alice"), put(&format!("n{i}"), "t", None)))
        .collect();
    let replies = f.batch(puts, NOW);
    assert!(replies
        .iter()
        .all(|r| matches!(r, VaultReply::Stored { .. })));
    assert_eq!(
        f.one(ns("alice"), put("one-more", "t", None), NOW),
        VaultReply::Full {
            max: MAX_ENTRIES_PER_NAMESPACE
        }
    );
    assert!(matches!(
        f.one(ns("alice"), put("n0", "t2", None), NOW),
        VaultReply::Stored { version: 2, .. }
    ));
    assert!(matches!(
        f.one(ns("bob"), put("n0", "t", None), NOW),
        VaultReply::Stored { version: 1, .. }
    ));
}

#[test]
fn a_namespace_too_long_for_the_store_is_refused_alone() {
    let mut f = Fixture::new();
    let long = Namespace::new("https://issuer.example", &"s".repeat(2000)).unwrap();
    let replies = f.batch(
        vec![
            (long, put("google", "t", None)),
            (ns("alice"), put("google", "t", None)),
        ],
        NOW,
    );
    assert!(
        matches!(&replies[0], VaultReply::Refused { description } if description.contains("namespace")),
        "{replies:?}"
    );
    assert_eq!(replies[1], stored(1));
}

/// A store whose commits fail.
struct FailingStore;

impl Store for FailingStore {
    fn write(&mut self, _: &[Op], _: u64) -> Result<Committed, StoreError> {
        Err(StoreError::Io {
            path: "subzero.redb".into(),
            source: std::io::Error::other("disk gone"),
        })
    }
    fn revision(&self) -> u64 {
        0
    }
    fn changes_since(&self, _: u64, _: usize) -> Result<Vec<Change>, StoreError> {
        Ok(Vec::new())
    }
    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            revision: 0,
            state: crate::store::State::default(),
        })
    }
    fn purge_expired(&mut self, now_s: u64, _: usize) -> Result<Purged, StoreError> {
        let _ = now_s;
        Ok(Purged {
            n_records: 0,
            revision: 0,
            more: false,
        })
    }
    fn trim_changes(&mut self, through: u64) -> Result<u64, StoreError> {
        Ok(through)
    }
}

#[test]
fn a_failed_commit_acknowledges_nothing() {
    let mut vault = Vault::new(MasterKey::from_bytes([7; 32]), BTreeMap::new());
    let requests = vec![
        (reply_to(0), ns("alice"), put("google", SECRET, None)),
        (reply_to(1), ns("alice"), get("google")),
    ];
    let replies = vault.handle_batch(&mut FailingStore, requests, NOW);
    assert!(
        replies.iter().all(|(_, r)| *r == ControlReply::StoreFailed),
        "{replies:?}"
    );
    assert!(vault.is_empty());
    let requests = vec![(reply_to(2), ns("alice"), get("google"))];
    let replies = vault.handle_batch(&mut FailingStore, requests, NOW);
    assert_eq!(replies[0].1, ControlReply::Vault(VaultReply::NotFound));
}
