//! What mailcow's consumers read: the JSON entry pushed to
//! `POSTFIX_MAILLOG`, `DOVECOT_MAILLOG` and `SOGO_LOG`, and the payload
//! published on `F2B_CHANNEL` (byte-compatible with syslog-ng's
//! `format-json` and `$(sanitize)`).

use super::{InvalidUtf8, write_int, write_json_string};
use crate::record::Record;

/// Appends the list entry for `record`:
/// `{"time":"…","program":"…","priority":"…","message":"…"}` and a newline,
/// exactly as syslog-ng's `format-json` writes it. Invalid UTF-8 bytes
/// become the text `\xNN`, as syslog-ng writes them.
///
/// ```
/// use cowlogd_parsers::{Timestamp, encode::mailcow::encode_list_entry, syslog::*, normalize::normalize_syslog};
/// let ctx = TimeContext::utc(Timestamp::new(1712345678, 0));
/// let line = parse_syslog(b"<22>1 2024-04-05T19:34:38Z mx postfix/smtpd 1 - - connect from unknown[203.0.113.5]", &ctx);
/// let record = normalize_syslog(&line, &ctx, Timestamp::new(1712345678, 0));
/// let mut out = Vec::new();
/// encode_list_entry(&mut out, &record);
/// assert_eq!(out, b"{\"time\":\"1712345678\",\"program\":\"postfix/smtpd\",\"priority\":\"info\",\"message\":\"connect from unknown[203.0.113.5]\"}\n");
/// ```
pub fn encode_list_entry(out: &mut Vec<u8>, record: &Record<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_int(out, record.time.secs);
    out.extend_from_slice(b"\",\"program\":");
    write_json_string(
        out,
        record.program.unwrap_or_default(),
        InvalidUtf8::HexText,
    );
    out.extend_from_slice(b",\"priority\":\"");
    out.extend_from_slice(record.severity.keyword().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    write_json_string(out, record.message, InvalidUtf8::HexText);
    out.extend_from_slice(b"}\n");
}

/// How the channel payload is cleaned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelSanitize {
    /// syslog-ng's `$(sanitize)`: bytes below 0x20 and `/` become `_`.
    /// What netfilter-mailcow's regexes expect today.
    #[default]
    SyslogNg,
    /// Only bytes below 0x20 become `_`; `/` is kept. Revives the SOGo 403
    /// rule (`GET \/SOGo\/...`), which `SyslogNg` mode can never match.
    ControlOnly,
}

/// Appends the payload to publish for `message`: the message text cleaned
/// per `mode`, with each invalid UTF-8 sequence replaced by U+FFFD so the
/// payload is always valid UTF-8 (netfilter-mailcow dies on a decode error).
/// No JSON, no newline.
///
/// ```
/// use cowlogd_parsers::encode::mailcow::{encode_channel_payload, ChannelSanitize};
/// let mut out = Vec::new();
/// encode_channel_payload(&mut out, b"GET /SOGo/ x\tcaf\xe9", ChannelSanitize::SyslogNg);
/// assert_eq!(out, "GET _SOGo_ x_caf\u{fffd}".as_bytes());
/// ```
pub fn encode_channel_payload(out: &mut Vec<u8>, message: &[u8], mode: ChannelSanitize) {
    out.reserve(message.len());
    for chunk in message.utf8_chunks() {
        out.extend(chunk.valid().bytes().map(|b| match (b, mode) {
            (0..=0x1f, _) | (b'/', ChannelSanitize::SyslogNg) => b'_',
            _ => b,
        }));
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}
