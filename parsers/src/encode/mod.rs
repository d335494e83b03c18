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
    // Nearly every log line is ASCII: one word-at-a-time check spares the
    // UTF-8 decoder.
    if bytes.is_ascii() {
        write_escaped_valid(out, bytes);
        out.push(b'"');
        return;
    }
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

/// `JSON_ESCAPE[b]`: 0 for a byte written as is, the letter of its short
/// escape (`n` for `\n`), or `u` for `\u00xx`.
const JSON_ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table
};

fn write_escaped_valid(out: &mut Vec<u8>, text: &[u8]) {
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        // Eight bytes at a time past the common case: nothing to escape.
        if let Some(word) = text.get(i..i + 8)
            && !has_json_special(u64::from_le_bytes(word.try_into().unwrap_or_default()))
        {
            i += 8;
            continue;
        }
        let b = text[i];
        let escape = JSON_ESCAPE[usize::from(b)];
        if escape != 0 {
            out.extend_from_slice(&text[start..i]);
            start = i + 1;
            if escape == b'u' {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', escape]);
            }
        }
        i += 1;
    }
    out.extend_from_slice(&text[start..]);
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is below `n` (`n` ≤ 0x80; exact as a yes/no).
pub(crate) const fn has_byte_below(word: u64, n: u8) -> bool {
    word.wrapping_sub(ONES * n as u64) & !word & HIGHS != 0
}

/// Whether any byte of `word` equals `b`.
pub(crate) const fn has_byte(word: u64, b: u8) -> bool {
    has_byte_below(word ^ (ONES * b as u64), 1)
}

/// Whether a JSON string needs an escape for any byte of `word`.
const fn has_json_special(word: u64) -> bool {
    has_byte_below(word, 0x20) || has_byte(word, b'"') || has_byte(word, b'\\')
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
    fn word_checks_agree_with_byte_checks() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut bytes = [b'a'; 8];
                bytes[at] = b;
                let word = u64::from_le_bytes(bytes);
                assert_eq!(has_byte_below(word, 0x20), b < 0x20, "{b:#x} at {at}");
                assert_eq!(has_byte(word, b'/'), b == b'/', "{b:#x} at {at}");
                assert_eq!(
                    has_json_special(word),
                    JSON_ESCAPE[usize::from(b)] != 0,
                    "{b:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn escapes_land_anywhere_in_long_text() {
        let text = "0123456789abcdef\"x\ny\\z\u{1}0123456789".repeat(3);
        let out = json(text.as_bytes(), InvalidUtf8::Replace);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn output_parses_back_to_the_same_text() {
        let input = "tab\there \"quoted\" \\ \u{1} ✓".as_bytes();
        let out = json(input, InvalidUtf8::Replace);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back.as_bytes(), input);
    }
}
