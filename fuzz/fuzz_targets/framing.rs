//! Random bytes in random read splits: the same frames come out however the
//! stream is split, and the caller's buffer stays bounded.
#![no_main]
use cowlogd_parsers::framing::{Decoded, Framer};
use libfuzzer_sys::fuzz_target;

fn run(mut framer: Framer, data: &[u8], piece: usize) -> Vec<Vec<u8>> {
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            match framer.decode(&buf[pos..]) {
                Decoded::Frame { frame, consumed } => {
                    out.push(frame.to_vec());
                    pos += consumed;
                }
                Decoded::Skipped { consumed, .. } => {
                    assert!(consumed > 0);
                    pos += consumed;
                }
                Decoded::NeedMore => break,
            }
        }
        buf.drain(..pos);
        assert!(buf.len() <= framer.max_frame() + piece + 11);
    }
    if let Some(Ok(frame)) = framer.finish(&buf) {
        out.push(frame.to_vec());
    }
    out
}

fuzz_target!(|input: (u8, u16, &[u8])| {
    let (piece, max, data) = input;
    let piece = usize::from(piece).max(1);
    let max = usize::from(max).max(1);
    for framer in [Framer::syslog(max), Framer::nul(max)] {
        let whole = run(framer.clone(), data, data.len().max(1));
        let split = run(framer, data, piece);
        assert_eq!(whole, split);
    }
});
