//! The disk queue's file format: segment files of checksummed records,
//! each record one read cycle's Redis work.
//!
//! A segment is a 16-byte header (`cowlogdQ`, a format version, four
//! reserved bytes) and records back to back. A record is
//! `[payload length: u32 LE][CRC-32 of the payload: u32 LE][payload]`;
//! the payload holds the sequence number of its first message, when it
//! was appended, its messages (list key, entry, channel payload, list
//! cap, as ranges into one data blob) and the Fluent chunk ids it answers.
//!
//! Reading is defensive: the bytes on disk may have been cut by a crash
//! mid-write or damaged since. [`next_record`] tells a torn tail (the
//! file ends inside a record) from a corrupt record whose length is still
//! believable (skipped) and from a length nothing can follow (the rest of
//! the segment is unreadable); [`decode_payload`] checks every range
//! before anything is read through it. The checksum is CRC-32 (IEEE, by
//! `crc32fast`, already used for gzip): it catches torn and flipped bytes,
//! which is its job here; nothing on disk is trusted as an attacker's.

use std::ops::Range;

/// The first eight bytes of every segment.
///
/// ```
/// assert_eq!(cowlogd_parsers::segment::MAGIC, b"cowlogdQ");
/// ```
pub const MAGIC: &[u8; 8] = b"cowlogdQ";

/// The format this build writes and the newest it reads.
///
/// ```
/// assert_eq!(cowlogd_parsers::segment::VERSION, 1);
/// ```
pub const VERSION: u32 = 1;

/// Bytes of the segment header.
///
/// ```
/// assert_eq!(cowlogd_parsers::segment::HEADER_LEN, 16);
/// ```
pub const HEADER_LEN: usize = 16;

/// Bytes of a record's length and checksum.
///
/// ```
/// assert_eq!(cowlogd_parsers::segment::RECORD_OVERHEAD, 8);
/// ```
pub const RECORD_OVERHEAD: usize = 8;

/// Bytes of the payload before its op table.
const PAYLOAD_FIXED: usize = 8 + 8 + 4 + 4 + 4;
/// Bytes of one op in the table.
const OP_LEN: usize = 7 * 4;
/// The publish length that means "not published".
const NO_PUBLISH: u32 = u32::MAX;

/// Why a segment or a record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// The file is shorter than a header.
    #[error("shorter than a segment header")]
    ShortHeader,
    /// The file does not start with [`MAGIC`].
    #[error("not a cowlogd queue segment (bad magic)")]
    BadMagic,
    /// Written by a newer cowlogd: this build cannot know its layout.
    #[error(
        "segment format version {found} is newer than this build reads ({VERSION}); run the cowlogd that wrote it, or move the directory away"
    )]
    NewerVersion {
        /// The version in the header.
        found: u32,
    },
    /// A payload whose ranges or counts do not fit in it.
    #[error("record payload inconsistent: {0}")]
    BadPayload(&'static str),
}

/// Writes a segment header.
///
/// ```
/// let mut out = Vec::new();
/// cowlogd_parsers::segment::write_header(&mut out);
/// assert_eq!(&out[..8], b"cowlogdQ");
/// assert_eq!(out.len(), 16);
/// ```
pub fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Checks a segment header.
///
/// # Errors
/// A short file, a bad magic, or a version newer than [`VERSION`].
///
/// ```
/// use cowlogd_parsers::segment::{SegmentError, read_header, write_header};
/// let mut header = Vec::new();
/// write_header(&mut header);
/// assert_eq!(read_header(&header), Ok(()));
/// header[8] = 2;
/// assert_eq!(read_header(&header), Err(SegmentError::NewerVersion { found: 2 }));
/// ```
pub fn read_header(bytes: &[u8]) -> Result<(), SegmentError> {
    let header = bytes.get(..HEADER_LEN).ok_or(SegmentError::ShortHeader)?;
    if &header[..8] != MAGIC {
        return Err(SegmentError::BadMagic);
    }
    let version = u32_at(header, 8).ok_or(SegmentError::ShortHeader)?;
    if version > VERSION {
        return Err(SegmentError::NewerVersion { found: version });
    }
    Ok(())
}

/// One message as stored: ranges into the record's data blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOp {
    /// The list key.
    pub key: Range<usize>,
    /// The list entry.
    pub entry: Range<usize>,
    /// The channel payload, when the message is published.
    pub publish: Option<Range<usize>>,
    /// Entries the list keeps.
    pub list_cap: u32,
}

/// What one record holds, for [`encode_record`].
#[derive(Debug, Clone, Copy)]
pub struct RecordParts<'a> {
    /// The sequence number of its first message (the others follow).
    pub first_seq: u64,
    /// When it was appended, in ms since the Unix epoch.
    pub appended_ms: u64,
    /// The messages.
    pub ops: &'a [StoredOp],
    /// The bytes the ranges point into.
    pub data: &'a [u8],
    /// Fluent chunk ids this record answers (at most 255 bytes each).
    pub chunks: &'a [&'a [u8]],
}

/// Appends one record (length, checksum, payload) to `out`.
///
/// # Errors
/// When a range points outside `data`, a chunk id is longer than 255
/// bytes or the payload would pass 4 GiB; nothing is appended then.
///
/// ```
/// use cowlogd_parsers::segment::{RecordParts, StoredOp, encode_record, next_record, Next};
/// let data = b"POSTFIX_MAILLOG{\"message\":\"hi\"}\n";
/// let ops = [StoredOp { key: 0..15, entry: 15..data.len(), publish: None, list_cap: 10000 }];
/// let mut out = Vec::new();
/// encode_record(&mut out, &RecordParts { first_seq: 7, appended_ms: 0, ops: &ops, data, chunks: &[] }).unwrap();
/// assert!(matches!(next_record(&out, 1 << 20), Next::Record { len, .. } if len == out.len()));
/// ```
pub fn encode_record(out: &mut Vec<u8>, parts: &RecordParts<'_>) -> Result<(), SegmentError> {
    let in_data = |range: &Range<usize>| range.start <= range.end && range.end <= parts.data.len();
    for op in parts.ops {
        if !in_data(&op.key) || !in_data(&op.entry) || !op.publish.as_ref().is_none_or(in_data) {
            return Err(SegmentError::BadPayload("a range outside the data"));
        }
    }
    if parts.chunks.iter().any(|chunk| chunk.len() > 255) {
        return Err(SegmentError::BadPayload("a chunk id over 255 bytes"));
    }
    let chunk_bytes: usize = parts.chunks.iter().map(|c| 1 + c.len()).sum();
    let payload_len = PAYLOAD_FIXED + parts.ops.len() * OP_LEN + chunk_bytes + parts.data.len();
    let (Ok(payload_len32), Ok(ops32), Ok(chunks32), Ok(data32)) = (
        u32::try_from(payload_len),
        u32::try_from(parts.ops.len()),
        u32::try_from(parts.chunks.len()),
        u32::try_from(parts.data.len()),
    ) else {
        return Err(SegmentError::BadPayload("over 4 GiB"));
    };
    let start = out.len();
    out.reserve(RECORD_OVERHEAD + payload_len);
    out.extend_from_slice(&payload_len32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&parts.first_seq.to_le_bytes());
    out.extend_from_slice(&parts.appended_ms.to_le_bytes());
    out.extend_from_slice(&ops32.to_le_bytes());
    out.extend_from_slice(&chunks32.to_le_bytes());
    out.extend_from_slice(&data32.to_le_bytes());
    for op in parts.ops {
        // In range of the data (checked above), so within u32.
        let (publish_start, publish_len) = op
            .publish
            .as_ref()
            .map_or((0, NO_PUBLISH), |p| (p.start as u32, p.len() as u32));
        for value in [
            op.key.start as u32,
            op.key.len() as u32,
            op.entry.start as u32,
            op.entry.len() as u32,
            publish_start,
            publish_len,
            op.list_cap,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    for chunk in parts.chunks {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(parts.data);
    let crc = crc32fast::hash(&out[start + RECORD_OVERHEAD..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What the bytes at a record boundary hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A whole record whose checksum matches: `len` bytes with the framing.
    Record {
        /// The payload, for [`decode_payload`].
        payload: &'a [u8],
        /// Bytes to the next record.
        len: usize,
    },
    /// The bytes end inside a record (or hold none): at the end of the
    /// file a crash cut it, a torn tail.
    Incomplete,
    /// A record of believable length whose checksum does not match:
    /// skipping `len` bytes reaches the next record.
    Corrupt {
        /// Bytes to skip.
        len: usize,
    },
    /// A length over `max_record` or too short for a payload: nothing
    /// after it can be found.
    Unframed,
}

/// The record at the start of `bytes`, which may be the rest of a file.
///
/// ```
/// use cowlogd_parsers::segment::{Next, next_record};
/// assert_eq!(next_record(&[5, 0, 0], 1024), Next::Incomplete);
/// assert_eq!(next_record(&[255, 255, 255, 255, 0, 0, 0, 0], 1024), Next::Unframed);
/// ```
pub fn next_record(bytes: &[u8], max_record: usize) -> Next<'_> {
    let (Some(len), Some(crc)) = (u32_at(bytes, 0), u32_at(bytes, 4)) else {
        return Next::Incomplete;
    };
    let len = len as usize;
    if len > max_record || len < PAYLOAD_FIXED {
        return Next::Unframed;
    }
    let Some(payload) = bytes.get(RECORD_OVERHEAD..RECORD_OVERHEAD + len) else {
        return Next::Incomplete;
    };
    if crc32fast::hash(payload) != crc {
        return Next::Corrupt {
            len: RECORD_OVERHEAD + len,
        };
    }
    Next::Record {
        payload,
        len: RECORD_OVERHEAD + len,
    }
}

/// A record's payload, checked: every range lies in [`Payload::data`].
#[derive(Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The sequence number of its first message.
    pub first_seq: u64,
    /// When it was appended, in ms since the Unix epoch.
    pub appended_ms: u64,
    op_table: &'a [u8],
    chunk_table: &'a [u8],
    /// The bytes the ops' ranges point into.
    pub data: &'a [u8],
}

impl<'a> Payload<'a> {
    /// Messages in the record.
    pub fn op_count(&self) -> usize {
        self.op_table.len() / OP_LEN
    }

    /// The messages, in order.
    pub fn ops(&self) -> impl Iterator<Item = StoredOp> + 'a {
        self.op_table.chunks_exact(OP_LEN).map(|op| {
            let field = |n: usize| u32_at(op, n * 4).unwrap_or(0) as usize;
            let publish = (field(5) as u32 != NO_PUBLISH).then(|| field(4)..field(4) + field(5));
            StoredOp {
                key: field(0)..field(0) + field(1),
                entry: field(2)..field(2) + field(3),
                publish,
                list_cap: field(6) as u32,
            }
        })
    }

    /// The Fluent chunk ids it answers.
    pub fn chunks(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.chunk_table;
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (chunk, tail) = tail.split_at_checked(len as usize)?;
            rest = tail;
            Some(chunk)
        })
    }
}

/// Reads a payload [`next_record`] found, checking its tables.
///
/// # Errors
/// When counts or ranges do not fit (a record written by a broken build:
/// its checksum matched).
///
/// ```
/// use cowlogd_parsers::segment::{RecordParts, StoredOp, decode_payload, encode_record, next_record, Next};
/// let data = b"KEYentry\n";
/// let ops = [StoredOp { key: 0..3, entry: 3..9, publish: Some(3..8), list_cap: 5 }];
/// let mut out = Vec::new();
/// encode_record(&mut out, &RecordParts { first_seq: 42, appended_ms: 1, ops: &ops, data, chunks: &[b"c1"] }).unwrap();
/// let Next::Record { payload, .. } = next_record(&out, 1 << 20) else { panic!() };
/// let payload = decode_payload(payload).unwrap();
/// assert_eq!(payload.first_seq, 42);
/// assert_eq!(payload.ops().collect::<Vec<_>>(), ops);
/// assert_eq!(payload.chunks().collect::<Vec<_>>(), [b"c1"]);
/// ```
pub fn decode_payload(payload: &[u8]) -> Result<Payload<'_>, SegmentError> {
    let short = SegmentError::BadPayload("shorter than its counts");
    let first_seq = u64_at(payload, 0).ok_or(short.clone())?;
    let appended_ms = u64_at(payload, 8).ok_or(short.clone())?;
    let op_count = u32_at(payload, 16).ok_or(short.clone())? as usize;
    let chunk_count = u32_at(payload, 20).ok_or(short.clone())? as usize;
    let data_len = u32_at(payload, 24).ok_or(short.clone())? as usize;
    let rest = &payload[PAYLOAD_FIXED..];
    let table_len = op_count.checked_mul(OP_LEN).ok_or(short.clone())?;
    let (op_table, rest) = rest.split_at_checked(table_len).ok_or(short.clone())?;
    let chunks_len = rest
        .len()
        .checked_sub(data_len)
        .ok_or(SegmentError::BadPayload("data longer than the record"))?;
    let (chunk_table, data) = rest.split_at(chunks_len);
    let decoded = Payload {
        first_seq,
        appended_ms,
        op_table,
        chunk_table,
        data,
    };
    if decoded.chunks().count() != chunk_count
        || decoded.chunks().map(|c| 1 + c.len()).sum::<usize>() != chunk_table.len()
    {
        return Err(SegmentError::BadPayload("chunk table does not add up"));
    }
    let in_data = |range: &Range<usize>| range.end <= data.len();
    if !decoded
        .ops()
        .all(|op| in_data(&op.key) && in_data(&op.entry) && op.publish.as_ref().is_none_or(in_data))
    {
        return Err(SegmentError::BadPayload("a range outside the data"));
    }
    if first_seq.checked_add(op_count as u64).is_none() {
        return Err(SegmentError::BadPayload("sequence numbers overflow"));
    }
    Ok(decoded)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let slice = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(slice.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(slice.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(first_seq: u64) -> Vec<u8> {
        let data = b"LOGS:aentry-a\nLOGS:bentry-b\npayload";
        let ops = [
            StoredOp {
                key: 0..6,
                entry: 6..14,
                publish: None,
                list_cap: 10,
            },
            StoredOp {
                key: 14..20,
                entry: 20..28,
                publish: Some(28..35),
                list_cap: 20,
            },
        ];
        let mut out = Vec::new();
        encode_record(
            &mut out,
            &RecordParts {
                first_seq,
                appended_ms: 99,
                ops: &ops,
                data,
                chunks: &[b"abc", b""],
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let bytes = record(5);
        let Next::Record { payload, len } = next_record(&bytes, 1 << 20) else {
            panic!("not a record");
        };
        assert_eq!(len, bytes.len());
        let payload = decode_payload(payload).unwrap();
        assert_eq!((payload.first_seq, payload.appended_ms), (5, 99));
        assert_eq!(payload.op_count(), 2);
        let ops: Vec<_> = payload.ops().collect();
        assert_eq!(&payload.data[ops[1].publish.clone().unwrap()], b"payload");
        assert_eq!(&payload.data[ops[0].key.clone()], b"LOGS:a");
        assert_eq!(ops[1].list_cap, 20);
        assert_eq!(payload.chunks().collect::<Vec<_>>(), [&b"abc"[..], b""]);
    }

    #[test]
    fn a_record_cut_anywhere_is_incomplete_and_a_flipped_byte_is_corrupt() {
        let bytes = record(1);
        for cut in 0..bytes.len() {
            assert_eq!(
                next_record(&bytes[..cut], 1 << 20),
                Next::Incomplete,
                "cut at {cut}"
            );
        }
        for at in RECORD_OVERHEAD..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert_eq!(
                next_record(&damaged, 1 << 20),
                Next::Corrupt { len: bytes.len() },
                "flipped at {at}"
            );
        }
        let mut huge = bytes.clone();
        huge[3] = 0x7f;
        assert_eq!(next_record(&huge, 1 << 20), Next::Unframed);
    }

    #[test]
    fn payloads_with_ranges_outside_their_data_are_refused() {
        let ops = [StoredOp {
            key: 0..4,
            entry: 2..9,
            publish: None,
            list_cap: 1,
        }];
        let mut out = Vec::new();
        let parts = RecordParts {
            first_seq: 1,
            appended_ms: 0,
            ops: &ops,
            data: b"abc",
            chunks: &[],
        };
        assert!(encode_record(&mut out, &parts).is_err());
        assert!(out.is_empty());
        // A payload whose op table claims more ops than it holds.
        let good = record(1);
        let mut payload = good[RECORD_OVERHEAD..].to_vec();
        payload[16] = 200;
        assert!(decode_payload(&payload).is_err());
    }

    #[test]
    fn headers_from_other_files_and_newer_builds_are_refused() {
        assert_eq!(read_header(b"cowlogdQ"), Err(SegmentError::ShortHeader));
        assert_eq!(
            read_header(b"notasegmentfile!"),
            Err(SegmentError::BadMagic)
        );
        let mut header = Vec::new();
        write_header(&mut header);
        header[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            read_header(&header),
            Err(SegmentError::NewerVersion { found: 7 })
        );
    }
}
