//! A sequence of arbitrary chunks from a few senders with clock steps: the
//! reassembler never panics, stays within its caps, keeps its bookkeeping
//! in step (`check_invariants` after every step), and is empty once every
//! deadline has passed.
#![no_main]
use arbitrary::Arbitrary;
use cowlogd_parsers::ReassemblyLimits;
use cowlogd_parsers::gelf::Reassembler;
use libfuzzer_sys::{arbitrary, fuzz_target};

#[derive(Arbitrary, Debug)]
struct Step {
    sender: u8,
    advance_ms: u16,
    id: u8,
    sequence: u8,
    count: u8,
    payload: Vec<u8>,
}

fuzz_target!(|steps: Vec<Step>| {
    let limits = ReassemblyLimits {
        max_pending_messages: 16,
        max_pending_per_sender: 4,
        max_pending_bytes: 4096,
        max_message_bytes: 1024,
        timeout_ms: 5000,
    };
    let mut r = Reassembler::new(limits);
    let mut now = 0u64;
    for step in steps {
        now += u64::from(step.advance_ms);
        let mut datagram = vec![
            0x1e,
            0x0f,
            step.id,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            step.sequence,
            step.count,
        ];
        datagram.extend_from_slice(&step.payload);
        let _ = r.add(step.sender % 8, &datagram, now);
        assert!(r.pending_messages() <= limits.max_pending_messages);
        assert!(r.pending_bytes() <= limits.max_pending_bytes);
        if let Err(broken) = r.check_invariants() {
            panic!("after {step:?}: {broken}");
        }
    }
    r.expire(now + limits.timeout_ms);
    assert_eq!(r.check_invariants(), Ok(()));
    assert_eq!((r.pending_messages(), r.pending_bytes()), (0, 0));
});
