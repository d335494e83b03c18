//! The queue in front of the Redis writer, in memory or on disk: one face
//! for the pipeline (how a read cycle's batch goes in, by the input's
//! flush policy) and for the writer (what it takes, what it reports
//! applied).
//!
//! The two differ where it matters to a sender. In memory a full queue
//! drops its *oldest* batches (new logs matter more to a ban daemon) and
//! a Fluent ack waits until Redis applied the batch. On disk nothing
//! written is evicted: a full disk drops the *newest* batch (counted
//! `disk_full`) or, for Fluent, delays the ack; and the ack goes out once
//! the batch is on disk (after the fsync with `fsync = "always"`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::BatchQueue;
use super::disk::{DiskQueue, Refused};
use crate::batch::{Applied, RedisBatch};
use crate::metrics::{DropReason, dropped};

/// See the module docs.
#[derive(Clone)]
pub enum RedisQueue {
    /// `[queue] dir` unset: bounded in messages and bytes, lost at exit.
    Memory(Arc<BatchQueue<RedisBatch>>),
    /// `[queue] dir` set.
    Disk(Arc<DiskQueue>),
}

/// When a batch pushed for an acked input counts as kept.
pub enum Kept {
    /// Now: it is on disk.
    Durable,
    /// When the Redis writer says so (`Ok`), or never (`Err`: dropped).
    WhenApplied(oneshot::Receiver<()>),
}

/// What the writer took.
pub struct Taken {
    /// The batches, in order.
    pub batches: Vec<RedisBatch>,
    /// The sequence number of the first message when the queue numbers
    /// them (on disk); `None`: the writer numbers them.
    pub first_seq: Option<u64>,
}

fn count_refused(refused: &Refused, messages: usize) {
    let reason = match refused {
        Refused::Full => DropReason::QueueDiskFull,
        Refused::Unavailable => DropReason::QueueDiskUnavailable,
    };
    dropped(reason, messages as u64);
    crate::warn_limited!(
        messages,
        reason = reason.labels().1,
        "disk queue did not take a batch: dropped (the newest; nothing on disk is evicted)"
    );
}

impl RedisQueue {
    /// Queues `batch` without waiting.
    pub fn push_now(&self, batch: RedisBatch) {
        match self {
            RedisQueue::Memory(queue) => {
                queue.push(batch);
            }
            RedisQueue::Disk(disk) => {
                if let Err(refused) = disk.append(&batch, &[]) {
                    count_refused(&refused, batch.ops.len());
                }
            }
        }
    }

    /// Queues `batch`, waiting up to `wait` for room (see
    /// [`BatchQueue::push_waiting`]; on disk the newest is dropped after).
    pub async fn push_waiting(&self, batch: RedisBatch, wait: Duration) {
        match self {
            RedisQueue::Memory(queue) => {
                queue.push_waiting(batch, wait).await;
            }
            RedisQueue::Disk(disk) => {
                let lost = disk.append_waiting(&batch, wait).await;
                if lost > 0 {
                    count_refused(&Refused::Full, lost);
                }
            }
        }
    }

    /// Queues `batch` for an input whose ack must mean kept, once there is
    /// room, with the Fluent `chunks` it answers (kept with it on disk, so
    /// that a resend after a crash is recognised). `None` when it was not
    /// queued (`cancel` fired, the queue closed).
    pub async fn push_kept(
        &self,
        mut batch: RedisBatch,
        chunks: &[Vec<u8>],
        cancel: &CancellationToken,
    ) -> Option<Kept> {
        match self {
            RedisQueue::Memory(queue) => {
                let (applied, told) = Applied::new();
                batch.applied = Some(applied);
                queue
                    .push_when_room(batch, cancel)
                    .await
                    .then_some(Kept::WhenApplied(told))
            }
            RedisQueue::Disk(disk) => disk
                .append_when_room(&batch, chunks, cancel)
                .await
                .then_some(Kept::Durable),
        }
    }

    /// Waits until something is queued or the queue is closed.
    pub async fn wait_not_empty(&self) {
        match self {
            RedisQueue::Memory(queue) => queue.wait_not_empty().await,
            RedisQueue::Disk(disk) => disk.wait_not_empty().await,
        }
    }

    /// Messages queued and not yet taken.
    pub fn len_messages(&self) -> usize {
        match self {
            RedisQueue::Memory(queue) => queue.len_messages(),
            RedisQueue::Disk(disk) => disk.len_messages(),
        }
    }

    /// Takes up to `max_messages` and `max_bytes` (at least one batch);
    /// `None` when nothing is queued.
    pub fn take(&self, max_messages: usize, max_bytes: usize) -> Option<Taken> {
        match self {
            RedisQueue::Memory(queue) => {
                let batches = queue.take(max_messages, max_bytes);
                (!batches.is_empty()).then_some(Taken {
                    batches,
                    first_seq: None,
                })
            }
            RedisQueue::Disk(disk) => disk.take(max_messages, max_bytes),
        }
    }

    /// Redis applied every message through `last_seq`.
    pub fn applied(&self, last_seq: u64) {
        if let RedisQueue::Disk(disk) = self {
            disk.applied(last_seq);
        }
    }

    /// The disk queue, when there is one.
    pub fn disk(&self) -> Option<&Arc<DiskQueue>> {
        match self {
            RedisQueue::Memory(_) => None,
            RedisQueue::Disk(disk) => Some(disk),
        }
    }

    /// Closes the queue: waiters return.
    pub fn close(&self) {
        match self {
            RedisQueue::Memory(queue) => queue.close(),
            RedisQueue::Disk(disk) => disk.close(),
        }
    }

    /// Empties a memory queue at shutdown; the messages it held (a disk
    /// queue keeps its own for the next start: 0).
    pub fn discard(&self) -> usize {
        match self {
            RedisQueue::Memory(queue) => {
                let left = queue.len_messages();
                queue.take(usize::MAX, usize::MAX);
                left
            }
            RedisQueue::Disk(_) => 0,
        }
    }
}
