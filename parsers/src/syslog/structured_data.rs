//! RFC 5424 STRUCTURED-DATA (§6.3): `[id name="value" ...][id2 ...]`.
//!
//! The parser only finds the extent of the SD part; elements and params are
//! read lazily from the raw bytes by [`sd_elements`], so a message whose SD
//! is never looked at costs one scan and no allocation.

use memchr::memchr3;

/// Length of the STRUCTURED-DATA at the start of `input` (one or more
/// `[...]` elements), or `None` if it is not well formed.
pub(crate) fn sd_len(input: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while input.get(pos) == Some(&b'[') {
        pos += element_len(&input[pos..])?;
    }
    (pos > 0).then_some(pos)
}

/// Length of one `[...]` element, honouring `\"`, `\\` and `\]` in values.
fn element_len(input: &[u8]) -> Option<usize> {
    let mut pos = 1;
    let mut in_value = false;
    loop {
        if in_value {
            let next = memchr::memchr2(b'"', b'\\', &input[pos..])? + pos;
            if input[next] == b'\\' {
                pos = next + 2;
                if pos > input.len() {
                    return None;
                }
            } else {
                in_value = false;
                pos = next + 1;
            }
        } else {
            let next = memchr3(b'"', b']', b'\\', &input[pos..])? + pos;
            match input[next] {
                b']' => return Some(next + 1),
                b'"' => {
                    in_value = true;
                    pos = next + 1;
                }
                _ => pos = next + 1,
            }
        }
    }
}

/// One SD element: its id and its params in order, values still escaped
/// (`\"` stays two bytes; [`unescape_param_value`] undoes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdElement<'a> {
    /// The SD-ID, e.g. `timeQuality`.
    pub id: &'a [u8],
    /// `name="value"` pairs as written (value without the quotes).
    pub params: Vec<(&'a [u8], &'a [u8])>,
}

/// Splits raw STRUCTURED-DATA into elements. Malformed tails are skipped.
///
/// ```
/// use cowlogd_parsers::syslog::sd_elements;
/// let sd = br#"[timeQuality tzKnown="1" isSynced="0"]"#;
/// let elements = sd_elements(sd);
/// assert_eq!(elements[0].id, b"timeQuality");
/// assert_eq!(elements[0].params, vec![(&b"tzKnown"[..], &b"1"[..]), (&b"isSynced"[..], &b"0"[..])]);
/// ```
pub fn sd_elements(raw: &[u8]) -> Vec<SdElement<'_>> {
    let mut elements = Vec::new();
    let mut rest = raw;
    while rest.first() == Some(&b'[') {
        let Some(len) = element_len(rest) else { break };
        elements.push(parse_element(&rest[1..len - 1]));
        rest = &rest[len..];
    }
    elements
}

fn parse_element(body: &[u8]) -> SdElement<'_> {
    let id_end = body.iter().position(|&b| b == b' ').unwrap_or(body.len());
    let mut params = Vec::new();
    let mut rest = &body[id_end..];
    loop {
        rest = trim_start_spaces(rest);
        let Some(eq) = rest.iter().position(|&b| b == b'=') else {
            break;
        };
        let name = &rest[..eq];
        let after = &rest[eq + 1..];
        let Some(value_body) = after.strip_prefix(b"\"") else {
            break;
        };
        let Some(end) = closing_quote(value_body) else {
            break;
        };
        params.push((name, &value_body[..end]));
        rest = &value_body[end + 1..];
    }
    SdElement {
        id: &body[..id_end],
        params,
    }
}

fn trim_start_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    s
}

fn closing_quote(value: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while pos < value.len() {
        match value[pos] {
            b'\\' => pos += 2,
            b'"' => return Some(pos),
            _ => pos += 1,
        }
    }
    None
}

/// Undoes RFC 5424's PARAM-VALUE escapes (`\"`, `\\`, `\]`); other
/// backslashes are kept, as §6.3.3 requires.
///
/// ```
/// use cowlogd_parsers::syslog::unescape_param_value;
/// assert_eq!(unescape_param_value(br#"a\"b\]c\d"#), br#"a"b]c\d"#.to_vec());
/// ```
pub fn unescape_param_value(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut iter = value.iter().peekable();
    while let Some(&b) = iter.next() {
        if b == b'\\'
            && let Some(&&next) = iter.peek()
            && matches!(next, b'"' | b'\\' | b']')
        {
            out.push(next);
            iter.next();
            continue;
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_len_spans_several_elements_and_escapes() {
        let sd = br#"[a x="1\"]"][b y="\\"] msg"#;
        assert_eq!(sd_len(sd), Some(sd.len() - 4));
    }

    #[test]
    fn sd_len_rejects_unterminated() {
        assert_eq!(sd_len(b"[a x=\"1"), None);
        assert_eq!(sd_len(b"[a"), None);
        assert_eq!(sd_len(b"[a x=\"\\"), None);
        assert_eq!(sd_len(b"-"), None);
    }

    #[test]
    fn sd_elements_reads_escaped_values() {
        let elements = sd_elements(br#"[origin ip="10.0.0.1" software="a\]b"][meta]"#);
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].params[1], (&b"software"[..], &br"a\]b"[..]));
        assert_eq!(elements[1].id, b"meta");
        assert!(elements[1].params.is_empty());
    }
}
