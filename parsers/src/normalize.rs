//! Parsed message → [`Record`]: Docker's fields, the syslog line nested in a
//! container's output, and the severity the daemons marked in their text.
//!
//! mailcow's daemons log through syslog-ng, which prints
//! `Aug  5 12:34:56 host postfix/smtpd[123]: msg` on the container's stdout;
//! Docker then sends that line with its own level (6 stdout, 3 stderr). So
//! program, pid and message come from the nested line, and the severity from
//! the marker the daemon wrote (`warning: ...`, `auth: Error: ...`), else
//! from the stream.

use crate::gelf::GelfMessage;
use crate::record::{Origin, Record, Severity, Stream, Timestamp};
use crate::syslog::{
    SyslogFormat, SyslogMessage, TimeContext, parse_embedded_line, parse_headerless_line,
};

/// A GELF message as a record. Docker's `_container_name` names the
/// container; `level` 3 means stderr, anything else stdout.
///
/// Time: the GELF `timestamp` (Docker's, exact to the millisecond), else the
/// nested line's header, else `received`.
///
/// ```
/// use cowlogd_parsers::{Timestamp, Severity, gelf::parse_gelf, normalize::normalize_gelf, syslog::TimeContext};
/// let json = br#"{"short_message":"Aug  5 12:34:56 mx postfix/smtpd[123]: warning: hostname x does not resolve","timestamp":1714557600,"level":6,"_container_name":"mailcowdockerized-postfix-mailcow-1"}"#;
/// let gelf = parse_gelf(json).unwrap();
/// let ctx = TimeContext::utc(Timestamp::new(1714557600, 0));
/// let record = normalize_gelf(&gelf, &ctx, Timestamp::new(1714557601, 0));
/// assert_eq!(record.program, Some(&b"postfix/smtpd"[..]));
/// assert_eq!(record.pid, Some(&b"123"[..]));
/// assert_eq!(record.severity, Severity::Warning);
/// assert_eq!(record.message, b"warning: hostname x does not resolve");
/// ```
pub fn normalize_gelf<'a>(
    gelf: &'a GelfMessage<'a>,
    ctx: &TimeContext,
    received: Timestamp,
) -> Record<'a> {
    let container = gelf.str_field("container_name").map(str::as_bytes);
    let stream = container.map(|_| match gelf.level {
        Some(3) => Stream::Stderr,
        _ => Stream::Stdout,
    });
    let line = gelf.short_message.as_bytes();
    let (inner, headerless) = nested_line(line, ctx);
    let message = inner.as_ref().map_or(line, |m| m.msg);
    let severity = inner
        .and_then(|m| m.pri)
        .map(|p| p.severity)
        .or_else(|| match stream {
            Some(stream) => Some(severity_marker(message).unwrap_or(stream_severity(stream))),
            None => gelf.level.and_then(|l| Severity::from_code(l.into())),
        })
        .or_else(|| severity_marker(message))
        .unwrap_or(Severity::Info);
    Record {
        time: gelf
            .timestamp
            .or_else(|| inner.and_then(|m| m.timestamp))
            .unwrap_or(received),
        host: gelf.host.as_deref().map(str::as_bytes),
        container,
        program: inner.and_then(|m| m.app_name),
        pid: inner.and_then(|m| m.proc_id),
        severity,
        facility: inner.and_then(|m| m.pri).map(|p| p.facility),
        stream,
        message,
        inner_syslog: inner.is_some() && !headerless,
        headerless,
        origin: Origin::Gelf(gelf),
    }
}

/// Who sends on a syslog input, so that the tag is read for what it is.
///
/// ```
/// use cowlogd_parsers::{Timestamp, normalize::{SyslogSender, normalize_syslog_from}, syslog::{parse_syslog, TimeContext}};
/// let ctx = TimeContext::utc(Timestamp::new(1795999799, 0));
/// // Docker's syslog driver, default format (no hostname), tag {{.Name}}.
/// let line = parse_syslog(b"<30>Nov 24 13:49:59 shop-web-1[4840]: GET / 200", &ctx);
/// let record = normalize_syslog_from(&line, &ctx, Timestamp::default(), SyslogSender::Docker);
/// assert_eq!((record.container, record.program, record.pid), (Some(&b"shop-web-1"[..]), None, None));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogSender {
    /// Any syslog sender: the tag is the program, unless the line shows it
    /// came from Docker's driver (a syslog line nested in MSG, or an RFC
    /// 5424 APP-NAME equal to its MSGID).
    #[default]
    Any,
    /// Only Docker's syslog driver sends here: in each of its formats
    /// (default, `rfc3164`, `rfc5424`, `rfc5424micro`) the tag names the
    /// container, the PID is dockerd's, and MSG is the container's line.
    Docker,
}

/// A syslog message as a record, from any sender; see
/// [`normalize_syslog_from`].
///
/// ```
/// use cowlogd_parsers::{Timestamp, Severity, normalize::normalize_syslog, syslog::{parse_syslog, TimeContext}};
/// let ctx = TimeContext::utc(Timestamp::new(1795999799, 0));
/// let line = parse_syslog(b"<22>Nov 24 13:19:08 vm postfix/smtpd: udp rfc3164 msg", &ctx);
/// let record = normalize_syslog(&line, &ctx, Timestamp::new(1795999799, 0));
/// assert_eq!((record.program, record.container), (Some(&b"postfix/smtpd"[..]), None));
/// assert_eq!(record.severity, Severity::Info);
/// ```
pub fn normalize_syslog<'a>(
    syslog: &'a SyslogMessage<'a>,
    ctx: &TimeContext,
    received: Timestamp,
) -> Record<'a> {
    normalize_syslog_from(syslog, ctx, received, SyslogSender::Any)
}

/// A syslog message from `sender` as a record.
///
/// When MSG is itself a syslog line, the sender was Docker's syslog driver
/// relaying a container: the outer tag names the container and the inner
/// line gives program, pid and message. An RFC 5424 line whose APP-NAME
/// equals its MSGID is also Docker's (it writes the tag into both). With
/// [`SyslogSender::Docker`] every line is a container's: the tag names the
/// container, and a line that is not itself syslog has no program or pid
/// (as Docker's gelf driver gives it). Anything else is a plain syslog
/// sender: the tag is the program, the PRI the truth.
///
/// ```
/// use cowlogd_parsers::{Timestamp, normalize::{SyslogSender, normalize_syslog_from}, syslog::{parse_syslog, TimeContext}};
/// let ctx = TimeContext::utc(Timestamp::new(1795999799, 0));
/// let line = parse_syslog(b"<27>Nov 24 13:49:59 vm shop-web-1[4840]: oops on stderr", &ctx);
/// let any = normalize_syslog_from(&line, &ctx, Timestamp::default(), SyslogSender::Any);
/// assert_eq!((any.container, any.program), (None, Some(&b"shop-web-1"[..])));
/// let docker = normalize_syslog_from(&line, &ctx, Timestamp::default(), SyslogSender::Docker);
/// assert_eq!((docker.container, docker.program), (Some(&b"shop-web-1"[..]), None));
/// ```
pub fn normalize_syslog_from<'a>(
    syslog: &'a SyslogMessage<'a>,
    ctx: &TimeContext,
    received: Timestamp,
    sender: SyslogSender,
) -> Record<'a> {
    let outer = syslog.pri_or_default();
    let (inner, headerless) = nested_line(syslog.msg, ctx);
    let docker_5424 = syslog.format == SyslogFormat::Rfc5424
        && syslog.app_name.is_some()
        && syslog.app_name == syslog.msg_id;
    let docker = sender == SyslogSender::Docker;
    let from_container = inner.is_some() || docker_5424 || docker;
    let stream = from_container.then_some(match outer.severity {
        Severity::Error => Stream::Stderr,
        _ => Stream::Stdout,
    });
    let message = inner.as_ref().map_or(syslog.msg, |m| m.msg);
    let severity = match (inner.and_then(|m| m.pri), stream) {
        (Some(inner_pri), _) => inner_pri.severity,
        (None, Some(stream)) => severity_marker(message).unwrap_or(stream_severity(stream)),
        (None, None) => outer.severity,
    };
    // Docker's tag is the container and its PID dockerd's: neither is the
    // program of a line that names none.
    let (outer_program, outer_pid) = if docker {
        (None, None)
    } else {
        (syslog.app_name, syslog.proc_id)
    };
    Record {
        time: syslog
            .timestamp
            .or_else(|| inner.and_then(|m| m.timestamp))
            .unwrap_or(received),
        host: syslog.hostname,
        container: from_container.then_some(syslog.app_name).flatten(),
        program: inner.map_or(outer_program, |m| m.app_name),
        pid: inner.map_or(outer_pid, |m| m.proc_id),
        severity,
        facility: Some(inner.and_then(|m| m.pri).unwrap_or(outer).facility),
        stream,
        message,
        inner_syslog: inner.is_some() && !headerless,
        headerless,
        origin: Origin::Syslog(syslog),
    }
}

/// The syslog line nested in a container's output, else a header-less
/// line syslog-ng relayed (`true`), else nothing.
fn nested_line<'a>(line: &'a [u8], ctx: &TimeContext) -> (Option<SyslogMessage<'a>>, bool) {
    match parse_embedded_line(line, ctx) {
        Some(inner) => (Some(inner), false),
        None => {
            let headerless = parse_headerless_line(line, ctx);
            let found = headerless.is_some();
            (headerless, found)
        }
    }
}

fn stream_severity(stream: Stream) -> Severity {
    match stream {
        Stream::Stdout => Severity::Info,
        Stream::Stderr => Severity::Error,
    }
}

const POSTFIX_MARKERS: [(&[u8], Severity); 4] = [
    (b"warning:", Severity::Warning),
    (b"error:", Severity::Error),
    (b"fatal:", Severity::Critical),
    (b"panic:", Severity::Alert),
];

const DOVECOT_MARKERS: [(&[u8], Severity); 4] = [
    (b"Warning:", Severity::Warning),
    (b"Error:", Severity::Error),
    (b"Fatal:", Severity::Critical),
    (b"Panic:", Severity::Alert),
];

/// The severity a daemon wrote into its message: postfix's `warning:`,
/// `error:`, `fatal:`, `panic:` at the start; dovecot's `Warning:`,
/// `Error:`, `Fatal:`, `Panic:` at the start or as the word after its log
/// prefix (the first `: `). Markers must be followed by a space or the end.
///
/// ```
/// use cowlogd_parsers::{Severity, normalize::severity_marker};
/// assert_eq!(severity_marker(b"fatal: no SASL"), Some(Severity::Critical));
/// assert_eq!(severity_marker(b"imap(u@x.org)<1><Ab>: Error: quota"), Some(Severity::Error));
/// assert_eq!(severity_marker(b"connect from x"), None);
/// ```
pub fn severity_marker(message: &[u8]) -> Option<Severity> {
    let at_start = |text: &[u8], markers: &[(&[u8], Severity)]| {
        markers.iter().find_map(|(marker, severity)| {
            let rest = text.strip_prefix(*marker)?;
            (rest.is_empty() || rest[0] == b' ').then_some(*severity)
        })
    };
    if let Some(severity) =
        at_start(message, &POSTFIX_MARKERS).or_else(|| at_start(message, &DOVECOT_MARKERS))
    {
        return Some(severity);
    }
    let prefix_end = memchr::memmem::find(message, b": ")?;
    at_start(&message[prefix_end + 2..], &DOVECOT_MARKERS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syslog::parse_syslog;

    #[test]
    fn docker_syslog_driver_names_the_container_in_every_format() {
        let ctx = TimeContext::utc(Timestamp::new(1_795_999_799, 0));
        // Docker's bytes for each syslog-format, tag {{.ID}}.
        for (frame, message, stream) in [
            (&b"<30>Nov 24 13:49:59 3b2f6e0c9a1d[4840]: hello world"[..], &b"hello world"[..], Stream::Stdout),
            (b"<27>Nov 24 13:49:59 vm 3b2f6e0c9a1d[4840]: oops on stderr", b"oops on stderr", Stream::Stderr),
            (b"<30>1 2026-11-24T13:49:59+01:00 vm 3b2f6e0c9a1d 4840 3b2f6e0c9a1d - hello world", b"hello world", Stream::Stdout),
            (b"<30>1 2026-11-24T13:49:59.279353+01:00 vm 3b2f6e0c9a1d 4840 3b2f6e0c9a1d - hello world", b"hello world", Stream::Stdout),
        ] {
            let line = parse_syslog(frame, &ctx);
            let record = normalize_syslog_from(&line, &ctx, Timestamp::default(), SyslogSender::Docker);
            let shown = String::from_utf8_lossy(frame);
            assert_eq!(record.container, Some(&b"3b2f6e0c9a1d"[..]), "{shown}");
            assert_eq!((record.program, record.pid), (None, None), "{shown}");
            assert_eq!(record.message, message, "{shown}");
            assert_eq!(record.stream, Some(stream), "{shown}");
        }
    }

    #[test]
    fn docker_syslog_driver_relaying_a_syslog_line_keeps_its_program() {
        let ctx = TimeContext::utc(Timestamp::new(1_795_999_799, 0));
        let frame = b"<30>Nov 24 13:49:59 mailcowdockerized-postfix-mailcow-1[4840]: Nov 24 13:49:59 mail postfix/smtpd[7]: connect";
        let line = parse_syslog(frame, &ctx);
        for sender in [SyslogSender::Any, SyslogSender::Docker] {
            let record = normalize_syslog_from(&line, &ctx, Timestamp::default(), sender);
            assert_eq!(
                record.container,
                Some(&b"mailcowdockerized-postfix-mailcow-1"[..])
            );
            assert_eq!(
                (record.program, record.pid),
                (Some(&b"postfix/smtpd"[..]), Some(&b"7"[..]))
            );
        }
    }

    #[test]
    fn markers_need_a_space_or_end_after_them() {
        assert_eq!(severity_marker(b"warning:"), Some(Severity::Warning));
        assert_eq!(severity_marker(b"warning:x"), None);
        assert_eq!(severity_marker(b"panic: it"), Some(Severity::Alert));
        assert_eq!(severity_marker(b"Panic: it"), Some(Severity::Alert));
        assert_eq!(
            severity_marker(b"auth-worker(4521): Warning: x"),
            Some(Severity::Warning)
        );
        assert_eq!(severity_marker(b"auth: Fatal: x"), Some(Severity::Critical));
        // Postfix markers only count at the start.
        assert_eq!(severity_marker(b"NOQUEUE: reject: warning: x"), None);
    }
}
