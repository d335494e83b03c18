//! RFC 3164 "BSD" lines and what senders really put in them (§4.1, plus the
//! field variants in `wire-formats.md`): optional PRI, BSD or RFC 3339
//! timestamp, optional HOSTNAME, `TAG[PID]:`, `TAG:`, or SOGo's
//! `sogod [PID]:`.

use super::timestamp::{bsd_timestamp, rfc3339};
use super::{Pri, SyslogFormat, SyslogMessage, TimeContext};
use crate::record::Timestamp;

/// Longest PID accepted between brackets; longer bracketed text is message.
const MAX_PID_LEN: usize = 64;

/// A program tag found at the start of a header: `postfix/smtpd[123]: msg`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Tag<'a> {
    pub(crate) program: &'a [u8],
    pub(crate) pid: Option<&'a [u8]>,
    pub(crate) msg: &'a [u8],
}

/// Parses what follows the (optional) PRI. Never fails: unrecognised input
/// becomes [`SyslogFormat::Plain`] with the whole line as the message.
pub(crate) fn parse<'a>(
    after_pri: &'a [u8],
    pri: Option<Pri>,
    ctx: &TimeContext,
) -> SyslogMessage<'a> {
    let rest = skip_spaces(after_pri);
    let (rest, timestamp) = match timestamp(rest, ctx) {
        Some((r, ts)) => (skip_spaces(r), Some(ts)),
        None => (rest, None),
    };
    let mut message = SyslogMessage {
        format: if pri.is_some() || timestamp.is_some() {
            SyslogFormat::Rfc3164
        } else {
            SyslogFormat::Plain
        },
        pri,
        timestamp,
        hostname: None,
        app_name: None,
        proc_id: None,
        msg_id: None,
        structured_data: None,
        msg: rest,
    };
    if let Some(tag) = parse_tag(rest) {
        message.apply(tag);
    } else if timestamp.is_some() {
        // After a timestamp, the first word is the HOSTNAME (RFC 3164 §4.1.2).
        let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        if end > 0 {
            message.hostname = Some(&rest[..end]);
            let after_host = skip_spaces(&rest[end..]);
            message.msg = after_host;
            if let Some(tag) = parse_tag(after_host) {
                message.apply(tag);
            }
        }
    }
    if message.app_name.is_some() && message.format == SyslogFormat::Plain {
        message.format = SyslogFormat::Rfc3164;
    }
    message
}

/// A line with a timestamp and a HOSTNAME but no program tag, read the way
/// syslog-ng's RFC 3164 parser reads it: the program is the run up to the
/// first space, `[` or `:`, then an optional `[pid]`, an optional `:` and
/// one space; the rest is the message.
pub(crate) fn parse_headerless<'a>(line: &'a [u8], ctx: &TimeContext) -> Option<SyslogMessage<'a>> {
    let message = parse(line, None, ctx);
    if message.timestamp.is_none() || message.hostname.is_none() || message.app_name.is_some() {
        return None;
    }
    let text = message.msg;
    let run = text
        .iter()
        .position(|&b| matches!(b, b' ' | b'[' | b':'))
        .unwrap_or(text.len());
    if run == 0 {
        return None;
    }
    let (program, mut rest) = text.split_at(run);
    let mut pid = None;
    if let Some(bracketed) = rest.strip_prefix(b"[")
        && let Some(close) = bracketed
            .iter()
            .take(MAX_PID_LEN + 1)
            .position(|&b| b == b']')
    {
        pid = Some(&bracketed[..close]);
        rest = &bracketed[close + 1..];
    }
    rest = rest.strip_prefix(b":").unwrap_or(rest);
    rest = rest.strip_prefix(b" ").unwrap_or(rest);
    Some(SyslogMessage {
        app_name: Some(program),
        proc_id: pid,
        msg: rest,
        ..message
    })
}

/// A syslog line as syslog-ng prints it on a container's stdout:
/// `Aug  5 12:34:56 host postfix/smtpd[123]: msg` — a timestamp and a
/// program are required, PRI and HOSTNAME are optional.
pub(crate) fn parse_embedded<'a>(line: &'a [u8], ctx: &TimeContext) -> Option<SyslogMessage<'a>> {
    let (pri, after_pri) = match super::pri::pri(line) {
        Ok((rest, p)) => (Some(p), rest),
        Err(_) => (None, line),
    };
    // A line must at least start like a timestamp to be worth a full parse.
    if !after_pri.first().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let message = parse(after_pri, pri, ctx);
    (message.timestamp.is_some() && message.app_name.is_some()).then_some(message)
}

impl<'a> SyslogMessage<'a> {
    fn apply(&mut self, tag: Tag<'a>) {
        self.app_name = Some(tag.program);
        self.proc_id = tag.pid;
        self.msg = tag.msg;
    }
}

fn timestamp<'a>(input: &'a [u8], ctx: &TimeContext) -> Option<(&'a [u8], Timestamp)> {
    match input.first()? {
        b'0'..=b'9' => rfc3339(input).ok(),
        _ => bsd_timestamp(input, ctx).ok(),
    }
}

fn skip_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    s
}

/// `program[pid]: msg`, `program: msg`, `program[pid] msg` or SOGo's
/// `program [pid]: msg` (the message then keeps `[pid]: `, as syslog-ng
/// stores it). Text in brackets without a program before it is message.
pub(crate) fn parse_tag(s: &[u8]) -> Option<Tag<'_>> {
    let run = s
        .iter()
        .position(|&b| b == b' ' || b == b'[')
        .unwrap_or(s.len());
    if run == 0 {
        return None;
    }
    let (program, after) = s.split_at(run);
    if after.first() == Some(&b'[') {
        let close = after
            .iter()
            .take(MAX_PID_LEN + 2)
            .position(|&b| b == b']')?;
        let pid = &after[1..close];
        if pid.is_empty() || pid.contains(&b' ') {
            return None;
        }
        let mut msg = &after[close + 1..];
        if let Some(m) = msg.strip_prefix(b":") {
            msg = m;
        } else if !msg.is_empty() && msg[0] != b' ' {
            return None;
        }
        return Some(Tag {
            program,
            pid: Some(pid),
            msg: msg.strip_prefix(b" ").unwrap_or(msg),
        });
    }
    if program.len() > 1 && program.ends_with(b":") {
        return Some(Tag {
            program: &program[..program.len() - 1],
            pid: None,
            msg: after.strip_prefix(b" ").unwrap_or(after),
        });
    }
    // SOGo: `sogod [109]: text`.
    let bracketed = after.strip_prefix(b" [")?;
    let digits = bracketed.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && bracketed[digits..].starts_with(b"]:") {
        return Some(Tag {
            program,
            pid: Some(&bracketed[..digits]),
            msg: &after[1..],
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headerless_lines_read_as_syslog_ng_reads_them() {
        // The measured syslog-ng 3.38 results in mailcow-contract.md.
        let ctx = TimeContext::utc(Timestamp::new(1_795_999_799, 0));
        for (text, program, msg) in [
            (
                "host=172.22.1.250, user=u@example.org, pwd=yes",
                "host=172.22.1.250,",
                "user=u@example.org, pwd=yes",
            ),
            (
                "url=imap://u%40example.org@172.22.1.250/?tls=NO&tlsVerifyMode=none",
                "url=imap",
                "//u%40example.org@172.22.1.250/?tls=NO&tlsVerifyMode=none",
            ),
            ("base=(null)", "base=(null)", ""),
            (
                "= <0x0x561fc0017bb0[NGImap4Client]: login=u@example.org(pwd) socket=<x>>",
                "=",
                "<0x0x561fc0017bb0[NGImap4Client]: login=u@example.org(pwd) socket=<x>>",
            ),
        ] {
            let line = format!("Dec  1 16:36:02 be9a5467584c {text}");
            let m = parse_headerless(line.as_bytes(), &ctx).unwrap();
            assert_eq!(m.hostname, Some(&b"be9a5467584c"[..]), "{text}");
            assert_eq!(m.app_name, Some(program.as_bytes()), "{text}");
            assert_eq!(m.msg, msg.as_bytes(), "{text}");
        }
        // A line with a real tag, or without a timestamp, is not headerless.
        assert!(parse_headerless(b"Dec  1 16:36:02 h sogod [1]: x", &ctx).is_none());
        assert!(parse_headerless(b"host=1, user=u", &ctx).is_none());
    }

    #[test]
    fn tag_forms() {
        let t = parse_tag(b"postfix/smtpd[123]: connect").unwrap();
        assert_eq!(
            (t.program, t.pid, t.msg),
            (&b"postfix/smtpd"[..], Some(&b"123"[..]), &b"connect"[..])
        );
        let t = parse_tag(b"postfix/smtpd: udp msg").unwrap();
        assert_eq!(
            (t.program, t.pid, t.msg),
            (&b"postfix/smtpd"[..], None, &b"udp msg"[..])
        );
        let t = parse_tag(b"sogod [109]: x").unwrap();
        assert_eq!(
            (t.program, t.pid, t.msg),
            (&b"sogod"[..], Some(&b"109"[..]), &b"[109]: x"[..])
        );
        let t = parse_tag(b"nginx:1.25[4840]: x").unwrap();
        assert_eq!(t.program, b"nginx:1.25");
        let t = parse_tag(b"app[12] no colon").unwrap();
        assert_eq!(t.msg, b"no colon");
    }

    #[test]
    fn tag_rejects_plain_words_and_leading_brackets() {
        assert_eq!(parse_tag(b"vm postfix[1]: x"), None);
        assert_eq!(parse_tag(b"[php7:emerg] x"), None);
        assert_eq!(parse_tag(b"host [php7:emerg] x"), None);
        assert_eq!(parse_tag(b"key:value stuff"), None);
        assert_eq!(parse_tag(b"a[1]x"), None);
        assert_eq!(parse_tag(b":"), None);
    }
}
