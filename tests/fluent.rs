//! Docker's fluentd driver as an input: the Forward protocol over TCP and a
//! unix socket, from the real clients — fluent-logger-golang (the library
//! Docker links, Debian's golang-github-fluent-fluent-logger-golang-dev)
//! and Python's fluent-logger (PyPI) — with and without acks, sub-second
//! time, split lines, a restart mid-stream, and broken input.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::{
    Daemon, POSTFIX, RedisServer, Subscriber, fluent_daemon, message_indices, postfix_line,
    send_postfix_gelf_tcp, wait_for,
};

/// The Go sender in tests/fluent_sender, built once; fails, saying how to
/// install them, where Go or the library is missing.
fn go_sender() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fluent_sender");
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fluent_sender/main.go");
        let output = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(source)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env(
                "GOCACHE",
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gocache"),
            )
            .output()
            .map_err(|e| format!("go not found ({e})"))?;
        if !output.status.success() {
            return Err(format!(
                "go build failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(out)
    });
    match built {
        Ok(path) => path.clone(),
        Err(why) => panic!(
            "{why}; install with `apt-get install golang-go golang-github-fluent-fluent-logger-golang-dev` (tests/install-deps.sh does)"
        ),
    }
}

/// Runs a Python script that sends with fluent-logger (PyPI); fails,
/// saying how to install it, where it is missing.
fn run_python_sender(script: &str, args: &[&str]) {
    let probe = Command::new("python3")
        .args(["-c", "import fluent.sender"])
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "Python's fluent-logger is missing: `pip install fluent-logger` (tests/install-deps.sh does)"
    );
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fluent-logger sender failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the Go sender to completion; panics with its stderr on failure.
fn run_go(sender: &PathBuf, args: &[&str]) {
    let output = Command::new(sender).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "fluent_sender {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn assert_lines(redis: &RedisServer, range: std::ops::Range<usize>) {
    let list = redis.wait_list("POSTFIX_MAILLOG", range.len());
    assert_eq!(list.len(), range.len(), "duplicates or extras");
    let want: std::collections::BTreeSet<usize> = range.collect();
    assert_eq!(message_indices(&list), want);
}

#[test]
fn docker_shaped_records_with_acks_and_sub_second_time_round_trip_10000_lines() {
    let sender = go_sender();
    let redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(&redis, "");
    let addr = format!("127.0.0.1:{port}");
    run_go(
        &sender,
        &["-addr", &addr, "-n", "10000", "-ack", "-subsecond"],
    );
    assert_lines(&redis, 0..10_000);
    assert_eq!(
        daemon.metric("cowlogd_received_messages_total{input=\"fluent_tcp\"}"),
        10_000.0
    );
    // Without ack and sub-second precision: plain integer time, no option.
    redis.raw("DEL POSTFIX_MAILLOG");
    run_go(&sender, &["-addr", &addr, "-n", "500", "-start", "10000"]);
    assert_lines(&redis, 10_000..10_500);
}

#[test]
fn a_unix_socket_takes_the_driver_with_and_without_acks_and_has_the_configured_mode() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let sender = go_sender();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fluent.sock");
    // A stale socket file from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let daemon = Daemon::start(
        &redis.url(),
        &format!(
            "[inputs]\nfluent_unix = \"{}\"\nfluent_unix_mode = \"0600\"\n",
            socket.display()
        ),
    );
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let path = socket.to_str().unwrap();
    run_go(&sender, &["-network", "unix", "-addr", path, "-n", "2000"]);
    run_go(
        &sender,
        &[
            "-network", "unix", "-addr", path, "-n", "2000", "-start", "2000", "-ack",
        ],
    );
    // Python's fluent-logger on the same socket.
    let script = r#"
import sys
from fluent import sender
s = sender.FluentSender("app", host="unix://" + sys.argv[1])
for i in range(4000, 4500):
    line = "Nov 24 13:49:59 mail postfix/smtpd[%d]: connect from unknown[203.0.113.%d] msg %d" % (1000 + i % 1000, i % 250, i)
    if not s.emit(None, {"container_name": "/mailcowdockerized-postfix-mailcow-1", "source": "stdout", "log": line}):
        sys.exit("emit failed: %r" % s.last_error)
s.close()
"#;
    run_python_sender(script, &[path]);
    assert_lines(&redis, 0..4500);
    assert_eq!(
        daemon.metric("cowlogd_received_messages_total{input=\"fluent_unix\"}"),
        4500.0
    );
}

#[test]
fn a_40_kib_line_docker_split_in_three_is_stored_whole() {
    let sender = go_sender();
    let redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(&redis, "");
    run_go(
        &sender,
        &[
            "-addr",
            &format!("127.0.0.1:{port}"),
            "-long",
            "40960",
            "-ack",
        ],
    );
    let list = redis.wait_list("POSTFIX_MAILLOG", 1);
    let entry: serde_json::Value = serde_json::from_str(&list[0]).unwrap();
    let message = entry["message"].as_str().unwrap();
    let header = "Nov 24 13:49:59 mail postfix/smtpd[1]: ";
    assert_eq!(message.len(), 40960 - header.len());
    assert!(message.starts_with("long xxx") && message.ends_with("xxx"));
    assert_eq!(entry["program"], "postfix/smtpd");
    // Three parts received, one line stored, nothing dropped.
    assert_eq!(
        daemon.metric("cowlogd_received_messages_total{input=\"fluent_tcp\"}"),
        3.0
    );
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
}

#[test]
fn a_split_line_longer_than_max_message_bytes_is_cut_marked_and_counted() {
    let sender = go_sender();
    let redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(&redis, "[limits]\nmax_message_bytes = 20000\n");
    run_go(
        &sender,
        &["-addr", &format!("127.0.0.1:{port}"), "-long", "40960"],
    );
    let list = redis.wait_list("POSTFIX_MAILLOG", 1);
    let entry: serde_json::Value = serde_json::from_str(&list[0]).unwrap();
    let message = entry["message"].as_str().unwrap();
    assert!(
        message.ends_with("...[truncated by cowlogd]"),
        "{}",
        &message[message.len() - 40..]
    );
    assert!(message.len() <= 20000);
    assert_eq!(daemon.metric("cowlogd_truncated_messages_total"), 1.0);
}

#[test]
fn a_restart_while_the_driver_sends_with_acks_loses_and_duplicates_nothing() {
    let sender = go_sender();
    let redis = RedisServer::start();
    let (mut daemon, port) = fluent_daemon(&redis, "");
    let total = 3000;
    let mut child = Command::new(&sender)
        .args([
            "-addr",
            &format!("127.0.0.1:{port}"),
            "-n",
            &total.to_string(),
            "-ack",
            "-delay",
            "1ms",
            "-retry-wait-ms",
            "100",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("a third of the lines", || {
        (redis.llen("POSTFIX_MAILLOG") >= total / 3).then_some(())
    });
    daemon.restart();
    let status = wait_for("the sender to finish", || child.try_wait().unwrap());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "sender failed: {stderr}");
    assert_lines(&redis, 0..total);
}

#[test]
fn python_fluent_logger_lines_are_stored_and_published_byte_identical_to_the_gelf_path() {
    let n = 10_000;
    // The fluent path.
    let redis = RedisServer::start();
    let subscriber = Subscriber::start(&redis, "F2B_CHANNEL");
    let (_daemon, port) = fluent_daemon(&redis, "");
    let script = r#"
import sys
from fluent import sender
port, n = int(sys.argv[1]), int(sys.argv[2])
s = sender.FluentSender("4f9a1c0d2b3e", host="127.0.0.1", port=port, nanosecond_precision=True)
for i in range(n):
    line = "Nov 24 13:49:59 mail postfix/smtpd[%d]: connect from unknown[203.0.113.%d] msg %d" % (1000 + i % 1000, i % 250, i)
    record = {"container_id": "4f9a1c0d2b3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a",
              "container_name": "/mailcowdockerized-postfix-mailcow-1", "source": "stdout", "log": line}
    if not s.emit_with_time(None, 1712345678.123, record):
        sys.exit("emit failed: %r" % s.last_error)
s.close()
"#;
    run_python_sender(script, &[&port.to_string(), &n.to_string()]);
    let fluent_list = redis.wait_list("POSTFIX_MAILLOG", n);
    let fluent_channel = subscriber.wait(n);
    // The GELF path, same lines, same time.
    let gelf_redis = RedisServer::start();
    let gelf_subscriber = Subscriber::start(&gelf_redis, "F2B_CHANNEL");
    let gelf_daemon = Daemon::start(&gelf_redis.url(), "");
    send_postfix_gelf_tcp(&gelf_daemon, 0..n);
    let gelf_list = gelf_redis.wait_list("POSTFIX_MAILLOG", n);
    let gelf_channel = gelf_subscriber.wait(n);
    assert_eq!(fluent_list.len(), n);
    assert_eq!(fluent_list, gelf_list);
    assert_eq!(fluent_channel, gelf_channel);
    assert!(fluent_list[0].contains(&postfix_line(n - 1)[42..]));
}

/// `[tag, 1712345678, {container_name, source, log}, {"chunk": id}]` in
/// MessagePack.
pub(crate) fn acked_event(line: &str, chunk: &str) -> Vec<u8> {
    acked_event_with(line, chunk, None)
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    cowlogd_parsers::fluent::msgpack::write_str(out, s.as_bytes());
}

/// Docker's record for `line` of the postfix container, with one more
/// field whose value is `raw` MessagePack.
fn record(out: &mut Vec<u8>, line: &str, extra: Option<(&str, &[u8])>) {
    out.push(if extra.is_some() { 0x84 } else { 0x83 });
    let name = format!("/{POSTFIX}");
    for (k, v) in [
        ("container_name", name.as_str()),
        ("source", "stdout"),
        ("log", line),
    ] {
        write_string(out, k);
        write_string(out, v);
    }
    if let Some((k, raw)) = extra {
        write_string(out, k);
        out.extend_from_slice(raw);
    }
}

/// `[1712345678, record]`: a Forward-mode entry.
fn entry(out: &mut Vec<u8>, line: &str) {
    out.extend([0x92, 0xce]);
    out.extend(1_712_345_678u32.to_be_bytes());
    record(out, line, None);
}

/// [`acked_event`] with one more record field whose value is `raw`
/// MessagePack.
pub(crate) fn acked_event_with(line: &str, chunk: &str, extra: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut out = vec![0x94];
    write_string(&mut out, "app");
    out.push(0xce);
    out.extend(1_712_345_678u32.to_be_bytes());
    record(&mut out, line, extra);
    out.push(0x81);
    write_string(&mut out, "chunk");
    write_string(&mut out, chunk);
    out
}

/// A connection to the fluent port that waits up to 10 s for an ack.
fn ack_client(daemon: &Daemon, port: u16) -> std::net::TcpStream {
    let stream = daemon.tcp(port);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

pub(crate) fn read_ack(stream: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 6];
    stream.read_exact(&mut head)?;
    assert_eq!(&head[..5], b"\x81\xa3ack");
    let mut id = vec![0u8; usize::from(head[5] & 0x1f)];
    stream.read_exact(&mut id)?;
    Ok(id)
}

#[test]
fn an_ack_means_the_event_is_in_redis_and_none_is_sent_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(&redis, "");
    let mut stream = ack_client(&daemon, port);
    stream
        .write_all(&acked_event(&postfix_line(0), "c0"))
        .unwrap();
    assert_eq!(read_ack(&mut stream).unwrap(), b"c0");
    // Already there when the ack arrives: no waiting.
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 1);
    redis.stop();
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    stream
        .write_all(&acked_event(&postfix_line(1), "c1"))
        .unwrap();
    assert!(
        read_ack(&mut stream).is_err(),
        "acked with Redis down: the event was only in memory"
    );
    redis.restart();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(read_ack(&mut stream).unwrap(), b"c1");
    // The restarted Redis starts empty (the stopped one saved nothing).
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 1);
    assert_lines(&redis, 1..2);
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
}

#[test]
fn sigterm_with_redis_down_drops_only_events_it_never_acked() {
    let mut redis = RedisServer::start();
    let (mut daemon, port) = fluent_daemon(&redis, "[redis]\nshutdown_flush_ms = 500\n");
    redis.stop();
    let mut stream = ack_client(&daemon, port);
    let mut events = Vec::new();
    for n in 0..500 {
        events.extend(acked_event(&postfix_line(n), &format!("c{n}")));
    }
    stream.write_all(&events).unwrap();
    // The first read's events wait to be applied; the rest wait unread.
    wait_for("events received", || {
        (daemon.metric("cowlogd_received_messages_total{input=\"fluent_tcp\"}") > 0.0).then_some(())
    });
    assert!(daemon.terminate().success());
    // The daemon closed the connection without one ack: the sender keeps
    // all 500 and sends them again to the next cowlogd.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{} bytes of acks", rest.len());
}

#[test]
fn broken_msgpack_costs_the_event_or_the_connection_never_the_process() {
    let redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(&redis, "[limits]\nmax_frame_bytes = 65536\n");
    let mut stream = ack_client(&daemon, port);
    // A complete object of the wrong shape costs only itself.
    stream
        .write_all(&acked_event(&postfix_line(0), "a"))
        .unwrap();
    stream.write_all(b"\x93\x01\x02\x03").unwrap();
    stream
        .write_all(&acked_event(&postfix_line(1), "b"))
        .unwrap();
    assert_eq!(read_ack(&mut stream).unwrap(), b"a");
    assert_eq!(read_ack(&mut stream).unwrap(), b"b");
    // A declared length past the frame limit: the stream cannot go on.
    stream
        .write_all(b"\x94\xa3app\xdb\xff\xff\xff\xff")
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty());
    // A record value nested 30,000 deep costs no stack: the line is kept.
    let mut deep = vec![0x91; 30_000];
    deep.push(0xc0);
    let mut deep_sender = ack_client(&daemon, port);
    deep_sender
        .write_all(&acked_event_with(
            &postfix_line(2),
            "d",
            Some(("deep", &deep)),
        ))
        .unwrap();
    assert_eq!(read_ack(&mut deep_sender).unwrap(), b"d");
    // Byte 0xc1 is no MessagePack: that connection is closed.
    let mut invalid = daemon.tcp(port);
    invalid.write_all(b"\x92\xc1").unwrap();
    let _ = invalid.read_to_end(&mut rest);
    // The process and a good sender are fine.
    let mut good = ack_client(&daemon, port);
    good.write_all(&acked_event(&postfix_line(3), "c")).unwrap();
    assert_eq!(read_ack(&mut good).unwrap(), b"c");
    assert_lines(&redis, 0..4);
    let dropped = |reason: &str| {
        daemon.metric(&format!(
            "cowlogd_dropped_messages_total{{stage=\"parse\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(dropped("invalid_forward"), 2.0);
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"oversize\"}"),
        1.0
    );
}

#[test]
fn fluent_records_are_forwarded_to_graylog_with_dockers_fields() {
    let sender = go_sender();
    let redis = RedisServer::start();
    let graylog = crate::support::graylog::GraylogTcp::start();
    let (_daemon, port) = fluent_daemon(
        &redis,
        &format!(
            "[graylog]\naddress = \"tcp://127.0.0.1:{}\"\n",
            graylog.port
        ),
    );
    run_go(
        &sender,
        &["-addr", &format!("127.0.0.1:{port}"), "-n", "100", "-ack"],
    );
    let messages = graylog.wait(100);
    assert_eq!(messages.len(), 100);
    let first = &messages[0];
    assert_eq!(first["short_message"], postfix_line(0));
    assert_eq!(first["_container_name"], POSTFIX);
    assert_eq!(
        first["_container_id"],
        "4f9a1c0d2b3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a"
    );
    assert_eq!(first["_tag"], "4f9a1c0d2b3e");
    assert_eq!(first["_source"], "stdout");
    assert_eq!(first["_program"], "postfix/smtpd");
    assert_eq!(first["_route"], "postfix");
    assert_eq!(first["level"], 6);
    assert_eq!(first["timestamp"], 1712345678);
    assert_eq!(first["host"], "127.0.0.1");
}

#[test]
fn an_event_sent_again_after_its_ack_was_lost_is_acked_not_stored_twice() {
    let redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(&redis, "");
    let event = acked_event(&postfix_line(0), "k9");
    for _ in 0..2 {
        // Each time on a new connection, as a sender reconnects to resend.
        let mut stream = ack_client(&daemon, port);
        stream.write_all(&event).unwrap();
        assert_eq!(read_ack(&mut stream).unwrap(), b"k9");
    }
    let mut stream = ack_client(&daemon, port);
    stream
        .write_all(&acked_event(&postfix_line(1), "k10"))
        .unwrap();
    assert_eq!(read_ack(&mut stream).unwrap(), b"k10");
    assert_lines(&redis, 0..2);
    assert_eq!(daemon.metric("cowlogd_fluent_resent_total"), 1.0);
}

#[test]
fn the_allowlist_and_the_first_byte_timeout_apply_to_fluent_tcp() {
    let redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(
        &redis,
        "allow = [\"10.0.0.0/8\"]\n[metrics]\nallow = [\"127.0.0.0/8\"]\n",
    );
    let mut refused = daemon.tcp(port);
    let _ = refused.write_all(&acked_event(&postfix_line(0), "a"));
    let mut rest = Vec::new();
    let _ = refused.read_to_end(&mut rest);
    assert!(rest.is_empty(), "an ack to a sender outside inputs.allow");
    wait_for("the refusal counted", || {
        (daemon.metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"not_allowed\"}")
            == 1.0)
            .then_some(())
    });
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 0);

    let (daemon, port) = fluent_daemon(&redis, "tcp_first_byte_timeout_s = 1\n");
    let mut silent = ack_client(&daemon, port);
    let started = std::time::Instant::now();
    assert_eq!(silent.read(&mut [0u8; 16]).unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn forward_packed_and_compressed_events_are_stored_and_bad_ones_counted() {
    let redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(&redis, "");
    let bin32 = |out: &mut Vec<u8>, data: &[u8]| {
        out.push(0xc6);
        out.extend((data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    };
    let options = |out: &mut Vec<u8>, compressed: &str, chunk: &str| {
        out.push(0x82);
        write_string(out, "compressed");
        write_string(out, compressed);
        write_string(out, "chunk");
        write_string(out, chunk);
    };
    let mut entries = Vec::new();
    (0..2).for_each(|n| entry(&mut entries, &postfix_line(n)));
    let mut packed = Vec::new();
    (2..4).for_each(|n| entry(&mut packed, &postfix_line(n)));
    let mut compressed = Vec::new();
    (4..6).for_each(|n| entry(&mut compressed, &postfix_line(n)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&compressed).unwrap();
    let gz = gz.finish().unwrap();
    let mut stream = ack_client(&daemon, port);
    // Forward: [tag, [entries], {"chunk"}]
    let mut event = vec![0x93];
    write_string(&mut event, "app");
    event.push(0x92);
    event.extend_from_slice(&entries);
    event.push(0x81);
    write_string(&mut event, "chunk");
    write_string(&mut event, "f");
    // PackedForward and CompressedPackedForward.
    event.push(0x93);
    write_string(&mut event, "app");
    bin32(&mut event, &packed);
    options(&mut event, "text", "p");
    event.push(0x93);
    write_string(&mut event, "app");
    bin32(&mut event, &gz);
    options(&mut event, "gzip", "g");
    // Not gzip, and an unknown compression: each costs its event.
    event.push(0x93);
    write_string(&mut event, "app");
    bin32(&mut event, b"not gzip at all");
    options(&mut event, "gzip", "x");
    event.push(0x93);
    write_string(&mut event, "app");
    bin32(&mut event, &gz);
    options(&mut event, "zstd", "z");
    stream.write_all(&event).unwrap();
    for chunk in ["f", "p", "g", "x"] {
        assert_eq!(read_ack(&mut stream).unwrap(), chunk.as_bytes());
    }
    assert_lines(&redis, 0..6);
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"decompress_error\"}"),
        1.0
    );
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"parse\",reason=\"invalid_forward\"}"),
        1.0
    );
}

#[test]
fn an_event_resent_while_its_first_copy_waits_for_redis_is_stored_once_and_acked_on_both() {
    let mut redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(&redis, "");
    redis.stop();
    let mut first = ack_client(&daemon, port);
    first
        .write_all(&acked_event(&postfix_line(7), "once"))
        .unwrap();
    wait_for("the first copy received", || {
        (daemon.metric("cowlogd_received_messages_total{input=\"fluent_tcp\"}") == 1.0)
            .then_some(())
    });
    // The sender's ack timeout passes; it sends the event again on a new
    // connection, twice.
    let mut again: Vec<std::net::TcpStream> = (0..2).map(|_| ack_client(&daemon, port)).collect();
    for stream in &mut again {
        stream
            .write_all(&acked_event(&postfix_line(7), "once"))
            .unwrap();
    }
    wait_for("both resends recognised", || {
        (daemon.metric("cowlogd_fluent_resent_total") == 2.0).then_some(())
    });
    first
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(read_ack(&mut first).is_err(), "acked with Redis down");
    redis.restart();
    for stream in std::iter::once(&mut first).chain(&mut again) {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(read_ack(stream).unwrap(), b"once");
    }
    assert_lines(&redis, 7..8);
}
