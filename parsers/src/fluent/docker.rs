//! Docker's fluentd records as GELF messages, so that the rest of cowlogd
//! (normalizing, routes, Redis entries, channel payloads, forwarding)
//! treats a line the same whichever driver brought it; and the
//! reassembly of the lines Docker splits into partial messages.
//!
//! Docker's driver sends, per line, a map of strings: `container_id`,
//! `container_name` (with a leading `/`), `source` (`stdout`/`stderr`),
//! `log` (the line without its newline), the `labels`/`env` extras, and for
//! a line longer than 16 KiB `partial_message`, `partial_id`,
//! `partial_ordinal` (from 1) and `partial_last`.

use std::borrow::Cow;

use super::forward::{FieldRef, record_fields};
use super::msgpack::{MsgpackError, Reader, write_json};
use crate::gelf::{FieldValue, GelfField, GelfMessage};
use crate::record::Timestamp;

/// Nesting followed when a non-string field value is written as JSON.
const JSON_DEPTH: usize = 16;

/// Record fields that name the message text, in order of preference:
/// Docker and Fluent Bit's tail write `log`, most other senders `message`.
const TEXT_FIELDS: [&[u8]; 3] = [b"log", b"message", b"msg"];

/// Where a part of a line Docker split belongs: `partial_message = "true"`
/// with an id and an ordinal.
///
/// ```
/// use cowlogd_parsers::Timestamp;
/// use cowlogd_parsers::fluent::docker::to_gelf;
/// // {"log": "a", "partial_message": "true", "partial_id": "p1", "partial_ordinal": "2", "partial_last": "true"}
/// let record = b"\x85\xa3log\xa1a\xafpartial_message\xa4true\xaapartial_id\xa2p1\xafpartial_ordinal\xa12\xacpartial_last\xa4true";
/// let part = to_gelf(b"t", Timestamp::default(), record, None).unwrap().partial.unwrap();
/// assert_eq!((part.id, part.ordinal, part.last, part.text), (&b"p1"[..], 2, true, &b"a"[..]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialPart<'a> {
    /// `partial_id`.
    pub id: &'a [u8],
    /// `partial_ordinal`, from 1.
    pub ordinal: u64,
    /// `partial_last = "true"`.
    pub last: bool,
    /// This part's text (`log`).
    pub text: &'a [u8],
}

/// A Forward entry as the GELF message Docker's gelf driver would have sent
/// for the same line: `short_message` the `log` field (or `text`, a
/// reassembled line), `level` 3 for `source = "stderr"` and 6 for stdout,
/// `_container_name` without its leading `/`, every other field (but the
/// `partial_*` ones) as an additional field, and the tag as `_tag` unless
/// the record has one. Invalid UTF-8 becomes U+FFFD, as Docker's JSON
/// encoder writes it; non-string values become their JSON text.
///
/// ```
/// use cowlogd_parsers::Timestamp;
/// use cowlogd_parsers::fluent::docker::to_gelf;
/// // {"container_name": "/mailcowdockerized-postfix-mailcow-1", "source": "stdout", "log": "hi"}
/// let record = b"\x83\xaecontainer_name\xd9\x24/mailcowdockerized-postfix-mailcow-1\xa6source\xa6stdout\xa3log\xa2hi";
/// let gelf = to_gelf(b"0123456789ab", Timestamp::new(1700000000, 0), record, None).unwrap().gelf;
/// assert_eq!(gelf.short_message, "hi");
/// assert_eq!(gelf.level, Some(6));
/// assert_eq!(gelf.str_field("container_name"), Some("mailcowdockerized-postfix-mailcow-1"));
/// assert_eq!(gelf.str_field("tag"), Some("0123456789ab"));
/// ```
///
/// # Errors
/// A record that is not a map of fields.
pub fn to_gelf<'a>(
    tag: &'a [u8],
    time: Timestamp,
    record: &'a [u8],
    text: Option<&'a [u8]>,
) -> Result<DockerEntry<'a>, MsgpackError> {
    // Docker's records have four fields, plus labels and env extras.
    let mut fields = Vec::with_capacity(8);
    // The best text field so far: its rank in TEXT_FIELDS and value.
    let mut found_text: Option<(usize, &'a [u8])> = None;
    let mut level = None;
    let mut has_tag = false;
    let mut partial = PartialFields::default();
    for field in record_fields(record) {
        let (key, value) = field?;
        if key.starts_with(b"partial_") {
            if let FieldRef::Str(value) = value {
                partial.take(key, value);
            }
            continue;
        }
        let value = match value {
            FieldRef::Str(value) => {
                if let Some(rank) = TEXT_FIELDS.iter().position(|t| *t == key)
                    && found_text.is_none_or(|(best, _)| rank < best)
                {
                    found_text = Some((rank, value));
                }
                let value = match key {
                    b"container_name" => value.strip_prefix(b"/").unwrap_or(value),
                    b"source" => {
                        level = Some(if value == b"stderr" { 3 } else { 6 });
                        value
                    }
                    b"tag" => {
                        has_tag = true;
                        value
                    }
                    _ => value,
                };
                lossy(value)
            }
            FieldRef::Other(raw) => json_text(raw)?,
        };
        fields.push(GelfField {
            name: lossy(key),
            value: FieldValue::Str(value),
        });
    }
    // The text is the message, not also a field.
    if let Some((rank, _)) = found_text {
        let name = TEXT_FIELDS[rank];
        fields.retain(|f| f.name.as_bytes() != name);
    }
    if !has_tag {
        fields.push(GelfField {
            name: Cow::Borrowed("tag"),
            value: FieldValue::Str(lossy(tag)),
        });
    }
    let short_message = match (text, found_text) {
        (Some(text), _) => lossy(text),
        (None, Some((_, text))) => lossy(text),
        // No text field: the record itself, as JSON, so the line is not blank.
        (None, None) => json_text(record)?,
    };
    let text = found_text.map_or(&b""[..], |(_, text)| text);
    Ok(DockerEntry {
        gelf: GelfMessage {
            version: None,
            host: None,
            short_message,
            full_message: None,
            timestamp: Some(time),
            level,
            fields,
        },
        partial: partial.part(text),
    })
}

/// An entry as a GELF message, and its place in a split line if it is a
/// part of one.
#[derive(Debug)]
pub struct DockerEntry<'a> {
    /// The message (for a part: the part's text, unless given another).
    pub gelf: GelfMessage<'a>,
    /// The part, for a line Docker split.
    pub partial: Option<PartialPart<'a>>,
}

/// The `partial_*` fields of a record, as read.
#[derive(Default)]
struct PartialFields<'a> {
    partial: bool,
    id: Option<&'a [u8]>,
    ordinal: Option<u64>,
    last: bool,
}

impl<'a> PartialFields<'a> {
    fn take(&mut self, key: &[u8], value: &'a [u8]) {
        match key {
            b"partial_message" => self.partial = value == b"true",
            b"partial_id" => self.id = Some(value),
            b"partial_ordinal" => {
                self.ordinal = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            b"partial_last" => self.last = value == b"true",
            _ => {}
        }
    }

    fn part(&self, text: &'a [u8]) -> Option<PartialPart<'a>> {
        match (self.partial, self.id, self.ordinal) {
            (true, Some(id), Some(ordinal)) => Some(PartialPart {
                id,
                ordinal,
                last: self.last,
                text,
            }),
            _ => None,
        }
    }
}

/// A MessagePack value as its JSON text.
fn json_text(raw: &[u8]) -> Result<Cow<'static, str>, MsgpackError> {
    let mut json = Vec::new();
    write_json(&mut Reader::new(raw), &mut json, JSON_DEPTH)?;
    // The writer replaced invalid UTF-8; this never copies.
    Ok(Cow::Owned(String::from_utf8(json).unwrap_or_else(|e| {
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    })))
}

/// Bytes as text without copying when they are UTF-8 (the common case;
/// `from_utf8` checks it much faster than `from_utf8_lossy` walks it).
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Bounds for [`PartialAssembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialLimits {
    /// Split lines being reassembled at once; a new one evicts the oldest.
    pub max_pending: usize,
    /// Bytes a line is reassembled to; the rest is discarded (the caller
    /// cuts and marks a line over its own limit).
    pub max_line_bytes: usize,
    /// Deadline for a line's last part, from its first, in ms.
    pub timeout_ms: u64,
}

/// Why a part or a pending line was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialDrop {
    /// A part came out of order (one was lost): the line is dropped.
    Gap,
    /// Too many split lines at once: the oldest was dropped.
    TooManyPending,
    /// The last part did not come in time.
    Expired,
}

/// What [`PartialAssembler::add`] made of a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartialOutcome {
    /// Kept; the line is not complete yet.
    Pending,
    /// A part seen before (a sender's retry): ignored.
    Duplicate,
    /// A part of a line that is lost (see the [`PartialDrop`] given with
    /// it): ignored.
    Dropped,
    /// The line is complete: its text, cut after `max_line_bytes + 1`
    /// bytes when longer.
    Complete {
        /// The whole line, up to `max_line_bytes + 1` bytes.
        text: Vec<u8>,
    },
}

struct Pending {
    id: Vec<u8>,
    next_ordinal: u64,
    text: Vec<u8>,
    started_ms: u64,
}

/// Reassembles Docker's partial messages by `partial_id`, in ordinal
/// order, within [`PartialLimits`]. Memory: at most `max_pending` lines of
/// `max_line_bytes + 1` bytes.
///
/// ```
/// use cowlogd_parsers::fluent::docker::{PartialAssembler, PartialLimits, PartialOutcome};
/// let mut parts = PartialAssembler::new(PartialLimits { max_pending: 4, max_line_bytes: 1024, timeout_ms: 5000 });
/// assert_eq!(parts.add(b"p1", 1, false, b"hello ", 0), (PartialOutcome::Pending, None));
/// assert_eq!(parts.add(b"p1", 2, true, b"world", 1), (PartialOutcome::Complete { text: b"hello world".to_vec() }, None));
/// ```
pub struct PartialAssembler {
    limits: PartialLimits,
    pending: Vec<Pending>,
    /// The last line dropped: its later parts are dropped without counting
    /// the line again.
    lost: Vec<u8>,
}

impl PartialAssembler {
    /// An empty assembler.
    pub fn new(limits: PartialLimits) -> PartialAssembler {
        PartialAssembler {
            limits,
            pending: Vec::new(),
            lost: Vec::new(),
        }
    }

    /// Lines being reassembled.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds one part at `now_ms`; also says if a line was dropped for it.
    pub fn add(
        &mut self,
        id: &[u8],
        ordinal: u64,
        last: bool,
        text: &[u8],
        now_ms: u64,
    ) -> (PartialOutcome, Option<PartialDrop>) {
        let cap = self.limits.max_line_bytes.saturating_add(1);
        let Some(index) = self.pending.iter().position(|p| p.id == id) else {
            if ordinal != 1 {
                // Its beginning was lost (or dropped before): so is the line.
                if self.lost == id {
                    return (PartialOutcome::Dropped, None);
                }
                self.lost = id.to_vec();
                return (PartialOutcome::Dropped, Some(PartialDrop::Gap));
            }
            let mut line = text[..text.len().min(cap)].to_vec();
            if last {
                line.shrink_to_fit();
                return (PartialOutcome::Complete { text: line }, None);
            }
            let mut dropped = None;
            if self.pending.len() >= self.limits.max_pending.max(1) {
                self.lost = self.pending.remove(0).id;
                dropped = Some(PartialDrop::TooManyPending);
            }
            self.pending.push(Pending {
                id: id.to_vec(),
                next_ordinal: 2,
                text: std::mem::take(&mut line),
                started_ms: now_ms,
            });
            return (PartialOutcome::Pending, dropped);
        };
        let pending = &mut self.pending[index];
        if ordinal < pending.next_ordinal {
            return (PartialOutcome::Duplicate, None);
        }
        if ordinal > pending.next_ordinal {
            self.lost = self.pending.remove(index).id;
            return (PartialOutcome::Dropped, Some(PartialDrop::Gap));
        }
        let room = cap.saturating_sub(pending.text.len());
        pending
            .text
            .extend_from_slice(&text[..text.len().min(room)]);
        pending.next_ordinal += 1;
        if last {
            let done = self.pending.remove(index);
            return (PartialOutcome::Complete { text: done.text }, None);
        }
        (PartialOutcome::Pending, None)
    }

    /// Drops the lines whose deadline passed; how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.pending.len();
        let timeout = self.limits.timeout_ms;
        self.pending
            .retain(|p| now_ms.saturating_sub(p.started_ms) < timeout);
        before - self.pending.len()
    }
}
