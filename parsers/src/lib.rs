//! Pure parsing and encoding for cowlogd: bytes from real log senders in,
//! normalized [`Record`]s, bytes for mailcow's consumers out. No I/O, no
//! clock reads: callers pass the time in.
//!
//! In flow order:
//! - [`framing`]: split TCP streams into frames (octet counting, newline, NUL).
//! - [`gelf`]: reassemble chunked UDP GELF, parse GELF JSON.
//! - [`fluent`]: Fluent Forward events (Docker's fluentd driver) as GELF messages.
//! - [`docker_logs`]: the Docker Engine API's container logs, entries to lines, checkpoints.
//! - [`decompress`]: undo gzip/zlib, capped.
//! - [`syslog`]: parse RFC 5424 / RFC 3164 lines.
//! - [`normalize`]: parsed message → [`Record`] (Docker fields, nested
//!   syslog line, recovered severity).
//! - [`record`]: the [`Record`] type.
//! - [`encode`]: mailcow list entry, channel payload, GELF for forwarding.
//! - [`limits`]: default bounds.
//! - [`segment`]: the disk queue's records on disk (checksummed, read
//!   defensively).
//!
//! # Example: a mailcow line from Docker's GELF driver to its Redis entry
//!
//! ```
//! use cowlogd_parsers::{Timestamp, gelf::parse_gelf, normalize::normalize_gelf, syslog::TimeContext};
//! use cowlogd_parsers::encode::mailcow::encode_list_entry;
//! let json = br#"{"version":"1.1","host":"mx","short_message":"Aug  5 12:34:56 mail postfix/smtpd[123]: connect from unknown[203.0.113.5]","timestamp":1712345678.25,"level":6,"_container_name":"mailcowdockerized-postfix-mailcow-1"}"#;
//! let gelf = parse_gelf(json).unwrap();
//! let record = normalize_gelf(&gelf, &TimeContext::utc(Timestamp::new(1712345678, 0)), Timestamp::default());
//! let mut entry = Vec::new();
//! encode_list_entry(&mut entry, &record);
//! assert_eq!(entry, b"{\"time\":\"1712345678\",\"program\":\"postfix/smtpd\",\"priority\":\"info\",\"message\":\"connect from unknown[203.0.113.5]\"}\n");
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod decompress;
pub mod docker_logs;
pub mod encode;
pub mod fluent;
pub mod framing;
pub mod gelf;
pub mod limits;
pub mod normalize;
pub mod record;
pub mod segment;
pub mod syslog;

pub use limits::ReassemblyLimits;
pub use record::{Facility, Origin, Record, Severity, Stream, Timestamp};
