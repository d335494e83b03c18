//! `cowlogd tail`: the newest entries of mailcow's lists in a terminal, as
//! the UI's log tabs show them, and the ban channel as netfilter sees it.
//!
//! It reads the same config (and `COWLOGD_REDIS_URL`) as the daemon. Entries
//! are the JSON syslog-ng's `format-json` writes, including its `\xNN`
//! escapes for bytes that are not UTF-8 (not valid JSON: they are read as
//! the byte they name).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use redis::Commands;

use crate::config::Settings;

/// The lists the mailcow UI shows.
pub const MAILCOW_KEYS: [&str; 3] = ["POSTFIX_MAILLOG", "DOVECOT_MAILLOG", "SOGO_LOG"];

/// How often `--follow` looks at the lists' heads.
const POLL: Duration = Duration::from_millis(250);
/// Entries read per poll while following; more new ones than this between
/// two polls are reported as a gap.
const FOLLOW_WINDOW: isize = 500;

/// What to show.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Lists to read; empty: the three mailcow lists.
    pub keys: Vec<String>,
    /// Newest entries per list.
    pub lines: usize,
    /// Keep showing new entries.
    pub follow: bool,
    /// Show the channel instead of the lists.
    pub channel: bool,
    /// Print entries as stored (JSON), not decoded.
    pub json: bool,
    /// ANSI colours.
    pub color: bool,
}

/// One decoded list entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    /// Unix seconds.
    pub time: i64,
    /// `info`, `warning`, …
    pub priority: String,
    /// The program, e.g. `postfix/smtpd`.
    pub program: String,
    /// The message text.
    pub message: String,
}

/// Decodes a mailcow list entry; `None` if it is not one.
///
/// ```
/// let e = cowlogd::tail::decode_entry(r#"{"time":"1712345678","priority":"info","program":"postfix/smtpd","message":"connect from x\xff"}"#).unwrap();
/// assert_eq!((e.time, e.program.as_str(), e.message.as_str()), (1712345678, "postfix/smtpd", "connect from x\u{fffd}"));
/// ```
pub fn decode_entry(raw: &str) -> Option<Entry> {
    let json = json_from_syslog_ng(raw.trim_end());
    let value: serde_json::Value = serde_json::from_str(&json).ok()?;
    let field = |name: &str| value.get(name)?.as_str().map(str::to_owned);
    Some(Entry {
        time: field("time")?.parse().ok()?,
        priority: field("priority")?,
        program: field("program").unwrap_or_default(),
        message: field("message")?,
    })
}

/// syslog-ng writes a byte that is not UTF-8 as `\xNN`; JSON has no such
/// escape. Each one becomes U+FFFD, an unescaped backslash pair is kept.
fn json_from_syslog_ng(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'x'
                && bytes
                    .get(i + 2..i + 4)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            {
                out.push_str("\\ufffd");
                i += 4;
                continue;
            }
            out.push_str(&raw[i..i + 2]);
            i += 2;
            continue;
        }
        let next = raw[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&raw[i..i + next]);
        i += next;
    }
    out
}

/// Runs `cowlogd tail`.
///
/// # Errors
/// Redis unreachable, or a key that is not a list.
pub fn run(settings: &Settings, options: &TailOptions) -> anyhow::Result<()> {
    if settings.redis.url.is_none() {
        bail!("redis.url is empty: Redis is off, there is nothing to tail");
    }
    let shown = settings.redis.shown_url();
    let client = crate::sinks::redis::client(&settings.redis)?;
    let mut connection = client
        .get_connection_with_timeout(settings.redis.connect_timeout)
        .with_context(|| format!("Redis at {shown} unreachable"))?;
    if options.channel {
        return follow_channel(connection, &settings.redis.channel, &shown);
    }
    let keys: Vec<String> = if options.keys.is_empty() {
        MAILCOW_KEYS.iter().map(|k| (*k).to_owned()).collect()
    } else {
        options.keys.clone()
    };
    let width = keys.iter().map(String::len).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    let mut newest: Vec<Option<String>> = Vec::with_capacity(keys.len());
    let mut shown_entries = Vec::new();
    for key in &keys {
        // At least the head, so that --follow -n 0 starts after it.
        let mut entries = read(&mut connection, key, options.lines.max(1) as isize)?;
        newest.push(entries.first().cloned());
        entries.truncate(options.lines);
        shown_entries.extend(entries.into_iter().rev().map(|e| (key.as_str(), e)));
    }
    // Oldest first across the lists, as one log.
    shown_entries.sort_by_key(|(_, raw)| decode_entry(raw).map_or(i64::MIN, |e| e.time));
    for (key, raw) in &shown_entries {
        print(&mut out, key, width, raw, options)?;
    }
    out.flush()?;
    if !options.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(POLL);
        for (key, last) in keys.iter().zip(newest.iter_mut()) {
            let entries = read(&mut connection, key, FOLLOW_WINDOW)?;
            let fresh = match last.as_ref() {
                Some(last) => entries.iter().position(|e| e == last).unwrap_or_else(|| {
                    if entries.len() as isize == FOLLOW_WINDOW {
                        let _ = writeln!(out, "-- {key}: more than {FOLLOW_WINDOW} new entries since the last look; showing the newest --");
                    }
                    entries.len()
                }),
                None => entries.len(),
            };
            for raw in entries[..fresh].iter().rev() {
                print(&mut out, key, width, raw, options)?;
            }
            if fresh > 0 {
                *last = entries.first().cloned();
            }
        }
        out.flush()?;
    }
}

/// The newest `n` entries of `key`, newest first.
fn read(connection: &mut redis::Connection, key: &str, n: isize) -> anyhow::Result<Vec<String>> {
    let kind: String = redis::cmd("TYPE").arg(key).query(connection)?;
    match kind.as_str() {
        "list" if n > 0 => Ok(connection.lrange(key, 0, n - 1)?),
        "list" => Ok(Vec::new()),
        "none" => Ok(Vec::new()),
        other => bail!("{key} holds a {other}, not a list of mailcow entries"),
    }
}

fn print(
    out: &mut impl Write,
    key: &str,
    width: usize,
    raw: &str,
    options: &TailOptions,
) -> std::io::Result<()> {
    if options.json {
        return writeln!(out, "{}", raw.trim_end());
    }
    let Some(entry) = decode_entry(raw) else {
        let shown: String = raw.chars().take(120).collect();
        return writeln!(out, "{key:<width$} (not a mailcow entry) {shown}");
    };
    let time = jiff::Timestamp::from_second(entry.time)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| entry.time.to_string());
    let (paint, reset) = match entry.priority.as_str() {
        _ if !options.color => ("", ""),
        "emerg" | "alert" | "crit" | "err" => ("\x1b[31m", "\x1b[0m"),
        "warning" => ("\x1b[33m", "\x1b[0m"),
        _ => ("", ""),
    };
    let message: String = entry
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    writeln!(
        out,
        "{time} {key:<width$} {paint}{:<7}{reset} {:<16} {message}",
        entry.priority, entry.program
    )
}

/// Prints the channel's payloads as netfilter receives them.
fn follow_channel(
    mut connection: redis::Connection,
    channel: &str,
    shown: &str,
) -> anyhow::Result<()> {
    let mut pubsub = connection.as_pubsub();
    pubsub
        .subscribe(channel)
        .with_context(|| format!("subscribing to {channel} at {shown}"))?;
    let mut out = std::io::stdout().lock();
    loop {
        let message = pubsub.get_message().context("reading the channel")?;
        out.write_all(message.get_payload_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_ng_byte_escapes_are_read_and_json_escapes_kept() {
        let raw =
            r#"{"time":"1","priority":"info","program":"p","message":"a\"b\\xyz \xc3 \u00e9"}"#;
        let e = decode_entry(raw).unwrap();
        assert_eq!(e.message, "a\"b\\xyz \u{fffd} é");
        assert_eq!(decode_entry("not json"), None);
        assert_eq!(
            decode_entry(r#"{"time":"x","priority":"info","message":""}"#),
            None
        );
    }
}
