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

/// Settings for a daemon with Redis off and only syslog over TCP, for
/// tests of connection policy.
fn tcp_only(extra: &str) -> cowlogd::config::Settings {
    let text = format!(
        "[redis]\nurl = \"\"\n\
         [inputs]\ngelf_udp = \"\"\ngelf_tcp = \"\"\nsyslog_udp = \"\"\n\
         syslog_tcp = \"127.0.0.1:0\"\n{extra}\n[metrics]\nlisten = \"\"\n"
    );
    Config::parse(&text).unwrap().validate().unwrap()
}

/// A [`tcp_only`] daemon closing a silent connection after 1 s, an
/// unfinished frame after 2 s and an idle connection after 4 s (each far
/// enough from the others that the time a close took says which one
/// fired); its syslog address.
async fn tcp_only_with_timeouts() -> (Daemon, std::net::SocketAddr) {
    let daemon = Daemon::start(tcp_only(
        "tcp_first_byte_timeout_s = 1\ntcp_idle_timeout_s = 4\ntcp_frame_timeout_s = 2",
    ))
    .await
    .unwrap();
    let addr = daemon.inputs().syslog_tcp.unwrap();
    (daemon, addr)
}

/// Reads `stream` until the daemon closes it; the time that took.
async fn closed_after(stream: &mut tokio::net::TcpStream) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = tokio::time::Instant::now();
    let mut sink = [0u8; 64];
    let read_to_end = async { while stream.read(&mut sink).await.unwrap_or(0) > 0 {} };
    tokio::time::timeout(PATIENCE, read_to_end)
        .await
        .expect("the daemon never closed the connection");
    started.elapsed()
}

// Real time, seconds apart: a paused clock jumped past these deadlines
// under load (a 600 s idle timeout measured as 1,046 s in one CI run), so
// the timeouts are short instead and only their order is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_closes_at_the_first_byte_timeout_an_idle_one_at_the_idle_timeout() {
    let (daemon, addr) = tcp_only_with_timeouts().await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let waited = closed_after(&mut silent).await;
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(4)).contains(&waited),
        "a connection that never sent was closed after {waited:?}, not at the first-byte timeout"
    );
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        idle.write_all(&postfix_frame(1)).await.unwrap();
    }
    let waited = closed_after(&mut idle).await;
    assert!(
        waited >= Duration::from_secs(4),
        "a connection idle after a whole frame was closed after {waited:?}, before the idle timeout"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_trickled_a_byte_at_a_time_is_cut_off_at_the_frame_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (daemon, addr) = tcp_only_with_timeouts().await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    // A byte every 200 ms: never idle, never a whole frame. The daemon's
    // close shows as the end of the stream on our side.
    let mut cut_off = None;
    for byte in b"<30>Nov 24 13:49:59 x[1]: a frame that never ends"
        .iter()
        .cycle()
        .take(100)
    {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        let mut sink = [0u8; 1];
        tokio::select! {
            read = slow.read(&mut sink) => {
                assert!(matches!(read, Ok(0) | Err(_)), "the daemon sent {read:?}");
                cut_off = Some(started.elapsed());
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let cut_off = cut_off.expect("the trickling connection was never closed");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(4)).contains(&cut_off),
        "closed after {cut_off:?}, not at the frame timeout"
    );
    daemon.stop().await;
}
