//! The part of MessagePack the Forward protocol needs, bounded and
//! zero-copy: the length of one complete object in a byte stream (without
//! recursion, so nesting depth costs no stack), and a cursor that reads
//! values of a complete object, borrowing strings from the input.

use thiserror::Error;

use crate::encode::{InvalidUtf8, write_json_string};

/// Why bytes are not a MessagePack object cowlogd takes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MsgpackError {
    /// Byte `0xc1` (never used) at this offset.
    #[error("byte 0xc1 at offset {at} is not MessagePack")]
    Invalid {
        /// Offset in the input.
        at: usize,
    },
    /// The object would be longer than allowed (its declared lengths say so).
    #[error("object longer than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The object ends before its declared lengths do.
    #[error("object cut short")]
    Truncated,
    /// A value of another type than the protocol allows here.
    #[error("expected {expected} at offset {at}")]
    WrongType {
        /// What the protocol wants.
        expected: &'static str,
        /// Offset in the input.
        at: usize,
    },
    /// Containers nested deeper than a reader follows.
    #[error("nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
}

/// One value's head: a scalar whole, or a container's element count (its
/// elements follow).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// `nil`.
    Nil,
    /// `true`/`false`.
    Bool(bool),
    /// Any integer that fits `i64`.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    Uint(u64),
    /// `float 32` or `float 64`.
    Float(f64),
    /// `str` bytes (UTF-8 by the spec; not checked here).
    Str(&'a [u8]),
    /// `bin` bytes.
    Bin(&'a [u8]),
    /// An extension: type and data.
    Ext(i8, &'a [u8]),
    /// An array of this many elements.
    Array(u32),
    /// A map of this many key/value pairs.
    Map(u32),
}

/// What a head says before its payload is read.
enum Head {
    /// A scalar whose payload is `payload` bytes after the head.
    Scalar { payload: usize },
    /// A container of `elements` values (a map counts keys and values).
    Container { elements: u64 },
}

/// Decodes the head at the start of `buf`: what it is and its length in
/// bytes; `None` when `buf` ends inside the head.
fn head(buf: &[u8], at: usize) -> Result<Option<(Head, usize)>, MsgpackError> {
    let Some(&marker) = buf.first() else {
        return Ok(None);
    };
    let be = |n: usize| -> Option<u64> {
        let bytes = buf.get(1..1 + n)?;
        Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    let scalar = |size: usize, payload: usize| Some((Head::Scalar { payload }, size));
    let sized = |n: usize, extra: usize| -> Option<(Head, usize)> {
        be(n).map(|len| {
            (
                Head::Scalar {
                    payload: len as usize + extra,
                },
                1 + n,
            )
        })
    };
    let container = |n: usize, per: u64| -> Option<(Head, usize)> {
        be(n).map(|len| {
            (
                Head::Container {
                    elements: len * per,
                },
                1 + n,
            )
        })
    };
    Ok(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => scalar(1, 0),
        0x80..=0x8f => Some((
            Head::Container {
                elements: u64::from(marker & 0x0f) * 2,
            },
            1,
        )),
        0x90..=0x9f => Some((
            Head::Container {
                elements: u64::from(marker & 0x0f),
            },
            1,
        )),
        0xa0..=0xbf => scalar(1, usize::from(marker & 0x1f)),
        0xc1 => return Err(MsgpackError::Invalid { at }),
        0xc4 => sized(1, 0),
        0xc5 => sized(2, 0),
        0xc6 => sized(4, 0),
        0xc7 => sized(1, 1),
        0xc8 => sized(2, 1),
        0xc9 => sized(4, 1),
        0xca => scalar(1, 4),
        0xcb => scalar(1, 8),
        0xcc | 0xd0 => scalar(1, 1),
        0xcd | 0xd1 => scalar(1, 2),
        0xce | 0xd2 => scalar(1, 4),
        0xcf | 0xd3 => scalar(1, 8),
        0xd4 => scalar(1, 2),
        0xd5 => scalar(1, 3),
        0xd6 => scalar(1, 5),
        0xd7 => scalar(1, 9),
        0xd8 => scalar(1, 17),
        0xd9 => sized(1, 0),
        0xda => sized(2, 0),
        0xdb => sized(4, 0),
        0xdc => container(2, 1),
        0xdd => container(4, 1),
        0xde => container(2, 2),
        0xdf => container(4, 2),
    })
}

/// The length of the first complete object in `buf`; `Ok(None)` when
/// `buf` holds only the beginning of one. Fails as soon as the declared
/// lengths pass `max` bytes (each value takes at least one byte), before
/// any of it has arrived: such a stream cannot be resynchronised.
///
/// Scans from the start of `buf` every call: a stream reader that calls
/// it again as more of the same object arrives should keep an
/// [`ObjectScanner`] instead, which resumes where it stopped.
///
/// ```
/// use cowlogd_parsers::fluent::msgpack::object_len;
/// // ["tag", 1700000000, {"log": "hi"}] and the start of the next one.
/// let stream = b"\x93\xa3tag\xce\x65\x53\xf1\x00\x81\xa3log\xa2hi\x93";
/// assert_eq!(object_len(stream, 1024), Ok(Some(18)));
/// assert_eq!(object_len(&stream[..10], 1024), Ok(None));
/// assert!(object_len(b"\xdd\xff\xff\xff\xff", 1024).is_err());
/// ```
///
/// # Errors
/// [`MsgpackError::Invalid`] at byte `0xc1`, [`MsgpackError::TooLarge`] past `max`.
pub fn object_len(buf: &[u8], max: usize) -> Result<Option<usize>, MsgpackError> {
    ObjectScanner::default().scan(buf, max)
}

/// Finds where an object ends in a stream that arrives piece by piece,
/// keeping its place between calls: each byte of an object is looked at
/// once however finely the object is trickled (a rescan from its first
/// byte after every read would cost the square of its size).
///
/// The caller passes the same buffer, grown, until the scanner reports the
/// object's length; then it drops those bytes and the scanner starts on
/// the next object.
///
/// ```
/// use cowlogd_parsers::fluent::msgpack::ObjectScanner;
/// // ["tag", 1700000000, {"log": "hi"}], in two pieces.
/// let object = b"\x93\xa3tag\xce\x65\x53\xf1\x00\x81\xa3log\xa2hi";
/// let mut scanner = ObjectScanner::default();
/// assert_eq!(scanner.scan(&object[..10], 1024), Ok(None));
/// assert_eq!(scanner.scan(object, 1024), Ok(Some(18)));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ObjectScanner {
    /// Where the next value's head starts.
    pos: usize,
    /// Values still to read, the one at `pos` included.
    pending: u64,
}

impl Default for ObjectScanner {
    fn default() -> ObjectScanner {
        ObjectScanner { pos: 0, pending: 1 }
    }
}

impl ObjectScanner {
    /// Goes on scanning the object at the start of `buf` (the bytes of
    /// earlier calls, with more after them): its length once complete,
    /// after which the scanner is ready for the next object; `Ok(None)`
    /// while it is not.
    ///
    /// # Errors
    /// [`MsgpackError::Invalid`] at byte `0xc1`, [`MsgpackError::TooLarge`]
    /// past `max`; the stream cannot be followed past either.
    pub fn scan(&mut self, buf: &[u8], max: usize) -> Result<Option<usize>, MsgpackError> {
        while self.pending > 0 {
            let pos = self.pos;
            // Each pending value takes at least a byte.
            if (pos as u64).saturating_add(self.pending) > max as u64 {
                return Err(MsgpackError::TooLarge { max });
            }
            let Some((head, size)) = head(&buf[pos.min(buf.len())..], pos)? else {
                return Ok(None);
            };
            match head {
                Head::Scalar { payload } => {
                    let end = pos.saturating_add(size).saturating_add(payload);
                    if end > max {
                        return Err(MsgpackError::TooLarge { max });
                    }
                    if end > buf.len() {
                        // The head stays unread: its payload is not all here.
                        return Ok(None);
                    }
                    self.pos = end;
                }
                Head::Container { elements } => {
                    self.pos = pos + size;
                    self.pending = self.pending.saturating_add(elements);
                }
            }
            self.pending -= 1;
        }
        let len = self.pos;
        *self = ObjectScanner::default();
        Ok(Some(len))
    }
}

/// Whether `marker` starts a map (fixmap, map 16, map 32).
pub(super) fn is_map_marker(marker: u8) -> bool {
    matches!(marker, 0x80..=0x8f | 0xde | 0xdf)
}

/// Reads values one after another from a complete object.
///
/// ```
/// use cowlogd_parsers::fluent::msgpack::{Reader, Value};
/// let mut reader = Reader::new(b"\x92\xa3tag\x2a");
/// assert_eq!(reader.value(), Ok(Value::Array(2)));
/// assert_eq!(reader.str("tag"), Ok(&b"tag"[..]));
/// assert_eq!(reader.value(), Ok(Value::Int(42)));
/// assert!(reader.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The offset of the next value.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Goes back to `position` (one this reader gave).
    pub(super) fn rewind(&mut self, position: usize) {
        self.pos = position.min(self.buf.len());
    }

    /// The next value's head (a container's elements follow it).
    ///
    /// # Errors
    /// Truncated or invalid input.
    pub fn value(&mut self) -> Result<Value<'a>, MsgpackError> {
        let rest = &self.buf[self.pos..];
        let (head, size) = head(rest, self.pos)?.ok_or(MsgpackError::Truncated)?;
        let marker = rest[0];
        let value = match head {
            Head::Container { elements } => {
                self.pos += size;
                // A map's elements are its keys and values.
                return Ok(if is_map_marker(marker) {
                    Value::Map((elements / 2) as u32)
                } else {
                    Value::Array(elements as u32)
                });
            }
            Head::Scalar { payload } => {
                let data = rest
                    .get(size..size.saturating_add(payload))
                    .ok_or(MsgpackError::Truncated)?;
                let int = |bytes: &[u8]| bytes.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
                let value = match marker {
                    0x00..=0x7f => Value::Int(i64::from(marker)),
                    0xe0..=0xff => Value::Int(i64::from(marker as i8)),
                    0xc0 => Value::Nil,
                    0xc2 => Value::Bool(false),
                    0xc3 => Value::Bool(true),
                    0xa0..=0xbf | 0xd9..=0xdb => Value::Str(data),
                    0xc4..=0xc6 => Value::Bin(data),
                    0xc7..=0xc9 | 0xd4..=0xd8 => Value::Ext(data[0] as i8, &data[1..]),
                    0xca => Value::Float(f64::from(f32::from_bits(int(data) as u32))),
                    0xcb => Value::Float(f64::from_bits(int(data))),
                    0xcc..=0xcf => {
                        let n = int(data);
                        i64::try_from(n).map_or(Value::Uint(n), Value::Int)
                    }
                    0xd0 => Value::Int(i64::from(data[0] as i8)),
                    0xd1 => Value::Int(i64::from(int(data) as u16 as i16)),
                    0xd2 => Value::Int(i64::from(int(data) as u32 as i32)),
                    _ => Value::Int(int(data) as i64),
                };
                self.pos += size + payload;
                value
            }
        };
        Ok(value)
    }

    /// A string (`str` or `bin`); `what` names it in the error.
    ///
    /// # Errors
    /// Another type, or truncated input.
    pub fn str(&mut self, what: &'static str) -> Result<&'a [u8], MsgpackError> {
        let at = self.pos;
        match self.value()? {
            Value::Str(s) | Value::Bin(s) => Ok(s),
            _ => Err(MsgpackError::WrongType { expected: what, at }),
        }
    }

    /// Skips one whole value (a container with its elements) and returns
    /// its bytes.
    ///
    /// # Errors
    /// Truncated or invalid input.
    pub fn skip(&mut self) -> Result<&'a [u8], MsgpackError> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let len = object_len(rest, rest.len())
            .map_err(|e| match e {
                MsgpackError::TooLarge { .. } => MsgpackError::Truncated,
                other => other,
            })?
            .ok_or(MsgpackError::Truncated)?;
        self.pos += len;
        Ok(&rest[..len])
    }
}

/// Appends `s` as a MessagePack string in its shortest form (fixstr, str8,
/// str16 or str32), as fluentd and fluent-logger-golang write them; the
/// one writer for Forward acks, the load generator and the tests.
///
/// ```
/// use cowlogd_parsers::fluent::msgpack::write_str;
/// let mut out = Vec::new();
/// write_str(&mut out, b"ack");
/// write_str(&mut out, &[b'x'; 40]);
/// assert_eq!(&out[..6], b"\xa3ack\xd9\x28");
/// assert_eq!(out.len(), 4 + 2 + 40);
/// ```
///
/// Strings of 4 GiB or more do not exist in MessagePack; such an `s` is
/// written cut at `u32::MAX` bytes.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(u32::MAX as usize)];
    match s.len() {
        n if n < 32 => out.push(0xa0 | n as u8),
        n if n < 256 => out.extend([0xd9, n as u8]),
        n if n < 65_536 => {
            out.push(0xda);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(0xdb);
            out.extend((n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s);
}

/// Appends one whole value as JSON text: strings (and `bin`) as JSON
/// strings with invalid UTF-8 replaced, maps with non-string keys keyed by
/// their JSON text, extensions as `null`. Nesting past `max_depth` is
/// written as `null`.
///
/// ```
/// use cowlogd_parsers::fluent::msgpack::{Reader, write_json};
/// let mut out = Vec::new();
/// write_json(&mut Reader::new(b"\x82\xa1a\x92\x01\xc3\xa1b\xa2x\""), &mut out, 8).unwrap();
/// assert_eq!(out, br#"{"a":[1,true],"b":"x\""}"#);
/// ```
///
/// # Errors
/// Truncated or invalid input.
pub fn write_json(
    reader: &mut Reader<'_>,
    out: &mut Vec<u8>,
    max_depth: usize,
) -> Result<(), MsgpackError> {
    use std::io::Write as _;
    let start = reader.pos;
    let value = reader.value()?;
    match value {
        Value::Nil | Value::Ext(..) => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Uint(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Value::Float(_) => out.extend_from_slice(b"null"),
        Value::Str(s) | Value::Bin(s) => write_json_string(out, s, InvalidUtf8::Replace),
        Value::Array(_) | Value::Map(_) if max_depth == 0 => {
            reader.rewind(start);
            reader.skip()?;
            out.extend_from_slice(b"null");
        }
        Value::Array(n) | Value::Map(n) => {
            let is_map = matches!(value, Value::Map(_));
            out.push(if is_map { b'{' } else { b'[' });
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                if is_map {
                    write_json_key(reader, out, max_depth - 1)?;
                    out.push(b':');
                }
                write_json(reader, out, max_depth - 1)?;
            }
            out.push(if is_map { b'}' } else { b']' });
        }
    }
    Ok(())
}

/// A map key as a JSON string: a string as it is, any other value as its
/// JSON text.
fn write_json_key(
    reader: &mut Reader<'_>,
    out: &mut Vec<u8>,
    max_depth: usize,
) -> Result<(), MsgpackError> {
    let key_at = reader.pos;
    match reader.value()? {
        Value::Str(k) | Value::Bin(k) => write_json_string(out, k, InvalidUtf8::Replace),
        _ => {
            reader.rewind(key_at);
            let mut key = Vec::new();
            write_json(reader, &mut key, max_depth)?;
            write_json_string(out, &key, InvalidUtf8::Replace);
        }
    }
    Ok(())
}
