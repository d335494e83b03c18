use std::io::Write;

use crate::support::*;

#[test]
fn several_messages_per_connection_and_a_partial_last_frame() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let mut stream = daemon.tcp(daemon.ports.gelf);
    let mut bytes = Vec::new();
    for n in 0..5 {
        bytes.extend_from_slice(&docker_gelf(POSTFIX, &postfix_line(n)));
        bytes.push(0);
    }
    // The last frame has no NUL: the sender closed right after it.
    bytes.extend_from_slice(&docker_gelf(POSTFIX, &postfix_line(5)));
    for piece in bytes.chunks(97) {
        stream.write_all(piece).unwrap();
    }
    drop(stream);
    let list = redis.wait_list("POSTFIX_MAILLOG", 6);
    for (i, entry) in list.iter().enumerate() {
        assert!(entry.ends_with(&format!("msg {}\"}}\n", 5 - i)), "{entry}");
    }
}

#[test]
fn ten_thousand_messages_over_tcp_arrive_without_loss() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    send_postfix_gelf_tcp(&daemon, 0..10_000);
    let list = redis.wait_list("POSTFIX_MAILLOG", 10_000);
    assert_eq!(list.len(), 10_000);
    // Newest first, nothing missing, nothing twice.
    for (i, entry) in list.iter().enumerate() {
        assert!(
            entry.ends_with(&format!(" msg {}\"}}\n", 9_999 - i)),
            "index {i}: {entry}"
        );
    }
    assert_eq!(
        daemon.metric("cowlogd_received_messages_total{input=\"gelf_tcp\"}"),
        10_000.0
    );
    assert_eq!(
        daemon.metric("cowlogd_redis_entries_written_total"),
        10_000.0
    );
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
}

#[test]
fn oversized_frame_is_skipped_and_the_connection_goes_on() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[limits]\nmax_frame_bytes = 4096\n");
    let mut stream = daemon.tcp(daemon.ports.gelf);
    let huge = docker_gelf(
        POSTFIX,
        &format!("{} {}", postfix_line(1), "y".repeat(10_000)),
    );
    stream.write_all(&huge).unwrap();
    stream.write_all(b"\0").unwrap();
    stream
        .write_all(&docker_gelf(POSTFIX, &postfix_line(2)))
        .unwrap();
    stream.write_all(b"\0").unwrap();
    let list = redis.wait_list("POSTFIX_MAILLOG", 1);
    assert!(list[0].contains("msg 2"));
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"oversize\"}"),
        1.0
    );
}
