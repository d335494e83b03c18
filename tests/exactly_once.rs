//! The Redis path is exactly once: stalls past the response timeout,
//! oversized writes, temporary refusals, read-only replicas, shutdown with
//! Redis frozen, and recovery after an outage.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// Waits until `key` holds `n` entries, lets late writes land, and returns
/// the message indices, checking that no entry is there twice.
fn exactly(redis: &RedisServer, key: &str, n: usize) -> BTreeSet<usize> {
    redis.wait_list(key, n);
    std::thread::sleep(Duration::from_millis(500));
    let list = redis.list(key);
    let indices = message_indices(&list);
    assert_eq!(list.len(), n, "{} entries for {n} lines", list.len());
    assert_eq!(indices.len(), n, "duplicates in {key}");
    indices
}

fn debug_sleep(redis: &RedisServer, seconds: f64) {
    redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(seconds)
        .query::<()>(&mut redis.client())
        .unwrap();
}

#[test]
fn a_retry_after_a_response_timeout_is_never_applied_twice() {
    let redis = RedisServer::start();
    let channel = Subscriber::start(&redis, "F2B_CHANNEL");
    let daemon = Daemon::start(
        &redis.url(),
        "[redis]\nresponse_timeout_ms = 500\nconnect_timeout_ms = 500\nlist_cap = 200000\n",
    );
    let total = 100_000;
    let port = daemon.ports.syslog;
    let sender = std::thread::spawn(move || {
        let mut stream =
            std::io::BufWriter::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
        let started = Instant::now();
        for n in 0..total {
            stream.write_all(&postfix_frame(n)).unwrap();
            if n % 500 == 499 {
                // ~25,000 lines a second: the burst spans the four stalls.
                stream.flush().unwrap();
                let due = started + Duration::from_micros(40 * (n as u64 + 1));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        }
        stream.flush().unwrap();
    });
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        debug_sleep(&redis, 0.8);
    }
    sender.join().unwrap();
    let indices = exactly(&redis, "POSTFIX_MAILLOG", total);
    assert_eq!(indices, (0..total).collect());
    let payloads = channel.wait(total);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(channel.count(), total, "channel messages for {total} lines");
    let distinct: BTreeSet<&Vec<u8>> = payloads.iter().collect();
    assert_eq!(distinct.len(), total);
    assert!(
        daemon.metric("cowlogd_redis_errors_total{kind=\"timeout\"}") >= 1.0,
        "the stalls never passed the response timeout"
    );
    assert_eq!(
        daemon.metric("cowlogd_redis_entries_written_total"),
        total as f64
    );
    assert_eq!(daemon.metric("cowlogd_redis_published_total"), total as f64);
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
}

#[test]
fn what_a_lost_transaction_applied_beyond_the_split_window_is_not_written_again() {
    // A write goes out, Redis stalls long enough for two timeouts, the
    // window is split, and the stalled transaction runs when Redis wakes:
    // the marker then covers the rest of the original window too.
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[redis]\nresponse_timeout_ms = 200\nconnect_timeout_ms = 200\nlist_cap = 100000\n",
    );
    // Small enough (~10 KB) for Redis to read the stalled transaction in
    // one go when it wakes, before the retry's fence.
    let total = 60;
    let frames: Vec<u8> = (0..total).flat_map(postfix_frame).collect();
    std::thread::scope(|scope| {
        scope.spawn(|| debug_sleep(&redis, 1.5));
        std::thread::sleep(Duration::from_millis(50));
        let mut stream = daemon.tcp(daemon.ports.syslog);
        stream.write_all(&frames).unwrap();
    });
    let indices = exactly(&redis, "POSTFIX_MAILLOG", total);
    assert_eq!(indices, (0..total).collect());
    assert!(
        daemon.metric("cowlogd_redis_window_splits_total") >= 1.0,
        "no split happened"
    );
    assert_eq!(
        daemon.metric("cowlogd_redis_entries_written_total"),
        total as f64
    );
}

#[test]
fn a_write_too_large_for_the_timeout_is_split_until_it_fits() {
    let redis = RedisServer::start();
    // No byte cap to help: only splitting can get this through a 40 ms
    // response timeout.
    let daemon = Daemon::start(
        &redis.url(),
        "[redis]\nresponse_timeout_ms = 40\nbatch_max_bytes = 100000000\nlist_cap = 20000\n",
    );
    redis.signal("STOP");
    let padding = "x".repeat(4_000);
    let mut stream = std::io::BufWriter::new(daemon.tcp(daemon.ports.syslog));
    let total = 10_000;
    for n in 0..total {
        let line = format!(
            "<30>Nov 24 13:49:59 {POSTFIX}[4840]: {} {padding} msg {n}\n",
            postfix_line(n).rsplit_once(" msg ").unwrap().0
        );
        stream.write_all(line.as_bytes()).unwrap();
    }
    stream.flush().unwrap();
    daemon.wait_received("syslog_tcp", total);
    redis.signal("CONT");
    let indices = exactly(&redis, "POSTFIX_MAILLOG", total);
    assert_eq!(indices, (0..total).collect());
    assert!(daemon.metric("cowlogd_redis_window_splits_total") >= 1.0);
    assert_eq!(
        daemon.metric("cowlogd_redis_entries_written_total"),
        total as f64
    );
}

#[test]
fn lines_sent_while_redis_loads_its_dump_reach_the_list_and_the_channel_once() {
    // ~5 s of loading: 30,000 keys at 50 µs (and then some) each.
    let mut redis = RedisServer::start_with(&[
        "--key-load-delay",
        "50",
        // Answer clients while loading, as a large real dump does.
        "--loading-process-events-interval-bytes",
        "1024",
    ]);
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(30_000)
        .query::<()>(&mut redis.client())
        .unwrap();
    let daemon = Daemon::start(&redis.url(), "");
    redis.shutdown_saving();
    redis.restart();
    let loading = || redis.raw("INFO persistence").contains("loading:1");
    assert!(loading(), "the dump loaded too fast for this test");
    let channel = Subscriber::start_raw(&redis, "F2B_CHANNEL");
    let mut stream = daemon.tcp(daemon.ports.syslog);
    for n in 0..20 {
        stream.write_all(&postfix_frame(n)).unwrap();
    }
    stream.flush().unwrap();
    wait_for("LOADING refusals", || {
        (daemon.metric("cowlogd_redis_errors_total{kind=\"loading\"}") >= 1.0).then_some(())
    });
    assert!(loading());
    assert_eq!(daemon.http_get("/ready").0, 503);
    assert_eq!(channel.count(), 0, "published while the lists refused");
    let indices = exactly(&redis, "POSTFIX_MAILLOG", 20);
    assert_eq!(indices, (0..20).collect());
    assert_eq!(channel.wait(20).len(), 20);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(channel.count(), 20);
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
}

#[test]
fn a_read_only_replica_is_not_ready_and_its_lines_arrive_once_when_promoted() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let channel = Subscriber::start(&replica, "F2B_CHANNEL");
    let daemon = Daemon::start(&replica.url(), "");
    // PING works on a replica; /ready must still say no.
    let (status, body) = wait_for("/ready to refuse", || {
        let (status, body) = daemon.http_get("/ready");
        (status == 503 && body.contains("read only replica")).then_some((status, body))
    });
    assert_eq!(status, 503, "{body}");
    assert_eq!(daemon.metric("cowlogd_redis_up"), 0.0);
    let mut stream = daemon.tcp(daemon.ports.syslog);
    for n in 0..5 {
        stream.write_all(&postfix_frame(n)).unwrap();
    }
    wait_for("READONLY refusals", || {
        (daemon.metric("cowlogd_redis_errors_total{kind=\"readonly\"}") >= 2.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(channel.count(), 0, "published lines the lists refused");
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut replica.client())
        .unwrap();
    let indices = exactly(&replica, "POSTFIX_MAILLOG", 5);
    assert_eq!(indices, (0..5).collect());
    assert_eq!(channel.wait(5).len(), 5);
    wait_for("ready after promotion", || {
        (daemon.http_get("/ready").0 == 200).then_some(())
    });
    assert_eq!(daemon.metric("cowlogd_redis_up"), 1.0);
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
}

#[test]
fn sigterm_with_redis_frozen_exits_within_the_flush_bound_and_counts_what_it_abandons() {
    let redis = RedisServer::start();
    let mut daemon = Daemon::start(&redis.url(), "");
    // One line stored first: the writer's connection is set up, so the
    // freeze holds a transaction, not the set-up.
    let mut stream = daemon.tcp(daemon.ports.syslog);
    stream.write_all(&postfix_frame(1_000)).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    redis.signal("STOP");
    for n in 0..1_000 {
        stream.write_all(&postfix_frame(n)).unwrap();
    }
    daemon.wait_received("syslog_tcp", 1_001);
    let started = Instant::now();
    let status = daemon.terminate();
    let took = started.elapsed();
    redis.signal("CONT");
    assert!(status.success(), "{status:?}");
    // shutdown_flush_ms = 5000 by default; Docker kills at 10 s.
    assert!(took < Duration::from_secs(7), "exit took {took:?}");
    let log = daemon.log();
    let count = |what: &str| {
        log.lines()
            .filter(|l| l.contains(what))
            .filter_map(|l| l.rsplit_once("messages=")?.1.parse::<usize>().ok())
            .sum::<usize>()
    };
    // The transaction out when Redis froze is not counted lost: once Redis
    // runs again it applies all of it (if all of it reached its socket) or
    // none, and nothing else.
    let unknown = count("Redis may have applied it");
    assert!(unknown > 0, "{log}");
    assert_eq!(unknown + count("; dropped messages="), 1_000, "{log}");
    std::thread::sleep(Duration::from_millis(500));
    let stored = redis.llen("POSTFIX_MAILLOG") - 1;
    assert!(
        stored == 0 || stored == unknown,
        "{stored} stored, {unknown} unknown"
    );
}

#[test]
fn writing_resumes_within_a_second_of_redis_answering_again() {
    let mut redis = RedisServer::start();
    // A back-off ceiling far above a second: while messages wait it must
    // not apply.
    let daemon = Daemon::start(&redis.url(), "[redis]\nreconnect_max_ms = 30000\n");
    redis.stop();
    let mut stream = daemon.tcp(daemon.ports.syslog);
    stream.write_all(&postfix_frame(1)).unwrap();
    std::thread::sleep(Duration::from_secs(14));
    redis.restart();
    let back = Instant::now();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    let took = back.elapsed();
    assert!(
        took < Duration::from_millis(1_500),
        "resumed {took:?} after Redis returned"
    );
}

#[test]
fn a_marker_that_is_no_sequence_number_stops_writing_counted_until_it_is_one_again() {
    // The fence reads the writer's marker to learn how far a lost
    // transaction got; garbage there must not be read as "nothing applied"
    // (that would write the window again).
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[redis]\nresponse_timeout_ms = 200\nconnect_timeout_ms = 200\nlist_cap = 1000\n",
    );
    let mut stream = daemon.tcp(daemon.ports.syslog);
    stream.write_all(&postfix_frame(0)).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    let mut client = redis.client();
    let markers: Vec<String> = redis::cmd("KEYS")
        .arg("cowlogd:applied:*")
        .query(&mut client)
        .unwrap();
    assert_eq!(markers.len(), 1, "{markers:?}");
    let marker = &markers[0];
    let set = |client: &mut redis::Connection, value: &str| {
        redis::cmd("SET")
            .arg(marker)
            .arg(value)
            .query::<()>(client)
            .unwrap();
    };
    set(&mut client, "garbage");
    // Writes wait while paused: the next transaction times out, unapplied,
    // and the retry's fence reads the marker (reads are not paused).
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query::<()>(&mut client)
        .unwrap();
    stream.write_all(&postfix_frame(1)).unwrap();
    wait_for("the unreadable marker counted", || {
        (daemon.metric("cowlogd_redis_errors_total{kind=\"marker_unreadable\"}") >= 1.0)
            .then_some(())
    });
    // What Redis applied: line 0 (sequence 1). Once the marker says so
    // again (this SET waits for the pause to end), line 1 goes out once.
    set(&mut client, "1");
    let indices = exactly(&redis, "POSTFIX_MAILLOG", 2);
    assert_eq!(indices, (0..2).collect());
}

/// Stops Redis while a transaction is out, long enough for the writer to
/// give up on its reply and retry, then lets it go on.
fn hold_a_transaction_past_its_timeout(redis: &RedisServer, daemon: &Daemon) {
    // A first line stored first: the writer's connection is set up (its
    // identity and the server's eviction policy read), so that what the
    // freeze holds is the second line's transaction, not the set-up.
    let mut stream = daemon.tcp(daemon.ports.syslog);
    stream.write_all(&postfix_frame(0)).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    redis.signal("STOP");
    stream.write_all(&postfix_frame(1)).unwrap();
    daemon.wait_received("syslog_tcp", 2);
    std::thread::sleep(Duration::from_millis(600));
    redis.signal("CONT");
    redis.wait_list("POSTFIX_MAILLOG", 2);
}

#[test]
fn a_retry_redis_cannot_fence_is_counted_and_the_reason_logged_once() {
    let redis = RedisServer::start_with(&["--rename-command", "CLIENT", ""]);
    let daemon = Daemon::start(&redis.url(), "[redis]\nresponse_timeout_ms = 200\n");
    hold_a_transaction_past_its_timeout(&redis, &daemon);
    wait_for("the unfenced retry counted", || {
        (daemon.metric("cowlogd_redis_unfenced_retries_total") >= 1.0).then_some(())
    });
    let log = daemon.log();
    assert_eq!(
        log.matches("Redis connections cannot be fenced").count(),
        1,
        "{log}"
    );
    assert!(log.contains("CLIENT INFO refused"), "{log}");
}

#[test]
fn a_fenced_retry_is_not_counted_as_unfenced() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[redis]\nresponse_timeout_ms = 200\n");
    hold_a_transaction_past_its_timeout(&redis, &daemon);
    assert_eq!(exactly(&redis, "POSTFIX_MAILLOG", 2), [0, 1].into());
    assert!(daemon.metric("cowlogd_redis_errors_total{kind=\"timeout\"}") >= 1.0);
    assert_eq!(daemon.metric("cowlogd_redis_unfenced_retries_total"), 0.0);
}

#[test]
fn an_evicting_maxmemory_policy_is_reported_at_connect() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let daemon = Daemon::start(&redis.url(), "");
    wait_for("the policy judged", || {
        (daemon.metric("cowlogd_redis_marker_evictable") == 1.0).then_some(())
    });
    assert!(daemon.log().contains("may evict the writer's marker"));
    let safe = RedisServer::start();
    let daemon = Daemon::start(&safe.url(), "");
    let mut sender = daemon.tcp(daemon.ports.syslog);
    sender.write_all(&postfix_frame(0)).unwrap();
    safe.wait_list("POSTFIX_MAILLOG", 1);
    assert_eq!(daemon.metric("cowlogd_redis_marker_evictable"), 0.0);
}

#[test]
fn a_marker_gone_from_redis_is_counted_when_a_retry_finds_it_missing() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[redis]\nresponse_timeout_ms = 200\n");
    let mut stream = daemon.tcp(daemon.ports.syslog);
    stream.write_all(&postfix_frame(0)).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("cowlogd:applied:*")
        .query(&mut redis.client())
        .unwrap();
    let [marker] = keys.as_slice() else {
        panic!("one marker expected: {keys:?}")
    };
    // A transaction goes out while Redis is stopped; behind it, a DEL of
    // the marker (as an eviction would), run before the retry reads it.
    redis.signal("STOP");
    stream.write_all(&postfix_frame(1)).unwrap();
    daemon.wait_received("syslog_tcp", 2);
    std::thread::sleep(Duration::from_millis(50));
    let mut evictor = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    write!(evictor, "DEL {marker}\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    redis.signal("CONT");
    wait_for("the lost marker counted", || {
        (daemon.metric("cowlogd_redis_marker_lost_total") == 1.0).then_some(())
    });
    assert!(daemon.log().contains("the writer's marker is gone"));
}
