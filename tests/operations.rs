use std::io::Write;

use crate::support::*;

fn cowlogd(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    run_cowlogd(args, env)
}

#[test]
fn check_prints_the_effective_config_with_the_password_masked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[redis]\nurl = \"redis://:s3cret@redis:6379\"\n").unwrap();
    let (ok, stdout, _) = cowlogd(&["check", "--config", good.to_str().unwrap()], &[]);
    assert!(ok);
    assert!(stdout.contains("list_cap = 10000"), "{stdout}");
    assert!(stdout.contains("[[route]]") && stdout.contains("POSTFIX_MAILLOG"));
    assert!(!stdout.contains("s3cret") && stdout.contains("***"));

    let (ok, stdout, _) = cowlogd(&["check"], &[("COWLOGD_REDIS_URL", "redis://envhost:6380")]);
    assert!(ok);
    assert!(stdout.contains("redis://envhost:6380"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[inputs]\nsyslog_tcp = \"not an address\"\n").unwrap();
    let (ok, _, stderr) = cowlogd(&["check", "--config", bad.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(stderr.contains("inputs.syslog_tcp"), "{stderr}");
}

#[test]
fn help_documents_the_commands() {
    let (ok, stdout, _) = cowlogd(&["--help"], &[]);
    assert!(ok);
    for word in ["check", "--config", "COWLOGD_REDIS_URL", "SIGTERM"] {
        assert!(stdout.contains(word), "--help lacks {word}:\n{stdout}");
    }
}

#[test]
fn metrics_pass_promtool_check() {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("promtool is not installed: apt-get install prometheus (it ships promtool)");
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(1)));
    daemon.udp(daemon.ports.gelf, b"not gelf");
    daemon.udp(daemon.ports.syslog, b"<30>Nov 24 13:49:59 x[1]: y");
    redis.wait_list("POSTFIX_MAILLOG", 1);
    let text = daemon.metrics();
    for family in [
        "cowlogd_received_messages_total",
        "cowlogd_dropped_messages_total",
        "cowlogd_redis_write_duration_seconds_bucket",
        "cowlogd_queue_messages",
        "cowlogd_gelf_pending_messages",
    ] {
        assert!(text.contains(family), "missing {family}");
    }
    let output = run_with_stdin(promtool, &["check", "metrics"], text.as_bytes());
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn http_endpoint_answers_404_and_405() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    assert_eq!(daemon.http_get("/nope").0, 404);
    assert_eq!(daemon.http_get("/health").1, "ok\n");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", daemon.ports.metrics)).unwrap();
    stream
        .write_all(
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
}

#[test]
fn health_asks_the_running_daemon_and_fails_when_it_is_gone() {
    let redis = RedisServer::start();
    let mut daemon = Daemon::start(&redis.url(), "");
    let config = daemon.dir.path().join("cowlogd.toml");
    let config = config.to_str().unwrap().to_owned();
    let (ok, _, stderr) = cowlogd(&["health", "--config", &config], &[]);
    assert!(ok, "{stderr}");
    assert!(daemon.terminate().success());
    let (ok, _, stderr) = cowlogd(&["health", "--config", &config], &[]);
    assert!(!ok);
    assert!(stderr.contains("cowlogd health:"), "{stderr}");
}

#[test]
fn the_start_is_summed_up_in_one_log_line_without_the_password() {
    let redis = RedisServer::start_with(&["--requirepass", "pw-4711"]);
    let url = format!("redis://:pw-4711@127.0.0.1:{}", redis.port);
    let daemon = Daemon::start(&url, "");
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("cowlogd running"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(&format!("version={}", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(
        line.contains(&format!("syslog_tcp=127.0.0.1:{}", daemon.ports.syslog)),
        "{line}"
    );
    assert!(
        line.contains("routes=10") && line.contains("forwarding=off"),
        "{line}"
    );
    assert!(line.contains("redis=redis://:***@127.0.0.1"), "{line}");
    assert!(!log.contains("pw-4711"));
}

#[test]
fn the_console_shows_each_record_its_route_and_what_happened() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "[console]\nenabled = true\n");
    let mut stream = daemon.tcp(daemon.ports.gelf);
    for (container, line) in [
        (POSTFIX, postfix_line(7)),
        (
            POSTFIX,
            "Aug  5 12:34:56 m CRON[12]: (root) CMD (x)".to_owned(),
        ),
        ("some-app-1", "plain output".to_owned()),
    ] {
        stream.write_all(&docker_gelf(container, &line)).unwrap();
        stream.write_all(b"\0").unwrap();
    }
    let out = wait_for("three console lines", || {
        let out = daemon.stdout();
        (out.lines().count() >= 3).then_some(out)
    });
    let lines: Vec<&str> = out.lines().collect();
    // Piped: no colour codes.
    assert!(!out.contains('\x1b'), "{out}");
    assert!(
        lines[0].contains("gelf_tcp")
            && lines[0].contains(POSTFIX)
            && lines[0].contains("postfix/smtpd[1007]")
            && lines[0].contains(
                " info postfix → POSTFIX_MAILLOG +channel | connect from unknown[203.0.113.7] msg 7"
            ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("CRON[12]") && lines[1].contains("system → dropped | (root) CMD (x)"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("some-app-1")
            && lines[2].contains("- → no route: not stored | plain output"),
        "{}",
        lines[2]
    );
}

#[test]
fn with_redis_off_the_console_still_shows_every_line_and_ready_says_so() {
    let daemon = Daemon::start("", "[console]\nenabled = true\n");
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(3)));
    let out = wait_for("a console line", || {
        let out = daemon.stdout();
        (!out.is_empty()).then_some(out)
    });
    assert!(
        out.contains("postfix → POSTFIX_MAILLOG (redis off) | connect from"),
        "{out}"
    );
    assert_eq!(
        daemon.http_get("/ready"),
        (200, "ready (redis off)\n".to_owned())
    );
    assert!(daemon.log().contains("redis=off"));
}

#[test]
fn without_a_reachable_redis_lines_still_show_and_ready_says_why() {
    let port = free_port();
    let daemon = Daemon::start(
        &format!("redis://127.0.0.1:{port}"),
        "[console]\nenabled = true\n",
    );
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(4)));
    let out = wait_for("a console line", || {
        let out = daemon.stdout();
        (!out.is_empty()).then_some(out)
    });
    assert!(
        out.contains("POSTFIX_MAILLOG +channel | connect from"),
        "{out}"
    );
    let (status, body) = daemon.http_get("/ready");
    assert_eq!(status, 503);
    assert!(body.starts_with("redis not writable: "), "{body}");
    assert!(body.to_lowercase().contains("refused"), "{body}");
}

#[test]
fn a_second_daemon_on_the_same_udp_port_exits_with_address_in_use() {
    // SO_REUSEPORT would let the second one join the first one's group and
    // take a share of the datagrams; it must refuse to start instead.
    let redis = RedisServer::start();
    let first = Daemon::start(&redis.url(), "");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("second.toml");
    for (input, port) in [
        ("gelf_udp", first.ports.gelf),
        ("syslog_udp", first.ports.syslog),
    ] {
        let inputs: String = ["gelf_udp", "gelf_tcp", "syslog_udp", "syslog_tcp"]
            .iter()
            .map(|key| match *key == input {
                true => format!("{key} = \"127.0.0.1:{port}\"\n"),
                false => format!("{key} = \"\"\n"),
            })
            .collect();
        std::fs::write(
            &config,
            format!(
                "[redis]\nurl = \"{}\"\n[inputs]\n{inputs}[metrics]\nlisten = \"\"\n",
                redis.url()
            ),
        )
        .unwrap();
        let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_cowlogd"))
            .args(["--config", config.to_str().unwrap()])
            .env_remove("COWLOGD_REDIS_URL")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let exited = wait_for_exit(&mut second, std::time::Duration::from_secs(10));
        let mut stderr = String::new();
        if let Some(mut pipe) = second.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
        }
        assert!(
            exited.is_some_and(|status| !status.success()),
            "a second daemon started on {input} {port}"
        );
        assert!(
            stderr.contains("Address already in use") && stderr.contains(input),
            "{stderr}"
        );
    }
    // The first one still gets every datagram.
    for n in 0..50 {
        first.udp(first.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(n)));
    }
    assert_eq!(redis.wait_list("POSTFIX_MAILLOG", 50).len(), 50);
}

/// Waits up to `patience` for `child` to exit; kills it if it does not.
fn wait_for_exit(
    child: &mut std::process::Child,
    patience: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + patience;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn sighup_reloads_the_routes_names_what_needs_a_restart_and_refuses_a_broken_file() {
    let redis = RedisServer::start();
    let mut daemon = Daemon::start(&redis.url(), "");
    let path = daemon.dir.path().join("cowlogd.toml");
    let started = std::fs::read_to_string(&path).unwrap();
    let hangup = |daemon: &Daemon| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &daemon.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let line = |n: usize| format!("<30>Nov 24 13:49:59 {POSTFIX}[1]: {}\n", postfix_line(n));
    let mut stream = daemon.tcp(daemon.ports.syslog);
    stream.write_all(line(0).as_bytes()).unwrap();
    redis.wait_list("POSTFIX_MAILLOG", 1);

    // New routes (every line to one list) and a restart-only key changed.
    let reloaded = started.clone()
        + "\n[[route]]\nname = \"everything\"\ncontainer = []\nkey = \"EVERYTHING\"\n";
    let reloaded = reloaded.replace("[inputs]", "[inputs]\ntcp_max_connections = 77");
    std::fs::write(&path, reloaded).unwrap();
    hangup(&daemon);
    wait_for("the reload logged", || {
        daemon
            .log()
            .contains("SIGHUP: config reloaded")
            .then_some(())
    });
    assert!(
        daemon
            .log()
            .contains("needs_restart=\"inputs.tcp_max_connections\""),
        "{}",
        daemon.log()
    );
    // The connection opened before the reload carries on, under the new routes.
    stream.write_all(line(1).as_bytes()).unwrap();
    assert!(redis.wait_list("EVERYTHING", 1)[0].contains(" msg 1"));
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 1);

    // A broken file is refused; the reloaded routes stay in force.
    std::fs::write(&path, "[[route]]\nname = 3\n").unwrap();
    hangup(&daemon);
    wait_for("the refusal logged", || {
        daemon
            .log()
            .contains("SIGHUP: config refused; the running config stays")
            .then_some(())
    });
    stream.write_all(line(2).as_bytes()).unwrap();
    assert_eq!(redis.wait_list("EVERYTHING", 2).len(), 2);
    assert_eq!(
        daemon.metric("cowlogd_config_reloads_total{result=\"applied\"}"),
        1.0
    );
    assert_eq!(
        daemon.metric("cowlogd_config_reloads_total{result=\"refused\"}"),
        1.0
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
}
