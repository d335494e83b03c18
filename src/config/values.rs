//! Value types of the config file that check themselves as serde reads
//! them, so that an error names its key (`inputs.gelf_udp: …`) and the
//! file format stays what it was: `""` still turns a listener off, a
//! network may be a bare address, a mode is an octal string.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A listen address; `""` turns the listener off.
///
/// ```toml
/// gelf_udp = "0.0.0.0:12201"
/// syslog_udp = ""
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listen(pub Option<SocketAddr>);

impl Listen {
    /// Listening on `addr`.
    pub fn on(addr: &str) -> Listen {
        Listen(addr.parse().ok())
    }

    /// Off.
    pub const OFF: Listen = Listen(None);
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Listen, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(Listen(None));
        }
        text.parse().map(|addr| Listen(Some(addr))).map_err(|_| {
            D::Error::custom(format!(
                "{text:?} is not an address like 0.0.0.0:12201 (\"\" turns it off)"
            ))
        })
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(addr) => serializer.collect_str(&addr),
            None => serializer.serialize_str(""),
        }
    }
}

/// A network (`10.0.0.0/8`) or a single address (`10.1.2.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub IpNet);

impl Network {
    /// Parses the text of the config.
    pub fn parse(text: &str) -> Option<Network> {
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .ok()
            .map(Network)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Network, D::Error> {
        let text = String::deserialize(deserializer)?;
        Network::parse(&text)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not a network like 10.0.0.0/8")))
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// The networks of a list.
pub fn networks(list: &[Network]) -> Vec<IpNet> {
    list.iter().map(|n| n.0).collect()
}

/// File permissions as octal text.
///
/// ```toml
/// fluent_unix_mode = "0660"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FileMode, D::Error> {
        let text = String::deserialize(deserializer)?;
        u32::from_str_radix(text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .map(FileMode)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not an octal mode like \"0660\"")))
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{:04o}", self.0))
    }
}

/// A time zone: `UTC`, an IANA name (`Europe/Berlin`, from the bundled
/// database), or a fixed offset (`+01:00`).
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    name: String,
    zone: jiff::tz::TimeZone,
}

impl Zone {
    /// Parses a zone name.
    ///
    /// # Errors
    /// A name that is no zone, offset or `UTC`.
    pub fn parse(name: &str) -> Result<Zone, String> {
        Ok(Zone {
            name: name.to_owned(),
            zone: parse_timezone(name)?,
        })
    }

    /// The zone the process runs in: `TZ`, else the system's
    /// (`/etc/localtime`), else UTC.
    pub fn local() -> Zone {
        let zone = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
        Zone {
            name: "local".into(),
            zone,
        }
    }

    /// UTC.
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            zone: jiff::tz::TimeZone::UTC,
        }
    }

    /// The zone.
    pub fn zone(&self) -> &jiff::tz::TimeZone {
        &self.zone
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Zone, D::Error> {
        let text = String::deserialize(deserializer)?;
        Zone::parse(&text).map_err(D::Error::custom)
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

fn parse_timezone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if name.eq_ignore_ascii_case("local") {
        return Ok(Zone::local().zone);
    }
    if name.eq_ignore_ascii_case("utc") || name.is_empty() {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    if let Some(sign) = name.chars().next().filter(|c| *c == '+' || *c == '-') {
        let digits: String = name[1..].chars().filter(char::is_ascii_digit).collect();
        if digits.len() == 4 {
            let number = |text: &str| text.parse::<i32>().map_err(|e| format!("{name:?}: {e}"));
            let hours = number(&digits[..2])?;
            let minutes = number(&digits[2..])?;
            let seconds = (hours * 3600 + minutes * 60) * if sign == '-' { -1 } else { 1 };
            let offset =
                jiff::tz::Offset::from_seconds(seconds).map_err(|e| format!("{name:?}: {e}"))?;
            return Ok(jiff::tz::TimeZone::fixed(offset));
        }
        return Err(format!("{name:?} is not an offset like +01:00"));
    }
    jiff::tz::TimeZone::get(name).map_err(|e| format!("{name:?} is not a known time zone: {e}"))
}

/// How channel payloads are cleaned (`redis.channel_sanitize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sanitize {
    /// Bytes below 0x20 and `/` become `_`: what netfilter reads today.
    #[serde(rename = "syslog-ng")]
    SyslogNg,
    /// Only control bytes: keeps `/`, reviving the SOGo rule.
    #[serde(rename = "control-only")]
    ControlOnly,
}

impl From<Sanitize> for cowlogd_parsers::encode::mailcow::ChannelSanitize {
    fn from(sanitize: Sanitize) -> Self {
        match sanitize {
            Sanitize::SyslogNg => Self::SyslogNg,
            Sanitize::ControlOnly => Self::ControlOnly,
        }
    }
}

/// What is published on the channel (`redis.publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    /// Every payload of a publishing route (what syslog-ng does).
    All,
    /// Only payloads a ban rule acts on (needs `[f2b] enabled`).
    Matches,
}

/// When the disk queue syncs what it wrote (`queue.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Every `queue.fsync_interval_ms`, all writes since together.
    Interval,
    /// Before an acked input (Fluent) is told its batch is kept.
    Always,
    /// Never: the kernel writes back when it will.
    Never,
}

/// Compression of forwarded GELF UDP (`graylog.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip, as Docker's gelf driver sends.
    Gzip,
    /// zlib.
    Zlib,
    /// Plain JSON.
    None,
}

impl From<Compression> for cowlogd_parsers::encode::compress::Codec {
    fn from(compression: Compression) -> Self {
        match compression {
            Compression::Gzip => Self::Gzip,
            Compression::Zlib => Self::Zlib,
            Compression::None => Self::None,
        }
    }
}

/// Where forwarded records go: `udp://host:port` or `tcp://host:port`;
/// `""` turns forwarding off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraylogAddress(pub Option<(GraylogTransport, String)>);

/// How to reach Graylog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraylogTransport {
    /// Chunked, compressed datagrams.
    Udp,
    /// NUL-framed JSON.
    Tcp,
}

impl fmt::Display for GraylogTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GraylogTransport::Udp => "udp",
            GraylogTransport::Tcp => "tcp",
        })
    }
}

impl<'de> Deserialize<'de> for GraylogAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<GraylogAddress, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(GraylogAddress(None));
        }
        let (transport, target) = if let Some(rest) = text.strip_prefix("udp://") {
            (GraylogTransport::Udp, rest)
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            (GraylogTransport::Tcp, rest)
        } else {
            return Err(D::Error::custom(format!(
                "{text:?} must start with udp:// or tcp://"
            )));
        };
        let valid_target = target.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid_target {
            return Err(D::Error::custom(format!(
                "{text:?} needs a host and a port, like udp://graylog:12201"
            )));
        }
        Ok(GraylogAddress(Some((transport, target.to_owned()))))
    }
}

impl Serialize for GraylogAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some((transport, target)) => {
                serializer.collect_str(&format_args!("{transport}://{target}"))
            }
            None => serializer.serialize_str(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Values {
        listen: Listen,
        network: Network,
        mode: FileMode,
        zone: Zone,
        graylog: GraylogAddress,
    }

    #[test]
    fn values_read_back_as_they_were_written() {
        let text = "listen = \"\"\nnetwork = \"10.1.2.3\"\nmode = \"0660\"\nzone = \"Europe/Berlin\"\ngraylog = \"tcp://g:12201\"\n";
        let values: Values = toml::from_str(text).unwrap();
        assert_eq!(values.listen, Listen::OFF);
        assert_eq!(values.network.0, "10.1.2.3/32".parse::<IpNet>().unwrap());
        assert_eq!(values.mode, FileMode(0o660));
        assert_eq!(
            values.graylog.0,
            Some((GraylogTransport::Tcp, "g:12201".to_owned()))
        );
        let again: Values = toml::from_str(&toml::to_string(&values).unwrap()).unwrap();
        assert_eq!(again, values);
    }

    #[test]
    fn timezones() {
        assert_eq!(parse_timezone("UTC").unwrap(), jiff::tz::TimeZone::UTC);
        assert!(parse_timezone("Europe/Berlin").is_ok());
        assert_eq!(
            parse_timezone("+01:30")
                .unwrap()
                .to_fixed_offset()
                .unwrap()
                .seconds(),
            5400
        );
        assert!(parse_timezone("+1").is_err());
        assert!(parse_timezone("Mars/Olympus").is_err());
    }
}
