//! cowlogd's HTTP endpoint: `GET /metrics` (Prometheus text), `/health`
//! (the process answers), `/ready` (Redis takes writes) and `/f2b` (ban
//! insight: rules, options, top offenders, as JSON; only for
//! `metrics.f2b_allow`, loopback by default: it says who is attacking and
//! how close each address is to a ban).
//!
//! Bounded like an input: `metrics.allow`, a small connection pool of its
//! own with [`METRICS_PER_SOURCE`] connections per source, and a short
//! header timeout, so half-sent requests cannot use up the process's file
//! descriptors. A source at its share replaces its own longest-idle
//! connection (the metrics pool's policy): `cowlogd
//! health` from inside the container is answered even when something else
//! there holds idle connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Allowlist, Gate, Peer, Pool, Slot, Slots, accept};
use crate::f2b::F2b;
use crate::inputs::docker::DockerHealth;
use crate::sinks::redis::RedisHealth;

/// What `/ready` asks: Redis takes writes and, with `[docker]` on, the
/// Docker Engine API answers.
#[derive(Clone)]
pub struct Readiness {
    /// The Redis writer's.
    pub redis: Arc<RedisHealth>,
    /// The Docker source's, when it is on.
    pub docker: Option<Arc<DockerHealth>>,
}

impl Readiness {
    fn is_ready(&self) -> bool {
        self.redis.is_up() && self.docker.as_ref().is_none_or(|d| d.is_up())
    }

    fn report(&self) -> String {
        let mut report = self.redis.report();
        if let Some(docker) = &self.docker {
            report.push_str(&docker.report());
        }
        report
    }
}

/// How long a scraper may take to send its request headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections one source may hold on the endpoint (a Prometheus, a
/// health check and a `cowlogd bans` at once fit).
pub const METRICS_PER_SOURCE: usize = 4;

/// Who may connect, and how many at once.
pub struct Admission {
    /// Who may scrape.
    pub allow: Allowlist,
    /// Who may read `/f2b`.
    pub f2b_allow: Allowlist,
    /// Connections at once.
    pub max_connections: usize,
}

/// Asks `/health` (the process answers) or, with `ready`, `/ready` (Redis
/// takes writes) of a cowlogd listening on `addr` (an unspecified address
/// means this host); `Ok` holds the answer, `Err` says why it is not
/// healthy or ready.
///
/// # Errors
/// When nothing answers within `timeout` or the answer is not 200.
pub fn check_health(
    addr: SocketAddr,
    ready: bool,
    timeout: std::time::Duration,
) -> Result<String, String> {
    let path = if ready { "/ready" } else { "/health" };
    let (status, body) = get(addr, path, timeout)?;
    if status == 200 {
        Ok(String::from_utf8_lossy(&body).trim_end().to_owned())
    } else {
        Err(format!(
            "{addr}: answered {status}: {}",
            String::from_utf8_lossy(&body).trim_end()
        ))
    }
}

/// Largest answer [`get`] reads (a `/metrics` page with every series is
/// far smaller).
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// `GET path` of a cowlogd listening on `addr` (an unspecified address
/// means this host): its status and body. For the CLI's `health` and
/// `bans`; the endpoint answers with a length and closes the connection.
///
/// # Errors
/// When nothing answers within `timeout` or the answer is not HTTP.
pub fn get(
    addr: SocketAddr,
    path: &str,
    timeout: std::time::Duration,
) -> Result<(u16, Vec<u8>), String> {
    use std::io::{Read, Write};
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let failed = |e: std::io::Error| format!("{target}: {e}");
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout).map_err(failed)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(failed)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: cowlogd\r\nConnection: close\r\n\r\n"
    )
    .map_err(failed)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .map_err(|e| format!("{target}: no answer: {e}"))?;
    let not_http = || format!("{target}: not an HTTP answer");
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(not_http)?;
    let status = answer
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| std::str::from_utf8(code).ok()?.parse().ok())
        .ok_or_else(not_http)?;
    Ok((status, answer.split_off(head_end + 4)))
}

/// Binds the endpoint.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics.listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /health, /ready");
    Ok(listener)
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Readiness,
    admission: Admission,
    f2b: Option<Arc<F2b>>,
    shutdown: CancellationToken,
) {
    let gate = Gate {
        slots: Slots::new(
            Pool::Metrics,
            admission.max_connections,
            METRICS_PER_SOURCE,
            shutdown,
        ),
        allow: Arc::new(admission.allow),
        input: None,
    };
    let endpoint = Endpoint {
        metrics,
        health,
        f2b,
        f2b_allow: Arc::new(admission.f2b_allow),
    };
    accept::serve(listener, gate, TaskTracker::new(), endpoint, connection).await;
}

/// What every connection to the endpoint answers from.
#[derive(Clone)]
struct Endpoint {
    metrics: PrometheusHandle,
    health: Readiness,
    f2b: Option<Arc<F2b>>,
    f2b_allow: Arc<Allowlist>,
}

async fn connection(stream: TcpStream, peer: Peer, slot: Slot, endpoint: Endpoint) {
    let activity = slot.activity();
    let may_read_f2b = peer.ip().is_some_and(|ip| endpoint.f2b_allow.allows(ip));
    let service = service_fn(move |request: Request<Incoming>| {
        activity.touch();
        let f2b = endpoint.f2b.as_deref().map(|f2b| (f2b, may_read_f2b));
        let response = respond(&request, &endpoint.metrics, &endpoint.health, f2b);
        async move { Ok::<_, Infallible>(response) }
    });
    crate::http1::serve(stream, service, HEADER_TIMEOUT, &slot).await;
}

/// The answer to `request`; `f2b` is the ban engine, when on, and whether
/// this peer may read it.
fn respond(
    request: &Request<Incoming>,
    metrics: &PrometheusHandle,
    health: &Readiness,
    f2b: Option<(&F2b, bool)>,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        (&Method::GET, "/health") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&Method::GET, "/ready") => {
            let status = if health.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "text/plain", health.report())
        }
        (&Method::GET, "/f2b") => match f2b {
            Some((_, false)) => (
                StatusCode::FORBIDDEN,
                "text/plain",
                "/f2b is only for metrics.f2b_allow\n".to_owned(),
            ),
            Some((f2b, true)) => (
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&f2b.snapshot()).unwrap_or_default(),
            ),
            None => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "[f2b] is not enabled\n".to_owned(),
            ),
        },
        (_, "/metrics" | "/health" | "/ready" | "/f2b") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
