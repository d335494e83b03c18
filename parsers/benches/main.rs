//! Parser throughput, one message per iteration (criterion reports
//! elements/s = messages/s on one core). Run: `cargo bench -p cowlogd-parsers`.

use std::hint::black_box;
use std::io::Write;

use cowlogd_parsers::ReassemblyLimits;
use cowlogd_parsers::Timestamp;
use cowlogd_parsers::decompress::Decompressor;
use cowlogd_parsers::encode::mailcow::{
    ChannelSanitize, encode_channel_payload, encode_list_entry,
};
use cowlogd_parsers::fluent::docker::to_gelf;
use cowlogd_parsers::fluent::forward::{Entries, parse_event};
use cowlogd_parsers::fluent::msgpack::{object_len, write_str};
use cowlogd_parsers::gelf::{ChunkOutcome, GelfMessage, Reassembler, parse_gelf};
use cowlogd_parsers::normalize::{normalize_gelf, normalize_syslog};
use cowlogd_parsers::syslog::{TimeContext, parse_syslog};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RFC3164: &[u8] = b"<22>Nov 24 13:49:59 mail postfix/smtpd[12345]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 <spam@example.net>: Relay access denied; from=<a@b.c> to=<d@e.f> proto=ESMTP helo=<x>\n";
const RFC5424: &[u8] = b"<22>1 2026-11-24T13:49:59.279353+01:00 mail postfix/smtpd 12345 - [timeQuality tzKnown=\"1\" isSynced=\"1\"] NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 Relay access denied\n";

fn docker_gelf() -> Vec<u8> {
    // Docker's shape, ~500 bytes, carrying a postfix line from mailcow.
    br#"{"version":"1.1","host":"docker-host-01","short_message":"Nov 24 13:49:59 mail postfix/smtpd[12345]: warning: unknown[203.0.113.5]: SASL LOGIN authentication failed: UGFzc3dvcmQ6","timestamp":1714557600.123,"level":6,"_command":"/docker-entrypoint.sh","_container_id":"3b2f6e0c9a1d4e5f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f","_container_name":"mailcowdockerized-postfix-mailcow-1","_created":"2024-05-01T09:59:58.123456789Z","_image_id":"sha256:9c7a54a9a43cca047013b82af109fe963fde787f63f9e016fdc3384500c2823d","_image_name":"ghcr.io/mailcow/postfix:1.80","_tag":"3b2f6e0c9a1d"}"#.to_vec()
}

fn ctx() -> TimeContext {
    TimeContext::utc(Timestamp::new(1_795_999_799, 0))
}

fn syslog(c: &mut Criterion) {
    let mut group = c.benchmark_group("syslog");
    group.throughput(Throughput::Elements(1));
    let ctx = ctx();
    group.bench_function("rfc3164_parse_normalize", |b| {
        b.iter(|| {
            let m = parse_syslog(black_box(RFC3164), &ctx);
            black_box(
                normalize_syslog(&m, &ctx, Timestamp::default())
                    .message
                    .len(),
            )
        })
    });
    group.bench_function("rfc5424_parse_normalize", |b| {
        b.iter(|| {
            let m = parse_syslog(black_box(RFC5424), &ctx);
            black_box(
                normalize_syslog(&m, &ctx, Timestamp::default())
                    .message
                    .len(),
            )
        })
    });
    group.finish();
}

fn gelf(c: &mut Criterion) {
    let json = docker_gelf();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
    gz.write_all(&json).unwrap();
    let gzipped = gz.finish().unwrap();
    let ctx = ctx();
    let mut group = c.benchmark_group("gelf");
    group.throughput(Throughput::Elements(1));
    group.bench_function("docker_json_parse_normalize", |b| {
        b.iter(|| {
            let m = parse_gelf(black_box(&json)).unwrap();
            black_box(normalize_gelf(&m, &ctx, Timestamp::default()).message.len())
        })
    });
    let mut decompressor = Decompressor::new(8 << 20);
    group.bench_function("docker_gzip_decompress", |b| {
        b.iter(|| black_box(decompressor.decompress(black_box(&gzipped)).unwrap().len()))
    });
    let mut streaming = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(8192);
    group.bench_function("docker_gzip_inflate_streaming_flate2", |b| {
        b.iter(|| {
            // What the streaming path costs: the same member after its
            // 10-byte header, through flate2 (zlib-rs).
            streaming.reset(false);
            out.clear();
            streaming
                .decompress_vec(&gzipped[10..], &mut out, flate2::FlushDecompress::Finish)
                .unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("docker_gzip_decompress_parse_normalize", |b| {
        b.iter(|| {
            let plain = decompressor.decompress(black_box(&gzipped)).unwrap();
            let m = parse_gelf(plain).unwrap();
            black_box(normalize_gelf(&m, &ctx, Timestamp::default()).message.len())
        })
    });
    // A 3-chunk message (go-gelf's 1,420-byte datagrams), last chunk
    // first, while 1,000 other senders each hold a message half received:
    // the reassembler's bookkeeping on a busy host.
    let mut reassembler = Reassembler::new(ReassemblyLimits::default());
    let chunk = |id: u64, sequence: u8| {
        let mut datagram = vec![0x1e, 0x0f];
        datagram.extend(id.to_be_bytes());
        datagram.extend([sequence, 3]);
        datagram.extend(std::iter::repeat_n(b'x', 1408));
        datagram
    };
    for sender in 0..1_000u32 {
        reassembler.add(sender, &chunk(7, 0), 0).unwrap();
    }
    let chunks = [chunk(1, 2), chunk(1, 0), chunk(1, 1)];
    group.bench_function("chunked_3_datagrams_reassemble_among_1000_pending", |b| {
        b.iter(|| {
            let mut joined = 0;
            for datagram in &chunks {
                if let Ok(ChunkOutcome::Complete(payload)) =
                    reassembler.add(5_000u32, black_box(datagram), 1)
                {
                    joined = payload.len();
                }
            }
            black_box(joined)
        })
    });
    // A flood at the byte cap: every new message's first chunk evicts
    // the oldest of the host holding the most, among ~700 pending and
    // thousands given up on.
    let mut full = Reassembler::new(ReassemblyLimits {
        max_pending_bytes: 1_000_000,
        ..ReassemblyLimits::default()
    });
    let mut id = 0u64;
    let mut first_chunk = move || {
        id += 1;
        (id % 20, chunk(id, 0))
    };
    for _ in 0..20_000 {
        let (sender, datagram) = first_chunk();
        let _ = full.add(sender as u32, &datagram, 1);
    }
    group.bench_function("chunk_flood_at_the_byte_cap_evicts_one_per_chunk", |b| {
        b.iter(|| {
            let (sender, datagram) = first_chunk();
            black_box(full.add(sender as u32, black_box(&datagram), 1).is_ok())
        })
    });
    group.finish();
}

/// Docker's fluentd driver with `fluentd-request-ack` and sub-second
/// precision: `[tag, EventTime, record, {"chunk": id}]`, the same postfix
/// line as the GELF benchmark.
fn docker_forward() -> Vec<u8> {
    let mut out = vec![0x94];
    write_str(&mut out, b"3b2f6e0c9a1d");
    out.extend([0xd7, 0x00, 0x66, 0x32, 0x00, 0x20, 0x07, 0x54, 0xd4, 0xc0]);
    out.push(0x84);
    for (k, v) in [
        (&b"container_id"[..], &b"3b2f6e0c9a1d4e5f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"[..]),
        (b"container_name", b"/mailcowdockerized-postfix-mailcow-1"),
        (b"source", b"stdout"),
        (b"log", b"Nov 24 13:49:59 mail postfix/smtpd[12345]: warning: unknown[203.0.113.5]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"),
    ] {
        write_str(&mut out, k);
        write_str(&mut out, v);
    }
    out.push(0x81);
    write_str(&mut out, b"chunk");
    write_str(&mut out, b"p8n9gmxTQVC8/nh2wlKKeQ==");
    out
}

/// What an input does with one frame from the stream: find the object,
/// parse the event, its record as a GELF message.
fn decode_docker_forward(frame: &[u8]) -> GelfMessage<'_> {
    let len = object_len(frame, 1 << 20).unwrap().unwrap();
    let event = parse_event(&frame[..len]).unwrap();
    let Entries::Message { time, record } = event.entries else {
        unreachable!("Docker sends Message mode")
    };
    to_gelf(event.tag, time, record, None).unwrap().gelf
}

fn fluent(c: &mut Criterion) {
    let frame = docker_forward();
    let ctx = ctx();
    let mut group = c.benchmark_group("fluent");
    group.throughput(Throughput::Elements(1));
    group.bench_function("docker_forward_frame_decode", |b| {
        b.iter(|| black_box(decode_docker_forward(black_box(&frame)).fields.len()))
    });
    group.bench_function("docker_forward_frame_parse_normalize", |b| {
        b.iter(|| {
            let gelf = decode_docker_forward(black_box(&frame));
            black_box(
                normalize_gelf(&gelf, &ctx, Timestamp::default())
                    .message
                    .len(),
            )
        })
    });
    group.finish();
}

fn mailcow(c: &mut Criterion) {
    let json = docker_gelf();
    let ctx = ctx();
    let m = parse_gelf(&json).unwrap();
    let record = normalize_gelf(&m, &ctx, Timestamp::default());
    let mut out = Vec::with_capacity(1024);
    let mut group = c.benchmark_group("mailcow");
    group.throughput(Throughput::Elements(1));
    group.bench_function("list_entry_and_channel_payload", |b| {
        b.iter(|| {
            out.clear();
            encode_list_entry(&mut out, black_box(&record));
            encode_channel_payload(
                &mut out,
                black_box(record.message),
                ChannelSanitize::SyslogNg,
            );
            black_box(out.len())
        })
    });
    group.finish();
}

/// What the Docker API source does with a logs response: 64 multiplexed
/// entries (the same postfix line) cut into entries, joined into lines,
/// each made the gelf driver's message and normalized.
fn docker_api(c: &mut Criterion) {
    use cowlogd_parsers::docker_logs::{LineCursor, LogDemux, Position, Taken};
    use cowlogd_parsers::gelf::{FieldValue, GelfField};
    use std::borrow::Cow;
    let line = b"2024-11-24T13:49:59.123456789Z Nov 24 13:49:59 mail postfix/smtpd[12345]: warning: unknown[203.0.113.5]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n";
    let mut response = Vec::new();
    for _ in 0..64 {
        response.extend_from_slice(&[1, 0, 0, 0]);
        response.extend_from_slice(&(line.len() as u32).to_be_bytes());
        response.extend_from_slice(line);
    }
    let fields = [
        (
            "container_id",
            "3b2f6e0c9a1d4e5f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f",
        ),
        ("container_name", "mailcowdockerized-postfix-mailcow-1"),
        ("image_name", "ghcr.io/mailcow/postfix:1.80"),
        ("tag", "3b2f6e0c9a1d"),
    ]
    .map(|(name, value)| GelfField {
        name: Cow::Borrowed(name),
        value: FieldValue::Str(Cow::Borrowed(value)),
    });
    let ctx = ctx();
    let mut group = c.benchmark_group("docker_api");
    group.throughput(Throughput::Elements(64));
    group.bench_function("logs_response_64_lines_demux_join_normalize", |b| {
        let mut demux = LogDemux::new(true, 64 * 1024);
        let mut cursor = LineCursor::new(Position::default(), 65536);
        b.iter(|| {
            demux.push(black_box(&response));
            let mut total = 0;
            while let Some(Ok(entry)) = demux.next_entry() {
                if let Taken::Line { time, text } =
                    cursor.entry(entry.time, entry.text, entry.ends_line)
                {
                    let message = GelfMessage {
                        version: Some(Cow::Borrowed("1.1")),
                        host: Some(Cow::Borrowed("mx")),
                        short_message: Cow::Borrowed(std::str::from_utf8(text).unwrap()),
                        full_message: None,
                        timestamp: Some(time),
                        level: Some(6),
                        fields: fields.to_vec(),
                    };
                    total += normalize_gelf(&message, &ctx, Timestamp::default())
                        .message
                        .len();
                }
            }
            black_box(total)
        })
    });
    group.finish();
}

criterion_group!(benches, syslog, gelf, fluent, docker_api, mailcow);
criterion_main!(benches);
