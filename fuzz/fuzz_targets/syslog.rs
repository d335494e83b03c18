//! Any bytes as a syslog line: parsing never panics, and every field the
//! parser returns is a slice of the input.
#![no_main]
use cowlogd_parsers::Timestamp;
use cowlogd_parsers::normalize::normalize_syslog;
use cowlogd_parsers::syslog::{
    TimeContext, parse_embedded_line, parse_headerless_line, parse_syslog,
};
use libfuzzer_sys::fuzz_target;

fn within(input: &[u8], field: Option<&[u8]>) -> bool {
    field.is_none_or(|f| {
        let (start, end) = (
            input.as_ptr() as usize,
            input.as_ptr() as usize + input.len(),
        );
        f.is_empty() || (f.as_ptr() as usize >= start && f.as_ptr() as usize + f.len() <= end)
    })
}

fuzz_target!(|data: &[u8]| {
    let ctx = TimeContext::utc(Timestamp::new(1_795_999_799, 0));
    let m = parse_syslog(data, &ctx);
    for field in [
        m.hostname,
        m.app_name,
        m.proc_id,
        m.msg_id,
        m.structured_data,
        Some(m.msg),
    ] {
        assert!(within(data, field));
    }
    let r = normalize_syslog(&m, &ctx, Timestamp::default());
    assert!(within(data, Some(r.message)));
    let _ = parse_embedded_line(data, &ctx);
    let _ = parse_headerless_line(data, &ctx);
});
