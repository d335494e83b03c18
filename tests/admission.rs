//! Admission under attack: connections waiting for queue room give their
//! slot back when evicted, a few addresses cannot lock out senders or the
//! health check, parsing a trickled object costs its size once, and the
//! endpoints disclose only what they are for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::fluent::acked_event_with;
use crate::support::*;

/// User plus system CPU time of `pid` so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is 3rd.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = clock_ticks_per_second();
    ticks as f64 / per_second
}

/// `getconf CLK_TCK` (100 on Linux everywhere this runs).
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

#[test]
fn fluent_connections_waiting_on_redis_give_back_their_socket_when_evicted() {
    // Redis is down (nothing listens there): every acked event waits.
    let down = format!("redis://127.0.0.1:{}", free_port());
    let port = free_port();
    let daemon = Daemon::start(
        &down,
        &format!(
            "[inputs]\nfluent_tcp = \"127.0.0.1:{port}\"\ntcp_max_connections = 20\n[redis]\nconnect_timeout_ms = 200\n"
        ),
    );
    let before = daemon.open_descriptors();
    let mut held = Vec::new();
    for wave in 0..6 {
        for n in 0..20 {
            let mut stream = daemon.tcp(port);
            let line = postfix_line(wave * 20 + n);
            let _ = stream.write_all(&acked_event_with(&line, &format!("c{wave}-{n}"), None));
            held.push(stream);
        }
        // Older waves idle past the eviction floor before the next comes.
        std::thread::sleep(Duration::from_millis(1_200));
    }
    let evicted =
        daemon.metric("cowlogd_connections_closed_total{pool=\"tcp\",reason=\"evicted\"}");
    assert!(evicted >= 90.0, "{evicted} evicted");
    let open = wait_for("evicted connections closed", || {
        let open = daemon.open_descriptors();
        (open <= before + 20 + 2).then_some(open)
    });
    assert!(open <= before + 22, "{open} descriptors, {before} at start");
    assert!(daemon.metric("cowlogd_tcp_connections{input=\"fluent_tcp\"}") <= 20.0);
    drop(held);
}

/// Opens `n` connections to `port` from `source` that send nothing.
fn idle_connections(daemon: &Daemon, source: &str, port: u16, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| daemon.tcp_from(source, port)).collect()
}

#[test]
fn idle_connections_from_one_address_cannot_lock_out_the_health_check_or_other_scrapers() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[metrics]\nmax_connections = 16\n");
    // The holder is on the health check's own address, and another one
    // fills what is left.
    let _same = idle_connections(&daemon, "127.0.0.1", daemon.ports.metrics, 16);
    let _other = idle_connections(&daemon, "127.0.0.2", daemon.ports.metrics, 16);
    let config = daemon.dir.path().join("cowlogd.toml");
    let config = config.to_str().unwrap();
    for attempt in 0..10 {
        let (ok, out, err) = run_cowlogd(&["health", "--config", config], &[]);
        assert!(ok, "health check {attempt} failed: {out} {err}");
    }
    let mut scraper = daemon.tcp_from("127.0.0.3", daemon.ports.metrics);
    scraper
        .write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    scraper.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn idle_connections_from_one_address_cannot_lock_out_gelf_http_senders() {
    let redis = RedisServer::start();
    let port = free_port();
    let daemon = Daemon::start(
        &redis.url(),
        &format!("[inputs]\ngelf_http = \"127.0.0.1:{port}\"\nhttp_max_connections = 8\n"),
    );
    let _held = idle_connections(&daemon, "127.0.0.2", port, 8);
    wait_for("8 held connections", || {
        (daemon.metric("cowlogd_tcp_connections{input=\"gelf_http\"}") == 8.0).then_some(())
    });
    let body = docker_gelf(POSTFIX, &postfix_line(1));
    let mut sender = daemon.tcp_from("127.0.0.3", port);
    write!(
        sender,
        "POST /gelf HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    sender.write_all(&body).unwrap();
    let mut answer = String::new();
    sender.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(redis.wait_list("POSTFIX_MAILLOG", 1)[0].contains(" msg 1"));
    assert_eq!(
        daemon.metric("cowlogd_connections_closed_total{pool=\"http\",reason=\"evicted\"}"),
        1.0
    );
}

#[test]
fn four_addresses_keeping_connections_alive_with_empty_lines_cannot_lock_out_syslog_senders() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[inputs]\ntcp_max_connections = 32\ntcp_max_connections_per_source = 8\n",
    );
    // A sender connected before the attack.
    let mut early = daemon.tcp_from("127.0.0.7", daemon.ports.syslog);
    early.write_all(&postfix_frame(0)).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (2..6)
        .map(|host| {
            let port = daemon.ports.syslog;
            let stop = stop.clone();
            let source = format!("127.0.0.{host}");
            std::thread::spawn(move || {
                let connect = || {
                    let socket =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .ok()?;
                    let from: std::net::SocketAddr = format!("{source}:0").parse().ok()?;
                    socket.bind(&from.into()).ok()?;
                    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
                    socket.connect(&to.into()).ok()?;
                    Some(TcpStream::from(socket))
                };
                let mut held: Vec<TcpStream> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Keep 8 open, reopen what was closed, a `\n` on each.
                    held.retain_mut(|s| s.write_all(b"\n").is_ok());
                    while held.len() < 8 {
                        match connect() {
                            Some(s) => held.push(s),
                            None => break,
                        }
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2_500));
    // A newcomer gets in, and its lines are stored.
    for n in 1..=5 {
        let mut late = daemon.tcp_from("127.0.0.6", daemon.ports.syslog);
        late.write_all(&postfix_frame(n)).unwrap();
        drop(late);
    }
    // The early sender, idle for seconds, is still connected.
    std::thread::sleep(Duration::from_millis(1_500));
    early.write_all(&postfix_frame(6)).unwrap();
    let stored = message_indices(&redis.wait_list("POSTFIX_MAILLOG", 7));
    assert_eq!(stored, (0..=6).collect());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().unwrap();
    }
    // The attackers were refused at their own cap; the senders never.
    let log = daemon.log();
    let refused = |source: &str| {
        log.lines()
            .any(|l| l.contains("connection limit reached") && l.contains(&format!("{source}:")))
    };
    assert!(!refused("127.0.0.6") && !refused("127.0.0.7"), "{log}");
}

/// Sends `data` to `port` in 256-byte writes a millisecond apart: the
/// daemon reads one piece at a time, and a rescan of everything before it
/// at every read (the square of the object's size) keeps it busy the whole
/// time, where a scan that resumes costs a few µs a piece.
fn trickle(daemon: &Daemon, port: u16, data: &[u8]) {
    let mut stream = daemon.tcp(port);
    stream.set_nodelay(true).unwrap();
    for piece in data.chunks(256) {
        stream.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// CPU seconds the daemon spends on `send` (its work waited for by
/// `settled`).
fn cpu_for(daemon: &Daemon, send: impl FnOnce(), settled: impl Fn() -> bool) -> f64 {
    let before = cpu_seconds(daemon.pid());
    send();
    wait_for("the daemon to take it all", || settled().then_some(()));
    cpu_seconds(daemon.pid()) - before
}

#[test]
fn a_trickled_half_megabyte_object_costs_about_what_as_many_small_ones_cost() {
    let redis = RedisServer::start();
    let port = free_port();
    let daemon = Daemon::start(
        &redis.url(),
        &format!("[inputs]\nfluent_tcp = \"127.0.0.1:{port}\"\ntcp_frame_timeout_s = 60\n"),
    );
    let size = 512 << 10;
    // Fluent: an array of nils (not an event: one parse error), against
    // as many bytes of 256-byte arrays of nils.
    let mut huge_array = vec![0xdd];
    huge_array.extend(((size - 5) as u32).to_be_bytes());
    huge_array.resize(size, 0xc0);
    let mut small_arrays = Vec::with_capacity(size);
    while small_arrays.len() + 256 <= size {
        small_arrays.extend([0xdc, 0x00, 0xfd]);
        small_arrays.resize(small_arrays.len() + 253, 0xc0);
    }
    // Syslog (newline) and GELF (NUL): one long frame against 256-byte ones.
    let frames = |delimiter: u8| {
        let mut small = Vec::with_capacity(size);
        while small.len() + 256 <= size {
            small.extend_from_slice(&[b'x'; 255]);
            small.push(delimiter);
        }
        let mut huge = vec![b'y'; size - 1024];
        huge.push(delimiter);
        (small, huge)
    };
    let (syslog_small, syslog_huge) = frames(b'\n');
    let (gelf_small, gelf_huge) = frames(0);
    let cases = [
        (
            "fluent_tcp",
            port,
            "cowlogd_parse_errors_total{input=\"fluent_tcp\",reason=\"invalid_forward\"}",
            small_arrays,
            huge_array,
        ),
        (
            "syslog_tcp",
            daemon.ports.syslog,
            "cowlogd_received_messages_total{input=\"syslog_tcp\"}",
            syslog_small,
            syslog_huge,
        ),
        (
            "gelf_tcp",
            daemon.ports.gelf,
            "cowlogd_received_messages_total{input=\"gelf_tcp\"}",
            gelf_small,
            gelf_huge,
        ),
    ];
    for (input, port, counter, small, huge) in cases {
        let base = daemon.metric(counter);
        let normal = cpu_for(
            &daemon,
            || trickle(&daemon, port, &small),
            || daemon.metric(counter) >= base + (small.len() / 256) as f64,
        );
        let base = daemon.metric(counter);
        let trickled = cpu_for(
            &daemon,
            || trickle(&daemon, port, &huge),
            || daemon.metric(counter) > base,
        );
        assert!(
            trickled < 3.0 * normal + 0.3,
            "{input}: a trickled 512 KiB object took {trickled:.2} s of CPU, as many small ones {normal:.2} s"
        );
    }
}

#[test]
fn f2b_is_only_for_f2b_allow_while_metrics_allow_scrapes() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[metrics]\nallow = [\"127.0.0.0/8\"]\nf2b_allow = [\"127.0.0.1/32\"]\n[f2b]\nenabled = true\n",
    );
    let get_from = |source: &str, path: &str| {
        let mut stream = daemon.tcp_from(source, daemon.ports.metrics);
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(get_from("127.0.0.2", "/metrics").starts_with("HTTP/1.1 200"));
    let refused = get_from("127.0.0.2", "/f2b");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(!refused.contains("offenders"), "{refused}");
    assert!(get_from("127.0.0.1", "/f2b").starts_with("HTTP/1.1 200"));
}

#[test]
fn garbage_objects_on_fluent_are_parse_errors_not_dropped_messages() {
    let redis = RedisServer::start();
    let (daemon, port) = fluent_daemon(&redis, "");
    // 1,000 positive fixints: each a complete MessagePack object.
    let mut stream = daemon.tcp(port);
    stream.write_all(&[0x01; 1000]).unwrap();
    stream
        .write_all(&acked_event_with(&postfix_line(1), "after", None))
        .unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    assert_eq!(
        daemon
            .metric("cowlogd_parse_errors_total{input=\"fluent_tcp\",reason=\"invalid_forward\"}"),
        1000.0
    );
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"parse\",reason=\"invalid_forward\"}"),
        0.0
    );
}

#[test]
fn the_start_up_line_names_every_input_and_unix_socket_timeouts_count_in_their_own_pool() {
    let redis = RedisServer::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fluent.sock");
    let daemon = Daemon::start(
        &redis.url(),
        &format!(
            "[inputs]\nfluent_tcp = \"127.0.0.1:{port}\"\nfluent_unix = \"{}\"\ntcp_first_byte_timeout_s = 1\n",
            socket.display()
        ),
    );
    let started = wait_for("the start-up line", || {
        daemon
            .log()
            .lines()
            .find(|l| l.contains("inputs="))
            .map(str::to_owned)
    });
    assert!(
        started.contains(&format!("fluent_tcp=127.0.0.1:{port}")),
        "{started}"
    );
    assert!(started.contains("fluent_unix="), "{started}");
    let silent = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let at = Instant::now();
    wait_for("the unix connection's first-byte timeout", || {
        let closed = daemon.metric(
            "cowlogd_connections_closed_total{pool=\"fluent_unix\",reason=\"first_byte_timeout\"}",
        );
        (closed == 1.0).then_some(())
    });
    assert!(at.elapsed() < Duration::from_secs(10));
    assert_eq!(
        daemon
            .metric("cowlogd_connections_closed_total{pool=\"tcp\",reason=\"first_byte_timeout\"}"),
        0.0
    );
    drop(silent);
}
