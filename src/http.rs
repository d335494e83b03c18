//! cowlogd's HTTP endpoint: `GET /metrics` (Prometheus text), `/health`
//! (the process answers), `/ready` (Redis takes writes) and `/f2b` (ban
//! insight: rules, options, top offenders, as JSON).
//!
//! Bounded like an input: `metrics.allow`, a small connection pool of its
//! own (the longest idle makes room), and a short header timeout, so
//! half-sent requests cannot use up the process's file descriptors.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::f2b::F2b;
use crate::inputs::Allowlist;
use crate::inputs::slots::ConnectionSlots;
use crate::sinks::redis::RedisHealth;

/// How long a scraper may take to send its request headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Who may connect, and how many at once.
pub struct Admission {
    /// Who may scrape.
    pub allow: Allowlist,
    /// Connections at once.
    pub max_connections: usize,
}

/// Asks `/health` of a cowlogd listening on `addr` (an unspecified address
/// means this host); `Err` says why it is not healthy.
///
/// # Errors
/// When nothing answers within `timeout` or the answer is not 200.
pub fn check_health(addr: SocketAddr, timeout: std::time::Duration) -> Result<(), String> {
    let (status, body) = get(addr, "/health", timeout)?;
    if status == 200 {
        Ok(())
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
    health: Arc<RedisHealth>,
    admission: Admission,
    f2b: Option<Arc<F2b>>,
    shutdown: CancellationToken,
) {
    let slots = ConnectionSlots::new(
        admission.max_connections,
        admission.max_connections,
        "metrics",
    );
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    crate::warn_limited!(%error, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Some(slot) = slots.admit(&admission.allow, peer, "metrics") else {
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        let f2b = f2b.clone();
        tokio::spawn(async move {
            let activity = slot.activity();
            let service = service_fn(move |request: Request<Incoming>| {
                activity.touch();
                let response = respond(&request, &metrics, &health, f2b.as_deref());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = slot.evicted() => {}
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    metrics: &PrometheusHandle,
    health: &RedisHealth,
    f2b: Option<&F2b>,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        (&Method::GET, "/health") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&Method::GET, "/ready") => {
            let status = if health.is_up() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "text/plain", health.report())
        }
        (&Method::GET, "/f2b") => match f2b {
            Some(f2b) => (
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
