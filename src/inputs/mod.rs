//! Listeners: sockets in, records out to the [`crate::pipeline`].
//!
//! Transports ([`udp`], [`tcp`], [`http`], [`fluent`]) own their sockets
//! and buffers; [`crate::admission`] decides who may connect. Protocols
//! ([`gelf`], [`syslog`], [`fluent`]'s events) own their parsing state and
//! hand whole records to a read cycle. The sender allowlist is checked
//! before a byte is parsed.

pub mod docker;
pub mod fluent;
pub mod gelf;
pub mod http;
pub mod syslog;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Gate, Pool, Slots};
use crate::config::Settings;
use crate::metrics::Input;
use crate::pipeline::Pipeline;
use tcp::{BufferBudget, TcpContext};

pub use crate::admission::Allowlist;

/// The addresses the listeners got (a configured port 0 becomes a real
/// one): what an in-process caller sends to.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// GELF over UDP.
    pub gelf_udp: Option<SocketAddr>,
    /// GELF over TCP.
    pub gelf_tcp: Option<SocketAddr>,
    /// Syslog over UDP.
    pub syslog_udp: Option<SocketAddr>,
    /// Syslog over TCP.
    pub syslog_tcp: Option<SocketAddr>,
    /// GELF over HTTP.
    pub gelf_http: Option<SocketAddr>,
    /// Fluent Forward over TCP.
    pub fluent_tcp: Option<SocketAddr>,
}

impl Bound {
    /// Each network input with its address, when it is on.
    pub(crate) fn listening(&self) -> [(Input, Option<SocketAddr>); 6] {
        [
            (Input::GelfUdp, self.gelf_udp),
            (Input::GelfTcp, self.gelf_tcp),
            (Input::SyslogUdp, self.syslog_udp),
            (Input::SyslogTcp, self.syslog_tcp),
            (Input::GelfHttp, self.gelf_http),
            (Input::FluentTcp, self.fluent_tcp),
        ]
    }

    /// `gelf_udp=0.0.0.0:12201 syslog_tcp=…`: the inputs that are on.
    pub fn summary(&self, fluent_unix: Option<&std::path::Path>) -> String {
        let mut on: Vec<String> = self
            .listening()
            .iter()
            .filter_map(|(input, addr)| addr.map(|a| format!("{}={a}", input.label())))
            .collect();
        if let Some(path) = fluent_unix {
            on.push(format!("fluent_unix={}", path.display()));
        }
        on.join(" ")
    }
}

/// Binds every configured listener and starts its tasks on `tasks`; they
/// stop reading when `stop` fires.
///
/// # Errors
/// When an address cannot be bound.
pub async fn start(
    settings: &Settings,
    pipeline: &Arc<Pipeline>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Bound> {
    let inputs = &settings.inputs;
    let allow = Arc::new(Allowlist::new(inputs.allow.clone()));
    let mut bound = Bound::default();

    let chunks = gelf::ChunkedGelf::new(settings.limits.reassembly);
    let mut udp_inodes = Vec::new();
    for (addr, input) in [
        (inputs.gelf_udp, Input::GelfUdp),
        (inputs.syslog_udp, Input::SyslogUdp),
    ] {
        let Some(addr) = addr else { continue };
        let (local, sockets) = udp::bind(addr, inputs.udp, input)?;
        match input {
            Input::GelfUdp => bound.gelf_udp = Some(local),
            _ => bound.syslog_udp = Some(local),
        }
        for (socket, inode) in sockets {
            udp_inodes.push(inode);
            let reader = udp::Reader {
                input,
                pipeline: pipeline.clone(),
                allow: allow.clone(),
                chunks: chunks.clone(),
                max_decompressed: settings.limits.max_decompressed,
            };
            tasks.spawn(reader.serve(socket, stop.clone()));
        }
    }
    if inputs.gelf_udp.is_some() {
        tasks.spawn(chunks.expire_until(stop.clone()));
    }
    if !udp_inodes.is_empty() {
        tasks.spawn(udp::count_kernel_drops(udp_inodes, stop.clone()));
    }

    let tcp = inputs.tcp;
    let tcp_slots = Slots::new(
        Pool::Tcp,
        tcp.max_connections,
        tcp.max_per_source,
        stop.clone(),
    );
    let gate = |input: Input, slots: &Arc<Slots>| Gate {
        slots: slots.clone(),
        allow: allow.clone(),
        input: Some(input),
    };
    let buffers = BufferBudget::new(tcp.buffers_total);
    let context = |input: Input, slots: &Arc<Slots>| TcpContext {
        input,
        pipeline: pipeline.clone(),
        gate: gate(input, slots),
        buffers: buffers.clone(),
        limits: tcp.limits,
        max_decompressed: settings.limits.max_decompressed,
    };
    for (addr, input) in [
        (inputs.gelf_tcp, Input::GelfTcp),
        (inputs.syslog_tcp, Input::SyslogTcp),
    ] {
        let Some(addr) = addr else { continue };
        let listener = tcp::bind(addr, input).await?;
        let local = listener.local_addr()?;
        match input {
            Input::GelfTcp => bound.gelf_tcp = Some(local),
            _ => bound.syslog_tcp = Some(local),
        }
        tasks.spawn(tcp::serve(
            listener,
            context(input, &tcp_slots),
            tasks.clone(),
        ));
    }
    let acked = Arc::new(fluent::AckedChunks::default());
    // Events on disk from before a restart: a resend of one (its ack was
    // lost with the crash) is acked, not stored twice.
    acked.settle(pipeline.chunks_on_disk(), true);
    if let Some(addr) = inputs.fluent_tcp {
        let listener = tcp::bind(addr, Input::FluentTcp).await?;
        bound.fluent_tcp = Some(listener.local_addr()?);
        let fluent = fluent::FluentContext {
            stream: context(Input::FluentTcp, &tcp_slots),
            partial: inputs.fluent.partial,
            acked: acked.clone(),
        };
        tasks.spawn(fluent::serve(listener, fluent, tasks.clone()));
    }
    if let Some(path) = &inputs.fluent.unix {
        let listener = fluent::bind_unix(path, inputs.fluent.unix_mode)?;
        // A pool of its own: every unix peer counts as one source.
        let slots = Slots::new(
            Pool::FluentUnix,
            tcp.max_connections,
            tcp.max_connections,
            stop.clone(),
        );
        let fluent = fluent::FluentContext {
            stream: context(Input::FluentUnix, &slots),
            partial: inputs.fluent.partial,
            acked: acked.clone(),
        };
        tasks.spawn(fluent::serve_unix(
            listener,
            path.clone(),
            fluent,
            tasks.clone(),
        ));
    }
    if let Some(addr) = inputs.gelf_http {
        let listener = tcp::bind(addr, Input::GelfHttp).await?;
        bound.gelf_http = Some(listener.local_addr()?);
        let slots = Slots::new(
            Pool::GelfHttp,
            inputs.http.max_connections,
            tcp.max_per_source,
            stop.clone(),
        );
        let context = http::HttpContext {
            pipeline: pipeline.clone(),
            gate: gate(Input::GelfHttp, &slots),
            settings: inputs.http,
            limits: tcp.limits,
            max_decompressed: settings.limits.max_decompressed,
        };
        tasks.spawn(http::serve(listener, context, tasks.clone()));
    }
    Ok(bound)
}
