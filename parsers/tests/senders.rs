//! Every line captured from the senders (Docker's gelf, syslog and fluentd
//! drivers, go-gelf, util-linux `logger`, other GELF and syslog clients) and
//! every mailcow list entry shape, parsed with each field asserted. Tests
//! are named after the sender that produced the bytes.

mod support;

use cowlogd_parsers::decompress::{Compression, Decompressor, detect_compression};
use cowlogd_parsers::encode::mailcow::{
    ChannelSanitize, encode_channel_payload, encode_list_entry,
};
use cowlogd_parsers::framing::{Decoded, Framer};
use cowlogd_parsers::gelf::{ChunkOutcome, FieldValue, Reassembler, is_chunk, parse_gelf};
use cowlogd_parsers::normalize::{normalize_gelf, normalize_syslog};
use cowlogd_parsers::syslog::{
    Pri, SyslogFormat, SyslogMessage, TimeContext, parse_syslog, sd_elements,
};
use cowlogd_parsers::{Facility, ReassemblyLimits, Severity, Stream, Timestamp};
use support::go_gelf::{self, GoCompression};

/// 2026-11-24T13:49:59Z.
const NOV_24_13_49_59: i64 = 1_795_528_199;
/// Received "now" for BSD year resolution: 2026-11-29.
fn ctx() -> TimeContext {
    TimeContext::utc(Timestamp::new(1_795_999_799, 0))
}

fn syslog(line: &[u8]) -> SyslogMessage<'_> {
    parse_syslog(line, &ctx())
}

fn b(s: &str) -> Option<&[u8]> {
    Some(s.as_bytes())
}

fn pri(value: u32) -> Option<Pri> {
    Pri::from_value(value)
}

// --- Docker's syslog driver -------------------------------------------------

#[test]
fn docker_syslog_default_format_has_no_hostname() {
    let m = syslog(b"<30>Nov 24 13:49:59 3b2f6e0c9a1d[4840]: hello world\n");
    assert_eq!(m.format, SyslogFormat::Rfc3164);
    assert_eq!(m.pri, pri(30));
    assert_eq!(m.timestamp, Some(Timestamp::new(NOV_24_13_49_59, 0)));
    assert_eq!(m.hostname, None);
    assert_eq!(m.app_name, b("3b2f6e0c9a1d"));
    assert_eq!(m.proc_id, b("4840"));
    assert_eq!(m.msg, b"hello world");
}

#[test]
fn docker_syslog_rfc3164_format_has_hostname() {
    let m = syslog(b"<27>Nov 24 13:49:59 vm 3b2f6e0c9a1d[4840]: oops on stderr\n");
    assert_eq!(
        m.pri.map(|p| (p.facility, p.severity)),
        Some((Facility::DAEMON, Severity::Error))
    );
    assert_eq!(m.hostname, b("vm"));
    assert_eq!(m.app_name, b("3b2f6e0c9a1d"));
    assert_eq!(m.proc_id, b("4840"));
    assert_eq!(m.msg, b"oops on stderr");
}

#[test]
fn docker_syslog_rfc5424_format() {
    let m = syslog(
        b"<30>1 2026-11-24T13:49:59+01:00 vm 3b2f6e0c9a1d 4840 3b2f6e0c9a1d - hello world\n",
    );
    assert_eq!(m.format, SyslogFormat::Rfc5424);
    assert_eq!(m.timestamp, Some(Timestamp::new(NOV_24_13_49_59 - 3600, 0)));
    assert_eq!(m.hostname, b("vm"));
    assert_eq!(m.app_name, b("3b2f6e0c9a1d"));
    assert_eq!(m.proc_id, b("4840"));
    assert_eq!(m.msg_id, b("3b2f6e0c9a1d"));
    assert_eq!(m.structured_data, None);
    assert_eq!(m.msg, b"hello world");
}

#[test]
fn docker_syslog_rfc5424micro_format() {
    let m = syslog(
        b"<30>1 2026-11-24T13:49:59.279353+01:00 vm 3b2f6e0c9a1d 4840 3b2f6e0c9a1d - hello world\n",
    );
    assert_eq!(
        m.timestamp,
        Some(Timestamp::new(NOV_24_13_49_59 - 3600, 279_353_000))
    );
    assert_eq!(m.msg, b"hello world");
}

#[test]
fn docker_syslog_tcp_tls_octet_counted_frames() {
    let first = b"<30>1 2026-11-24T13:49:59+01:00 vm 3b2f6e0c9a1d 4840 3b2f6e0c9a1d - first\n";
    let second = b"<30>1 2026-11-24T13:49:59+01:00 vm 3b2f6e0c9a1d 4840 3b2f6e0c9a1d - second\n";
    let stream = [&b"74 "[..], first, b"75 ", second].concat();
    let mut framer = Framer::syslog(64 * 1024);
    let mut pos = 0;
    let mut messages = Vec::new();
    while let Decoded::Frame { frame, consumed } = framer.decode(&stream[pos..]) {
        messages.push(syslog(frame).msg.to_vec());
        pos += consumed;
    }
    assert_eq!(pos, stream.len());
    assert_eq!(messages, vec![b"first".to_vec(), b"second".to_vec()]);
}

#[test]
fn docker_1_12_rfc5424_without_structured_data() {
    let m = syslog(b"<30>1 2016-09-27T10:00:00+00:00 host tag 123 tag msg");
    assert_eq!(m.format, SyslogFormat::Rfc5424);
    assert_eq!(
        (m.hostname, m.app_name, m.proc_id, m.msg_id),
        (b("host"), b("tag"), b("123"), b("tag"))
    );
    assert_eq!(m.structured_data, None);
    assert_eq!(m.msg, b"msg");
}

#[test]
fn docker_rfc5424_tag_with_spaces_colons_and_over_rfc_length() {
    let tag = "mailcow/postfix: a very long tag that is well over forty-eight characters";
    let line = format!("<30>1 2026-11-24T13:49:59Z vm {tag} 4840 {tag} - hello");
    let m = syslog(line.as_bytes());
    assert_eq!(m.app_name, b(tag));
    assert_eq!(m.msg_id, b(tag));
    assert_eq!(m.proc_id, b("4840"));
    assert_eq!(m.msg, b"hello");
}

#[test]
fn docker_syslog_relaying_mailcow_stdout_names_container_and_program() {
    let m = syslog(b"<30>Nov 24 13:49:59 postfix-mailcow[4840]: Aug  5 12:34:56 mail postfix/smtpd[123]: warning: hostname x does not resolve\n");
    let r = normalize_syslog(&m, &ctx(), Timestamp::default());
    assert_eq!(r.container, b("postfix-mailcow"));
    assert_eq!(r.program, b("postfix/smtpd"));
    assert_eq!(r.pid, b("123"));
    assert_eq!(r.severity, Severity::Warning);
    assert_eq!(r.stream, Some(Stream::Stdout));
    assert_eq!(r.message, b"warning: hostname x does not resolve");
    assert!(r.inner_syslog);
}

// --- util-linux logger 2.38 -----------------------------------------------

#[test]
fn logger_udp_rfc3164_without_newline() {
    let m = syslog(b"<22>Nov 24 13:19:08 vm postfix/smtpd: udp rfc3164 msg");
    assert_eq!(m.pri.map(|p| p.facility), Some(Facility::MAIL));
    assert_eq!(m.hostname, b("vm"));
    assert_eq!((m.app_name, m.proc_id), (b("postfix/smtpd"), None));
    assert_eq!(m.msg, b"udp rfc3164 msg");
}

#[test]
fn logger_default_rfc5424_with_time_quality() {
    let m = syslog(b"<22>1 2026-11-24T13:19:09.344022+00:00 vm postfix/smtpd - - [timeQuality tzKnown=\"1\" isSynced=\"0\"] msg");
    assert_eq!(m.format, SyslogFormat::Rfc5424);
    assert_eq!(
        m.timestamp,
        Some(Timestamp::new(NOV_24_13_49_59 - 30 * 60 - 50, 344_022_000))
    );
    assert_eq!(
        (m.app_name, m.proc_id, m.msg_id),
        (b("postfix/smtpd"), None, None)
    );
    assert_eq!(
        m.structured_data,
        Some(&b"[timeQuality tzKnown=\"1\" isSynced=\"0\"]"[..])
    );
    assert_eq!(sd_elements(m.structured_data.unwrap())[0].params.len(), 2);
    assert_eq!(m.msg, b"msg");
}

#[test]
fn logger_tcp_octet_count_without_newline() {
    let line = b"<22>Nov 24 13:19:08 vm postfix/smtpd: tcp octet msg 1";
    let stream = [format!("{} ", line.len()).as_bytes(), line].concat();
    let mut framer = Framer::syslog(1024);
    let Decoded::Frame { frame, consumed } = framer.decode(&stream) else {
        panic!("no frame")
    };
    assert_eq!(consumed, stream.len());
    assert_eq!(syslog(frame).msg, b"tcp octet msg 1");
}

// --- field variants ------------------------------------------------------

#[test]
fn missing_pri_defaults_to_user_notice() {
    let m = syslog(b"Nov 24 13:49:59 vm app[1]: x");
    assert_eq!(m.pri, None);
    assert_eq!(m.pri_or_default(), Pri::DEFAULT);
    assert_eq!(
        (m.hostname, m.app_name, m.msg),
        (b("vm"), b("app"), &b"x"[..])
    );
}

#[test]
fn space_after_pri() {
    let m = syslog(b"<13> Nov 24 13:49:59 vm app: x");
    assert_eq!(
        (m.timestamp.map(|t| t.secs), m.app_name),
        (Some(NOV_24_13_49_59), b("app"))
    );
}

#[test]
fn rsyslog_forward_format_rfc3339_in_bsd_line() {
    let m = syslog(b"<190>2019-02-13T21:53:30.605850+00:00 host tag: msg");
    assert_eq!(m.format, SyslogFormat::Rfc3164);
    assert_eq!(
        m.timestamp,
        Some(Timestamp::new(1_550_094_810, 605_850_000))
    );
    assert_eq!(
        (m.hostname, m.app_name, m.msg),
        (b("host"), b("tag"), &b"msg"[..])
    );
}

#[test]
fn year_in_bsd_timestamp_and_upper_case_month() {
    let m = syslog(b"<13>NOV 24 2019 13:49:59 host tag: msg");
    assert_eq!(m.timestamp, Some(Timestamp::new(1_574_603_399, 0)));
    assert_eq!(m.hostname, b("host"));
}

#[test]
fn nilvalue_timestamp_rfc5424() {
    let m = syslog(b"<14>1 - host app - - - msg");
    assert_eq!(m.format, SyslogFormat::Rfc5424);
    assert_eq!(m.timestamp, None);
    assert_eq!(
        (m.hostname, m.app_name, m.msg),
        (b("host"), b("app"), &b"msg"[..])
    );
}

#[test]
fn brackets_at_start_of_message_stay_in_message() {
    let m = syslog(b"<11>Nov 24 13:49:59 web [php7:emerg] pid 42: fatal");
    assert_eq!((m.hostname, m.app_name), (b("web"), None));
    assert_eq!(m.msg, b"[php7:emerg] pid 42: fatal");
    let m = syslog(b"<11>Nov 24 13:49:59 web apache2: [php7:emerg] x");
    assert_eq!((m.app_name, m.msg), (b("apache2"), &b"[php7:emerg] x"[..]));
}

#[test]
fn nul_and_crlf_trailers_are_stripped_other_spaces_kept() {
    assert_eq!(syslog(b"<13>Nov 24 13:49:59 h a: x \r\n").msg, b"x ");
    assert_eq!(syslog(b"<13>Nov 24 13:49:59 h a: x\0").msg, b"x");
    assert_eq!(syslog(b"<13>Nov 24 13:49:59 h a: x\t\n").msg, b"x\t");
}

#[test]
fn invalid_utf8_is_kept_as_bytes() {
    let m = syslog(b"<13>Nov 24 13:49:59 h a: caf\xe9 \xff");
    assert_eq!(m.msg, b"caf\xe9 \xff");
}

#[test]
fn sogo_line_with_space_before_pid() {
    let m = syslog(b"Nov 24 13:49:59 sogod [109]: mailcowdockerized_watchdog-mailcow_1 \"GET /SOGo.index/ HTTP/1.1\" 200");
    assert_eq!(
        (m.hostname, m.app_name, m.proc_id),
        (None, b("sogod"), b("109"))
    );
    assert_eq!(
        m.msg,
        b"[109]: mailcowdockerized_watchdog-mailcow_1 \"GET /SOGo.index/ HTTP/1.1\" 200"
    );
}

#[test]
fn plain_text_is_kept_whole() {
    let m = syslog(b"just some text\n");
    assert_eq!(m.format, SyslogFormat::Plain);
    assert_eq!((m.pri, m.timestamp, m.app_name), (None, None, None));
    assert_eq!(m.msg, b"just some text");
}

// --- Docker's gelf driver (go-gelf) ----------------------------------------

const DOCKER_GELF: &[u8] = br#"{"version":"1.1","host":"docker-host-01","short_message":"GET /health 200 \u003cok\u003e \u0026 \"fine\"","timestamp":1714557600.123,"level":6,"_ENV":"prod","_com.example.team":"payments","_command":"/docker-entrypoint.sh nginx -g daemon off;","_container_id":"3b2f6e0c9a1d4e5f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f","_container_name":"web-1","_created":"2024-05-01T09:59:58.123456789Z","_image_id":"sha256:9c7a54a9a43cca047013b82af109fe963fde787f63f9e016fdc3384500c2823d","_image_name":"nginx:1.25","_tag":"3b2f6e0c9a1d"}"#;

fn assert_docker_sample(json: &[u8]) {
    let m = parse_gelf(json).unwrap();
    assert_eq!(m.version.as_deref(), Some("1.1"));
    assert_eq!(m.host.as_deref(), Some("docker-host-01"));
    assert_eq!(m.short_message, "GET /health 200 <ok> & \"fine\"");
    assert_eq!(
        m.timestamp,
        Some(Timestamp::new(1_714_557_600, 123_000_000))
    );
    assert_eq!(m.level, Some(6));
    let fields: Vec<(&str, &str)> = m
        .fields
        .iter()
        .map(|f| (f.name.as_ref(), f.value.as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("ENV", "prod"),
            ("com.example.team", "payments"),
            ("command", "/docker-entrypoint.sh nginx -g daemon off;"),
            (
                "container_id",
                "3b2f6e0c9a1d4e5f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"
            ),
            ("container_name", "web-1"),
            ("created", "2024-05-01T09:59:58.123456789Z"),
            (
                "image_id",
                "sha256:9c7a54a9a43cca047013b82af109fe963fde787f63f9e016fdc3384500c2823d"
            ),
            ("image_name", "nginx:1.25"),
            ("tag", "3b2f6e0c9a1d"),
        ]
    );
    let r = normalize_gelf(&m, &ctx(), Timestamp::default());
    assert_eq!(
        (r.container, r.program, r.stream),
        (b("web-1"), None, Some(Stream::Stdout))
    );
    assert_eq!((r.severity, r.inner_syslog), (Severity::Info, false));
}

fn decode_single_datagram(datagram: &[u8]) -> Vec<u8> {
    assert!(!is_chunk(datagram));
    Decompressor::new(8 << 20)
        .decompress(datagram)
        .unwrap()
        .to_vec()
}

#[test]
fn go_gelf_gzip_level_1_single_datagram() {
    let d = go_gelf::datagrams(DOCKER_GELF, GoCompression::Gzip(1), *b"AAAAAAAA");
    assert_eq!(d.len(), 1);
    assert_eq!(&d[0][..10], b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff");
    assert_docker_sample(&decode_single_datagram(&d[0]));
}

#[test]
fn go_gelf_zlib_at_every_level_and_level_0() {
    for level in [0, 1, 6, 9] {
        let d = go_gelf::datagrams(DOCKER_GELF, GoCompression::Zlib(level), *b"AAAAAAAA");
        assert_eq!(detect_compression(&d[0]), Compression::Zlib);
        assert_docker_sample(&decode_single_datagram(&d[0]));
    }
    let d = go_gelf::datagrams(DOCKER_GELF, GoCompression::Gzip(0), *b"AAAAAAAA");
    assert_docker_sample(&decode_single_datagram(&d[0]));
}

#[test]
fn go_gelf_uncompressed() {
    let d = go_gelf::datagrams(DOCKER_GELF, GoCompression::None, *b"AAAAAAAA");
    assert_eq!(&d[0][..2], b"{\"");
    assert_docker_sample(&decode_single_datagram(&d[0]));
}

#[test]
fn docker_timestamp_without_decimal_point() {
    let json = String::from_utf8_lossy(DOCKER_GELF).replace("1714557600.123", "1714557600");
    let m = parse_gelf(json.as_bytes()).unwrap();
    assert_eq!(m.timestamp, Some(Timestamp::new(1_714_557_600, 0)));
}

/// Reassembles datagrams in the given order; returns the decompressed JSON.
fn reassemble(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut done = None;
    for d in datagrams {
        if let ChunkOutcome::Complete(payload) = r.add("docker-host:40000", d, 0).unwrap() {
            assert!(done.is_none(), "completed twice");
            done = Some(payload);
        }
    }
    let payload = done.expect("message never completed");
    Decompressor::new(8 << 20)
        .decompress(&payload)
        .unwrap()
        .to_vec()
}

/// A Docker JSON whose uncompressed encoding is exactly `len` bytes.
fn docker_json_of_len(len: usize) -> Vec<u8> {
    let base = go_gelf::docker_json("web-1", "", "1714557600.123", 6);
    let line = "x".repeat(len - base.len());
    let json = go_gelf::docker_json("web-1", &line, "1714557600.123", 6);
    assert_eq!(json.len(), len);
    json
}

#[test]
fn go_gelf_chunked_exact_multiple_ends_in_empty_12_byte_chunk() {
    let json = docker_json_of_len(2816);
    let d = go_gelf::datagrams(&json, GoCompression::None, *b"BBBBBBBB");
    assert_eq!(
        d.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1420, 1420, 12]
    );
    assert_eq!(reassemble(&d), json);
}

#[test]
fn go_gelf_chunked_gzip_out_of_order_and_duplicated() {
    let line = go_gelf::noise(0x2545_f491, 6000);
    let json = go_gelf::docker_json(
        "mailcowdockerized-postfix-mailcow-1",
        &line,
        "1714557600",
        6,
    );
    let d = go_gelf::datagrams(&json, GoCompression::Gzip(1), *b"CCCCCCCC");
    assert!(
        d.len() >= 3,
        "want a chunked message, got {} datagram(s)",
        d.len()
    );
    let mut shuffled: Vec<Vec<u8>> = d.iter().rev().cloned().collect();
    shuffled.insert(1, d[d.len() - 1].clone());
    assert_eq!(reassemble(&shuffled), json);
}

#[test]
fn chunks_of_two_senders_interleaved() {
    let a = docker_json_of_len(3000);
    let b_json = docker_json_of_len(3100);
    let da = go_gelf::datagrams(&a, GoCompression::None, *b"SAMEIDXX");
    let db = go_gelf::datagrams(&b_json, GoCompression::None, *b"SAMEIDXX");
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut completed = Vec::new();
    for (x, y) in da.iter().zip(db.iter()) {
        for (sender, d) in [("a", x), ("b", y)] {
            if let ChunkOutcome::Complete(p) = r.add(sender, d, 0).unwrap() {
                completed.push((sender, p));
            }
        }
    }
    assert_eq!(completed, vec![("a", a), ("b", b_json)]);
}

#[test]
fn graypy_version_1_0_zlib_chunks_of_1432() {
    let json = br#"{"version": "1.0", "host": "app01", "short_message": "graypy says hi", "full_message": "traceback", "timestamp": 1714557600.5, "level": 4, "facility": "myapp", "file": "/srv/app.py", "line": 42, "_logger": "root"}"#;
    let payload = go_gelf::compress(json, GoCompression::Zlib(6));
    assert_eq!(&payload[..2], b"\x78\x9c");
    let m = parse_gelf(json).unwrap();
    assert_eq!(m.version.as_deref(), Some("1.0"));
    assert_eq!(m.full_message.as_deref(), Some("traceback"));
    assert_eq!(m.level, Some(4));
    assert_eq!(m.str_field("facility"), Some("myapp"));
    assert_eq!(m.str_field("file"), Some("/srv/app.py"));
    assert_eq!(
        m.field("line")
            .map(|v| matches!(v, FieldValue::Json(raw) if raw.get() == "42")),
        Some(true)
    );
    assert_eq!(m.str_field("logger"), Some("root"));
    let r = normalize_gelf(&m, &ctx(), Timestamp::default());
    assert_eq!((r.severity, r.container), (Severity::Warning, None));
}

#[test]
fn pygelf_null_stack_info_is_skipped() {
    let m = parse_gelf(
        br#"{"version":"1.1","host":"h","short_message":"x","_stack_info":null,"_a":1}"#,
    )
    .unwrap();
    assert_eq!(m.field("stack_info"), None);
    assert_eq!(m.fields.len(), 1);
}

#[test]
fn graylog_leniency() {
    let m = parse_gelf(br#"{"short_message":"  ","timestamp":"1714557600.250","_id":"abc","_bad name/with:chars":"kept","_n":1.5,"_b":true,"_o":{"k":[1,2]},"_s":"a\"b"}"#).unwrap();
    assert_eq!(m.short_message, "  ");
    assert_eq!((&m.host, m.level), (&None, None));
    assert_eq!(
        m.timestamp,
        Some(Timestamp::new(1_714_557_600, 250_000_000))
    );
    assert_eq!(m.str_field("id"), Some("abc"));
    assert_eq!(m.str_field("bad name/with:chars"), Some("kept"));
    let raw = |n: &str| match m.field(n) {
        Some(FieldValue::Json(r)) => r.get().to_owned(),
        other => panic!("{n}: {other:?}"),
    };
    assert_eq!(
        (raw("n"), raw("b"), raw("o")),
        ("1.5".into(), "true".into(), r#"{"k":[1,2]}"#.into())
    );
    assert_eq!(m.str_field("s"), Some("a\"b"));
    for bad_time in ["0", "-5", "\"soon\""] {
        let json = format!(r#"{{"short_message":"x","timestamp":{bad_time}}}"#);
        assert_eq!(
            parse_gelf(json.as_bytes()).unwrap().timestamp,
            None,
            "{bad_time}"
        );
    }
    assert!(parse_gelf(br#"{"host":"h"}"#).is_err());
    assert!(parse_gelf(b"[1,2]").is_err());
}

// --- mailcow's containers via Docker GELF ----------------------------------

fn mailcow_record_fields(
    container: &str,
    line: &str,
    level: u8,
) -> (Option<String>, Severity, String, bool) {
    let json = go_gelf::docker_json(container, line, "1712345678.900", level);
    let m = parse_gelf(&json).unwrap();
    let r = normalize_gelf(&m, &ctx(), Timestamp::default());
    assert_eq!(r.time, Timestamp::new(1_712_345_678, 900_000_000));
    (
        r.program.map(|p| String::from_utf8_lossy(p).into_owned()),
        r.severity,
        String::from_utf8_lossy(r.message).into_owned(),
        r.inner_syslog,
    )
}

#[test]
fn postfix_markers_set_severity() {
    let c = "mailcowdockerized-postfix-mailcow-1";
    for (marker, severity) in [
        ("warning:", Severity::Warning),
        ("error:", Severity::Error),
        ("fatal:", Severity::Critical),
        ("panic:", Severity::Alert),
    ] {
        let line = format!("Aug  5 12:34:56 mail postfix/smtpd[123]: {marker} something");
        let (program, sev, message, inner) = mailcow_record_fields(c, &line, 6);
        assert_eq!(
            (program.as_deref(), sev, inner),
            (Some("postfix/smtpd"), severity, true)
        );
        assert_eq!(message, format!("{marker} something"));
    }
    let (_, sev, _, _) = mailcow_record_fields(
        c,
        "Aug  5 12:34:56 mail postfix/smtpd[123]: connect from x",
        6,
    );
    assert_eq!(sev, Severity::Info);
    let (_, sev, _, _) = mailcow_record_fields(
        c,
        "Aug  5 12:34:56 mail postfix/smtpd[123]: connect from x",
        3,
    );
    assert_eq!(sev, Severity::Error);
}

#[test]
fn dovecot_markers_after_log_prefix() {
    let c = "mailcowdockerized-dovecot-mailcow-1";
    for (text, severity) in [
        ("auth: Error: ldap down", Severity::Error),
        (
            "imap(u@x.org)<123><AbCd>: Error: quota exceeded",
            Severity::Error,
        ),
        ("auth-worker(4521): Warning: slow", Severity::Warning),
        ("master: Fatal: x", Severity::Critical),
        ("master: Panic: x", Severity::Alert),
        ("imap-login: Login: user=<u@x.org>", Severity::Info),
    ] {
        let line = format!("Nov 24 13:49:59 mail dovecot: {text}");
        let (program, sev, message, _) = mailcow_record_fields(c, &line, 6);
        assert_eq!(
            (program.as_deref(), sev),
            (Some("dovecot"), severity),
            "{text}"
        );
        assert_eq!(message, text);
    }
}

#[test]
fn supervisord_and_entrypoint_chatter_is_not_a_syslog_line() {
    let c = "mailcowdockerized-postfix-mailcow-1";
    for line in [
        "2026-11-24 12:00:00,123 INFO success: syslog-ng entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)",
        "Waiting for DNS...",
        "",
    ] {
        let (program, _, message, inner) = mailcow_record_fields(c, line, 6);
        assert_eq!((program, inner, message.as_str()), (None, false, line));
    }
}

// --- mailcow contract encoders -------------------------------------------

#[test]
fn mailcow_list_entry_matches_contract_byte_for_byte() {
    let json = go_gelf::docker_json(
        "mailcowdockerized-postfix-mailcow-1",
        "Apr  5 19:34:38 mail postfix/smtpd[123]: connect from unknown[203.0.113.5]",
        "1712345678",
        6,
    );
    let m = parse_gelf(&json).unwrap();
    let r = normalize_gelf(&m, &ctx(), Timestamp::default());
    let mut entry = Vec::new();
    encode_list_entry(&mut entry, &r);
    assert_eq!(
        entry,
        b"{\"time\":\"1712345678\",\"program\":\"postfix/smtpd\",\"priority\":\"info\",\"message\":\"connect from unknown[203.0.113.5]\"}\n"
    );
}

#[test]
fn sogo_entry_keeps_pid_prefix_in_message() {
    let json = go_gelf::docker_json(
        "mailcowdockerized-sogo-mailcow-1",
        "Nov 24 13:49:59 sogod [109]: mailcowdockerized_watchdog-mailcow_1.mailcowdockerized_mailcow-network \"GET /SOGo.index/ HTTP/1.1\" 200 2531/0 0.005 - - 0",
        "1795528199",
        6,
    );
    let m = parse_gelf(&json).unwrap();
    let mut r = normalize_gelf(&m, &ctx(), Timestamp::default());
    // syslog-ng gives SOGo's PRI-less lines user.notice; the router's
    // mailcow profile sets that severity for SOGo.
    r.severity = Severity::Notice;
    let mut entry = Vec::new();
    encode_list_entry(&mut entry, &r);
    assert_eq!(
        String::from_utf8(entry).unwrap(),
        "{\"time\":\"1795528199\",\"program\":\"sogod\",\"priority\":\"notice\",\"message\":\"[109]: mailcowdockerized_watchdog-mailcow_1.mailcowdockerized_mailcow-network \\\"GET /SOGo.index/ HTTP/1.1\\\" 200 2531/0 0.005 - - 0\"}\n"
    );
}

#[test]
fn invalid_utf8_in_entry_is_hex_text_and_in_channel_is_replacement() {
    let line = parse_syslog(
        b"<22>Nov 24 13:49:59 mx postfix/smtpd[1]: caf\xe9 \x01/x",
        &ctx(),
    );
    let r = normalize_syslog(&line, &ctx(), Timestamp::default());
    let mut entry = Vec::new();
    encode_list_entry(&mut entry, &r);
    let text = String::from_utf8(entry).unwrap();
    assert!(
        text.ends_with("\"message\":\"caf\\\\xe9 \\u0001/x\"}\n"),
        "{text}"
    );
    let decoded: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(decoded["message"], "caf\\xe9 \u{1}/x");
    let mut payload = Vec::new();
    encode_channel_payload(&mut payload, r.message, ChannelSanitize::SyslogNg);
    assert_eq!(String::from_utf8(payload).unwrap(), "caf\u{fffd} __x");
}

#[test]
fn netfilter_default_rule_lines_survive_sanitize() {
    for line in [
        "warning: unknown[203.0.113.5]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
        "warning: non-SMTP command from unknown[203.0.113.5]: GET / HTTP/1.1",
        "NOQUEUE: reject: RCPT from [203.0.113.5]: 554 Protocol error",
        "auth(u@x.org,203.0.113.5,<AbCd>): Password mismatch (SHA1 of given password: 0123abcd)",
        "SOGo[109]: Login from '203.0.113.5' for user u might not have worked",
    ] {
        let mut payload = Vec::new();
        encode_channel_payload(&mut payload, line.as_bytes(), ChannelSanitize::SyslogNg);
        let expected = line.replace('/', "_");
        assert_eq!(String::from_utf8(payload).unwrap(), expected);
    }
    let mut payload = Vec::new();
    encode_channel_payload(
        &mut payload,
        b"203.0.113.5 \"GET /SOGo/so/u HTTP/1.1\" 403 0",
        ChannelSanitize::ControlOnly,
    );
    assert_eq!(payload, b"203.0.113.5 \"GET /SOGo/so/u HTTP/1.1\" 403 0");
}
