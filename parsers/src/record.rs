//! The one normalized [`Record`] every input produces and every sink consumes.
//!
//! A record borrows from the parsed message it came from ([`Origin`]), so
//! building one copies no message bytes.

use crate::gelf::GelfMessage;
use crate::syslog::SyslogMessage;

/// Syslog severity, RFC 5424 §6.2.1 (`<30>` → 30 & 7 = 6 = [`Severity::Info`]).
///
/// ```
/// use cowlogd_parsers::Severity;
/// assert_eq!(Severity::from_code(3), Some(Severity::Error));
/// assert_eq!(Severity::Error.keyword(), "err");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Severity {
    /// 0, `emerg`.
    Emergency = 0,
    /// 1, `alert`.
    Alert = 1,
    /// 2, `crit`.
    Critical = 2,
    /// 3, `err`.
    Error = 3,
    /// 4, `warning`.
    Warning = 4,
    /// 5, `notice`.
    Notice = 5,
    /// 6, `info`.
    Info = 6,
    /// 7, `debug`.
    Debug = 7,
}

impl Severity {
    /// All severities, most severe first (index = code).
    pub const ALL: [Severity; 8] = [
        Severity::Emergency,
        Severity::Alert,
        Severity::Critical,
        Severity::Error,
        Severity::Warning,
        Severity::Notice,
        Severity::Info,
        Severity::Debug,
    ];

    /// The severity with numeric code `code` (0–7), e.g. `6` from GELF `"level":6`.
    ///
    /// ```
    /// # use cowlogd_parsers::Severity;
    /// assert_eq!(Severity::from_code(6), Some(Severity::Info));
    /// assert_eq!(Severity::from_code(8), None);
    /// ```
    pub fn from_code(code: u64) -> Option<Severity> {
        Self::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// The numeric code (0–7).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// syslog-ng's `$PRIORITY` keyword, which mailcow stores in `"priority"`:
    /// `emerg alert crit err warning notice info debug`.
    ///
    /// ```
    /// # use cowlogd_parsers::Severity;
    /// assert_eq!(Severity::Warning.keyword(), "warning");
    /// ```
    pub fn keyword(self) -> &'static str {
        match self {
            Severity::Emergency => "emerg",
            Severity::Alert => "alert",
            Severity::Critical => "crit",
            Severity::Error => "err",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
            Severity::Debug => "debug",
        }
    }

    /// Parses a keyword as written in configs, case-insensitively; accepts the
    /// common aliases `panic`, `error`, `warn`, and the code digits `0`–`7`.
    ///
    /// ```
    /// # use cowlogd_parsers::Severity;
    /// assert_eq!(Severity::from_keyword("WARN"), Some(Severity::Warning));
    /// assert_eq!(Severity::from_keyword("3"), Some(Severity::Error));
    /// ```
    pub fn from_keyword(word: &str) -> Option<Severity> {
        let lower = word.to_ascii_lowercase();
        Some(match lower.as_str() {
            "emerg" | "emergency" | "panic" | "0" => Severity::Emergency,
            "alert" | "1" => Severity::Alert,
            "crit" | "critical" | "2" => Severity::Critical,
            "err" | "error" | "3" => Severity::Error,
            "warning" | "warn" | "4" => Severity::Warning,
            "notice" | "5" => Severity::Notice,
            "info" | "informational" | "6" => Severity::Info,
            "debug" | "7" => Severity::Debug,
            _ => return None,
        })
    }
}

/// Syslog facility code 0–23, RFC 5424 §6.2.1 (`<22>` → 22 >> 3 = 2 = `mail`).
///
/// ```
/// use cowlogd_parsers::Facility;
/// assert_eq!(Facility::MAIL.name(), "mail");
/// assert_eq!(Facility::from_code(16).map(|f| f.name()), Some("local0"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Facility(u8);

impl Facility {
    /// `mail` (2), the facility mailcow's filters keep.
    pub const MAIL: Facility = Facility(2);
    /// `daemon` (3), what Docker's syslog driver sends by default.
    pub const DAEMON: Facility = Facility(3);
    /// `user` (1), the default for a line without PRI.
    pub const USER: Facility = Facility(1);

    const NAMES: [&'static str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];

    /// The facility with code `code`, if it is 0–23.
    pub fn from_code(code: u8) -> Option<Facility> {
        (code < 24).then_some(Facility(code))
    }

    /// Parses a name as in [`Facility::name`] (case-insensitive) or a code.
    ///
    /// ```
    /// # use cowlogd_parsers::Facility;
    /// assert_eq!(Facility::from_name("Mail"), Some(Facility::MAIL));
    /// ```
    pub fn from_name(name: &str) -> Option<Facility> {
        if let Ok(code) = name.parse::<u8>() {
            return Facility::from_code(code);
        }
        let pos = Self::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))?;
        Facility::from_code(pos as u8)
    }

    /// The numeric code.
    pub fn code(self) -> u8 {
        self.0
    }

    /// The conventional name (`mail`, `local0`, …).
    pub fn name(self) -> &'static str {
        Self::NAMES[usize::from(self.0)]
    }
}

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
///
/// ```
/// use cowlogd_parsers::Timestamp;
/// let t = Timestamp::new(1714557600, 123_000_000);
/// assert_eq!(t.secs, 1714557600);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Fraction of the second, 0..1_000_000_000.
    pub nanos: u32,
}

impl Timestamp {
    /// A timestamp from seconds and nanoseconds (nanos ≥ 1e9 are clamped).
    pub fn new(secs: i64, nanos: u32) -> Timestamp {
        Timestamp {
            secs,
            nanos: nanos.min(999_999_999),
        }
    }

    /// A timestamp from GELF's float seconds (`1714557600.123`); `None` for
    /// values that are not finite, not positive or beyond year 9999.
    ///
    /// ```
    /// # use cowlogd_parsers::Timestamp;
    /// assert_eq!(Timestamp::from_f64(1714557600.5), Some(Timestamp::new(1714557600, 500_000_000)));
    /// assert_eq!(Timestamp::from_f64(-1.0), None);
    /// ```
    pub fn from_f64(secs: f64) -> Option<Timestamp> {
        if !secs.is_finite() || secs <= 0.0 || secs >= 253_402_300_800.0 {
            return None;
        }
        let whole = secs.trunc();
        // Round to milliseconds' neighbourhood: GELF floats carry ms precision
        // and 1714557600.123 is really 1714557600.12299990654.
        let nanos = ((secs - whole) * 1e9).round() as u32;
        let (whole, nanos) = if nanos >= 1_000_000_000 {
            (whole as i64 + 1, 0)
        } else {
            (whole as i64, nanos)
        };
        Some(Timestamp::new(whole, nanos))
    }

    /// Seconds as a float, for GELF's `timestamp`.
    pub fn as_f64(self) -> f64 {
        self.secs as f64 + f64::from(self.nanos) / 1e9
    }
}

/// Which output stream of a container a line came from, as Docker reports it
/// (GELF `level` 6 / 3, syslog severity 6 / 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
}

/// The parsed message a [`Record`] was built from; sinks that forward the
/// original fields (the GELF encoder) read them from here.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// A GELF message (UDP, TCP or HTTP).
    Gelf(&'a GelfMessage<'a>),
    /// A syslog message (UDP or TCP).
    Syslog(&'a SyslogMessage<'a>),
}

/// One normalized log record: who logged what, when, and how severe.
///
/// Built by [`crate::normalize`] from a [`GelfMessage`] or [`SyslogMessage`];
/// all byte fields borrow from that message. Byte fields are raw bytes (they
/// may hold invalid UTF-8 from a syslog sender); encoders decide how to write
/// them.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// When the line was logged: the sender's timestamp (inner syslog header,
    /// GELF `timestamp`, syslog header), else the time it was received.
    pub time: Timestamp,
    /// The sending host (GELF `host`, syslog HOSTNAME), when known.
    pub host: Option<&'a [u8]>,
    /// The container's name (GELF `_container_name`, Docker syslog tag), when
    /// the record came from a container.
    pub container: Option<&'a [u8]>,
    /// The program that logged the line, without pid (`postfix/smtpd`).
    pub program: Option<&'a [u8]>,
    /// The program's process id as sent (`123`), when present.
    pub pid: Option<&'a [u8]>,
    /// The severity: the syslog PRI, a marker recovered from the message, or
    /// the container stream (stdout → info, stderr → err).
    pub severity: Severity,
    /// The syslog facility, when the sender said (absent for GELF).
    pub facility: Option<Facility>,
    /// The Docker stream, when the record came from a container.
    pub stream: Option<Stream>,
    /// The message text after `program[pid]: `.
    pub message: &'a [u8],
    /// Whether the message came from a syslog line nested in the container's
    /// output (`Aug  5 12:34:56 host postfix/smtpd[1]: ...`), which is what
    /// mailcow's daemons write; `false` for plain output and chatter.
    pub inner_syslog: bool,
    /// Whether the message was a header-less line syslog-ng relayed (a
    /// timestamp and host, then text: SOGo's continuation lines); program
    /// and message are then split as syslog-ng splits them.
    pub headerless: bool,
    /// The parsed message this record was built from.
    pub origin: Origin<'a>,
}
