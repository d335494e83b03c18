//! Property tests: no input panics any parser, framer or the reassembler;
//! framing does not depend on how reads split the stream; encoders produce
//! what the decoders (and serde_json) read back.

use cowlogd_parsers::decompress::Decompressor;
use cowlogd_parsers::encode::gelf::{ForwardContext, encode_gelf, for_each_chunk};
use cowlogd_parsers::encode::mailcow::{
    ChannelSanitize, encode_channel_payload, encode_channel_payload_capped, encode_list_entry,
};
use cowlogd_parsers::framing::{Decoded, Framer};
use cowlogd_parsers::gelf::{ChunkOutcome, Reassembler, parse_gelf, parse_gelf_lossy};
use cowlogd_parsers::limits::{TRUNCATION_MARKER, truncate_message};
use cowlogd_parsers::normalize::{normalize_gelf, normalize_syslog};
use cowlogd_parsers::syslog::{
    TimeContext, parse_embedded_line, parse_headerless_line, parse_syslog,
};
use cowlogd_parsers::{ReassemblyLimits, Timestamp};
use proptest::prelude::*;
use std::io::Write;

fn ctx() -> TimeContext {
    TimeContext::utc(Timestamp::new(1_795_999_799, 0))
}

/// Runs a framer over `input` delivered in pieces cut at `cuts`.
fn frames(mut framer: Framer, input: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, usize) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let (mut buf, mut out, mut errors, mut start) = (Vec::new(), Vec::new(), 0, 0);
    for end in points {
        buf.extend_from_slice(&input[start..end]);
        start = end;
        let mut pos = 0;
        loop {
            match framer.decode(&buf[pos..]) {
                Decoded::Frame { frame, consumed } => {
                    out.push(frame.to_vec());
                    pos += consumed;
                }
                Decoded::Skipped { consumed, error } => {
                    assert!(consumed > 0, "a skip must make progress");
                    errors += usize::from(error.is_some());
                    pos += consumed;
                }
                Decoded::NeedMore => break,
            }
        }
        buf.drain(..pos);
        assert!(
            buf.len() <= framer.max_frame() + input.len().min(64) + 12,
            "buffer grew to {}",
            buf.len()
        );
    }
    match framer.finish(&buf) {
        Some(Ok(frame)) => out.push(frame.to_vec()),
        Some(Err(_)) => errors += 1,
        None => {}
    }
    (out, errors)
}

fn message_text() -> impl Strategy<Value = Vec<u8>> {
    // Printable-ish bytes without the frame delimiter, including invalid UTF-8.
    proptest::collection::vec(
        prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')],
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn syslog_parsers_never_panic(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        let m = parse_syslog(&input, &ctx());
        let _ = normalize_syslog(&m, &ctx(), Timestamp::default());
        let _ = parse_embedded_line(&input, &ctx());
        let _ = parse_headerless_line(&input, &ctx());
    }

    #[test]
    fn syslog_shaped_garbage_never_panics(
        pri in 0u32..300, ts in "[A-Za-z0-9 :.+TZ-]{0,40}", rest in "[ -~\\[\\]]{0,80}"
    ) {
        let line = format!("<{pri}>{ts} {rest}");
        let m = parse_syslog(line.as_bytes(), &ctx());
        let _ = normalize_syslog(&m, &ctx(), Timestamp::default());
        let line = format!("<{pri}>1 {ts} {rest}");
        let _ = parse_syslog(line.as_bytes(), &ctx());
    }

    #[test]
    fn framers_never_panic_and_stay_bounded(
        input in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        max in 1usize..300,
    ) {
        frames(Framer::syslog(max), &input, &cuts);
        frames(Framer::nul(max), &input, &cuts);
    }

    #[test]
    fn framing_is_independent_of_read_splits(
        messages in proptest::collection::vec((message_text(), any::<bool>()), 1..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (text, octet) in &messages {
            let mut line = b"<13>".to_vec();
            line.extend_from_slice(text);
            if *octet {
                stream.extend_from_slice(format!("{} ", line.len()).as_bytes());
                stream.extend_from_slice(&line);
            } else {
                let line: Vec<u8> = line.into_iter().filter(|&b| b != b'\n').collect();
                stream.extend_from_slice(&line);
                stream.push(b'\n');
                expected.push(line);
                continue;
            }
            expected.push(line);
        }
        let (whole, errors) = frames(Framer::syslog(1 << 16), &stream, &[]);
        prop_assert_eq!(errors, 0);
        prop_assert_eq!(&whole, &expected);
        let (split, _) = frames(Framer::syslog(1 << 16), &stream, &cuts);
        prop_assert_eq!(split, expected);
    }

    #[test]
    fn reassembler_never_panics_and_respects_its_caps(
        steps in proptest::collection::vec(
            (0u8..4, 0u8..6, any::<u8>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40), 0u64..3000),
            0..300,
        ),
    ) {
        let limits = ReassemblyLimits {
            max_pending_messages: 5,
            max_pending_per_sender: 3,
            max_pending_bytes: 200,
            max_message_bytes: 100,
            timeout_ms: 5000,
        };
        let mut r = Reassembler::new(limits);
        let mut now = 0u64;
        for (sender, id, seq, count, payload, step) in steps {
            now += step;
            let mut datagram = vec![0x1e, 0x0f, id, 0, 0, 0, 0, 0, 0, 0, seq % 10, count % 12];
            datagram.extend_from_slice(&payload);
            let _ = r.add(sender, &datagram, now);
            prop_assert!(r.pending_messages() <= limits.max_pending_messages);
            // The byte cap is checked when a message starts; one message can
            // then add at most max_message_bytes.
            prop_assert!(r.pending_bytes() <= limits.max_pending_bytes);
            prop_assert_eq!(r.check_invariants(), Ok(()));
        }
        r.expire(now + 5000);
        prop_assert_eq!(r.check_invariants(), Ok(()));
        prop_assert_eq!((r.pending_messages(), r.pending_bytes()), (0, 0));
    }

    #[test]
    fn chunking_then_reassembly_round_trips(
        payload in proptest::collection::vec(any::<u8>(), 1..20_000),
        chunk_size in 13usize..2000,
        order_seed in any::<u64>(),
    ) {
        let mut datagrams = Vec::new();
        let sent = for_each_chunk(&payload, chunk_size, *b"12345678", &mut Vec::new(), |d| datagrams.push(d.to_vec()));
        if sent.is_err() {
            prop_assert!(payload.len() > (chunk_size - 12) * 128);
            return Ok(());
        }
        prop_assert!(datagrams.iter().all(|d| d.len() <= chunk_size));
        if datagrams.len() == 1 {
            prop_assert_eq!(&datagrams[0], &payload);
            return Ok(());
        }
        let n = datagrams.len();
        datagrams.rotate_left((order_seed as usize) % n);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = None;
        for d in &datagrams {
            if let Ok(ChunkOutcome::Complete(p)) = r.add(0u8, d, 0) {
                out = Some(p);
            }
        }
        prop_assert_eq!(out, Some(payload));
    }

    #[test]
    fn decompressor_never_panics(input in proptest::collection::vec(any::<u8>(), 0..500), gz in any::<bool>()) {
        let mut d = Decompressor::new(4096);
        let mut data = if gz { vec![0x1f, 0x8b, 0x08] } else { vec![0x78, 0x9c] };
        data.extend_from_slice(&input);
        let _ = d.decompress(&data);
        let _ = d.decompress(&input);
    }

    #[test]
    fn decompressor_round_trips_within_cap(data in proptest::collection::vec(any::<u8>(), 0..5000), gz in any::<bool>()) {
        let compressed = if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        } else {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let mut d = Decompressor::new(5000);
        prop_assert_eq!(d.decompress(&compressed).unwrap(), &data[..]);
        let mut small = Decompressor::new(data.len().saturating_sub(1));
        prop_assert_eq!(small.decompress(&compressed).is_err(), !data.is_empty());
    }

    #[test]
    fn gelf_parser_never_panics(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut scratch = String::new();
        if let Ok(m) = parse_gelf_lossy(&input, &mut scratch) {
            let _ = normalize_gelf(&m, &ctx(), Timestamp::default());
        }
    }

    #[test]
    fn list_entry_is_always_the_four_string_keys(
        program in proptest::collection::vec(any::<u8>(), 0..30),
        message in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut line = b"<22>Nov 24 13:49:59 mx ".to_vec();
        let program: Vec<u8> = program.into_iter().filter(|b| !matches!(b, b' ' | b'[' | b':' | b'\n' | b'\r' | 0)).collect();
        prop_assume!(!program.is_empty());
        line.extend_from_slice(&program);
        line.extend_from_slice(b": ");
        line.extend_from_slice(&message);
        let parsed = parse_syslog(&line, &ctx());
        let record = normalize_syslog(&parsed, &ctx(), Timestamp::default());
        let mut entry = Vec::new();
        encode_list_entry(&mut entry, &record);
        prop_assert_eq!(entry.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&entry).unwrap();
        let object = value.as_object().unwrap();
        prop_assert_eq!(object.keys().collect::<Vec<_>>(), vec!["message", "priority", "program", "time"]);
        prop_assert!(object.values().all(|v| v.is_string()));
        let text = std::str::from_utf8(&entry).unwrap();
        prop_assert!(text.starts_with(r#"{"time":""#), "entry starts {}", &text[..10]);
        // Valid UTF-8 round-trips exactly; each invalid byte became `\xNN`.
        let decoded = object["message"].as_str().unwrap();
        let mut expected = String::new();
        for chunk in record.message.utf8_chunks() {
            expected.push_str(chunk.valid());
            for b in chunk.invalid() {
                expected.push_str(&format!("\\x{b:02x}"));
            }
        }
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn channel_payload_is_valid_utf8_without_controls_or_slashes(message in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut out = Vec::new();
        encode_channel_payload(&mut out, &message, ChannelSanitize::SyslogNg);
        let text = String::from_utf8(out).unwrap();
        prop_assert!(!text.bytes().any(|b| b < 0x20 || b == b'/'));
        // Exactly the lossy text with controls and slashes mapped to `_`.
        let expected: String = String::from_utf8_lossy(&message)
            .chars()
            .map(|c| if c < ' ' || c == '/' { '_' } else { c })
            .collect();
        prop_assert_eq!(text, expected);
    }

    #[test]
    fn a_capped_channel_payload_is_a_utf8_prefix_within_the_cap(
        message in proptest::collection::vec(any::<u8>(), 0..600),
        max in 0usize..700,
        mode in prop_oneof![Just(ChannelSanitize::SyslogNg), Just(ChannelSanitize::ControlOnly)],
    ) {
        let mut whole = Vec::new();
        encode_channel_payload(&mut whole, &message, mode);
        let mut out = b"prefix".to_vec();
        let cut = encode_channel_payload_capped(&mut out, &message, mode, max);
        let payload = &out[6..];
        prop_assert_eq!(&out[..6], b"prefix");
        prop_assert!(std::str::from_utf8(payload).is_ok());
        prop_assert!(whole.starts_with(payload));
        prop_assert_eq!(cut, whole.len() > max);
        if cut {
            // Cut no further than to the start of the character at `max`.
            prop_assert!(payload.len() <= max && payload.len() + 3 >= max);
        } else {
            prop_assert_eq!(payload, &whole[..]);
        }
    }

    #[test]
    fn a_truncated_message_fits_its_limit_and_ends_in_the_marker(
        message in proptest::collection::vec(any::<u8>(), 0..600),
        max in 64usize..700,
    ) {
        let cut = truncate_message(&message, max);
        prop_assert!(cut.len() <= max.max(TRUNCATION_MARKER.len()));
        prop_assert!(cut.ends_with(TRUNCATION_MARKER));
        let kept = &cut[..cut.len() - TRUNCATION_MARKER.len()];
        prop_assert!(message.starts_with(kept));
        if std::str::from_utf8(&message).is_ok() {
            prop_assert!(std::str::from_utf8(kept).is_ok());
        }
    }

    #[test]
    fn gelf_encode_then_parse_keeps_fields(
        short in "\\PC{0,80}", host in "[a-z0-9.-]{1,20}", value in "\\PC{0,40}",
        secs in 1_000_000_000i64..2_000_000_000, millis in 0u32..1000, level in 0u8..8,
    ) {
        let original = serde_json::json!({
            "version": "1.1", "host": host, "short_message": short,
            "timestamp": format!("{secs}.{millis:03}"), "level": level,
            "_container_name": "c-1", "_custom": value, "_n": 7,
        });
        let json = serde_json::to_vec(&original).unwrap();
        let gelf = parse_gelf(&json).unwrap();
        let record = normalize_gelf(&gelf, &ctx(), Timestamp::default());
        let mut out = Vec::new();
        encode_gelf(&mut out, &record, &ForwardContext { fallback_host: "x", route: Some("r") });
        let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&back["short_message"], &original["short_message"]);
        prop_assert_eq!(&back["host"], &original["host"]);
        prop_assert_eq!(&back["_custom"], &original["_custom"]);
        prop_assert_eq!(&back["_n"], &original["_n"]);
        prop_assert_eq!(&back["_route"], "r");
        let ts = back["timestamp"].as_f64().unwrap();
        prop_assert!((ts - (secs as f64 + f64::from(millis) / 1000.0)).abs() < 1e-3);
        // Re-parsing our own output gives the same message.
        let again = parse_gelf(&out).unwrap();
        prop_assert_eq!(again.short_message, gelf.short_message);
        prop_assert_eq!(again.timestamp, gelf.timestamp);
    }

    #[test]
    fn syslog_format_then_parse_round_trips(
        pri in 0u32..192, host in "[a-z][a-z0-9.-]{0,20}", app in "[a-z][a-z0-9/_.-]{0,30}",
        pid in 1u32..99999, msg in "[ -~]{0,100}", rfc5424 in any::<bool>(),
        secs in 1_600_000_000i64..1_900_000_000,
    ) {
        let ts = jiff::Timestamp::from_second(secs).unwrap();
        let line = if rfc5424 {
            format!("<{pri}>1 {} {host} {app} {pid} - - {msg}", ts.strftime("%Y-%m-%dT%H:%M:%SZ"))
        } else {
            format!("<{pri}>{} {host} {app}[{pid}]: {msg}", ts.strftime("%b %e %H:%M:%S"))
        };
        let ctx = TimeContext::utc(Timestamp::new(secs, 0));
        let m = parse_syslog(line.as_bytes(), &ctx);
        prop_assert_eq!(m.pri.map(|p| u32::from(p.value())), Some(pri));
        prop_assert_eq!(m.timestamp.map(|t| t.secs), Some(secs));
        prop_assert_eq!(m.hostname, Some(host.as_bytes()));
        prop_assert_eq!(m.app_name, Some(app.as_bytes()));
        let pid_text = pid.to_string();
        prop_assert_eq!(m.proc_id, Some(pid_text.as_bytes()));
        let trimmed = msg.trim_end_matches(['\r', '\n']);
        prop_assert_eq!(m.msg, trimmed.as_bytes());
    }
}
