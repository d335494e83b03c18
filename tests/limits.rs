use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::support::go_gelf::{self, GoCompression};
use crate::support::*;

fn long_line(n: usize) -> String {
    let noise = go_gelf::noise(n as u64 + 1, 5000);
    format!("{} {noise}", postfix_line(n))
}

#[test]
fn flood_of_random_chunk_ids_does_not_stop_a_docker_senders_chunked_messages() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let target = ("127.0.0.1", daemon.ports.gelf);
    let rss_before = daemon.rss_kib();
    // Another host than the Docker sender's (127.0.0.1).
    let flooders: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.2:0").unwrap())
        .collect();
    let docker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut chunk = vec![0x1e, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    chunk.extend(std::iter::repeat_n(b'F', 1000));
    // The flood goes in rounds of 500 chunks, each round read by the daemon
    // before the next is sent: far more incomplete messages than the caps
    // allow, but never more than the receive buffers hold, so what is tested
    // is the reassembler's policy and not the kernel's (a kernel drop makes
    // the wait below fail, not the assertions).
    let mut sent_bytes = 0usize;
    let mut flood_id = 0u64;
    for round in 0..40 {
        for _ in 0..500 {
            chunk[2..10]
                .copy_from_slice(&flood_id.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            flooders[flood_id as usize % 4]
                .send_to(&chunk, target)
                .unwrap();
            sent_bytes += chunk.len();
            flood_id += 1;
        }
        if round % 2 == 0 {
            let n = round / 2;
            let id = (n as u64 + 1).to_be_bytes();
            for datagram in go_gelf::datagrams(
                &docker_gelf(POSTFIX, &long_line(n)),
                GoCompression::Gzip(1),
                id,
            ) {
                docker.send_to(&datagram, target).unwrap();
                sent_bytes += datagram.len();
            }
        }
        wait_for(&format!("the daemon to read {sent_bytes} bytes"), || {
            (daemon.metric("cowlogd_received_bytes_total{input=\"gelf_udp\"}") >= sent_bytes as f64)
                .then_some(())
        });
    }
    let list = redis.wait_list("POSTFIX_MAILLOG", 20);
    for n in 0..20 {
        assert!(
            list.iter().any(|e| e.contains(&format!(" msg {n} "))),
            "message {n} lost in the flood"
        );
    }
    // The flooding host is held to its per-sender cap, over all its
    // sockets; the rest is refused.
    assert!(daemon.metric("cowlogd_gelf_pending_messages") <= 1024.0 + 20.0);
    assert!(
        daemon
            .metric("cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"chunk_sender_limit\"}")
            > 15_000.0
    );
    let grown = daemon.rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn pending_chunk_bytes_cap_evicts_the_oldest_and_memory_stays_bounded() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[limits]\ngelf_pending_bytes = 1000000\n");
    let sockets: Vec<UdpSocket> = (0..20)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut chunk = vec![0x1e, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
    chunk.extend(std::iter::repeat_n(b'P', 1400));
    for i in 0u64..5_000 {
        chunk[2..10].copy_from_slice(&i.to_be_bytes());
        sockets[i as usize % 20]
            .send_to(&chunk, ("127.0.0.1", daemon.ports.gelf))
            .unwrap();
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let evicted = wait_for("evictions counted", || {
        let evicted = daemon
            .metric("cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"chunk_evicted\"}");
        (evicted > 1000.0).then_some(evicted)
    });
    assert!(
        daemon.metric("cowlogd_gelf_pending_bytes") <= 1_000_000.0,
        "evicted {evicted}"
    );
}

#[test]
fn filling_many_small_started_messages_stays_under_the_byte_cap_in_memory_too() {
    let redis = RedisServer::start();
    let cap = 16 * 1024 * 1024;
    let daemon = Daemon::start(
        &redis.url(),
        &format!("[limits]\ngelf_pending_bytes = {cap}\n"),
    );
    let rss_before = daemon.rss_kib();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = ("127.0.0.1", daemon.ports.gelf);
    let datagram = |id: u64, seq: u8, payload: &[u8]| {
        let mut d = vec![0x1e, 0x0f];
        d.extend_from_slice(&id.to_be_bytes());
        d.extend_from_slice(&[seq, 128]);
        d.extend_from_slice(payload);
        d
    };
    // 400 messages opened with a one-byte chunk, then each filled towards
    // 128 × 1,400 bytes: 70 MB if nothing held the cap.
    for id in 0..400 {
        socket.send_to(&datagram(id, 0, b"x"), target).unwrap();
    }
    let fill = vec![b'y'; 1_400];
    let mut peak_pending = 0.0f64;
    for seq in 1..128u8 {
        for id in 0..400 {
            socket.send_to(&datagram(id, seq, &fill), target).unwrap();
        }
        std::thread::sleep(Duration::from_millis(4));
        if seq % 16 == 0 {
            peak_pending = peak_pending.max(daemon.metric("cowlogd_gelf_pending_bytes"));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    peak_pending = peak_pending.max(daemon.metric("cowlogd_gelf_pending_bytes"));
    assert!(peak_pending <= cap as f64, "pending bytes {peak_pending}");
    assert!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"chunk_evicted\"}")
            >= 100.0
    );
    let grown = daemon.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 2 * 16 * 1024,
        "RSS grew by {grown} KiB for a 16 MiB cap"
    );
}

#[test]
fn many_sockets_of_one_host_cannot_evict_another_hosts_half_received_message() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let target = ("127.0.0.1", daemon.ports.gelf);
    let docker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagrams = go_gelf::datagrams(
        &docker_gelf(POSTFIX, &long_line(7)),
        GoCompression::Gzip(1),
        *b"dockerid",
    );
    assert!(datagrams.len() >= 2);
    let (first, rest) = datagrams.split_at(1);
    docker.send_to(&first[0], target).unwrap();
    // Nine sockets of 127.0.0.2, 1,024 first chunks each: more than the
    // global cap of 8,192 if they counted as nine senders.
    let mut chunk = vec![0x1e, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4];
    chunk.extend(std::iter::repeat_n(b'F', 100));
    for socket in 0..9u64 {
        let flood = UdpSocket::bind("127.0.0.2:0").unwrap();
        for i in 0..1_024u64 {
            chunk[2..10].copy_from_slice(&(socket << 32 | i).to_be_bytes());
            flood.send_to(&chunk, target).unwrap();
            if i % 256 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    for datagram in rest {
        docker.send_to(datagram, target).unwrap();
    }
    let list = redis.wait_list("POSTFIX_MAILLOG", 1);
    assert!(list[0].contains(" msg 7 "));
    // Each refused flood message counted once, though four chunks each
    // would follow; no message of the other host was evicted.
    let refused = daemon
        .metric("cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"chunk_sender_limit\"}");
    let kernel_drops = daemon
        .metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"udp_receive_buffer\"}");
    assert!(
        refused <= 8.0 * 1024.0 && refused >= 8.0 * 1024.0 - kernel_drops,
        "refused {refused}, kernel drops {kernel_drops}"
    );
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"chunk_evicted\"}"),
        0.0
    );
}

#[test]
fn a_refused_or_oversized_chunked_message_is_counted_once() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[limits]\ngelf_pending_per_sender = 1\ngelf_max_message_bytes = 10000\ngelf_chunk_timeout_ms = 1000\n",
    );
    let target = ("127.0.0.1", daemon.ports.gelf);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |id: u8, seq: u8, count: u8, payload: &[u8]| {
        let mut d = vec![0x1e, 0x0f, id, 0, 0, 0, 0, 0, 0, 0, seq, count];
        d.extend_from_slice(payload);
        socket.send_to(&d, target).unwrap();
    };
    send(1, 0, 2, b"held");
    // Refused by the sender limit: four chunks, one drop.
    for seq in 0..4 {
        send(2, seq, 4, b"x");
    }
    let other = UdpSocket::bind("127.0.0.3:0").unwrap();
    // Oversized: ten chunks of 1,400 bytes past a 10,000-byte limit.
    for seq in 0..10u8 {
        let mut d = vec![0x1e, 0x0f, 3, 0, 0, 0, 0, 0, 0, 0, seq, 10];
        d.extend(std::iter::repeat_n(b'z', 1_400));
        other.send_to(&d, target).unwrap();
    }
    wait_for("the drops counted", || {
        (daemon.metric_sum("cowlogd_dropped_messages_total") >= 2.0).then_some(())
    });
    // Past the 1 s deadline nothing more is counted for them.
    std::thread::sleep(Duration::from_millis(1_600));
    let drop = |reason: &str| {
        daemon.metric(&format!(
            "cowlogd_dropped_messages_total{{stage=\"gelf\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(drop("chunk_sender_limit"), 1.0);
    assert_eq!(drop("chunk_too_large"), 1.0);
    // Only message 1, which really was incomplete, timed out.
    assert_eq!(drop("chunk_timeout"), 1.0);
}

#[test]
fn connection_caps_refuse_the_flooder_and_serve_other_senders() {
    let redis = RedisServer::start();
    let config = "[inputs]\ntcp_max_connections = 50\ntcp_max_connections_per_source = 5\n";
    let daemon = Daemon::start(&redis.url(), config);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(daemon.tcp(daemon.ports.syslog));
    }
    wait_for("15 refusals counted", || {
        (daemon
            .metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"connection_limit\"}")
            == 15.0)
            .then_some(())
    });
    // The refused ones are closed by the daemon: reading gives EOF.
    let closed = held
        .iter_mut()
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            matches!(s.read(&mut [0u8; 1]), Ok(0))
        })
        .filter(|closed| *closed)
        .count();
    assert_eq!(closed, 15);
    let mut other = daemon.tcp_from("127.0.0.2", daemon.ports.syslog);
    other
        .write_all(format!("<30>Nov 24 13:49:59 {POSTFIX}[1]: {}\n", postfix_line(7)).as_bytes())
        .unwrap();
    assert!(redis.wait_list("POSTFIX_MAILLOG", 1)[0].contains(" msg 7"));
    assert_eq!(
        daemon.metric("cowlogd_tcp_connections{input=\"syslog_tcp\"}"),
        6.0
    );
}

#[test]
fn slow_sender_is_disconnected_and_counted_while_others_are_served() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[inputs]\ntcp_frame_timeout_s = 1\n");
    let mut slow = daemon.tcp(daemon.ports.syslog);
    slow.set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    for byte in b"<30>Nov 24 13:49:59 x[1]: a frame that never ends"
        .iter()
        .cycle()
        .take(40)
    {
        if slow.write_all(&[*byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut fast = daemon.tcp(daemon.ports.syslog);
    fast.write_all(format!("<30>Nov 24 13:49:59 {POSTFIX}[1]: {}\n", postfix_line(3)).as_bytes())
        .unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);
    assert!(
        closed_after.is_some(),
        "the trickling connection was never closed"
    );
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"slow_sender\"}"),
        1.0
    );
}

#[test]
fn long_messages_are_cut_with_a_marker_and_counted() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[limits]\nmax_message_bytes = 1000\n");
    let line = format!("{} {}", postfix_line(1), "é".repeat(3000));
    daemon.udp(
        daemon.ports.gelf,
        &go_gelf::compress(&docker_gelf(POSTFIX, &line), GoCompression::Gzip(1)),
    );
    let list = redis.wait_list("POSTFIX_MAILLOG", 1);
    let entry: serde_json::Value = serde_json::from_str(&list[0]).unwrap();
    let message = entry["message"].as_str().unwrap();
    assert!(message.ends_with("...[truncated by cowlogd]"), "{message}");
    assert!(
        message.len() <= 1000 && message.len() > 990,
        "{}",
        message.len()
    );
    assert!(!message.contains("\\x"), "cut inside a character");
    assert_eq!(daemon.metric("cowlogd_truncated_messages_total"), 1.0);
}

#[test]
fn gzip_bomb_is_refused_at_the_cap_without_memory_growth() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let bomb = go_gelf::compress(&vec![b' '; 60 * 1024 * 1024], GoCompression::Gzip(9));
    assert!(
        bomb.len() < 65_000,
        "bomb of {} bytes does not fit a datagram",
        bomb.len()
    );
    let rss_before = daemon.rss_kib();
    for _ in 0..5 {
        daemon.udp(daemon.ports.gelf, &bomb);
    }
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(1)));
    redis.wait_list("POSTFIX_MAILLOG", 1);
    wait_for("five refusals", || {
        (daemon.metric("cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"decompress_cap\"}")
            == 5.0)
            .then_some(())
    });
    let grown = daemon.rss_kib().saturating_sub(rss_before);
    assert!(grown < 40 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn a_full_pool_admits_a_smaller_source_by_closing_a_connection_of_the_largest_holder() {
    let redis = RedisServer::start();
    let config = "[inputs]\ntcp_max_connections = 8\ntcp_max_connections_per_source = 5\n";
    let daemon = Daemon::start(&redis.url(), config);
    let mut open: Vec<std::net::TcpStream> =
        (0..5).map(|_| daemon.tcp(daemon.ports.syslog)).collect();
    open.extend((0..3).map(|_| daemon.tcp_from("127.0.0.2", daemon.ports.syslog)));
    wait_for("8 open connections", || {
        (daemon.metric("cowlogd_tcp_connections{input=\"syslog_tcp\"}") == 8.0).then_some(())
    });
    // A sixth from the largest holder is over its own cap: refused.
    let mut refused = daemon.tcp(daemon.ports.syslog);
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        matches!(refused.read(&mut [0u8; 1]), Ok(0)),
        "the sixth connection of one address was not closed"
    );
    assert_eq!(
        daemon
            .metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"connection_limit\"}"),
        1.0
    );
    // A newcomer from a third address gets in; one of the five closes.
    let mut newcomer = daemon.tcp_from("127.0.0.3", daemon.ports.syslog);
    let line = |n: usize| format!("<30>Nov 24 13:49:59 {POSTFIX}[1]: {}\n", postfix_line(n));
    newcomer.write_all(line(9).as_bytes()).unwrap();
    assert!(redis.wait_list("POSTFIX_MAILLOG", 1)[0].contains(" msg 9"));
    assert_eq!(
        daemon.metric("cowlogd_connections_closed_total{pool=\"tcp\",reason=\"evicted\"}"),
        1.0
    );
    let mut closed = 0;
    for stream in &mut open[..5] {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        closed += usize::from(matches!(stream.read(&mut [0u8; 1]), Ok(0)));
    }
    assert_eq!(closed, 1);
    // The smaller holder's connections keep delivering.
    open[7].write_all(line(8).as_bytes()).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 2);
}

#[test]
fn queue_byte_cap_holds_while_redis_is_away() {
    let mut redis = RedisServer::start();
    let config = "[redis]\nqueue_bytes = 50000\n[inputs]\ntcp_queue_wait_ms = 0\n";
    let daemon = Daemon::start(&redis.url(), config);
    redis.shutdown_saving();
    let mut stream = daemon.tcp(daemon.ports.syslog);
    for n in 0..2_000 {
        stream.write_all(&postfix_frame(n)).unwrap();
        if n % 100 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    daemon.wait_received("syslog_tcp", 2_000);
    assert!(daemon.metric("cowlogd_queue_bytes") <= 50_000.0);
    let dropped = daemon
        .metric("cowlogd_dropped_messages_total{stage=\"queue\",reason=\"queue_full\"}")
        as usize;
    assert!(dropped > 1_000, "dropped {dropped}");
    redis.restart();
    wait_for("kept + dropped = sent", || {
        let kept = message_indices(&redis.list("POSTFIX_MAILLOG")).len();
        (kept + dropped == 2_000).then_some(())
    });
}

#[test]
fn pending_message_cap_evicts_the_oldest_without_refusing_new_senders() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[limits]\ngelf_pending_messages = 100\n");
    let target = ("127.0.0.1", daemon.ports.gelf);
    let sockets: Vec<UdpSocket> = (0..20)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut chunk = vec![0x1e, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    chunk.extend(std::iter::repeat_n(b'M', 200));
    for i in 0u64..1_000 {
        chunk[2..10].copy_from_slice(&i.to_be_bytes());
        sockets[i as usize % 20].send_to(&chunk, target).unwrap();
    }
    wait_for("900 evictions counted", || {
        (daemon.metric("cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"chunk_evicted\"}")
            == 900.0)
            .then_some(())
    });
    assert!(daemon.metric("cowlogd_gelf_pending_messages") <= 100.0);
    // A new sender's chunked message still completes.
    let docker = UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in go_gelf::datagrams(
        &docker_gelf(POSTFIX, &long_line(1)),
        GoCompression::Gzip(1),
        *b"newcomer",
    ) {
        docker.send_to(&datagram, target).unwrap();
    }
    assert!(redis.wait_list("POSTFIX_MAILLOG", 1)[0].contains(" msg 1 "));
}

#[test]
fn malformed_input_is_counted_by_reason_and_good_input_next_to_it_is_kept() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let gelf = daemon.ports.gelf;
    daemon.udp(
        gelf,
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xffnot deflate at all",
    );
    daemon.udp(gelf, b"\x1e\x0fABCDEFGH\x00\x00zero chunks");
    daemon.udp(gelf, b"\x1e\x0fABCDEFGH\x05\x02sequence past count");
    daemon.udp(gelf, b"{\"short_message\": oops}");
    let mut cut = daemon.tcp(daemon.ports.syslog);
    cut.write_all(b"500 <30>Nov 24 13:49:59 x[1]: this frame promised 500 bytes")
        .unwrap();
    drop(cut);
    daemon.udp(gelf, &docker_gelf(POSTFIX, &postfix_line(9)));
    assert!(redis.wait_list("POSTFIX_MAILLOG", 1)[0].contains(" msg 9"));
    for (series, count) in [
        (
            "cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"decompress_error\"}",
            1.0,
        ),
        (
            "cowlogd_dropped_messages_total{stage=\"gelf\",reason=\"bad_chunk\"}",
            2.0,
        ),
        (
            "cowlogd_dropped_messages_total{stage=\"parse\",reason=\"invalid_gelf\"}",
            1.0,
        ),
        (
            "cowlogd_dropped_messages_total{stage=\"input\",reason=\"truncated\"}",
            1.0,
        ),
    ] {
        wait_for(series, || (daemon.metric(series) == count).then_some(()));
    }
}
