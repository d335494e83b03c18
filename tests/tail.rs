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
    let mut child = Command::new(env!("CARGO_BIN_EXE_cowlogd"))
        .arg("tail")
        .args(args)
        .env("COWLOGD_REDIS_URL", url)
        .env("TZ", "UTC")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
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
