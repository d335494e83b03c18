use std::io::Write;

use crate::support::*;

#[test]
fn mailcow_filters_system_messages_and_other_containers_stay_out_of_redis_and_are_counted() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let filtered = [
        (
            POSTFIX,
            "Nov 24 13:49:59 mail postfix/postfix-script[1]: warning: /etc/postfix/main.cf, line 800: overriding earlier entry: smtpd_tls_cert_file=x",
        ),
        (
            POSTFIX,
            "Nov 24 13:49:59 mail postfix/smtpd[2]: TLS SNI from checks.mailcow.email is not in our list",
        ),
        (
            POSTFIX,
            "Nov 24 13:49:59 mail postfix/smtpd[3]: warning: no SASL support",
        ),
        (
            DOVECOT,
            "Nov 24 13:49:59 mail dovecot: auth: passwd-file(u@x.org): unknown user - trying the next passdb",
        ),
        (
            DOVECOT,
            "Nov 24 13:49:59 mail dovecot: auth: sql(u@x.org): unknown user - trying the next userdb",
        ),
        (
            DOVECOT,
            "Nov 24 13:49:59 mail dovecot: doveadm: User has no mail_replica in userdb",
        ),
        (
            DOVECOT,
            "Nov 24 13:49:59 mail dovecot: dsync-local(u@x.org): Error: sync: Unknown user in remote",
        ),
        (
            POSTFIX,
            "Nov 24 13:49:59 mail CRON[77]: (root) CMD (/usr/local/bin/rspamd-pipe)",
        ),
        (
            DOVECOT,
            "Nov 24 13:49:59 mail syslog-ng[1]: syslog-ng starting up; version='3.38.1'",
        ),
        (
            SOGO,
            "Nov 24 13:49:59 mail crond[5]: USER root pid 9 cmd /usr/local/bin/x",
        ),
        (
            POSTFIX,
            "2026-11-24 12:00:00,123 INFO success: syslog-ng entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)",
        ),
        (DOVECOT, "Waiting for SQL..."),
    ];
    let not_stored = [
        (
            "mailcowdockerized-nginx-mailcow-1",
            "Nov 24 13:49:59 mail postfix/smtpd[1]: not really postfix",
        ),
        ("web-1", "GET / HTTP/1.1 200"),
    ];
    let mut stream = daemon.tcp(daemon.ports.gelf);
    for (container, line) in filtered.iter().chain(not_stored.iter()) {
        stream.write_all(&docker_gelf(container, line)).unwrap();
        stream.write_all(b"\0").unwrap();
    }
    stream
        .write_all(&docker_gelf(POSTFIX, &postfix_line(1)))
        .unwrap();
    stream.write_all(b"\0").unwrap();
    drop(stream);
    let list = redis.wait_list("POSTFIX_MAILLOG", 1);
    wait_for("every message routed", || {
        (daemon.metric_sum("cowlogd_routed_messages_total") == 15.0).then_some(())
    });
    assert_eq!(list.len(), 1);
    assert!(list[0].contains(" msg 1\""));
    assert_eq!(redis.llen("DOVECOT_MAILLOG"), 0);
    assert_eq!(redis.llen("SOGO_LOG"), 0);
    assert_eq!(
        daemon.metric("cowlogd_dropped_messages_total{stage=\"route\",reason=\"filtered\"}"),
        12.0
    );
    assert_eq!(
        daemon.metric("cowlogd_routed_messages_total{route=\"postfix-filtered\"}"),
        3.0
    );
    assert_eq!(
        daemon.metric("cowlogd_routed_messages_total{route=\"dovecot-filtered\"}"),
        4.0
    );
    assert_eq!(
        daemon.metric("cowlogd_routed_messages_total{route=\"system\"}"),
        3.0
    );
    assert_eq!(
        daemon.metric("cowlogd_routed_messages_total{route=\"chatter\"}"),
        2.0
    );
    assert_eq!(
        daemon.metric("cowlogd_routed_messages_total{route=\"none\"}"),
        2.0
    );
    assert_eq!(
        daemon.metric("cowlogd_routed_messages_total{route=\"postfix\"}"),
        1.0
    );
}

#[test]
fn senders_outside_the_allowlist_are_dropped_before_parsing() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        &redis.url(),
        "[inputs]\nallow = [\"10.0.0.0/8\"]\n[metrics]\nallow = [\"127.0.0.1/32\"]\n",
    );
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(1)));
    let mut stream = daemon.tcp(daemon.ports.syslog);
    let _ = stream.write_all(b"<30>Nov 24 13:49:59 x[1]: y\n");
    wait_for("two refusals counted", || {
        (daemon.metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"not_allowed\"}")
            == 2.0)
            .then_some(())
    });
    assert_eq!(daemon.metric_sum("cowlogd_received_messages_total"), 0.0);
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 0);
}

/// Sends each `(container, line)` to the daemon's GELF TCP input.
fn send_gelf_tcp(daemon: &Daemon, messages: &[(&str, &str)]) {
    let mut stream = daemon.tcp(daemon.ports.gelf);
    for (container, line) in messages {
        stream.write_all(&docker_gelf(container, line)).unwrap();
        stream.write_all(b"\0").unwrap();
    }
}

#[test]
fn whitelist_forwardinghosts_lookups_are_stored_and_published_as_mailcow_does() {
    let redis = RedisServer::start();
    let subscriber = Subscriber::start(&redis, "F2B_CHANNEL");
    let daemon = Daemon::start(&redis.url(), "");
    // What `logger -t whitelist_forwardinghosts -p mail.info` in mailcow's
    // postfix image puts on the container's stdout through syslog-ng.
    let line = "Dec  6 03:14:17 7e5a1b2c3d4e whitelist_forwardinghosts: Look up 192.0.2.7 on whitelist, result 200 PERMIT";
    send_gelf_tcp(&daemon, &[(POSTFIX, line)]);
    let list = redis.wait_list("POSTFIX_MAILLOG", 1);
    let entry: serde_json::Value = serde_json::from_str(&list[0]).unwrap();
    assert_eq!(entry["program"], "whitelist_forwardinghosts");
    assert_eq!(
        entry["message"],
        "Look up 192.0.2.7 on whitelist, result 200 PERMIT"
    );
    let published = subscriber.wait(1);
    assert!(String::from_utf8_lossy(&published[0]).starts_with("Look up 192.0.2.7"));
}

#[test]
fn routes_match_container_globs_compose_services_and_compose_projects() {
    let redis = RedisServer::start();
    let routes = r#"
[[route]]
name = "shop"
container = ["shop-*"]
key = "SHOP"

[[route]]
name = "billing"
project = ["billing*"]
key = "BILLING"

[[route]]
name = "workers"
container = ["worker"]
project = ["jobs"]
key = "WORKERS"
"#;
    let daemon = Daemon::start(&redis.url(), routes);
    send_gelf_tcp(
        &daemon,
        &[
            ("shop-web-1", "GET / 200"),
            ("/shop-db-1", "ready"),
            ("billingprod-api-1", "invoice 7"),
            ("billing_api_2", "invoice 8"),
            ("jobs-worker-3", "job done"),
            ("other-worker-1", "not jobs"),
            ("myshop-web-1", "not shop-*: project myshop, service web"),
        ],
    );
    wait_for("every message routed", || {
        (daemon.metric_sum("cowlogd_routed_messages_total") == 7.0).then_some(())
    });
    assert_eq!(redis.llen("SHOP"), 2, "{:?}", redis.list("SHOP"));
    assert_eq!(redis.llen("BILLING"), 2, "{:?}", redis.list("BILLING"));
    assert_eq!(redis.llen("WORKERS"), 1, "{:?}", redis.list("WORKERS"));
    assert_eq!(
        daemon.metric("cowlogd_routed_messages_total{route=\"none\"}"),
        2.0
    );
}
