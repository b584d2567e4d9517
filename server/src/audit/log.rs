//! The writer: recovery at open, group commit, rotation, retention, checkpoints and reads.
//! Owned by the control plane's thread; every method may block on the disk.

use std::fs;
use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rand::SeedableRng as _;

use super::checkpoint::{self, Checkpoint, NoteVerifier, Signer};
use super::record::{self, Hash, PiiKey, GENESIS};
use super::segment::{self, Header};
use super::{io_err, AuditError, Event, ReadRecord};
use crate::config::AuditConfig;

/// A batch's place in the log once durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Sequence number of its first event.
    pub first_seq: u64,
    /// Of its last.
    pub last_seq: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// Events made durable.
    pub events: u64,
    /// Batches (API requests and internal groups) made durable.
    pub batches: u64,
    /// Group commits (one write and one fdatasync each).
    pub fsyncs: u64,
    /// Bytes written to segments.
    pub bytes: u64,
    /// Commits that failed (nothing of them was acknowledged).
    pub failed_commits: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Segments deleted by retention.
    pub segments_deleted: u64,
}

/// The audit log, open for appending.
pub struct AuditLog {
    dir: PathBuf,
    config: AuditConfig,
    /// Every segment's first sequence number and path; the last is the active one.
    segments: Vec<(u64, PathBuf)>,
    file: fs::File,
    /// Durable length of the active segment.
    len: u64,
    /// Hash of the last durable record.
    head: Hash,
    /// Sequence number of the next record.
    next_seq: u64,
    key: PiiKey,
    signer: Signer,
    /// Tree size and time (ms) of the last checkpoint.
    last_checkpoint: (u64, u64),
    /// The last checkpoint's signed note.
    latest_note: Option<String>,
    /// A failed write could not be undone: the file's tail is unknown until a truncate works.
    dirty: bool,
    buf: Vec<u8>,
    rng: rand::rngs::StdRng,
    stats: LogStats,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// Recovery's view of the active segment.
struct Recovered {
    path: PathBuf,
    first_seq: u64,
    len: u64,
    head: Hash,
    next_seq: u64,
}

impl AuditLog {
    /// Opens (or creates) the log in `<data_dir>/audit`: recovers the last segment (a torn
    /// tail is cut, with a log line; any record that does not verify is an error naming the
    /// file and the record) and checks the latest checkpoint against it.
    pub fn open(
        data_dir: &Path,
        config: &AuditConfig,
        key: PiiKey,
        now_ms: u64,
    ) -> Result<AuditLog, AuditError> {
        let dir = data_dir.join(super::AUDIT_DIR);
        segment::create_dir(&dir)?;
        segment::create_dir(&dir.join(super::CHECKPOINTS_DIR))?;
        let signer = load_signer(&dir, &config.origin)?;
        let mut segments = segment::list(&dir)?;
        let latest = latest_checkpoint(&dir, &signer.verifier())?;
        let recovered = match segments.last() {
            None => {
                let header = Header {
                    first_seq: 1,
                    prev: GENESIS,
                    created_ms: now_ms,
                };
                let (path, _, len) = segment::create(&dir, &header)?;
                segments.push((1, path.clone()));
                Recovered {
                    path,
                    first_seq: 1,
                    len,
                    head: GENESIS,
                    next_seq: 1,
                }
            }
            Some((_, path)) => recover(path, latest.as_ref())?,
        };
        if let Some((cp_path, cp)) = &latest {
            if cp.size >= recovered.next_seq {
                return Err(AuditError::Checkpoint {
                    path: cp_path.clone(),
                    why: format!(
                        "it covers {} records but the log ends at seq {}: records were removed",
                        cp.size,
                        recovered.next_seq - 1
                    ),
                });
            }
        }
        debug_assert!(recovered.next_seq >= recovered.first_seq);
        let file = segment::open_append(&recovered.path)?;
        let latest_note = match &latest {
            Some((path, _)) => Some(fs::read_to_string(path).map_err(io_err("read", path))?),
            None => None,
        };
        let last_checkpoint = latest.map_or((0, now_ms), |(_, cp)| (cp.size, now_ms));
        let log = AuditLog {
            dir,
            config: config.clone(),
            segments,
            file,
            len: recovered.len,
            head: recovered.head,
            next_seq: recovered.next_seq,
            key,
            signer,
            last_checkpoint,
            latest_note,
            dirty: false,
            buf: Vec::with_capacity(1 << 20),
            rng: rand::rngs::StdRng::from_entropy(),
            stats: LogStats::default(),
        };
        log.publish_vkey()?;
        Ok(log)
    }

    /// The verifier key of this log's checkpoints.
    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// Sequence number of the last durable record (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Hash of the last durable record.
    pub fn head(&self) -> Hash {
        self.head
    }

    /// Counters.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// Makes `batches` durable, in order, with as few writes and fdatasyncs as
    /// `max_pending_bytes` allows (one for a pass of ordinary size). Each batch gets its
    /// place, or `None` when the commit holding it failed (nothing of it is acknowledged;
    /// the file is cut back to the last durable record).
    pub fn commit(&mut self, batches: &[&[Event]], now_ms: u64) -> Vec<Option<Committed>> {
        let mut out = Vec::with_capacity(batches.len());
        let mut head = self.head;
        let mut next_seq = self.next_seq;
        let mut chunk: Vec<u64> = Vec::new();
        self.buf.clear();
        for (idx, batch) in batches.iter().enumerate() {
            debug_assert!(!batch.is_empty());
            for event in *batch {
                head = record::encode(
                    &mut self.buf,
                    &head,
                    next_seq,
                    now_ms,
                    event,
                    &self.key,
                    &mut self.rng,
                );
                next_seq += 1;
            }
            chunk.push(batch.len() as u64);
            if self.buf.len() >= self.config.max_pending_bytes || idx + 1 == batches.len() {
                let mut first_seq = self.next_seq;
                if let Err(e) = self.flush(head, next_seq, now_ms) {
                    tracing::error!(error = %e, "cannot make audit events durable");
                    self.stats.failed_commits += 1;
                    out.resize(batches.len(), None);
                    return out;
                }
                self.stats.batches += chunk.len() as u64;
                for n in chunk.drain(..) {
                    let last_seq = first_seq + n - 1;
                    out.push(Some(Committed {
                        first_seq,
                        last_seq,
                    }));
                    first_seq = last_seq + 1;
                }
                debug_assert_eq!(first_seq, self.next_seq);
            }
        }
        out
    }

    /// Writes `self.buf` (records up to `next_seq - 1`, ending in `head`) with one write and
    /// one fdatasync, rotating first when the active segment is full.
    fn flush(&mut self, head: Hash, next_seq: u64, now_ms: u64) -> Result<(), AuditError> {
        if self.dirty {
            self.cut_back()?;
        }
        if self.len >= self.config.segment_max_bytes {
            self.rotate(now_ms)?;
        }
        let path = self.active_path().to_owned();
        let written = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.dirty = true;
            let _ = self.cut_back();
            self.buf.clear();
            return Err(io_err("append to", path)(e));
        }
        self.stats.fsyncs += 1;
        self.stats.events += next_seq - self.next_seq;
        self.stats.bytes += self.buf.len() as u64;
        self.len += self.buf.len() as u64;
        self.head = head;
        self.next_seq = next_seq;
        self.buf.clear();
        Ok(())
    }

    /// Cuts the active segment back to its durable length after a failed write.
    fn cut_back(&mut self) -> Result<(), AuditError> {
        let path = self.active_path().to_owned();
        self.file
            .set_len(self.len)
            .and_then(|()| self.file.sync_data())
            .map_err(io_err("cut back the failed write in", path))?;
        self.dirty = false;
        Ok(())
    }

    fn active_path(&self) -> &Path {
        self.segments.last().map_or(Path::new(""), |(_, p)| p)
    }

    /// Closes the active segment and starts the next, whose header links to our head.
    fn rotate(&mut self, now_ms: u64) -> Result<(), AuditError> {
        let header = Header {
            first_seq: self.next_seq,
            prev: self.head,
            created_ms: now_ms,
        };
        let (path, file, len) = segment::create(&self.dir, &header)?;
        tracing::info!(segment = %path.display(), first_seq = self.next_seq, "audit segment rotated");
        self.file = file;
        self.len = len;
        self.segments.push((self.next_seq, path));
        Ok(())
    }

    /// Writes a checkpoint when due (`every` records or `interval` since the last, or
    /// `force`), if records were added since the last. Returns whether one was written.
    pub fn maybe_checkpoint(&mut self, now_ms: u64, force: bool) -> Result<bool, AuditError> {
        let size = self.last_seq();
        let (last_size, last_ms) = self.last_checkpoint;
        if size == 0 || size == last_size {
            return Ok(false);
        }
        let due = force
            || size - last_size >= self.config.checkpoint_every_records
            || now_ms.saturating_sub(last_ms) >= self.config.checkpoint_interval_s * 1000;
        if !due {
            return Ok(false);
        }
        let note = self.signer.sign(&Checkpoint {
            origin: self.config.origin.clone(),
            size,
            head: self.head,
        });
        let dir = self.dir.join(super::CHECKPOINTS_DIR);
        write_durably(&dir, &format!("{size:020}.note"), note.as_bytes())?;
        self.last_checkpoint = (size, now_ms);
        self.latest_note = Some(note);
        self.stats.checkpoints += 1;
        prune_checkpoints(&dir)?;
        Ok(true)
    }

    /// A signed checkpoint of the current head (written first if the head moved since the
    /// last one); `None` while the log is empty.
    pub fn checkpoint_now(&mut self, now_ms: u64) -> Result<Option<String>, AuditError> {
        self.maybe_checkpoint(now_ms, true)?;
        Ok(self.latest_note.clone())
    }

    /// Deletes the oldest closed segments beyond the size or age bound; the active one stays.
    pub fn enforce_retention(&mut self, now_ms: u64) -> Result<(), AuditError> {
        let mut sizes = Vec::with_capacity(self.segments.len());
        for (_, path) in &self.segments {
            let meta = fs::metadata(path).map_err(io_err("stat", path))?;
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(now_ms, |d| d.as_millis() as u64);
            sizes.push((meta.len(), modified_ms));
        }
        let mut total: u64 = sizes.iter().map(|(len, _)| len).sum();
        let max_age_ms = self.config.retention_max_age_s.saturating_mul(1000);
        let mut n_delete = 0;
        for &(len, modified_ms) in &sizes[..sizes.len().saturating_sub(1)] {
            let too_old = max_age_ms > 0 && now_ms.saturating_sub(modified_ms) > max_age_ms;
            if total <= self.config.retention_max_bytes && !too_old {
                break;
            }
            total -= len;
            n_delete += 1;
        }
        for (first_seq, path) in self.segments.drain(..n_delete) {
            fs::remove_file(&path).map_err(io_err("delete (retention)", &path))?;
            tracing::info!(segment = %path.display(), first_seq, "audit segment deleted by retention");
            self.stats.segments_deleted += 1;
        }
        if n_delete > 0 {
            segment::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Up to `limit` records after `after`, personal fields opened.
    pub fn read(&self, after: u64, limit: usize) -> Result<Vec<ReadRecord>, AuditError> {
        let limit = limit.min(super::MAX_READ_LIMIT);
        let mut out = Vec::with_capacity(limit.min(64));
        let start = self
            .segments
            .iter()
            .rposition(|(first_seq, _)| *first_seq <= after.saturating_add(1))
            .unwrap_or(0);
        for (_, path) in &self.segments[start..] {
            if out.len() >= limit {
                break;
            }
            self.read_segment(path, after, limit, &mut out)?;
        }
        Ok(out)
    }

    fn read_segment(
        &self,
        path: &Path,
        after: u64,
        limit: usize,
        out: &mut Vec<ReadRecord>,
    ) -> Result<(), AuditError> {
        let file = fs::File::open(path).map_err(io_err("open", path))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
        let mut line = Vec::with_capacity(512);
        let mut first = true;
        let last_seq = self.last_seq();
        while out.len() < limit {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(io_err("read", path))?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            if std::mem::take(&mut first) {
                continue; // The header.
            }
            let body = &line[..line.len() - 1];
            match record::peek_seq(body) {
                Some(seq) if seq <= after => continue,
                Some(seq) if seq > last_seq => break,
                _ => {}
            }
            let parsed: record::Parsed =
                serde_json::from_slice(body).map_err(|e| AuditError::Corrupt {
                    path: path.to_owned(),
                    seq: record::peek_seq(body).unwrap_or(0),
                    offset: 0,
                    why: e.to_string(),
                })?;
            let key = Some(&self.key);
            out.push(ReadRecord {
                seq: parsed.seq,
                ts_ms: parsed.ts_ms,
                actor: parsed.actor.reveal(key, "actor", parsed.seq),
                action: parsed.action,
                resource: parsed.resource,
                outcome: parsed.outcome,
                source: parsed.source.reveal(key, "source", parsed.seq),
                hash: parsed.hash,
            });
        }
        Ok(())
    }

    /// Swaps the active segment's handle for a read-only one, so the next write fails as a
    /// full disk would (`false`), or back (`true`).
    #[cfg(test)]
    pub(super) fn set_writable_for_test(&mut self, writable: bool) {
        let path = self.active_path().to_owned();
        self.file = if writable {
            segment::open_append(&path).unwrap()
        } else {
            fs::File::open(&path).unwrap()
        };
    }

    /// Writes `checkpoint.vkey` if it is missing or differs.
    fn publish_vkey(&self) -> Result<(), AuditError> {
        let vkey = format!("{}\n", self.signer.verifier().to_vkey());
        let path = self.dir.join(super::CHECKPOINT_VKEY_FILE);
        if fs::read_to_string(&path).ok().as_deref() != Some(vkey.as_str()) {
            write_durably(&self.dir, super::CHECKPOINT_VKEY_FILE, vkey.as_bytes())?;
        }
        Ok(())
    }
}

/// Loads (or creates) the checkpoint signing key.
fn load_signer(dir: &Path, origin: &str) -> Result<Signer, AuditError> {
    let path = dir.join(super::CHECKPOINT_KEY_FILE);
    let seed = checkpoint::load_or_create_seed(&path).map_err(io_err("load or create", &path))?;
    Ok(Signer::new(origin, &seed))
}

/// Whether the line at `offset` starts with a zero byte (a never-written range).
fn zero_filled_at(bytes: &[u8], offset: u64) -> bool {
    usize::try_from(offset).is_ok_and(|o| bytes.get(o) == Some(&0))
}

/// Scans the last segment: cuts a torn tail (an unterminated last line, or everything from a
/// zero-filled line on), refuses a record that does not verify, and
/// checks the checkpoint's head if its record is in this segment.
fn recover(path: &Path, latest: Option<&(PathBuf, Checkpoint)>) -> Result<Recovered, AuditError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    let want = latest.map(|(_, cp)| cp.size);
    let want: Vec<u64> = want.into_iter().collect();
    let scan = match segment::scan(path, &bytes, &want) {
        // A line that starts with a zero byte is a range the file system extended but never
        // wrote: after a crash, pages written after the last completed `fdatasync` may be
        // missing, and everything after that sync was never acknowledged. Cut from there,
        // unless a checkpoint already covers that record (then it was acknowledged: refuse).
        Err(AuditError::Corrupt { seq, offset, .. })
            if zero_filled_at(&bytes, offset) && latest.is_none_or(|(_, cp)| cp.size < seq) =>
        {
            let whole = usize::try_from(offset).unwrap_or(bytes.len());
            let mut scan = segment::scan(path, &bytes[..whole], &want)?;
            scan.torn_bytes = bytes.len() as u64 - offset;
            scan
        }
        other => other?,
    };
    if scan.torn_bytes > 0 {
        tracing::warn!(
            segment = %path.display(),
            offset = scan.valid_len,
            bytes = scan.torn_bytes,
            "audit log: cutting a torn last record (an interrupted write, never acknowledged)"
        );
        let file = segment::open_append(path)?;
        file.set_len(scan.valid_len)
            .and_then(|()| file.sync_data())
            .map_err(io_err("cut the torn tail of", path))?;
    }
    if let (Some((cp_path, cp)), Some(&(_, hash))) = (latest, scan.wanted.first()) {
        if hash != cp.head {
            return Err(AuditError::Checkpoint {
                path: cp_path.clone(),
                why: format!(
                    "record seq {} in {} does not have the checkpointed head hash: the log was rewritten",
                    cp.size,
                    path.display()
                ),
            });
        }
    }
    Ok(Recovered {
        path: path.to_owned(),
        first_seq: scan.header.first_seq,
        len: scan.valid_len,
        head: scan.head,
        next_seq: scan.header.first_seq + scan.n_records,
    })
}

/// The stored checkpoints' paths, oldest first.
pub(super) fn list_checkpoints(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut out: Vec<PathBuf> = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.len() == 25
            && name.ends_with(".note")
            && name[..20].bytes().all(|b| b.is_ascii_digit())
        {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The newest stored checkpoint, verified against `verifier`.
fn latest_checkpoint(
    dir: &Path,
    verifier: &NoteVerifier,
) -> Result<Option<(PathBuf, Checkpoint)>, AuditError> {
    let list = list_checkpoints(&dir.join(super::CHECKPOINTS_DIR))?;
    let Some(path) = list.last() else {
        return Ok(None);
    };
    let note = fs::read_to_string(path).map_err(io_err("read", path))?;
    let cp = verifier.open(&note).map_err(|e| AuditError::Checkpoint {
        path: path.clone(),
        why: e.to_string(),
    })?;
    Ok(Some((path.clone(), cp)))
}

fn prune_checkpoints(dir: &Path) -> Result<(), AuditError> {
    let list = list_checkpoints(dir)?;
    let excess = list.len().saturating_sub(super::MAX_CHECKPOINTS_KEPT);
    for path in &list[..excess] {
        fs::remove_file(path).map_err(io_err("delete", path))?;
    }
    Ok(())
}

/// Writes `name` in `dir` durably: a temporary file, fsync, rename, directory fsync.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AuditError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    segment::sync_dir(dir)
}
