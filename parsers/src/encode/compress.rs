//! Compression for forwarding GELF over UDP: gzip or zlib with reusable
//! deflate state, so a steady stream allocates nothing per message.

use flate2::{Compress, Compression, FlushCompress, Status};

/// The GELF UDP codecs Graylog accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// gzip (`1f 8b`), go-gelf's default.
    Gzip,
    /// zlib (`78 01` at level 1).
    Zlib,
    /// No compression.
    None,
}

/// The gzip member header for level 1 (XFL 4), OS unknown: what go-gelf sends.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0xff];

/// A compressor with reusable state; see the module docs.
pub struct Compressor {
    codec: Codec,
    deflate: Compress,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("codec", &self.codec)
            .finish()
    }
}

impl Compressor {
    /// A compressor for `codec` at level 1 (Docker's default).
    pub fn new(codec: Codec) -> Compressor {
        Compressor {
            codec,
            deflate: Compress::new(Compression::fast(), codec == Codec::Zlib),
        }
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Compresses `input` into `out` (cleared first); with [`Codec::None`]
    /// it copies.
    ///
    /// ```
    /// use cowlogd_parsers::decompress::Decompressor;
    /// use cowlogd_parsers::encode::compress::{Codec, Compressor};
    /// let mut out = Vec::new();
    /// Compressor::new(Codec::Gzip).compress(b"{\"short_message\":\"hi\"}", &mut out);
    /// assert_eq!(&out[..2], b"\x1f\x8b");
    /// assert_eq!(Decompressor::new(1024).decompress(&out).unwrap(), b"{\"short_message\":\"hi\"}");
    /// ```
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match self.codec {
            Codec::None => out.extend_from_slice(input),
            Codec::Zlib => {
                self.deflate.reset();
                deflate_all(&mut self.deflate, input, out);
            }
            Codec::Gzip => {
                out.extend_from_slice(&GZIP_HEADER);
                self.deflate.reset();
                deflate_all(&mut self.deflate, input, out);
                out.extend_from_slice(&crc32fast::hash(input).to_le_bytes());
                out.extend_from_slice(&(input.len() as u32).to_le_bytes());
            }
        }
    }
}

fn deflate_all(state: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    let start = state.total_in();
    out.reserve(input.len() / 2 + 64);
    loop {
        let used = (state.total_in() - start) as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        // Compressing into a Vec with room cannot fail: flate2 only reports
        // errors for misuse of the stream, which this loop does not do.
        match state.compress_vec(&input[used..], out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) | Err(_) => return,
            Ok(Status::Ok | Status::BufError) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decompress::Decompressor;

    #[test]
    fn every_codec_round_trips_and_state_is_reused() {
        let data = b"{\"short_message\":\"hello hello hello\"}".repeat(100);
        for codec in [Codec::Gzip, Codec::Zlib, Codec::None] {
            let mut compressor = Compressor::new(codec);
            let mut out = Vec::new();
            for _ in 0..3 {
                compressor.compress(&data, &mut out);
                assert_eq!(
                    Decompressor::new(1 << 20).decompress(&out).unwrap(),
                    &data[..],
                    "{codec:?}"
                );
            }
            if codec != Codec::None {
                assert!(out.len() < data.len() / 4);
            }
        }
        let mut out = Vec::new();
        Compressor::new(Codec::Gzip).compress(b"", &mut out);
        assert_eq!(Decompressor::new(16).decompress(&out).unwrap(), b"");
    }
}
