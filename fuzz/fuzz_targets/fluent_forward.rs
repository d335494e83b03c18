//! The Forward stream decoder on random bytes in random read splits: the
//! same objects come out however the stream is split, the buffer stays
//! bounded, and every event, entry and record read from them is handled
//! (an error or a value, never a panic).
#![no_main]
use cowlogd_parsers::Timestamp;
use cowlogd_parsers::fluent::docker::to_gelf;
use cowlogd_parsers::fluent::forward::{Entries, entries, parse_event};
use cowlogd_parsers::fluent::msgpack::{ObjectScanner, object_len};
use libfuzzer_sys::fuzz_target;

/// The objects in `data` read `piece` bytes at a time, by a scanner that
/// resumes where it stopped; stops at an error.
fn run(data: &[u8], piece: usize, max: usize) -> Vec<Vec<u8>> {
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut scanner = ObjectScanner::default();
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match scanner.scan(&buf, max) {
                Ok(Some(len)) => {
                    assert!(len > 0 && len <= max);
                    out.push(buf.drain(..len).collect());
                }
                Ok(None) => break,
                Err(_) => return out,
            }
        }
        assert!(buf.len() < max + piece);
    }
    out
}

fuzz_target!(|input: (u8, u16, &[u8])| {
    let (piece, max, data) = input;
    let piece = usize::from(piece).max(1);
    let max = usize::from(max).max(16);
    let whole = run(data, data.len().max(1), max);
    assert_eq!(whole, run(data, piece, max));
    // The resuming scanner agrees with a scan from the start.
    let mut rest = data;
    for frame in &whole {
        assert_eq!(object_len(rest, max), Ok(Some(frame.len())));
        rest = &rest[frame.len()..];
    }
    for frame in &whole {
        let Ok(event) = parse_event(frame) else {
            continue;
        };
        let records: Vec<&[u8]> = match event.entries {
            Entries::Message { record, .. } => vec![record],
            Entries::Forward { raw, .. } | Entries::Packed { raw, .. } => {
                entries(raw).filter_map(Result::ok).map(|(_, r)| r).collect()
            }
        };
        for record in records {
            let _ = to_gelf(event.tag, Timestamp::default(), record, None);
        }
    }
});
