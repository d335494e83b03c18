//! Encoders: records → the bytes consumers read. Each writes into a
//! caller's buffer so a batch reuses one allocation.
//!
//! - [`mailcow`]: the Redis list entry and the ban channel payload.
//! - [`gelf`]: GELF 1.1 JSON for forwarding, and UDP chunking.
//! - [`compress`]: gzip/zlib for GELF UDP, with reusable state.

pub mod compress;
pub mod gelf;
pub mod mailcow;

/// What a JSON string writer does with bytes that are not valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InvalidUtf8 {
    /// Write each bad byte as the text `\xNN` (JSON `\\xNN`), as syslog-ng's
    /// `format-json` does; keeps the original bytes recoverable.
    HexText,
    /// Write U+FFFD for each bad sequence.
    Replace,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as a JSON string (with quotes): `"` and `\` escaped,
/// `\b \f \n \r \t` short, other bytes below 0x20 as `\u00xx`, valid UTF-8
/// raw, `/` unescaped.
pub(crate) fn write_json_string(out: &mut Vec<u8>, bytes: &[u8], invalid: InvalidUtf8) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        write_escaped_valid(out, chunk.valid().as_bytes());
        match invalid {
            InvalidUtf8::HexText => {
                for &b in chunk.invalid() {
                    out.extend_from_slice(&[
                        b'\\',
                        b'\\',
                        b'x',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 15)],
                    ]);
                }
            }
            InvalidUtf8::Replace if !chunk.invalid().is_empty() => {
                out.extend_from_slice("\u{fffd}".as_bytes())
            }
            InvalidUtf8::Replace => {}
        }
    }
    out.push(b'"');
}

fn write_escaped_valid(out: &mut Vec<u8>, text: &[u8]) {
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        start = i + 1;
        if short == 0 {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&text[start..]);
}

/// Appends a non-negative or negative integer in decimal.
pub(crate) fn write_int(out: &mut Vec<u8>, value: i64) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(value).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8], invalid: InvalidUtf8) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, bytes, invalid);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_follow_syslog_ng_format_json() {
        assert_eq!(json(b"a\"b\\c/d", InvalidUtf8::HexText), r#""a\"b\\c/d""#);
        assert_eq!(
            json(b"\x08\x0c\n\r\t\x01\x1f", InvalidUtf8::HexText),
            r#""\b\f\n\r\t\u0001\u001f""#
        );
        assert_eq!(
            json("ümlaut €".as_bytes(), InvalidUtf8::HexText),
            "\"ümlaut €\""
        );
        assert_eq!(json(b"caf\xe9!", InvalidUtf8::HexText), r#""caf\\xe9!""#);
        assert_eq!(json(b"\xe2\x82", InvalidUtf8::HexText), r#""\\xe2\\x82""#);
        assert_eq!(json(b"caf\xe9!", InvalidUtf8::Replace), "\"caf\u{fffd}!\"");
    }

    #[test]
    fn output_parses_back_to_the_same_text() {
        let input = "tab\there \"quoted\" \\ \u{1} ✓".as_bytes();
        let out = json(input, InvalidUtf8::Replace);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back.as_bytes(), input);
    }
}
