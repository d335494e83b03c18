//! GELF 1.1 for forwarding: every record, original fields kept, cowlogd's
//! parsed fields added; and UDP chunking as go-gelf does it.

use thiserror::Error;

use super::{InvalidUtf8, write_int, write_json_string};
use crate::gelf::{CHUNK_HEADER_LEN, CHUNK_MAGIC, FieldValue};
use crate::limits::MAX_CHUNKS;
use crate::record::{Origin, Record, Stream};
use crate::syslog::{sd_elements, unescape_param_value};

/// What the forwarder adds besides the record itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardContext<'a> {
    /// `host` when the record has none (a syslog line without HOSTNAME):
    /// typically the sender's address.
    pub fallback_host: &'a str,
    /// The route that matched, written as `_route`.
    pub route: Option<&'a str>,
}

/// Fields cowlogd adds; an original field of the same name wins.
const ADDED: [&str; 6] = [
    "program",
    "pid",
    "severity",
    "stream",
    "container_name",
    "route",
];

/// Appends `record` as one GELF 1.1 JSON object (no NUL, no newline).
///
/// GELF input keeps `host`, `short_message`, `full_message` and every
/// additional field as received; syslog input maps HOSTNAME to `host`, MSG to
/// `short_message`, and facility, APP-NAME, PROCID, MSGID and each
/// structured-data param to fields. `level` is the record's severity (the
/// recovered one); `_program`, `_pid`, `_severity`, `_stream` and `_route`
/// are added. Invalid UTF-8 becomes U+FFFD.
///
/// ```
/// use cowlogd_parsers::{Timestamp, gelf::parse_gelf, normalize::normalize_gelf, syslog::TimeContext};
/// use cowlogd_parsers::encode::gelf::{encode_gelf, ForwardContext};
/// let json = br#"{"version":"1.1","host":"h","short_message":"Aug  5 12:34:56 mx postfix/smtpd[123]: hi","timestamp":1714557600.5,"level":6,"_container_name":"pf"}"#;
/// let gelf = parse_gelf(json).unwrap();
/// let ctx = TimeContext::utc(Timestamp::new(1714557600, 0));
/// let record = normalize_gelf(&gelf, &ctx, Timestamp::default());
/// let mut out = Vec::new();
/// encode_gelf(&mut out, &record, &ForwardContext { fallback_host: "-", route: Some("postfix") });
/// let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
/// assert_eq!(v["_program"], "postfix/smtpd");
/// assert_eq!(v["_container_name"], "pf");
/// assert_eq!(v["timestamp"], 1714557600.5);
/// ```
pub fn encode_gelf(out: &mut Vec<u8>, record: &Record<'_>, ctx: &ForwardContext<'_>) {
    let mut names: Vec<&str> = Vec::new();
    out.extend_from_slice(b"{\"version\":\"1.1\",\"host\":");
    match record.origin {
        Origin::Gelf(gelf) => {
            let host = gelf.host.as_deref().unwrap_or(ctx.fallback_host);
            write_json_string(out, host.as_bytes(), InvalidUtf8::Replace);
            out.extend_from_slice(b",\"short_message\":");
            write_json_string(out, gelf.short_message.as_bytes(), InvalidUtf8::Replace);
            if let Some(full) = &gelf.full_message {
                out.extend_from_slice(b",\"full_message\":");
                write_json_string(out, full.as_bytes(), InvalidUtf8::Replace);
            }
            write_time_and_level(out, record);
            for field in &gelf.fields {
                names.push(&field.name);
                write_field_name(out, field.name.as_bytes());
                match &field.value {
                    FieldValue::Str(s) => {
                        write_json_string(out, s.as_bytes(), InvalidUtf8::Replace)
                    }
                    FieldValue::Json(raw) => write_json_value(out, raw.get()),
                }
            }
        }
        Origin::Syslog(syslog) => {
            let host = syslog.hostname.unwrap_or(ctx.fallback_host.as_bytes());
            write_json_string(out, host, InvalidUtf8::Replace);
            out.extend_from_slice(b",\"short_message\":");
            write_json_string(out, record.message, InvalidUtf8::Replace);
            write_time_and_level(out, record);
            let pri = syslog.pri_or_default();
            write_str_field(out, b"facility", pri.facility.name().as_bytes());
            for (name, value) in [
                (&b"app_name"[..], syslog.app_name),
                (b"procid", syslog.proc_id),
                (b"msgid", syslog.msg_id),
            ] {
                if let Some(value) = value {
                    write_str_field(out, name, value);
                }
            }
            for element in syslog.structured_data.map(sd_elements).unwrap_or_default() {
                for (name, value) in element.params {
                    write_str_field(
                        out,
                        &sanitize_field_name(name),
                        &unescape_param_value(value),
                    );
                }
            }
        }
    }
    let add = |out: &mut Vec<u8>, name: &'static str, value: Option<&[u8]>| {
        if let Some(value) = value
            && !names.contains(&name)
        {
            write_str_field(out, name.as_bytes(), value);
        }
    };
    let stream = record.stream.map(|s| match s {
        Stream::Stdout => &b"stdout"[..],
        Stream::Stderr => b"stderr",
    });
    add(out, ADDED[0], record.program);
    add(out, ADDED[1], record.pid);
    add(out, ADDED[2], Some(record.severity.keyword().as_bytes()));
    add(out, ADDED[3], stream);
    add(out, ADDED[4], record.container);
    add(out, ADDED[5], ctx.route.map(str::as_bytes));
    out.push(b'}');
}

/// A non-string field value. GELF values are strings or numbers, and
/// Graylog stores objects and arrays as their JSON text: so objects and
/// arrays go out as that text in a string, and so does a number no receiver
/// can hold (`1e999` overflows a double; JSON parsers reject the whole
/// message for it). Finite numbers and booleans go out as they came.
fn write_json_value(out: &mut Vec<u8>, raw: &str) {
    let keep = match raw.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => raw.parse::<f64>().is_ok_and(f64::is_finite),
        _ => raw == "true" || raw == "false",
    };
    if keep {
        out.extend_from_slice(raw.as_bytes());
    } else {
        write_json_string(out, raw.as_bytes(), InvalidUtf8::Replace);
    }
}

fn write_time_and_level(out: &mut Vec<u8>, record: &Record<'_>) {
    out.extend_from_slice(b",\"timestamp\":");
    write_int(out, record.time.secs);
    let millis = record.time.nanos / 1_000_000;
    if millis > 0 {
        out.extend_from_slice(&[
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
        ]);
    }
    out.extend_from_slice(b",\"level\":");
    write_int(out, record.severity.code().into());
}

fn write_field_name(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(b",\"_");
    // Names come from JSON keys or sanitised SD names; escape anyway.
    let start = out.len();
    write_json_string(out, name, InvalidUtf8::Replace);
    // Drop the opening quote the string writer added: we already wrote `"_`.
    out.remove(start);
    out.push(b':');
}

fn write_str_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    write_field_name(out, name);
    write_json_string(out, value, InvalidUtf8::Replace);
}

/// GELF field names are `[\w.-]+`; SD param names may hold more.
fn sanitize_field_name(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                b
            } else {
                b'_'
            }
        })
        .collect()
}

/// Why a payload cannot be sent as chunks.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkingError {
    /// Occurs when the payload needs more than 128 chunks.
    #[error("payload of {len} bytes needs more than 128 chunks of {chunk_size} bytes")]
    TooManyChunks {
        /// Payload length.
        len: usize,
        /// Datagram size asked for.
        chunk_size: usize,
    },
    /// Occurs when the datagram size leaves no room for payload.
    #[error("chunk size {0} is not larger than the 12-byte chunk header")]
    ChunkSizeTooSmall(usize),
}

/// The largest payload that fits in 128 chunks of `chunk_size` bytes.
///
/// ```
/// assert_eq!(cowlogd_parsers::encode::gelf::max_chunked_payload(1420), 128 * 1408);
/// ```
pub fn max_chunked_payload(chunk_size: usize) -> usize {
    chunk_size.saturating_sub(CHUNK_HEADER_LEN) * usize::from(MAX_CHUNKS)
}

/// Splits a (compressed) GELF payload into UDP datagrams of at most
/// `chunk_size` bytes, header included, as go-gelf does: a payload that fits
/// goes out whole, a larger one as `1e 0f` + `message_id` + sequence +
/// count + payload slice. Calls `send` once per datagram, in order;
/// `scratch` holds each chunk.
///
/// ```
/// use cowlogd_parsers::encode::gelf::for_each_chunk;
/// let mut datagrams = Vec::new();
/// for_each_chunk(&[1u8; 30], 22, *b"ABCDEFGH", &mut Vec::new(), |d| datagrams.push(d.to_vec())).unwrap();
/// assert_eq!(datagrams.len(), 3);
/// assert_eq!(&datagrams[2][..12], b"\x1e\x0fABCDEFGH\x02\x03");
/// ```
///
/// # Errors
/// [`ChunkingError`] when the payload needs more than 128 chunks or the
/// chunk size is too small; nothing is sent then.
pub fn for_each_chunk(
    payload: &[u8],
    chunk_size: usize,
    message_id: [u8; 8],
    scratch: &mut Vec<u8>,
    mut send: impl FnMut(&[u8]),
) -> Result<usize, ChunkingError> {
    if payload.len() <= chunk_size {
        send(payload);
        return Ok(1);
    }
    let per_chunk = chunk_size
        .checked_sub(CHUNK_HEADER_LEN)
        .filter(|n| *n > 0)
        .ok_or(ChunkingError::ChunkSizeTooSmall(chunk_size))?;
    let count = payload.len().div_ceil(per_chunk);
    if count > usize::from(MAX_CHUNKS) {
        return Err(ChunkingError::TooManyChunks {
            len: payload.len(),
            chunk_size,
        });
    }
    for (sequence, piece) in payload.chunks(per_chunk).enumerate() {
        scratch.clear();
        scratch.extend_from_slice(&CHUNK_MAGIC);
        scratch.extend_from_slice(&message_id);
        scratch.push(sequence as u8);
        scratch.push(count as u8);
        scratch.extend_from_slice(piece);
        send(scratch);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;
    use crate::gelf::parse_gelf;
    use crate::normalize::normalize_gelf;
    use crate::syslog::TimeContext;

    fn forward(json: &[u8]) -> serde_json::Value {
        let gelf = parse_gelf(json).unwrap();
        let record = normalize_gelf(
            &gelf,
            &TimeContext::utc(Timestamp::new(1, 0)),
            Timestamp::new(1, 0),
        );
        let mut out = Vec::new();
        encode_gelf(&mut out, &record, &ForwardContext::default());
        serde_json::from_slice(&out).expect("forwarded GELF must parse")
    }

    /// Found by the `gelf_json` fuzz target: a number out of a double's
    /// range made the forwarded message unparseable.
    #[test]
    fn out_of_range_numbers_and_objects_are_forwarded_as_text() {
        let v = forward(br#"{"short_message":"x","_big":6555555555555E5555555555555,"_neg":-1e999,"_o":{"a":[1,2]},"_l":[true],"_n":42.5,"_b":false}"#);
        assert_eq!(v["_big"], "6555555555555E5555555555555");
        assert_eq!(v["_neg"], "-1e999");
        assert_eq!(v["_o"], r#"{"a":[1,2]}"#);
        assert_eq!(v["_l"], "[true]");
        assert_eq!(v["_n"], 42.5);
        assert_eq!(v["_b"], false);
    }
}
