//! `cowlogd tail`: the newest entries of mailcow's lists in a terminal, as
//! the UI's log tabs show them, and the ban channel as netfilter sees it.
//!
//! It reads the same config (and `COWLOGD_REDIS_URL`) as the daemon. Entries
//! are the JSON syslog-ng's `format-json` writes, including its `\xNN`
//! escapes for bytes that are not UTF-8 (not valid JSON: they are read as
//! the byte they name).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use redis::Commands;

use crate::config::Settings;

/// The lists the mailcow UI shows.
pub const MAILCOW_KEYS: [&str; 3] = ["POSTFIX_MAILLOG", "DOVECOT_MAILLOG", "SOGO_LOG"];

/// How often `--follow` looks at the lists' heads.
const POLL: Duration = Duration::from_millis(250);
/// Entries read per poll while following; more new ones than this between
/// two polls are reported as a gap.
const FOLLOW_WINDOW: isize = 500;
/// Lists a pattern (`LOGS:*`) shows at most.
const MAX_PATTERN_KEYS: usize = 256;
/// `SCAN` calls (of 1,000 keys each) one pattern may take.
const MAX_SCAN_CALLS: usize = 1_000;
/// How often `--follow` looks for new lists matching a pattern.
const RESCAN: Duration = Duration::from_secs(5);
/// First wait before connecting again; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two connection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// What to show.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Lists to read, or `SCAN` patterns (`LOGS:*`); empty: the three
    /// mailcow lists.
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
/// Redis unreachable (without `--follow`/`--channel`, which wait for it),
/// or a key that is not a list.
pub fn run(settings: &Settings, options: &TailOptions) -> anyhow::Result<()> {
    if settings.redis.url.is_none() {
        bail!("redis.url is empty: Redis is off, there is nothing to tail");
    }
    let client = crate::sinks::redis::client(&settings.redis)?;
    let mut link = Link {
        client,
        shown: settings.redis.shown_url(),
        timeout: settings.redis.connect_timeout,
        patient: options.follow || options.channel,
        connection: None,
        lost: false,
    };
    if options.channel {
        return follow_channel(&mut link, &settings.redis.channel);
    }
    let mut out = std::io::stdout().lock();
    let mut lists = Lists::new(options);
    let keys = link.retrying(|connection| lists.resolve(connection))?;
    let width = keys.iter().map(String::len).max().unwrap_or(0);
    let mut shown_entries = Vec::new();
    for key in &keys {
        // At least the head, so that --follow -n 0 starts after it.
        let Some(mut entries) = read(&mut link, key, options.lines.max(1) as isize)? else {
            eprintln!("cowlogd tail: {key} does not exist (yet)");
            continue;
        };
        lists.newest.insert(key.clone(), entries.first().cloned());
        entries.truncate(options.lines);
        shown_entries.extend(entries.into_iter().rev().map(|e| (key.clone(), e)));
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
    let mut keys = keys;
    let mut last_scan = Instant::now();
    loop {
        std::thread::sleep(POLL);
        if lists.has_patterns() && last_scan.elapsed() >= RESCAN {
            keys = link.retrying(|connection| lists.resolve(connection))?;
            last_scan = Instant::now();
        }
        let width = keys.iter().map(String::len).max().unwrap_or(0);
        for key in &keys {
            let entries = read(&mut link, key, FOLLOW_WINDOW)?.unwrap_or_default();
            let last = lists.newest.entry(key.clone()).or_default();
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

/// The lists asked for: names and `SCAN` patterns, and the newest entry
/// seen of each.
struct Lists {
    /// As given; empty: the mailcow lists.
    asked: Vec<String>,
    newest: HashMap<String, Option<String>>,
    /// Said on stderr already: patterns that match nothing or too much.
    said: HashSet<String>,
}

impl Lists {
    fn new(options: &TailOptions) -> Lists {
        let asked = if options.keys.is_empty() {
            MAILCOW_KEYS.iter().map(|k| (*k).to_owned()).collect()
        } else {
            options.keys.clone()
        };
        Lists {
            asked,
            newest: HashMap::new(),
            said: HashSet::new(),
        }
    }

    fn has_patterns(&self) -> bool {
        self.asked.iter().any(|k| is_pattern(k))
    }

    /// The keys to read: each name as given, each pattern's lists by
    /// `SCAN`, at most [`MAX_PATTERN_KEYS`] in all.
    fn resolve(&mut self, connection: &mut redis::Connection) -> redis::RedisResult<Vec<String>> {
        let mut keys: Vec<String> = Vec::new();
        for asked in &self.asked {
            if !is_pattern(asked) {
                if !keys.contains(asked) {
                    keys.push(asked.clone());
                }
                continue;
            }
            let (found, complete) = scan_lists(connection, asked)?;
            if found.is_empty() && self.said.insert(asked.clone()) {
                eprintln!("cowlogd tail: no list matches {asked}");
            }
            if !complete && self.said.insert(format!("{asked} (more)")) {
                eprintln!(
                    "cowlogd tail: more than {MAX_PATTERN_KEYS} lists match {asked}; showing the first {MAX_PATTERN_KEYS} by name"
                );
            }
            for key in found {
                if keys.len() >= MAX_PATTERN_KEYS {
                    break;
                }
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }
}

/// A `SCAN` pattern rather than a key name.
fn is_pattern(key: &str) -> bool {
    key.contains(['*', '?', '['])
}

/// The first [`MAX_PATTERN_KEYS`] lists by name matching `pattern`, in at
/// most [`MAX_SCAN_CALLS`] `SCAN` calls (`SCAN` returns keys in no order
/// and may return one twice: the set keeps the smallest names only);
/// `false` when more matched or the scan stopped short.
fn scan_lists(
    connection: &mut redis::Connection,
    pattern: &str,
) -> redis::RedisResult<(Vec<String>, bool)> {
    let mut found = std::collections::BTreeSet::new();
    let mut complete = true;
    let mut cursor: u64 = 0;
    for call in 0.. {
        if call == MAX_SCAN_CALLS {
            complete = false;
            break;
        }
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("list")
            .query(connection)?;
        for key in batch {
            found.insert(key);
            if found.len() > MAX_PATTERN_KEYS {
                found.pop_last();
                complete = false;
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok((found.into_iter().collect(), complete))
}

/// The connection to Redis. Patient (`--follow`, `--channel`): a lost or
/// refused connection is said once on stderr and retried with back-off
/// until it is back; else the first failure is the command's error.
struct Link {
    client: redis::Client,
    shown: String,
    timeout: Duration,
    patient: bool,
    connection: Option<redis::Connection>,
    /// The outage has been said.
    lost: bool,
}

impl Link {
    /// The connection, made (again) if needed.
    fn connection(&mut self) -> anyhow::Result<&mut redis::Connection> {
        let mut backoff = RECONNECT_FIRST;
        while self.connection.is_none() {
            match self.client.get_connection_with_timeout(self.timeout) {
                Ok(connection) => {
                    if self.lost {
                        eprintln!("cowlogd tail: connected to Redis at {} again", self.shown);
                        self.lost = false;
                    }
                    self.connection = Some(connection);
                }
                Err(error) if self.patient => {
                    self.say_lost(&error);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
                Err(error) => return Err(unreachable(&self.shown, &error)),
            }
        }
        self.connection
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no connection to Redis"))
    }

    /// Runs `op`; a patient link retries it on a new connection when the
    /// connection failed, any other error is the command's.
    fn retrying<T>(
        &mut self,
        mut op: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> anyhow::Result<T> {
        loop {
            let connection = self.connection()?;
            match op(connection) {
                Ok(value) => return Ok(value),
                Err(error) if self.patient && connection_failed(&error) => {
                    self.connection = None;
                    self.say_lost(&error);
                }
                Err(error) if connection_failed(&error) => {
                    return Err(unreachable(&self.shown, &error));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn say_lost(&mut self, error: &redis::RedisError) {
        if !self.lost {
            eprintln!(
                "cowlogd tail: {}; retrying until it is back",
                unreachable(&self.shown, error)
            );
            self.lost = true;
        }
    }
}

/// Whether `error` is the connection's, not the command's.
fn connection_failed(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
}

/// "Redis at URL unreachable: REASON", the reason once: the client's error
/// repeats its I/O error's text as its source.
fn unreachable(shown: &str, error: &redis::RedisError) -> anyhow::Error {
    anyhow::anyhow!("Redis at {shown} unreachable: {error}")
}

/// The newest `n` entries of `key`, newest first; `None` for a key that
/// does not exist.
fn read(link: &mut Link, key: &str, n: isize) -> anyhow::Result<Option<Vec<String>>> {
    let kind: String = link.retrying(|c| redis::cmd("TYPE").arg(key).query(c))?;
    match kind.as_str() {
        "list" if n > 0 => link.retrying(|c| c.lrange(key, 0, n - 1)).map(Some),
        "list" => Ok(Some(Vec::new())),
        "none" => Ok(None),
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

/// Prints the channel's payloads as netfilter receives them, subscribing
/// again whenever the connection is lost.
fn follow_channel(link: &mut Link, channel: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    loop {
        let connection = link.connection()?;
        let mut pubsub = connection.as_pubsub();
        let error = match pubsub.subscribe(channel) {
            Ok(()) => loop {
                match pubsub.get_message() {
                    Ok(message) => {
                        out.write_all(message.get_payload_bytes())?;
                        out.write_all(b"\n")?;
                        out.flush()?;
                    }
                    Err(error) => break error,
                }
            },
            Err(error) => error,
        };
        drop(pubsub);
        if !connection_failed(&error) {
            return Err(anyhow::Error::from(error).context(format!("reading {channel}")));
        }
        link.connection = None;
        link.say_lost(&error);
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
