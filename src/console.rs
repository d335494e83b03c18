//! `--console`: every record as it is routed, one line each, on stdout —
//! the answer to "why is my line not in the UI?".
//!
//! ```text
//! 18:12:25 syslog_tcp mailcowdockerized-postfix-mailcow-1 postfix/smtpd[1234] info postfix → POSTFIX_MAILLOG +channel | connect from unknown[203.0.113.7]
//! 18:12:25 gelf_udp   mailcowdockerized-postfix-mailcow-1 CRON[12]            info system → dropped | (root) CMD (x)
//! ```
//!
//! Listeners format the line and hand it to one printer thread through a
//! bounded channel; when the terminal cannot keep up, lines are dropped
//! and counted (`cowlogd_console_dropped_total`), never the records.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use cowlogd_parsers::{Record, Severity};
use metrics::Counter;

/// Lines waiting for the printer.
const BACKLOG: usize = 10_000;

/// What happened to a record, for its console line.
pub enum Fate<'a> {
    /// Stored in a list (and maybe published).
    Stored {
        /// The list key.
        key: &'a [u8],
        /// Also published on the channel.
        published: bool,
    },
    /// Dropped by a `drop` route.
    Dropped,
    /// No route matched: not stored.
    Unrouted,
    /// Over its container's `limits.container_rate`: dropped before routing.
    RateLimited,
    /// A route would store it in `key`, but Redis is off.
    RedisOff {
        /// The list key it would go to.
        key: &'a [u8],
    },
}

/// The console: where listeners send their lines.
#[derive(Clone)]
pub struct Console {
    lines: SyncSender<String>,
    color: bool,
    dropped: Counter,
    zone: jiff::tz::TimeZone,
}

impl Console {
    /// Starts the printer thread. `color`: ANSI colours (a terminal, and
    /// `NO_COLOR` unset).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(color: bool) -> std::io::Result<Console> {
        let (lines, receiver) = sync_channel(BACKLOG);
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || print(&receiver))?;
        Ok(Console {
            lines,
            color,
            dropped: crate::metrics::CONSOLE_DROPPED.counter(),
            zone: jiff::tz::TimeZone::system(),
        })
    }

    /// Whether stdout should get colours: a terminal, and no `NO_COLOR`.
    pub fn wants_color() -> bool {
        use std::io::IsTerminal;
        std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    }

    /// Prints `record`'s line: received on `input`, matched `route`.
    pub fn show(&self, input: &str, record: &Record<'_>, route: Option<&str>, fate: &Fate<'_>) {
        let line = self.format(input, record, route, fate);
        if let Err(TrySendError::Full(_)) = self.lines.try_send(line) {
            self.dropped.increment(1);
        }
    }

    fn format(
        &self,
        input: &str,
        record: &Record<'_>,
        route: Option<&str>,
        fate: &Fate<'_>,
    ) -> String {
        let text = |bytes: Option<&[u8]>| {
            bytes.map_or_else(|| "-".into(), |b| String::from_utf8_lossy(b).into_owned())
        };
        let mut line = String::with_capacity(160 + record.message.len());
        let time = jiff::Timestamp::from_second(record.time.secs)
            .map(|t| {
                t.to_zoned_datetime(self.zone.clone())
                    .strftime("%H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|_| "--:--:--".into());
        let source = record.container.or(record.host);
        let mut program = text(record.program);
        if let Some(pid) = record.pid {
            let _ = write!(program, "[{}]", String::from_utf8_lossy(pid));
        }
        let severity = record.severity.keyword();
        let (paint_severity, reset) = self.paint(match record.severity {
            Severity::Emergency | Severity::Alert | Severity::Critical | Severity::Error => {
                "\x1b[31m"
            }
            Severity::Warning => "\x1b[33m",
            _ => "",
        });
        let _ = write!(
            line,
            "{time} {input:<10} {} {program} {paint_severity}{severity}{reset} {} → ",
            text(source),
            route.unwrap_or("-"),
        );
        let (paint, end) = self.paint(match fate {
            Fate::Stored { .. } | Fate::RedisOff { .. } => "\x1b[32m",
            Fate::Dropped | Fate::RateLimited => "\x1b[2m",
            Fate::Unrouted => "\x1b[35m",
        });
        match fate {
            Fate::Stored { key, published } => {
                let _ = write!(
                    line,
                    "{paint}{}{}{end}",
                    String::from_utf8_lossy(key),
                    if *published { " +channel" } else { "" }
                );
            }
            Fate::Dropped => {
                let _ = write!(line, "{paint}dropped{end}");
            }
            Fate::RateLimited => {
                let _ = write!(line, "{paint}dropped: over limits.container_rate{end}");
            }
            Fate::RedisOff { key } => {
                let _ = write!(
                    line,
                    "{paint}{} (redis off){end}",
                    String::from_utf8_lossy(key)
                );
            }
            Fate::Unrouted => {
                let _ = write!(line, "{paint}no route: not stored{end}");
            }
        }
        line.push_str(" | ");
        // One line per record: control bytes would break the layout.
        for c in String::from_utf8_lossy(record.message).chars() {
            line.push(if c.is_control() { ' ' } else { c });
        }
        line.push('\n');
        line
    }
}

impl Console {
    /// `code` and the reset after it, when colouring (and `code` is set).
    fn paint(&self, code: &'static str) -> (&'static str, &'static str) {
        if self.color && !code.is_empty() {
            (code, "\x1b[0m")
        } else {
            ("", "")
        }
    }
}

fn print(lines: &Receiver<String>) {
    let stdout = std::io::stdout();
    while let Ok(first) = lines.recv() {
        let mut out = stdout.lock();
        let _ = out.write_all(first.as_bytes());
        while let Ok(more) = lines.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cowlogd_parsers::Timestamp;
    use cowlogd_parsers::normalize::normalize_syslog;
    use cowlogd_parsers::syslog::{TimeContext, parse_syslog};

    fn console(color: bool) -> Console {
        let (lines, _receiver) = sync_channel(1);
        Console {
            lines,
            color,
            dropped: Counter::noop(),
            zone: jiff::tz::TimeZone::UTC,
        }
    }

    #[test]
    fn lines_are_coloured_on_a_terminal_and_plain_otherwise() {
        let ctx = TimeContext::utc(Timestamp::new(1_795_999_799, 0));
        let syslog = parse_syslog(b"<11>Nov 24 13:19:08 vm app[7]: it broke\x07 badly", &ctx);
        let record = normalize_syslog(&syslog, &ctx, Timestamp::new(1_795_999_799, 0));
        let plain = console(false).format("syslog_udp", &record, None, &Fate::Unrouted);
        assert_eq!(
            plain,
            "13:19:08 syslog_udp vm app[7] err - → no route: not stored | it broke  badly\n"
        );
        let coloured = console(true).format("syslog_udp", &record, None, &Fate::Unrouted);
        assert!(coloured.contains("\x1b[31merr\x1b[0m"), "{coloured:?}");
        assert!(coloured.contains("\x1b[35mno route: not stored\x1b[0m"));
    }
}
