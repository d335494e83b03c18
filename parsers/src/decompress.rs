//! GELF payload decompression: gzip (multi-member too) or zlib, detected by
//! magic bytes as Graylog does, with a hard cap on the output.
//!
//! A [`Decompressor`] keeps its inflate state and output buffer between
//! messages, so a steady stream allocates nothing per message.

use flate2::{Decompress, FlushDecompress, Status};
use thiserror::Error;

/// How a GELF payload is encoded, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// `1f 8b`: gzip (go-gelf's default).
    Gzip,
    /// `78 xx` with a valid zlib header check: zlib (graypy, pygelf).
    Zlib,
    /// Raw deflate without header: never detected, only used when a
    /// sender declares it (HTTP `Content-Encoding: deflate` from some clients).
    Deflate,
    /// Anything else: plain JSON.
    None,
}

/// Detects the compression of a (reassembled) GELF payload.
///
/// ```
/// use cowlogd_parsers::decompress::{detect_compression, Compression};
/// assert_eq!(detect_compression(b"\x1f\x8b\x08\x00"), Compression::Gzip);
/// assert_eq!(detect_compression(b"\x78\x9c..."), Compression::Zlib);
/// assert_eq!(detect_compression(b"{\"version\":\"1.1\"}"), Compression::None);
/// ```
pub fn detect_compression(payload: &[u8]) -> Compression {
    match payload {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x78, second, ..] if (0x78u16 * 256 + u16::from(*second)).is_multiple_of(31) => {
            Compression::Zlib
        }
        _ => Compression::None,
    }
}

/// Why a payload could not be decompressed. The next payload is unaffected.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecompressError {
    /// Occurs when the output would exceed the cap (a "zip bomb" or simply
    /// a huge message): nothing of it is returned.
    #[error("decompressed size exceeds the cap of {cap} bytes")]
    TooLarge {
        /// The cap.
        cap: usize,
    },
    /// Occurs when the gzip header is malformed.
    #[error("malformed gzip header")]
    BadGzipHeader,
    /// Occurs when the deflate data is corrupt.
    #[error("corrupt {0:?} data")]
    Corrupt(Compression),
    /// Occurs when the input ends before the compressed stream does.
    #[error("{0:?} data ends early")]
    Truncated(Compression),
    /// Occurs when a gzip member's CRC-32 or length does not match its data.
    #[error("gzip checksum mismatch")]
    Checksum,
}

/// Output capacity above which the buffer is given back after use.
const KEEP_CAPACITY: usize = 1024 * 1024;
/// Output capacity above which [`Decompressor::release_oversized`] frees it.
const RELEASE_ABOVE: usize = 256 * 1024;

/// Decompresses GELF payloads with reusable state; see the module docs.
pub struct Decompressor {
    raw: Decompress,
    zlib: Decompress,
    out: Vec<u8>,
    cap: usize,
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("cap", &self.cap)
            .finish()
    }
}

impl Decompressor {
    /// A decompressor whose output is capped at `cap` bytes.
    pub fn new(cap: usize) -> Decompressor {
        Decompressor {
            raw: Decompress::new(false),
            zlib: Decompress::new(true),
            out: Vec::new(),
            cap,
        }
    }

    /// Gives back an output buffer grown past 256 KiB by a large payload, so
    /// an idle connection does not keep its peak.
    ///
    /// ```
    /// let mut d = cowlogd_parsers::decompress::Decompressor::new(1024);
    /// d.release_oversized();
    /// ```
    pub fn release_oversized(&mut self) {
        if self.out.capacity() > RELEASE_ABOVE {
            self.out = Vec::new();
        }
    }

    /// The plain payload: `payload` itself when it is not compressed, else
    /// its decompressed bytes (valid until the next call).
    ///
    /// ```
    /// use std::io::Write;
    /// use cowlogd_parsers::decompress::Decompressor;
    /// let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    /// gz.write_all(b"{\"short_message\":\"hi\"}").unwrap();
    /// let compressed = gz.finish().unwrap();
    /// let mut d = Decompressor::new(1024);
    /// assert_eq!(d.decompress(&compressed).unwrap(), b"{\"short_message\":\"hi\"}");
    /// ```
    ///
    /// # Errors
    /// [`DecompressError`] when the data is corrupt, truncated, fails its
    /// checksum or would exceed the cap.
    pub fn decompress<'a>(&'a mut self, payload: &'a [u8]) -> Result<&'a [u8], DecompressError> {
        self.decompress_as(payload, detect_compression(payload))
    }

    /// Like [`Decompressor::decompress`] with the compression given, for
    /// senders that declare it (a body that still starts with gzip or zlib
    /// magic is read by its magic, as Graylog does).
    ///
    /// ```
    /// use std::io::Write;
    /// use cowlogd_parsers::decompress::{Compression, Decompressor};
    /// let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    /// raw.write_all(b"{}").unwrap();
    /// let raw = raw.finish().unwrap();
    /// assert_eq!(Decompressor::new(64).decompress_as(&raw, Compression::Deflate).unwrap(), b"{}");
    /// ```
    ///
    /// # Errors
    /// As [`Decompressor::decompress`].
    pub fn decompress_as<'a>(
        &'a mut self,
        payload: &'a [u8],
        declared: Compression,
    ) -> Result<&'a [u8], DecompressError> {
        let kind = match detect_compression(payload) {
            Compression::None => declared,
            sniffed => sniffed,
        };
        if kind == Compression::None {
            return Ok(payload);
        }
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
        self.out.clear();
        self.out.reserve(
            (payload.len() * 4)
                .max(1024)
                .min(self.cap.saturating_add(1)),
        );
        match kind {
            Compression::Gzip => self.gunzip(payload)?,
            Compression::Deflate => {
                self.raw.reset(false);
                inflate(&mut self.raw, payload, &mut self.out, self.cap, kind)?;
            }
            _ => {
                self.zlib.reset(true);
                inflate(&mut self.zlib, payload, &mut self.out, self.cap, kind)?;
            }
        }
        Ok(&self.out)
    }

    /// Every gzip member in turn (RFC 1952 §2.2: members are concatenated).
    fn gunzip(&mut self, mut input: &[u8]) -> Result<(), DecompressError> {
        loop {
            let header = gzip_header_len(input)?;
            let member_start = self.out.len();
            self.raw.reset(false);
            let used = inflate(
                &mut self.raw,
                &input[header..],
                &mut self.out,
                self.cap,
                Compression::Gzip,
            )?;
            let trailer = input
                .get(header + used..header + used + 8)
                .ok_or(DecompressError::Truncated(Compression::Gzip))?;
            let member = &self.out[member_start..];
            let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
            let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
            if crc32fast::hash(member) != crc || member.len() as u32 != size {
                return Err(DecompressError::Checksum);
            }
            input = &input[header + used + 8..];
            // Another member follows only if it starts like one; padding and
            // trailing garbage after the last member are ignored, as gzip(1) does.
            if !input.starts_with(&[0x1f, 0x8b]) {
                return Ok(());
            }
        }
    }
}

/// Length of the gzip member header at the start of `input` (RFC 1952 §2.3).
fn gzip_header_len(input: &[u8]) -> Result<usize, DecompressError> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let bad = DecompressError::BadGzipHeader;
    if input.len() < 10 || input[..3] != [0x1f, 0x8b, 8] {
        return Err(bad);
    }
    let flags = input[3];
    let mut pos = 10;
    if flags & FEXTRA != 0 {
        let len = input.get(pos..pos + 2).ok_or(bad)?;
        pos += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            pos += memchr::memchr(0, input.get(pos..).ok_or(bad)?).ok_or(bad)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    if pos > input.len() {
        return Err(bad);
    }
    Ok(pos)
}

/// Inflates one stream from `input` onto `out` without letting `out` grow
/// past `cap`; returns the input bytes used.
fn inflate(
    state: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    cap: usize,
    kind: Compression,
) -> Result<usize, DecompressError> {
    let start_in = state.total_in();
    loop {
        if out.len() == out.capacity() {
            if out.len() > cap {
                return Err(DecompressError::TooLarge { cap });
            }
            // Room up to cap + 1: one byte past the cap proves the overflow.
            let room = (out.capacity().max(1024)).min(cap + 1 - out.len());
            out.reserve_exact(room);
        }
        let used = (state.total_in() - start_in) as usize;
        let before = (state.total_in(), state.total_out());
        let status = state
            .decompress_vec(&input[used..], out, FlushDecompress::None)
            .map_err(|_| DecompressError::Corrupt(kind))?;
        if out.len() > cap {
            return Err(DecompressError::TooLarge { cap });
        }
        match status {
            Status::StreamEnd => return Ok((state.total_in() - start_in) as usize),
            Status::Ok | Status::BufError => {
                let stalled = before == (state.total_in(), state.total_out());
                if stalled && out.len() < out.capacity() {
                    return Err(DecompressError::Truncated(kind));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn zlib_at_every_level_is_detected_and_inflated() {
        let data = b"{\"short_message\":\"zlib\"}".repeat(20);
        for level in 0..=9 {
            let z = zlib(&data, level);
            assert_eq!(detect_compression(&z), Compression::Zlib, "level {level}");
            assert_eq!(
                Decompressor::new(1 << 20).decompress(&z).unwrap(),
                &data[..]
            );
        }
    }

    #[test]
    fn multi_member_gzip_is_concatenated() {
        let mut both = gzip(b"{\"a\":");
        both.extend(gzip(b"1}"));
        assert_eq!(
            Decompressor::new(1024).decompress(&both).unwrap(),
            b"{\"a\":1}"
        );
    }

    #[test]
    fn output_over_cap_is_an_error_not_a_truncation() {
        let bomb = gzip(&vec![b'a'; 100_000]);
        let mut d = Decompressor::new(10_000);
        assert_eq!(
            d.decompress(&bomb),
            Err(DecompressError::TooLarge { cap: 10_000 })
        );
        // Exactly at the cap is fine.
        let exact = gzip(&vec![b'a'; 10_000]);
        assert_eq!(d.decompress(&exact).unwrap().len(), 10_000);
    }

    #[test]
    fn truncated_and_corrupt_inputs_are_errors() {
        let good = gzip(&b"{\"short_message\":\"x\"}".repeat(50));
        let mut d = Decompressor::new(1 << 20);
        assert!(d.decompress(&good[..good.len() / 2]).is_err());
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0xff;
        assert_eq!(d.decompress(&bad_crc), Err(DecompressError::Checksum));
        assert!(d.decompress(b"\x1f\x8b\x08").is_err());
        assert!(d.decompress(b"\x78\x9c\xff\xff\xff").is_err());
        // The decompressor is still usable afterwards.
        assert_eq!(d.decompress(&gzip(b"{}")).unwrap(), b"{}");
    }

    #[test]
    fn gzip_header_with_name_and_extra_fields() {
        let mut e = flate2::GzBuilder::new()
            .filename("x.json")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::default());
        e.write_all(b"{}").unwrap();
        let data = e.finish().unwrap();
        assert_eq!(Decompressor::new(64).decompress(&data).unwrap(), b"{}");
    }
}
