use std::io::Write;

use crate::support::*;

#[test]
fn list_keeps_the_cap_newest_first_after_10050_pushes() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let mut stream = std::io::BufWriter::new(daemon.tcp(daemon.ports.syslog));
    for n in 0..10_050 {
        let line = format!("<30>Nov 24 13:49:59 {POSTFIX}[4840]: {}\n", postfix_line(n));
        stream
            .write_all(format!("{} {line}", line.len()).as_bytes())
            .unwrap();
    }
    stream.flush().unwrap();
    drop(stream);
    wait_for("all 10050 written", || {
        (daemon.metric("cowlogd_redis_entries_written_total") == 10_050.0).then_some(())
    });
    let list = redis.list("POSTFIX_MAILLOG");
    assert_eq!(list.len(), 10_000);
    assert!(list[0].ends_with(" msg 10049\"}\n"), "{}", list[0]);
    assert!(list[9_999].ends_with(" msg 50\"}\n"), "{}", list[9_999]);
}

#[test]
fn entries_and_channel_payloads_are_byte_exact() {
    let redis = RedisServer::start();
    let channel = Subscriber::start(&redis, "F2B_CHANNEL");
    let daemon = Daemon::start(&redis.url(), "");
    // Quotes, a backslash, a tab, a slash and an invalid UTF-8 byte, via syslog.
    let line = b"<30>Nov 24 13:49:59 mailcowdockerized-postfix-mailcow-1[1]: Nov 24 13:49:59 mail postfix/smtpd[99]: warning: a \"q\" \\ \t/x caf\xe9 \xe2\x82\xac\n";
    daemon.udp(daemon.ports.syslog, line);
    let list = redis.wait_list("POSTFIX_MAILLOG", 1);
    let tail = r#","program":"postfix/smtpd","priority":"warning","message":"warning: a \"q\" \\ \t/x caf\\xe9 €"}"#;
    assert!(list[0].starts_with("{\"time\":\""));
    assert!(list[0].ends_with(&format!("{tail}\n")), "{}", list[0]);
    let payloads = channel.wait(1);
    assert_eq!(
        String::from_utf8(payloads[0].clone()).unwrap(),
        "warning: a \"q\" \\ __x caf\u{fffd} €"
    );
}

#[test]
fn sogo_entries_read_notice_and_keep_the_pid_prefix() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let line = "Nov 24 13:49:59 sogod [109]: mailcowdockerized_watchdog-mailcow_1.mailcowdockerized_mailcow-network \"GET /SOGo.index/ HTTP/1.1\" 200 2531/0 0.005 - - 0";
    daemon.udp(daemon.ports.gelf, &docker_gelf(SOGO, line));
    let list = redis.wait_list("SOGO_LOG", 1);
    assert_eq!(
        list[0],
        "{\"time\":\"1712345678\",\"program\":\"sogod\",\"priority\":\"notice\",\"message\":\"[109]: mailcowdockerized_watchdog-mailcow_1.mailcowdockerized_mailcow-network \\\"GET /SOGo.index/ HTTP/1.1\\\" 200 2531/0 0.005 - - 0\"}\n"
    );
}

#[test]
fn tlspol_lines_are_stored_but_not_published_and_dovecot_goes_to_its_list() {
    let redis = RedisServer::start();
    let channel = Subscriber::start(&redis, "F2B_CHANNEL");
    let daemon = Daemon::start(&redis.url(), "");
    daemon.udp(
        daemon.ports.gelf,
        &docker_gelf(
            "mailcowdockerized-postfix-tlspol-mailcow-1",
            "Nov 24 13:49:59 mail postfix-tlspol[5]: policy lookup",
        ),
    );
    daemon.udp(
        daemon.ports.gelf,
        &docker_gelf(
            DOVECOT,
            "Nov 24 13:49:59 mail dovecot: imap(u@x.org)<1><Ab>: Error: quota",
        ),
    );
    let dovecot = redis.wait_list("DOVECOT_MAILLOG", 1);
    assert!(
        dovecot[0]
            .contains("\"priority\":\"err\",\"message\":\"imap(u@x.org)<1><Ab>: Error: quota\"")
    );
    let postfix = redis.wait_list("POSTFIX_MAILLOG", 1);
    assert!(postfix[0].contains("policy lookup"));
    let payloads = channel.wait(1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(channel.count(), 1);
    assert_eq!(payloads[0], b"imap(u@x.org)<1><Ab>: Error: quota");
}

#[test]
fn templated_keys_and_per_route_caps() {
    let redis = RedisServer::start();
    let config = r#"
[[route]]
name = "per-container"
container = []
key = "LOGS:{container}"
list_cap = 3
"#;
    let daemon = Daemon::start(&redis.url(), config);
    for n in 0..5 {
        daemon.udp(
            daemon.ports.gelf,
            &docker_gelf("web-1", &format!("GET /{n}")),
        );
    }
    daemon.udp(daemon.ports.gelf, &docker_gelf("db-1", "ready"));
    wait_for("6 writes", || {
        (daemon.metric("cowlogd_redis_entries_written_total") == 6.0).then_some(())
    });
    assert_eq!(redis.llen("LOGS:web-1"), 3);
    assert_eq!(redis.llen("LOGS:db-1"), 1);
}

#[test]
fn a_long_line_is_cut_on_the_channel_at_a_character_boundary_but_kept_whole_in_the_list() {
    let redis = RedisServer::start();
    let channel = Subscriber::start(&redis, "F2B_CHANNEL");
    let daemon = Daemon::start(&redis.url(), "");
    // 16 KiB of word characters (what makes netfilter's regexes slow),
    // with two-byte characters around the 2048-byte cut.
    let long = format!("{}{}", "a".repeat(2045), "é".repeat(7_000));
    let line = format!("Nov 24 13:49:59 mail postfix/smtpd[1]: connect from {long}");
    let mut stream = daemon.tcp(daemon.ports.gelf);
    stream.write_all(&docker_gelf(POSTFIX, &line)).unwrap();
    stream.write_all(b"\0").unwrap();
    let payload = &channel.wait(1)[0];
    assert!(
        payload.len() <= 2048 && payload.len() >= 2046,
        "{}",
        payload.len()
    );
    let text = std::str::from_utf8(payload).expect("the cut payload is valid UTF-8");
    assert!(text.starts_with("connect from aaa"));
    let entry = &redis.wait_list("POSTFIX_MAILLOG", 1)[0];
    assert!(entry.contains(&long), "the list entry was cut");
    assert_eq!(daemon.metric("cowlogd_channel_payloads_cut_total"), 1.0);
}

#[test]
fn sogo_continuation_lines_are_stored_and_published_as_syslog_ng_does() {
    let redis = RedisServer::start();
    let channel = Subscriber::start(&redis, "F2B_CHANNEL");
    let daemon = Daemon::start(&redis.url(), "");
    // The FIFO lines of mailcow-contract.md, as syslog-ng prints them on
    // the sogo container's stdout, and what its Redis destination stored
    // and published.
    let cases = [
        (
            "host=172.22.1.250, user=u@example.org, pwd=yes",
            "host=172.22.1.250,",
            "user=u@example.org, pwd=yes",
            "user=u@example.org, pwd=yes",
        ),
        (
            "url=imap://u%40example.org@172.22.1.250/?tls=NO&tlsVerifyMode=none",
            "url=imap",
            "//u%40example.org@172.22.1.250/?tls=NO&tlsVerifyMode=none",
            "__u%40example.org@172.22.1.250_?tls=NO&tlsVerifyMode=none",
        ),
        ("base=(null)", "base=(null)", "", ""),
        (
            "= <0x0x561fc0017bb0[NGImap4Client]: login=u@example.org(pwd) socket=<x>>",
            "=",
            "<0x0x561fc0017bb0[NGImap4Client]: login=u@example.org(pwd) socket=<x>>",
            "<0x0x561fc0017bb0[NGImap4Client]: login=u@example.org(pwd) socket=<x>>",
        ),
    ];
    let mut stream = daemon.tcp(daemon.ports.gelf);
    for (line, _, _, _) in &cases {
        let stdout = format!("Dec  1 16:36:02 be9a5467584c {line}");
        stream.write_all(&docker_gelf(SOGO, &stdout)).unwrap();
        stream.write_all(b"\0").unwrap();
    }
    // Another container's header-less line stays dropped as chatter.
    let chatter = "Dec  1 16:36:02 be9a5467584c host=172.22.1.250, user=u@example.org";
    stream.write_all(&docker_gelf(POSTFIX, chatter)).unwrap();
    stream.write_all(b"\0").unwrap();
    let mut list = redis.wait_list("SOGO_LOG", 4);
    list.reverse();
    for ((_, program, message, _), entry) in cases.iter().zip(&list) {
        let entry: serde_json::Value = serde_json::from_str(entry).unwrap();
        assert_eq!(entry["program"], *program, "{entry}");
        assert_eq!(entry["message"], *message, "{entry}");
        assert_eq!(entry["priority"], "notice", "{entry}");
    }
    let payloads = channel.wait(4);
    for ((_, _, _, payload), got) in cases.iter().zip(&payloads) {
        assert_eq!(String::from_utf8_lossy(got), *payload);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 0);
    assert_eq!(channel.count(), 4);
}
