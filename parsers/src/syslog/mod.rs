//! Syslog: RFC 5424 and RFC 3164 lines as real senders write them.
//!
//! [`parse_syslog`] never fails: a line that is not syslog at all comes back
//! as [`SyslogFormat::Plain`] with the whole line as its message, so a sender
//! that gets the format wrong loses nothing. Fields borrow from the input.
//!
//! Invalid UTF-8 never rejects a line: fields are raw bytes, kept exactly as
//! sent; each encoder decides how to write them (the mailcow encoder writes
//! `\xNN` as syslog-ng does, GELF and the channel write U+FFFD).

mod pri;
mod rfc3164;
mod rfc5424;
mod structured_data;
mod timestamp;

pub use pri::{Pri, pri};
pub use structured_data::{SdElement, sd_elements, unescape_param_value};
pub use timestamp::{TimeContext, bsd_timestamp, rfc3339};

use crate::record::Timestamp;

/// Which grammar a line matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyslogFormat {
    /// RFC 5424 (`<30>1 2026-... host app pid msgid - msg`).
    Rfc5424,
    /// RFC 3164 or a BSD-like variant (`<30>Nov 24 13:49:59 tag[1]: msg`).
    Rfc3164,
    /// Neither PRI nor timestamp nor tag: the whole line is the message.
    Plain,
}

/// One parsed syslog line. Byte fields borrow from the input; `None` means
/// absent or NILVALUE (`-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyslogMessage<'a> {
    /// Which grammar matched.
    pub format: SyslogFormat,
    /// Facility and severity, if the line had a PRI.
    pub pri: Option<Pri>,
    /// The header timestamp, made absolute (BSD lines via [`TimeContext`]).
    pub timestamp: Option<Timestamp>,
    /// HOSTNAME; Docker's default format sends none.
    pub hostname: Option<&'a [u8]>,
    /// APP-NAME (RFC 5424) or TAG without pid (RFC 3164): `postfix/smtpd`.
    pub app_name: Option<&'a [u8]>,
    /// PROCID, or the pid in `tag[pid]`.
    pub proc_id: Option<&'a [u8]>,
    /// MSGID (RFC 5424 only).
    pub msg_id: Option<&'a [u8]>,
    /// Raw STRUCTURED-DATA (RFC 5424 only); see [`sd_elements`].
    pub structured_data: Option<&'a [u8]>,
    /// MSG, with the trailer (`\n`, `\r\n`, NUL) and a UTF-8 BOM removed.
    pub msg: &'a [u8],
}

impl SyslogMessage<'_> {
    /// The PRI, or syslog-ng's default `user.notice` when the line had none.
    pub fn pri_or_default(&self) -> Pri {
        self.pri.unwrap_or(Pri::DEFAULT)
    }
}

/// Strips the frame trailer: any run of `\n`, `\r` and NUL at the end.
/// Other trailing white space is message content and stays.
///
/// ```
/// use cowlogd_parsers::syslog::trim_trailer;
/// assert_eq!(trim_trailer(b"msg \r\n\0"), b"msg ");
/// ```
pub fn trim_trailer(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r' | b'\0'] = line {
        line = rest;
    }
    line
}

/// Parses one syslog line (one UDP datagram or one TCP frame), trying RFC
/// 5424 first, then RFC 3164 and its variants.
///
/// ```
/// use cowlogd_parsers::{Timestamp, syslog::{parse_syslog, SyslogFormat, TimeContext}};
/// let ctx = TimeContext::utc(Timestamp::new(1795999799, 0));
/// let m = parse_syslog(b"<30>Nov 24 13:49:59 3b2f6e0c9a1d[4840]: hello world\n", &ctx);
/// assert_eq!(m.format, SyslogFormat::Rfc3164);
/// assert_eq!(m.hostname, None);
/// assert_eq!(m.app_name, Some(&b"3b2f6e0c9a1d"[..]));
/// assert_eq!(m.proc_id, Some(&b"4840"[..]));
/// assert_eq!(m.msg, b"hello world");
/// ```
pub fn parse_syslog<'a>(line: &'a [u8], ctx: &TimeContext) -> SyslogMessage<'a> {
    let line = trim_trailer(line);
    match pri(line) {
        Ok((after_pri, p)) => {
            rfc5424::parse(after_pri, p).unwrap_or_else(|| rfc3164::parse(after_pri, Some(p), ctx))
        }
        Err(_) => rfc3164::parse(line, None, ctx),
    }
}

/// Parses a syslog line nested in another message — what syslog-ng prints
/// on a mailcow container's stdout (`Aug  5 12:34:56 host postfix/smtpd[123]:
/// msg`, no PRI) — or `None` when the text is not such a line (supervisord
/// output, entrypoint chatter). A timestamp and a program are required.
///
/// ```
/// use cowlogd_parsers::{Timestamp, syslog::{parse_embedded_line, TimeContext}};
/// let ctx = TimeContext::utc(Timestamp::new(1795999799, 0));
/// let m = parse_embedded_line(b"Aug  5 12:34:56 mail postfix/smtpd[123]: connect from x", &ctx).unwrap();
/// assert_eq!(m.app_name, Some(&b"postfix/smtpd"[..]));
/// assert!(parse_embedded_line(b"2026-11-24 12:00:00,123 INFO success", &ctx).is_none());
/// ```
pub fn parse_embedded_line<'a>(line: &'a [u8], ctx: &TimeContext) -> Option<SyslogMessage<'a>> {
    rfc3164::parse_embedded(trim_trailer(line), ctx)
}

/// Parses a line syslog-ng relayed without a syslog header of its own —
/// SOGo's multi-line errors continue with such lines — as syslog-ng printed
/// it on stdout (`Dec  1 16:36:02 be9a5467584c host=1.2.3.4, user=u`):
/// the program is the first run up to a space, `[` or `:`, as syslog-ng
/// reads it. `None` when the line has a program tag, or no timestamp and
/// hostname.
///
/// ```
/// use cowlogd_parsers::{Timestamp, syslog::{parse_headerless_line, TimeContext}};
/// let ctx = TimeContext::utc(Timestamp::new(1795999799, 0));
/// let m = parse_headerless_line(b"Dec  1 16:36:02 be9a5467584c host=172.22.1.250, user=u@example.org, pwd=yes", &ctx).unwrap();
/// assert_eq!(m.app_name, Some(&b"host=172.22.1.250,"[..]));
/// assert_eq!(m.msg, b"user=u@example.org, pwd=yes");
/// ```
pub fn parse_headerless_line<'a>(line: &'a [u8], ctx: &TimeContext) -> Option<SyslogMessage<'a>> {
    rfc3164::parse_headerless(trim_trailer(line), ctx)
}
