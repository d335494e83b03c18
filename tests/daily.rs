//! Daily operation as an admin lives it: local time, metrics present from
//! the start, per-container rate limits, the commands' own words.

use std::io::Write;

use crate::support::*;

#[test]
fn timestamps_without_a_zone_are_read_in_the_zone_the_process_runs_in() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_with_env(&redis.url(), "", &[("TZ", "Europe/Berlin")]);
    // An hour ago on Berlin's clock, written as BSD syslog writes it.
    let then = jiff::ZonedDateTime::now()
        .in_tz("Europe/Berlin")
        .unwrap()
        .checked_sub(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let header = then.strftime("%b %e %H:%M:%S").to_string();
    let expected = then.timestamp().as_second().to_string();
    // A GELF line without a timestamp: the time is the nested syslog
    // header's, which names no zone.
    let gelf = serde_json::json!({
        "version": "1.1",
        "host": "docker-host",
        "short_message": format!("{header} mail postfix/smtpd[7]: connect from x"),
        "_container_name": POSTFIX,
    });
    daemon.udp(daemon.ports.gelf, gelf.to_string().as_bytes());
    // And a BSD syslog line over TCP, relayed by Docker's syslog driver.
    let mut stream = daemon.tcp(daemon.ports.syslog);
    stream
        .write_all(
            format!("<30>{header} {POSTFIX}[9]: {header} mail postfix/smtpd[8]: connect from y\n")
                .as_bytes(),
        )
        .unwrap();
    let list = redis.wait_list("POSTFIX_MAILLOG", 2);
    // Read as UTC it would be one or two hours off (CET, CEST).
    for raw in &list {
        let entry: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(entry["time"], expected.as_str(), "{raw}");
    }
}

/// The series of a scrape: `name{labels}` → value.
fn scrape(daemon: &Daemon) -> std::collections::BTreeMap<String, String> {
    let (status, body) = daemon.http_get("/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn every_metric_is_listed_by_the_first_scrape_with_each_known_series_at_zero() {
    let redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let socket = queue.path().join("fluent.sock");
    let graylog = free_port();
    let config = format!(
        "[inputs]\ngelf_http = \"127.0.0.1:{}\"\nfluent_tcp = \"127.0.0.1:{}\"\nfluent_unix = \"{}\"\n\
         [queue]\ndir = \"{}\"\n[graylog]\naddress = \"udp://127.0.0.1:{graylog}\"\n[f2b]\nenabled = true\n",
        free_port(),
        free_port(),
        socket.display(),
        queue.path().join("q").display(),
    );
    let daemon = Daemon::start(&redis.url(), &config);
    let series = scrape(&daemon);
    let names: std::collections::BTreeSet<&str> = series
        .keys()
        .map(|s| s.split(['{', ' ']).next().unwrap_or(s))
        .map(|s| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| s.strip_suffix(suffix))
                .unwrap_or(s)
        })
        .collect();
    for metric in cowlogd::exported_metrics() {
        assert!(
            names.contains(metric),
            "{metric} missing from the first scrape"
        );
    }
    // The series the first burst of trouble lands in, each at 0.
    let mut expected: Vec<String> = [
        "cowlogd_dropped_messages_total{stage=\"input\",reason=\"connection_limit\"}",
        "cowlogd_dropped_messages_total{stage=\"queue\",reason=\"queue_full\"}",
        "cowlogd_dropped_messages_total{stage=\"graylog\",reason=\"send_failed\"}",
        "cowlogd_redis_errors_total{kind=\"timeout\"}",
        "cowlogd_redis_errors_total{kind=\"readonly\"}",
        "cowlogd_parse_errors_total{input=\"syslog_tcp\",reason=\"no_syslog_header\"}",
        "cowlogd_parse_errors_total{input=\"gelf_udp\",reason=\"invalid_json\"}",
        "cowlogd_parse_errors_total{input=\"fluent_tcp\",reason=\"invalid_forward\"}",
        "cowlogd_connections_closed_total{pool=\"tcp\",reason=\"idle_timeout\"}",
        "cowlogd_connections_closed_total{pool=\"metrics\",reason=\"evicted\"}",
        "cowlogd_console_dropped_total",
        "cowlogd_routed_messages_total{route=\"postfix\"}",
    ]
    .map(String::from)
    .to_vec();
    for input in [
        "gelf_tcp",
        "syslog_tcp",
        "gelf_http",
        "fluent_tcp",
        "fluent_unix",
    ] {
        expected.push(format!("cowlogd_tcp_connections{{input=\"{input}\"}}"));
        expected.push(format!(
            "cowlogd_received_messages_total{{input=\"{input}\"}}"
        ));
        expected.push(format!("cowlogd_received_bytes_total{{input=\"{input}\"}}"));
    }
    for series_name in &expected {
        assert_eq!(
            series.get(series_name).map(String::as_str),
            Some("0"),
            "{series_name} in the first scrape"
        );
    }
    let reasons = series
        .keys()
        .filter(|s| s.starts_with("cowlogd_dropped_messages_total{"))
        .count();
    assert_eq!(reasons, 31, "every drop reason");
}

#[test]
fn a_chatty_container_is_held_to_its_rate_while_mailcow_containers_are_exempt() {
    let redis = RedisServer::start();
    let config = r#"
[console]
enabled = true

[limits]
container_rate = 10
container_burst = 20

[[route]]
name = "every-container"
key = "LOGS:{container}"
"#;
    let daemon = Daemon::start(&redis.url(), config);
    let mut stream = std::io::BufWriter::new(daemon.tcp(daemon.ports.gelf));
    for n in 0..300 {
        for container in ["chatty-web-1", POSTFIX] {
            stream
                .write_all(&docker_gelf(container, &format!("line {n}")))
                .unwrap();
            stream.write_all(b"\0").unwrap();
        }
    }
    stream.flush().unwrap();
    drop(stream);
    let mailcow = redis.wait_list(&format!("LOGS:{POSTFIX}"), 300);
    assert_eq!(mailcow.len(), 300, "the mail container is exempt");
    let limited = wait_for("every chatty line accounted for", || {
        let dropped = daemon
            .metric("cowlogd_dropped_messages_total{stage=\"input\",reason=\"rate_limited\"}");
        let stored = redis.llen("LOGS:chatty-web-1");
        (dropped as usize + stored == 300).then_some((dropped, stored))
    });
    // The burst, and what the rate refilled while the lines came in.
    assert!((20..=60).contains(&limited.1), "{limited:?}");
    assert!(
        daemon.log().contains("chatty-web-1"),
        "the log names the container"
    );
    assert!(!daemon.log().contains(&format!("container={POSTFIX}")));
    // The console says why those lines went nowhere, each of them.
    wait_for("the console to show every limited line", || {
        let shown = daemon
            .stdout()
            .lines()
            .filter(|l| l.contains("chatty-web-1") && l.contains("over limits.container_rate"))
            .count();
        (shown as f64 == limited.0).then_some(())
    });
    assert_eq!(daemon.http_get("/ready").0, 200, "/ready stays green");
}

#[test]
fn health_ready_says_whether_redis_takes_writes() {
    let mut redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let metrics = format!("127.0.0.1:{}", daemon.ports.metrics);
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("[metrics]\nlisten = \"{metrics}\"\n"),
    )
    .unwrap();
    let path = config.path().to_str().unwrap();
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(1)));
    redis.wait_list("POSTFIX_MAILLOG", 1);
    let (ok, stdout, stderr) = run_cowlogd(&["--config", path, "health", "--ready"], &[]);
    assert!(ok, "{stdout}{stderr}");
    redis.stop();
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(2)));
    let stderr = wait_for("health --ready to fail", || {
        let (ok, _, stderr) = run_cowlogd(&["--config", path, "health", "--ready"], &[]);
        (!ok).then_some(stderr)
    });
    assert!(stderr.contains("503"), "{stderr}");
    // The process itself still answers.
    let (ok, _, stderr) = run_cowlogd(&["--config", path, "health"], &[]);
    assert!(ok, "{stderr}");
}

#[test]
fn check_prints_each_routes_action_as_the_readme_documents_it() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[[route]]\nname = \"kept\"\nkey = \"K\"\n\n[[route]]\nname = \"gone\"\naction = \"drop\"\n",
    )
    .unwrap();
    let (ok, stdout, stderr) =
        run_cowlogd(&["check", "--config", config.path().to_str().unwrap()], &[]);
    assert!(ok, "{stderr}");
    let actions: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("action = "))
        .collect();
    assert_eq!(
        actions,
        ["action = \"store\"", "action = \"drop\""],
        "{stdout}"
    );
    // What check prints is a config cowlogd reads back the same.
    let again = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(again.path(), &stdout).unwrap();
    let (ok, reprinted, stderr) =
        run_cowlogd(&["check", "--config", again.path().to_str().unwrap()], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(reprinted, stdout);
}
