//! Planning: which queued messages go into the next transaction, and the
//! commands that write them.
//!
//! The writer owns a [`Pending`] set: the batches it took from the queue,
//! numbered with one sequence number per message. It writes them as
//! [`Window`]s — consecutive runs capped by message count and bytes — in
//! order; a window that keeps timing out is planned smaller next time.
//! Windows only ever split, never merge, which is what lets a single
//! "last applied sequence number" marker tell whether a window was applied.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use crate::batch::RedisBatch;

/// A message's place in [`Pending`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    batch: usize,
    op: usize,
}

/// Messages taken from the queue that Redis has not applied yet.
#[derive(Debug, Default)]
pub struct Pending {
    batches: Vec<RedisBatch>,
    /// The first message not yet written (or given up).
    head: Cursor,
    /// Sequence number of the message at `head`.
    head_seq: u64,
    remaining: usize,
}

/// A run of consecutive pending messages written as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    from: Cursor,
    to: Cursor,
    /// Messages in the window.
    pub messages: usize,
    /// Sequence number of its first message.
    pub first_seq: u64,
    /// Sequence number of its last message: the marker's value once applied.
    pub last_seq: u64,
}

impl Pending {
    /// `batches`, numbered from `first_seq`.
    pub fn new(batches: Vec<RedisBatch>, first_seq: u64) -> Pending {
        let remaining = batches.iter().map(|b| b.ops.len()).sum();
        let mut pending = Pending {
            batches,
            head: Cursor { batch: 0, op: 0 },
            head_seq: first_seq,
            remaining,
        };
        pending.skip_empty_batches();
        pending
    }

    /// Messages not yet written.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The sequence number the next message after these will get.
    pub fn next_seq(&self) -> u64 {
        self.head_seq + self.remaining as u64
    }

    /// The next window: from the head, at most `max_messages` messages and
    /// `max_bytes` bytes of keys, entries and payloads (at least one
    /// message, however large). `None` when nothing is left.
    pub fn window(&self, max_messages: usize, max_bytes: usize) -> Option<Window> {
        self.window_through(max_messages, max_bytes, u64::MAX)
    }

    /// Like [`Pending::window`], ending at sequence number `last` at the
    /// latest: the part of the pending messages that a marker read says an
    /// earlier transaction already applied.
    pub fn window_through(
        &self,
        max_messages: usize,
        max_bytes: usize,
        last: u64,
    ) -> Option<Window> {
        if self.remaining == 0 || last < self.head_seq {
            return None;
        }
        let max_messages = max_messages.min((last - self.head_seq).saturating_add(1) as usize);
        let mut at = self.head;
        let mut messages = 0;
        let mut bytes = 0;
        while let Some(batch) = self.batches.get(at.batch) {
            let Some(op) = batch.ops.get(at.op) else {
                at = Cursor {
                    batch: at.batch + 1,
                    op: 0,
                };
                continue;
            };
            let size = op.key.len() + op.entry.len() + op.publish.as_ref().map_or(0, |p| p.len());
            if messages > 0 && (messages == max_messages || bytes + size > max_bytes) {
                break;
            }
            messages += 1;
            bytes += size;
            at.op += 1;
        }
        Some(Window {
            from: self.head,
            to: at,
            messages,
            first_seq: self.head_seq,
            last_seq: self.head_seq + messages as u64 - 1,
        })
    }

    /// The applied signals of the batches, once every window is written.
    pub fn take_applied(&mut self) -> impl Iterator<Item = crate::batch::Applied> + '_ {
        self.batches
            .iter_mut()
            .filter_map(|batch| batch.applied.take())
    }

    /// Marks `window` (the current head window) done.
    pub fn advance(&mut self, window: &Window) {
        debug_assert_eq!(window.from, self.head);
        self.head = window.to;
        self.head_seq = window.last_seq + 1;
        self.remaining -= window.messages;
        self.skip_empty_batches();
    }

    fn skip_empty_batches(&mut self) {
        while self
            .batches
            .get(self.head.batch)
            .is_some_and(|b| self.head.op >= b.ops.len())
        {
            self.head = Cursor {
                batch: self.head.batch + 1,
                op: 0,
            };
        }
    }

    /// Each message of `window` as (batch, op index), in order.
    fn ops<'a>(
        &'a self,
        window: &Window,
    ) -> impl Iterator<Item = (&'a RedisBatch, &'a crate::batch::RedisOp)> + 'a {
        let (from, to) = (window.from, window.to);
        self.batches
            .iter()
            .enumerate()
            .skip(from.batch)
            .take_while(move |(index, _)| *index <= to.batch)
            .flat_map(move |(index, batch)| {
                let start = if index == from.batch { from.op } else { 0 };
                let end = if index == to.batch {
                    to.op
                } else {
                    batch.ops.len()
                };
                batch.ops[start.min(end)..end]
                    .iter()
                    .map(move |op| (batch, op))
            })
    }
}

/// What a window may no longer write: keys and the channel that Redis
/// refused for good (`NOPERM`, an unknown error at queue time). Their
/// messages are counted as dropped when they are excluded.
#[derive(Debug, Default)]
pub struct Exclusions {
    keys: Vec<Vec<u8>>,
    publish: bool,
}

impl Exclusions {
    /// Stops writing `key`.
    pub fn exclude_key(&mut self, key: &[u8]) {
        if !self.is_key_excluded(key) {
            self.keys.push(key.to_vec());
        }
    }

    /// Stops publishing.
    pub fn exclude_publish(&mut self) {
        self.publish = true;
    }

    fn is_key_excluded(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|k| k == key)
    }
}

/// What one command of a transaction stands for, for accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `SET marker last_seq EX ttl`.
    Marker,
    /// `LPUSH key entries…`: `entries` messages of list `key` (an index
    /// into [`Plan::keys`]).
    Push {
        /// Index into [`Plan::keys`].
        key: usize,
        /// Entries pushed.
        entries: usize,
    },
    /// `LTRIM key 0 cap-1`.
    Trim {
        /// Index into [`Plan::keys`].
        key: usize,
    },
    /// `PUBLISH channel payload`.
    Publish,
}

/// One window as a `MULTI … EXEC` transaction: the marker first, then per
/// key one variadic `LPUSH` (arrival order: the newest ends at index 0) and
/// its `LTRIM`, then one `PUBLISH` per published message.
pub struct Plan<'a> {
    /// The transaction.
    pub pipeline: redis::Pipeline,
    /// `steps[i]` is what command `i` (after `MULTI`) stands for.
    pub steps: Vec<Step>,
    /// The list keys written, in order of first appearance.
    pub keys: Vec<&'a [u8]>,
    /// Messages in the window (excluded ones too).
    pub messages: usize,
    /// Messages of the window that were excluded before this plan.
    pub excluded: usize,
    /// Sequence numbers covered.
    pub first_seq: u64,
    /// The marker value this transaction sets.
    pub last_seq: u64,
}

/// Where the marker lives and how long it lasts.
#[derive(Debug, Clone)]
pub struct Marker {
    /// `cowlogd:applied:<writer id>`.
    pub key: String,
    /// Seconds it outlives the last write.
    pub ttl_s: u64,
}

impl<'a> Plan<'a> {
    /// The transaction for `window` of `pending`, leaving out what
    /// `exclusions` names.
    pub fn new(
        pending: &'a Pending,
        window: &Window,
        exclusions: &Exclusions,
        channel: &str,
        marker: &Marker,
    ) -> Plan<'a> {
        // Keys in order of first appearance, each with its cap and entries.
        let mut keys: Vec<&'a [u8]> = Vec::new();
        let mut lists: Vec<(usize, Vec<&'a [u8]>)> = Vec::new();
        // One lookup per message: SipHash showed in profiles at ~4%.
        let mut index: HashMap<&'a [u8], usize, RandomState> = HashMap::default();
        let mut excluded = 0;
        let mut publishes = 0;
        for (batch, op) in pending.ops(window) {
            let key = batch.slice(&op.key);
            if exclusions.is_key_excluded(key) {
                excluded += 1;
                continue;
            }
            let slot = *index.entry(key).or_insert_with(|| {
                keys.push(key);
                lists.push((op.list_cap, Vec::new()));
                keys.len() - 1
            });
            // Templated keys may reach one list from routes with different
            // caps: trim to the largest, never below what a route keeps.
            lists[slot].0 = lists[slot].0.max(op.list_cap);
            lists[slot].1.push(batch.slice(&op.entry));
            publishes += usize::from(op.publish.is_some() && !exclusions.publish);
        }
        let mut pipeline = redis::Pipeline::with_capacity(1 + keys.len() * 2 + publishes);
        pipeline.atomic().ignore_errors();
        let mut steps = Vec::with_capacity(1 + keys.len() * 2 + publishes);
        pipeline
            .cmd("SET")
            .arg(&marker.key)
            .arg(window.last_seq)
            .arg("EX")
            .arg(marker.ttl_s);
        steps.push(Step::Marker);
        for (slot, (key, (cap, entries))) in keys.iter().zip(&lists).enumerate() {
            // Sized up front: the entries are most of a window's bytes.
            let bytes = key.len() + entries.iter().map(|e| e.len()).sum::<usize>();
            let mut push = redis::Cmd::with_capacity(2 + entries.len(), 5 + bytes);
            push.arg("LPUSH").arg(*key).arg(entries.as_slice());
            pipeline.add_command(push);
            steps.push(Step::Push {
                key: slot,
                entries: entries.len(),
            });
            pipeline
                .cmd("LTRIM")
                .arg(*key)
                .arg(0)
                .arg(cap.saturating_sub(1));
            steps.push(Step::Trim { key: slot });
        }
        if !exclusions.publish {
            for (batch, op) in pending.ops(window) {
                let Some(range) = &op.publish else { continue };
                if exclusions.is_key_excluded(batch.slice(&op.key)) {
                    continue;
                }
                let payload = batch.slice(range);
                let mut publish = redis::Cmd::with_capacity(3, 7 + channel.len() + payload.len());
                publish.arg("PUBLISH").arg(channel).arg(payload);
                pipeline.add_command(publish);
                steps.push(Step::Publish);
            }
        }
        Plan {
            pipeline,
            steps,
            keys,
            messages: window.messages,
            excluded,
            first_seq: window.first_seq,
            last_seq: window.last_seq,
        }
    }

    /// Entries the plan pushes.
    pub fn entries(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Push { entries, .. } => *entries,
                _ => 0,
            })
            .sum()
    }

    /// Payloads the plan publishes.
    pub fn publishes(&self) -> usize {
        self.steps.iter().filter(|s| **s == Step::Publish).count()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::RedisOp;

    /// A batch of `(key, entry, payload)` messages.
    pub(crate) fn batch(messages: &[(&str, &str, Option<&str>)]) -> RedisBatch {
        let mut batch = RedisBatch::default();
        for (key, entry, payload) in messages {
            let mut put = |text: &str| {
                let start = batch.data.len();
                batch.data.extend_from_slice(text.as_bytes());
                start..batch.data.len()
            };
            let key = put(key);
            let entry = put(entry);
            let publish = payload.map(&mut put);
            batch.ops.push(RedisOp {
                key,
                entry,
                publish,
                list_cap: 10,
            });
        }
        batch
    }

    fn marker() -> Marker {
        Marker {
            key: "cowlogd:applied:t".into(),
            ttl_s: 60,
        }
    }

    fn commands(plan: &Plan<'_>) -> Vec<String> {
        plan.pipeline
            .cmd_iter()
            .map(|cmd| {
                cmd.args_iter()
                    .map(|arg| match arg {
                        redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                        _ => "<cursor>".into(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn windows_cover_every_message_once_in_order_within_both_caps() {
        let pending = Pending::new(
            vec![
                batch(&[("A", "a1", None), ("A", "a2", None)]),
                RedisBatch::default(),
                batch(&[("B", "b1", None), ("A", "a3", None), ("B", "b2", None)]),
            ],
            100,
        );
        let mut pending = pending;
        let mut seen = Vec::new();
        // 2 messages, or 6 bytes (key + entry = 3 bytes each): both cap at 2.
        while let Some(window) = pending.window(2, 6) {
            assert!(window.messages <= 2);
            seen.push((window.first_seq, window.last_seq));
            pending.advance(&window);
        }
        assert_eq!(seen, [(100, 101), (102, 103), (104, 104)]);
        assert_eq!(pending.remaining(), 0);
        assert_eq!(pending.next_seq(), 105);
    }

    #[test]
    fn a_window_through_a_marker_ends_at_it() {
        let pending = Pending::new(
            vec![batch(&[
                ("A", "1", None),
                ("A", "2", None),
                ("A", "3", None),
            ])],
            10,
        );
        let window = pending.window_through(100, 1 << 20, 11).unwrap();
        assert_eq!((window.first_seq, window.last_seq), (10, 11));
        assert_eq!(pending.window_through(100, 1 << 20, 9), None);
    }

    #[test]
    fn a_message_larger_than_the_byte_cap_still_makes_a_window_of_one() {
        let pending = Pending::new(vec![batch(&[("K", "large entry", None)])], 1);
        let window = pending.window(100, 3).unwrap();
        assert_eq!(
            (window.messages, window.first_seq, window.last_seq),
            (1, 1, 1)
        );
    }

    #[test]
    fn plan_sets_the_marker_then_pushes_per_key_then_publishes_in_arrival_order() {
        let pending = Pending::new(
            vec![
                batch(&[("P", "p1", Some("m1")), ("D", "d1", Some("m2"))]),
                batch(&[("P", "p2", None), ("D", "d2", Some("m3"))]),
            ],
            7,
        );
        let window = pending.window(10, 1 << 20).unwrap();
        let plan = Plan::new(&pending, &window, &Exclusions::default(), "CH", &marker());
        assert_eq!(
            commands(&plan),
            [
                "SET cowlogd:applied:t 10 EX 60",
                "LPUSH P p1 p2",
                "LTRIM P 0 9",
                "LPUSH D d1 d2",
                "LTRIM D 0 9",
                "PUBLISH CH m1",
                "PUBLISH CH m2",
                "PUBLISH CH m3",
            ]
        );
        assert_eq!(plan.steps.len(), 8);
        assert_eq!(plan.steps[3], Step::Push { key: 1, entries: 2 });
        assert_eq!((plan.entries(), plan.publishes()), (4, 3));
    }

    #[test]
    fn one_list_reached_with_two_caps_is_trimmed_to_the_larger() {
        let mut first = batch(&[("K", "e1", None)]);
        first.ops[0].list_cap = 50;
        let mut second = batch(&[("K", "e2", None)]);
        second.ops[0].list_cap = 5;
        let pending = Pending::new(vec![second, first], 1);
        let window = pending.window(10, 1 << 20).unwrap();
        let plan = Plan::new(&pending, &window, &Exclusions::default(), "CH", &marker());
        assert_eq!(commands(&plan)[2], "LTRIM K 0 49");
    }

    #[test]
    fn excluded_keys_and_publishing_are_left_out_and_counted() {
        let pending = Pending::new(
            vec![batch(&[
                ("P", "p1", Some("m1")),
                ("D", "d1", Some("m2")),
                ("P", "p2", Some("m3")),
            ])],
            1,
        );
        let window = pending.window(10, 1 << 20).unwrap();
        let mut exclusions = Exclusions::default();
        exclusions.exclude_key(b"P");
        let plan = Plan::new(&pending, &window, &exclusions, "CH", &marker());
        assert_eq!(
            commands(&plan),
            [
                "SET cowlogd:applied:t 3 EX 60",
                "LPUSH D d1",
                "LTRIM D 0 9",
                "PUBLISH CH m2"
            ]
        );
        assert_eq!(plan.excluded, 2);
        exclusions.exclude_publish();
        let plan = Plan::new(&pending, &window, &exclusions, "CH", &marker());
        assert_eq!(plan.publishes(), 0);
    }
}
