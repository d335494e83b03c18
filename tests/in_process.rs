//! The daemon run in this process (`cowlogd::Daemon`): listeners on port 0
//! report their addresses, no binary, no polling of a subprocess's log.
//! What only a process shows (signals, exit codes, descriptors, RSS) stays
//! in the subprocess tests.

use std::io::Write;
use std::time::Duration;

use cowlogd::Daemon;
use cowlogd::config::Config;

use crate::support::go_gelf::{GoCompression, datagrams, docker_json, noise};
use crate::support::*;

/// Settings for a daemon on 127.0.0.1 port 0 everywhere, writing to `redis`.
fn settings(redis: &RedisServer, extra: &str) -> cowlogd::config::Settings {
    let text = format!(
        "[redis]\nurl = \"{}\"\nlist_cap = 100000\n\
         [inputs]\ngelf_udp = \"127.0.0.1:0\"\ngelf_tcp = \"127.0.0.1:0\"\n\
         syslog_udp = \"127.0.0.1:0\"\nsyslog_tcp = \"127.0.0.1:0\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n{extra}",
        redis.url()
    );
    Config::parse(&text).unwrap().validate().unwrap()
}

/// Waits without blocking the runtime's worker for `redis`'s list `key`
/// to hold `n` entries.
async fn wait_list(redis: &RedisServer, key: &str, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if redis.llen(key) >= n {
            return redis.list(key);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} entries in {key}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_daemon_stores_10k_syslog_tcp_lines_in_order_and_stops_cleanly() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(settings(&redis, "")).await.unwrap();
    let addr = daemon.inputs().syslog_tcp.unwrap();
    assert_ne!(addr.port(), 0, "port 0 is reported as the port bound");
    let send = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let mut frames = Vec::new();
        for n in 0..10_000 {
            frames.extend_from_slice(&postfix_frame(n));
        }
        stream.write_all(&frames).unwrap();
    });
    send.await.unwrap();
    let list = wait_list(&redis, "POSTFIX_MAILLOG", 10_000).await;
    // LPUSH: the newest first.
    assert!(list[0].contains(" msg 9999\""), "{}", list[0]);
    assert!(list[9_999].contains(" msg 0\""), "{}", list[9_999]);
    assert_eq!(message_indices(&list).len(), 10_000);
    daemon.stop().await;
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_gzip_gelf_over_udp_is_put_together_in_process() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(settings(&redis, "")).await.unwrap();
    let addr = daemon.inputs().gelf_udp.unwrap();
    // A line long enough that go-gelf chunks it even compressed.
    let line = format!(
        "Nov 24 13:49:59 mail postfix/smtpd[7]: chunked {}",
        noise(7, 6000)
    );
    let json = docker_json(
        "mailcowdockerized-postfix-mailcow-1",
        &line,
        "1795999799.5",
        6,
    );
    let parts = datagrams(&json, GoCompression::Gzip(1), *b"chunkid1");
    assert!(parts.len() > 1, "the message must be chunked");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Last chunk first: order does not matter.
    for part in parts.iter().rev() {
        socket.send_to(part, addr).unwrap();
    }
    let list = wait_list(&redis, "POSTFIX_MAILLOG", 1).await;
    assert!(list[0].contains("chunked "), "{}", list[0]);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_in_one_process_share_the_metrics_recorder() {
    let redis = RedisServer::start();
    let first = Daemon::start(settings(&redis, "")).await.unwrap();
    let second = Daemon::start(settings(&redis, "")).await.unwrap();
    let scrape = first.metrics_addr().unwrap();
    let body = tokio::task::spawn_blocking(move || {
        cowlogd::http::get(scrape, "/metrics", Duration::from_secs(5))
    })
    .await
    .unwrap()
    .unwrap()
    .1;
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("# HELP cowlogd_queue_max_messages"), "{text}");
    second.stop().await;
    first.stop().await;
}
