//! Syslog timestamps: RFC 3339 (RFC 5424 §6.2.3, also seen in BSD lines) and
//! the BSD form `Mmm dd hh:mm:ss` (RFC 3164 §4.1.2) with its missing year and
//! zone resolved from a [`TimeContext`].

use std::cell::Cell;

use jiff::tz::TimeZone;
use nom::bytes::complete::{tag, take_while_m_n};
use nom::character::complete::{char, one_of};
use nom::combinator::opt;
use nom::error::{Error, ErrorKind};
use nom::{IResult, Parser};

use crate::record::Timestamp;

/// What a BSD timestamp (`Nov 24 13:49:59`, no year, no zone) needs to become
/// absolute: the date it was received on and the zone senders write in.
///
/// Built once per batch by the caller: the parsers never read the clock.
///
/// ```
/// use cowlogd_parsers::{Timestamp, syslog::TimeContext};
/// // Received on 2027-01-01: a "Dec 31" line belongs to 2026.
/// let ctx = TimeContext::utc(Timestamp::new(1798761600, 0));
/// assert_eq!(ctx.year_for_month(12), 2026);
/// assert_eq!(ctx.year_for_month(1), 2027);
/// ```
#[derive(Clone, Debug)]
pub struct TimeContext {
    zone: TimeZone,
    /// Set when the zone never changes offset: conversion is then arithmetic.
    fixed_offset_secs: Option<i32>,
    now_year: i16,
    now_month: i8,
    /// The last local minute converted through the zone rules and the
    /// epoch second it starts at: lines of one batch share their minute,
    /// and a zone lookup costs ~1,000 instructions. Zones change offset
    /// only on whole minutes, so the cache is exact.
    last_minute: Cell<Option<(i64, i64)>>,
}

impl TimeContext {
    /// Context for lines received at `now`, written in UTC.
    pub fn utc(now: Timestamp) -> TimeContext {
        TimeContext::new(now, TimeZone::UTC)
    }

    /// Context for lines received at `now`, written in `zone`.
    pub fn new(now: Timestamp, zone: TimeZone) -> TimeContext {
        let fixed_offset_secs = zone.to_fixed_offset().ok().map(|o| o.seconds());
        let (now_year, now_month) = match jiff::Timestamp::from_second(now.secs) {
            Ok(ts) => {
                let dt = zone.to_datetime(ts);
                (dt.year(), dt.month())
            }
            Err(_) => (1970, 1),
        };
        TimeContext {
            zone,
            fixed_offset_secs,
            now_year,
            now_month,
            last_minute: Cell::new(None),
        }
    }

    /// The zone BSD timestamps are read in.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The year a BSD line of month `month` (1–12) belongs to: the receive
    /// year, except that a December line received in January belongs to the
    /// year before and a January line received in December (a sender whose
    /// clock runs ahead) to the year after.
    pub fn year_for_month(&self, month: u8) -> i32 {
        let year = i32::from(self.now_year);
        match (month, self.now_month) {
            (12, 1) => year - 1,
            (1, 12) => year + 1,
            _ => year,
        }
    }

    /// Seconds since the epoch of a civil time in this context's zone.
    fn to_unix(&self, civil: Civil) -> Option<i64> {
        if let Some(offset) = self.fixed_offset_secs {
            return Some(civil.unix_seconds_utc() - i64::from(offset));
        }
        let minute = civil.minute_number();
        if let Some((cached, start)) = self.last_minute.get()
            && cached == minute
        {
            return Some(start + i64::from(civil.second));
        }
        let dt = jiff::civil::DateTime::new(
            i16::try_from(civil.year).ok()?,
            civil.month as i8,
            civil.day as i8,
            civil.hour as i8,
            civil.minute as i8,
            0,
            0,
        )
        .ok()?;
        let start = self
            .zone
            .to_ambiguous_timestamp(dt)
            .compatible()
            .ok()?
            .as_second();
        self.last_minute.set(Some((minute, start)));
        Some(start + i64::from(civil.second))
    }
}

/// A validated civil date and time, zone not yet applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl Civil {
    fn new(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<Civil> {
        let valid = (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day)
            && hour < 24
            && minute < 60
            && second <= 60;
        valid.then_some(Civil {
            year,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            // A leap second (:60) is read as :59; syslog senders rarely emit it.
            second: second.min(59) as u8,
        })
    }

    /// Minutes since 1970-01-01 00:00 of this civil time, zone ignored: a
    /// key for the minute cache.
    fn minute_number(self) -> i64 {
        days_from_civil(self.year, self.month.into(), self.day.into()) * 1440
            + i64::from(self.hour) * 60
            + i64::from(self.minute)
    }

    fn unix_seconds_utc(self) -> i64 {
        days_from_civil(self.year, self.month.into(), self.day.into()) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn fail<T>(input: &[u8]) -> IResult<&[u8], T> {
    Err(nom::Err::Error(Error::new(input, ErrorKind::Verify)))
}

/// Exactly `n` ASCII digits as a number.
fn fixed_digits(n: usize) -> impl Fn(&[u8]) -> IResult<&[u8], u32> {
    move |input| {
        let (rest, digits) = take_while_m_n(n, n, |b: u8| b.is_ascii_digit())(input)?;
        Ok((rest, digits_value(digits)))
    }
}

fn digits_value(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |acc, d| {
        acc.wrapping_mul(10).wrapping_add(u32::from(d - b'0'))
    })
}

/// `.ffffff`: 1–9 digits read as nanoseconds; more digits are accepted and
/// ignored (some senders write 12).
fn fraction(input: &[u8]) -> IResult<&[u8], u32> {
    let (rest, _) = char('.').parse(input)?;
    let (rest, digits) = take_while_m_n(1, 18, |b: u8| b.is_ascii_digit())(rest)?;
    let significant = &digits[..digits.len().min(9)];
    let nanos = digits_value(significant) * 10u32.pow(9 - significant.len() as u32);
    Ok((rest, nanos))
}

/// `hh:mm:ss`
fn clock(input: &[u8]) -> IResult<&[u8], (u32, u32, u32)> {
    let (rest, (h, _, m, _, s)) = (
        fixed_digits(2),
        char(':'),
        fixed_digits(2),
        char(':'),
        fixed_digits(2),
    )
        .parse(input)?;
    Ok((rest, (h, m, s)))
}

/// `Z` or `±hh:mm` (also `±hhmm`) as seconds east of UTC.
fn utc_offset(input: &[u8]) -> IResult<&[u8], i64> {
    if let Some(rest) = input
        .strip_prefix(b"Z")
        .or_else(|| input.strip_prefix(b"z"))
    {
        return Ok((rest, 0));
    }
    let (rest, (sign, hours, _, minutes)) = (
        one_of("+-"),
        fixed_digits(2),
        opt(char(':')),
        fixed_digits(2),
    )
        .parse(input)?;
    if hours > 23 || minutes > 59 {
        return fail(input);
    }
    let secs = i64::from(hours * 3600 + minutes * 60);
    Ok((rest, if sign == '-' { -secs } else { secs }))
}

/// An RFC 3339 timestamp, `2026-11-24T13:49:59.279353+01:00`, with 0–9
/// fractional digits (RFC 5424 allows 6; Docker and Go send up to 9).
///
/// ```
/// use cowlogd_parsers::{Timestamp, syslog::rfc3339};
/// let (rest, ts) = rfc3339(b"2026-11-24T13:49:59.279353+01:00 vm").unwrap();
/// assert_eq!(ts, Timestamp::new(1795524599, 279_353_000));
/// assert_eq!(rest, b" vm");
/// ```
///
/// # Errors
/// A nom error when the input does not start with a valid timestamp.
pub fn rfc3339(input: &[u8]) -> IResult<&[u8], Timestamp> {
    let (rest, (year, _, month, _, day, _, (hour, minute, second), nanos, offset)) = (
        fixed_digits(4),
        char('-'),
        fixed_digits(2),
        char('-'),
        fixed_digits(2),
        one_of("Tt"),
        clock,
        opt(fraction),
        utc_offset,
    )
        .parse(input)?;
    let Some(civil) = Civil::new(year as i32, month, day, hour, minute, second) else {
        return fail(input);
    };
    let secs = civil.unix_seconds_utc() - offset;
    Ok((rest, Timestamp::new(secs, nanos.unwrap_or(0))))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

fn month_name(input: &[u8]) -> IResult<&[u8], u32> {
    let Some(name) = input.get(..3) else {
        return fail(input);
    };
    match MONTHS
        .iter()
        .position(|m| name.eq_ignore_ascii_case(&m[..]))
    {
        Some(index) => Ok((&input[3..], index as u32 + 1)),
        None => fail(input),
    }
}

/// Day of month: `24`, ` 5` (space-padded), or `5`.
fn day_of_month(input: &[u8]) -> IResult<&[u8], u32> {
    let input = input.strip_prefix(b" ").unwrap_or(input);
    let (rest, digits) = take_while_m_n(1, 2, |b: u8| b.is_ascii_digit())(input)?;
    Ok((rest, digits_value(digits)))
}

/// A BSD timestamp, `Nov 24 13:49:59`, `Aug  5 12:34:56`, `NOV 24 13:49:59`,
/// `Nov 24 2026 13:49:59` or with a fraction (`13:49:59.123`), made absolute
/// with `ctx` (year from the receive date unless written, zone from `ctx`).
///
/// ```
/// use cowlogd_parsers::{Timestamp, syslog::{bsd_timestamp, TimeContext}};
/// let ctx = TimeContext::utc(Timestamp::new(1795999799, 0)); // received 2026-11-29
/// let (rest, ts) = bsd_timestamp(b"Nov 24 13:49:59 host", &ctx).unwrap();
/// assert_eq!(ts, Timestamp::new(1795528199, 0));
/// assert_eq!(rest, b" host");
/// ```
///
/// # Errors
/// A nom error when the input does not start with a valid BSD timestamp.
pub fn bsd_timestamp<'a>(input: &'a [u8], ctx: &TimeContext) -> IResult<&'a [u8], Timestamp> {
    let (rest, (month, _, day, _)) =
        (month_name, char(' '), day_of_month, char(' ')).parse(input)?;
    let (rest, written_year) =
        opt((fixed_digits(4), tag(&b" "[..])).map(|(y, _)| y)).parse(rest)?;
    let (rest, ((hour, minute, second), nanos)) = (clock, opt(fraction)).parse(rest)?;
    let year = written_year.map_or_else(|| ctx.year_for_month(month as u8), |y| y as i32);
    let secs = Civil::new(year, month, day, hour, minute, second).and_then(|c| ctx.to_unix(c));
    match secs {
        Some(secs) => Ok((rest, Timestamp::new(secs, nanos.unwrap_or(0)))),
        None => fail(input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_2026() -> TimeContext {
        TimeContext::utc(Timestamp::new(1795999799, 0))
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(days_from_civil(2024, 5, 1), 19844);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn rfc3339_without_fraction_and_with_z() {
        let (_, ts) = rfc3339(b"2016-09-27T10:00:00+00:00").unwrap();
        assert_eq!(ts, Timestamp::new(1474970400, 0));
        let (_, ts) = rfc3339(b"2016-09-27T10:00:00Z").unwrap();
        assert_eq!(ts, Timestamp::new(1474970400, 0));
    }

    #[test]
    fn rfc3339_nine_fraction_digits_and_negative_offset() {
        let (_, ts) = rfc3339(b"2016-09-27T10:00:00.123456789-02:30").unwrap();
        assert_eq!(ts, Timestamp::new(1474970400 + 9000, 123_456_789));
    }

    #[test]
    fn rfc3339_rejects_impossible_dates() {
        assert!(rfc3339(b"2026-02-30T10:00:00Z").is_err());
        assert!(rfc3339(b"2026-13-01T10:00:00Z").is_err());
        assert!(rfc3339(b"2026-01-01T25:00:00Z").is_err());
    }

    #[test]
    fn bsd_space_padded_day() {
        let (_, ts) = bsd_timestamp(b"Aug  5 12:34:56", &ctx_2026()).unwrap();
        assert_eq!(
            ts.secs,
            days_from_civil(2026, 8, 5) * 86400 + 12 * 3600 + 34 * 60 + 56
        );
    }

    #[test]
    fn bsd_upper_case_month_and_written_year() {
        let (rest, ts) = bsd_timestamp(b"NOV 24 2019 13:49:59 x", &ctx_2026()).unwrap();
        assert_eq!(rest, b" x");
        assert_eq!(
            ts.secs,
            days_from_civil(2019, 11, 24) * 86400 + 13 * 3600 + 49 * 60 + 59
        );
    }

    #[test]
    fn bsd_december_line_received_in_january_is_last_year() {
        let jan_2027 =
            TimeContext::utc(Timestamp::new(days_from_civil(2027, 1, 1) * 86400 + 30, 0));
        let (_, ts) = bsd_timestamp(b"Dec 31 23:59:59", &jan_2027).unwrap();
        assert_eq!(ts.secs, days_from_civil(2026, 12, 31) * 86400 + 86399);
    }

    #[test]
    fn bsd_time_zone_is_applied() {
        let zone = TimeZone::fixed(jiff::tz::offset(1));
        let ctx = TimeContext::new(Timestamp::new(1795999799, 0), zone);
        let (_, ts) = bsd_timestamp(b"Nov 24 13:49:59", &ctx).unwrap();
        assert_eq!(ts.secs, 1795528199 - 3600);
    }

    #[test]
    fn bsd_named_zone_with_dst() {
        let zone =
            TimeZone::get("Europe/Berlin").expect("tz database missing: apt-get install tzdata");
        let ctx = TimeContext::new(Timestamp::new(1795999799, 0), zone);
        let (_, summer) = bsd_timestamp(b"Jul  1 12:00:00", &ctx).unwrap();
        assert_eq!(summer.secs, days_from_civil(2026, 7, 1) * 86400 + 10 * 3600);
    }

    #[test]
    fn minute_cache_agrees_with_the_zone_rules_across_a_dst_change() {
        let zone =
            TimeZone::get("Europe/Berlin").expect("tz database missing: apt-get install tzdata");
        // One context for the whole sequence (as a batch has), a fresh one
        // per line for the reference: 2026-03-29 02:00 CET does not exist.
        let shared = TimeContext::new(Timestamp::new(1774000000, 0), zone.clone());
        for line in [
            "Mar 29 01:59:58",
            "Mar 29 01:59:59",
            "Mar 29 02:30:00",
            "Mar 29 03:00:00",
            "Mar 29 03:00:01",
            "Mar 29 01:59:59",
            "Oct 25 02:30:00",
            "Oct 25 03:30:00",
        ] {
            let fresh = TimeContext::new(Timestamp::new(1774000000, 0), zone.clone());
            let (_, cached) = bsd_timestamp(line.as_bytes(), &shared).unwrap();
            let (_, reference) = bsd_timestamp(line.as_bytes(), &fresh).unwrap();
            assert_eq!(cached, reference, "{line}");
        }
        let (_, before) = bsd_timestamp(b"Mar 29 01:59:59", &shared).unwrap();
        let (_, after) = bsd_timestamp(b"Mar 29 03:00:00", &shared).unwrap();
        assert_eq!(after.secs - before.secs, 1, "the clock jumps an hour");
    }

    #[test]
    fn bsd_rejects_bad_month_and_day() {
        assert!(bsd_timestamp(b"Foo 24 13:49:59", &ctx_2026()).is_err());
        assert!(bsd_timestamp(b"Feb 30 13:49:59", &ctx_2026()).is_err());
    }
}
