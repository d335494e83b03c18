//! Routing: which records go to which Redis key and the channel, and which
//! are dropped. Rules are tried in order; the first whose every condition
//! holds decides. A record no rule matches is not stored.
//!
//! The default rules are the mailcow profile ([`mailcow_profile`]): the
//! postfix, dovecot and SOGo containers' mail logs go to `POSTFIX_MAILLOG`,
//! `DOVECOT_MAILLOG` and `SOGO_LOG` and the ban channel; mailcow's filter
//! patterns, system messages and non-syslog chatter are dropped.

mod container;
mod mailcow;

pub use container::ContainerGlob;
pub use mailcow::{MAILCOW_MAIL_CONTAINERS, mailcow_profile};

use anyhow::{Context, bail};
use cowlogd_parsers::{Facility, Record, Severity};

use container::ProjectPattern;
pub(crate) use container::{ContainerName, ContainerPattern, Wildcard};
use regex::bytes::RegexSet;
use serde::{Deserialize, Serialize};

/// One `[[route]]` table as written in the config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Name, used in metrics (`cowlogd_routed_total{route="..."}`) and logs.
    pub name: String,
    /// Container patterns, one of which must match (`*` matches any run of
    /// characters): the full name (`shop-*` matches `shop-web-1`) or the
    /// compose service (`postfix-mailcow` matches
    /// `mailcowdockerized-postfix-mailcow-1`); empty: any record, container
    /// or not.
    pub container: Vec<String>,
    /// Compose project patterns, one of which must match: the part of a
    /// compose container's name before the service (`mailcowdockerized`
    /// for `mailcowdockerized-postfix-mailcow-1`), or the
    /// `com.docker.compose.project` label where the sender adds it.
    pub project: Vec<String>,
    /// Program patterns (`*` matches any run of characters): `postfix/*`.
    pub program: Vec<String>,
    /// Regular expressions, one of which must match the message.
    pub message: Vec<String>,
    /// Facility names (`mail`, `local0`); only records that carry one match.
    pub facility: Vec<String>,
    /// Severity keywords (`err`, `warning`, ...).
    pub severity: Vec<String>,
    /// `true`: only messages that were a nested syslog line (the daemons'
    /// output); `false`: only those that were not (entrypoint chatter).
    pub syslog_line: Option<bool>,
    /// `true`: only header-less lines syslog-ng relayed (a timestamp and
    /// host, then text, as SOGo's continuation lines reach it); `false`:
    /// only other messages.
    pub headerless: Option<bool>,
    /// `"store"` (default) or `"drop"`.
    pub action: ActionName,
    /// Redis list to push to; may use `{container}`, `{program}`, `{host}`.
    pub key: String,
    /// Also publish the message on the channel.
    pub publish: bool,
    /// Severity to write instead of the record's (SOGo's lines: `notice`);
    /// `""` or absent: the record's own.
    #[serde(
        default,
        deserialize_with = "severity_or_empty",
        serialize_with = "severity_keyword",
        skip_serializing_if = "Option::is_none"
    )]
    pub set_severity: Option<Severity>,
    /// Entries kept in this route's lists (default: `redis.list_cap`).
    pub list_cap: Option<usize>,
}

/// What a route does with the records it matches, as the config says it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    /// Push to the route's key (and publish, with `publish = true`).
    #[default]
    Store,
    /// Count and forget.
    Drop,
}

fn severity_or_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Severity>, D::Error> {
    let word = String::deserialize(deserializer)?;
    if word.is_empty() {
        return Ok(None);
    }
    Severity::from_keyword(&word)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown severity {word:?}")))
}

fn severity_keyword<S: serde::Serializer>(
    severity: &Option<Severity>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(severity.map_or("", Severity::keyword))
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Count and forget (Redis-wise).
    Drop,
    /// Push to a list (and maybe publish).
    Store(StoreAction),
}

/// Where a stored record goes.
#[derive(Debug, Clone)]
pub struct StoreAction {
    /// The list key, possibly templated.
    pub key: KeyTemplate,
    /// Whether to publish on the channel too.
    pub publish: bool,
    /// Severity written instead of the record's.
    pub set_severity: Option<Severity>,
    /// Entries kept in the list.
    pub list_cap: usize,
}

/// A list key with `{field}` placeholders, split once at startup.
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    parts: Vec<KeyPart>,
}

#[derive(Debug, Clone)]
enum KeyPart {
    Literal(Vec<u8>),
    Container,
    Program,
    Host,
}

impl KeyTemplate {
    fn parse(template: &str) -> anyhow::Result<KeyTemplate> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(KeyPart::Literal(rest.as_bytes()[..open].to_vec()));
            }
            let close = rest[open..]
                .find('}')
                .with_context(|| format!("unclosed {{ in key {template:?}"))?
                + open;
            parts.push(match &rest[open + 1..close] {
                "container" => KeyPart::Container,
                "program" => KeyPart::Program,
                "host" => KeyPart::Host,
                other => bail!(
                    "unknown field {{{other}}} in key {template:?} (use container, program or host)"
                ),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(KeyPart::Literal(rest.as_bytes().to_vec()));
        }
        Ok(KeyTemplate { parts })
    }

    /// The key when it has no placeholders.
    pub fn literal(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [KeyPart::Literal(bytes)] => Some(bytes),
            _ => None,
        }
    }

    /// Appends the key for `record`; a missing field renders as `unknown`.
    pub fn render(&self, record: &Record<'_>, out: &mut Vec<u8>) {
        for part in &self.parts {
            let field = match part {
                KeyPart::Literal(bytes) => {
                    out.extend_from_slice(bytes);
                    continue;
                }
                KeyPart::Container => record.container,
                KeyPart::Program => record.program,
                KeyPart::Host => record.host,
            };
            out.extend_from_slice(field.filter(|f| !f.is_empty()).unwrap_or(b"unknown"));
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name.
    pub name: String,
    containers: Vec<ContainerPattern>,
    projects: Vec<ProjectPattern>,
    programs: Vec<Wildcard>,
    messages: Option<RegexSet>,
    facilities: Vec<Facility>,
    severities: Vec<Severity>,
    syslog_line: Option<bool>,
    headerless: Option<bool>,
    /// What it does.
    pub action: RouteAction,
}

impl Route {
    fn matches(&self, record: &Record<'_>, container: Option<&ContainerName<'_>>) -> bool {
        self.matches_container(container)
            && (self.programs.is_empty()
                || record
                    .program
                    .is_some_and(|p| self.programs.iter().any(|pattern| pattern.matches(p))))
            && self
                .syslog_line
                .is_none_or(|want| record.inner_syslog == want)
            && self.headerless.is_none_or(|want| record.headerless == want)
            && (self.facilities.is_empty()
                || record
                    .facility
                    .is_some_and(|f| self.facilities.contains(&f)))
            && (self.severities.is_empty() || self.severities.contains(&record.severity))
            && self
                .messages
                .as_ref()
                .is_none_or(|set| set.is_match(record.message))
    }
}

impl Route {
    fn matches_container(&self, container: Option<&ContainerName<'_>>) -> bool {
        if self.containers.is_empty() && self.projects.is_empty() {
            return true;
        }
        let Some(name) = container else {
            return false;
        };
        (self.containers.is_empty() || self.containers.iter().any(|c| c.matches(name)))
            && (self.projects.is_empty() || self.projects.iter().any(|p| p.matches(name)))
    }
}

/// The compiled rule list.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Compiles the rules.
    ///
    /// # Errors
    /// A bad pattern, name, key or action, naming the route.
    pub fn build(configs: &[RouteConfig], default_cap: usize) -> anyhow::Result<Router> {
        let mut routes = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            let label = if config.name.is_empty() {
                format!("route #{}", index + 1)
            } else {
                format!("route {:?}", config.name)
            };
            routes.push(Route::build(config, default_cap).with_context(|| label)?);
        }
        let mut names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("route name {:?} is used twice", pair[0]);
        }
        // One list, one cap: whichever route's message came first in a
        // batch would trim the list to its cap. (Templated keys cannot be
        // checked here; the writer trims those to the largest cap seen.)
        let mut caps: Vec<(&[u8], usize, &str)> = Vec::new();
        for route in &routes {
            let RouteAction::Store(store) = &route.action else {
                continue;
            };
            let Some(key) = store.key.literal() else {
                continue;
            };
            match caps.iter().find(|(k, _, _)| *k == key) {
                Some((_, cap, other)) if *cap != store.list_cap => bail!(
                    "routes {other:?} and {:?} write key {:?} with list_cap {cap} and {}: give them one list_cap",
                    route.name,
                    String::from_utf8_lossy(key),
                    store.list_cap
                ),
                Some(_) => {}
                None => caps.push((key, store.list_cap, &route.name)),
            }
        }
        Ok(Router { routes })
    }

    /// The rules, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route matching `record`, with its index.
    pub fn route(&self, record: &Record<'_>) -> Option<(usize, &Route)> {
        // Once per record, not per route: the compose labels are a lookup
        // among the GELF fields.
        let container = ContainerName::of(record);
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(record, container.as_ref()))
    }
}

impl Route {
    fn build(config: &RouteConfig, default_cap: usize) -> anyhow::Result<Route> {
        if config.name.is_empty() {
            bail!("name: must be set");
        }
        if !config
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            bail!(
                "name: {:?} may only hold letters, digits, '-', '_' and '.'",
                config.name
            );
        }
        let messages = if config.message.is_empty() {
            None
        } else {
            Some(RegexSet::new(&config.message).context("message: invalid regular expression")?)
        };
        let facilities = config
            .facility
            .iter()
            .map(|f| Facility::from_name(f).with_context(|| format!("facility: unknown {f:?}")))
            .collect::<anyhow::Result<_>>()?;
        let severities = config
            .severity
            .iter()
            .map(|s| Severity::from_keyword(s).with_context(|| format!("severity: unknown {s:?}")))
            .collect::<anyhow::Result<_>>()?;
        let action = match config.action {
            ActionName::Drop => {
                if !config.key.is_empty() || config.publish {
                    bail!("a \"drop\" route takes no key and no publish");
                }
                RouteAction::Drop
            }
            ActionName::Store => {
                if config.key.is_empty() {
                    bail!("key: a \"store\" route needs a key");
                }
                let set_severity = config.set_severity;
                let list_cap = config.list_cap.unwrap_or(default_cap);
                if list_cap == 0 {
                    bail!("list_cap: must be greater than 0");
                }
                RouteAction::Store(StoreAction {
                    key: KeyTemplate::parse(&config.key).context("key")?,
                    publish: config.publish,
                    set_severity,
                    list_cap,
                })
            }
        };
        Ok(Route {
            name: config.name.clone(),
            containers: config
                .container
                .iter()
                .map(|c| ContainerPattern::new(c))
                .collect(),
            projects: config
                .project
                .iter()
                .map(|p| ProjectPattern::new(p))
                .collect(),
            programs: config
                .program
                .iter()
                .map(|p| Wildcard::new(p.as_bytes()))
                .collect(),
            messages,
            facilities,
            severities,
            syslog_line: config.syslog_line,
            headerless: config.headerless,
            action,
        })
    }
}

/// Runs `check` on the record of the GELF message `json` (as Docker's gelf
/// driver would send it), received on 2026-11-24: for the routing tests.
#[cfg(test)]
pub(crate) fn with_gelf_record<T>(
    json: &serde_json::Value,
    check: impl FnOnce(&Record<'_>) -> T,
) -> T {
    use cowlogd_parsers::Timestamp;
    use cowlogd_parsers::syslog::TimeContext;
    let bytes = serde_json::to_vec(json).expect("JSON");
    let gelf = cowlogd_parsers::gelf::parse_gelf(&bytes).expect("GELF");
    let record = cowlogd_parsers::normalize::normalize_gelf(
        &gelf,
        &TimeContext::utc(Timestamp::new(1_795_999_799, 0)),
        Timestamp::default(),
    );
    check(&record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_templates() {
        let t = KeyTemplate::parse("LOGS:{container}:{program}").unwrap();
        let json = serde_json::json!({"short_message": "x", "_container_name": "web-1"});
        let out = with_gelf_record(&json, |record| {
            let mut out = Vec::new();
            t.render(record, &mut out);
            out
        });
        assert_eq!(out, b"LOGS:web-1:unknown");
        assert!(KeyTemplate::parse("X:{nope}").is_err());
        assert!(KeyTemplate::parse("X:{container").is_err());
    }

    #[test]
    fn bad_routes_are_rejected_with_their_name() {
        let bad = RouteConfig {
            name: "r1".into(),
            message: vec!["(".into()],
            key: "K".into(),
            ..RouteConfig::default()
        };
        let err = Router::build(&[bad], 10).unwrap_err();
        assert!(format!("{err:#}").contains("r1"), "{err:#}");
        let no_key = RouteConfig {
            name: "r2".into(),
            ..RouteConfig::default()
        };
        assert!(Router::build(&[no_key], 10).is_err());
    }
}
