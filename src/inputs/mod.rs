//! Listeners: sockets in, frames to the [`crate::pipeline::Processor`].
//!
//! The sender allowlist is checked before a byte is parsed.

pub mod fluent;
pub mod http;
pub mod slots;
pub mod tcp;
pub mod udp;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::metrics::Input;
use crate::pipeline::Shared;
use slots::ConnectionSlots;
use tcp::{BufferBudget, TcpContext, TcpLimits};

/// Networks allowed to send.
#[derive(Debug, Clone)]
pub struct Allowlist(Vec<IpNet>);

impl Allowlist {
    /// An allowlist of `networks`.
    pub fn new(networks: Vec<IpNet>) -> Allowlist {
        Allowlist(networks)
    }

    /// Whether `ip` may send (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Binds every configured listener and starts its tasks on `tasks`; they
/// stop reading when `stop` fires. Returns the UDP sockets' inode numbers
/// (for their kernel drop counters).
///
/// # Errors
/// When an address cannot be bound.
pub async fn start(
    settings: &Settings,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Vec<u64>> {
    let allow = Arc::new(Allowlist::new(settings.allow.clone()));

    let mut udp_inodes = Vec::new();
    for (addr, input) in [
        (settings.gelf_udp, Input::GelfUdp),
        (settings.syslog_udp, Input::SyslogUdp),
    ] {
        let Some(addr) = addr else { continue };
        for (socket, inode) in udp::bind(
            addr,
            settings.udp_sockets,
            settings.udp_receive_buffer,
            input,
        )? {
            udp_inodes.push(inode);
            tasks.spawn(udp::serve(
                socket,
                input,
                shared.clone(),
                allow.clone(),
                stop.clone(),
            ));
        }
    }
    let slots = ConnectionSlots::new(
        settings.tcp_max_connections,
        settings.tcp_max_connections_per_source,
        "tcp",
    );
    let buffers = BufferBudget::new(settings.tcp_buffers_total);
    let limits = TcpLimits {
        max_frame: settings.max_frame,
        idle_timeout: settings.tcp_idle_timeout,
        first_byte_timeout: settings.tcp_first_byte_timeout,
        queue_wait: settings.tcp_queue_wait,
        frame_timeout: settings.tcp_frame_timeout,
    };
    for (addr, input) in [
        (settings.gelf_tcp, Input::GelfTcp),
        (settings.syslog_tcp, Input::SyslogTcp),
    ] {
        let Some(addr) = addr else { continue };
        let listener = tcp::bind(addr, input).await?;
        let context = TcpContext {
            input,
            shared: shared.clone(),
            allow: allow.clone(),
            slots: slots.clone(),
            buffers: buffers.clone(),
            limits,
            shutdown: stop.clone(),
        };
        tasks.spawn(tcp::serve(listener, context, tasks.clone()));
    }
    let fluent = |input: Input, slots: Arc<ConnectionSlots>| TcpContext {
        input,
        shared: shared.clone(),
        allow: allow.clone(),
        slots,
        buffers: buffers.clone(),
        limits,
        shutdown: stop.clone(),
    };
    if let Some(addr) = settings.fluent_tcp {
        let listener = tcp::bind(addr, Input::FluentTcp).await?;
        let context = fluent(Input::FluentTcp, slots.clone());
        tasks.spawn(fluent::serve_tcp(listener, context, tasks.clone()));
    }
    if let Some(path) = &settings.fluent_unix {
        let listener = fluent::bind_unix(path, settings.fluent_unix_mode)?;
        // A pool of its own: every unix peer counts as one source.
        let slots = ConnectionSlots::new(
            settings.tcp_max_connections,
            settings.tcp_max_connections,
            "fluent_unix",
        );
        let context = fluent(Input::FluentUnix, slots);
        tasks.spawn(fluent::serve_unix(
            listener,
            path.clone(),
            context,
            tasks.clone(),
        ));
    }
    if let Some(addr) = settings.gelf_http {
        let listener = tcp::bind(addr, Input::GelfHttp).await?;
        let context = http::HttpContext {
            shared: shared.clone(),
            allow: allow.clone(),
            slots: ConnectionSlots::new(
                settings.http_max_connections,
                settings.tcp_max_connections_per_source,
                "http",
            ),
            max_body: settings.http_max_body,
            bulk: settings.gelf_http_bulk,
            queue_wait: settings.tcp_queue_wait,
            header_timeout: settings.tcp_first_byte_timeout,
            body_timeout: settings.tcp_frame_timeout,
            shutdown: stop.clone(),
        };
        tasks.spawn(http::serve(listener, context, tasks.clone()));
    }
    Ok(udp_inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_is_checked_as_ipv4() {
        let allow = Allowlist::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(allow.allows("10.1.2.3".parse().unwrap()));
        assert!(allow.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(allow.allows("::1".parse().unwrap()));
        assert!(!allow.allows("11.0.0.1".parse().unwrap()));
        assert!(!Allowlist::new(vec![]).allows("127.0.0.1".parse().unwrap()));
    }
}
