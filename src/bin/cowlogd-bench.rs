//! `cowlogd-bench`: a load generator for log collectors, the way
//! redis-benchmark is one for Redis.
//!
//! It sends pre-generated, mailcow-like traffic (postfix, dovecot and SOGo
//! lines of realistic lengths) as Docker sends it — GELF over UDP (gzip
//! level 1, go-gelf chunking for a configurable share) or TCP, syslog over
//! UDP or TCP in Docker's or `logger`'s format — at a fixed rate or as fast
//! as it can (UDP through `sendmmsg`, so the sender is not the limit). With
//! `--redis` it counts what arrived: list growth, and payloads on the
//! channel, each carrying its send time, for latency percentiles. With
//! `--pid` it reads the collector's CPU time and peak RSS from `/proc`.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use cowlogd_parsers::encode::compress::{Codec, Compressor};
use cowlogd_parsers::encode::gelf::for_each_chunk;
use cowlogd_parsers::fluent::msgpack::write_str;

/// How the traffic reaches the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Docker's gelf driver over UDP: gzip level 1, chunked past 1420 bytes.
    GelfUdp,
    /// GELF over TCP: NUL-framed JSON.
    GelfTcp,
    /// Docker's syslog driver (or `logger`) over UDP.
    SyslogUdp,
    /// Docker's syslog driver (or `logger`) over TCP, octet-counted.
    SyslogTcp,
    /// Docker's fluentd driver over TCP: Forward Message mode with
    /// sub-second time, as `fluentd-async` sends it (no ack).
    FluentTcp,
}

/// Which syslog header the lines carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Docker's syslog driver: the container name as tag, the container's
    /// syslog-ng line as message.
    Docker,
    /// util-linux `logger`: host, tag and pid of a plain program.
    Logger,
}

/// Load generator for log collectors: mailcow-like traffic in, counts and
/// latency out.
#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Load generator for log collectors: sends mailcow-like GELF, syslog or Forward traffic at a rate (or as fast as it can) and, with --redis, counts what arrived and how late"
)]
struct Args {
    /// Transport and protocol.
    #[arg(long, value_enum, default_value_t = Target::SyslogTcp)]
    target: Target,
    /// The collector's address (default: 127.0.0.1:12201 for GELF,
    /// 127.0.0.1:5140 for syslog, 127.0.0.1:24224 for fluent).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Messages to send.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    messages: u64,
    /// Messages per second, paced every millisecond; 0: as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Syslog header format.
    #[arg(long, value_enum, default_value_t = Format::Docker)]
    format: Format,
    /// Share of GELF messages long enough to be chunked (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    chunked: f64,
    /// Incompressible bytes added to each chunked message (6000 gzip to
    /// five 1420-byte chunks; 8192 makes "8 KiB messages").
    #[arg(long, default_value_t = 6000)]
    chunk_pad: usize,
    /// Redis to count deliveries in (list growth and channel payloads).
    #[arg(long)]
    redis: Option<String>,
    /// Lists whose growth counts as stored.
    #[arg(long = "key", default_values_t = ["POSTFIX_MAILLOG".to_owned(), "DOVECOT_MAILLOG".to_owned(), "SOGO_LOG".to_owned()])]
    keys: Vec<String>,
    /// The channel to subscribe to.
    #[arg(long, default_value = "F2B_CHANNEL")]
    channel: String,
    /// The collector's process, for CPU time and peak RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds to wait for the last deliveries after sending.
    #[arg(long, default_value_t = 10)]
    wait_s: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Public addresses (185.12.0.0/16, cycled) the mix's clients come
    /// from, so that the SASL failures count toward bans; 0: the mix's
    /// documentation address, which netfilter ignores.
    #[arg(long, default_value_t = 0)]
    attackers: u32,
}

/// A line of the traffic mix and the container that writes it.
struct Line {
    container: &'static str,
    text: String,
}

/// A mix of mailcow lines: (container, program part, message), lengths as
/// in a real maillog.
const MIX: &[(&str, &str, &str)] = &[
    (
        "mailcowdockerized-postfix-mailcow-1",
        "postfix/smtpd[4711]",
        "connect from unknown[203.0.113.7]",
    ),
    (
        "mailcowdockerized-postfix-mailcow-1",
        "postfix/smtpd[4711]",
        "warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
    ),
    (
        "mailcowdockerized-postfix-mailcow-1",
        "postfix/smtpd[4712]",
        "NOQUEUE: reject: RCPT from unknown[198.51.100.23]: 554 5.7.1 Service unavailable; Client host [198.51.100.23] blocked using zen.spamhaus.org; from=<spam@example.net> to=<u@example.org> proto=ESMTP helo=<example.net>",
    ),
    (
        "mailcowdockerized-postfix-mailcow-1",
        "postfix/qmgr[340]",
        "4B1C22A0F1: from=<alice@example.org>, size=18231, nrcpt=1 (queue active)",
    ),
    (
        "mailcowdockerized-postfix-mailcow-1",
        "postfix/smtp[5120]",
        "4B1C22A0F1: to=<bob@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=0.61, delays=0.05/0.01/0.3/0.25, dsn=2.0.0, status=sent (250 2.0.0 OK)",
    ),
    (
        "mailcowdockerized-dovecot-mailcow-1",
        "dovecot",
        "imap-login: Login: user=<u@example.org>, method=PLAIN, rip=203.0.113.7, lip=172.22.1.250, mpid=1234, TLS, session=<q2mKxH0UoJPLAAAB>",
    ),
    (
        "mailcowdockerized-dovecot-mailcow-1",
        "dovecot",
        "auth: passwd-file(u@example.org,203.0.113.7): Password mismatch",
    ),
    (
        "mailcowdockerized-sogo-mailcow-1",
        "sogod [109]",
        "[109]: mailcowdockerized_watchdog-mailcow_1.mailcowdockerized_mailcow-network \"GET /SOGo.index/ HTTP/1.1\" 200 2531/0 0.005 - - 0",
    ),
];

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Random-looking, incompressible text (xorshift): padding that makes a
/// GELF message chunked even after gzip.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            alphabet[(x % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

/// The client address of the mix's lines.
const MIX_CLIENT: &str = "203.0.113.7";

/// Message `seq` of run `run`, its client one of `attackers` public
/// addresses (none: [`MIX_CLIENT`]). The marker comes right after the text
/// the mailcow filters look at and before any padding, so it survives the
/// channel's sanitizing and cut; the receiver matches and times by it.
fn line(run: u32, seq: u64, pad: usize, attackers: u32) -> Line {
    let (container, program, message) = MIX[(seq % MIX.len() as u64) as usize];
    let message = match attackers {
        0 => std::borrow::Cow::Borrowed(message),
        n => {
            let k = (seq / MIX.len() as u64) % u64::from(n);
            message
                .replace(MIX_CLIENT, &format!("185.12.{}.{}", k / 256 % 256, k % 256))
                .into()
        }
    };
    let padding = if pad > 0 {
        format!(" {}", noise(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15), pad))
    } else {
        String::new()
    };
    Line {
        container,
        text: format!("Dec  1 18:30:00 mail {program}: {message} bench={run}:{seq}{padding}"),
    }
}

/// Docker's GELF JSON for `line` (go-gelf's field order and Docker's extras).
fn docker_gelf(line: &Line, created_ns: u64) -> Vec<u8> {
    let mut json = Vec::with_capacity(line.text.len() + 600);
    json.extend_from_slice(br#"{"version":"1.1","host":"docker-host-01","short_message":"#);
    serde_json::to_writer(&mut json, &line.text).unwrap_or_default();
    let _ = write!(
        json,
        r#","timestamp":{}.{:03},"level":6,"_command":"/docker-entrypoint.sh","_container_id":"3b2f6e0c9a1d4e5f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f","_container_name":"{}","_created":"2024-05-01T09:59:58.123456789Z","_image_id":"sha256:9c7a54a9a43cca047013b82af109fe963fde787f63f9e016fdc3384500c2823d","_image_name":"ghcr.io/mailcow/postfix:1.80","_tag":"3b2f6e0c9a1d"}}"#,
        created_ns / 1_000_000_000,
        (created_ns / 1_000_000) % 1000,
        line.container
    );
    json
}

/// Docker's fluentd record for `line` as fluent-logger-golang sends it:
/// `[tag, EventTime, {container_id, container_name, source, log}, {}]`.
fn docker_forward(line: &Line, created_ns: u64) -> Vec<u8> {
    // Cut at 64 KiB, as before; Docker's own lines are at most 16 KiB.
    fn str(out: &mut Vec<u8>, s: &[u8]) {
        write_str(out, &s[..s.len().min(usize::from(u16::MAX))]);
    }
    let mut out = Vec::with_capacity(line.text.len() + 200);
    out.push(0x94);
    str(&mut out, b"3b2f6e0c9a1d");
    out.extend([0xd7, 0x00]);
    out.extend(((created_ns / 1_000_000_000) as u32).to_be_bytes());
    out.extend(((created_ns % 1_000_000_000) as u32).to_be_bytes());
    out.push(0x84);
    let name = format!("/{}", line.container);
    for (key, value) in [
        (
            &b"container_id"[..],
            &b"3b2f6e0c9a1d4e5f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"[..],
        ),
        (b"container_name", name.as_bytes()),
        (b"source", b"stdout"),
        (b"log", line.text.as_bytes()),
    ] {
        str(&mut out, key);
        str(&mut out, value);
    }
    out.push(0x80);
    out
}

/// The syslog frame of `line` (without octet count or newline).
fn syslog(line: &Line, format: Format, seq: u64) -> String {
    match format {
        Format::Docker => format!(
            "<30>Dec  1 18:30:00 {}[4840]: {}",
            line.container, line.text
        ),
        Format::Logger => {
            let (_, message) = line.text.split_once(": ").unwrap_or(("", &line.text));
            format!(
                "<13>Dec  1 18:30:00 bench-host myapp[{}]: {message}",
                1000 + seq % 1000
            )
        }
    }
}

/// Deliveries seen on the channel: count and one latency per payload,
/// against the time each message was handed to the socket.
struct Seen {
    count: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    sent_at_ns: Vec<AtomicU64>,
}

fn subscribe(url: &str, channel: &str, run: u32, seen: Arc<Seen>) -> anyhow::Result<()> {
    let client = redis::Client::open(url).context("--redis")?;
    let mut connection = client.get_connection().context("connecting to Redis")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let channel = channel.to_owned();
    let marker = format!("bench={run}:");
    std::thread::spawn(move || {
        let mut pubsub = connection.as_pubsub();
        if pubsub.subscribe(&channel).is_err() {
            return;
        }
        let _ = ready_tx.send(());
        while let Ok(message) = pubsub.get_message() {
            let payload = message.get_payload_bytes();
            let Some(at) = memchr::memmem::find(payload, marker.as_bytes()) else {
                continue;
            };
            let received = now_ns();
            seen.count.fetch_add(1, Ordering::Relaxed);
            let rest = &payload[at + marker.len()..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let sent = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|t| t.parse::<usize>().ok())
                .and_then(|seq| seen.sent_at_ns.get(seq))
                .map(|t| t.load(Ordering::Relaxed))
                .filter(|t| *t > 0);
            if let Some(sent) = sent {
                let micros = received.saturating_sub(sent) / 1000;
                if let Ok(mut latencies) = seen.latencies_us.lock() {
                    latencies.push(micros.min(u64::from(u32::MAX)) as u32);
                }
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("subscribing to the channel")
}

fn list_lengths(url: &str, keys: &[String]) -> anyhow::Result<u64> {
    let mut connection = redis::Client::open(url)?.get_connection()?;
    let mut total = 0;
    for key in keys {
        total += redis::cmd("LLEN").arg(key).query::<u64>(&mut connection)?;
    }
    Ok(total)
}

/// `(cpu seconds, peak RSS KiB)` of `pid`.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    // USER_HZ is 100 on Linux.
    Some((ticks as f64 / 100.0, peak))
}

/// Every message's bytes, generated before sending: the datagrams of each
/// (GELF UDP: one or more chunks), or its TCP frame.
fn generate(args: &Args, run: u32) -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
    let chunk_every = if args.chunked > 0.0 {
        (1.0 / args.chunked.min(1.0)).round().max(1.0) as u64
    } else {
        0
    };
    let mut compressor = Compressor::new(Codec::Gzip);
    let mut compressed = Vec::new();
    let mut scratch = Vec::new();
    let created = now_ns();
    (0..args.messages)
        .map(|seq| {
            let chunked =
                args.target == Target::GelfUdp && chunk_every > 0 && seq % chunk_every == 0;
            let line = line(
                run,
                seq,
                if chunked { args.chunk_pad } else { 0 },
                args.attackers,
            );
            Ok(match args.target {
                Target::GelfUdp => {
                    compressor.compress(&docker_gelf(&line, created), &mut compressed);
                    let id = (u64::from(run) << 40 | seq).to_be_bytes();
                    let mut datagrams = Vec::new();
                    for_each_chunk(&compressed, 1420, id, &mut scratch, |d| {
                        datagrams.push(d.to_vec())
                    })
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    datagrams
                }
                Target::GelfTcp => {
                    let mut frame = docker_gelf(&line, created);
                    frame.push(0);
                    vec![frame]
                }
                Target::SyslogUdp => vec![syslog(&line, args.format, seq).into_bytes()],
                Target::SyslogTcp => {
                    let frame = syslog(&line, args.format, seq);
                    vec![format!("{} {frame}\n", frame.len() + 1).into_bytes()]
                }
                Target::FluentTcp => vec![docker_forward(&line, created)],
            })
        })
        .collect()
}

/// Sends `messages`, recording when each was handed to the socket, and
/// counting in `sent` as it goes.
fn send(
    args: &Args,
    addr: SocketAddr,
    messages: &[Vec<Vec<u8>>],
    seen: &Seen,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    // Paced: one batch per millisecond; else 64 messages per system call.
    let batch = if args.rate == 0 {
        64
    } else {
        (args.rate / 1000).max(1) as usize
    };
    let started = Instant::now();
    let mut udp = None;
    let mut tcp = None;
    match args.target {
        Target::GelfUdp | Target::SyslogUdp => {
            let socket = UdpSocket::bind(if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })?;
            socket.connect(addr)?;
            udp = Some(socket);
        }
        Target::GelfTcp | Target::SyslogTcp | Target::FluentTcp => {
            let stream =
                TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
            stream.set_nodelay(true)?;
            tcp = Some(stream);
        }
    }
    let mut buffer = Vec::new();
    let mut done = 0;
    for group in messages.chunks(batch) {
        if let Some(socket) = &udp {
            let datagrams: Vec<&[u8]> = group.iter().flatten().map(Vec::as_slice).collect();
            send_datagrams(socket, &datagrams)?;
        } else if let Some(stream) = tcp.as_mut() {
            buffer.clear();
            group
                .iter()
                .flatten()
                .for_each(|f| buffer.extend_from_slice(f));
            stream.write_all(&buffer)?;
        }
        let at = now_ns();
        for slot in &seen.sent_at_ns[done..done + group.len()] {
            slot.store(at, Ordering::Relaxed);
        }
        done += group.len();
        sent.store(done as u64, Ordering::Relaxed);
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(done as f64 / args.rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    Ok(())
}

/// All of `datagrams` through `sendmmsg`, retrying the rest after a short
/// send (a full socket buffer).
fn send_datagrams(socket: &UdpSocket, datagrams: &[&[u8]]) -> anyhow::Result<()> {
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
    let mut rest = datagrams;
    while !rest.is_empty() {
        let slices: Vec<[std::io::IoSlice<'_>; 1]> = rest
            .iter()
            .take(64)
            .map(|d| [std::io::IoSlice::new(d)])
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> = vec![None; slices.len()];
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
        let sent = match sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs,
            [],
            MsgFlags::empty(),
        ) {
            Ok(results) => results.count(),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ENOBUFS) => 0,
            Err(error) => bail!("sendmmsg: {error}"),
        };
        rest = &rest[sent..];
        if sent == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(f64::from(sorted[index.min(sorted.len() - 1)]) / 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addr = args.addr.unwrap_or_else(|| match args.target {
        Target::GelfUdp | Target::GelfTcp => SocketAddr::from(([127, 0, 0, 1], 12201)),
        Target::SyslogUdp | Target::SyslogTcp => SocketAddr::from(([127, 0, 0, 1], 5140)),
        Target::FluentTcp => SocketAddr::from(([127, 0, 0, 1], 24224)),
    });
    let run = (now_ns() % 1_000_000) as u32;
    let messages = generate(&args, run)?;
    let seen = Arc::new(Seen {
        count: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::with_capacity(messages.len())),
        sent_at_ns: (0..messages.len()).map(|_| AtomicU64::new(0)).collect(),
    });
    let lists_before = match &args.redis {
        Some(url) => {
            subscribe(url, &args.channel, run, seen.clone())?;
            Some(list_lengths(url, &args.keys)?)
        }
        None => None,
    };
    let usage_before = args.pid.and_then(process_usage);
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal() && !args.json;
    let sender = {
        let (sent, seen, args) = (sent.clone(), seen.clone(), args.clone());
        std::thread::spawn(move || send(&args, addr, &messages, &seen, &sent))
    };
    while !sender.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        if progress {
            eprint!(
                "\rsent {:>10}  delivered {:>10}",
                sent.load(Ordering::Relaxed),
                seen.count.load(Ordering::Relaxed)
            );
        }
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    let send_seconds = started.elapsed().as_secs_f64();
    let total = sent.load(Ordering::Relaxed);
    // Wait for the last deliveries: until all arrived, or nothing new for 2 s,
    // or --wait-s.
    let mut last_progress = (Instant::now(), seen.count.load(Ordering::Relaxed));
    let wait_until = Instant::now() + Duration::from_secs(args.wait_s);
    let mut delivered_at = started.elapsed();
    while args.redis.is_some() && Instant::now() < wait_until {
        let count = seen.count.load(Ordering::Relaxed);
        if count != last_progress.1 {
            last_progress = (Instant::now(), count);
            delivered_at = started.elapsed();
        }
        if count >= total || last_progress.0.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if progress {
        eprintln!();
    }
    let delivered = seen.count.load(Ordering::Relaxed);
    let stored = match (&args.redis, lists_before) {
        (Some(url), Some(before)) => Some(list_lengths(url, &args.keys)?.saturating_sub(before)),
        _ => None,
    };
    let mut latencies = seen
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    let usage = args.pid.and_then(process_usage);
    let cpu_seconds = usage
        .zip(usage_before)
        .map(|((after, _), (before, _))| after - before);
    let seconds = delivered_at.as_secs_f64().max(send_seconds);
    let result = serde_json::json!({
        "target": args
            .target
            .to_possible_value()
            .map_or_else(|| format!("{:?}", args.target), |v| v.get_name().to_owned()),
        "sent": total,
        "send_rate": (total as f64 / send_seconds).round(),
        "delivered": args.redis.as_ref().map(|_| delivered),
        "stored": stored,
        "lost": args.redis.as_ref().map(|_| total.saturating_sub(delivered)),
        "seconds": seconds,
        "throughput": args.redis.as_ref().map(|_| (delivered as f64 / seconds).round()),
        "latency_ms": {
            "p50": percentile(&latencies, 0.50),
            "p99": percentile(&latencies, 0.99),
            "p999": percentile(&latencies, 0.999),
            "max": latencies.last().map(|m| f64::from(*m) / 1000.0),
        },
        "collector_cpu_seconds": cpu_seconds,
        "collector_cpu_us_per_message": cpu_seconds.map(|c| c * 1e6 / total.max(1) as f64),
        "collector_peak_rss_kib": usage.map(|(_, peak)| peak),
    });
    if args.json {
        println!("{result}");
    } else {
        let field = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        for (name, value) in result.as_object().into_iter().flatten() {
            if let serde_json::Value::Object(inner) = value {
                let parts: Vec<String> = inner
                    .iter()
                    .map(|(k, v)| format!("{k} {}", field(v)))
                    .collect();
                println!("{name:<30} {}", parts.join(", "));
            } else {
                println!("{name:<30} {}", field(value));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_a_marker_the_channel_keeps_and_chunked_ones_need_chunks() {
        let line = line(7, 42, 0, 0);
        assert!(line.text.ends_with(" bench=7:42"));
        let sasl = super::line(7, 8 * 300 + 1, 0, 1000);
        assert!(
            sasl.text
                .contains("warning: unknown[185.12.1.44]: SASL LOGIN")
        );
        let mut compressed = Vec::new();
        let mut compressor = Compressor::new(Codec::Gzip);
        compressor.compress(&docker_gelf(&line, 1), &mut compressed);
        assert!(compressed.len() <= 1420);
        let long = super::line(7, 43, 6000, 0);
        assert!(long.text.contains(" bench=7:43 "));
        compressor.compress(&docker_gelf(&long, 1), &mut compressed);
        assert!(
            compressed.len() > 1420,
            "padding compressed to {}",
            compressed.len()
        );
        assert_eq!(
            syslog(&line, Format::Docker, 42)
                .split_once(": ")
                .map(|(h, _)| h),
            Some("<30>Dec  1 18:30:00 mailcowdockerized-postfix-mailcow-1[4840]")
        );
        assert!(
            syslog(&line, Format::Logger, 42)
                .starts_with("<13>Dec  1 18:30:00 bench-host myapp[1042]: ")
        );
    }

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let sorted: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(0.501));
        assert_eq!(percentile(&sorted, 0.99), Some(0.990));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
