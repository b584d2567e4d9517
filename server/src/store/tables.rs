//! The redb tables of one write transaction and how each op changes them.
//!
//! One table per record kind, one expiry index per kind that expires (`(expires_at_s, key)` →
//! `()`, so a purge reads only what is due, oldest first), the change log (`revision` → an
//! encoded batch) and a small system table (format, newest revision, feed floor). Every op
//! keeps its record and its expiry index entry in step: the old index entry goes when a
//! record's expiry changes or the record goes.

use redb::{ReadableTable, StorageError, Table, TableDefinition, WriteTransaction};

use super::{Channel, Op, Outcome, RevocationKey, Tuple, VaultEntry, VaultKey};

type Str = &'static str;
type Bytes = &'static [u8];

pub(super) const TUPLES: TableDefinition<(Str, Str, Str), Option<u64>> =
    TableDefinition::new("tuples");
pub(super) const TUPLE_EXPIRY: TableDefinition<(u64, Str, Str, Str), ()> =
    TableDefinition::new("tuple_expiry");
/// `(namespace, name)` → `(version, expires_at_s, sealed)`.
pub(super) const VAULT: TableDefinition<(Str, Str), (u64, Option<u64>, Bytes)> =
    TableDefinition::new("vault");
pub(super) const VAULT_EXPIRY: TableDefinition<(u64, Str, Str), ()> =
    TableDefinition::new("vault_expiry");
/// `id` → `(jti, jti, expires_at_s)`.
pub(super) const CHANNELS: TableDefinition<Str, (Str, Str, u64)> = TableDefinition::new("channels");
pub(super) const CHANNEL_EXPIRY: TableDefinition<(u64, Str), ()> =
    TableDefinition::new("channel_expiry");
/// `(iss, jti)` → until when.
pub(super) const REVOCATIONS: TableDefinition<(Str, Str), u64> =
    TableDefinition::new("revocations");
pub(super) const REVOCATION_EXPIRY: TableDefinition<(u64, Str, Str), ()> =
    TableDefinition::new("revocation_expiry");
pub(super) const META: TableDefinition<Str, Bytes> = TableDefinition::new("meta");
/// `revision` → the batch's effective ops (`codec.rs`).
pub(super) const CHANGES: TableDefinition<u64, Bytes> = TableDefinition::new("changes");
pub(super) const SYSTEM: TableDefinition<Str, u64> = TableDefinition::new("system");

/// `SYSTEM` key: the file's format.
pub(super) const KEY_FORMAT: &str = "format";
/// `SYSTEM` key: the newest committed revision.
pub(super) const KEY_REVISION: &str = "revision";
/// `SYSTEM` key: the highest revision trimmed from `CHANGES` (the feed holds every later one).
pub(super) const KEY_FLOOR: &str = "feed_floor";

/// Most old changes one commit trims past the retention: keeps a commit's extra work small
/// while the feed still shrinks faster than it grows after the retention is lowered.
const MAX_TRIM_PER_COMMIT: u64 = 64;

fn expired(expires_at_s: Option<u64>, now_s: u64) -> bool {
    expires_at_s.is_some_and(|exp_s| exp_s <= now_s)
}

/// Every table, opened (created when missing) in one write transaction.
pub(super) struct Tables<'txn> {
    tuples: Table<'txn, (Str, Str, Str), Option<u64>>,
    tuple_expiry: Table<'txn, (u64, Str, Str, Str), ()>,
    vault: Table<'txn, (Str, Str), (u64, Option<u64>, Bytes)>,
    vault_expiry: Table<'txn, (u64, Str, Str), ()>,
    channels: Table<'txn, Str, (Str, Str, u64)>,
    channel_expiry: Table<'txn, (u64, Str), ()>,
    revocations: Table<'txn, (Str, Str), u64>,
    revocation_expiry: Table<'txn, (u64, Str, Str), ()>,
    meta: Table<'txn, Str, Bytes>,
    pub(super) changes: Table<'txn, u64, Bytes>,
    pub(super) system: Table<'txn, Str, u64>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Tables<'txn>, redb::TableError> {
        Ok(Tables {
            tuples: txn.open_table(TUPLES)?,
            tuple_expiry: txn.open_table(TUPLE_EXPIRY)?,
            vault: txn.open_table(VAULT)?,
            vault_expiry: txn.open_table(VAULT_EXPIRY)?,
            channels: txn.open_table(CHANNELS)?,
            channel_expiry: txn.open_table(CHANNEL_EXPIRY)?,
            revocations: txn.open_table(REVOCATIONS)?,
            revocation_expiry: txn.open_table(REVOCATION_EXPIRY)?,
            meta: txn.open_table(META)?,
            changes: txn.open_table(CHANGES)?,
            system: txn.open_table(SYSTEM)?,
        })
    }

    /// Applies one op; only `Outcome::Applied` changed anything.
    pub(super) fn apply(&mut self, op: &Op, now_s: u64) -> Result<Outcome, StorageError> {
        match op {
            Op::WriteTuple {
                tuple,
                expires_at_s,
            } => self.write_tuple(tuple, *expires_at_s, now_s),
            Op::DeleteTuple { tuple } => self.delete_tuple(tuple),
            Op::PutVault { key, entry } => self.put_vault(key, entry, now_s),
            Op::DeleteVault { key } => self.delete_vault(key),
            Op::CreateChannel { id, channel } => self.create_channel(id, channel, now_s),
            Op::DeleteChannel { id } => self.delete_channel(id),
            Op::Revoke { key, exp_s } => self.revoke(key, *exp_s, now_s),
            Op::ExpireRevocation { key } => self.expire_revocation(key),
            Op::PutMeta { key, value } => {
                let old = self.meta.insert(key.as_str(), value.as_slice())?;
                let same = old.is_some_and(|old| old.value() == value.as_slice());
                Ok(if same {
                    Outcome::Unchanged
                } else {
                    Outcome::Applied
                })
            }
            Op::DeleteMeta { key } => Ok(applied_if(self.meta.remove(key.as_str())?.is_some())),
        }
    }

    fn write_tuple(
        &mut self,
        tuple: &Tuple,
        expires_at_s: Option<u64>,
        now_s: u64,
    ) -> Result<Outcome, StorageError> {
        if expired(expires_at_s, now_s) {
            return Ok(Outcome::Expired);
        }
        let (o, r, s) = (&*tuple.object, &*tuple.relation, &*tuple.subject);
        let old = self
            .tuples
            .insert((o, r, s), expires_at_s)?
            .map(|g| g.value());
        if old == Some(expires_at_s) {
            return Ok(Outcome::Unchanged);
        }
        if let Some(Some(old_exp_s)) = old {
            self.tuple_expiry.remove((old_exp_s, o, r, s))?;
        }
        if let Some(exp_s) = expires_at_s {
            self.tuple_expiry.insert((exp_s, o, r, s), ())?;
        }
        Ok(Outcome::Applied)
    }

    fn delete_tuple(&mut self, tuple: &Tuple) -> Result<Outcome, StorageError> {
        let (o, r, s) = (&*tuple.object, &*tuple.relation, &*tuple.subject);
        let Some(old) = self.tuples.remove((o, r, s))?.map(|g| g.value()) else {
            return Ok(Outcome::Unchanged);
        };
        if let Some(old_exp_s) = old {
            self.tuple_expiry.remove((old_exp_s, o, r, s))?;
        }
        Ok(Outcome::Applied)
    }

    fn put_vault(
        &mut self,
        key: &VaultKey,
        entry: &VaultEntry,
        now_s: u64,
    ) -> Result<Outcome, StorageError> {
        if expired(entry.expires_at_s, now_s) {
            return Ok(Outcome::Expired);
        }
        let k = (&*key.namespace, &*key.name);
        let old = self.vault.get(k)?.map(|g| {
            let (version, exp_s, _) = g.value();
            (version, exp_s)
        });
        if old.is_some_and(|(version, _)| version >= entry.version) {
            return Ok(Outcome::Stale);
        }
        let value = (entry.version, entry.expires_at_s, entry.sealed.as_slice());
        self.vault.insert(k, value)?;
        if let Some((_, Some(old_exp_s))) = old {
            self.vault_expiry.remove((old_exp_s, k.0, k.1))?;
        }
        if let Some(exp_s) = entry.expires_at_s {
            self.vault_expiry.insert((exp_s, k.0, k.1), ())?;
        }
        Ok(Outcome::Applied)
    }

    fn delete_vault(&mut self, key: &VaultKey) -> Result<Outcome, StorageError> {
        let k = (&*key.namespace, &*key.name);
        let Some(old_exp_s) = self.vault.remove(k)?.map(|g| g.value().1) else {
            return Ok(Outcome::Unchanged);
        };
        if let Some(old_exp_s) = old_exp_s {
            self.vault_expiry.remove((old_exp_s, k.0, k.1))?;
        }
        Ok(Outcome::Applied)
    }

    fn create_channel(
        &mut self,
        id: &str,
        channel: &Channel,
        now_s: u64,
    ) -> Result<Outcome, StorageError> {
        if channel.expires_at_s <= now_s {
            return Ok(Outcome::Expired);
        }
        if self.channels.get(id)?.is_some() {
            return Ok(Outcome::Unchanged);
        }
        let [a, b] = &channel.jtis;
        self.channels
            .insert(id, (a.as_str(), b.as_str(), channel.expires_at_s))?;
        self.channel_expiry.insert((channel.expires_at_s, id), ())?;
        Ok(Outcome::Applied)
    }

    fn delete_channel(&mut self, id: &str) -> Result<Outcome, StorageError> {
        let Some(old_exp_s) = self.channels.remove(id)?.map(|g| g.value().2) else {
            return Ok(Outcome::Unchanged);
        };
        self.channel_expiry.remove((old_exp_s, id))?;
        Ok(Outcome::Applied)
    }

    fn revoke(
        &mut self,
        key: &RevocationKey,
        exp_s: u64,
        now_s: u64,
    ) -> Result<Outcome, StorageError> {
        if exp_s <= now_s {
            return Ok(Outcome::Expired);
        }
        let k = (&*key.iss, &*key.jti);
        let old = self.revocations.get(k)?.map(|g| g.value());
        if old.is_some_and(|old| old >= exp_s) {
            return Ok(Outcome::Unchanged);
        }
        self.revocations.insert(k, exp_s)?;
        if let Some(old_exp_s) = old {
            self.revocation_expiry.remove((old_exp_s, k.0, k.1))?;
        }
        self.revocation_expiry.insert((exp_s, k.0, k.1), ())?;
        Ok(Outcome::Applied)
    }

    fn expire_revocation(&mut self, key: &RevocationKey) -> Result<Outcome, StorageError> {
        let k = (&*key.iss, &*key.jti);
        let Some(old_exp_s) = self.revocations.remove(k)?.map(|g| g.value()) else {
            return Ok(Outcome::Unchanged);
        };
        self.revocation_expiry.remove((old_exp_s, k.0, k.1))?;
        Ok(Outcome::Applied)
    }

    /// Removes up to `max_records` records whose expiry is at or before `now_s`, each kind's
    /// oldest first, pushing the delete op of each onto `ops`.
    pub(super) fn purge(
        &mut self,
        now_s: u64,
        max_records: usize,
        ops: &mut Vec<Op>,
    ) -> Result<(), StorageError> {
        // Index keys sort by expiry first; the smallest key after every due one.
        let end_s = now_s.saturating_add(1);
        let due: Vec<(u64, String, String, String)> = self
            .tuple_expiry
            .range(..(end_s, "", "", ""))?
            .take(max_records.saturating_sub(ops.len()))
            .map(|item| {
                item.map(|(k, _)| {
                    let (e, o, r, s) = k.value();
                    (e, o.to_owned(), r.to_owned(), s.to_owned())
                })
            })
            .collect::<Result<_, _>>()?;
        for (exp_s, object, relation, subject) in due {
            let k = (&*object, &*relation, &*subject);
            self.tuple_expiry.remove((exp_s, k.0, k.1, k.2))?;
            if self.tuples.get(k)?.map(|g| g.value()) == Some(Some(exp_s)) {
                self.tuples.remove(k)?;
                let tuple = Tuple {
                    object,
                    relation,
                    subject,
                };
                ops.push(Op::DeleteTuple { tuple });
            }
        }

        let due = pairs_due(
            &self.vault_expiry,
            end_s,
            max_records.saturating_sub(ops.len()),
        )?;
        for (exp_s, namespace, name) in due {
            let k = (&*namespace, &*name);
            self.vault_expiry.remove((exp_s, k.0, k.1))?;
            if self.vault.get(k)?.map(|g| g.value().1) == Some(Some(exp_s)) {
                self.vault.remove(k)?;
                let key = VaultKey { namespace, name };
                ops.push(Op::DeleteVault { key });
            }
        }

        let due: Vec<(u64, String)> = self
            .channel_expiry
            .range(..(end_s, ""))?
            .take(max_records.saturating_sub(ops.len()))
            .map(|item| item.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
            .collect::<Result<_, _>>()?;
        for (exp_s, id) in due {
            self.channel_expiry.remove((exp_s, id.as_str()))?;
            if self.channels.get(id.as_str())?.map(|g| g.value().2) == Some(exp_s) {
                self.channels.remove(id.as_str())?;
                ops.push(Op::DeleteChannel { id });
            }
        }

        let due = pairs_due(
            &self.revocation_expiry,
            end_s,
            max_records.saturating_sub(ops.len()),
        )?;
        for (exp_s, iss, jti) in due {
            let k = (&*iss, &*jti);
            self.revocation_expiry.remove((exp_s, k.0, k.1))?;
            if self.revocations.get(k)?.map(|g| g.value()) == Some(exp_s) {
                self.revocations.remove(k)?;
                let key = RevocationKey { iss, jti };
                ops.push(Op::ExpireRevocation { key });
            }
        }
        debug_assert!(ops.len() <= max_records);
        Ok(())
    }

    /// Appends a committed batch to the feed as `revision`, records the revision, and trims
    /// up to `MAX_TRIM_PER_COMMIT` changes beyond the `retained` newest. Returns the floor.
    pub(super) fn append_change(
        &mut self,
        revision: u64,
        encoded: &[u8],
        mut floor: u64,
        retained: u64,
    ) -> Result<u64, StorageError> {
        debug_assert!(retained >= 1 && floor < revision);
        self.changes.insert(revision, encoded)?;
        self.system.insert(KEY_REVISION, revision)?;
        let mut n_trimmed = 0;
        while revision - floor > retained && n_trimmed < MAX_TRIM_PER_COMMIT {
            floor += 1;
            self.changes.remove(floor)?;
            n_trimmed += 1;
        }
        if n_trimmed > 0 {
            self.system.insert(KEY_FLOOR, floor)?;
        }
        Ok(floor)
    }
}

/// Up to `max` due entries of a `(expires_at_s, a, b)` index, owned.
fn pairs_due(
    index: &Table<'_, (u64, Str, Str), ()>,
    end_s: u64,
    max: usize,
) -> Result<Vec<(u64, String, String)>, StorageError> {
    index
        .range(..(end_s, "", ""))?
        .take(max)
        .map(|item| {
            item.map(|(k, _)| {
                let (e, a, b) = k.value();
                (e, a.to_owned(), b.to_owned())
            })
        })
        .collect()
}

fn applied_if(changed: bool) -> Outcome {
    if changed {
        Outcome::Applied
    } else {
        Outcome::Unchanged
    }
}
