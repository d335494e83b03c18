use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn redis_stopped_for_30s_loses_nothing_within_the_buffer_and_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let mut stream = daemon.tcp(daemon.ports.syslog);
    let (total, stop_at, check_at, start_at) = (3_600, 300, 600, 3_300);
    let mut ready_during_outage = None;
    let started = Instant::now();
    for n in 0..total {
        match n {
            _ if n == stop_at => redis.shutdown_saving(),
            _ if n == check_at => ready_during_outage = Some(daemon.http_get("/ready").0),
            _ if n == start_at => redis.restart(),
            _ => {}
        }
        stream.write_all(&postfix_frame(n)).unwrap();
        // A steady 100 messages a second.
        let due = started + Duration::from_millis(10 * (n as u64 + 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    drop(stream);
    let present = wait_for("every message in Redis", || {
        let present = message_indices(&redis.list("POSTFIX_MAILLOG"));
        (present.len() == total).then_some(present)
    });
    assert_eq!(present.iter().next_back(), Some(&(total - 1)));
    assert_eq!(ready_during_outage, Some(503));
    assert_eq!(daemon.http_get("/ready").0, 200);
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
    assert!(daemon.metric("cowlogd_redis_reconnects_total") >= 1.0);
}

#[test]
fn beyond_the_buffer_exactly_the_counted_oldest_messages_are_dropped() {
    let mut redis = RedisServer::start();
    let config = "[redis]\nqueue_messages = 500\n[inputs]\ntcp_queue_wait_ms = 0\n";
    let daemon = Daemon::start(&redis.url(), config);
    let mut stream = daemon.tcp(daemon.ports.syslog);
    for n in 0..300 {
        stream.write_all(&postfix_frame(n)).unwrap();
    }
    redis.wait_list("POSTFIX_MAILLOG", 300);
    redis.shutdown_saving();
    for n in 300..2_300 {
        stream.write_all(&postfix_frame(n)).unwrap();
        if n % 100 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    daemon.wait_received("syslog_tcp", 2_300);
    assert!(daemon.metric("cowlogd_queue_messages") <= 500.0);
    redis.restart();
    let dropped = daemon
        .metric("cowlogd_dropped_messages_total{stage=\"queue\",reason=\"queue_full\"}")
        as usize;
    let present = wait_for("the kept messages in Redis", || {
        let present = message_indices(&redis.list("POSTFIX_MAILLOG"));
        (present.len() + dropped == 2_300).then_some(present)
    });
    let missing: Vec<usize> = (0..2_300).filter(|n| !present.contains(n)).collect();
    let ranges = missing
        .chunk_by(|a, b| b - a == 1)
        .map(|r| format!("{}..={}", r[0], r[r.len() - 1]))
        .collect::<Vec<_>>();
    assert!(dropped >= 1_400, "dropped {dropped}");
    // Oldest first: what is missing is one run of the oldest outage
    // messages (whole batches: the queue may keep a few under 500); the
    // writer's in-flight batch and everything newer survived.
    assert_eq!(ranges.len(), 1, "missing {ranges:?}");
    assert_eq!(missing.len(), dropped);
    assert!(
        missing[0] > 300 && *missing.last().unwrap() < 1_850,
        "missing {ranges:?}"
    );
}

#[test]
fn frozen_redis_times_out_stays_bounded_and_recovers_after_sigcont() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[redis]\nresponse_timeout_ms = 500\nconnect_timeout_ms = 500\n",
    );
    let mut stream = daemon.tcp(daemon.ports.syslog);
    for n in 0..100 {
        stream.write_all(&postfix_frame(n)).unwrap();
    }
    redis.wait_list("POSTFIX_MAILLOG", 100);
    redis.signal("STOP");
    let rss_before = daemon.rss_kib();
    for n in 100..600 {
        stream.write_all(&postfix_frame(n)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(daemon.metric("cowlogd_redis_errors_total{kind=\"timeout\"}") >= 1.0);
    assert_eq!(daemon.http_get("/ready").0, 503);
    assert!(daemon.metric("cowlogd_queue_messages") <= 500.0);
    assert!(daemon.rss_kib().saturating_sub(rss_before) < 32 * 1024);
    redis.signal("CONT");
    wait_for("every message after SIGCONT", || {
        let present = message_indices(&redis.list("POSTFIX_MAILLOG"));
        (0..600).all(|n| present.contains(&n)).then_some(())
    });
    wait_for("ready again", || {
        (daemon.http_get("/ready").0 == 200).then_some(())
    });
}

#[test]
fn a_key_of_the_wrong_type_does_not_stall_other_keys_or_the_channel() {
    let redis = RedisServer::start();
    redis::cmd("SET")
        .arg("POSTFIX_MAILLOG")
        .arg("not a list")
        .query::<()>(&mut redis.client())
        .unwrap();
    let channel = Subscriber::start(&redis, "F2B_CHANNEL");
    let daemon = Daemon::start(&redis.url(), "");
    let mut stream = daemon.tcp(daemon.ports.gelf);
    for n in 0..5 {
        stream
            .write_all(&docker_gelf(POSTFIX, &postfix_line(n)))
            .unwrap();
        stream.write_all(b"\0").unwrap();
        let line = format!("Nov 24 13:49:59 mail dovecot: auth: Error: fail {n}");
        stream.write_all(&docker_gelf(DOVECOT, &line)).unwrap();
        stream.write_all(b"\0").unwrap();
    }
    drop(stream);
    assert_eq!(redis.wait_list("DOVECOT_MAILLOG", 5).len(), 5);
    assert_eq!(channel.wait(10).len(), 10);
    wait_for("the refused pushes counted", || {
        (daemon.metric("cowlogd_dropped_messages_total{stage=\"redis\",reason=\"rejected\"}")
            == 5.0)
            .then_some(())
    });
    assert!(daemon.metric("cowlogd_redis_errors_total{kind=\"wrongtype\"}") >= 1.0);
    assert!(daemon.log().contains("WRONGTYPE"));
}

#[test]
fn wrong_password_is_reported_retried_and_never_leaked() {
    let redis = RedisServer::start_with(&["--requirepass", "right-password"]);
    let url = format!("redis://:wrong-password-123@127.0.0.1:{}", redis.port);
    let mut daemon = Daemon::start(&url, "");
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(daemon.alive(), "cowlogd exited on a wrong password");
    let (status, body) = daemon.http_get("/ready");
    assert_eq!(status, 503);
    assert!(
        body.starts_with("redis not writable: ")
            && body.to_lowercase().contains("authentication failed"),
        "{body}"
    );
    assert!(!body.contains("wrong-password-123"));
    assert!(
        daemon.metric("cowlogd_redis_errors_total{kind=\"auth\"}") >= 2.0,
        "no retries"
    );
    let log = daemon.log();
    assert!(
        log.to_lowercase().contains("auth") || log.contains("WRONGPASS"),
        "{log}"
    );
    assert!(!log.contains("wrong-password-123"), "password in the log");
    assert!(
        !daemon.metrics().contains("wrong-password-123"),
        "password in the metrics"
    );
}

#[test]
fn rediss_with_a_custom_ca_delivers_and_a_wrong_ca_is_reported() {
    let redis = RedisServer::start_tls();
    let channel = Subscriber::start(&redis, "F2B_CHANNEL");
    let config = format!("[redis]\ntls_ca_file = \"{}\"\n", redis.tls_ca().display());
    let daemon = Daemon::start(&redis.url(), &config);
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(4)));
    assert!(redis.wait_list("POSTFIX_MAILLOG", 1)[0].contains(" msg 4"));
    assert_eq!(channel.wait(1).len(), 1);
    assert_eq!(daemon.http_get("/ready").0, 200);
    // A CA in the system store (here a temporary one named by
    // SSL_CERT_FILE, as OpenSSL and rustls-native-certs read it) is trusted
    // without tls_ca_file.
    let ca = redis.tls_ca().display().to_string();
    let system = Daemon::start_with_env(&redis.url(), "", &[("SSL_CERT_FILE", &ca)]);
    system.udp(system.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(5)));
    redis.wait_list("POSTFIX_MAILLOG", 2);
    assert_eq!(system.http_get("/ready").0, 200);
    // Without the CA the system roots do not trust the server.
    let mut untrusting = Daemon::start(&redis.url(), "");
    std::thread::sleep(Duration::from_millis(2_000));
    assert!(untrusting.alive());
    assert_eq!(untrusting.http_get("/ready").0, 503);
    assert!(untrusting.metric_sum("cowlogd_redis_errors_total") >= 1.0);
}

#[test]
fn sigterm_under_load_flushes_and_exits_in_bounded_time() {
    let redis = RedisServer::start();
    let mut daemon = Daemon::start(&redis.url(), "[redis]\nlist_cap = 100000000\n");
    let port = daemon.ports.syslog;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if stream.write_all(&postfix_frame(n)).is_err() {
                    break;
                }
                n += 1;
            }
            n
        })
    };
    wait_for("load flowing", || {
        (redis.llen("POSTFIX_MAILLOG") >= 2_000).then_some(())
    });
    let written_before = daemon.metric("cowlogd_redis_entries_written_total");
    let started = Instant::now();
    let status = daemon.terminate();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let log = daemon.log();
    assert!(log.contains("shutting down"));
    assert!(!log.contains("dropped"), "{log}");
    let stored = redis.llen("POSTFIX_MAILLOG");
    assert!(stored as f64 >= written_before && stored <= sent);
}

#[test]
fn sigterm_with_redis_gone_drops_the_queue_after_the_flush_deadline_and_says_so() {
    let mut redis = RedisServer::start();
    let mut daemon = Daemon::start(&redis.url(), "[redis]\nshutdown_flush_ms = 1000\n");
    redis.stop();
    let mut stream = daemon.tcp(daemon.ports.syslog);
    for n in 0..100 {
        stream.write_all(&postfix_frame(n)).unwrap();
    }
    drop(stream);
    daemon.wait_received("syslog_tcp", 100);
    let started = Instant::now();
    let status = daemon.terminate();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let log = daemon.log();
    assert!(
        log.contains("shutdown: Redis did not take the queued messages in time"),
        "{log}"
    );
    // What was on its way when Redis went is not known to be lost.
    let dropped = log
        .lines()
        .filter(|l| l.contains("dropped messages="))
        .chain(
            log.lines()
                .filter(|l| l.contains("Redis may have applied it")),
        )
        .filter_map(|l| l.rsplit_once("messages=")?.1.parse::<usize>().ok())
        .sum::<usize>();
    assert_eq!(dropped, 100, "{log}");
}
