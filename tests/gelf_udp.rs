use crate::support::go_gelf::{self, GoCompression};
use crate::support::*;

fn expected_entry(n: usize) -> String {
    format!(
        "{{\"time\":\"1712345678\",\"program\":\"postfix/smtpd\",\"priority\":\"info\",\"message\":\"connect from unknown[203.0.113.{}] msg {n}\"}}\n",
        n % 250
    )
}

#[test]
fn go_gelf_single_datagrams_in_every_compression_reach_the_list_and_channel() {
    let redis = RedisServer::start();
    let channel = Subscriber::start(&redis, "F2B_CHANNEL");
    let daemon = Daemon::start(&redis.url(), "");
    let compressions = [
        GoCompression::Gzip(1),
        GoCompression::Zlib(1),
        GoCompression::Zlib(9),
        GoCompression::None,
    ];
    // One sender (one socket, as go-gelf has per container): SO_REUSEPORT
    // keeps its datagrams on one socket, so their order is kept.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for (n, compression) in compressions.into_iter().enumerate() {
        let json = docker_gelf(POSTFIX, &postfix_line(n));
        let datagrams = go_gelf::datagrams(&json, compression, *b"AAAAAAAA");
        assert_eq!(datagrams.len(), 1);
        sender
            .send_to(&datagrams[0], ("127.0.0.1", daemon.ports.gelf))
            .unwrap();
    }
    let list = redis.wait_list("POSTFIX_MAILLOG", 4);
    let expected: Vec<String> = (0..4).rev().map(expected_entry).collect();
    assert_eq!(list, expected);
    let payloads = channel.wait(4);
    assert_eq!(payloads[0], b"connect from unknown[203.0.113.0] msg 0");
}

/// A line long enough that gzip output needs several chunks.
fn long_line(n: usize, len: usize) -> String {
    let noise = go_gelf::noise(n as u64 + 7, len);
    format!("{} {noise}", postfix_line(n))
}

#[test]
fn chunked_messages_in_order_reversed_duplicated_and_with_empty_last_chunk() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = ("127.0.0.1", daemon.ports.gelf);

    // 1: gzip, in order.
    let json = docker_gelf(POSTFIX, &long_line(1, 5000));
    let d = go_gelf::datagrams(&json, GoCompression::Gzip(1), *b"message1");
    assert!(d.len() >= 3);
    for datagram in &d {
        socket.send_to(datagram, target).unwrap();
    }
    // 2: gzip, reversed, with a duplicate.
    let json = docker_gelf(POSTFIX, &long_line(2, 5000));
    let mut d = go_gelf::datagrams(&json, GoCompression::Gzip(1), *b"message2");
    d.reverse();
    d.insert(1, d[0].clone());
    for datagram in &d {
        socket.send_to(datagram, target).unwrap();
    }
    // 3: exactly 2816 bytes uncompressed: 1420 + 1420 + a bare 12-byte chunk.
    let base = docker_gelf(POSTFIX, &postfix_line(3));
    let pad = "x".repeat(2816 - base.len());
    let json = docker_gelf(POSTFIX, &format!("{}{pad}", postfix_line(3)));
    assert_eq!(json.len(), 2816);
    let d = go_gelf::datagrams(&json, GoCompression::None, *b"message3");
    assert_eq!(
        d.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1420, 1420, 12]
    );
    for datagram in &d {
        socket.send_to(datagram, target).unwrap();
    }
    let list = redis.wait_list("POSTFIX_MAILLOG", 3);
    assert!(list[2].contains("msg 1 "), "{}", &list[2][..120]);
    assert!(list[1].contains("msg 2 "));
    assert!(list[0].contains("msg 3xxx"));
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
}

#[test]
fn chunks_of_two_senders_with_the_same_id_interleaved() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = ("127.0.0.1", daemon.ports.gelf);
    let da = go_gelf::datagrams(
        &docker_gelf(POSTFIX, &long_line(10, 4000)),
        GoCompression::Gzip(1),
        *b"SAMEIDXX",
    );
    let db = go_gelf::datagrams(
        &docker_gelf(POSTFIX, &long_line(11, 4000)),
        GoCompression::Gzip(1),
        *b"SAMEIDXX",
    );
    for (x, y) in da.iter().zip(db.iter()) {
        a.send_to(x, target).unwrap();
        b.send_to(y, target).unwrap();
    }
    for x in da.iter().skip(db.len()) {
        a.send_to(x, target).unwrap();
    }
    for y in db.iter().skip(da.len()) {
        b.send_to(y, target).unwrap();
    }
    let list = redis.wait_list("POSTFIX_MAILLOG", 2);
    let mut found: Vec<bool> = ["msg 10 ", "msg 11 "]
        .iter()
        .map(|m| list.iter().any(|e| e.contains(m)))
        .collect();
    found.dedup();
    assert_eq!(found, vec![true]);
}

#[test]
fn incomplete_chunked_message_expires_and_is_counted() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[limits]\ngelf_chunk_timeout_ms = 300\n");
    let d = go_gelf::datagrams(
        &docker_gelf(POSTFIX, &long_line(5, 5000)),
        GoCompression::Gzip(1),
        *b"partial!",
    );
    daemon.udp(daemon.ports.gelf, &d[0]);
    wait_for("the chunk timeout to be counted", || {
        (daemon.metric("cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"chunk_timeout\"}")
            == 1.0)
            .then_some(())
    });
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 0);
}
