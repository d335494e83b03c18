//! Which container a route means: globs on the container's full name, on
//! the compose service it runs and on the compose project it belongs to.
//!
//! Docker names a compose container `<project>-<service>-<n>` (compose v2)
//! or `<project>_<service>_<n>` (v1); both parts may hold `-` themselves
//! (`mailcowdockerized-postfix-mailcow-1`), so a pattern is tried against
//! every split of the name at a separator. A sender that adds the compose
//! labels (Docker's gelf and fluentd drivers with `labels=...`) names the
//! service and project outright: `_com.docker.compose.service` and
//! `_com.docker.compose.project` are then used instead of the name.
//!
//! Everything here runs for every record a route looks at: nothing
//! allocates, patterns are split at their `*`s once when routes are built.

use cowlogd_parsers::{Origin, Record};

/// GELF additional field the compose label for the service arrives in.
const SERVICE_LABEL: &str = "com.docker.compose.service";
/// GELF additional field the compose label for the project arrives in.
const PROJECT_LABEL: &str = "com.docker.compose.project";

/// `*` matches any run of bytes (including `/`, `-` and nothing);
/// everything else matches itself. Split at its `*`s once, when the routes
/// are built: matching runs for every record and must not allocate.
#[derive(Debug, Clone)]
pub(crate) struct Wildcard {
    /// The text between the stars; one part means no star.
    parts: Vec<Vec<u8>>,
}

impl Wildcard {
    pub(crate) fn new(pattern: &[u8]) -> Wildcard {
        Wildcard {
            parts: pattern.split(|&b| b == b'*').map(<[u8]>::to_vec).collect(),
        }
    }

    pub(crate) fn matches(&self, text: &[u8]) -> bool {
        let (first, rest_parts) = match self.parts.split_first() {
            Some(split) => split,
            None => return text.is_empty(),
        };
        let Some(mut rest) = text.strip_prefix(first.as_slice()) else {
            return false;
        };
        let Some((last, middles)) = rest_parts.split_last() else {
            return rest.is_empty();
        };
        for middle in middles {
            match memchr::memmem::find(rest, middle) {
                Some(at) => rest = &rest[at + middle.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// One `[docker] include`/`exclude` glob (`*` any run of bytes): a
/// container matches by its name, its compose service or its compose
/// project (the `com.docker.compose.*` labels).
#[derive(Debug, Clone)]
pub struct ContainerGlob {
    glob: Wildcard,
}

impl ContainerGlob {
    /// The glob `pattern`.
    pub fn new(pattern: &str) -> ContainerGlob {
        ContainerGlob {
            glob: Wildcard::new(pattern.as_bytes()),
        }
    }

    /// Whether the container named `name` with these compose labels
    /// matches.
    pub fn matches(&self, name: &str, service: Option<&str>, project: Option<&str>) -> bool {
        [Some(name), service, project]
            .into_iter()
            .flatten()
            .any(|text| self.glob.matches(text.as_bytes()))
    }
}

/// The container a record came from, as routes see it.
#[derive(Clone, Copy)]
pub(crate) struct ContainerName<'a> {
    /// The full name, without Docker's leading `/`.
    full: &'a [u8],
    /// The name without its replica number (`-1`, `_1`), when it had one.
    unnumbered: Option<&'a [u8]>,
    service_label: Option<&'a [u8]>,
    project_label: Option<&'a [u8]>,
}

impl<'a> ContainerName<'a> {
    /// The record's container, if it came from one.
    pub(crate) fn of(record: &Record<'a>) -> Option<ContainerName<'a>> {
        let full = record.container?;
        let full = full.strip_prefix(b"/").unwrap_or(full);
        let label = |name: &str| match record.origin {
            Origin::Gelf(gelf) => gelf.str_field(name).map(str::as_bytes),
            Origin::Syslog(_) => None,
        };
        Some(ContainerName {
            full,
            unnumbered: strip_replica(full),
            service_label: label(SERVICE_LABEL),
            project_label: label(PROJECT_LABEL),
        })
    }

    /// The name up to its replica number, or the whole name.
    fn base(&self) -> &'a [u8] {
        self.unnumbered.unwrap_or(self.full)
    }

    /// Splits of [`Self::base`] at each `-` or `_`: (before, after).
    fn splits(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let base = self.base();
        base.iter()
            .enumerate()
            .filter(|(_, b)| matches!(b, b'-' | b'_'))
            .map(move |(at, _)| (&base[..at], &base[at + 1..]))
    }
}

/// One `container = [...]` pattern: the full name, or the compose service.
#[derive(Debug, Clone)]
pub(crate) enum ContainerPattern {
    /// Without `*` (the mailcow profile's): compared, no split tried.
    Literal(Vec<u8>),
    /// With `*`: tried against the name and each split.
    Glob(Wildcard),
}

impl ContainerPattern {
    pub(crate) fn new(pattern: &str) -> ContainerPattern {
        if pattern.contains('*') {
            ContainerPattern::Glob(Wildcard::new(pattern.as_bytes()))
        } else {
            ContainerPattern::Literal(pattern.as_bytes().to_vec())
        }
    }

    /// `shop-*` matches `shop-web-1`; `postfix-mailcow` matches
    /// `mailcowdockerized-postfix-mailcow-1` (its service) and a container
    /// whose compose service label says `postfix-mailcow`.
    pub(crate) fn matches(&self, name: &ContainerName<'_>) -> bool {
        self.matches_text(name.full)
            || match name.service_label {
                Some(service) => self.matches_text(service),
                None => self.matches_text(name.base()) || self.matches_a_service_in(name),
            }
    }

    fn matches_text(&self, text: &[u8]) -> bool {
        match self {
            ContainerPattern::Literal(literal) => text == literal.as_slice(),
            ContainerPattern::Glob(glob) => glob.matches(text),
        }
    }

    /// Whether the part after some `-`/`_` of the name is the service.
    fn matches_a_service_in(&self, name: &ContainerName<'_>) -> bool {
        match self {
            // Of all the splits, only the one the literal ends at can match.
            ContainerPattern::Literal(literal) => name
                .base()
                .strip_suffix(literal.as_slice())
                .is_some_and(|before| matches!(before.last(), Some(b'-' | b'_'))),
            ContainerPattern::Glob(glob) => name.splits().any(|(_, after)| glob.matches(after)),
        }
    }
}

/// One `project = [...]` pattern: the compose project.
#[derive(Debug, Clone)]
pub(crate) struct ProjectPattern(Wildcard);

impl ProjectPattern {
    pub(crate) fn new(pattern: &str) -> ProjectPattern {
        ProjectPattern(Wildcard::new(pattern.as_bytes()))
    }

    /// `mailcow*` matches `mailcowdockerized-dovecot-mailcow-1` and a
    /// container whose compose project label says so. Without the label,
    /// only a name with a replica number is a compose name: `my-app` is
    /// no project `my`.
    pub(crate) fn matches(&self, name: &ContainerName<'_>) -> bool {
        if let Some(project) = name.project_label {
            return self.0.matches(project);
        }
        name.unnumbered.is_some()
            && name
                .splits()
                .any(|(before, after)| !after.is_empty() && self.0.matches(before))
    }
}

/// `x-1` → `x`, `x_12` → `x`; `None` without a replica number.
fn strip_replica(name: &[u8]) -> Option<&[u8]> {
    let digits = name.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits == name.len() {
        return None;
    }
    let before = &name[..name.len() - digits];
    match before.last() {
        Some(b'-' | b'_') if before.len() > 1 => Some(&before[..before.len() - 1]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
        Wildcard::new(pattern).matches(text)
    }

    /// Runs `check` on the container of a GELF message with these fields.
    fn with_container<T>(
        json: serde_json::Value,
        check: impl FnOnce(&ContainerName<'_>) -> T,
    ) -> T {
        super::super::with_gelf_record(&json, |record| {
            check(&ContainerName::of(record).expect("a container"))
        })
    }

    fn container_matches(pattern: &str, name: &str) -> bool {
        with_container(
            serde_json::json!({"short_message": "x", "_container_name": name}),
            |c| ContainerPattern::new(pattern).matches(c),
        )
    }

    fn project_matches(pattern: &str, name: &str) -> bool {
        with_container(
            serde_json::json!({"short_message": "x", "_container_name": name}),
            |c| ProjectPattern::new(pattern).matches(c),
        )
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"postfix/*", b"postfix/smtpd"));
        assert!(wildcard_match(b"postfix/*", b"postfix/submission/smtpd"));
        assert!(!wildcard_match(b"postfix/*", b"postfix"));
        assert!(wildcard_match(b"*", b""));
        assert!(wildcard_match(b"a*b*c", b"axxbyyc"));
        assert!(!wildcard_match(b"a*b*c", b"axxc"));
        assert!(!wildcard_match(b"ab*b", b"ab"));
        assert!(wildcard_match(b"dovecot", b"dovecot"));
    }

    #[test]
    fn a_container_glob_matches_the_full_name() {
        assert!(container_matches("shop-*", "shop-web-1"));
        assert!(container_matches("shop-*", "/shop-web-1"));
        assert!(container_matches("*-web-*", "shop-web-1"));
        assert!(container_matches("nginx", "nginx"));
        assert!(!container_matches("shop-*", "myshop-web-1x"));
    }

    #[test]
    fn a_container_pattern_matches_the_compose_service_in_either_compose_naming() {
        for name in [
            "mailcowdockerized-postfix-mailcow-1",
            "mailcowdockerized_postfix-mailcow_1",
            "mailcowdockerized-postfix-mailcow",
            "postfix-mailcow",
        ] {
            assert!(container_matches("postfix-mailcow", name), "{name}");
            assert!(container_matches("postfix-*", name), "{name}");
        }
        assert!(!container_matches(
            "postfix-mailcow",
            "mailcowdockerized-postfix-tlspol-mailcow-1"
        ));
        assert!(container_matches(
            "*-tlspol-*",
            "mailcowdockerized-postfix-tlspol-mailcow-1"
        ));
        assert!(!container_matches("web", "webshop-1x"));
        assert!(container_matches("web", "shop-web-12"));
    }

    #[test]
    fn a_service_is_a_whole_part_of_the_name() {
        assert!(container_matches(
            "sogo-mailcow",
            "/mailcowdockerized-sogo-mailcow-1"
        ));
        assert!(container_matches("dovecot-mailcow", "proj-dovecot-mailcow"));
        assert!(!container_matches(
            "postfix-mailcow",
            "mailcowdockerized-xpostfix-mailcow-1"
        ));
        assert!(!container_matches(
            "",
            "mailcowdockerized-postfix-mailcow-1"
        ));
        assert!(!container_matches("1x", "1"));
    }

    #[test]
    fn a_project_pattern_matches_the_part_before_the_service() {
        assert!(project_matches(
            "mailcowdockerized",
            "mailcowdockerized-postfix-mailcow-1"
        ));
        assert!(project_matches(
            "mailcow*",
            "mailcowdockerized_dovecot-mailcow_1"
        ));
        assert!(project_matches("my-shop", "my-shop-web-1"));
        assert!(!project_matches("shop", "my-shop-web-1"));
        // Not a compose name: no replica number, or nothing after the project.
        assert!(!project_matches("my", "my-app"));
        assert!(!project_matches("shop", "shop-1"));
    }

    #[test]
    fn compose_labels_name_service_and_project_outright() {
        let labelled = serde_json::json!({
            "short_message": "x",
            "_container_name": "custom-name",
            "_com.docker.compose.service": "web",
            "_com.docker.compose.project": "shop",
        });
        with_container(labelled, |c| {
            assert!(ContainerPattern::new("web").matches(c));
            assert!(ContainerPattern::new("custom-*").matches(c));
            assert!(!ContainerPattern::new("name").matches(c));
            assert!(ProjectPattern::new("shop").matches(c));
            assert!(!ProjectPattern::new("custom").matches(c));
        });
    }

    #[test]
    fn replica_numbers_are_stripped_only_after_a_separator() {
        assert_eq!(strip_replica(b"x-1"), Some(&b"x"[..]));
        assert_eq!(strip_replica(b"x_12"), Some(&b"x"[..]));
        assert_eq!(strip_replica(b"x1"), None);
        assert_eq!(strip_replica(b"123"), None);
        assert_eq!(strip_replica(b"-1"), None);
    }
}
