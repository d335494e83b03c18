//! Any bytes as a program and message: the list entry is always JSON with
//! the four string keys in mailcow's order, and the channel payload is
//! always valid UTF-8 without control bytes or `/`, and cut to any cap it
//! stays a UTF-8 prefix of itself.
#![no_main]
use cowlogd_parsers::Timestamp;
use cowlogd_parsers::encode::mailcow::{
    ChannelSanitize, encode_channel_payload, encode_channel_payload_capped, encode_list_entry,
};
use cowlogd_parsers::limits::char_floor;
use cowlogd_parsers::normalize::normalize_syslog;
use cowlogd_parsers::syslog::{TimeContext, parse_syslog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ctx = TimeContext::utc(Timestamp::new(1_795_999_799, 0));
    let line = parse_syslog(data, &ctx);
    let record = normalize_syslog(&line, &ctx, Timestamp::default());
    let mut entry = Vec::new();
    encode_list_entry(&mut entry, &record);
    assert!(entry.starts_with(b"{\"time\":\"") && entry.ends_with(b"}\n"));
    let value: serde_json::Value = serde_json::from_slice(&entry).expect("entry is not JSON");
    let keys: Vec<&String> = value
        .as_object()
        .expect("entry is not an object")
        .keys()
        .collect();
    assert_eq!(keys, ["message", "priority", "program", "time"]);
    let mut payload = Vec::new();
    encode_channel_payload(&mut payload, record.message, ChannelSanitize::SyslogNg);
    let text = std::str::from_utf8(&payload).expect("payload is not UTF-8");
    assert!(!text.bytes().any(|b| b < 0x20 || b == b'/'));
    // The channel cut the daemon applies, at a cap taken from the input.
    let max = usize::from(data.first().copied().unwrap_or(0)) * 4;
    let mut capped = Vec::new();
    let cut = encode_channel_payload_capped(&mut capped, record.message, ChannelSanitize::SyslogNg, max);
    assert!(std::str::from_utf8(&capped).is_ok(), "cut payload is not UTF-8");
    assert!(payload.starts_with(&capped));
    assert_eq!(cut, payload.len() > max);
    assert!(capped.len() <= max || !cut);
    assert_eq!(char_floor(&payload, max), if cut { capped.len() } else { payload.len().min(max) });
});
