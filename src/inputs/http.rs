//! GELF over HTTP: `POST /gelf` with a JSON body, optionally
//! `Content-Encoding: gzip` or `deflate`; the body's magic bytes are
//! sniffed too, as Graylog does (graypy sends a zlib body under
//! `Content-Encoding: gzip,deflate`). 202 Accepted; 400 for a body that is
//! not GELF; 404 for other paths; 405 for other methods; 413 over
//! `limits.http_max_body_bytes`. Connections are kept alive. With
//! `inputs.gelf_http_bulk`, a body holds one message per line.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use cowlogd_parsers::decompress::Compression;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::gelf::GelfDecoder;
use super::tcp::TcpLimits;
use crate::admission::{Gate, Peer, Slot, accept};
use crate::config::HttpSettings;
use crate::metrics::{DropReason, dropped};
use crate::pipeline::{Flush, Pipeline, Processor};

/// What the HTTP input needs.
#[derive(Clone)]
pub struct HttpContext {
    /// Where records go.
    pub pipeline: Arc<Pipeline>,
    /// Who may connect, and this input's own slots.
    pub gate: Gate,
    /// Body size and bulk mode.
    pub settings: HttpSettings,
    /// The stream inputs' timeouts: the first-byte timeout bounds a
    /// request's headers (from the connection's first byte or the end of
    /// the previous request, so an idle keep-alive connection is closed
    /// after it too), the frame timeout one body, the queue wait a full
    /// Redis queue.
    pub limits: TcpLimits,
    /// `limits.max_decompressed_bytes`.
    pub max_decompressed: usize,
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, context: HttpContext, tasks: TaskTracker) {
    accept::serve(listener, context.gate.clone(), tasks, context, connection).await;
}

async fn connection(stream: TcpStream, peer: Peer, slot: Slot, context: HttpContext) {
    let mut processor = Processor::new(crate::metrics::Input::GelfHttp, context.pipeline.clone());
    if let Some(ip) = peer.ip() {
        processor.set_peer(ip);
    }
    processor.set_activity(slot.activity());
    let gelf = GelfDecoder::new(context.max_decompressed);
    // One request at a time per HTTP/1 connection: the lock is never contended.
    let processor = Arc::new(Mutex::new((processor, gelf)));
    let header_timeout = context.limits.first_byte_timeout;
    let service = service_fn(move |request: Request<Incoming>| {
        let processor = processor.clone();
        let context = context.clone();
        async move { Ok::<_, Infallible>(handle(request, &processor, &context).await) }
    });
    crate::http1::serve(stream, service, header_timeout, &slot).await;
}

async fn handle(
    request: Request<Incoming>,
    processor: &Mutex<(Processor, GelfDecoder)>,
    context: &HttpContext,
) -> Response<Full<Bytes>> {
    if request.uri().path() != "/gelf" {
        return reply(StatusCode::NOT_FOUND);
    }
    if request.method() != Method::POST {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    let declared = declared_compression(request.headers().get(header::CONTENT_ENCODING));
    let collect = Limited::new(request.into_body(), context.settings.max_body).collect();
    let Ok(collected) = tokio::time::timeout(context.limits.frame_timeout, collect).await else {
        dropped(DropReason::SlowSender, 1);
        crate::warn_limited!("GELF HTTP body not received within inputs.tcp_frame_timeout_s; 408");
        return reply(StatusCode::REQUEST_TIMEOUT);
    };
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                dropped(DropReason::HttpBodyTooLarge, 1);
                crate::warn_limited!(
                    max = context.settings.max_body,
                    "GELF HTTP body too large; 413"
                );
                return reply(StatusCode::PAYLOAD_TOO_LARGE);
            }
            return reply(StatusCode::BAD_REQUEST);
        }
    };
    let (outcome, batches) = {
        let mut guard = processor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (processor, gelf) = &mut *guard;
        let mut cycle = processor.begin();
        cycle.count_bytes(body.len());
        let outcome = gelf.body(&mut cycle, &body, declared, context.settings.bulk);
        (outcome, cycle.seal())
    };
    batches
        .flush(Flush::WaitUpTo(context.limits.queue_wait))
        .await;
    // A bulk body with some bad lines is taken (202, the bad lines counted):
    // a 400 would make the shipper resend, duplicating the good lines. 400
    // means nothing of the body was stored.
    reply(if outcome.accepted > 0 || outcome.rejected == 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::BAD_REQUEST
    })
}

/// `deflate` alone may mean raw deflate; everything else is sniffed.
fn declared_compression(value: Option<&header::HeaderValue>) -> Compression {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return Compression::None;
    };
    let codings: Vec<String> = value
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    if codings.iter().any(|c| c == "deflate") && !codings.iter().any(|c| c == "gzip") {
        Compression::Deflate
    } else {
        Compression::None
    }
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
