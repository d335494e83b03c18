//! The soak test: not run by default (it takes 10 minutes). Run it with
//!
//! ```sh
//! cargo test --release --test integration -- --ignored soak --nocapture
//! ```
//!
//! `COWLOGD_SOAK_SECONDS` shortens or lengthens it (default 600).

use std::io::Write;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::support::go_gelf::{self, GoCompression};
use crate::support::*;

#[test]
#[ignore = "takes 10 minutes; run with --ignored soak"]
fn soak_steady_valid_and_hostile_input_keeps_rss_flat() {
    let seconds: u64 = std::env::var("COWLOGD_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[inputs]\ntcp_idle_timeout_s = 5\n");
    let (gelf, syslog) = (daemon.ports.gelf, daemon.ports.syslog);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let load = std::thread::spawn(move || {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let hostile = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", syslog)).unwrap();
        let bomb = go_gelf::compress(&vec![b' '; 20 * 1024 * 1024], GoCompression::Gzip(9));
        let mut seed = 1u64;
        let mut random = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed
        };
        let (mut valid, mut tick) = (0u64, 0u64);
        while Instant::now() < deadline {
            // Each 10 ms: 20 valid GELF datagrams, 10 syslog lines, and hostile input.
            for _ in 0..20 {
                let line = postfix_line(valid as usize);
                let json = docker_gelf(POSTFIX, &line);
                let _ = udp.send_to(
                    &go_gelf::compress(&json, GoCompression::Gzip(1)),
                    ("127.0.0.1", gelf),
                );
                valid += 1;
            }
            for _ in 0..10 {
                let line = format!(
                    "<30>Nov 24 13:49:59 {DOVECOT}[1]: Nov 24 13:49:59 m dovecot: imap: Login {valid}\n"
                );
                let _ = tcp.write_all(line.as_bytes());
                valid += 1;
            }
            let garbage: Vec<u8> = (0..(random() % 1500)).map(|_| random() as u8).collect();
            let _ = hostile.send_to(&garbage, ("127.0.0.1", gelf));
            let _ = hostile.send_to(&garbage, ("127.0.0.1", syslog));
            let mut chunk = vec![0x1e, 0x0f];
            chunk.extend_from_slice(&random().to_be_bytes());
            chunk.extend_from_slice(&[0, 4]);
            chunk.extend(std::iter::repeat_n(b'c', 1000));
            let _ = hostile.send_to(&chunk, ("127.0.0.1", gelf));
            let _ = hostile.send_to(b"{\"short_message\": nope", ("127.0.0.1", gelf));
            if tick % 100 == 0 {
                let _ = hostile.send_to(&bomb, ("127.0.0.1", gelf));
                // An oversized frame and a connection left idle.
                if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", gelf)) {
                    let _ = c.write_all(&vec![b'{'; 3 * 1024 * 1024]);
                }
                let _ = std::net::TcpStream::connect(("127.0.0.1", syslog)).map(std::mem::forget);
            }
            tick += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        valid
    });
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        std::thread::sleep(
            Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now())),
        );
        samples.push(daemon.rss_kib());
        eprintln!(
            "soak: {:>4}s rss {} KiB",
            samples.len() * 10,
            samples.last().unwrap()
        );
    }
    let sent = load.join().unwrap();
    let written = daemon.metric("cowlogd_redis_entries_written_total");
    let dropped = daemon.metric_sum("cowlogd_dropped_messages_total");
    eprintln!(
        "soak: {sent} valid messages sent, {written} written, {dropped} dropped (all reasons, hostile input included)"
    );
    let warm = samples.get(samples.len() / 5).copied().unwrap_or(0);
    let peak_after_warm_up = samples[samples.len() / 5..]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    eprintln!("soak: rss after warm-up {warm} KiB, peak afterwards {peak_after_warm_up} KiB");
    assert!(
        peak_after_warm_up <= warm + warm / 4 + 8 * 1024,
        "RSS grew: {samples:?}"
    );
}
