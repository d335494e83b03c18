//! GELF JSON → [`GelfMessage`], as leniently as Graylog accepts it.
//!
//! Strings borrow from the input when they hold no escapes. Values of
//! additional fields are kept as raw JSON (numbers, objects, arrays) or as
//! strings, so a forwarder can write them back unchanged; `null` values are
//! skipped. Field names are kept whatever they contain.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::record::Timestamp;

/// Why a GELF payload was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GelfError {
    /// Occurs when the payload is not a JSON object.
    #[error("not a JSON object: {reason} at line {line} column {column}")]
    Json {
        /// serde_json's description.
        reason: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },
    /// Occurs when `short_message` is missing or `null`.
    #[error("no short_message")]
    MissingShortMessage,
}

impl GelfError {
    /// Every [`GelfError::reason`], for metrics registered before the
    /// first error.
    ///
    /// ```
    /// use cowlogd_parsers::gelf::{GelfError, parse_gelf};
    /// for payload in [&b"not json"[..], br#"{"host":"h"}"#] {
    ///     let error = parse_gelf(payload).unwrap_err();
    ///     assert!(GelfError::REASONS.contains(&error.reason()));
    /// }
    /// ```
    pub const REASONS: [&'static str; 2] = ["invalid_json", "missing_short_message"];

    /// A short, fixed reason for metrics labels (one of
    /// [`GelfError::REASONS`]).
    ///
    /// ```
    /// use cowlogd_parsers::gelf::parse_gelf;
    /// assert_eq!(parse_gelf(br#"{"host":"h"}"#).unwrap_err().reason(), "missing_short_message");
    /// ```
    pub fn reason(&self) -> &'static str {
        match self {
            GelfError::Json { .. } => "invalid_json",
            GelfError::MissingShortMessage => "missing_short_message",
        }
    }
}

/// The value of an additional field.
#[derive(Clone, Debug)]
pub enum FieldValue<'a> {
    /// A JSON string, unescaped.
    Str(Cow<'a, str>),
    /// Any other JSON value (number, bool, object, array), as its JSON text.
    Json(&'a RawValue),
}

impl PartialEq for FieldValue<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (FieldValue::Str(a), FieldValue::Str(b)) => a == b,
            (FieldValue::Json(a), FieldValue::Json(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

impl FieldValue<'_> {
    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            FieldValue::Json(_) => None,
        }
    }
}

/// An additional field: `_container_name` is stored with name
/// `container_name` (leading `_` removed, so `_id` becomes `id`, as current
/// Graylog stores it).
#[derive(Clone, Debug, PartialEq)]
pub struct GelfField<'a> {
    /// The name without its leading `_`.
    pub name: Cow<'a, str>,
    /// The value.
    pub value: FieldValue<'a>,
}

/// One GELF message. GELF 1.0's top-level `facility`, `file` and `line`
/// land in [`GelfMessage::fields`] like additional fields.
#[derive(Clone, Debug, PartialEq)]
pub struct GelfMessage<'a> {
    /// `version` as sent (`1.1`, graypy's `1.0`), if any.
    pub version: Option<Cow<'a, str>>,
    /// `host` (for Docker: the Docker host, not the container).
    pub host: Option<Cow<'a, str>>,
    /// `short_message`: one line of container output for Docker. May be
    /// blank.
    pub short_message: Cow<'a, str>,
    /// `full_message`, if any.
    pub full_message: Option<Cow<'a, str>>,
    /// `timestamp` (number or numeric string); `None` when missing, ≤ 0 or
    /// unreadable, meaning "use the receive time".
    pub timestamp: Option<Timestamp>,
    /// `level` (number or numeric string), if any.
    pub level: Option<u8>,
    /// Additional fields in the order received.
    pub fields: Vec<GelfField<'a>>,
}

impl<'a> GelfMessage<'a> {
    /// The first field named `name` (without `_`).
    ///
    /// ```
    /// let m = cowlogd_parsers::gelf::parse_gelf(br#"{"short_message":"x","_container_name":"web-1"}"#).unwrap();
    /// assert_eq!(m.field("container_name").and_then(|v| v.as_str()), Some("web-1"));
    /// ```
    pub fn field(&self, name: &str) -> Option<&FieldValue<'a>> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }

    /// The string field named `name`, if present and a string.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(FieldValue::as_str)
    }
}

/// Parses a GELF JSON payload.
///
/// ```
/// use cowlogd_parsers::gelf::parse_gelf;
/// let m = parse_gelf(br#"{"version":"1.1","host":"h","short_message":"hi","timestamp":1714557600,"level":6,"_tag":"abc"}"#).unwrap();
/// assert_eq!(m.short_message, "hi");
/// assert_eq!(m.timestamp.map(|t| t.secs), Some(1714557600));
/// assert_eq!(m.str_field("tag"), Some("abc"));
/// ```
///
/// # Errors
/// [`GelfError::Json`] when the payload is not a JSON object (this includes
/// invalid UTF-8 inside strings; see [`parse_gelf_lossy`]),
/// [`GelfError::MissingShortMessage`] without `short_message`.
pub fn parse_gelf(json: &[u8]) -> Result<GelfMessage<'_>, GelfError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = de
        .deserialize_map(MessageVisitor)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| GelfError::Json {
            reason: e.to_string(),
            line: e.line(),
            column: e.column(),
        })?;
    parsed.ok_or(GelfError::MissingShortMessage)
}

/// [`parse_gelf`], but a payload with invalid UTF-8 is first repaired
/// (each bad sequence → U+FFFD) into `scratch` and parsed from there, so a
/// sender's bad bytes cost the bytes, not the message.
///
/// ```
/// use cowlogd_parsers::gelf::parse_gelf_lossy;
/// let mut scratch = String::new();
/// let m = parse_gelf_lossy(b"{\"short_message\":\"caf\xe9\"}", &mut scratch).unwrap();
/// assert_eq!(m.short_message, "caf\u{fffd}");
/// ```
///
/// # Errors
/// As [`parse_gelf`].
pub fn parse_gelf_lossy<'a>(
    json: &'a [u8],
    scratch: &'a mut String,
) -> Result<GelfMessage<'a>, GelfError> {
    match parse_gelf(json) {
        Err(GelfError::Json { .. }) if std::str::from_utf8(json).is_err() => {
            *scratch = String::from_utf8_lossy(json).into_owned();
            parse_gelf(scratch.as_bytes())
        }
        result => result,
    }
}

struct MessageVisitor;

/// `None` = valid object without `short_message`.
type Parsed<'a> = Option<GelfMessage<'a>>;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Parsed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a GELF JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
        let mut version = None;
        let mut host = None;
        let mut short_message = None;
        let mut full_message = None;
        let mut timestamp = None;
        let mut level = None;
        let mut fields = Vec::new();
        while let Some(key) = map.next_key_seed(CowStr)? {
            let raw: &'de RawValue = map.next_value()?;
            if raw.get() == "null" {
                continue;
            }
            match key.as_ref() {
                "version" => version = Some(text(raw)?),
                "host" => host = Some(text(raw)?),
                "short_message" => short_message = Some(text(raw)?),
                "full_message" => full_message = Some(text(raw)?),
                "timestamp" => timestamp = json_timestamp(raw),
                "level" => {
                    level = number(raw)
                        .filter(|l| l.fract() == 0.0 && (0.0..=255.0).contains(l))
                        .map(|l| l as u8)
                }
                _ => {
                    let name = match key {
                        Cow::Borrowed(k) => Cow::Borrowed(k.strip_prefix('_').unwrap_or(k)),
                        Cow::Owned(k) => Cow::Owned(k.strip_prefix('_').unwrap_or(&k).to_owned()),
                    };
                    let value = if raw.get().starts_with('"') {
                        FieldValue::Str(text(raw)?)
                    } else {
                        FieldValue::Json(raw)
                    };
                    fields.push(GelfField { name, value });
                }
            }
        }
        Ok(short_message.map(|short_message| GelfMessage {
            version,
            host,
            short_message,
            full_message,
            timestamp,
            level,
            fields,
        }))
    }
}

/// A JSON string as text, borrowed when it has no escapes; any other value
/// as its JSON text (`"host":42` → `42`).
fn text<'de, E: de::Error>(raw: &'de RawValue) -> Result<Cow<'de, str>, E> {
    let json = raw.get();
    match json.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(Cow::Borrowed(inner)),
        Some(_) => serde_json::from_str::<String>(json)
            .map(Cow::Owned)
            .map_err(E::custom),
        None => Ok(Cow::Borrowed(json)),
    }
}

/// The text of a JSON number, or of a string holding one (`"1714557600.123"`).
fn number_text(raw: &RawValue) -> &str {
    let json = raw.get();
    json.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(json)
        .trim()
}

fn number(raw: &RawValue) -> Option<f64> {
    number_text(raw).parse::<f64>().ok()
}

/// A GELF timestamp. Plain decimals are read digit by digit so that
/// `1714557600.123` is exactly 123 ms (through `f64` it would be
/// 122.99999 ms); other forms (exponents) go through `f64`.
fn json_timestamp(raw: &RawValue) -> Option<Timestamp> {
    let text = number_text(raw);
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let plain = !whole.is_empty()
        && whole.len() <= 12
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        return text.parse::<f64>().ok().and_then(Timestamp::from_f64);
    }
    let secs: i64 = whole.parse().ok()?;
    let digits = &fraction.as_bytes()[..fraction.len().min(9)];
    let nanos = digits
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
        * 10u32.pow(9 - digits.len() as u32);
    (secs > 0 || nanos > 0).then(|| Timestamp::new(secs, nanos))
}

/// Deserializes a key, borrowing when the input allows.
struct CowStr;

impl<'de> DeserializeSeed<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}
