//! The `[docker]` source against the real Docker daemon: containers keep
//! Docker's default `json-file` driver and cowlogd reads them over the
//! Engine API. Each test names its containers `apiN-…` and includes only
//! those, so that it reads nothing of another test's.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::docker::{Container, IMAGE, docker, docker_at, one_at_a_time, paced_lines_every, ready};
use crate::support::*;

/// The socket the tests' daemon answers on.
fn socket() -> String {
    std::env::var("COWLOGD_TEST_DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// cowlogd reading the containers `include` names from `docker_host`,
/// with `extra` TOML (other sections) after.
fn api_daemon(redis: &RedisServer, docker_host: &str, include: &str, extra: &str) -> Daemon {
    Daemon::start(
        &redis.url(),
        &format!("[docker]\nsocket = \"{docker_host}\"\ninclude = [\"{include}\"]\n{extra}"),
    )
}

fn queue_section(dir: &Path) -> String {
    format!("[queue]\ndir = \"{}\"\n", dir.display())
}

fn field(entry: &str, name: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(entry).unwrap();
    value[name].as_str().unwrap_or_default().to_owned()
}

fn count_each(list: &[String]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for n in list.iter().filter_map(|e| message_index(e)) {
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

#[test]
fn containers_running_before_and_started_after_cowlogd_give_the_gelf_drivers_records() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let script = "echo 'Dec  6 05:00:00 mail postfix/smtpd[7]: connect from a'; \
                  echo 'Dec  6 05:00:00 mail postfix/smtpd[7]: lost connection b' >&2; \
                  printf 'Dec  6 05:00:00 mail postfix/smtpd[7]: bad \\377 byte\\n'; \
                  echo 'Dec  6 05:00:00 mail postfix/cleanup[8]: message-id=<c>'; sleep 60";
    // Printed before cowlogd starts: not read (no checkpoint, so from now).
    let before = Container::start(
        "api1-postfix-mailcow-1",
        &[],
        "echo 'Dec  6 05:00:00 mail postfix/smtpd[7]: printed before'; sleep 6; \
         echo 'Dec  6 05:00:00 mail postfix/smtpd[7]: printed after'; sleep 60",
    );
    std::thread::sleep(Duration::from_millis(500));
    let daemon = api_daemon(&redis, &socket(), "api1-*", "");
    let address = format!("gelf-address=udp://127.0.0.1:{}", daemon.ports.gelf);
    let gelf = ["--log-driver", "gelf", "--log-opt", &address];
    let _by_gelf = Container::start("gelf1-postfix-mailcow-1", &gelf, script);
    let _by_api = Container::start("api1-postfix-mailcow-2", &[], script);
    let list = redis.wait_list_settled("POSTFIX_MAILLOG", 9);
    assert_eq!(list.len(), 9, "{list:#?}");
    let messages: Vec<String> = list.iter().map(|e| field(e, "message")).collect();
    assert!(messages.contains(&"printed after".to_owned()));
    assert!(!messages.contains(&"printed before".to_owned()));
    // The same four lines by the gelf driver and by the API, alike but for
    // the time.
    let without_time = |entry: &String| {
        let mut value: serde_json::Value = serde_json::from_str(entry).unwrap();
        value.as_object_mut().unwrap().remove("time");
        value.to_string()
    };
    let mut alike: BTreeMap<String, usize> = BTreeMap::new();
    for entry in list.iter().filter(|e| !e.contains("printed after")) {
        *alike.entry(without_time(entry)).or_insert(0) += 1;
    }
    assert_eq!(alike.len(), 4, "{alike:#?}");
    assert!(alike.values().all(|n| *n == 2), "{alike:#?}");
    let from_stderr = list
        .iter()
        .find(|e| e.contains("lost connection b"))
        .unwrap();
    assert_eq!(field(from_stderr, "priority"), "err", "stderr is level 3");
    assert!(
        list.iter()
            .any(|e| field(e, "message") == "bad \u{fffd} byte")
    );
    assert_eq!(daemon.metric("cowlogd_docker_connected"), 1.0);
    assert_eq!(daemon.http_get("/ready").0, 200);
    drop(before);
}

#[test]
fn tty_containers_and_40_kib_lines_are_read_whole() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let _daemon = api_daemon(&redis, &socket(), "api2-*", "");
    let script = "echo 'Dec  6 05:00:00 mail postfix/smtpd[7]: short'; \
                  printf 'Dec  6 05:00:00 mail postfix/smtpd[7]: long '; \
                  head -c 40000 /dev/zero | tr '\\0' x; echo; \
                  echo 'Dec  6 05:00:00 mail postfix/smtpd[7]: after'; sleep 60";
    let _tty = Container::start("api2-postfix-mailcow-1", &["-t"], script);
    let _plain = Container::start("api2-postfix-mailcow-2", &[], script);
    let list = redis.wait_list_settled("POSTFIX_MAILLOG", 6);
    assert_eq!(list.len(), 6);
    let mut messages: Vec<String> = list.iter().map(|e| field(e, "message")).collect();
    messages.sort();
    let long = format!("long {}", "x".repeat(40_000));
    assert_eq!(messages, ["after", "after", &long, &long, "short", "short"]);
}

#[test]
fn a_renamed_container_is_routed_by_its_new_name_and_a_removed_ones_checkpoint_goes() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let state = tempfile::tempdir().unwrap();
    let daemon = api_daemon(
        &redis,
        &socket(),
        "api3-*",
        &format!("state_dir = \"{}\"\n", state.path().display()),
    );
    let container = Container::start(
        "api3-postfix-mailcow-1",
        &[],
        "echo 'Dec  6 05:00:00 mail postfix/smtpd[7]: before rename'; sleep 5; \
         echo 'Dec  6 05:00:00 mail dovecot: after rename'; sleep 60",
    );
    redis.wait_list("POSTFIX_MAILLOG", 1);
    let renamed = docker(&["rename", &container.name, "api3-dovecot-mailcow-1"]);
    assert!(renamed.status.success());
    let dovecot = redis.wait_list("DOVECOT_MAILLOG", 1);
    assert_eq!(field(&dovecot[0], "message"), "after rename");
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 1);
    // Removed: its checkpoint leaves the file.
    let id = String::from_utf8(
        docker(&["inspect", "--format", "{{.Id}}", "api3-dovecot-mailcow-1"]).stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let file = state.path().join("docker-checkpoints.json");
    wait_for("the checkpoint written", || {
        std::fs::read_to_string(&file)
            .ok()?
            .contains(&id)
            .then_some(())
    });
    assert!(
        docker(&["rm", "-f", "api3-dovecot-mailcow-1"])
            .status
            .success()
    );
    wait_for("the checkpoint forgotten", || {
        (!std::fs::read_to_string(&file).ok()?.contains(&id)).then_some(())
    });
    wait_for("its stream closed", || {
        (daemon.metric("cowlogd_docker_containers") == 0.0).then_some(())
    });
}

#[test]
fn sigkill_mid_stream_and_restarts_store_every_line_exactly_once_and_lines_printed_while_down_too()
{
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let mut daemon = api_daemon(&redis, &socket(), "api4-*", &queue_section(queue.path()));
    // Lines that share a timestamp are common at this pace.
    let container = Container::start(
        "api4-postfix-mailcow-1",
        &[],
        &paced_lines_every(3000, "0.001", "sleep 60"),
    );
    for (round, pause_redis) in [(300, false), (900, true), (1500, false)] {
        wait_for("lines before the kill", || {
            (redis.llen("POSTFIX_MAILLOG") >= round).then_some(())
        });
        if pause_redis {
            // Lines on disk, not yet in Redis, when the kill comes.
            assert!(
                redis
                    .raw("CLIENT PAUSE 1500 WRITE")
                    .to_lowercase()
                    .contains("ok")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        daemon.kill();
        // Printed while cowlogd is down: read from the json-file later.
        std::thread::sleep(Duration::from_millis(700));
        daemon.start_again();
    }
    let list = redis.wait_list_settled("POSTFIX_MAILLOG", 3000);
    let counts = count_each(&list);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    assert_eq!(counts.len(), 3000, "lost: {}", 3000 - counts.len());
    // Newest first, in the order printed.
    let order: Vec<usize> = list.iter().rev().filter_map(|e| message_index(e)).collect();
    assert_eq!(order, (0..3000).collect::<Vec<_>>());
    assert_eq!(
        container.docker_logs().len(),
        3000,
        "docker logs keeps every line"
    );
}

#[test]
fn without_a_state_directory_reading_starts_from_now_and_says_so() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let _container = Container::start(
        "api5-postfix-mailcow-1",
        &[],
        &paced_lines_every(5, "0", "sleep 60"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let daemon = api_daemon(&redis, &socket(), "api5-*", "");
    wait_for("the container followed", || {
        (daemon.metric("cowlogd_docker_containers") == 1.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(redis.llen("POSTFIX_MAILLOG"), 0);
    assert!(daemon.log().contains("containers are read from now on"));
}

#[test]
fn a_hundred_containers_printing_at_once_are_each_read_exactly_once() {
    let _serial = one_at_a_time();
    ready();
    let redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    let daemon = api_daemon(&redis, &socket(), "api6-*", &queue_section(queue.path()));
    let containers: Vec<Container> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..10)
            .map(|batch| {
                scope.spawn(move || {
                    (0..10)
                        .map(|n| {
                            let index = batch * 10 + n;
                            Container::start(
                                &format!("api6-postfix-mailcow-{index}"),
                                &[],
                                &format!(
                                    "sleep 2; for i in $(seq 0 19); do echo \"Dec  6 05:00:00 mail postfix/smtpd[7]: c{index} msg $i\"; done; sleep 60"
                                ),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        starting
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    });
    let list = redis.wait_list_settled("POSTFIX_MAILLOG", 2000);
    assert_eq!(list.len(), 2000);
    let distinct: std::collections::HashSet<String> =
        list.iter().map(|e| field(e, "message")).collect();
    assert_eq!(distinct.len(), 2000);
    assert_eq!(daemon.metric("cowlogd_docker_containers"), 100.0);
    drop(containers);
}

/// A Docker daemon of the test's own (its own socket, data and state), so
/// that it can be stopped and started again.
struct OwnDockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnDockerd {
    /// Not started yet.
    fn new() -> OwnDockerd {
        OwnDockerd {
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--bridge=none", "--host", &self.host()])
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd: apt-get install docker.io");
        self.child = Some(child);
        let host = self.host();
        wait_for("the test's own dockerd", || {
            docker_at(Some(&host), &["info"])
                .status
                .success()
                .then_some(())
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    fn import_image(&self) {
        let save = Command::new("docker")
            .args(["save", IMAGE, "-o"])
            .arg(self.dir.path().join("image.tar"))
            .env_remove("DOCKER_HOST")
            .envs(std::env::var("COWLOGD_TEST_DOCKER_HOST").map(|h| ("DOCKER_HOST", h)))
            .status()
            .unwrap();
        assert!(save.success());
        let image = self.dir.path().join("image.tar");
        let loaded = docker_at(Some(&self.host()), &["load", "-i", image.to_str().unwrap()]);
        assert!(
            loaded.status.success(),
            "{}",
            String::from_utf8_lossy(&loaded.stderr)
        );
    }
}

impl Drop for OwnDockerd {
    fn drop(&mut self) {
        let host = self.host();
        let listed = docker_at(Some(&host), &["ps", "-aq"]);
        for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            let _ = docker_at(Some(&host), &["rm", "-f", id]);
        }
        self.stop();
    }
}

#[test]
fn a_dockerd_not_up_at_start_is_waited_for_and_its_restart_is_survived_reading_every_line_once() {
    let _serial = one_at_a_time();
    ready();
    let mut dockerd = OwnDockerd::new();
    let host = dockerd.host();
    let redis = RedisServer::start();
    let queue = tempfile::tempdir().unwrap();
    // cowlogd first, its Docker daemon not there yet (as at boot).
    let daemon = api_daemon(&redis, &host, "api7-*", &queue_section(queue.path()));
    let (status, body) = daemon.http_get("/ready");
    assert_eq!(status, 503);
    assert!(body.contains("docker not connected"), "{body}");
    dockerd.spawn();
    dockerd.import_image();
    wait_for("docker connected", || {
        (daemon.metric("cowlogd_docker_connected") == 1.0).then_some(())
    });
    let first = Container::start_at(
        Some(&host),
        "api7-postfix-mailcow-1",
        &[],
        &paced_lines_every(100_000, "0.002", "sleep 60"),
    );
    wait_for("lines before dockerd stops", || {
        (redis.llen("POSTFIX_MAILLOG") >= 200).then_some(())
    });
    dockerd.stop();
    wait_for("/ready to say Docker is away", || {
        let (status, body) = daemon.http_get("/ready");
        (status == 503 && body.contains("docker not connected")).then_some(())
    });
    dockerd.spawn();
    wait_for("docker connected again", || {
        (daemon.metric("cowlogd_docker_reconnects_total") >= 1.0
            && daemon.metric("cowlogd_docker_connected") == 1.0)
            .then_some(())
    });
    assert_eq!(daemon.http_get("/ready").0, 200);
    // Everything the first container printed before dockerd stopped it,
    // once; and a container started now is read.
    let printed = first.docker_logs().len();
    assert!(printed >= 200, "{printed}");
    let _second = Container::start_at(
        Some(&host),
        "api7-postfix-mailcow-2",
        &[],
        "echo 'Dec  6 05:00:00 mail postfix/smtpd[7]: second container'; sleep 60",
    );
    let list = redis.wait_list_settled("POSTFIX_MAILLOG", printed + 1);
    assert_eq!(list.len(), printed + 1);
    let counts = count_each(&list);
    assert_eq!(counts.len(), printed);
    assert!(counts.values().all(|n| *n == 1));
}

#[test]
fn through_the_socket_proxy_config_cowlogd_reads_and_everything_else_is_refused() {
    let _serial = one_at_a_time();
    ready();
    let socket_path = socket().trim_start_matches("unix://").to_owned();
    let port = free_port();
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/docker-socket-proxy/haproxy.cfg"
    ))
    .unwrap()
    .replace("bind :2375", &format!("bind 127.0.0.1:{port}"))
    .replace("/var/run/docker.sock", &socket_path);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("haproxy: apt-get install haproxy");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _proxy = Stopped(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            // Not the test's own pipes: a proxy outliving the test would
            // hold them open.
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the proxy", || {
        (http_request(port, "GET", "/version").0 == 200).then_some(())
    });
    let redis = RedisServer::start();
    let _daemon = api_daemon(&redis, &format!("tcp://127.0.0.1:{port}"), "api8-*", "");
    let _container = Container::start(
        "api8-postfix-mailcow-1",
        &[],
        &paced_lines_every(20, "0.01", "sleep 60"),
    );
    let list = redis.wait_list_settled("POSTFIX_MAILLOG", 20);
    assert_eq!(count_each(&list).len(), 20);
    // What cowlogd does not need is refused: files out of a container, a
    // new container, exec, images.
    for (method, path) in [
        (
            "GET",
            "/containers/api8-postfix-mailcow-1/archive?path=/bin",
        ),
        ("GET", "/containers/api8-postfix-mailcow-1/export"),
        ("POST", "/containers/create"),
        ("POST", "/containers/api8-postfix-mailcow-1/exec"),
        ("GET", "/images/json"),
        ("GET", "/v1.41/secrets"),
    ] {
        let (status, _) = http_request(port, method, path);
        assert_eq!(status, 403, "{method} {path}");
    }
    assert_eq!(http_request(port, "GET", "/v1.41/containers/json").0, 200);
}

/// A child process killed when dropped, also when the test fails.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
