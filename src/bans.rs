//! `cowlogd bans`: who is attacking right now, in a terminal. It reads the
//! running daemon's `GET /f2b` (on `metrics.listen`) and shows the top
//! offenders: attempts in netfilter's window against `max_attempts`, the
//! rules that matched, and whether netfilter has banned them and for how
//! long (from `F2B_ACTIVE_BANS`, as the daemon last polled it).
//!
//! ```text
//! 9 rules · ban after 10 attempts in 600 s · netfilter bans 1 network · 2 offenders tracked
//! NETWORK                          ATTEMPTS  TOTAL  RULES  FIRST     LAST      NETFILTER
//! 185.12.64.9/32                   12/10     12     3      13:49:59  13:50:03  banned, 59m left
//! 2a01:4f8::1/128                  3/10      3      1,3    13:50:01  13:50:02  -
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Settings;
use crate::f2b::Snapshot;

/// How long one request to the daemon may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What to show.
#[derive(Debug, Clone)]
pub struct BansOptions {
    /// Offenders shown.
    pub top: usize,
    /// Redraw every `interval` until interrupted.
    pub follow: bool,
    /// Time between redraws.
    pub interval: Duration,
    /// Print `/f2b` as it came (JSON), one line per look.
    pub json: bool,
    /// With `follow`, each view replaces the last (a terminal) rather than
    /// following it.
    pub redraw: bool,
    /// ANSI colours.
    pub color: bool,
}

/// Runs `cowlogd bans`.
///
/// # Errors
/// The daemon does not answer, or runs without `[f2b]`.
pub fn run(settings: &Settings, options: &BansOptions) -> anyhow::Result<()> {
    let Some(addr) = settings.metrics.listen else {
        bail!("metrics.listen is off: there is no /f2b to ask");
    };
    let mut out = std::io::stdout().lock();
    loop {
        let (status, body) = crate::http::get(addr, "/f2b", REQUEST_TIMEOUT)
            .map_err(anyhow::Error::msg)
            .context("asking the daemon's /f2b")?;
        match status {
            200 => {}
            404 => bail!("the daemon at {addr} runs without [f2b] (f2b.enabled = false)"),
            other => bail!(
                "{addr}/f2b answered {other}: {}",
                String::from_utf8_lossy(&body).trim_end()
            ),
        }
        if options.json {
            out.write_all(&body)?;
            out.write_all(b"\n")?;
        } else {
            let snapshot: Snapshot =
                serde_json::from_slice(&body).context("reading the daemon's /f2b")?;
            let view = render(&snapshot, unix_now(), options.top, options.color);
            if options.follow && options.redraw {
                // Home and clear: the view replaces the last one.
                out.write_all(b"\x1b[H\x1b[2J")?;
            }
            out.write_all(view.as_bytes())?;
            if options.follow && !options.redraw {
                out.write_all(b"\n")?;
            }
        }
        out.flush()?;
        if !options.follow {
            return Ok(());
        }
        std::thread::sleep(options.interval);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The view of one snapshot at `now` (epoch seconds): a summary line, the
/// top `top` offenders, and the rules that do not compile.
pub fn render(snapshot: &Snapshot, now: f64, top: usize, color: bool) -> String {
    let (red, yellow, reset) = if color {
        ("\x1b[31m", "\x1b[33m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let broken = snapshot.rules.iter().filter(|r| r.error.is_some()).count();
    let options = &snapshot.options;
    let mut view = String::new();
    let working = snapshot.rules.len() - broken;
    let _ = write!(view, "{working} rule{}", plural(working as u64));
    if broken > 0 {
        let _ = write!(view, " ({red}{broken} not compiling{reset})");
    }
    let _ = write!(
        view,
        " · ban after {} attempts in {} s · netfilter bans {} network{}",
        options.max_attempts,
        options.retry_window,
        snapshot.active_bans,
        plural(snapshot.active_bans),
    );
    if snapshot.perm_bans > 0 {
        let _ = write!(view, " and {} for good", snapshot.perm_bans);
    }
    if snapshot.allowlist > 0 {
        let _ = write!(
            view,
            " · {} allowlisted network{}",
            snapshot.allowlist,
            plural(snapshot.allowlist as u64)
        );
    }
    let _ = writeln!(
        view,
        " · {} offender{} tracked",
        snapshot.tracked,
        plural(snapshot.tracked as u64),
    );
    if snapshot.offenders.is_empty() {
        view.push_str("no offenders: no rule has matched a public address yet\n");
    } else {
        let width = snapshot
            .offenders
            .iter()
            .take(top)
            .map(|o| o.network.len())
            .max()
            .unwrap_or(0)
            .max("NETWORK".len());
        let _ = writeln!(
            view,
            "{:<width$}  {:<9} {:<6} {:<6} {:<9} {:<9} NETFILTER",
            "NETWORK", "ATTEMPTS", "TOTAL", "RULES", "FIRST", "LAST"
        );
        for offender in snapshot.offenders.iter().take(top) {
            let attempts = format!("{}/{}", offender.attempts, offender.max_attempts);
            let (paint, status) = match offender.banned_until {
                Some(until) => (
                    red,
                    format!(
                        "banned, {} left",
                        human_duration((until as f64 - now).max(0.0))
                    ),
                ),
                None if offender.denylisted => (red, "denylisted, banned for good".to_owned()),
                None if offender.allowlisted => ("", "allowlisted, not counted".to_owned()),
                None if offender.attempts >= offender.max_attempts => {
                    (yellow, "at the threshold, not banned".to_owned())
                }
                None => ("", "-".to_owned()),
            };
            let _ = writeln!(
                view,
                "{paint}{:<width$}{reset}  {:<9} {:<6} {:<6} {:<9} {:<9} {paint}{status}{reset}",
                offender.network,
                attempts,
                offender.total,
                offender.rules.join(","),
                clock(offender.first_seen),
                clock(offender.last_seen),
            );
        }
        if snapshot.offenders.len() > top {
            let _ = writeln!(view, "… {} more", snapshot.offenders.len() - top);
        }
    }
    for rule in &snapshot.rules {
        if let Some(error) = &rule.error {
            let _ = writeln!(
                view,
                "{red}rule {} does not compile{reset}: {error}",
                rule.id
            );
        }
    }
    view
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Local wall-clock time of epoch seconds, `HH:MM:SS`.
fn clock(epoch: f64) -> String {
    jiff::Timestamp::from_second(epoch as i64)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| "?".to_owned())
}

/// `42s`, `5m 03s`, `2h 10m`, `3d 4h`.
fn human_duration(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::f2b::{OffenderView, Options, RuleView};

    fn offender(network: &str, attempts: u64, banned_until: Option<i64>) -> OffenderView {
        OffenderView {
            network: network.to_owned(),
            attempts,
            total: attempts + 2,
            max_attempts: 10,
            rules: vec!["1".to_owned(), "3".to_owned()],
            first_seen: 1_700_000_000.0,
            last_seen: 1_700_000_100.0,
            banned_until,
            allowlisted: false,
            denylisted: false,
        }
    }

    #[test]
    fn the_view_shows_attempts_against_the_threshold_bans_with_time_left_and_broken_rules() {
        let snapshot = Snapshot {
            rules: vec![
                RuleView {
                    id: "1".into(),
                    pattern: "a".into(),
                    error: None,
                },
                RuleView {
                    id: "7".into(),
                    pattern: "(".into(),
                    error: Some("unclosed group".into()),
                },
            ],
            options: Options::default(),
            active_bans: 1,
            perm_bans: 0,
            allowlist: 0,
            tracked: 3,
            offenders: vec![
                offender("185.12.64.9/32", 12, Some(1_700_003_700)),
                offender("2001:db8::1/128", 10, None),
                offender("198.51.100.7/32", 2, None),
            ],
        };
        let view = render(&snapshot, 1_700_000_100.0, 2, false);
        let lines: Vec<&str> = view.lines().collect();
        assert_eq!(
            lines[0],
            "1 rule (1 not compiling) · ban after 10 attempts in 600 s · netfilter bans 1 network · 3 offenders tracked"
        );
        assert!(lines[1].starts_with("NETWORK          "), "{view}");
        assert!(lines[2].starts_with("185.12.64.9/32   "), "{view}");
        assert!(lines[2].contains(" 12/10 "), "{view}");
        assert!(lines[2].contains(" 1,3 "), "{view}");
        assert!(lines[2].ends_with("banned, 1h 00m left"), "{view}");
        assert!(lines[3].ends_with("at the threshold, not banned"), "{view}");
        assert_eq!(lines[4], "… 1 more");
        assert_eq!(lines[5], "rule 7 does not compile: unclosed group");
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn allowlisted_and_denylisted_networks_say_so() {
        let mut allowed = offender("185.12.64.10/32", 0, None);
        allowed.allowlisted = true;
        let mut denied = offender("185.12.65.7/32", 3, None);
        denied.denylisted = true;
        let snapshot = Snapshot {
            rules: Vec::new(),
            options: Options::default(),
            active_bans: 0,
            perm_bans: 2,
            allowlist: 1,
            tracked: 2,
            offenders: vec![denied, allowed],
        };
        let view = render(&snapshot, 1_700_000_100.0, 10, false);
        let lines: Vec<&str> = view.lines().collect();
        assert_eq!(
            lines[0],
            "0 rules · ban after 10 attempts in 600 s · netfilter bans 0 networks and 2 for good · 1 allowlisted network · 2 offenders tracked"
        );
        assert!(lines[2].ends_with("denylisted, banned for good"), "{view}");
        assert!(lines[3].contains(" 0/10 "), "{view}");
        assert!(lines[3].ends_with("allowlisted, not counted"), "{view}");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human_duration(42.9), "42s");
        assert_eq!(human_duration(303.0), "5m 03s");
        assert_eq!(human_duration(7800.0), "2h 10m");
        assert_eq!(human_duration(273_600.0), "3d 4h");
    }
}
