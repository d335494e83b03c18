//! The Docker logs demuxer on random bytes in random read splits, both
//! modes: the same entries come out however the response is split, it
//! holds no more than one entry and the bytes pushed with it, and a line
//! cursor resuming from any position it reported reads the rest once.
#![no_main]
use cowlogd_parsers::docker_logs::{LineCursor, LogDemux, Position, Taken};
use libfuzzer_sys::fuzz_target;

type Entry = (bool, cowlogd_parsers::Timestamp, Vec<u8>, bool);

/// The entries of `data` pushed `piece` bytes at a time.
fn run(data: &[u8], piece: usize, multiplexed: bool) -> Vec<Result<Entry, ()>> {
    let mut demux = LogDemux::new(multiplexed, 1024);
    let mut out = Vec::new();
    for chunk in data.chunks(piece) {
        demux.push(chunk);
        while let Some(entry) = demux.next_entry() {
            out.push(
                entry
                    .map(|e| (e.stream == cowlogd_parsers::docker_logs::LogStream::Stdout, e.time, e.text.to_vec(), e.ends_line))
                    .map_err(|_| ()),
            );
        }
        // At most one entry (a 16 KiB part, its timestamp, its newline)
        // is held besides what this push brought.
        assert!(demux.buffered() <= 16 * 1024 + 64 + piece);
    }
    if let Some(entry) = demux.finish() {
        out.push(entry.map(|e| (true, e.time, e.text.to_vec(), e.ends_line)).map_err(|_| ()));
    }
    out
}

fuzz_target!(|input: (bool, u8, &[u8])| {
    let (multiplexed, piece, data) = input;
    let piece = usize::from(piece).max(1);
    let whole = run(data, data.len().max(1), multiplexed);
    if multiplexed {
        // A multiplexed stream ends at its first error (the follower
        // stops there), so up to it the entries are split-independent. A
        // raw stream's errors resynchronize at what is buffered.
        let upto_error = |entries: Vec<Result<Entry, ()>>| {
            let end = entries.iter().position(Result::is_err).map_or(entries.len(), |at| at + 1);
            entries[..end].to_vec()
        };
        assert_eq!(upto_error(whole.clone()), upto_error(run(data, piece, multiplexed)));
    }
    let entries: Vec<Entry> = whole.into_iter().filter_map(Result::ok).filter(|e| e.0).collect();
    let lines = |from: Position, skip: usize| {
        let mut cursor = LineCursor::new(from, 256);
        let mut lines = Vec::new();
        let mut positions = Vec::new();
        for (_, time, text, ends) in &entries[skip..] {
            if let Taken::Line { text, .. } = cursor.entry(*time, text, *ends) {
                lines.push(text.to_vec());
                positions.push(cursor.position());
            }
        }
        (lines, positions)
    };
    let (all, positions) = lines(Position::default(), 0);
    // Resuming from a reported position re-reads nothing and misses
    // nothing when timestamps never go back (as Docker writes them).
    let ordered = entries.windows(2).all(|w| w[0].1 <= w[1].1);
    if ordered {
        for (done, at) in positions.iter().enumerate() {
            let (rest, _) = lines(*at, 0);
            assert_eq!(rest[..], all[done + 1..]);
        }
    }
});
