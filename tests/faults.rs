use std::io::Write;
use std::time::Duration;

use crate::support::*;

#[test]
fn redis_restarted_mid_stream_reconnects_and_keeps_delivering() {
    let mut redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let mut stream = daemon.tcp(daemon.ports.syslog);
    let total = 1500;
    let restart_at = 500;
    for n in 0..total {
        if n == restart_at {
            redis.restart();
        }
        stream.write_all(&postfix_frame(n)).unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    drop(stream);
    // The old server's data is gone; everything from the restart on must arrive.
    let present = wait_for("messages after the restart", || {
        let present = message_indices(&redis.list("POSTFIX_MAILLOG"));
        (restart_at..total)
            .all(|n| present.contains(&n))
            .then_some(present)
    });
    assert!(present.len() >= total - restart_at);
    assert!(daemon.metric("cowlogd_redis_reconnects_total") >= 1.0);
    assert_eq!(daemon.metric_sum("cowlogd_dropped_messages_total"), 0.0);
    assert_eq!(daemon.http_get("/ready").0, 200);
}

#[test]
fn sigterm_flushes_queued_messages_then_exits_zero() {
    let redis = RedisServer::start();
    let mut daemon = Daemon::start(&redis.url(), "");
    redis.signal("STOP");
    let mut stream = daemon.tcp(daemon.ports.syslog);
    for n in 0..2000 {
        stream.write_all(&postfix_frame(n)).unwrap();
    }
    drop(stream);
    daemon.wait_received("syslog_tcp", 2000);
    let resume = {
        let pid = redis.pid();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status()
                .unwrap();
        })
    };
    let status = daemon.terminate();
    resume.join().unwrap();
    assert!(status.success(), "exit status {status:?}\n{}", daemon.log());
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 2000);
}

#[test]
fn udp_burst_losses_equal_the_reported_drops() {
    let redis = RedisServer::start();
    let config = "[redis]\nlist_cap = 100000\nqueue_messages = 2000\n[inputs]\nudp_sockets = 1\nudp_receive_buffer = 16384\n";
    let daemon = Daemon::start(&redis.url(), config);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram = |n: usize| {
        crate::support::go_gelf::compress(
            &docker_gelf(POSTFIX, &postfix_line(n)),
            crate::support::go_gelf::GoCompression::Gzip(1),
        )
    };
    let mut sent = 0usize;
    for n in 0..30_000 {
        if socket
            .send_to(&datagram(n), ("127.0.0.1", daemon.ports.gelf))
            .is_ok()
        {
            sent += 1;
        }
    }
    let (stored, drops) = wait_for("stored + dropped to add up to sent", || {
        let stored = redis.llen("POSTFIX_MAILLOG");
        let drops = daemon.metric_sum("cowlogd_dropped_messages_total") as usize;
        (stored + drops == sent).then_some((stored, drops))
    });
    // Stable: nothing more arrives or is counted afterwards.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), stored);
    assert_eq!(
        daemon.metric_sum("cowlogd_dropped_messages_total") as usize,
        drops
    );
    eprintln!("udp burst: sent {sent}, stored {stored}, dropped {drops}");
}

#[test]
fn ready_follows_redis() {
    let mut redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    wait_for("ready", || {
        (daemon.http_get("/ready").0 == 200).then_some(())
    });
    redis.stop();
    wait_for("not ready", || {
        (daemon.http_get("/ready").0 == 503).then_some(())
    });
    assert_eq!(daemon.metric("cowlogd_redis_up"), 0.0);
    redis.restart();
    wait_for("ready again", || {
        (daemon.http_get("/ready").0 == 200).then_some(())
    });
}
