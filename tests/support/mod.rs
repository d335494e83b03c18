//! Test harness: a private `redis-server` per test, the real `cowlogd`
//! binary as a subprocess on free ports, and helpers to send and wait.

#![allow(dead_code)]

#[path = "../../parsers/tests/support/go_gelf.rs"]
pub mod go_gelf;
pub mod graylog;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some` or `PATIENCE` runs out.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the `cowlogd` binary with `args` and `env` (no inherited
/// `COWLOGD_REDIS_URL`); `(success, stdout, stderr)`.
pub fn run_cowlogd(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cowlogd"))
        .args(args)
        .env_remove("COWLOGD_REDIS_URL")
        .env_remove("COWLOGD_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts cowlogd on `dir`'s `cowlogd.toml` (under `wrapper`, if any),
/// appending its stdout to `cowlogd.out` and its log to `cowlogd.log`.
fn spawn_cowlogd(dir: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Child {
    spawn_cowlogd_restricted(dir, wrapper, env, false)
}

/// Makes the calling process refuse writable executable memory from now
/// on, for itself and what it executes (`PR_SET_MDWE`, Linux 6.3+): what
/// systemd's `MemoryDenyWriteExecute=yes` refuses.
fn deny_write_execute() -> std::io::Result<()> {
    const PR_SET_MDWE: libc::c_int = 65;
    const PR_MDWE_REFUSE_EXEC_GAIN: libc::c_ulong = 1;
    // SAFETY: prctl with integer arguments only; called between fork and
    // exec, where it touches no memory of the parent.
    let done = unsafe { libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn spawn_cowlogd_restricted(
    dir: &Path,
    wrapper: &[&str],
    env: &[(&str, &str)],
    deny_write_execute_memory: bool,
) -> Child {
    let append = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap()
    };
    let binary = env!("CARGO_BIN_EXE_cowlogd");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .arg("--config")
        .arg(dir.join("cowlogd.toml"))
        .env("RUST_LOG", "info")
        // Timestamps without a zone are read in the process's zone: the
        // tests' expectations are in UTC, whatever this machine's zone.
        .env("TZ", "UTC")
        .envs(env.iter().copied())
        .env_remove("COWLOGD_REDIS_URL")
        .stdout(append("cowlogd.out"))
        .stderr(append("cowlogd.log"));
    if deny_write_execute_memory {
        use std::os::unix::process::CommandExt;
        // SAFETY: the hook only calls prctl (async-signal-safe).
        unsafe { command.pre_exec(deny_write_execute) };
    }
    command
        .spawn()
        .expect("starting cowlogd (PR_SET_MDWE needs Linux 6.3 or later)")
}

/// A port free for both TCP and UDP on 127.0.0.1.
/// Runs `program` with `args`, `input` on its stdin; its output.
pub fn run_with_stdin(program: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .unwrap_or_else(|e| panic!("{program} stdin: {e}"));
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// A successful process's stdout as JSON; its stderr is the failure.
pub fn json_output(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn redis_server_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join("redis-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "redis-server is not installed: run `apt-get install redis-server` (the integration tests start their own instance)"
    );
}

/// A private redis-server on a free port, stopped on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    /// CA file when the server speaks TLS only.
    tls_ca: Option<PathBuf>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            tls_ca: None,
        };
        server.spawn();
        server
    }

    /// A server that speaks TLS only, with a fresh CA and server
    /// certificate for 127.0.0.1 (made with the openssl command).
    pub fn start_tls() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path();
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(certs)
                .output()
                .expect("openssl is not installed: apt-get install openssl");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=cowlogd test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            certs.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let port = free_port();
        let path = |name: &str| certs.join(name).to_str().unwrap().to_owned();
        let mut server = RedisServer {
            child: None,
            port,
            extra_args: vec![
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path("server.crt"),
                "--tls-key-file".into(),
                path("server.key"),
                "--tls-ca-cert-file".into(),
                path("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            tls_ca: Some(certs.join("ca.crt")),
            dir,
        };
        server.spawn();
        server
    }

    /// The CA that signed a TLS server's certificate.
    pub fn tls_ca(&self) -> &Path {
        self.tls_ca.as_deref().expect("a TLS server")
    }

    fn spawn(&mut self) {
        let plain_port = if self.tls_ca.is_some() {
            "0".to_owned()
        } else {
            self.port.to_string()
        };
        let child = Command::new(redis_server_binary())
            .args([
                "--port",
                &plain_port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // DEBUG SLEEP and DEBUG POPULATE stall and fill the server.
                "--enable-debug-command",
                "local",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let port = self.port;
        if self.tls_ca.is_some() {
            wait_for("redis-server to listen for TLS", || {
                TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
            });
            return;
        }
        wait_for("redis-server to answer PING", || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .ok()?;
            stream.write_all(b"PING\r\n").ok()?;
            let mut reply = [0u8; 1];
            stream.read_exact(&mut reply).ok()?;
            // +PONG, or -NOAUTH from a server with a password: it answers.
            matches!(&reply, b"+" | b"-").then_some(())
        });
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        let client = match &self.tls_ca {
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).unwrap()),
                },
            ),
            None => redis::Client::open(self.url()),
        };
        client.unwrap().get_connection().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the server (its data is gone: it keeps nothing on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new server on the same port (with the same data directory:
    /// after [`RedisServer::shutdown_saving`] it loads what was saved).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `SHUTDOWN SAVE`: the server writes its data to disk and exits.
    pub fn shutdown_saving(&mut self) {
        let _ = redis::cmd("SHUTDOWN")
            .arg("SAVE")
            .query::<()>(&mut self.client());
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn list(&self, key: &str) -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut self.client())
            .unwrap()
    }

    /// One inline command over a bare socket (no client setup, so it works
    /// while the server loads its dump); the reply's text.
    pub fn raw(&self, command: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(stream, "{command}\r\n").unwrap();
        match redis::Parser::new().parse_value(&mut std::io::BufReader::new(stream)) {
            Ok(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            other => format!("{other:?}"),
        }
    }

    pub fn llen(&self, key: &str) -> usize {
        redis::cmd("LLEN")
            .arg(key)
            .query(&mut self.client())
            .unwrap()
    }

    /// `LLEN key`, or `None` while the server refuses (loading its dump).
    fn try_llen(&self, key: &str) -> Option<usize> {
        let mut client = redis::Client::open(self.url())
            .ok()?
            .get_connection()
            .ok()?;
        redis::cmd("LLEN").arg(key).query(&mut client).ok()
    }

    /// Waits until `key` holds at least `n` entries; returns them.
    /// The entries of `key` once it holds `n` and nothing more came for
    /// half a second (a line stored twice would).
    pub fn wait_list_settled(&self, key: &str, n: usize) -> Vec<String> {
        let list = self.wait_list(key, n);
        std::thread::sleep(Duration::from_millis(500));
        if self.llen(key) > list.len() {
            self.list(key)
        } else {
            list
        }
    }

    pub fn wait_list(&self, key: &str, n: usize) -> Vec<String> {
        wait_for(&format!("{n} entries in {key}"), || {
            let len = if self.tls_ca.is_some() {
                self.llen(key)
            } else {
                self.try_llen(key)?
            };
            (len >= n).then(|| self.list(key))
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The addresses a daemon listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub gelf: u16,
    pub syslog: u16,
    pub metrics: u16,
}

/// A `cowlogd` process, killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub ports: Ports,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts cowlogd writing to `redis_url`, with `extra` TOML merged over
    /// the test's listener addresses.
    pub fn start(redis_url: &str, extra: &str) -> Daemon {
        Daemon::start_wrapped(redis_url, extra, &[], &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(redis_url: &str, extra: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_wrapped(redis_url, extra, &[], env)
    }

    /// Like [`Daemon::start`], with the open-file limit (soft and hard) set
    /// to `nofile` by util-linux `prlimit`.
    pub fn start_with_nofile(redis_url: &str, extra: &str, nofile: u32) -> Daemon {
        Daemon::start_with_nofile_limits(redis_url, extra, nofile, nofile)
    }

    /// Like [`Daemon::start`], with soft and hard open-file limits.
    pub fn start_with_nofile_limits(redis_url: &str, extra: &str, soft: u32, hard: u32) -> Daemon {
        let limit = format!("--nofile={soft}:{hard}");
        Daemon::start_wrapped(redis_url, extra, &["prlimit", &limit, "--"], &[])
    }

    /// Like [`Daemon::start`], in a process that may not make memory both
    /// writable and executable (systemd's `MemoryDenyWriteExecute=yes`).
    pub fn start_denying_write_execute(redis_url: &str, extra: &str) -> Daemon {
        Daemon::start_full(redis_url, extra, &[], &[], true)
    }

    fn start_wrapped(
        redis_url: &str,
        extra: &str,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_full(redis_url, extra, wrapper, env, false)
    }

    fn start_full(
        redis_url: &str,
        extra: &str,
        wrapper: &[&str],
        env: &[(&str, &str)],
        deny_write_execute_memory: bool,
    ) -> Daemon {
        // Three different ports: a port just released can be handed out
        // again by the next call.
        let gelf = free_port();
        let syslog = std::iter::repeat_with(free_port)
            .find(|p| *p != gelf)
            .unwrap_or_default();
        let metrics = std::iter::repeat_with(free_port)
            .find(|p| *p != gelf && *p != syslog)
            .unwrap_or_default();
        let ports = Ports {
            gelf,
            syslog,
            metrics,
        };
        let mut config: toml::Table = toml::from_str(extra).expect("test config is TOML");
        let section = |config: &mut toml::Table, name: &str| -> toml::Table {
            config
                .remove(name)
                .and_then(|v| v.as_table().cloned())
                .unwrap_or_default()
        };
        let mut redis = section(&mut config, "redis");
        redis.entry("url").or_insert(redis_url.into());
        let mut inputs = section(&mut config, "inputs");
        for (key, port) in [
            ("gelf_udp", ports.gelf),
            ("gelf_tcp", ports.gelf),
            ("syslog_udp", ports.syslog),
            ("syslog_tcp", ports.syslog),
        ] {
            inputs
                .entry(key)
                .or_insert(format!("127.0.0.1:{port}").into());
        }
        let mut metrics = section(&mut config, "metrics");
        metrics
            .entry("listen")
            .or_insert(format!("127.0.0.1:{}", ports.metrics).into());
        config.insert("redis".into(), redis.into());
        config.insert("inputs".into(), inputs.into());
        config.insert("metrics".into(), metrics.into());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cowlogd.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let child = spawn_cowlogd_restricted(dir.path(), wrapper, env, deny_write_execute_memory);
        let daemon = Daemon {
            child: Some(child),
            ports,
            dir,
        };
        wait_for("cowlogd /health", || {
            (daemon.http_get("/health").0 == 200).then_some(())
        });
        daemon
    }

    /// What cowlogd printed on stdout (`--console`).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cowlogd.out")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cowlogd.log")).unwrap_or_default()
    }

    /// `(status, body)` of a GET on the metrics listener.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_request(self.ports.metrics, "GET", path)
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200);
        body
    }

    /// The value of one series, e.g. `cowlogd_dropped_messages_total{stage="route",reason="filtered"}`
    /// (labels in any order); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// Waits until `input` has counted `n` received messages.
    pub fn wait_received(&self, input: &str, n: usize) {
        let series = format!("cowlogd_received_messages_total{{input=\"{input}\"}}");
        wait_for(&format!("{n} messages received on {input}"), || {
            (self.metric(&series) == n as f64).then_some(())
        });
    }

    /// Sum of every series of `name`.
    pub fn metric_sum(&self, name: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .filter(|l| {
                l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process is still running.
    /// File descriptors the process has open.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut child = self.child.take().unwrap();
        wait_for("cowlogd to exit after SIGTERM", || {
            child.try_wait().unwrap()
        })
    }

    /// Kills cowlogd with SIGKILL (nothing flushed, nothing closed) and
    /// waits for it to be gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts cowlogd again on the same config and ports after
    /// [`Daemon::kill`] or [`Daemon::terminate`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.child = Some(spawn_cowlogd(self.dir.path(), &[], &[]));
        wait_for("cowlogd /health after the restart", || {
            (self.http_get("/health").0 == 200).then_some(())
        });
    }

    /// Stops cowlogd with SIGTERM and starts it again on the same config
    /// and ports (its log and stdout appended to).
    pub fn restart(&mut self) {
        assert!(self.terminate().success());
        self.child = Some(spawn_cowlogd(self.dir.path(), &[], &[]));
        wait_for("cowlogd /health after the restart", || {
            (self.http_get("/health").0 == 200).then_some(())
        });
    }

    pub fn udp(&self, port: u16, datagram: &[u8]) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(datagram, ("127.0.0.1", port)).unwrap();
    }

    pub fn tcp(&self, port: u16) -> TcpStream {
        TcpStream::connect(("127.0.0.1", port)).unwrap()
    }

    /// A TCP connection from another loopback address (`127.0.0.2`): a
    /// second sender as far as per-source limits are concerned.
    pub fn tcp_from(&self, source: &str, port: u16) -> TcpStream {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let source: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
        socket.bind(&source.into()).unwrap();
        let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        socket.connect(&target.into()).unwrap();
        socket.into()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- cowlogd log ---\n{}", self.log());
        }
    }
}

/// Value of `series` in Prometheus text; labels compared as a set.
pub fn metric_value(text: &str, series: &str) -> f64 {
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
        None => (series, Vec::new()),
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (line_name, line_labels) = match key.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (key, Vec::new()),
        };
        if line_name == name
            && labels.iter().all(|l| line_labels.contains(l))
            && labels.len() == line_labels.len()
        {
            return value.parse().unwrap_or(0.0);
        }
    }
    0.0
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// A SUBSCRIBE client collecting channel payloads on its own thread.
pub struct Subscriber {
    received: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Subscriber {
    pub fn start(redis: &RedisServer, channel: &str) -> Subscriber {
        let mut connection = redis.client();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let channel = channel.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut pubsub = connection.as_pubsub();
            pubsub.subscribe(&channel).unwrap();
            pubsub
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            ready_tx.send(()).unwrap();
            loop {
                match pubsub.get_message() {
                    Ok(message) => sink
                        .lock()
                        .unwrap()
                        .push(message.get_payload_bytes().to_vec()),
                    Err(e) if e.is_timeout() => {}
                    Err(_) => return,
                }
            }
        });
        ready_rx.recv_timeout(PATIENCE).unwrap();
        Subscriber { received }
    }

    /// Subscribes over a bare socket, sending nothing but `SUBSCRIBE`: works
    /// while the server is loading its dump, when a client library's
    /// connection setup is refused.
    pub fn start_raw(redis: &RedisServer, channel: &str) -> Subscriber {
        let mut stream = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
        write!(stream, "SUBSCRIBE {channel}\r\n").unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut parser = redis::Parser::new();
        let confirmation = parser.parse_value(&mut reader).unwrap();
        assert!(
            matches!(&confirmation, redis::Value::Array(items) if items.len() == 3),
            "{confirmation:?}"
        );
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            while let Ok(redis::Value::Array(mut items)) = parser.parse_value(&mut reader) {
                if let Some(redis::Value::BulkString(payload)) = items.pop() {
                    sink.lock().unwrap().push(payload);
                }
            }
        });
        Subscriber { received }
    }

    pub fn wait(&self, n: usize) -> Vec<Vec<u8>> {
        wait_for(&format!("{n} channel messages"), || {
            let got = self.received.lock().unwrap();
            (got.len() >= n).then(|| got.clone())
        })
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// A mailcow postfix line as syslog-ng prints it on the container's stdout.
pub fn postfix_line(n: usize) -> String {
    format!(
        "Nov 24 13:49:59 mail postfix/smtpd[{}]: connect from unknown[203.0.113.{}] msg {n}",
        1000 + n % 1000,
        n % 250
    )
}

pub const POSTFIX: &str = "mailcowdockerized-postfix-mailcow-1";
pub const DOVECOT: &str = "mailcowdockerized-dovecot-mailcow-1";
pub const SOGO: &str = "mailcowdockerized-sogo-mailcow-1";

/// Docker's syslog driver relaying [`postfix_line`] `n`, octet-counted as
/// its TCP+TLS mode frames it.
pub fn postfix_frame(n: usize) -> Vec<u8> {
    let line = format!("<30>Nov 24 13:49:59 {POSTFIX}[4840]: {}\n", postfix_line(n));
    format!("{} {line}", line.len()).into_bytes()
}

/// `(status, body)` of one HTTP/1.1 request without a body to
/// `127.0.0.1:port`; `(0, "")` when nothing answers.
pub fn http_request(port: u16, method: &str, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `<n>` of an entry whose message ends `msg <n>`.
pub fn message_index(entry: &str) -> Option<usize> {
    entry
        .rsplit(" msg ")
        .next()?
        .split('"')
        .next()?
        .parse()
        .ok()
}

/// The `n` of every [`postfix_line`] in a list's entries.
pub fn message_indices(list: &[String]) -> std::collections::BTreeSet<usize> {
    list.iter().filter_map(|e| message_index(e)).collect()
}

/// cowlogd with `inputs.fluent_tcp` on a free port (returned), `extra`
/// TOML going on in the `[inputs]` table.
pub fn fluent_daemon(redis: &RedisServer, extra: &str) -> (Daemon, u16) {
    let port = free_port();
    let daemon = Daemon::start(
        &redis.url(),
        &format!("[inputs]\nfluent_tcp = \"127.0.0.1:{port}\"\n{extra}"),
    );
    (daemon, port)
}

/// Sends [`postfix_line`] `n` for every `n` in `range` as Docker GELF over
/// one TCP connection, NUL-framed, and closes it.
pub fn send_postfix_gelf_tcp(daemon: &Daemon, range: std::ops::Range<usize>) {
    let mut stream = std::io::BufWriter::new(daemon.tcp(daemon.ports.gelf));
    for n in range {
        stream
            .write_all(&docker_gelf(POSTFIX, &postfix_line(n)))
            .unwrap();
        stream.write_all(b"\0").unwrap();
    }
    stream.flush().unwrap();
}

/// Docker's GELF JSON for a line of `container`.
pub fn docker_gelf(container: &str, line: &str) -> Vec<u8> {
    go_gelf::docker_json(container, line, "1712345678.123", 6)
}
