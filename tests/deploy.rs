//! Everything under `deploy/` checked by something that can fail: configs
//! through `cowlogd check`, mailcow's syslog-ng replacements against the
//! originals, the image's needs, the systemd unit, alert rules (promtool)
//! and the dashboard's metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn promtool() -> &'static str {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("promtool is not installed: apt-get install prometheus (it ships promtool)")
}

#[test]
fn every_shipped_config_passes_cowlogd_check() {
    for config in [
        "deploy/any-docker-host.toml",
        "deploy/mailcow/cowlogd.toml",
        "deploy/mailcow/cowlogd-docker-api.toml",
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_cowlogd"))
            .args(["check", "--config"])
            .arg(repo().join(config))
            .env_remove("COWLOGD_CONFIG")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Named blocks, `(kind, name) → body`, and the `log { … }` blocks' lines.
type Blocks = (BTreeMap<(String, String), String>, Vec<Vec<String>>);

/// The top-level blocks of a syslog-ng config: `(kind, name) → body`, and
/// the `log { … }` blocks in order.
fn blocks(config: &str) -> Blocks {
    let mut named = BTreeMap::new();
    let mut logs = Vec::new();
    let mut rest = config;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        let line_start = rest[..start].rfind('\n').map_or(0, |i| i + 1);
        let head_end = match rest[start..].find('{') {
            Some(i) => start + i,
            None => break,
        };
        let head = rest[start..head_end].trim().to_owned();
        // Skip comments and @-lines that happen to hold letters.
        if rest[line_start..start].contains('#') || rest[line_start..start].contains('@') {
            rest = &rest[start + rest[start..].find('\n').unwrap_or(rest.len() - start)..];
            continue;
        }
        let mut depth = 0;
        let mut end = head_end;
        for (i, c) in rest[head_end..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = head_end + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body = rest[head_end + 1..end].trim().to_owned();
        let words: Vec<&str> = head.split_whitespace().collect();
        match words.as_slice() {
            ["log"] => logs.push(
                body.lines()
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect(),
            ),
            [kind, name] => {
                named.insert(((*kind).to_owned(), (*name).to_owned()), body);
            }
            ["options"] => {
                named.insert(("options".into(), String::new()), body);
            }
            _ => {}
        }
        rest = &rest[end + 1..];
    }
    (named, logs)
}

#[test]
fn mailcow_syslog_ng_replacements_keep_sources_filters_and_stdout_and_write_no_redis() {
    // mailcow's own files, as its images carry them
    // (deploy/mailcow/check-syslog-ng.sh compares them with a running
    // mailcow's).
    let originals = repo().join("deploy/mailcow/syslog-ng/upstream");
    for container in ["postfix", "postfix-tlspol", "dovecot", "sogo"] {
        for (original, replacement) in [
            (
                format!("{container}.syslog-ng.conf"),
                format!("{container}.conf"),
            ),
            (
                format!("{container}.syslog-ng-redis_slave.conf"),
                format!("{container}-redis_slave.conf"),
            ),
        ] {
            let original = std::fs::read_to_string(originals.join(&original)).unwrap();
            let ours = read(format!("deploy/mailcow/syslog-ng/{replacement}"));
            assert!(
                !ours.contains("redis("),
                "{replacement} still writes to Redis"
            );
            assert!(
                !ours.contains("d_redis"),
                "{replacement} names a Redis destination"
            );
            assert_eq!(
                original.lines().next(),
                ours.lines().next(),
                "{replacement}: @version"
            );
            let (theirs_named, theirs_logs) = blocks(&original);
            let (ours_named, ours_logs) = blocks(&ours);
            // The reading found what every mailcow config has.
            assert!(theirs_named.contains_key(&("destination".into(), "d_stdout".into())));
            assert!(theirs_named.contains_key(&("options".into(), String::new())));
            assert!(theirs_named.keys().any(|(kind, _)| kind == "source"));
            assert!(!theirs_logs.is_empty() && !ours_logs.is_empty());
            for (key, body) in &theirs_named {
                if key.0 == "destination" && key.1.starts_with("d_redis") {
                    continue;
                }
                assert_eq!(ours_named.get(key), Some(body), "{replacement}: {key:?}");
            }
            // Every stdout path is kept, element for element, up to d_stdout.
            for log in theirs_logs
                .iter()
                .filter(|l| l.iter().any(|e| e == "destination(d_stdout);"))
            {
                let upto = log
                    .iter()
                    .position(|e| e == "destination(d_stdout);")
                    .unwrap();
                assert!(
                    ours_logs.iter().any(|l| l.starts_with(&log[..=upto])),
                    "{replacement}: stdout path {:?} missing",
                    &log[..=upto]
                );
            }
        }
    }
}

#[test]
fn the_compose_override_mounts_both_configs_read_write_and_sends_with_the_acked_fluentd_driver() {
    let compose = read("deploy/mailcow/docker-compose.override.yml");
    for container in ["postfix", "postfix-tlspol", "dovecot", "sogo"] {
        for (file, target) in [
            (format!("{container}.conf"), "syslog-ng.conf"),
            (
                format!("{container}-redis_slave.conf"),
                "syslog-ng-redis_slave.conf",
            ),
        ] {
            let mount = format!("./data/conf/cowlogd/syslog-ng/{file}:/etc/syslog-ng/{target}:z");
            let line = compose
                .lines()
                .find(|l| l.contains(&mount))
                .unwrap_or_else(|| panic!("no mount {mount}"));
            // The entrypoint copies one over the other: no read-only mount.
            assert!(!line.contains(":ro"), "{line}");
        }
        assert!(compose.contains(&format!(
            "  {container}-mailcow:\n    logging: *cowlogd-logging"
        )));
        assert!(
            repo()
                .join(format!("deploy/mailcow/syslog-ng/{container}.conf"))
                .is_file()
        );
    }
    // The disk queue on a named volume, where the config puts it.
    assert!(compose.contains("      - cowlogd-queue-vol-1:/var/lib/cowlogd\n"));
    assert!(compose.contains("\nvolumes:\n  cowlogd-queue-vol-1:\n"));
    let config: toml::Table =
        toml::from_str(&read("deploy/mailcow/cowlogd.toml")).expect("cowlogd.toml is TOML");
    assert_eq!(config["queue"]["dir"].as_str(), Some("/var/lib/cowlogd"));
    assert!(
        read("deploy/Dockerfile")
            .contains("--chown=65532:65532 /out/var/lib/cowlogd /var/lib/cowlogd")
    );
    // The mail containers: Docker's fluentd driver, async and acked, with
    // options Docker accepts (every value a string).
    let block = |anchor: &str| -> Vec<(String, String)> {
        let start = compose
            .find(&format!("{anchor}\n"))
            .unwrap_or_else(|| panic!("no {anchor}"));
        compose[start..]
            .lines()
            .skip(1)
            .take_while(|line| !line.trim().is_empty())
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| {
                let value = value.split(" #").next().unwrap_or_default().trim();
                (key.trim().to_owned(), value.to_owned())
            })
            .collect()
    };
    let fluentd = block("x-cowlogd-logging: &cowlogd-logging");
    let get = |key: &str| {
        fluentd
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("driver"), Some("fluentd"));
    for (key, value) in fluentd.iter().skip_while(|(k, _)| k != "options").skip(1) {
        assert!(
            FLUENTD_LOG_OPTS.contains(&key.as_str()),
            "{key} is refused by Docker"
        );
        assert!(
            value.starts_with('"') && value.ends_with('"'),
            "{key}: Docker wants a string, not {value}"
        );
    }
    assert_eq!(get("fluentd-address"), Some("\"tcp://127.0.0.1:24224\""));
    assert_eq!(get("fluentd-async"), Some("\"true\""));
    assert_eq!(get("fluentd-request-ack"), Some("\"true\""));
    assert_eq!(get("tag"), Some("\"{{.Name}}\""));
    // gelf stays as the documented alternative.
    let gelf = block("x-cowlogd-logging-gelf: &cowlogd-logging-gelf");
    assert!(gelf.contains(&("driver".into(), "gelf".into())), "{gelf:?}");
    assert!(compose.contains("\"127.0.0.1:24224:24224/tcp\""));
    assert!(compose.contains("\"127.0.0.1:12201:12201/udp\""));
    // update.sh runs `docker compose pull`: the built image is skipped.
    assert!(compose.contains("    pull_policy: build\n"));
    assert!(compose.contains("      dockerfile: deploy/Dockerfile\n"));
    // cowlogd listens where the driver sends.
    let config = read("deploy/mailcow/cowlogd.toml");
    assert!(
        config.contains("fluent_tcp = \"0.0.0.0:24224\""),
        "{config}"
    );
    assert!(compose.contains("${REDIS_SLAVEOF_IP:-redis-mailcow}:${REDIS_SLAVEOF_PORT:-6379}"));
    assert!(!compose.contains("gelf-tag"));
}

#[test]
fn the_docker_api_override_keeps_json_file_mounts_the_same_configs_and_reads_through_the_proxy() {
    let first = read("deploy/mailcow/docker-compose.override.yml");
    let second = read("deploy/mailcow/docker-compose.override.docker-api.yml");
    // The same syslog-ng replacements (they stop the double write) ...
    let mounts = |compose: &str| -> Vec<String> {
        compose
            .lines()
            .filter(|l| l.contains("/etc/syslog-ng/"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(mounts(&first), mounts(&second));
    assert_eq!(mounts(&second).len(), 8);
    // ... and no log driver changed: Docker's default json-file stays.
    assert!(!second.contains("logging:"), "{second}");
    // cowlogd reaches Docker only through the proxy, on an internal network.
    let cowlogd = &second
        [second.find("  cowlogd-mailcow:").unwrap()..second.find("  postfix-mailcow:").unwrap()];
    assert!(!cowlogd.contains("docker.sock"), "{cowlogd}");
    assert!(
        second.contains(
            "deploy/docker-socket-proxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
        )
    );
    assert!(second.contains("  cowlogd-docker-api:\n    internal: true\n"));
    let config: toml::Table =
        toml::from_str(&read("deploy/mailcow/cowlogd-docker-api.toml")).unwrap();
    assert_eq!(
        config["docker"]["socket"].as_str(),
        Some("tcp://cowlogd-docker-proxy:2375")
    );
    assert_eq!(config["queue"]["dir"].as_str(), Some("/var/lib/cowlogd"));
    let include: Vec<&str> = config["docker"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        include,
        [
            "postfix-mailcow",
            "postfix-tlspol-mailcow",
            "dovecot-mailcow",
            "sogo-mailcow"
        ]
    );
}

/// The options moby's fluentd driver accepts (daemon/logger/fluentd
/// ValidateLogOpt): any other key makes the container fail to start.
const FLUENTD_LOG_OPTS: [&str; 13] = [
    "env",
    "env-regex",
    "labels",
    "labels-regex",
    "tag",
    "fluentd-address",
    "fluentd-async",
    "fluentd-async-connect",
    "fluentd-buffer-limit",
    "fluentd-max-retries",
    "fluentd-request-ack",
    "fluentd-retry-wait",
    "fluentd-sub-second-precision",
];

#[test]
fn daemon_json_sends_every_container_with_the_gelf_driver() {
    let config: serde_json::Value = serde_json::from_str(&read("deploy/daemon.json")).unwrap();
    assert_eq!(config["log-driver"], "gelf");
    assert_eq!(config["log-opts"]["gelf-address"], "udp://127.0.0.1:12201");
    assert_eq!(config["log-opts"]["tag"], "{{.Name}}");
}

#[test]
fn daemon_json_for_the_fluentd_driver_uses_only_options_docker_accepts() {
    let config: serde_json::Value =
        serde_json::from_str(&read("deploy/daemon-fluentd.json")).unwrap();
    assert_eq!(config["log-driver"], "fluentd");
    let options = config["log-opts"].as_object().unwrap();
    for (key, value) in options {
        assert!(
            FLUENTD_LOG_OPTS.contains(&key.as_str()),
            "{key} is refused by Docker"
        );
        assert!(value.is_string(), "{key}: Docker wants a string");
    }
    assert_eq!(options["fluentd-address"], "tcp://127.0.0.1:24224");
    assert_eq!(options["fluentd-request-ack"], "true");
    // The README shows the same options.
    let readme = read("README.md");
    for key in [
        "fluentd-address",
        "fluentd-async",
        "fluentd-request-ack",
        "fluentd-sub-second-precision",
    ] {
        assert!(
            readme.contains(&format!("{key}: ")),
            "{key} not in the README"
        );
    }
}

#[test]
fn the_binary_needs_only_what_the_distroless_cc_image_has() {
    let output = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_cowlogd"))
        .output()
        .expect("ldd is not installed: apt-get install libc-bin");
    let text = String::from_utf8_lossy(&output.stdout);
    // gcr.io/distroless/cc-debian12: glibc and libgcc_s.
    let provided = [
        "linux-vdso.so.1",
        "libgcc_s.so.1",
        "libm.so.6",
        "libc.so.6",
        "ld-linux-x86-64.so.2",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
    ];
    for line in text.lines() {
        let lib = line.split_whitespace().next().unwrap_or_default();
        let name = lib.rsplit('/').next().unwrap_or(lib);
        assert!(provided.contains(&name), "the image lacks {name}: {text}");
    }
    // The ban rules' PCRE2 is linked in even where the build host (the
    // image's builder) has a libpcre2 of its own.
    assert!(read(".cargo/config.toml").contains("PCRE2_SYS_STATIC = \"1\""));
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("COPY . ."));
    assert!(dockerfile.contains("FROM gcr.io/distroless/cc-debian12:nonroot"));
    assert!(dockerfile.contains("USER nonroot"));
    assert!(dockerfile.contains("strip target/release/cowlogd"));
    assert!(dockerfile.contains("EXPOSE 12201/udp 12201/tcp 5140/udp 5140/tcp 24224/tcp 9127/tcp"));
    assert!(dockerfile.contains(r#"CMD ["/usr/local/bin/cowlogd", "health"]"#));
}

#[test]
fn the_systemd_unit_is_hardened() {
    let unit = read("deploy/systemd/cowlogd.service");
    for directive in [
        "ExecStart=/usr/local/bin/cowlogd --config /etc/cowlogd.toml",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "Restart=on-failure",
        "TimeoutStopSec=10s",
        // The password out of the world-readable config.
        "EnvironmentFile=-/etc/cowlogd/redis.env",
        // Where the Forward unix socket the README suggests can live.
        "RuntimeDirectory=cowlogd",
        // Kept: the ban rules' interpreter fallback is tested in f2b.rs.
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(unit.contains(directive), "missing {directive:?}");
    }
    assert!(
        unit.lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| !l.contains("COWLOGD_REDIS_URL")),
        "no Redis URL (and password) set in the unit itself, only in its comments"
    );
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    for args in [
        &["check", "rules", "cowlogd.rules.yml"][..],
        &["test", "rules", "cowlogd.rules.test.yml"][..],
        &["check", "config", "prometheus.yml"][..],
    ] {
        let output = Command::new(promtool())
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_dashboard_and_the_alerts_use_only_metrics_the_binary_exports() {
    let redis = RedisServer::start();
    // [f2b] on, so that its series exist too.
    let daemon = Daemon::start(&redis.url(), "[f2b]\nenabled = true\npoll_interval_s = 1\n");
    daemon.udp(daemon.ports.gelf, &docker_gelf(POSTFIX, &postfix_line(1)));
    daemon.udp(daemon.ports.gelf, b"not gelf");
    redis.wait_list("POSTFIX_MAILLOG", 1);
    let exported = wait_for("the write counted and netfilter's bans polled", || {
        let text = daemon.metrics();
        (text.contains("cowlogd_redis_write_duration_seconds_bucket")
            && text.contains("cowlogd_f2b_active_bans")
            && text.contains("cowlogd_f2b_perm_bans"))
        .then_some(text)
    });
    let used = read("deploy/grafana/cowlogd.json") + &read("deploy/prometheus/cowlogd.rules.yml");
    let names: std::collections::BTreeSet<&str> = used
        .match_indices("cowlogd_")
        .map(|(at, _)| {
            let end = used[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(used.len(), |e| at + e);
            &used[at..end]
        })
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            exported.lines().any(|l| l.starts_with(name)
                && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' '))),
            "{name} is not exported"
        );
    }
}

#[test]
fn the_dashboard_picks_an_instance_and_shows_route_filtering_apart_from_losses() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/cowlogd.json")).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "instance" && v["includeAll"] == true),
        "an instance variable (one cowlogd per host)"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for expr in &exprs {
        let series = expr.matches("cowlogd_").count();
        assert_eq!(
            expr.matches("instance=~\"$instance\"").count(),
            series,
            "every series of {expr} is picked by $instance"
        );
    }
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("cowlogd_dropped_messages_total")
                && e.contains("reason!=\"filtered\"")),
        "losses without the drop routes"
    );
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("cowlogd_dropped_messages_total")
                && e.contains("reason=\"filtered\"")),
        "route filtering on its own"
    );
    // No two panels overlap.
    let boxes: Vec<(i64, i64, i64, i64)> = panels
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            let n = |k: &str| g[k].as_i64().unwrap();
            (n("x"), n("y"), n("w"), n("h"))
        })
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let apart =
                a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
            assert!(apart, "panels at {a:?} and {b:?} overlap");
        }
    }
}

#[test]
fn the_licences_are_stated_and_mailcows_gpl_files_stay_apart() {
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("license = \"MIT OR Apache-2.0\""));
    assert!(read("LICENSE-MIT").contains("Permission is hereby granted"));
    assert!(read("LICENSE-APACHE").contains("Apache License"));
    assert!(read("LICENSE-APACHE").contains("Version 2.0"));
    // mailcow's configs under their own licence, stated beside them.
    let folder = "deploy/mailcow/syslog-ng";
    assert!(read(format!("{folder}/COPYING")).contains("GNU GENERAL PUBLIC LICENSE"));
    assert!(read(format!("{folder}/COPYING")).contains("Version 3"));
    assert!(read(format!("{folder}/README.md")).contains("GPL-3.0"));
    assert!(read("README.md").contains("deploy/mailcow/syslog-ng/"));
    // ... and out of the MIT OR Apache-2.0 package.
    assert!(manifest.contains("exclude = [\"deploy/mailcow/syslog-ng/\"]"));
    // The image is built from the repository without them mattering: the
    // Dockerfile copies no deploy file into the image.
    let dockerfile = read("deploy/Dockerfile");
    assert!(!dockerfile.contains("COPY deploy/") && !dockerfile.contains("syslog-ng"));
}
