//! The disk queue (`[queue] dir`): every batch for Redis appended to
//! segment files before it counts as taken in, read back by the Redis
//! writer, deleted once Redis applied all of it.
//!
//! The directory holds:
//! - `lock`: held with `flock` for the life of the process, with the
//!   holder's pid in it, so a second cowlogd on the same directory exits at
//!   once naming it;
//! - `writer-id`: this queue's writer identity, made once. The Redis
//!   writer's marker (`cowlogd:applied:<id>`) is keyed by it, so after a
//!   crash the marker says which of the replayed messages Redis already
//!   applied;
//! - `applied`: the last sequence number known applied (a floor for when
//!   the marker is gone: expired, or Redis flushed);
//! - `<first sequence number>.seg`: the segments ([`cowlogd_parsers::segment`]),
//!   oldest first; the newest is appended to.
//!
//! Every message gets a sequence number when it is appended; numbers only
//! grow, across restarts too. A segment is deleted once every message in
//! it is applied and [`DELETE_GRACE`] has passed (a Fluent sender may be
//! about to resend an event it has not seen acked: its chunk id must
//! still be on disk to be recognised after a crash).
//!
//! Durability follows `[queue] fsync`: `interval` syncs what was written
//! every `fsync_interval_ms` (group commit), `always` syncs before an
//! acked input is told its batch is kept, `never` leaves it to the kernel.
//! A crash of the process loses nothing written in any mode; a power loss
//! keeps what was synced.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::metrics::{Counter, Gauge, Histogram};
use cowlogd_parsers::segment::{
    self, HEADER_LEN, Next, RecordParts, SegmentError, StoredOp, decode_payload, next_record,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::redis::Taken;
use crate::batch::{RedisBatch, RedisOp};
use crate::config::{Fsync, QueueSettings};
use crate::metrics;

/// How long a fully applied segment stays on disk.
pub const DELETE_GRACE: Duration = Duration::from_secs(2);
/// How often upkeep runs when `fsync` is not `interval`.
const UPKEEP_EVERY: Duration = Duration::from_millis(100);
/// Most bytes read from a segment at once.
const READ_BLOCK: usize = 1024 * 1024;
/// Longest record read back: a read cycle's batch is far smaller.
const MAX_RECORD: usize = 1 << 30;

/// Why the queue directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the lock.
    #[error("queue.dir {dir} is in use by another cowlogd (pid {holder})")]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The pid the lock file names.
        holder: String,
    },
    /// A segment from a newer cowlogd.
    #[error("queue.dir segment {path}: {error}")]
    Format {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        error: SegmentError,
    },
    /// The file system refused.
    #[error("queue.dir {path}: {error}")]
    Io {
        /// What was being done to.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |error| OpenError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Why a batch was not appended.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max_disk_bytes` would be passed: the batch comes back.
    Full,
    /// The queue is closed (shutdown) or the file system failed.
    Unavailable,
}

/// A segment file.
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// Bytes written (and, for the reader, readable).
    bytes: u64,
    /// Bytes checked (and their damage counted) at open: the reader counts
    /// only what it finds past them.
    checked: u64,
    /// The sequence number after its last message.
    end_seq: u64,
    /// When every message in it was first known applied.
    applied_at: Option<Instant>,
}

struct Appender {
    segments: VecDeque<Segment>,
    active: File,
    next_seq: u64,
    disk_bytes: u64,
    /// Files written since the last sync (the active one and any closed
    /// since), and whether the directory changed.
    unsynced: Vec<File>,
    dir_changed: bool,
    applied_seq: u64,
    scratch: Vec<u8>,
    stored_ops: Vec<StoredOp>,
    closed: bool,
}

struct Reader {
    /// The segment being read (by first sequence number) and where.
    segment: u64,
    offset: u64,
    /// The sequence number the next message read must have to follow on.
    next_seq: u64,
    block: Vec<u8>,
    file: Option<(u64, File)>,
    /// Records taken and not yet applied: (end sequence number, appended).
    in_flight: VecDeque<(u64, u64)>,
}

struct DiskMetrics {
    bytes: Gauge,
    records: Gauge,
    segments: Gauge,
    oldest_age: Gauge,
    fsync: Histogram,
    corrupt: Counter,
}

/// The queue; see the module docs.
pub struct DiskQueue {
    dir: PathBuf,
    settings: QueueSettings,
    _lock: File,
    applied_file: File,
    append: Mutex<Appender>,
    read: Mutex<Reader>,
    not_empty: Notify,
    not_full: Notify,
    writer_id: String,
    applied_floor: u64,
    next_seq_at_open: u64,
    replayed: u64,
    chunks: Vec<Vec<u8>>,
    metrics: DiskMetrics,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What reading one segment at start found.
struct Scanned {
    /// Bytes of whole records (where a torn tail is cut).
    good_len: u64,
    end_seq: Option<u64>,
    messages_after_floor: u64,
    torn: bool,
    corrupt: u64,
}

fn scan(bytes: &[u8], floor: u64, chunks: &mut Vec<Vec<u8>>) -> Scanned {
    let mut scanned = Scanned {
        good_len: HEADER_LEN as u64,
        end_seq: None,
        messages_after_floor: 0,
        torn: false,
        corrupt: 0,
    };
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        match next_record(&bytes[at..], MAX_RECORD) {
            Next::Record { payload, len } => {
                match decode_payload(payload) {
                    Ok(payload) => {
                        let end = payload.first_seq + payload.op_count() as u64;
                        if end > floor + 1 {
                            scanned.messages_after_floor += end - payload.first_seq.max(floor + 1);
                        }
                        // Applied or not: a sender may still resend it.
                        chunks.extend(payload.chunks().map(<[u8]>::to_vec));
                        scanned.end_seq = Some(end);
                    }
                    Err(_) => scanned.corrupt += 1,
                }
                at += len;
                scanned.good_len = at as u64;
            }
            Next::Corrupt { len } => {
                scanned.corrupt += 1;
                at += len;
                scanned.good_len = at as u64;
            }
            Next::Incomplete => {
                scanned.torn = true;
                break;
            }
            Next::Unframed => {
                // Nothing after it can be found: cut like a torn tail.
                scanned.corrupt += 1;
                break;
            }
        }
    }
    scanned
}

impl DiskQueue {
    /// Opens (or creates) the queue in `settings.dir`: takes the lock,
    /// reads the writer identity, checks every segment (a torn tail is
    /// cut, a corrupt record skipped, both counted) and positions the
    /// reader at the first message not known applied.
    ///
    /// # Errors
    /// When another process holds the directory, a segment was written by
    /// a newer cowlogd, or the file system refuses.
    pub fn open(settings: &QueueSettings) -> Result<DiskQueue, OpenError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock_path = dir.join("lock");
        let mut lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        if lock_file.try_lock().is_err() {
            let mut holder = String::new();
            let _ = lock_file.read_to_string(&mut holder);
            return Err(OpenError::Locked {
                dir,
                holder: holder.trim().to_owned(),
            });
        }
        lock_file.set_len(0).map_err(io_error(&lock_path))?;
        writeln!(lock_file, "{}", std::process::id()).map_err(io_error(&lock_path))?;

        let writer_id = read_or_make_writer_id(&dir)?;
        let applied_path = dir.join("applied");
        let applied_floor = std::fs::read_to_string(&applied_path)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let applied_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&applied_path)
            .map_err(io_error(&applied_path))?;

        let corrupt = metrics::QUEUE_CORRUPT_RECORDS.counter();
        let torn = metrics::QUEUE_TORN_RECORDS.counter();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            names.push(seq);
        }
        names.sort_unstable();
        let mut segments = VecDeque::new();
        let mut chunks = Vec::new();
        let mut replayed = 0;
        let mut next_seq = applied_floor + 1;
        for first_seq in names {
            let path = segment_path(&dir, first_seq);
            let bytes = std::fs::read(&path).map_err(io_error(&path))?;
            match segment::read_header(&bytes) {
                Ok(()) => {}
                Err(error @ SegmentError::NewerVersion { .. }) => {
                    return Err(OpenError::Format { path, error });
                }
                Err(error) => {
                    // Not ours, or cut before its header was whole: set
                    // aside (kept for a look), never read again.
                    corrupt.increment(1);
                    tracing::warn!(path = %path.display(), %error, "queue segment unreadable; renamed to .corrupt");
                    let aside = path.with_extension("corrupt");
                    std::fs::rename(&path, &aside).map_err(io_error(&path))?;
                    continue;
                }
            }
            let scanned = scan(&bytes, applied_floor, &mut chunks);
            if scanned.corrupt > 0 {
                corrupt.increment(scanned.corrupt);
                tracing::warn!(path = %path.display(), records = scanned.corrupt, "corrupt records in a queue segment skipped");
            }
            if scanned.good_len < bytes.len() as u64 {
                if scanned.torn {
                    torn.increment(1);
                }
                tracing::warn!(path = %path.display(), cut = bytes.len() as u64 - scanned.good_len, "queue segment ends inside a record (a crash mid-write); cut");
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                file.set_len(scanned.good_len).map_err(io_error(&path))?;
                file.sync_all().map_err(io_error(&path))?;
            }
            replayed += scanned.messages_after_floor;
            let end_seq = scanned.end_seq.unwrap_or(first_seq).max(first_seq);
            next_seq = next_seq.max(end_seq);
            segments.push_back(Segment {
                first_seq,
                path,
                bytes: scanned.good_len,
                checked: scanned.good_len,
                end_seq,
                applied_at: None,
            });
        }
        // What is all applied goes after the grace, as in a running queue:
        // its chunk ids still answer resends.
        let active = match segments.back() {
            Some(last) if last.bytes < settings.segment_bytes => OpenOptions::new()
                .append(true)
                .open(&last.path)
                .map_err(io_error(&last.path))?,
            _ => {
                let (file, segment) = create_segment(&dir, next_seq)?;
                segments.push_back(segment);
                file
            }
        };
        let disk_bytes = segments.iter().map(|s| s.bytes).sum();
        let reader_start = segments.front().map_or(next_seq, |s| s.first_seq);
        metrics::QUEUE_REPLAYED_RECORDS
            .counter()
            .increment(replayed);
        if replayed > 0 {
            tracing::info!(dir = %dir.display(), messages = replayed, "replaying what the queue directory holds");
        }
        let queue = DiskQueue {
            settings: settings.clone(),
            _lock: lock_file,
            applied_file,
            append: Mutex::new(Appender {
                segments,
                active,
                next_seq,
                disk_bytes,
                unsynced: Vec::new(),
                dir_changed: true,
                applied_seq: applied_floor,
                scratch: Vec::new(),
                stored_ops: Vec::new(),
                closed: false,
            }),
            read: Mutex::new(Reader {
                segment: reader_start,
                offset: HEADER_LEN as u64,
                next_seq: reader_start.max(applied_floor + 1),
                block: Vec::new(),
                file: None,
                in_flight: VecDeque::new(),
            }),
            not_empty: Notify::new(),
            not_full: Notify::new(),
            writer_id,
            applied_floor,
            next_seq_at_open: next_seq,
            replayed,
            chunks,
            metrics: DiskMetrics {
                bytes: metrics::QUEUE_DISK_BYTES.gauge(),
                records: metrics::QUEUE_DISK_RECORDS.gauge(),
                segments: metrics::QUEUE_DISK_SEGMENTS.gauge(),
                oldest_age: metrics::QUEUE_OLDEST_AGE.gauge(),
                fsync: metrics::QUEUE_FSYNC_DURATION.histogram(),
                corrupt,
            },
            dir,
        };
        queue.update_gauges(&lock(&queue.append));
        Ok(queue)
    }

    /// The writer identity kept in the directory.
    pub fn writer_id(&self) -> &str {
        &self.writer_id
    }

    /// The last sequence number the directory knew applied at start.
    pub fn applied_floor(&self) -> u64 {
        self.applied_floor
    }

    /// The sequence number the first message appended by this process
    /// got: every message on disk at start is numbered below it.
    pub fn next_seq_at_open(&self) -> u64 {
        self.next_seq_at_open
    }

    /// Messages found on disk at start, not known applied.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// The Fluent chunk ids of what was on disk at start.
    pub fn chunks_at_start(&self) -> &[Vec<u8>] {
        &self.chunks
    }

    /// Appends `batch` (with the Fluent chunk ids it answers). `Full`
    /// gives nothing back but the reason: the caller counts the drop or
    /// waits ([`DiskQueue::append_when_room`]).
    ///
    /// # Errors
    /// `Full` when `max_disk_bytes` would be passed, `Unavailable` when
    /// closed or the write failed (logged).
    pub fn append(&self, batch: &RedisBatch, chunks: &[Vec<u8>]) -> Result<(), Refused> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        let mut guard = lock(&self.append);
        let appender = &mut *guard;
        if appender.closed {
            return Err(Refused::Unavailable);
        }
        let mut scratch = std::mem::take(&mut appender.scratch);
        scratch.clear();
        let mut stored = std::mem::take(&mut appender.stored_ops);
        stored.clear();
        stored.extend(batch.ops.iter().map(|op| StoredOp {
            key: op.key.clone(),
            entry: op.entry.clone(),
            publish: op.publish.clone(),
            list_cap: u32::try_from(op.list_cap).unwrap_or(u32::MAX),
        }));
        let chunk_refs: Vec<&[u8]> = chunks
            .iter()
            .map(Vec::as_slice)
            .filter(|c| c.len() <= 255)
            .collect();
        let encoded = segment::encode_record(
            &mut scratch,
            &RecordParts {
                first_seq: appender.next_seq,
                appended_ms: wall_ms(),
                ops: &stored,
                data: &batch.data,
                chunks: &chunk_refs,
            },
        );
        appender.stored_ops = stored;
        let result = match encoded {
            Err(error) => {
                crate::warn_limited!(%error, "a batch could not be encoded for the disk queue");
                Err(Refused::Unavailable)
            }
            Ok(()) => self.write_record(appender, &scratch, batch.ops.len() as u64),
        };
        if scratch.capacity() > 4 * READ_BLOCK {
            scratch = Vec::new();
        }
        appender.scratch = scratch;
        drop(guard);
        if result.is_ok() {
            self.not_empty.notify_one();
        }
        result
    }

    fn write_record(
        &self,
        appender: &mut Appender,
        record: &[u8],
        ops: u64,
    ) -> Result<(), Refused> {
        let len = record.len() as u64;
        if appender.disk_bytes + len > self.settings.max_disk_bytes {
            return Err(Refused::Full);
        }
        let active_bytes = appender.segments.back().map_or(0, |s| s.bytes);
        if active_bytes > HEADER_LEN as u64 && active_bytes + len > self.settings.segment_bytes {
            match create_segment(&self.dir, appender.next_seq) {
                Ok((file, segment)) => {
                    let old = std::mem::replace(&mut appender.active, file);
                    appender.unsynced.push(old);
                    appender.dir_changed = true;
                    appender.disk_bytes += segment.bytes;
                    appender.segments.push_back(segment);
                }
                Err(error) => {
                    crate::warn_limited!(%error, "could not start a new queue segment");
                    return Err(Refused::Unavailable);
                }
            }
        }
        if let Err(error) = appender.active.write_all(record) {
            crate::warn_limited!(dir = %self.dir.display(), %error, "writing the disk queue failed");
            // A partial write is cut at the next start as a torn tail;
            // until then nothing more goes to this file.
            appender.closed = true;
            return Err(Refused::Unavailable);
        }
        appender.next_seq += ops;
        appender.disk_bytes += len;
        if let Some(segment) = appender.segments.back_mut() {
            segment.bytes += len;
            segment.end_seq = appender.next_seq;
        }
        self.update_gauges(appender);
        Ok(())
    }

    /// Appends `batch` once there is room, however long that takes
    /// (Fluent: the ack waits, the sender buffers); `false` when `cancel`
    /// fires first or the queue cannot take it. With `fsync = "always"`,
    /// returns once it is synced.
    pub async fn append_when_room(
        &self,
        batch: &RedisBatch,
        chunks: &[Vec<u8>],
        cancel: &CancellationToken,
    ) -> bool {
        loop {
            let notified = self.not_full.notified();
            match self.append(batch, chunks) {
                Ok(()) => break,
                Err(Refused::Unavailable) => return false,
                Err(Refused::Full) => {}
            }
            tokio::select! {
                () = notified => {}
                () = cancel.cancelled() => return false,
            }
        }
        if self.settings.fsync == Fsync::Always {
            return self.sync().await;
        }
        true
    }

    /// Appends `batch`, waiting up to `wait` for room; else it is dropped
    /// (the newest: nothing on disk is evicted for it). The messages
    /// dropped.
    pub async fn append_waiting(&self, batch: &RedisBatch, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.not_full.notified();
            match self.append(batch, &[]) {
                Ok(()) => return 0,
                Err(Refused::Unavailable) => return batch.ops.len(),
                Err(Refused::Full) => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return batch.ops.len();
            }
        }
    }

    /// Syncs what was written; `false` if the sync failed (logged).
    pub async fn sync(&self) -> bool {
        let (files, dir_changed) = {
            let mut appender = lock(&self.append);
            let mut files: Vec<File> = std::mem::take(&mut appender.unsynced);
            match appender.active.try_clone() {
                Ok(active) => files.push(active),
                Err(error) => {
                    crate::warn_limited!(%error, "cannot sync the disk queue");
                    return false;
                }
            }
            (files, std::mem::take(&mut appender.dir_changed))
        };
        let dir = self.dir.clone();
        let started = std::time::Instant::now();
        let synced = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for file in &files {
                file.sync_data()?;
            }
            if dir_changed {
                File::open(&dir)?.sync_all()?;
            }
            Ok(())
        })
        .await;
        self.metrics.fsync.record(started.elapsed().as_secs_f64());
        match synced {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                crate::warn_limited!(dir = %self.dir.display(), %error, "fsync of the disk queue failed");
                false
            }
            Err(_) => false,
        }
    }

    /// Waits until something is there to take or the queue is closed.
    pub async fn wait_not_empty(&self) {
        loop {
            let notified = self.not_empty.notified();
            if self.has_unread() || lock(&self.append).closed {
                return;
            }
            notified.await;
        }
    }

    fn has_unread(&self) -> bool {
        let reader = lock(&self.read);
        let appender = lock(&self.append);
        appender.segments.iter().any(|s| {
            s.first_seq >= reader.segment
                && (s.first_seq > reader.segment || s.bytes > reader.offset)
        })
    }

    /// Messages appended and not yet taken (sequence numbers, so a skipped
    /// corrupt record counts until it is passed).
    pub fn len_messages(&self) -> usize {
        let next = lock(&self.append).next_seq;
        let read = lock(&self.read).next_seq;
        next.saturating_sub(read) as usize
    }

    /// Takes whole records from the read position, at least one, until
    /// `max_messages` or `max_bytes` would be passed, stopping where
    /// sequence numbers jump (a corrupt record was skipped): what it
    /// returns is numbered from `first_seq` on without a gap. `None` when
    /// nothing is there.
    pub fn take(&self, max_messages: usize, max_bytes: usize) -> Option<Taken> {
        let mut reader = lock(&self.read);
        let mut batches = Vec::new();
        let mut first_seq = 0;
        let mut messages = 0;
        let mut bytes = 0;
        let mut at_least = 0;
        loop {
            let (readable, checked, next_segment) = {
                let appender = lock(&self.append);
                let current = appender
                    .segments
                    .iter()
                    .find(|s| s.first_seq >= reader.segment);
                let Some(current) = current else { break };
                if current.first_seq != reader.segment {
                    // The segment read so far is gone (applied): move on.
                    let first = current.first_seq;
                    drop(appender);
                    reader.move_to(first);
                    continue;
                }
                let next = appender
                    .segments
                    .iter()
                    .find(|s| s.first_seq > reader.segment)
                    .map(|s| s.first_seq);
                (current.bytes, current.checked, next)
            };
            if reader.offset >= readable {
                match next_segment {
                    Some(next) => {
                        reader.move_to(next);
                        continue;
                    }
                    None => break,
                }
            }
            let left = (readable - reader.offset) as usize;
            let want = left.min(READ_BLOCK.max(max_bytes).max(at_least));
            if let Err(error) = reader.fill(&self.dir, want) {
                crate::warn_limited!(dir = %self.dir.display(), %error, "reading the disk queue failed");
                break;
            }
            // Damage before `checked` was counted when the queue opened.
            let count_corrupt = |at: u64| {
                if at >= checked {
                    self.metrics.corrupt.increment(1);
                }
            };
            let block = std::mem::take(&mut reader.block);
            let mut at = 0;
            let mut bigger = None;
            let mut full = false;
            while at < block.len() {
                match next_record(&block[at..], MAX_RECORD) {
                    Next::Record { payload, len } => {
                        at += len;
                        let Ok(payload) = decode_payload(payload) else {
                            count_corrupt(reader.offset);
                            reader.offset += len as u64;
                            continue;
                        };
                        let count = payload.op_count();
                        let end = payload.first_seq + count as u64;
                        if end <= reader.next_seq {
                            // Known applied (the `applied` floor at start).
                            reader.offset += len as u64;
                            continue;
                        }
                        if !batches.is_empty()
                            && (payload.first_seq != first_seq + messages as u64
                                || messages + count > max_messages
                                || bytes + payload.data.len() > max_bytes)
                        {
                            full = true;
                            break;
                        }
                        if batches.is_empty() {
                            first_seq = payload.first_seq;
                        }
                        messages += count;
                        bytes += payload.data.len();
                        reader.in_flight.push_back((end, payload.appended_ms));
                        batches.push(to_batch(&payload));
                        reader.next_seq = end;
                        reader.offset += len as u64;
                        if messages >= max_messages || bytes >= max_bytes {
                            full = true;
                            break;
                        }
                    }
                    Next::Corrupt { len } => {
                        count_corrupt(reader.offset);
                        at += len;
                        reader.offset += len as u64;
                    }
                    // The block ends inside a record: the next fill starts
                    // at it.
                    Next::Incomplete if at > 0 => break,
                    // A record larger than the block: read it whole.
                    Next::Incomplete => {
                        let need = block
                            .first_chunk::<4>()
                            .map_or(0, |len| u32::from_le_bytes(*len) as usize)
                            + segment::RECORD_OVERHEAD;
                        if need > block.len() && need <= (readable - reader.offset) as usize {
                            bigger = Some(need);
                        } else {
                            count_corrupt(reader.offset);
                            reader.offset = readable;
                        }
                        break;
                    }
                    Next::Unframed => {
                        count_corrupt(reader.offset);
                        reader.offset = readable;
                        break;
                    }
                }
            }
            reader.block = block;
            if full {
                break;
            }
            at_least = bigger.unwrap_or(0);
        }
        (!batches.is_empty()).then_some(Taken {
            batches,
            first_seq: Some(first_seq),
        })
    }

    /// Redis applied everything through `last_seq`: fully applied segments
    /// go once [`DELETE_GRACE`] has passed.
    pub fn applied(&self, last_seq: u64) {
        {
            let mut reader = lock(&self.read);
            while reader
                .in_flight
                .front()
                .is_some_and(|(end, _)| *end <= last_seq + 1)
            {
                reader.in_flight.pop_front();
            }
        }
        let mut appender = lock(&self.append);
        if last_seq <= appender.applied_seq {
            return;
        }
        appender.applied_seq = last_seq;
        let _ = self
            .applied_file
            .write_all_at(format!("{last_seq:020}\n").as_bytes(), 0);
        self.collect(&mut appender);
    }

    /// Deletes the segments applied for longer than the grace.
    fn collect(&self, appender: &mut Appender) {
        let now = Instant::now();
        let applied = appender.applied_seq;
        let active = appender.segments.len().saturating_sub(1);
        let mut freed = false;
        for segment in appender.segments.iter_mut().take(active) {
            if segment.end_seq <= applied + 1 && segment.applied_at.is_none() {
                segment.applied_at = Some(now);
            }
        }
        while appender.segments.len() > 1
            && appender
                .segments
                .front()
                .and_then(|s| s.applied_at)
                .is_some_and(|at| now.duration_since(at) >= DELETE_GRACE)
        {
            let Some(segment) = appender.segments.pop_front() else {
                break;
            };
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {
                    appender.disk_bytes -= segment.bytes;
                    appender.dir_changed = true;
                    freed = true;
                }
                Err(error) => {
                    crate::warn_limited!(path = %segment.path.display(), %error, "could not delete an applied queue segment");
                    appender.segments.push_front(segment);
                    break;
                }
            }
        }
        self.update_gauges(appender);
        if freed {
            self.not_full.notify_waiters();
        }
    }

    /// Syncs on the interval, deletes applied segments, updates the
    /// gauges, until `stop`; then syncs a last time.
    pub async fn upkeep(self: Arc<Self>, stop: CancellationToken) {
        let every = match self.settings.fsync {
            Fsync::Interval => self.settings.fsync_interval,
            Fsync::Always | Fsync::Never => UPKEEP_EVERY,
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            if self.settings.fsync == Fsync::Interval {
                self.sync().await;
            }
            self.collect(&mut lock(&self.append));
            let oldest = lock(&self.read).in_flight.front().map(|(_, at)| *at);
            self.metrics
                .oldest_age
                .set(oldest.map_or(0.0, |at| wall_ms().saturating_sub(at) as f64 / 1000.0));
        }
        if self.settings.fsync != Fsync::Never {
            self.sync().await;
        }
    }

    /// Stops taking appends (shutdown: what is on disk stays for the next
    /// start) and wakes every waiter.
    pub fn close(&self) {
        lock(&self.append).closed = true;
        self.not_empty.notify_waiters();
        self.not_full.notify_waiters();
    }

    fn update_gauges(&self, appender: &Appender) {
        self.metrics.bytes.set(appender.disk_bytes as f64);
        self.metrics.segments.set(appender.segments.len() as f64);
        self.metrics
            .records
            .set(appender.next_seq.saturating_sub(appender.applied_seq + 1) as f64);
    }
}

impl Reader {
    fn move_to(&mut self, first_seq: u64) {
        self.segment = first_seq;
        self.offset = HEADER_LEN as u64;
        self.file = None;
        self.block.clear();
        // A message before this segment's start was given up with its
        // segment: numbering goes on from here.
        self.next_seq = self.next_seq.max(first_seq);
    }

    /// Reads `want` bytes at the read position into the block.
    fn fill(&mut self, dir: &Path, want: usize) -> std::io::Result<()> {
        if self
            .file
            .as_ref()
            .is_none_or(|(seq, _)| *seq != self.segment)
        {
            let file = File::open(segment_path(dir, self.segment))?;
            self.file = Some((self.segment, file));
        }
        let Some((_, file)) = &self.file else {
            return Ok(());
        };
        self.block.clear();
        self.block.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            let n = file.read_at(&mut self.block[filled..], self.offset + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        self.block.truncate(filled);
        Ok(())
    }
}

fn to_batch(payload: &segment::Payload<'_>) -> RedisBatch {
    RedisBatch {
        data: payload.data.to_vec(),
        ops: payload
            .ops()
            .map(|op| RedisOp {
                key: op.key,
                entry: op.entry,
                publish: op.publish,
                list_cap: op.list_cap as usize,
            })
            .collect(),
        applied: None,
    }
}

fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, Segment), OpenError> {
    let path = segment_path(dir, first_seq);
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io_error(&path))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    segment::write_header(&mut header);
    // A file already there (the same number after a cut) starts over.
    file.set_len(0).map_err(io_error(&path))?;
    file.write_all(&header).map_err(io_error(&path))?;
    Ok((
        file,
        Segment {
            first_seq,
            path,
            bytes: HEADER_LEN as u64,
            checked: 0,
            end_seq: first_seq,
            applied_at: None,
        },
    ))
}

fn read_or_make_writer_id(dir: &Path) -> Result<String, OpenError> {
    let path = dir.join("writer-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(id.to_owned());
        }
        tracing::warn!(path = %path.display(), "writer-id unreadable; making a new one (what Redis applied before cannot be told apart: replayed messages may be written twice)");
    }
    let id = format!("{:016x}", crate::sinks::random_id());
    let tmp = dir.join("writer-id.tmp");
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    writeln!(file, "{id}").map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    Ok(id)
}

#[cfg(test)]
mod tests;
