//! The Forward protocol decoder: every event mode and time form as the
//! clients send them, bounds, and properties (arbitrary bytes never panic;
//! the stream decoder does not depend on how reads split the stream).

use std::io::Write;

use cowlogd_parsers::Timestamp;
use cowlogd_parsers::fluent::docker::{
    PartialAssembler, PartialDrop, PartialLimits, PartialOutcome, to_gelf,
};
use cowlogd_parsers::fluent::forward::{Entries, entries, parse_event, record_fields};
use cowlogd_parsers::fluent::msgpack::{
    MsgpackError, ObjectScanner, Reader, object_len, write_json,
};
use proptest::prelude::*;

/// A MessagePack writer for the tests, in the widest forms (str32,
/// array32, map32) where `wide`, else the smallest, as clients differ.
struct Pack {
    out: Vec<u8>,
    wide: bool,
}

impl Pack {
    fn new(wide: bool) -> Pack {
        Pack {
            out: Vec::new(),
            wide,
        }
    }
    fn str(&mut self, s: &[u8]) -> &mut Pack {
        match s.len() {
            n if n < 32 && !self.wide => self.out.push(0xa0 | n as u8),
            n if n < 256 && !self.wide => self.out.extend([0xd9, n as u8]),
            n => {
                self.out.push(0xdb);
                self.out.extend((n as u32).to_be_bytes());
            }
        }
        self.out.extend_from_slice(s);
        self
    }
    fn bin(&mut self, s: &[u8]) -> &mut Pack {
        self.out.push(0xc6);
        self.out.extend((s.len() as u32).to_be_bytes());
        self.out.extend_from_slice(s);
        self
    }
    fn array(&mut self, n: u32) -> &mut Pack {
        if n < 16 && !self.wide {
            self.out.push(0x90 | n as u8);
        } else {
            self.out.push(0xdd);
            self.out.extend(n.to_be_bytes());
        }
        self
    }
    fn map(&mut self, n: u32) -> &mut Pack {
        if n < 16 && !self.wide {
            self.out.push(0x80 | n as u8);
        } else {
            self.out.push(0xdf);
            self.out.extend(n.to_be_bytes());
        }
        self
    }
    fn uint(&mut self, n: u64) -> &mut Pack {
        self.out.push(0xcf);
        self.out.extend(n.to_be_bytes());
        self
    }
    fn event_time(&mut self, secs: u32, nanos: u32) -> &mut Pack {
        self.out.extend([0xd7, 0x00]);
        self.out.extend(secs.to_be_bytes());
        self.out.extend(nanos.to_be_bytes());
        self
    }
    fn record(&mut self, fields: &[(&str, &str)]) -> &mut Pack {
        self.map(fields.len() as u32);
        for (k, v) in fields {
            self.str(k.as_bytes()).str(v.as_bytes());
        }
        self
    }
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

const CONTAINER_ID: &str = "4f9a1c0d2b3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a";

fn docker_record<'a>(log: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![
        ("container_id", CONTAINER_ID),
        ("container_name", "/mailcowdockerized-postfix-mailcow-1"),
        ("source", "stdout"),
        ("log", log),
    ];
    fields.extend_from_slice(extra);
    fields
}

#[test]
fn message_mode_as_docker_sends_it_with_and_without_ack_and_sub_second_time() {
    let fields = docker_record(
        "Nov 24 13:49:59 mail postfix/smtpd[77]: connect from x",
        &[],
    );
    for (ack, subsecond) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut p = Pack::new(false);
        p.array(4).str(b"4f9a1c0d2b3e");
        if subsecond {
            p.event_time(1_764_000_000, 123_456_789);
        } else {
            p.out.extend([0xce]);
            p.out.extend(1_764_000_000u32.to_be_bytes());
        }
        p.record(&fields);
        if ack {
            p.map(1).str(b"chunk").str(b"p8n9gmxTQVC8/nh2wlKKeQ==");
        } else {
            p.map(0);
        }
        let frame = p.take();
        assert_eq!(object_len(&frame, 1 << 20), Ok(Some(frame.len())));
        let event = parse_event(&frame).unwrap();
        assert_eq!(event.tag, b"4f9a1c0d2b3e");
        assert_eq!(event.chunk.is_some(), ack);
        let Entries::Message { time, record } = event.entries else {
            panic!("not message mode: {event:?}");
        };
        let nanos = if subsecond { 123_456_789 } else { 0 };
        assert_eq!(time, Timestamp::new(1_764_000_000, nanos));
        let gelf = to_gelf(event.tag, time, record, None).unwrap().gelf;
        assert_eq!(
            gelf.short_message,
            "Nov 24 13:49:59 mail postfix/smtpd[77]: connect from x"
        );
        assert_eq!(gelf.level, Some(6));
        assert_eq!(
            gelf.str_field("container_name"),
            Some("mailcowdockerized-postfix-mailcow-1")
        );
        assert_eq!(gelf.str_field("container_id"), Some(CONTAINER_ID));
        assert_eq!(gelf.str_field("tag"), Some("4f9a1c0d2b3e"));
        assert_eq!(gelf.field("log"), None);
    }
}

#[test]
fn forward_packed_and_compressed_modes_carry_every_entry() {
    let mut p = Pack::new(false);
    let mut packed = Vec::new();
    for n in 0..3u32 {
        let log = format!("line {n}");
        p.array(2)
            .uint(1_764_000_000 + u64::from(n))
            .record(&[("log", &log)]);
        packed.extend(p.take());
    }
    // Forward: [tag, [entries], {"size": 3}]
    p.array(3).str(b"app").array(3);
    p.out.extend_from_slice(&packed);
    p.map(1).str(b"size").uint(3);
    let forward = p.take();
    // PackedForward: [tag, bin]
    p.array(2).str(b"app").bin(&packed);
    let packed_forward = p.take();
    // CompressedPackedForward: [tag, bin(gzip), {"compressed": "gzip"}]
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&packed).unwrap();
    let gz = gz.finish().unwrap();
    p.array(3)
        .str(b"app")
        .bin(&gz)
        .map(2)
        .str(b"compressed")
        .str(b"gzip")
        .str(b"chunk")
        .str(b"c1");
    let compressed = p.take();

    let logs = |raw: &[u8]| -> Vec<String> {
        entries(raw)
            .map(|e| {
                let (_, record) = e.unwrap();
                let gelf = to_gelf(b"app", Timestamp::default(), record, None)
                    .unwrap()
                    .gelf;
                gelf.short_message.into_owned()
            })
            .collect()
    };
    let expected = ["line 0", "line 1", "line 2"];
    let event = parse_event(&forward).unwrap();
    assert_eq!(event.size, Some(3));
    let Entries::Forward { count: 3, raw } = event.entries else {
        panic!("{event:?}")
    };
    assert_eq!(logs(raw), expected);
    let event = parse_event(&packed_forward).unwrap();
    let Entries::Packed {
        raw,
        compressed: false,
    } = event.entries
    else {
        panic!("{event:?}")
    };
    assert_eq!(logs(raw), expected);
    let event = parse_event(&compressed).unwrap();
    assert_eq!(event.chunk, Some(&b"c1"[..]));
    let Entries::Packed {
        raw,
        compressed: true,
    } = event.entries
    else {
        panic!("{event:?}")
    };
    let plain = cowlogd_parsers::decompress::Decompressor::new(1 << 20)
        .decompress(raw)
        .unwrap()
        .to_vec();
    assert_eq!(logs(&plain), expected);
}

#[test]
fn wide_forms_and_fluent_bit_values_are_read() {
    let mut p = Pack::new(true);
    p.array(2).str(b"t").array(1).array(2).uint(5);
    // {"log": "x", "kubernetes": {"pod": ["a", 1]}, "n": -3}
    p.map(3)
        .str(b"log")
        .str(b"x")
        .str(b"kubernetes")
        .map(1)
        .str(b"pod")
        .array(2)
        .str(b"a")
        .uint(1);
    p.str(b"n").out.push(0xfd);
    let frame = p.take();
    let event = parse_event(&frame).unwrap();
    let Entries::Forward { raw, .. } = event.entries else {
        panic!()
    };
    let (time, record) = entries(raw).next().unwrap().unwrap();
    assert_eq!(time.secs, 5);
    let gelf = to_gelf(b"t", time, record, None).unwrap().gelf;
    assert_eq!(gelf.short_message, "x");
    assert_eq!(gelf.str_field("kubernetes"), Some(r#"{"pod":["a",1]}"#));
    assert_eq!(gelf.str_field("n"), Some("-3"));
    assert_eq!(gelf.level, None);
}

#[test]
fn a_record_without_text_becomes_its_json_and_stderr_is_level_3() {
    let mut p = Pack::new(false);
    let record = p.record(&[("from", "userA"), ("source", "stderr")]).take();
    let gelf = to_gelf(b"app.follow", Timestamp::default(), &record, None)
        .unwrap()
        .gelf;
    assert_eq!(gelf.short_message, r#"{"from":"userA","source":"stderr"}"#);
    assert_eq!(gelf.level, Some(3));
}

#[test]
fn a_declared_length_past_the_frame_limit_fails_before_its_bytes_arrive() {
    assert_eq!(
        object_len(b"\xdb\xff\xff\xff\xff", 1 << 20),
        Err(MsgpackError::TooLarge { max: 1 << 20 })
    );
    // An array claiming 4 billion elements, each at least a byte.
    assert_eq!(
        object_len(b"\x93\xa1t\x01\xdd\xff\xff\xff\xff", 1 << 20),
        Err(MsgpackError::TooLarge { max: 1 << 20 })
    );
    assert_eq!(
        object_len(b"\x92\xc1", 100),
        Err(MsgpackError::Invalid { at: 1 })
    );
}

#[test]
fn deep_nesting_costs_no_stack_and_is_written_as_null_past_the_depth() {
    let depth = 200_000;
    let mut deep = vec![0x91u8; depth];
    deep.push(0xc0);
    assert_eq!(object_len(&deep, 1 << 20), Ok(Some(depth + 1)));
    let mut out = Vec::new();
    write_json(&mut Reader::new(&deep), &mut out, 3).unwrap();
    assert_eq!(out, b"[[[null]]]");
    // As a record value: the event is read, the value cut.
    let mut p = Pack::new(false);
    p.array(3)
        .str(b"t")
        .uint(1)
        .map(2)
        .str(b"log")
        .str(b"x")
        .str(b"deep");
    p.out.extend_from_slice(&deep);
    let frame = p.take();
    let event = parse_event(&frame).unwrap();
    let Entries::Message { time, record } = event.entries else {
        panic!()
    };
    let gelf = to_gelf(b"t", time, record, None).unwrap().gelf;
    // Sixteen levels followed, then null.
    let expected = format!("{}null{}", "[".repeat(16), "]".repeat(16));
    assert_eq!(gelf.str_field("deep"), Some(expected.as_str()));
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    for frame in [
        &b"\x91\xa1t"[..],                // one element
        b"\x95\xa1t\x01\x80\x80\x80",     // five
        b"\x93\x01\x01\x80",              // tag not a string
        b"\x93\xa1t\x01\x01",             // record not a map
        b"\x93\xa1t\xc0\x80",             // time nil
        b"\x94\xa1t\x01\x80\x01",         // option not a map
        b"\x93\xa1t\xc4\x02\x92\x01\x83", // packed entry cut (fails when read)
        b"\xa3abc",
    ] {
        match parse_event(frame) {
            Err(_) => {}
            Ok(event) => {
                let Entries::Packed { raw, .. } = event.entries else {
                    panic!("{frame:?} parsed: {event:?}");
                };
                assert!(entries(raw).any(|e| e.is_err()));
            }
        }
    }
}

#[test]
fn partial_lines_reassemble_in_order_within_their_bounds() {
    let limits = PartialLimits {
        max_pending: 2,
        max_line_bytes: 10,
        timeout_ms: 1000,
    };
    let mut parts = PartialAssembler::new(limits);
    assert_eq!(
        parts.add(b"a", 1, false, b"1234", 0).0,
        PartialOutcome::Pending
    );
    // A retry of a part already taken.
    assert_eq!(
        parts.add(b"a", 1, false, b"1234", 1).0,
        PartialOutcome::Duplicate
    );
    assert_eq!(
        parts.add(b"a", 2, false, b"5678", 2).0,
        PartialOutcome::Pending
    );
    // Cut at max_line_bytes + 1, so that the caller sees it is over.
    assert_eq!(
        parts.add(b"a", 3, true, b"9abcdef", 3).0,
        PartialOutcome::Complete {
            text: b"123456789ab".to_vec()
        }
    );
    // A gap drops the line.
    parts.add(b"b", 1, false, b"x", 4);
    assert_eq!(
        parts.add(b"b", 3, true, b"z", 5),
        (PartialOutcome::Dropped, Some(PartialDrop::Gap))
    );
    assert_eq!(parts.pending(), 0);
    // A line whose start was never seen, counted once for all its parts.
    assert_eq!(parts.add(b"c", 2, false, b"z", 5).1, Some(PartialDrop::Gap));
    assert_eq!(
        parts.add(b"c", 3, true, b"z", 5),
        (PartialOutcome::Dropped, None)
    );
    // The third line at once evicts the oldest.
    parts.add(b"d", 1, false, b"x", 6);
    parts.add(b"e", 1, false, b"x", 7);
    assert_eq!(
        parts.add(b"f", 1, false, b"x", 8).1,
        Some(PartialDrop::TooManyPending)
    );
    assert_eq!(parts.pending(), 2);
    assert_eq!(parts.expire(1007), 1);
    assert_eq!(parts.expire(2000), 1);
}

#[test]
fn docker_partial_fields_are_recognised() {
    let mut p = Pack::new(false);
    let record = p
        .record(&docker_record(
            "part",
            &[
                ("partial_message", "true"),
                ("partial_id", "0f5c"),
                ("partial_ordinal", "3"),
                ("partial_last", "false"),
            ],
        ))
        .take();
    let entry = to_gelf(b"t", Timestamp::default(), &record, None).unwrap();
    let part = entry.partial.unwrap();
    assert_eq!((part.id, part.ordinal, part.last), (&b"0f5c"[..], 3, false));
    assert_eq!(part.text, b"part");
    let gelf = to_gelf(b"t", Timestamp::default(), &record, Some(b"whole line"))
        .unwrap()
        .gelf;
    assert_eq!(gelf.short_message, "whole line");
    assert!(gelf.fields.iter().all(|f| !f.name.starts_with("partial_")));
    let plain = p.record(&docker_record("x", &[])).take();
    let entry = to_gelf(b"t", Timestamp::default(), &plain, None).unwrap();
    assert_eq!(entry.partial, None);
}

/// Splits `stream` into objects reading it in pieces cut at `cuts`, as a
/// connection does: append, take every complete object with a scanner that
/// resumes where it stopped, keep the rest.
fn decode_in_pieces(stream: &[u8], cuts: &[usize]) -> Result<Vec<Vec<u8>>, MsgpackError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    let (mut buf, mut out, mut start) = (Vec::new(), Vec::new(), 0);
    let mut scanner = ObjectScanner::default();
    for end in points {
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        while let Some(len) = scanner.scan(&buf, 1 << 20)? {
            out.push(buf.drain(..len).collect());
        }
    }
    Ok(out)
}

fn event_bytes(tag: &[u8], logs: &[String], mode: u8, wide: bool) -> Vec<u8> {
    let mut p = Pack::new(wide);
    match mode % 3 {
        0 => {
            p.array(4).str(tag).event_time(1, 2).map(1).str(b"log");
            p.str(logs.first().map_or(&b""[..], |l| l.as_bytes()));
            p.map(1).str(b"chunk").str(b"id");
        }
        1 => {
            p.array(2).str(tag).array(logs.len() as u32);
            for log in logs {
                p.array(2).uint(7).map(1).str(b"log").str(log.as_bytes());
            }
        }
        _ => {
            let mut inner = Pack::new(wide);
            for log in logs {
                inner
                    .array(2)
                    .uint(7)
                    .map(1)
                    .str(b"log")
                    .str(log.as_bytes());
            }
            p.array(2).str(tag).bin(&inner.take());
        }
    }
    p.take()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(Some(len)) = object_len(&input, 1 << 16) {
            prop_assert!(len <= input.len());
            if let Ok(event) = parse_event(&input[..len]) {
                let records: Vec<&[u8]> = match event.entries {
                    Entries::Message { record, .. } => vec![record],
                    Entries::Forward { raw, .. } | Entries::Packed { raw, .. } => {
                        entries(raw).filter_map(Result::ok).map(|(_, r)| r).collect()
                    }
                };
                for record in records {
                    let _ = record_fields(record).count();
                    let _ = to_gelf(event.tag, Timestamp::default(), record, None);
                }
            }
        }
        let mut out = Vec::new();
        if write_json(&mut Reader::new(&input), &mut out, 8).is_ok() {
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "not JSON: {:?}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn stream_decoding_is_independent_of_read_splits(
        events in proptest::collection::vec(
            (proptest::collection::vec("[ -~]{0,40}", 1..4), any::<u8>(), any::<bool>()),
            1..8,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let frames: Vec<Vec<u8>> = events
            .iter()
            .map(|(logs, mode, wide)| event_bytes(b"tag", logs, *mode, *wide))
            .collect();
        let stream = frames.concat();
        prop_assert_eq!(decode_in_pieces(&stream, &cuts).unwrap(), frames.clone());
        for (frame, (logs, mode, _)) in frames.iter().zip(&events) {
            let event = parse_event(frame).unwrap();
            let got: Vec<String> = match event.entries {
                Entries::Message { record, time } => {
                    vec![to_gelf(event.tag, time, record, None).unwrap().gelf.short_message.into_owned()]
                }
                Entries::Forward { raw, .. } | Entries::Packed { raw, .. } => entries(raw)
                    .map(|e| {
                        let (time, record) = e.unwrap();
                        to_gelf(event.tag, time, record, None).unwrap().gelf.short_message.into_owned()
                    })
                    .collect(),
            };
            let want: Vec<String> = if mode % 3 == 0 { logs[..1].to_vec() } else { logs.clone() };
            prop_assert_eq!(got, want);
        }
    }
}
