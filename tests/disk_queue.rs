//! The disk queue (`[queue] dir`): what cowlogd took in survives SIGKILL
//! and SIGTERM with Redis down, is replayed in order at the next start,
//! and reaches Redis exactly once — also under kill -9 at random points of
//! a 100,000-line acked stream.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::fluent::{acked_event, read_ack};
use crate::support::{
    Daemon, RedisServer, free_port, message_indices, postfix_frame, postfix_line, wait_for,
};

/// cowlogd with the fluent input on a free port and the disk queue in
/// `queue`; `extra` is more TOML for `[queue]`.
fn queued_daemon(redis: &RedisServer, queue: &Path, extra: &str) -> (Daemon, u16) {
    let port = free_port();
    let daemon = Daemon::start(
        &redis.url(),
        &format!(
            "[inputs]\nfluent_tcp = \"127.0.0.1:{port}\"\n[redis]\nlist_cap = 200000\nshutdown_flush_ms = 1000\n[queue]\ndir = \"{}\"\n{extra}",
            queue.display()
        ),
    );
    (daemon, port)
}

/// Sends [`postfix_frame`] `n` for every `n` in `range` over syslog TCP.
fn send_syslog(daemon: &Daemon, range: std::ops::Range<usize>) {
    let mut stream = std::io::BufWriter::new(daemon.tcp(daemon.ports.syslog));
    for n in range {
        stream.write_all(&postfix_frame(n)).unwrap();
    }
    stream.flush().unwrap();
}

/// Sends [`postfix_line`] `n` as a Forward event with chunk id `c<n>` on a
/// new connection; the ack's chunk id.
fn send_acked(port: u16, n: usize) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&acked_event(&postfix_line(n), &format!("c{n}")))
        .unwrap();
    read_ack(&mut stream).unwrap()
}

fn assert_exactly(redis: &RedisServer, lines: usize) {
    let list = redis.wait_list("POSTFIX_MAILLOG", lines);
    let indices = message_indices(&list);
    assert_eq!(list.len(), lines, "entries stored twice");
    assert_eq!(indices, (0..lines).collect(), "lines missing");
}

#[test]
fn sigkill_with_redis_down_loses_nothing_taken_in_and_the_next_start_stores_it_once_in_order() {
    let mut redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let (mut daemon, _) = queued_daemon(&redis, queue.path(), "");
    redis.stop();
    send_syslog(&daemon, 0..20_000);
    wait_for("20,000 lines on disk", || {
        (daemon.metric("cowlogd_queue_disk_records") >= 20_000.0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    daemon.kill();
    redis.restart();
    daemon.start_again();
    assert_exactly(&redis, 20_000);
    assert_eq!(
        daemon.metric("cowlogd_queue_replayed_records_total"),
        20_000.0
    );
    // LPUSH puts the newest first: replayed in the order taken in.
    let list = redis.list("POSTFIX_MAILLOG");
    let order: Vec<usize> = list
        .iter()
        .rev()
        .filter_map(|e| e.rsplit(" msg ").next()?.split('"').next()?.parse().ok())
        .collect();
    assert_eq!(order, (0..20_000).collect::<Vec<_>>());
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
}

#[test]
fn sigterm_with_redis_down_exits_within_the_flush_bound_dropping_nothing() {
    let mut redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let (mut daemon, _) = queued_daemon(&redis, queue.path(), "");
    redis.stop();
    send_syslog(&daemon, 0..2_000);
    wait_for("2,000 lines on disk", || {
        (daemon.metric("cowlogd_queue_disk_records") >= 2_000.0).then_some(())
    });
    let started = Instant::now();
    assert!(daemon.terminate().success());
    // Inputs stop (up to 2 s), then the 1 s flush bound.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let log = daemon.log();
    assert!(log.contains("they stay in the disk queue"), "{log}");
    assert!(!log.contains("dropped"), "{log}");
    redis.restart();
    daemon.start_again();
    assert_exactly(&redis, 2_000);
}

#[test]
fn a_fluent_ack_means_on_disk_and_a_resend_after_a_crash_is_recognised_from_it() {
    let mut redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let (mut daemon, port) = queued_daemon(&redis, queue.path(), "fsync = \"always\"\n");
    redis.stop();
    // Acked with Redis down: it is on disk (in memory-only mode no ack
    // comes until Redis applied it).
    assert_eq!(send_acked(port, 0), b"c0");
    // fsync = "always": synced before the ack.
    assert!(daemon.metric("cowlogd_queue_fsync_duration_seconds_count") >= 1.0);
    daemon.kill();
    daemon.start_again();
    // Sent again (as Docker's driver does when a connection breaks before
    // its ack arrives): recognised from the disk, acked, not stored again.
    assert_eq!(send_acked(port, 0), b"c0");
    assert_eq!(daemon.metric("cowlogd_fluent_resent_total"), 1.0);
    redis.restart();
    assert_exactly(&redis, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 1);
}

/// The segment files in `queue`, oldest first.
fn segments(queue: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(queue)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    found.sort();
    found
}

#[test]
fn damage_found_at_start_is_counted_and_the_rest_is_stored() {
    let mut redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let (mut daemon, _) = queued_daemon(&redis, queue.path(), "");
    redis.stop();
    send_syslog(&daemon, 0..10);
    wait_for("10 lines on disk", || {
        (daemon.metric("cowlogd_queue_disk_records") >= 10.0).then_some(())
    });
    send_syslog(&daemon, 10..20);
    wait_for("20 lines on disk", || {
        (daemon.metric("cowlogd_queue_disk_records") >= 20.0).then_some(())
    });
    daemon.kill();
    let segment = segments(queue.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    // The first record (lines 0..10) damaged, a torn record after the last.
    bytes[16 + 40] ^= 0xff;
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&segment, &bytes).unwrap();
    // And a file that is not a segment at all.
    let stray = queue.path().join("00000000000000000000.seg");
    std::fs::write(&stray, b"not a segment").unwrap();
    redis.restart();
    daemon.start_again();
    let list = redis.wait_list("POSTFIX_MAILLOG", 10);
    assert_eq!(message_indices(&list), (10..20).collect());
    assert_eq!(daemon.metric("cowlogd_queue_torn_records_total"), 1.0);
    // The damaged record and the stray file.
    assert_eq!(daemon.metric("cowlogd_queue_corrupt_records_total"), 2.0);
    assert!(queue.path().join("00000000000000000000.corrupt").is_file());
    assert!(!stray.exists());
}

#[test]
fn a_second_cowlogd_on_the_same_queue_directory_exits_naming_the_holder() {
    let redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let (first, _) = queued_daemon(&redis, queue.path(), "");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("second.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"{}\"\n[inputs]\ngelf_udp = \"\"\ngelf_tcp = \"\"\nsyslog_udp = \"\"\nsyslog_tcp = \"\"\n[metrics]\nlisten = \"\"\n[queue]\ndir = \"{}\"\n",
            redis.url(),
            queue.path().display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cowlogd"))
        .args(["--config", config.to_str().unwrap()])
        .env_remove("COWLOGD_REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("in use by another cowlogd (pid {})", first.pid())),
        "{stderr}"
    );
}

#[test]
fn a_full_disk_drops_the_newest_lines_and_keeps_what_it_holds() {
    let mut redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let (daemon, _) = queued_daemon(
        &redis,
        queue.path(),
        "max_disk_bytes = 400000\nsegment_bytes = 100000\n",
    );
    redis.stop();
    // About 330 bytes a line on disk: 400 kB hold about 1,200.
    send_syslog(&daemon, 0..3_000);
    wait_for("the newest lines dropped as disk_full", || {
        let dropped =
            daemon.metric("cowlogd_dropped_messages_total{stage=\"queue\",reason=\"disk_full\"}");
        let on_disk = daemon.metric("cowlogd_queue_disk_records");
        (dropped > 0.0 && dropped + on_disk >= 3_000.0).then_some((dropped, on_disk))
    });
    let on_disk = daemon.metric("cowlogd_queue_disk_records") as usize;
    assert!(daemon.metric("cowlogd_queue_disk_bytes") <= 400_000.0);
    redis.restart();
    // Nothing on disk was evicted by newer traffic: the oldest lines are
    // all kept; what was refused went whole, read cycle by read cycle (a
    // later, smaller cycle may still have fitted).
    let list = redis.wait_list("POSTFIX_MAILLOG", on_disk);
    let kept = message_indices(&list);
    assert_eq!((list.len(), kept.len()), (on_disk, on_disk));
    let first_gap = (0..3_000).find(|n| !kept.contains(n)).unwrap_or(3_000);
    assert!(first_gap >= 1_000, "line {first_gap} lost among the oldest");
}

/// One Forward connection sending `lines` events in windows, each event
/// acked; a window whose acks did not all come (the daemon was killed) is
/// sent again, whole, on a new connection, as Docker's driver does.
fn send_acked_through_kills(port: u16, lines: usize) -> usize {
    const WINDOW: usize = 250;
    let mut resent_windows = 0;
    let mut stream: Option<TcpStream> = None;
    let mut next = 0;
    while next < lines {
        let end = (next + WINDOW).min(lines);
        let mut events = Vec::new();
        for n in next..end {
            events.extend(acked_event(&postfix_line(n), &format!("k{n}")));
        }
        let attempt = |stream: &mut TcpStream| -> std::io::Result<()> {
            stream.write_all(&events)?;
            for _ in next..end {
                read_ack(stream)?;
            }
            Ok(())
        };
        let connection = match stream.take() {
            Some(connection) => Some(connection),
            None => TcpStream::connect(("127.0.0.1", port)).ok().inspect(|s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            }),
        };
        match connection {
            Some(mut connection) => match attempt(&mut connection) {
                Ok(()) => {
                    stream = Some(connection);
                    next = end;
                }
                Err(_) => resent_windows += 1,
            },
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    resent_windows
}

#[test]
fn kill_9_at_random_points_of_a_100k_line_acked_stream_stores_every_line_exactly_once() {
    const LINES: usize = 100_000;
    const KILLS: usize = 8;
    let redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let (mut daemon, port) = queued_daemon(&redis, queue.path(), "segment_bytes = 1000000\n");
    let sender = std::thread::spawn(move || send_acked_through_kills(port, LINES));
    // A small generator of random pauses: the kill points.
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut random_ms = |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let mut kills = 0;
    while kills < KILLS && !sender.is_finished() {
        std::thread::sleep(Duration::from_millis(100 + random_ms(600)));
        daemon.kill();
        kills += 1;
        std::thread::sleep(Duration::from_millis(random_ms(200)));
        daemon.start_again();
    }
    let resent = sender.join().unwrap();
    assert!(
        kills >= 3,
        "the stream ended after {kills} kills: too fast to test"
    );
    assert!(resent > 0, "no kill cut a window");
    assert_exactly(&redis, LINES);
    // Nothing more arrives later (a replay written twice would).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), LINES);
}

#[test]
fn sigterm_before_redis_ever_answered_says_the_queue_stays_on_disk() {
    let mut redis = RedisServer::start();
    redis.stop();
    let queue = tempfile::tempdir().unwrap();
    // Started with Redis down: the sink is still waiting to read its marker.
    let (mut daemon, _) = queued_daemon(&redis, queue.path(), "");
    send_syslog(&daemon, 0..100);
    wait_for("100 lines on disk", || {
        (daemon.metric("cowlogd_queue_disk_records") >= 100.0).then_some(())
    });
    assert!(daemon.terminate().success());
    let log = daemon.log();
    assert!(log.contains("cannot read the writer's marker yet"), "{log}");
    assert!(log.contains("they stay in the disk queue"), "{log}");
    redis.restart();
    daemon.start_again();
    assert_exactly(&redis, 100);
}
