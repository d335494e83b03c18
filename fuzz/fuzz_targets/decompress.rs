//! Any bytes (behind each magic) through the capped decompressor: never
//! panics and never returns more than the cap.
#![no_main]
use cowlogd_parsers::decompress::Decompressor;
use libfuzzer_sys::fuzz_target;

const CAP: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut d = Decompressor::new(CAP);
    for prefix in [
        &b""[..],
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff",
        b"\x78\x9c",
    ] {
        let input = [prefix, data].concat();
        if let Ok(out) = d.decompress(&input) {
            assert!(out.len() <= CAP.max(input.len()));
        }
    }
});
