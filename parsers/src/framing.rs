//! Stream framing: split a TCP byte stream into frames.
//!
//! [`Framer::syslog`] detects the framing per frame (RFC 6587): a frame whose
//! first byte is `1`–`9` followed by digits and a space is octet-counted
//! (`LEN SP MSG`), anything else ends at `\n`. [`Framer::nul`] splits GELF
//! TCP frames at `\0`. Both bound what a caller has to buffer: a frame over
//! the maximum is reported once and its bytes are skipped up to the next
//! boundary, so the caller never holds more than the maximum plus one read.
//!
//! ```
//! use cowlogd_parsers::framing::{Framer, Decoded};
//! let mut framer = Framer::syslog(1024);
//! let buf = b"5 hello<13>world\n";
//! assert_eq!(framer.decode(buf), Decoded::Frame { frame: b"hello", consumed: 7 });
//! assert_eq!(framer.decode(&buf[7..]), Decoded::Frame { frame: b"<13>world", consumed: 10 });
//! assert_eq!(framer.decode(&buf[17..]), Decoded::NeedMore);
//! ```

use thiserror::Error;

/// Most digits an octet count may have (10 digits is > 4 GB already).
const MAX_COUNT_DIGITS: usize = 10;

/// A framing problem. The decision to go on or stop is in the type that
/// carries it: an oversized frame comes as [`Decoded::Skipped`] (the stream
/// goes on at the next frame), a truncated one only from
/// [`Framer::finish`] (the stream has ended).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Occurs when a frame is longer than the maximum; `declared` is the
    /// octet count, when the frame had one.
    #[error("frame longer than {max} bytes (declared {declared:?}); skipped")]
    TooLong {
        /// The maximum frame length.
        max: usize,
        /// The octet count, for octet-counted frames.
        declared: Option<usize>,
    },
    /// Occurs at end of stream inside an octet-counted frame.
    #[error("stream ended {missing} bytes before the end of an octet-counted frame")]
    Truncated {
        /// Bytes that never arrived.
        missing: usize,
    },
}

/// What one call to [`Framer::decode`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete frame (without delimiter or octet count); the caller
    /// drops `consumed` bytes from the front of its buffer.
    Frame {
        /// The frame's bytes.
        frame: &'a [u8],
        /// Bytes used up, frame plus framing.
        consumed: usize,
    },
    /// Bytes used up without a frame (an oversized frame being skipped);
    /// `error` is set on the first skip of each oversized frame.
    Skipped {
        /// Bytes used up.
        consumed: usize,
        /// The reason, reported once per frame.
        error: Option<FrameError>,
    },
    /// No complete frame yet; nothing was used up. Read more and call again.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    /// Skipping the rest of an oversized octet-counted frame.
    SkipOctets(usize),
    /// Skipping an oversized delimited frame up to its delimiter.
    SkipToDelimiter,
}

/// A streaming framer with a maximum frame length; see the module docs.
#[derive(Debug, Clone)]
pub struct Framer {
    delimiter: u8,
    octet_counting: bool,
    max_frame: usize,
    state: State,
    /// Bytes of the delimited frame now at the start of the caller's
    /// buffer already searched for its delimiter: a frame trickled in
    /// small reads is searched once, not once per read.
    searched: usize,
}

impl Framer {
    /// Syslog over TCP: octet counting or `\n`, detected per frame.
    pub fn syslog(max_frame: usize) -> Framer {
        Framer {
            delimiter: b'\n',
            octet_counting: true,
            max_frame,
            state: State::Ready,
            searched: 0,
        }
    }

    /// GELF over TCP: frames end at a NUL byte.
    ///
    /// ```
    /// use cowlogd_parsers::framing::{Framer, Decoded};
    /// let mut framer = Framer::nul(1024);
    /// assert_eq!(framer.decode(b"{}\0{"), Decoded::Frame { frame: b"{}", consumed: 3 });
    /// ```
    pub fn nul(max_frame: usize) -> Framer {
        Framer {
            delimiter: 0,
            octet_counting: false,
            max_frame,
            state: State::Ready,
            searched: 0,
        }
    }

    /// The maximum frame length.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Finds the next frame at the start of `buf` (the unconsumed bytes the
    /// caller holds). Call in a loop until [`Decoded::NeedMore`]; then call
    /// again with the same bytes and more after them: the framer remembers
    /// how far it searched, so a frame trickled in small reads costs its
    /// length once, not once per read.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Decoded<'a> {
        if buf.is_empty() {
            return Decoded::NeedMore;
        }
        match self.state {
            State::SkipOctets(left) => {
                let consumed = left.min(buf.len());
                self.state = match left - consumed {
                    0 => State::Ready,
                    still => State::SkipOctets(still),
                };
                Decoded::Skipped {
                    consumed,
                    error: None,
                }
            }
            State::SkipToDelimiter => match memchr::memchr(self.delimiter, buf) {
                Some(end) => {
                    self.state = State::Ready;
                    Decoded::Skipped {
                        consumed: end + 1,
                        error: None,
                    }
                }
                None => Decoded::Skipped {
                    consumed: buf.len(),
                    error: None,
                },
            },
            State::Ready => {
                if self.octet_counting && matches!(buf[0], b'1'..=b'9') {
                    match octet_header(buf) {
                        OctetHeader::Incomplete => return Decoded::NeedMore,
                        OctetHeader::Count { header, len } => {
                            return self.octet_frame(buf, header, len);
                        }
                        OctetHeader::NotOctet => {}
                    }
                }
                self.delimited_frame(buf)
            }
        }
    }

    fn octet_frame<'a>(&mut self, buf: &'a [u8], header: usize, len: usize) -> Decoded<'a> {
        if len > self.max_frame {
            self.state = State::SkipOctets(len);
            return Decoded::Skipped {
                consumed: header,
                error: Some(FrameError::TooLong {
                    max: self.max_frame,
                    declared: Some(len),
                }),
            };
        }
        match buf.get(header..header + len) {
            Some(frame) => Decoded::Frame {
                frame,
                consumed: header + len,
            },
            None => Decoded::NeedMore,
        }
    }

    fn delimited_frame<'a>(&mut self, buf: &'a [u8]) -> Decoded<'a> {
        let window = &buf[..buf.len().min(self.max_frame + 1)];
        let from = std::mem::take(&mut self.searched).min(window.len());
        match memchr::memchr(self.delimiter, &window[from..]) {
            Some(offset) => Decoded::Frame {
                frame: &buf[..from + offset],
                consumed: from + offset + 1,
            },
            None if buf.len() > self.max_frame => {
                self.state = State::SkipToDelimiter;
                Decoded::Skipped {
                    consumed: window.len(),
                    error: Some(FrameError::TooLong {
                        max: self.max_frame,
                        declared: None,
                    }),
                }
            }
            None => {
                self.searched = window.len();
                Decoded::NeedMore
            }
        }
    }

    /// At end of stream: the partial last frame left in `buf`, if any. A
    /// delimited frame without its delimiter is still a frame (logger sends
    /// its last line that way); an octet-counted frame cut short is an error.
    /// Resets the framer for a new stream.
    ///
    /// ```
    /// use cowlogd_parsers::framing::Framer;
    /// let mut framer = Framer::syslog(1024);
    /// assert_eq!(framer.finish(b"<13>last line"), Some(Ok(&b"<13>last line"[..])));
    /// assert!(framer.finish(b"20 <13>cut").unwrap().is_err());
    /// ```
    pub fn finish<'a>(&mut self, buf: &'a [u8]) -> Option<Result<&'a [u8], FrameError>> {
        let state = std::mem::replace(&mut self.state, State::Ready);
        self.searched = 0;
        if buf.is_empty() || state != State::Ready {
            return None;
        }
        if self.octet_counting
            && matches!(buf[0], b'1'..=b'9')
            && let OctetHeader::Count { header, len } = octet_header(buf)
        {
            let missing = (header + len).saturating_sub(buf.len());
            return Some(Err(FrameError::Truncated { missing }));
        }
        Some(Ok(&buf[..buf.len().min(self.max_frame)]))
    }
}

enum OctetHeader {
    Incomplete,
    Count { header: usize, len: usize },
    NotOctet,
}

/// `LEN SP` at the start of `buf` (first byte already known to be 1–9).
fn octet_header(buf: &[u8]) -> OctetHeader {
    let digits = buf
        .iter()
        .take(MAX_COUNT_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits > MAX_COUNT_DIGITS {
        return OctetHeader::NotOctet;
    }
    match buf.get(digits) {
        None => OctetHeader::Incomplete,
        Some(b' ') => {
            let len = buf[..digits].iter().fold(0usize, |acc, d| {
                acc.saturating_mul(10).saturating_add(usize::from(d - b'0'))
            });
            OctetHeader::Count {
                header: digits + 1,
                len,
            }
        }
        Some(_) => OctetHeader::NotOctet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at `splits`, returns frames and errors in order.
    fn run(framer: &mut Framer, input: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Vec<FrameError>) {
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let mut errors = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match framer.decode(&buf[pos..]) {
                    Decoded::Frame { frame, consumed } => {
                        frames.push(frame.to_vec());
                        pos += consumed;
                    }
                    Decoded::Skipped { consumed, error } => {
                        errors.extend(error);
                        pos += consumed;
                    }
                    Decoded::NeedMore => break,
                }
            }
            buf.drain(..pos);
            assert!(buf.len() <= framer.max_frame() + chunk + MAX_COUNT_DIGITS + 1);
        }
        match framer.finish(&buf) {
            Some(Ok(frame)) => frames.push(frame.to_vec()),
            Some(Err(e)) => errors.push(e),
            None => {}
        }
        (frames, errors)
    }

    #[test]
    fn docker_octet_counted_rfc5424_frames() {
        let first = b"<30>1 2026-11-24T13:49:59+01:00 vm 3b2f6e0c9a1d 4840 3b2f6e0c9a1d - first\n";
        let second =
            b"<30>1 2026-11-24T13:49:59+01:00 vm 3b2f6e0c9a1d 4840 3b2f6e0c9a1d - second\n";
        assert_eq!(first.len(), 74);
        let mut stream = b"74 ".to_vec();
        stream.extend_from_slice(first);
        stream.extend_from_slice(b"75 ");
        stream.extend_from_slice(second);
        for chunk in [1, 2, 7, 200] {
            let (frames, errors) = run(&mut Framer::syslog(1024), &stream, chunk);
            assert_eq!(
                frames,
                vec![first.to_vec(), second.to_vec()],
                "chunk {chunk}"
            );
            assert!(errors.is_empty());
        }
    }

    #[test]
    fn newline_and_octet_frames_mix_per_frame() {
        let stream = b"<13>a line\n9 <13>octet<14>b\n";
        let (frames, _) = run(&mut Framer::syslog(64), stream, 3);
        assert_eq!(
            frames,
            vec![
                b"<13>a line".to_vec(),
                b"<13>octet".to_vec(),
                b"<14>b".to_vec()
            ]
        );
    }

    #[test]
    fn line_starting_with_digits_is_newline_framed() {
        let (frames, _) = run(&mut Framer::syslog(64), b"2024-05-01 boot\n123abc\n", 4);
        assert_eq!(
            frames,
            vec![b"2024-05-01 boot".to_vec(), b"123abc".to_vec()]
        );
    }

    #[test]
    fn octet_frame_over_max_is_skipped_and_stream_continues() {
        let mut stream = b"100 ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', 100));
        stream.extend_from_slice(b"5 hello");
        for chunk in [1, 13, 1000] {
            let (frames, errors) = run(&mut Framer::syslog(50), &stream, chunk);
            assert_eq!(frames, vec![b"hello".to_vec()]);
            assert_eq!(
                errors,
                vec![FrameError::TooLong {
                    max: 50,
                    declared: Some(100)
                }]
            );
        }
    }

    #[test]
    fn newline_frame_over_max_is_skipped_to_next_newline() {
        let mut stream = vec![b'y'; 500];
        stream.extend_from_slice(b"\nok\n");
        for chunk in [1, 64, 1000] {
            let (frames, errors) = run(&mut Framer::syslog(100), &stream, chunk);
            assert_eq!(frames, vec![b"ok".to_vec()]);
            assert_eq!(errors.len(), 1);
        }
    }

    #[test]
    fn frame_of_exactly_max_is_kept() {
        let mut stream = vec![b'z'; 16];
        stream.push(b'\n');
        let (frames, errors) = run(&mut Framer::syslog(16), &stream, 5);
        assert_eq!(frames.len(), 1);
        assert!(errors.is_empty());
    }

    #[test]
    fn partial_last_frame_at_eof() {
        let (frames, _) = run(&mut Framer::nul(64), b"{\"a\":1}\0{\"b\":2}", 4);
        assert_eq!(frames, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        let (frames, errors) = run(&mut Framer::syslog(64), b"20 <13>cut", 4);
        assert!(frames.is_empty());
        assert_eq!(errors, vec![FrameError::Truncated { missing: 13 }]);
    }

    #[test]
    fn huge_octet_count_does_not_overflow() {
        let (frames, errors) = run(&mut Framer::syslog(64), b"9999999999 x\nnext\n", 3);
        assert_eq!(errors.len(), 1);
        assert!(frames.is_empty());
        let (frames, _) = run(&mut Framer::syslog(64), b"99999999999 x\n", 3);
        assert_eq!(frames, vec![b"99999999999 x".to_vec()]);
    }
}
