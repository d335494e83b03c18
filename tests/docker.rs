//! The real Docker daemon's own log drivers as the senders: a busybox
//! container named like mailcow's postfix container prints postfix lines,
//! dockerd's fluentd and gelf drivers send them to cowlogd on 127.0.0.1.
//!
//! Needs a Docker daemon (root): `apt-get install docker.io busybox-static`,
//! then `dockerd --iptables=false --bridge=none &` (`tests/run.sh` does both).
//! `COWLOGD_TEST_DOCKER_HOST` names another daemon's socket.

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use crate::support::*;

/// The image: `/bin/busybox` and the applets the containers use.
pub(crate) const IMAGE: &str = "cowlogd-test-busybox:1";
/// What mailcow's postfix container is called, so the mailcow routes store it.
const CONTAINER: &str = "mailcowdockerized-postfix-mailcow-1";

/// One container of that name at a time: the Docker tests run one by one.
pub(crate) fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn docker(args: &[&str]) -> Output {
    docker_at(None, args)
}

/// The docker client against `host` (`unix://…`), or the tests' daemon.
pub(crate) fn docker_at(host: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new("docker");
    match host {
        Some(host) => {
            command.env("DOCKER_HOST", host);
        }
        None => {
            if let Ok(host) = std::env::var("COWLOGD_TEST_DOCKER_HOST") {
                command.env("DOCKER_HOST", host);
            }
        }
    }
    command
        .args(args)
        .output()
        .expect("the docker client: apt-get install docker.io")
}

/// Checks the daemon answers and imports the busybox image once.
pub(crate) fn ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let info = docker(&["info", "--format", "{{.ServerVersion}}"]);
        assert!(
            info.status.success(),
            "no Docker daemon answers: as root, apt-get install docker.io busybox-static \
             and start `dockerd --iptables=false --bridge=none &` (or set \
             COWLOGD_TEST_DOCKER_HOST): {}",
            String::from_utf8_lossy(&info.stderr)
        );
        if docker(&["image", "inspect", IMAGE]).status.success() {
            return;
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|path| std::path::Path::new(path).is_file())
            .expect("busybox for the test image: apt-get install busybox-static");
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy(busybox, bin.join("busybox")).unwrap();
        for applet in ["sh", "echo", "sleep", "printf", "seq", "head", "tr"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let tar = root.path().join("image.tar");
        let packed = Command::new("tar")
            .args(["-C", root.path().to_str().unwrap(), "-cf"])
            .arg(&tar)
            .arg("bin")
            .status()
            .unwrap();
        assert!(packed.success());
        let imported = docker(&["import", tar.to_str().unwrap(), IMAGE]);
        assert!(
            imported.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&imported.stderr)
        );
    });
}

/// A container printing by a script; removed when dropped.
pub(crate) struct Container {
    host: Option<String>,
    pub(crate) name: String,
}

impl Container {
    /// The container named like mailcow's postfix container, logging with
    /// a driver (`--log-opt`s after it).
    fn run(driver: &str, options: &[String], script: &str) -> Container {
        Container::run_named(CONTAINER, driver, options, script)
    }

    fn run_named(name: &str, driver: &str, options: &[String], script: &str) -> Container {
        let mut flags = vec!["--log-driver", driver];
        for option in options {
            flags.extend(["--log-opt", option.as_str()]);
        }
        Container::start_at(None, name, &flags, script)
    }

    /// A container on the tests' daemon with these `docker run` flags.
    pub(crate) fn start(name: &str, flags: &[&str], script: &str) -> Container {
        Container::start_at(None, name, flags, script)
    }

    /// A container on the daemon at `host` (else the tests' daemon).
    pub(crate) fn start_at(
        host: Option<&str>,
        name: &str,
        flags: &[&str],
        script: &str,
    ) -> Container {
        let _ = docker_at(host, &["rm", "-f", name]);
        let mut args = vec!["run", "-d", "--network", "none", "--name", name];
        args.extend_from_slice(flags);
        args.extend([IMAGE, "/bin/sh", "-c", script]);
        let started = docker_at(host, &args);
        assert!(
            started.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        Container {
            host: host.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// `docker logs` as Docker itself shows it: stdout and stderr lines,
    /// sorted.
    pub(crate) fn docker_logs(&self) -> Vec<String> {
        let output = docker_at(self.host.as_deref(), &["logs", &self.name]);
        let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&output.stderr).lines())
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_at(self.host.as_deref(), &["rm", "-f", &self.name]);
    }
}

fn fluentd_options(port: u16) -> Vec<String> {
    vec![
        format!("fluentd-address=tcp://127.0.0.1:{port}"),
        "fluentd-async=true".into(),
        "fluentd-request-ack=true".into(),
        "tag={{.Name}}".into(),
    ]
}

/// `n` postfix lines, one every 10 ms, then a pause long enough for the
/// driver to deliver the rest before the container stops.
fn paced_lines(n: usize) -> String {
    paced_lines_every(n, "0.01", "sleep 60")
}

/// `n` postfix lines `connect msg <i>`, one every `pause` seconds, then
/// `after`.
pub(crate) fn paced_lines_every(n: usize, pause: &str, after: &str) -> String {
    format!(
        "for i in $(seq 0 {}); do echo \"Nov 24 13:49:59 mail postfix/smtpd[7]: connect msg $i\"; \
         sleep {pause}; done; {after}",
        n - 1
    )
}

#[test]
fn the_fluentd_driver_with_acks_loses_and_duplicates_nothing_across_a_cowlogd_restart() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let (mut daemon, port) = fluent_daemon(&redis, "");
    let _container = Container::run("fluentd", &fluentd_options(port), &paced_lines(600));
    wait_for("lines before the restart", || {
        (redis.llen("POSTFIX_MAILLOG") >= 100).then_some(())
    });
    // SIGTERM mid-stream, started again on the same port.
    daemon.restart();
    let list = redis.wait_list_settled("POSTFIX_MAILLOG", 600);
    assert_eq!(list.len(), 600, "a line stored twice");
    assert_eq!(message_indices(&list), (0..600).collect(), "a line lost");
}

#[test]
fn the_fluentd_driver_with_acks_loses_nothing_when_cowlogd_is_killed_while_redis_is_paused() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let (mut daemon, port) = fluent_daemon(
        &redis,
        &format!("[queue]\ndir = \"{}\"\n", queue.path().display()),
    );
    let _container = Container::run("fluentd", &fluentd_options(port), &paced_lines(600));
    wait_for("lines before the pause", || {
        (redis.llen("POSTFIX_MAILLOG") >= 100).then_some(())
    });
    // Redis takes no writes for 3 s; cowlogd acks what it has on disk and
    // is killed with those lines not yet in Redis.
    assert!(
        redis
            .raw("CLIENT PAUSE 3000 WRITE")
            .to_lowercase()
            .contains("ok")
    );
    wait_for("lines acked while Redis is paused", || {
        (daemon.metric("cowlogd_queue_disk_records") >= 20.0).then_some(())
    });
    daemon.kill();
    daemon.start_again();
    let list = redis.wait_list_settled("POSTFIX_MAILLOG", 600);
    assert_eq!(list.len(), 600, "a line stored twice");
    assert_eq!(message_indices(&list), (0..600).collect(), "a line lost");
}

#[test]
fn a_line_over_16_kib_docker_splits_is_stored_whole_from_the_fluentd_driver() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let (_daemon, port) = fluent_daemon(&redis, "");
    // 40,000 bytes of message: Docker cuts lines at 16 KiB and marks the
    // parts; cowlogd joins them.
    let script = "printf 'Nov 24 13:49:59 mail postfix/smtpd[7]: long '; \
                  head -c 40000 /dev/zero | tr '\\0' x; echo; sleep 60";
    let _container = Container::run("fluentd", &fluentd_options(port), script);
    let list = redis.wait_list("POSTFIX_MAILLOG", 1);
    let entry: serde_json::Value = serde_json::from_str(&list[0]).unwrap();
    let message = entry["message"].as_str().unwrap();
    assert!(message.starts_with("long xxx"), "{message:.40}");
    assert_eq!(message.len(), "long ".len() + 40_000);
}

#[test]
fn the_gelf_driver_over_udp_delivers_a_paced_stream() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), "");
    let options = vec![
        format!("gelf-address=udp://127.0.0.1:{}", daemon.ports.gelf),
        "gelf-compression-type=gzip".into(),
        "tag={{.Name}}".into(),
    ];
    let _container = Container::run("gelf", &options, &paced_lines(300));
    let list = redis.wait_list("POSTFIX_MAILLOG", 300);
    assert_eq!(message_indices(&list), (0..300).collect());
}

/// `n` plain lines (`<label> line <i>`) on stdout, one every 10 ms, then
/// one on stderr, then a pause long enough for the driver to deliver them.
fn plain_lines(label: &str, n: usize) -> String {
    format!(
        "for i in $(seq 0 {}); do echo \"{label} line $i\"; sleep 0.01; done; \
         echo \"{label} failed\" >&2; sleep 60",
        n - 1
    )
}

/// deploy/any-docker-host.toml's inputs and routes, as the tests' daemon
/// takes them (its own Redis and ports), with `inputs` added.
fn any_docker_host_config_with(inputs: &[(&str, String)]) -> String {
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/any-docker-host.toml"
    ))
    .unwrap();
    let mut config: toml::Table = toml::from_str(&file).unwrap();
    config.remove("redis");
    if let Some(toml::Value::Table(section)) = config.get_mut("inputs") {
        for (key, value) in inputs {
            section.insert((*key).into(), value.clone().into());
        }
    }
    toml::to_string(&config).unwrap()
}

fn any_docker_host_config() -> String {
    any_docker_host_config_with(&[])
}

/// The list of `container` once it holds `n + 1` entries (`n` stdout lines
/// and the stderr one), checked line by line.
fn check_container_list(redis: &RedisServer, container: &str, label: &str, n: usize) {
    let key = format!("LOGS:{container}");
    let list = redis.wait_list(&key, n + 1);
    let entries: Vec<serde_json::Value> = list
        .iter()
        .rev()
        .map(|raw| serde_json::from_str(raw).unwrap())
        .collect();
    for (i, entry) in entries[..n].iter().enumerate() {
        assert_eq!(
            entry["message"],
            format!("{label} line {i}"),
            "{key}: {entry}"
        );
        assert_eq!(entry["priority"], "info", "{key}: {entry}");
        assert_eq!(
            entry["program"], "",
            "{key}: the tag is no program: {entry}"
        );
    }
    assert_eq!(entries[n]["message"], format!("{label} failed"));
    assert_eq!(entries[n]["priority"], "err", "stderr: {}", entries[n]);
}

/// Docker's syslog driver in its three formats over `transport`: each
/// container's lines land under its own name.
fn syslog_driver_names_the_container(transport: &str) {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), &any_docker_host_config());
    let address = format!(
        "syslog-address={transport}://127.0.0.1:{}",
        daemon.ports.syslog
    );
    let formats = [
        ("shop-web-1", ""),
        ("shop-api-1", "rfc3164"),
        ("shop-db-1", "rfc5424"),
    ];
    let _containers: Vec<Container> = formats
        .iter()
        .map(|(name, format)| {
            let mut options = vec![address.clone(), "tag={{.Name}}".into()];
            if !format.is_empty() {
                options.push(format!("syslog-format={format}"));
            }
            Container::run_named(name, "syslog", &options, &plain_lines(name, 50))
        })
        .collect();
    for (name, _) in formats {
        check_container_list(&redis, name, name, 50);
    }
    assert_eq!(redis.llen("LOGS:unknown"), 0);
}

#[test]
fn the_syslog_driver_over_udp_names_the_container_in_each_of_its_formats() {
    syslog_driver_names_the_container("udp");
}

#[test]
fn the_syslog_driver_over_tcp_names_the_container_in_each_of_its_formats() {
    syslog_driver_names_the_container("tcp");
}

#[test]
fn the_gelf_driver_over_tcp_names_the_container() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let daemon = Daemon::start(&redis.url(), &any_docker_host_config());
    let options = vec![
        format!("gelf-address=tcp://127.0.0.1:{}", daemon.ports.gelf),
        "tag={{.Name}}".into(),
    ];
    let _container = Container::run_named("shop-web-1", "gelf", &options, &plain_lines("web", 50));
    check_container_list(&redis, "shop-web-1", "web", 50);
}

#[test]
fn the_fluentd_driver_names_the_container() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let port = free_port();
    let _daemon = Daemon::start(
        &redis.url(),
        &any_docker_host_config_with(&[("fluent_tcp", format!("127.0.0.1:{port}"))]),
    );
    let _container = Container::run_named(
        "shop-web-1",
        "fluentd",
        &fluentd_options(port),
        &plain_lines("web", 50),
    );
    check_container_list(&redis, "shop-web-1", "web", 50);
}

#[test]
fn routes_by_container_glob_and_compose_project_take_the_real_drivers_names() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let routes = r#"
[[route]]
name = "shop"
container = ["shop-*"]
key = "SHOP:{container}"

[[route]]
name = "billing"
project = ["billing"]
key = "BILLING"
"#;
    let daemon = Daemon::start(&redis.url(), routes);
    let options = vec![
        format!("gelf-address=udp://127.0.0.1:{}", daemon.ports.gelf),
        "tag={{.Name}}".into(),
    ];
    let _containers = [
        Container::run_named("shop-web-1", "gelf", &options, &plain_lines("web", 20)),
        Container::run_named("billing-api-1", "gelf", &options, &plain_lines("api", 20)),
        Container::run_named(
            "billing_worker_2",
            "gelf",
            &options,
            &plain_lines("worker", 20),
        ),
        Container::run_named("other-web-1", "gelf", &options, &plain_lines("other", 20)),
    ];
    assert_eq!(redis.wait_list("SHOP:shop-web-1", 21).len(), 21);
    assert_eq!(redis.wait_list("BILLING", 42).len(), 42);
    wait_for("the other container's lines routed nowhere", || {
        (daemon.metric("cowlogd_routed_messages_total{route=\"none\"}") == 21.0).then_some(())
    });
}

#[test]
fn the_image_build_context_leaves_out_build_output_and_history() {
    let _serial = one_at_a_time();
    ready();
    // The repository as `docker build` sees it through .dockerignore, on
    // the busybox image: the sources are there, target/ and .git are not.
    let dockerfile = format!(
        "FROM {IMAGE}\nCOPY . /src\nRUN test -e /src/Cargo.toml && test -e /src/deploy/Dockerfile \
         && test ! -e /src/target && test ! -e /src/.git\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile.context");
    std::fs::write(&file, dockerfile).unwrap();
    let built = docker(&[
        "build",
        "--no-cache",
        "-q",
        "-f",
        file.to_str().unwrap(),
        "-t",
        "cowlogd-test-context:1",
        env!("CARGO_MANIFEST_DIR"),
    ]);
    let _ = docker(&["rmi", "-f", "cowlogd-test-context:1"]);
    assert!(
        built.status.success(),
        "the build context holds target/ or .git, or lacks the sources: {}",
        String::from_utf8_lossy(&built.stderr)
    );
}
