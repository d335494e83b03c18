//! The PRI part, `<30>` (RFC 5424 §6.2.1, RFC 3164 §4.1.1).

use nom::bytes::complete::take_while_m_n;
use nom::character::complete::char;
use nom::error::{Error, ErrorKind};
use nom::{IResult, Parser};

use crate::record::{Facility, Severity};

/// A decoded PRI value: facility and severity.
///
/// ```
/// use cowlogd_parsers::{Facility, Severity, syslog::Pri};
/// let pri = Pri::from_value(22).unwrap();
/// assert_eq!((pri.facility, pri.severity), (Facility::MAIL, Severity::Info));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pri {
    /// Facility (value >> 3).
    pub facility: Facility,
    /// Severity (value & 7).
    pub severity: Severity,
}

impl Pri {
    /// What a line without PRI gets, as syslog-ng and RFC 3164 §4.3.3 do:
    /// `user.notice` (13). This is why mailcow's SOGo entries read `notice`.
    pub const DEFAULT: Pri = Pri {
        facility: Facility::USER,
        severity: Severity::Notice,
    };

    /// Decodes a PRI value 0–191.
    pub fn from_value(value: u32) -> Option<Pri> {
        if value > 191 {
            return None;
        }
        Some(Pri {
            facility: Facility::from_code((value >> 3) as u8)?,
            severity: Severity::from_code(u64::from(value & 7))?,
        })
    }

    /// The encoded value (`facility * 8 + severity`).
    pub fn value(self) -> u8 {
        self.facility.code() * 8 + self.severity.code()
    }
}

/// Parses `<PRIVAL>` with 1–3 digits and a value ≤ 191.
///
/// ```
/// use cowlogd_parsers::syslog::pri;
/// let (rest, p) = pri(b"<30>Nov").unwrap();
/// assert_eq!((rest, p.value()), (&b"Nov"[..], 30));
/// ```
///
/// # Errors
/// A nom error when the input does not start with a valid PRI.
pub fn pri(input: &[u8]) -> IResult<&[u8], Pri> {
    let (rest, (_, digits, _)) = (
        char('<'),
        take_while_m_n(1, 3, |b: u8| b.is_ascii_digit()),
        char('>'),
    )
        .parse(input)?;
    let value = digits
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    match Pri::from_value(value) {
        Some(p) => Ok((rest, p)),
        None => Err(nom::Err::Error(Error::new(input, ErrorKind::Verify))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pri_bounds() {
        assert_eq!(pri(b"<0>").unwrap().1.value(), 0);
        assert_eq!(pri(b"<191>").unwrap().1.value(), 191);
        assert!(pri(b"<192>").is_err());
        assert!(pri(b"<1234>").is_err());
        assert!(pri(b"<>").is_err());
        assert!(pri(b"30>").is_err());
    }
}
