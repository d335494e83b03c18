//! Any bytes as the records of a disk queue segment, read the way the
//! daemon reads them at start: never panics, every range a decoded record
//! hands out lies in its data, and a walk always moves forward.
#![no_main]
use cowlogd_parsers::segment::{Next, decode_payload, next_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match next_record(&data[at..], 1 << 20) {
            Next::Record { payload, len } => {
                if let Ok(payload) = decode_payload(payload) {
                    for op in payload.ops() {
                        assert!(op.key.end <= payload.data.len());
                        assert!(op.entry.end <= payload.data.len());
                        if let Some(publish) = op.publish {
                            assert!(publish.end <= payload.data.len());
                        }
                    }
                    let _ = payload.chunks().count();
                }
                assert!(len > 0);
                at += len;
            }
            Next::Corrupt { len } => {
                assert!(len > 0);
                at += len;
            }
            Next::Incomplete | Next::Unframed => break,
        }
    }
});
