//! What mailcow's consumers read: the JSON entry pushed to
//! `POSTFIX_MAILLOG`, `DOVECOT_MAILLOG` and `SOGO_LOG`, and the payload
//! published on `F2B_CHANNEL` (byte-compatible with syslog-ng's
//! `format-json` and `$(sanitize)`).

use super::{InvalidUtf8, has_byte, has_byte_below, write_int, write_json_string};
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
    let table = match mode {
        ChannelSanitize::SyslogNg => &SANITIZE_SYSLOG_NG,
        ChannelSanitize::ControlOnly => &SANITIZE_CONTROL_ONLY,
    };
    // No UTF-8 decoding for the usual ASCII line.
    let slash = mode == ChannelSanitize::SyslogNg;
    let append = |out: &mut Vec<u8>, valid: &[u8]| {
        let start = out.len();
        out.extend_from_slice(valid);
        // Copy, then fix in place the eight-byte words that need it.
        for word in out[start..].chunks_mut(8) {
            if let Ok(bytes) = <[u8; 8]>::try_from(&*word) {
                let value = u64::from_le_bytes(bytes);
                if !(has_byte_below(value, 0x20) || slash && has_byte(value, b'/')) {
                    continue;
                }
            }
            for byte in word {
                *byte = table[usize::from(*byte)];
            }
        }
    };
    if message.is_ascii() {
        append(out, message);
        return;
    }
    for chunk in message.utf8_chunks() {
        append(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

/// [`encode_channel_payload`], then cut to at most `max` bytes at a
/// character start (netfilter's regexes take time that grows with the
/// square of a line's length); `true` when it was cut. What is appended
/// stays valid UTF-8 and is a prefix of the uncut payload.
///
/// ```
/// use cowlogd_parsers::encode::mailcow::{encode_channel_payload_capped, ChannelSanitize};
/// let mut out = b"key".to_vec();
/// assert!(encode_channel_payload_capped(&mut out, "ab\u{e9}".as_bytes(), ChannelSanitize::SyslogNg, 3));
/// assert_eq!(out, b"keyab");
/// ```
pub fn encode_channel_payload_capped(
    out: &mut Vec<u8>,
    message: &[u8],
    mode: ChannelSanitize,
    max: usize,
) -> bool {
    let start = out.len();
    encode_channel_payload(out, message, mode);
    if out.len() - start <= max {
        return false;
    }
    let end = start + crate::limits::char_floor(&out[start..], max);
    out.truncate(end);
    true
}

/// Byte maps of the two sanitize modes (only ASCII bytes change, so valid
/// UTF-8 stays valid).
const SANITIZE_SYSLOG_NG: [u8; 256] = sanitize_table(true);
const SANITIZE_CONTROL_ONLY: [u8; 256] = sanitize_table(false);

const fn sanitize_table(slash: bool) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = if b < 0x20 || (slash && b == b'/' as usize) {
            b'_'
        } else {
            b as u8
        };
        b += 1;
    }
    table
}
