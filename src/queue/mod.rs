//! A bounded queue of batches between the inputs and a sink.
//!
//! Bounded in messages and bytes. When a batch does not fit, the oldest
//! queued batches are dropped and counted: new logs matter more than old
//! ones to a ban daemon, and a listener must never stop reading. A TCP
//! reader may first wait a little for space ([`BatchQueue::push_waiting`]),
//! which slows the sender through TCP instead of losing messages to a
//! short stall.
//!
//! The sink takes everything queued at once ([`BatchQueue::take`]): a batch
//! is what arrived while the previous write was in flight.
//!
//! With `[queue] dir` set, the Redis path goes through [`disk::DiskQueue`]
//! instead; [`redis::RedisQueue`] is the one face both have for the
//! pipeline and the Redis writer.

pub mod disk;
pub mod redis;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use metrics::Gauge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::{DropReason, dropped};

/// Something the queue can weigh.
pub trait Weighed {
    /// Messages it holds.
    fn messages(&self) -> usize;
    /// Bytes it holds.
    fn bytes(&self) -> usize;
    /// Forgets its `n` oldest messages (a batch larger than the whole queue
    /// keeps its newest ones).
    fn drop_oldest(&mut self, n: usize);
}

struct State<T> {
    batches: VecDeque<T>,
    messages: usize,
    bytes: usize,
    closed: bool,
    /// When a waiting push first found no room, while nothing has been
    /// taken since: the start of the current stall.
    full_since: Option<tokio::time::Instant>,
}

/// The queue; see the module docs.
pub struct BatchQueue<T> {
    state: Mutex<State<T>>,
    max_messages: usize,
    max_bytes: usize,
    not_empty: Notify,
    not_full: Notify,
    gauge_messages: Gauge,
    gauge_bytes: Gauge,
    full: DropReason,
}

impl<T: Weighed> BatchQueue<T> {
    /// A queue holding at most `max_messages` and `max_bytes`; its depth is
    /// exported in the two gauges; messages it drops count as `full`.
    pub fn new(
        max_messages: usize,
        max_bytes: usize,
        gauges: (Gauge, Gauge),
        full: DropReason,
    ) -> Self {
        let (gauge_messages, gauge_bytes) = gauges;
        BatchQueue {
            state: Mutex::new(State {
                batches: VecDeque::new(),
                messages: 0,
                bytes: 0,
                closed: false,
                full_since: None,
            }),
            max_messages,
            max_bytes,
            not_empty: Notify::new(),
            not_full: Notify::new(),
            gauge_messages,
            gauge_bytes,
            full,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves plain counters behind; the
        // state is still consistent enough to keep delivering.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fits(&self, state: &State<T>, batch: &T) -> bool {
        state.messages + batch.messages() <= self.max_messages
            && state.bytes + batch.bytes() <= self.max_bytes
    }

    /// Queues `batch`, dropping the oldest batches if needed (counted as
    /// the queue's drop reason). Returns the messages dropped.
    pub fn push(&self, mut batch: T) -> usize {
        if batch.messages() == 0 {
            return 0;
        }
        let mut lost = 0;
        if batch.messages() > self.max_messages {
            lost = batch.messages() - self.max_messages;
            batch.drop_oldest(lost);
        }
        {
            let mut state = self.lock();
            while !self.fits(&state, &batch) {
                let Some(oldest) = state.batches.pop_front() else {
                    break;
                };
                state.messages -= oldest.messages();
                state.bytes -= oldest.bytes();
                lost += oldest.messages();
            }
            state.messages += batch.messages();
            state.bytes += batch.bytes();
            state.batches.push_back(batch);
            self.update_gauges(&state);
        }
        if lost > 0 {
            dropped(self.full, lost as u64);
            crate::warn_limited!(
                dropped = lost,
                "queue full: dropped the oldest queued messages"
            );
        }
        self.not_empty.notify_one();
        lost
    }

    /// Like [`BatchQueue::push`], but first waits for room — only while the
    /// queue has been full for less than `wait`. A short stall (Redis slow for
    /// a moment) slows the sender through TCP and loses nothing; in a long
    /// outage readers stop waiting and read on at full speed, dropping the
    /// oldest (Docker blocks a container's stdout while its collector does
    /// not read).
    pub async fn push_waiting(&self, batch: T, wait: Duration) -> usize {
        if batch.messages() == 0 {
            return 0;
        }
        loop {
            let notified = self.not_full.notified();
            let deadline = {
                let mut state = self.lock();
                if self.fits(&state, &batch) || state.closed {
                    break;
                }
                *state
                    .full_since
                    .get_or_insert_with(tokio::time::Instant::now)
                    + wait
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.push(batch)
    }

    /// Queues `batch` once there is room for all of it, however long that
    /// takes, so that nothing queued before is dropped for it: for senders
    /// that are told "taken" only once it is queued (fluentd acks). `false`,
    /// with nothing queued, when `cancel` fires or the queue closes first;
    /// such a sender sends again. A batch larger than the whole queue is
    /// queued at once (it could never fit).
    pub async fn push_when_room(&self, batch: T, cancel: &CancellationToken) -> bool {
        if batch.messages() == 0 {
            return true;
        }
        // A batch larger than the whole queue could never fit: it goes in
        // at once, as with `push`.
        let fits_at_all = batch.messages() <= self.max_messages && batch.bytes() <= self.max_bytes;
        if fits_at_all {
            loop {
                let notified = self.not_full.notified();
                {
                    let state = self.lock();
                    if state.closed {
                        return false;
                    }
                    if self.fits(&state, &batch) {
                        break;
                    }
                }
                tokio::select! {
                    () = notified => {}
                    () = cancel.cancelled() => return false,
                }
            }
        }
        self.push(batch);
        true
    }

    /// Waits until something is queued or the queue is closed.
    pub async fn wait_not_empty(&self) {
        loop {
            let notified = self.not_empty.notified();
            {
                let state = self.lock();
                if !state.batches.is_empty() || state.closed {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Takes whole batches from the front, at least one, until `max_messages`
    /// or `max_bytes` would be passed.
    pub fn take(&self, max_messages: usize, max_bytes: usize) -> Vec<T> {
        let mut taken = Vec::new();
        let mut count = 0;
        let mut bytes = 0;
        {
            let mut state = self.lock();
            while let Some(front) = state.batches.front() {
                if !taken.is_empty()
                    && (count + front.messages() > max_messages
                        || bytes + front.bytes() > max_bytes)
                {
                    break;
                }
                bytes += front.bytes();
                let Some(batch) = state.batches.pop_front() else {
                    break;
                };
                count += batch.messages();
                state.full_since = None;
                state.messages -= batch.messages();
                state.bytes -= batch.bytes();
                taken.push(batch);
            }
            self.update_gauges(&state);
        }
        if !taken.is_empty() {
            self.not_full.notify_waiters();
        }
        taken
    }

    /// Messages queued.
    pub fn len_messages(&self) -> usize {
        self.lock().messages
    }

    /// Marks the queue closed: waiters return, nothing more is awaited.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_waiters();
        self.not_full.notify_waiters();
    }

    fn update_gauges(&self, state: &State<T>) {
        self.gauge_messages.set(state.messages as f64);
        self.gauge_bytes.set(state.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(usize);

    impl Weighed for Fake {
        fn messages(&self) -> usize {
            self.0
        }
        fn bytes(&self) -> usize {
            self.0 * 10
        }
        fn drop_oldest(&mut self, n: usize) {
            self.0 -= n;
        }
    }

    fn queue(max: usize) -> BatchQueue<Fake> {
        BatchQueue::new(
            max,
            max * 10,
            (Gauge::noop(), Gauge::noop()),
            DropReason::QueueFull,
        )
    }

    #[tokio::test]
    async fn push_when_room_waits_for_room_never_drops_and_gives_up_on_cancel() {
        let q = std::sync::Arc::new(queue(10));
        let cancel = CancellationToken::new();
        assert!(q.push_when_room(Fake(8), &cancel).await);
        // No room for 4 more: it waits, and nothing queued is dropped.
        let waiting = {
            let (q, cancel) = (q.clone(), cancel.clone());
            tokio::spawn(async move { q.push_when_room(Fake(4), &cancel).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        assert_eq!(q.len_messages(), 8);
        assert_eq!(q.take(100, usize::MAX).len(), 1);
        assert!(waiting.await.unwrap());
        assert_eq!(q.len_messages(), 4);
        // A batch larger than the whole queue goes in at once.
        assert!(q.push_when_room(Fake(20), &cancel).await);
        // Cancelled while waiting: nothing queued.
        let before = q.len_messages();
        cancel.cancel();
        assert!(!q.push_when_room(Fake(5), &cancel).await);
        assert_eq!(q.len_messages(), before);
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let q = queue(10);
        assert_eq!(q.push(Fake(4)), 0);
        assert_eq!(q.push(Fake(4)), 0);
        assert_eq!(q.push(Fake(4)), 4);
        assert_eq!(q.len_messages(), 8);
        // A batch larger than the queue keeps its newest messages.
        assert_eq!(q.push(Fake(25)), 8 + 15);
        assert_eq!(q.len_messages(), 10);
    }

    #[test]
    fn take_respects_the_batch_limit_but_always_takes_one() {
        let q = queue(100);
        q.push(Fake(30));
        q.push(Fake(30));
        q.push(Fake(30));
        assert_eq!(
            q.take(50, usize::MAX).iter().map(|b| b.0).sum::<usize>(),
            30
        );
        assert_eq!(q.take(1, usize::MAX).len(), 1);
        assert_eq!(q.take(1000, usize::MAX).len(), 1);
        assert!(q.take(1000, usize::MAX).is_empty());
    }

    #[test]
    fn take_respects_the_byte_limit_too() {
        let q = queue(100);
        q.push(Fake(30));
        q.push(Fake(30));
        // 300 bytes each: a 500-byte take holds one.
        assert_eq!(q.take(100, 500).len(), 1);
        assert_eq!(q.take(100, 10).len(), 1);
    }

    #[tokio::test]
    async fn push_waiting_waits_for_room_then_drops() {
        let q = std::sync::Arc::new(queue(10));
        q.push(Fake(10));
        let q2 = q.clone();
        let taker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            q2.take(100, usize::MAX)
        });
        assert_eq!(q.push_waiting(Fake(5), Duration::from_secs(5)).await, 0);
        assert_eq!(taker.await.unwrap().len(), 1);
        assert_eq!(q.push_waiting(Fake(10), Duration::from_millis(10)).await, 5);
    }

    #[tokio::test]
    async fn in_a_long_stall_pushes_stop_waiting() {
        let q = queue(10);
        q.push(Fake(10));
        let started = tokio::time::Instant::now();
        q.push_waiting(Fake(1), Duration::from_millis(100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
        // Nothing was taken since: the stall is older than the wait.
        let again = tokio::time::Instant::now();
        q.push_waiting(Fake(1), Duration::from_millis(100)).await;
        assert!(again.elapsed() < Duration::from_millis(50));
        // After a take, a new stall waits again.
        q.take(100, usize::MAX);
        q.push(Fake(10));
        let third = tokio::time::Instant::now();
        q.push_waiting(Fake(1), Duration::from_millis(100)).await;
        assert!(third.elapsed() >= Duration::from_millis(100));
    }
}
