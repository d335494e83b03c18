//! The contract between the pipeline and the sinks: what one read cycle
//! encoded, as whole batches. Listener tasks fill them without locks; the
//! queues carry them ([`crate::queue::Weighed`] says what they weigh); the
//! Redis writer and the Graylog forwarder read them. Nothing here knows
//! about routes, sockets or Redis.

use std::ops::Range;

use crate::queue::Weighed;

/// One list push (and maybe publish), as ranges into [`RedisBatch::data`].
#[derive(Debug, Clone)]
pub struct RedisOp {
    /// The list key.
    pub key: Range<usize>,
    /// The JSON entry (with its trailing newline).
    pub entry: Range<usize>,
    /// The channel payload, when the route publishes.
    pub publish: Option<Range<usize>>,
    /// Entries the list keeps.
    pub list_cap: usize,
}

/// Encoded Redis work from one read cycle: all bytes in one buffer.
#[derive(Debug, Default)]
pub struct RedisBatch {
    /// Keys, entries and payloads, back to back.
    pub data: Vec<u8>,
    /// What to do with them, in arrival order.
    pub ops: Vec<RedisOp>,
    /// Told once every op is applied, for an input whose ack must mean
    /// "kept" (Fluent).
    pub applied: Option<Applied>,
}

/// The Redis writer's word that a batch's every op was applied (or
/// refused by Redis, counted): what a Forward ack waits for. It is
/// dropped unsent when the batch, or any op of it, is dropped instead (a
/// full queue, the flush deadline at shutdown), so the waiting input
/// learns that what it holds was not kept and does not ack it.
#[derive(Debug)]
pub struct Applied(tokio::sync::oneshot::Sender<()>);

impl Applied {
    /// A signal and the receiver that learns its outcome: `Ok` once told,
    /// `Err` once dropped untold.
    pub fn new() -> (Applied, tokio::sync::oneshot::Receiver<()>) {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (Applied(sender), receiver)
    }

    /// Every op of the batch was applied.
    pub fn tell(self) {
        // The input may have given up waiting (its connection closed).
        let _ = self.0.send(());
    }
}

impl RedisBatch {
    /// The bytes of `range`.
    pub fn slice(&self, range: &Range<usize>) -> &[u8] {
        &self.data[range.clone()]
    }
}

impl Weighed for RedisBatch {
    fn messages(&self) -> usize {
        self.ops.len()
    }
    fn bytes(&self) -> usize {
        self.data.len()
    }
    fn drop_oldest(&mut self, n: usize) {
        self.ops.drain(..n.min(self.ops.len()));
        if n > 0 {
            // Part of it is lost: it can no longer be told applied.
            self.applied = None;
        }
    }
}

/// GELF 1.1 JSON messages to forward, back to back in one buffer.
#[derive(Debug, Default)]
pub struct GelfBatch {
    /// The encoded messages.
    pub data: Vec<u8>,
    /// Each message's range.
    pub messages: Vec<Range<usize>>,
}

impl GelfBatch {
    /// The messages, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.messages.iter().map(|r| &self.data[r.clone()])
    }
}

impl Weighed for GelfBatch {
    fn messages(&self) -> usize {
        self.messages.len()
    }
    fn bytes(&self) -> usize {
        self.data.len()
    }
    fn drop_oldest(&mut self, n: usize) {
        self.messages.drain(..n.min(self.messages.len()));
    }
}

/// Takes a batch that holds messages (an empty one holds no bytes either).
pub(crate) fn take_if_any<T: Weighed + Default>(batch: &mut T) -> Option<T> {
    (batch.messages() > 0).then(|| std::mem::take(batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_oldest_keeps_the_newest_ops_and_their_bytes() {
        let mut batch = RedisBatch::default();
        for n in 0..3u8 {
            let start = batch.data.len();
            batch.data.extend_from_slice(&[b'k', b'0' + n]);
            batch.ops.push(RedisOp {
                key: start..start + 2,
                entry: start..start + 2,
                publish: None,
                list_cap: 1,
            });
        }
        let (applied, mut told) = Applied::new();
        batch.applied = Some(applied);
        batch.drop_oldest(2);
        assert_eq!(batch.messages(), 1);
        assert!(
            matches!(
                told.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed)
            ),
            "a batch that lost ops is never told applied"
        );
        assert_eq!(batch.slice(&batch.ops[0].key), b"k2");
        assert!(take_if_any(&mut GelfBatch::default()).is_none());
    }
}
