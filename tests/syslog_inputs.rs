use std::io::Write;
use std::process::Command;

use crate::support::*;

fn entry_fields(entry: &str) -> (String, String, String) {
    let v: serde_json::Value = serde_json::from_str(entry).unwrap();
    let field = |k: &str| v[k].as_str().unwrap().to_owned();
    (field("program"), field("priority"), field("message"))
}

fn docker_formats(n: usize) -> Vec<(String, &'static str)> {
    let inner = postfix_line(n);
    let tag = POSTFIX;
    vec![
        (
            format!("<30>Nov 24 13:49:59 {tag}[4840]: {inner}\n"),
            "info",
        ),
        (
            format!("<27>Nov 24 13:49:59 vm {tag}[4840]: {inner}\n"),
            "err",
        ),
        (
            format!("<30>1 2026-11-24T13:49:59+01:00 vm {tag} 4840 {tag} - {inner}\n"),
            "info",
        ),
        (
            format!("<30>1 2026-11-24T13:49:59.279353+01:00 vm {tag} 4840 {tag} - {inner}\n"),
            "info",
        ),
    ]
}

#[test]
fn docker_syslog_formats_over_udp() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let formats = docker_formats(7);
    for (line, _) in &formats {
        daemon.udp(daemon.ports.syslog, line.as_bytes());
    }
    let list = redis.wait_list("POSTFIX_MAILLOG", formats.len());
    let mut priorities: Vec<String> = list
        .iter()
        .map(|e| {
            let (program, priority, message) = entry_fields(e);
            assert_eq!(program, "postfix/smtpd");
            assert_eq!(message, "connect from unknown[203.0.113.7] msg 7");
            priority
        })
        .collect();
    priorities.sort();
    assert_eq!(priorities, vec!["err", "info", "info", "info"]);
    // RFC 5424 lines carry their zone: 13:49:59+01:00.
    assert!(
        list.iter()
            .filter(|e| e.starts_with("{\"time\":\"1795524599\""))
            .count()
            == 2
    );
}

#[test]
fn docker_syslog_formats_over_tcp_newline_and_octet_counted() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let mut stream = daemon.tcp(daemon.ports.syslog);
    let mut bytes = Vec::new();
    for (line, _) in docker_formats(1) {
        bytes.extend_from_slice(line.as_bytes());
    }
    // Docker's tcp+tls framing: octet counting, the count includes the LF.
    for (line, _) in docker_formats(2) {
        bytes.extend_from_slice(format!("{} {line}", line.len()).as_bytes());
    }
    for piece in bytes.chunks(33) {
        stream.write_all(piece).unwrap();
    }
    drop(stream);
    let list = redis.wait_list("POSTFIX_MAILLOG", 8);
    assert_eq!(list.iter().filter(|e| e.contains(" msg 1\"")).count(), 4);
    assert_eq!(list.iter().filter(|e| e.contains(" msg 2\"")).count(), 4);
}

fn logger(args: &[&str]) {
    let status = Command::new("logger")
        .args(args)
        .status()
        .expect("util-linux logger is not installed: apt-get install bsdutils");
    assert!(status.success(), "logger {args:?}");
}

#[test]
fn util_linux_logger_forms_with_a_store_everything_route() {
    let redis = RedisServer::start();
    let config = r#"
[[route]]
name = "everything"
key = "LOGS:{program}"
publish = true
"#;
    let daemon = Daemon::start(&redis.url(), config);
    let port = daemon.ports.syslog.to_string();
    let base = [
        "--server",
        "127.0.0.1",
        "--port",
        port.as_str(),
        "-t",
        "postfix/smtpd",
        "-p",
        "mail.warning",
    ];
    logger(&[&base[..], &["--udp", "--rfc3164", "udp rfc3164 msg"]].concat());
    logger(&[&base[..], &["--udp", "udp rfc5424 msg"]].concat());
    logger(&[&base[..], &["--tcp", "--rfc3164", "tcp newline msg"]].concat());
    logger(&[&base[..], &["--tcp", "--octet-count", "tcp octet msg"]].concat());
    let mut list = redis.wait_list("LOGS:postfix/smtpd", 4);
    list.sort();
    let fields: Vec<(String, String, String)> = list.iter().map(|e| entry_fields(e)).collect();
    let mut messages: Vec<&str> = fields.iter().map(|f| f.2.as_str()).collect();
    messages.sort_unstable();
    assert_eq!(
        messages,
        vec![
            "tcp newline msg",
            "tcp octet msg",
            "udp rfc3164 msg",
            "udp rfc5424 msg"
        ]
    );
    assert!(
        fields
            .iter()
            .all(|f| f.0 == "postfix/smtpd" && f.1 == "warning"),
        "{fields:?}"
    );
}
