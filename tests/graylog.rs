use std::io::Write;

use serde_json::Value;

use crate::support::graylog::{GraylogTcp, GraylogUdp};
use crate::support::*;

fn labelled_docker_gelf(line: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": "1.1", "host": "docker-host-01", "short_message": line,
        "timestamp": 1714557600.123, "level": 6,
        "_command": "/docker-entrypoint.sh", "_container_id": "3b2f6e0c9a1d4e5f",
        "_container_name": POSTFIX, "_image_name": "ghcr.io/mailcow/postfix:1.80",
        "_tag": "3b2f6e0c9a1d", "_com.example.team": "mail", "_ENV": "prod", "_replicas": 2,
    }))
    .unwrap()
}

#[test]
fn udp_forwarding_keeps_docker_fields_and_adds_parsed_ones_for_every_record() {
    let redis = RedisServer::start();
    let graylog = GraylogUdp::start();
    let daemon = Daemon::start(
        &redis.url(),
        &format!(
            "[graylog]\naddress = \"udp://127.0.0.1:{}\"\n",
            graylog.port
        ),
    );
    let mut stream = daemon.tcp(daemon.ports.gelf);
    stream
        .write_all(&labelled_docker_gelf(
            "Nov 24 13:49:59 mail postfix/smtpd[123]: warning: hostname x does not resolve",
        ))
        .unwrap();
    stream.write_all(b"\0").unwrap();
    // Filtered for Redis, still forwarded.
    stream
        .write_all(&labelled_docker_gelf(
            "Nov 24 13:49:59 mail postfix/smtpd[124]: warning: no SASL support",
        ))
        .unwrap();
    stream.write_all(b"\0").unwrap();
    drop(stream);
    daemon.udp(daemon.ports.syslog, b"<22>1 2026-11-24T13:19:09.344Z vm postfix/qmgr 4711 ID47 [origin ip=\"10.0.0.9\"] removed\n");
    let messages = graylog.wait(3);
    let by_pid = |pid: &str| {
        messages
            .iter()
            .find(|m| m["_pid"] == pid)
            .unwrap_or_else(|| panic!("no _pid {pid}: {messages:?}"))
    };
    let first = by_pid("123");
    assert_eq!(first["version"], "1.1");
    assert_eq!(first["host"], "docker-host-01");
    assert_eq!(
        first["short_message"],
        "Nov 24 13:49:59 mail postfix/smtpd[123]: warning: hostname x does not resolve"
    );
    assert_eq!(first["timestamp"].as_f64(), Some(1714557600.123));
    assert_eq!(first["level"], 4);
    for (field, value) in [
        ("_container_name", Value::from(POSTFIX)),
        ("_container_id", "3b2f6e0c9a1d4e5f".into()),
        ("_image_name", "ghcr.io/mailcow/postfix:1.80".into()),
        ("_tag", "3b2f6e0c9a1d".into()),
        ("_command", "/docker-entrypoint.sh".into()),
        ("_com.example.team", "mail".into()),
        ("_ENV", "prod".into()),
        ("_replicas", 2.into()),
        ("_program", "postfix/smtpd".into()),
        ("_severity", "warning".into()),
        ("_stream", "stdout".into()),
        ("_route", "postfix".into()),
    ] {
        assert_eq!(first[field], value, "{field}");
    }
    assert_eq!(by_pid("124")["_route"], "postfix-filtered");
    let syslog = by_pid("4711");
    assert_eq!(syslog["host"], "vm");
    assert_eq!(syslog["short_message"], "removed");
    assert_eq!(syslog["level"], 6);
    assert_eq!(syslog["_facility"], "mail");
    assert_eq!(syslog["_app_name"], "postfix/qmgr");
    assert_eq!(syslog["_msgid"], "ID47");
    assert_eq!(syslog["_ip"], "10.0.0.9");
    assert_eq!(syslog["_program"], "postfix/qmgr");
    assert!(syslog.get("_route").is_none());
    // The Redis path is unchanged: one stored, one filtered.
    assert_eq!(redis.wait_list("POSTFIX_MAILLOG", 1).len(), 1);
}

/// Sends one GELF message whose short_message is `padding` x's; returns the
/// size of the single uncompressed datagram cowlogd forwards for it.
fn forwarded_size(daemon: &Daemon, graylog: &GraylogUdp, padding: usize) -> Vec<usize> {
    let before = graylog.datagram_sizes.lock().unwrap().len();
    let seen = graylog.messages.lock().unwrap().len();
    let json = serde_json::json!({"short_message": "x".repeat(padding), "host": "h", "timestamp": 1714557600});
    daemon.udp(daemon.ports.gelf, &serde_json::to_vec(&json).unwrap());
    graylog.wait(seen + 1);
    graylog.datagram_sizes.lock().unwrap()[before..].to_vec()
}

#[test]
fn udp_chunking_at_the_1420_boundary() {
    let redis = RedisServer::start();
    let graylog = GraylogUdp::start();
    let config = format!(
        "[graylog]\naddress = \"udp://127.0.0.1:{}\"\ncompression = \"none\"\n",
        graylog.port
    );
    let daemon = Daemon::start(&redis.url(), &config);
    let probe = forwarded_size(&daemon, &graylog, 100);
    assert_eq!(probe.len(), 1);
    let overhead = probe[0] - 100;
    assert_eq!(
        forwarded_size(&daemon, &graylog, 1420 - overhead),
        vec![1420]
    );
    // 1421 payload bytes: 1408 in the first chunk, 13 (+ 12 header) in the second.
    assert_eq!(
        forwarded_size(&daemon, &graylog, 1421 - overhead),
        vec![1420, 25]
    );
    assert_eq!(
        forwarded_size(&daemon, &graylog, 2 * 1408 - overhead),
        vec![1420, 1420]
    );
}

#[test]
fn large_messages_are_chunked_and_oversized_ones_truncated_and_counted() {
    let redis = RedisServer::start();
    let graylog = GraylogUdp::start();
    let config = format!(
        "[graylog]\naddress = \"udp://127.0.0.1:{}\"\n",
        graylog.port
    );
    let daemon = Daemon::start(&redis.url(), &config);
    let big = crate::support::go_gelf::noise(99, 60_000);
    let huge = crate::support::go_gelf::noise(100, 400_000);
    let mut stream = daemon.tcp(daemon.ports.gelf);
    for line in [&big, &huge] {
        stream
            .write_all(
                &serde_json::to_vec(&serde_json::json!({"short_message": line, "host": "h"}))
                    .unwrap(),
            )
            .unwrap();
        stream.write_all(b"\0").unwrap();
    }
    drop(stream);
    let messages = graylog.wait(2);
    assert_eq!(messages[0]["short_message"].as_str(), Some(big.as_str()));
    assert!(graylog.datagram_sizes.lock().unwrap().len() > 20);
    let cut = messages[1]["short_message"].as_str().unwrap();
    assert!(huge.starts_with(cut) && cut.len() < huge.len() && !cut.is_empty());
    assert_eq!(messages[1]["_truncated"], true);
    assert_eq!(daemon.metric("cowlogd_graylog_truncated_total"), 1.0);
}

#[test]
fn graylog_down_leaves_redis_unaffected_counts_drops_and_resumes_over_tcp() {
    let redis = RedisServer::start();
    let port = free_port();
    let config = format!(
        "[graylog]\naddress = \"tcp://localhost:{port}\"\nqueue_messages = 50\nreconnect_max_ms = 200\n"
    );
    let daemon = Daemon::start(&redis.url(), &config);
    let mut stream = daemon.tcp(daemon.ports.gelf);
    for n in 0..500 {
        stream
            .write_all(&docker_gelf(POSTFIX, &postfix_line(n)))
            .unwrap();
        stream.write_all(b"\0").unwrap();
    }
    let list = redis.wait_list("POSTFIX_MAILLOG", 500);
    assert_eq!(list.len(), 500);
    let dropped = wait_for("forwarding drops counted", || {
        let d = daemon
            .metric("cowlogd_dropped_messages_total{stage=\"graylog\",reason=\"queue_full\"}");
        (d >= 400.0).then_some(d)
    });
    assert_eq!(daemon.metric("cowlogd_graylog_forwarded_total"), 0.0);
    // Graylog comes up: what is still queued, and everything after, arrives.
    let graylog = GraylogTcp::start_on(port);
    for n in 500..510 {
        stream
            .write_all(&docker_gelf(POSTFIX, &postfix_line(n)))
            .unwrap();
        stream.write_all(b"\0").unwrap();
    }
    drop(stream);
    let total = 510.0;
    wait_for("forwarded + dropped to account for every message", || {
        let forwarded = daemon.metric("cowlogd_graylog_forwarded_total");
        let dropped = daemon
            .metric("cowlogd_dropped_messages_total{stage=\"graylog\",reason=\"queue_full\"}");
        (forwarded + dropped == total && graylog.count() as f64 == forwarded).then_some(())
    });
    let received = graylog.messages.lock().unwrap().clone();
    for n in 500..510 {
        let tail = format!(" msg {n}");
        assert!(
            received
                .iter()
                .any(|m| m["short_message"].as_str().unwrap().ends_with(&tail)),
            "message {n} not forwarded"
        );
    }
    assert!(dropped >= 400.0);
}

#[test]
fn ten_thousand_messages_arrive_complete_at_a_tcp_gelf_listener() {
    let redis = RedisServer::start();
    let graylog = GraylogTcp::start();
    let daemon = Daemon::start(
        &redis.url(),
        &format!(
            "[graylog]\naddress = \"tcp://127.0.0.1:{}\"\n",
            graylog.port
        ),
    );
    send_postfix_gelf_tcp(&daemon, 0..10_000);
    let messages = graylog.wait(10_000);
    assert_eq!(messages.len(), 10_000);
    let mut seen = vec![false; 10_000];
    for m in &messages {
        let text = m["short_message"].as_str().unwrap();
        let n: usize = text.rsplit(" msg ").next().unwrap().parse().unwrap();
        assert!(!seen[n], "message {n} twice");
        seen[n] = true;
        assert_eq!(m["_container_name"], POSTFIX);
    }
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
}
