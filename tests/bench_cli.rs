//! `cowlogd-bench` against the real daemon and a real redis-server.

use std::process::Command;

use crate::support::*;

fn bench(daemon: &Daemon, redis: &RedisServer, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_cowlogd-bench"))
        .args(args)
        .args([
            "--redis",
            &redis.url(),
            "--pid",
            &daemon.pid().to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    json_output(&output)
}

#[test]
fn the_load_generator_counts_every_message_through_each_transport() {
    let redis = RedisServer::start();
    let (daemon, fluent_port) = fluent_daemon(&redis, "[redis]\nlist_cap = 100000\n");
    let fluent = format!("127.0.0.1:{fluent_port}");
    let syslog = format!("127.0.0.1:{}", daemon.ports.syslog);
    let gelf = format!("127.0.0.1:{}", daemon.ports.gelf);
    for (args, messages) in [
        (
            vec!["--target", "syslog-tcp", "--addr", &syslog, "-n", "2000"],
            2000,
        ),
        (
            vec![
                "--target",
                "syslog-udp",
                "--addr",
                &syslog,
                "-n",
                "500",
                "--rate",
                "5000",
            ],
            500,
        ),
        (
            vec![
                "--target",
                "gelf-udp",
                "--addr",
                &gelf,
                "-n",
                "1000",
                "--rate",
                "5000",
                "--chunked",
                "0.2",
            ],
            1000,
        ),
        (
            vec!["--target", "gelf-tcp", "--addr", &gelf, "-n", "1000"],
            1000,
        ),
        (
            vec!["--target", "fluent-tcp", "--addr", &fluent, "-n", "1000"],
            1000,
        ),
    ] {
        let result = bench(&daemon, &redis, &args);
        assert_eq!(result["target"], args[1], "named as on the command line");
        assert_eq!(result["sent"], messages, "{result}");
        assert_eq!(result["delivered"], messages, "{result}");
        assert_eq!(result["stored"], messages, "{result}");
        assert_eq!(result["lost"], 0, "{result}");
        assert!(
            result["latency_ms"]["p50"]
                .as_f64()
                .is_some_and(|p| p > 0.0),
            "{result}"
        );
        assert!(result["latency_ms"]["p99"].as_f64() >= result["latency_ms"]["p50"].as_f64());
        assert!(
            result["collector_peak_rss_kib"]
                .as_u64()
                .is_some_and(|k| k > 1000),
            "{result}"
        );
        assert!(
            result["collector_cpu_seconds"].as_f64().is_some(),
            "{result}"
        );
    }
    // The chunked share really was chunked and reassembled.
    let entries = redis.list("POSTFIX_MAILLOG");
    assert!(
        entries.iter().any(|e| e.len() > 5000),
        "no long message arrived"
    );
}

#[test]
fn the_load_generator_describes_itself_not_the_daemon() {
    let output = Command::new(env!("CARGO_BIN_EXE_cowlogd-bench"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        help.starts_with("Load generator for log collectors"),
        "{help}"
    );
    assert!(!help.contains("Log collector appliance"), "{help}");
}
