//! The pipeline without sockets: records in, batches out of the queues.

use std::sync::Arc;

use cowlogd_parsers::encode::mailcow::ChannelSanitize;
use cowlogd_parsers::normalize::normalize_syslog;
use cowlogd_parsers::syslog::parse_syslog;

use super::*;
use crate::config::Config;
use crate::metrics::DropReason;

/// A pipeline on `config`'s routes and emit settings, with its queues:
/// for the tests of the stages around it too.
pub(crate) struct Harness {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) redis: Arc<BatchQueue<RedisBatch>>,
    pub(crate) forward: Arc<BatchQueue<GelfBatch>>,
}

pub(crate) fn harness(config: &str) -> Harness {
    let settings = Config::parse(config).unwrap().validate().unwrap();
    let redis = Arc::new(BatchQueue::new(
        settings.redis.queue_messages,
        settings.redis.queue_bytes,
        (metrics::Gauge::noop(), metrics::Gauge::noop()),
        DropReason::QueueFull,
    ));
    let forward = Arc::new(BatchQueue::new(
        100,
        1 << 20,
        (metrics::Gauge::noop(), metrics::Gauge::noop()),
        DropReason::ForwardQueueFull,
    ));
    let filter = ForwardFilter {
        routes: vec![true; settings.router.routes().len()],
        unrouted: true,
    };
    let pipeline = Arc::new(Pipeline::new(
        settings.router.clone(),
        settings.emit.clone(),
        Reading::default(),
        crate::queue::redis::RedisQueue::Memory(redis.clone()),
        Some(Forwarding::new(forward.clone(), filter)),
    ));
    Harness {
        pipeline,
        redis,
        forward,
    }
}

/// A postfix line as the mailcow postfix container's stdout carries it.
fn postfix(cycle: &mut ReadCycle<'_>, text: &str) {
    let line = format!(
        "<22>1 2026-11-24T13:49:59Z mail postfix-mailcow 1 - - Nov 24 13:49:59 mail postfix/smtpd[7]: {text}"
    );
    let message = parse_syslog(line.as_bytes(), cycle.time());
    let mut record = normalize_syslog(&message, cycle.time(), cycle.now());
    record.container = Some(b"mailcowdockerized-postfix-mailcow-1");
    cycle.record(&record);
}

/// Messages forwarded; the queue is emptied.
fn forwarded(queue: &BatchQueue<GelfBatch>) -> usize {
    queue
        .take(usize::MAX, usize::MAX)
        .iter()
        .map(|b| b.messages.len())
        .sum()
}

/// Every op queued, as (key, entry, payload) text; the queue is emptied.
pub(crate) fn queued(queue: &BatchQueue<RedisBatch>) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for batch in queue.take(usize::MAX, usize::MAX) {
        for op in &batch.ops {
            let text =
                |r: &std::ops::Range<usize>| String::from_utf8_lossy(batch.slice(r)).into_owned();
            out.push((
                text(&op.key),
                text(&op.entry),
                op.publish.as_ref().map(text),
            ));
        }
    }
    out
}

#[tokio::test]
async fn a_cycle_queues_its_records_once_it_is_finished() {
    let h = harness("");
    let mut processor = Processor::new(Input::SyslogTcp, h.pipeline.clone());
    let mut cycle = processor.begin();
    postfix(&mut cycle, "connect from unknown[1.2.3.4]");
    postfix(&mut cycle, "disconnect from unknown[1.2.3.4]");
    assert!(queued(&h.redis).is_empty(), "nothing queued mid-cycle");
    assert!(cycle.finish(Flush::DropOldest).await);
    let ops = queued(&h.redis);
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[0].0, "POSTFIX_MAILLOG");
    assert!(ops[0].1.contains("connect from unknown[1.2.3.4]"));
    assert_eq!(
        ops[1].2.as_deref(),
        Some("disconnect from unknown[1.2.3.4]")
    );
    // Forwarding got both too.
    let forwarded = forwarded(&h.forward);
    assert_eq!(forwarded, 2);
}

#[tokio::test]
async fn a_cycle_marks_its_connection_active_only_when_it_took_in_a_record() {
    let h = harness("");
    let mut processor = Processor::new(Input::SyslogTcp, h.pipeline.clone());
    let activity = crate::admission::Activity::idle();
    processor.set_activity(activity.clone());
    let cycle = processor.begin();
    cycle.count_bytes(1);
    assert!(cycle.finish(Flush::DropOldest).await);
    assert!(!activity.touched(), "bytes alone are not activity");
    let mut cycle = processor.begin();
    postfix(&mut cycle, "connect from unknown[1.2.3.4]");
    assert!(cycle.finish(Flush::DropOldest).await);
    assert!(activity.touched());
}

#[tokio::test]
async fn a_cycle_dropped_unfinished_still_queues_what_it_holds() {
    let h = harness("");
    let mut processor = Processor::new(Input::SyslogUdp, h.pipeline.clone());
    {
        let mut cycle = processor.begin();
        postfix(&mut cycle, "lost if the cycle were forgotten");
    }
    assert_eq!(queued(&h.redis).len(), 1);
}

#[tokio::test]
async fn until_applied_gives_up_without_queuing_or_forwarding_when_cancelled() {
    let h = harness("[redis]\nqueue_messages = 2\n");
    let cancel = CancellationToken::new();
    let mut processor = Processor::new(Input::FluentTcp, h.pipeline.clone());
    let mut first = processor.begin();
    postfix(&mut first, "fills the queue");
    postfix(&mut first, "to the brim");
    first.finish(Flush::DropOldest).await;
    h.forward.take(usize::MAX, usize::MAX);
    let mut second = processor.begin();
    postfix(&mut second, "waits for room");
    cancel.cancel();
    assert!(!second.finish(Flush::UntilKept(&cancel, &[])).await);
    assert_eq!(queued(&h.redis).len(), 2, "what was queued before stays");
    assert!(
        h.forward.take(usize::MAX, usize::MAX).is_empty(),
        "not forwarded: the sender resends"
    );
}

#[tokio::test]
async fn a_long_channel_payload_is_cut_at_a_character_and_the_entry_kept_whole() {
    let h = harness("[redis]\nchannel_max_bytes = 64\n");
    let mut processor = Processor::new(Input::SyslogTcp, h.pipeline.clone());
    let mut cycle = processor.begin();
    let text = "\u{e9}".repeat(100);
    postfix(&mut cycle, &text);
    cycle.finish(Flush::DropOldest).await;
    let ops = queued(&h.redis);
    let payload = ops[0].2.as_deref().unwrap();
    assert!(
        payload.len() <= 64 && payload.len() >= 61,
        "{}",
        payload.len()
    );
    assert!(ops[0].1.contains(&text), "the list entry is whole");
}

#[tokio::test]
async fn an_over_long_message_is_cut_and_marked() {
    let h = harness("[limits]\nmax_message_bytes = 100\n");
    let mut processor = Processor::new(Input::SyslogTcp, h.pipeline.clone());
    let mut cycle = processor.begin();
    postfix(&mut cycle, &"x".repeat(500));
    cycle.finish(Flush::DropOldest).await;
    let ops = queued(&h.redis);
    assert!(ops[0].1.contains("...[truncated by cowlogd]"));
    assert!(!ops[0].1.contains(&"x".repeat(101)));
}

#[test]
fn the_emit_settings_follow_the_config() {
    let settings = Config::parse("[redis]\nchannel_sanitize = \"control-only\"\nurl = \"\"\n")
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(settings.emit.channel_sanitize, ChannelSanitize::ControlOnly);
    assert!(settings.emit.redis_off);
}

#[tokio::test]
async fn a_reload_applies_from_each_processors_next_cycle_and_keeps_redis_and_forwarding_as_started()
 {
    let h = harness("");
    let mut processor = Processor::new(Input::SyslogTcp, h.pipeline.clone());
    let mut cycle = processor.begin();
    postfix(&mut cycle, "before the reload");
    let new = Config::parse(
        "[redis]\nurl = \"\"\nchannel_max_bytes = 64\n\
         [[route]]\nname = \"all\"\ncontainer = []\nkey = \"ALL\"\npublish = true\n",
    )
    .unwrap()
    .validate()
    .unwrap();
    // Forwarding off in the new settings: the running forwarding filter
    // comes from the config the daemon started with.
    let filter = ForwardFilter {
        routes: vec![false],
        unrouted: false,
    };
    h.pipeline.reload(new.router, new.emit, Some(filter));
    postfix(&mut cycle, "same cycle: the routing it began with");
    assert!(cycle.finish(Flush::DropOldest).await);
    let mut cycle = processor.begin();
    postfix(&mut cycle, &format!("after the reload {}", "x".repeat(100)));
    assert!(cycle.finish(Flush::DropOldest).await);
    let ops = queued(&h.redis);
    let keys: Vec<&str> = ops.iter().map(|op| op.0.as_str()).collect();
    // Redis stays on (redis.url needs a restart), the new channel cap applies.
    assert_eq!(keys, ["POSTFIX_MAILLOG", "POSTFIX_MAILLOG", "ALL"]);
    let payload = ops[2].2.as_deref().unwrap_or_default();
    assert!(payload.starts_with("after the reload"), "{payload}");
    assert_eq!(payload.len(), 64);
    let forwarded = forwarded(&h.forward);
    assert_eq!(forwarded, 2, "the new filter forwards nothing of route all");
}

/// A Fluent cycle holding one line, finished `UntilKept` in a task:
/// what its connection would learn.
fn finish_until_applied(
    pipeline: &Arc<Pipeline>,
    text: &'static str,
) -> tokio::task::JoinHandle<bool> {
    let pipeline = pipeline.clone();
    tokio::spawn(async move {
        let cancel = CancellationToken::new();
        let mut processor = Processor::new(Input::FluentTcp, pipeline);
        let mut cycle = processor.begin();
        postfix(&mut cycle, text);
        cycle.finish(Flush::UntilKept(&cancel, &[])).await
    })
}

#[tokio::test]
async fn until_applied_is_true_once_the_writer_tells_and_false_when_others_push_the_batch_out() {
    let h = harness("[redis]\nqueue_messages = 2\n");
    let acked = finish_until_applied(&h.pipeline, "acked only once applied");
    // The writer's part: take the batch, apply it, tell.
    let mut batches = loop {
        let batches = h.redis.take(usize::MAX, usize::MAX);
        if !batches.is_empty() {
            break batches;
        }
        tokio::task::yield_now().await;
    };
    assert!(!acked.is_finished(), "queued is not yet kept");
    batches[0].applied.take().unwrap().tell();
    assert!(acked.await.unwrap());

    let lost = finish_until_applied(&h.pipeline, "pushed out by a syslog burst");
    while h.redis.len_messages() == 0 {
        tokio::task::yield_now().await;
    }
    // A UDP burst fills the queue: the oldest, the Fluent line, goes.
    let mut processor = Processor::new(Input::SyslogUdp, h.pipeline.clone());
    let mut cycle = processor.begin();
    postfix(&mut cycle, "burst 1");
    postfix(&mut cycle, "burst 2");
    cycle.finish(Flush::DropOldest).await;
    assert!(!lost.await.unwrap(), "a line pushed out is not acked");
}
