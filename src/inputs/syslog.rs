//! Syslog lines, from every input that carries them (UDP datagrams, TCP
//! frames): RFC 5424, RFC 3164 or plain text, normalized into a record.

use cowlogd_parsers::normalize::normalize_syslog_from;
use cowlogd_parsers::syslog::{SyslogFormat, parse_syslog, trim_trailer};

use crate::metrics::{NO_SYSLOG_HEADER, parse_error};
use crate::pipeline::ReadCycle;

/// One syslog line into the cycle; a blank one is not a message.
pub fn line(cycle: &mut ReadCycle<'_>, line: &[u8]) {
    if trim_trailer(line).is_empty() {
        return;
    }
    cycle.count_received();
    let message = parse_syslog(line, cycle.time());
    if message.format == SyslogFormat::Plain {
        parse_error(cycle.input(), NO_SYSLOG_HEADER);
    }
    let record = normalize_syslog_from(&message, cycle.time(), cycle.now(), cycle.syslog_sender());
    cycle.record(&record);
}
