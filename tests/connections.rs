//! Connections and buffers: descriptors, slots, idle connections, buffer
//! release, and Graylog restarts over TCP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::support::graylog::GraylogTcp;
use crate::support::*;

#[test]
fn half_sent_metrics_requests_cannot_exhaust_descriptors() {
    let mut redis = RedisServer::start();
    let daemon = Daemon::start_with_nofile(&redis.url(), "", 256);
    let mut stalled = Vec::new();
    for _ in 0..250 {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", daemon.ports.metrics)) {
            let _ = stream.write_all(b"GET /metr");
            stalled.push(stream);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon.open_descriptors() < 150,
        "{} descriptors open",
        daemon.open_descriptors()
    );
    // Senders and the Redis writer still get descriptors.
    let mut sender = daemon.tcp(daemon.ports.syslog);
    sender.write_all(&postfix_frame(1)).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    redis.restart();
    sender.write_all(&postfix_frame(2)).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    // The header timeout closes what is left of the stalled requests, and
    // a scraper is served.
    std::thread::sleep(Duration::from_millis(5_500));
    assert_eq!(daemon.http_get("/metrics").0, 200);
    let mut closed = 0;
    for stream in &mut stalled {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let still_open = matches!(
            stream.read(&mut [0u8; 64]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        closed += usize::from(!still_open);
    }
    assert_eq!(closed, stalled.len(), "stalled requests still open");
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one_at_start() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_with_nofile_limits(&redis.url(), "", 256, 4096);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(open_files, ["4096", "4096"], "{limits}");
    assert!(daemon.log().contains("raised the open-file limit"));
}

#[test]
fn metrics_allow_refuses_other_scrapers() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[metrics]\nallow = [\"127.0.0.1/32\"]\n");
    assert_eq!(daemon.http_get("/metrics").0, 200);
    let mut outsider = daemon.tcp_from("127.0.0.2", daemon.ports.metrics);
    let _ = outsider.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut response = String::new();
    let _ = outsider.read_to_string(&mut response);
    assert_eq!(response, "", "a scraper outside metrics.allow was served");
    assert!(daemon.log().contains("sender not allowed"));
}

#[test]
fn connections_that_never_send_cannot_lock_out_a_new_sender() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[inputs]\ntcp_max_connections = 64\ntcp_max_connections_per_source = 16\ntcp_first_byte_timeout_s = 3\n",
    );
    let silent: Vec<TcpStream> = (2..6)
        .flat_map(|host| {
            let daemon = &daemon;
            (0..16).map(move |_| daemon.tcp_from(&format!("127.0.0.{host}"), daemon.ports.syslog))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1_200));
    // The cap is full of silent connections: the longest idle makes room.
    let mut sender = daemon.tcp(daemon.ports.syslog);
    sender.write_all(&postfix_frame(1)).unwrap();
    assert!(redis.wait_list("POSTFIX_MAILLOG", 1)[0].contains(" msg 1"));
    assert!(
        daemon.metric("cowlogd_connections_closed_total{pool=\"tcp\",reason=\"evicted\"}") >= 1.0
    );
    // The rest are closed at the first-byte timeout; the sender stays.
    wait_for("silent connections closed", || {
        let closed = daemon
            .metric("cowlogd_connections_closed_total{pool=\"tcp\",reason=\"first_byte_timeout\"}");
        (closed >= 60.0).then_some(())
    });
    sender.write_all(&postfix_frame(2)).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 2);
    drop(silent);
}

#[test]
fn the_http_input_cannot_take_the_tcp_inputs_slots() {
    let redis = RedisServer::start();
    let http_port = free_port();
    let daemon = Daemon::start(
        &redis.url(),
        &format!(
            "[inputs]\ngelf_http = \"127.0.0.1:{http_port}\"\nhttp_max_connections = 4\ntcp_max_connections = 8\n"
        ),
    );
    let held: Vec<TcpStream> = (0..12)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", http_port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        daemon
            .metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"connection_limit\"}")
            >= 8.0
    );
    // At once, no eviction needed: the TCP pool is untouched.
    let senders: Vec<TcpStream> = (0..8)
        .map(|n| {
            let mut sender = daemon.tcp(daemon.ports.syslog);
            sender.write_all(&postfix_frame(n)).unwrap();
            sender
        })
        .collect();
    redis.wait_list("POSTFIX_MAILLOG", 8);
    drop((held, senders));
}

/// A GELF message whose short_message is ~1.9 MB of invalid UTF-8: the
/// read buffer and the repair copy both grow large.
fn huge_invalid_utf8_gelf(n: usize) -> Vec<u8> {
    let mut json = format!(
        "{{\"version\":\"1.1\",\"host\":\"h\",\"_container_name\":\"{POSTFIX}\",\"short_message\":\"{} msg {n} ",
        postfix_line(n).rsplit_once(" msg ").unwrap().0
    )
    .into_bytes();
    json.extend(std::iter::repeat_n(0xff, 1_900_000));
    json.extend_from_slice(b"\"}\0");
    json
}

#[test]
fn idle_connections_give_back_buffers_a_large_frame_grew() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let rss_before = daemon.rss_kib();
    let mut idle = Vec::new();
    for n in 0..16 {
        let mut stream = daemon.tcp(daemon.ports.gelf);
        stream.write_all(&huge_invalid_utf8_gelf(n)).unwrap();
        redis.wait_list("POSTFIX_MAILLOG", n + 1);
        idle.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    let grown = daemon.rss_kib().saturating_sub(rss_before);
    // Before buffers were released: ~130 MB for these 16 idle connections.
    assert!(grown < 40 * 1024, "RSS grew by {grown} KiB");
    drop(idle);
}

#[test]
fn read_buffers_of_all_connections_stay_within_their_total() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[limits]\ntcp_buffers_total_bytes = 2200000\n",
    );
    let frame = huge_invalid_utf8_gelf(1);
    let (head, tail) = frame.split_at(1_400_000);
    let mut first = daemon.tcp(daemon.ports.gelf);
    first.write_all(head).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut second = daemon.tcp(daemon.ports.gelf);
    second.write_all(head).unwrap();
    wait_for("the over-budget connection counted", || {
        (daemon.metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"buffer_budget\"}")
            == 1.0)
            .then_some(())
    });
    first.write_all(tail).unwrap();
    assert_eq!(redis.wait_list("POSTFIX_MAILLOG", 1).len(), 1);
}

#[test]
fn a_batch_written_after_graylog_closed_its_connection_is_not_lost() {
    let redis = RedisServer::start();
    let port = free_port();
    let old = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let daemon = Daemon::start(
        &redis.url(),
        &format!("[graylog]\naddress = \"tcp://127.0.0.1:{port}\"\nreconnect_max_ms = 100\n"),
    );
    let mut gelf = daemon.tcp(daemon.ports.gelf);
    gelf.write_all(&docker_gelf(POSTFIX, &postfix_line(1)))
        .unwrap();
    gelf.write_all(b"\0").unwrap();
    // The first Graylog takes one message, then restarts.
    let (mut connection, _) = old.accept().unwrap();
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while connection.read_exact(&mut byte).is_ok() && byte[0] != 0 {
        first.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&first).contains(" msg 1"));
    drop(connection);
    drop(old);
    let graylog = GraylogTcp::start_on(port);
    std::thread::sleep(Duration::from_millis(100));
    gelf.write_all(&docker_gelf(POSTFIX, &postfix_line(2)))
        .unwrap();
    gelf.write_all(b"\0").unwrap();
    let received = graylog.wait(1);
    assert!(
        received[0]["short_message"]
            .as_str()
            .unwrap()
            .ends_with(" msg 2")
    );
}
