//! The one HTTP/1 connection setup (hyper) both HTTP listeners use, the
//! GELF HTTP input and the metrics endpoint: a header timeout (a request's
//! headers, from the connection's first byte or the end of the previous
//! request, so an idle keep-alive connection is closed after it too), the
//! connection dropped when its slot is evicted, and a short graceful
//! shutdown when the daemon stops.

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::admission::Slot;

/// How long a stopping daemon lets a request in progress finish.
const GRACE_AT_STOP: Duration = Duration::from_secs(2);

/// Serves HTTP/1 requests on `stream` with `service` until the peer
/// closes, the header timeout passes, the slot is evicted or the daemon
/// stops.
pub async fn serve<S>(stream: TcpStream, service: S, header_timeout: Duration, slot: &Slot)
where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        // Shutdown first: it fires a slot's `ending` as well.
        biased;
        () = slot.stopping().cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE_AT_STOP, connection).await;
        }
        () = slot.evicted() => {}
        _ = connection.as_mut() => {}
    }
}
