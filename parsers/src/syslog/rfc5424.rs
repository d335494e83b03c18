//! RFC 5424 (§6): `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`,
//! with the leniencies real senders need: NILVALUEs anywhere, 0–9 fraction
//! digits, over-long APP-NAME/MSGID, Docker ≤ 1.12's missing SD, and Docker
//! tags that contain spaces.

use super::structured_data::sd_len;
use super::timestamp::rfc3339;
use super::{Pri, SyslogFormat, SyslogMessage};

/// Longest tag the space-in-tag recovery tries; real tags are far shorter and
/// the bound keeps the search linear on hostile input.
const MAX_SPACED_TAG: usize = 256;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses what follows the PRI; `None` if it is not RFC 5424.
pub(crate) fn parse(after_pri: &[u8], pri: Pri) -> Option<SyslogMessage<'_>> {
    let rest = after_pri.strip_prefix(b"1 ")?;
    let (rest, timestamp) = match rest.strip_prefix(b"-") {
        Some(r) => (r, None),
        None => {
            let (r, ts) = rfc3339(rest).ok()?;
            (r, Some(ts))
        }
    };
    let rest = rest.strip_prefix(b" ")?;
    let (hostname, rest) = token(rest)?;
    let (app_name, proc_id, msg_id, rest) = match header_fields(rest) {
        Some((app, pid, msgid, rest)) if app == msgid || pid.iter().all(u8::is_ascii_digit) => {
            (app, pid, msgid, rest)
        }
        standard => docker_spaced_tag(rest).or(standard)?,
    };
    let (structured_data, msg) = split_sd_and_msg(rest);
    let msg = msg.strip_prefix(BOM).unwrap_or(msg);
    Some(SyslogMessage {
        format: SyslogFormat::Rfc5424,
        pri: Some(pri),
        timestamp,
        hostname: nil_to_none(hostname),
        app_name: nil_to_none(app_name),
        proc_id: nil_to_none(proc_id),
        msg_id: nil_to_none(msg_id),
        structured_data,
        msg,
    })
}

type HeaderFields<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);

/// APP-NAME, PROCID, MSGID as space-separated tokens.
fn header_fields(rest: &[u8]) -> Option<HeaderFields<'_>> {
    let (app, rest) = token(rest)?;
    let (pid, rest) = token(rest)?;
    let (msgid, rest) = token(rest)?;
    Some((app, pid, msgid, rest))
}

/// Docker writes its tag as both APP-NAME and MSGID, unescaped: a tag with
/// spaces reads `my app 4840 my app - msg`. Find `T SP digits SP T SP`.
fn docker_spaced_tag(rest: &[u8]) -> Option<HeaderFields<'_>> {
    let window = &rest[..rest.len().min(MAX_SPACED_TAG)];
    for (space, _) in window.iter().enumerate().filter(|(_, b)| **b == b' ') {
        let tag = &rest[..space];
        let after = &rest[space + 1..];
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || after.get(digits) != Some(&b' ') {
            continue;
        }
        let pid = &after[..digits];
        let after_pid = &after[digits + 1..];
        if let Some(tail) = after_pid.strip_prefix(tag)
            && (tail.is_empty() || tail[0] == b' ')
        {
            return Some((tag, pid, tag, tail.strip_prefix(b" ").unwrap_or(tail)));
        }
    }
    None
}

/// SD is `-`, one or more `[...]`, or (Docker ≤ 1.12) absent, in which case
/// everything left is MSG.
fn split_sd_and_msg(rest: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if rest == b"-" {
        return (None, b"");
    }
    if let Some(msg) = rest.strip_prefix(b"- ") {
        return (None, msg);
    }
    if let Some(len) = sd_len(rest) {
        let msg = &rest[len..];
        if msg.is_empty() || msg[0] == b' ' {
            return (Some(&rest[..len]), msg.strip_prefix(b" ").unwrap_or(msg));
        }
    }
    (None, rest)
}

/// A run of non-space bytes followed by one space or the end.
fn token(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(b' ', input).unwrap_or(input.len());
    if end == 0 {
        return None;
    }
    let rest = input.get(end + 1..).unwrap_or(&[]);
    Some((&input[..end], rest))
}

fn nil_to_none(field: &[u8]) -> Option<&[u8]> {
    (field != b"-").then_some(field)
}
