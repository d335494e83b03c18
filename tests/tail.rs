//! `cowlogd tail` against a real redis-server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn entry(time: u64, priority: &str, program: &str, message: &str) -> String {
    format!(
        "{{\"time\":\"{time}\",\"priority\":\"{priority}\",\"program\":\"{program}\",\"message\":\"{message}\"}}\n"
    )
}

fn push(redis: &RedisServer, key: &str, entries: &[String]) {
    for e in entries {
        redis::cmd("LPUSH")
            .arg(key)
            .arg(e)
            .query::<()>(&mut redis.client())
            .unwrap();
    }
}

fn tail(redis_url: &str, args: &[&str]) -> (bool, String, String) {
    let args: Vec<&str> = std::iter::once("tail")
        .chain(args.iter().copied())
        .collect();
    run_cowlogd(&args, &[("COWLOGD_REDIS_URL", redis_url), ("TZ", "UTC")])
}

#[test]
fn tail_shows_the_newest_entries_of_the_mailcow_lists_oldest_first() {
    let redis = RedisServer::start();
    push(
        &redis,
        "POSTFIX_MAILLOG",
        &[
            entry(1_712_345_600, "info", "postfix/smtpd", "old one"),
            entry(
                1_712_345_678,
                "warning",
                "postfix/smtpd",
                "warning: hostname x does not resolve",
            ),
            entry(1_712_345_690, "info", "postfix/qmgr", "removed"),
        ],
    );
    push(
        &redis,
        "DOVECOT_MAILLOG",
        &[entry(
            1_712_345_680,
            "err",
            "dovecot",
            "auth: Error: bad \\xff byte",
        )],
    );
    let (ok, stdout, stderr) = tail(&redis.url(), &["-n", "2"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "2024-04-05 19:34:38 POSTFIX_MAILLOG warning postfix/smtpd    warning: hostname x does not resolve",
            "2024-04-05 19:34:40 DOVECOT_MAILLOG err     dovecot          auth: Error: bad \u{fffd} byte",
            "2024-04-05 19:34:50 POSTFIX_MAILLOG info    postfix/qmgr     removed",
        ]
    );
    let (ok, stdout, _) = tail(&redis.url(), &["POSTFIX_MAILLOG", "-n", "1", "--json"]);
    assert!(ok);
    assert_eq!(
        stdout,
        entry(1_712_345_690, "info", "postfix/qmgr", "removed")
    );
}

#[test]
fn tail_says_when_redis_is_unreachable_or_a_key_is_not_mailcow_entries() {
    let redis = RedisServer::start();
    redis::cmd("SET")
        .arg("SOGO_LOG")
        .arg("x")
        .query::<()>(&mut redis.client())
        .unwrap();
    let (ok, _, stderr) = tail(&redis.url(), &[]);
    assert!(!ok);
    assert!(
        stderr.contains("SOGO_LOG holds a string, not a list"),
        "{stderr}"
    );
    push(&redis, "OTHER", &["plain text".to_owned()]);
    let (ok, stdout, _) = tail(&redis.url(), &["OTHER"]);
    assert!(ok);
    assert_eq!(stdout, "OTHER (not a mailcow entry) plain text\n");
    let port = free_port();
    let (ok, _, stderr) = tail(&format!("redis://:secret@127.0.0.1:{port}"), &[]);
    assert!(!ok);
    assert!(
        stderr.contains("unreachable") && !stderr.contains("secret"),
        "{stderr}"
    );
}

/// Runs `cowlogd tail ARGS` in the background; its stdout lines arrive on
/// the returned channel.
fn spawn_tail(
    url: &str,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let (child, stdout, _stderr) = spawn_tail_with_stderr(url, args);
    (child, stdout)
}

/// Like [`spawn_tail`], with its stderr lines on a second channel.
fn spawn_tail_with_stderr(
    url: &str,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cowlogd"))
        .arg("tail")
        .args(args)
        .env("COWLOGD_REDIS_URL", url)
        .env("TZ", "UTC")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let stdout = lines(Box::new(child.stdout.take().unwrap()));
    let stderr = lines(Box::new(child.stderr.take().unwrap()));
    (child, stdout, stderr)
}

/// Every line that has arrived on `rx` by now.
fn drain(rx: &std::sync::mpsc::Receiver<String>) -> Vec<String> {
    rx.try_iter().collect()
}

#[test]
fn tail_follow_shows_new_entries_and_channel_shows_payloads() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    // An entry from before is not shown with -n 0.
    push(
        &redis,
        "POSTFIX_MAILLOG",
        &[entry(1, "info", "p", "before")],
    );
    let (mut follow, lines) = spawn_tail(&redis.url(), &["--follow", "-n", "0"]);
    let (mut channel, payloads) = spawn_tail(&redis.url(), &["--channel"]);
    std::thread::sleep(Duration::from_millis(500));
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(9)));
    let line = lines.recv_timeout(PATIENCE).unwrap();
    assert!(
        line.ends_with(
            "POSTFIX_MAILLOG info    postfix/smtpd    connect from unknown[203.0.113.9] msg 9"
        ),
        "{line}"
    );
    assert_eq!(
        payloads.recv_timeout(PATIENCE).unwrap(),
        "connect from unknown[203.0.113.9] msg 9"
    );
    let _ = follow.kill();
    let _ = channel.kill();
    let _ = follow.wait();
    let _ = channel.wait();
}

#[test]
fn tail_follow_and_channel_keep_going_across_a_redis_restart_and_say_so_once() {
    let mut redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let (mut follow, lines, follow_err) =
        spawn_tail_with_stderr(&redis.url(), &["--follow", "-n", "0"]);
    let (mut channel, payloads, channel_err) = spawn_tail_with_stderr(&redis.url(), &["--channel"]);
    std::thread::sleep(Duration::from_millis(500));
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(1)));
    assert!(lines.recv_timeout(PATIENCE).unwrap().ends_with("msg 1"));
    assert!(payloads.recv_timeout(PATIENCE).unwrap().ends_with("msg 1"));
    // Redis goes away for a while and comes back empty on the same port.
    redis.stop();
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();
    // Long enough for the back-off (at most 2 s) to find it back.
    std::thread::sleep(Duration::from_secs(4));
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(2)));
    assert!(lines.recv_timeout(PATIENCE).unwrap().ends_with("msg 2"));
    assert!(payloads.recv_timeout(PATIENCE).unwrap().ends_with("msg 2"));
    assert!(follow.try_wait().unwrap().is_none(), "tail -f still runs");
    assert!(
        channel.try_wait().unwrap().is_none(),
        "tail --channel still runs"
    );
    for (what, stderr) in [
        ("-f", drain(&follow_err)),
        ("--channel", drain(&channel_err)),
    ] {
        let lost = stderr.iter().filter(|l| l.contains("unreachable")).count();
        let back = stderr.iter().filter(|l| l.contains("again")).count();
        assert_eq!((lost, back), (1, 1), "tail {what} said: {stderr:?}");
    }
    for child in [&mut follow, &mut channel] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn tail_follow_waits_for_a_redis_that_is_down_at_start() {
    let mut redis = RedisServer::start();
    redis.stop();
    let (mut follow, lines, stderr) = spawn_tail_with_stderr(&redis.url(), &["-f", "-n", "5"]);
    let said = stderr.recv_timeout(PATIENCE).unwrap();
    assert!(said.contains("unreachable"), "{said}");
    // The reason once, not the client's error and its source both.
    assert_eq!(said.matches("Connection refused").count(), 1, "{said}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(follow.try_wait().unwrap().is_none(), "tail -f waits");
    redis.restart();
    push(
        &redis,
        "POSTFIX_MAILLOG",
        &[entry(1_712_345_600, "info", "postfix/smtpd", "late")],
    );
    let line = lines.recv_timeout(PATIENCE).unwrap();
    assert!(line.ends_with("late"), "{line}");
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn tail_says_on_stderr_when_a_key_does_not_exist_and_exits_0() {
    let redis = RedisServer::start();
    let (ok, stdout, stderr) = tail(&redis.url(), &["NO_SUCH_LIST"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("NO_SUCH_LIST does not exist"), "{stderr}");
    let (ok, _, stderr) = tail(&redis.url(), &["NOTHING:*"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("no list matches NOTHING:*"), "{stderr}");
}

#[test]
fn tail_reads_every_list_a_pattern_matches() {
    let redis = RedisServer::start();
    push(
        &redis,
        "LOGS:shop-web-1",
        &[entry(1_712_345_601, "info", "", "from web")],
    );
    push(
        &redis,
        "LOGS:shop-db-1",
        &[entry(1_712_345_602, "info", "", "from db")],
    );
    push(
        &redis,
        "OTHER",
        &[entry(1_712_345_603, "info", "", "not matched")],
    );
    redis::cmd("SET")
        .arg("LOGS:a-string")
        .arg("x")
        .query::<()>(&mut redis.client())
        .unwrap();
    let (ok, stdout, stderr) = tail(&redis.url(), &["LOGS:*"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].contains("LOGS:shop-web-1") && lines[0].ends_with("from web"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("LOGS:shop-db-1") && lines[1].ends_with("from db"),
        "{stdout}"
    );
}

#[test]
fn tail_says_why_redis_is_unreachable_once() {
    let port = free_port();
    let (ok, _, stderr) = tail(&format!("redis://127.0.0.1:{port}"), &[]);
    assert!(!ok);
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
}

#[test]
fn a_pattern_shows_at_most_256_lists_and_says_so() {
    let redis = RedisServer::start();
    let mut connection = redis.client();
    for n in 0..300 {
        redis::cmd("LPUSH")
            .arg(format!("LOGS:c-{n:03}"))
            .arg(entry(1_712_345_600 + n, "info", "", &format!("from {n}")))
            .query::<()>(&mut connection)
            .unwrap();
    }
    let (ok, stdout, stderr) = tail(&redis.url(), &["LOGS:*", "-n", "1"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 256, "{stderr}");
    assert!(
        stderr.contains("more than 256 lists match LOGS:*"),
        "{stderr}"
    );
    // The first 256 by name.
    assert!(stdout.contains("LOGS:c-255") && !stdout.contains("LOGS:c-256"));
}
