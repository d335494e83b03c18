//! Any bytes as GELF JSON: never panics; whatever parses re-encodes to JSON
//! that serde_json accepts and that parses back to the same short_message.
#![no_main]
use cowlogd_parsers::Timestamp;
use cowlogd_parsers::encode::gelf::{ForwardContext, encode_gelf};
use cowlogd_parsers::gelf::{parse_gelf, parse_gelf_lossy};
use cowlogd_parsers::normalize::normalize_gelf;
use cowlogd_parsers::syslog::TimeContext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut scratch = String::new();
    let Ok(message) = parse_gelf_lossy(data, &mut scratch) else {
        return;
    };
    let ctx = TimeContext::utc(Timestamp::new(1_795_999_799, 0));
    let record = normalize_gelf(&message, &ctx, Timestamp::new(1, 0));
    let mut out = Vec::new();
    encode_gelf(
        &mut out,
        &record,
        &ForwardContext {
            fallback_host: "h",
            route: None,
        },
    );
    let _: serde_json::Value = serde_json::from_slice(&out).expect("encoder wrote invalid JSON");
    let again = parse_gelf(&out).expect("own output does not parse");
    assert_eq!(again.short_message, message.short_message);
});
