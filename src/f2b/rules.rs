//! netfilter-mailcow's rules (`F2B_REGEX`), compiled once per change and
//! run on every published payload as Python's `re.search` would.
//!
//! Rules the `regex` crate can compile (all defaults but rule 3) go into one
//! `RegexSet`: a single pass over the payload says which of them match, and
//! only those are run again for group 1. Rules with look-around (rule 3's
//! negative lookahead) run through fancy-regex, a backtracking engine with
//! Python's syntax for them; the set holds such a rule without its
//! look-arounds (which only ever narrow a match), so the backtracking
//! search runs only on the few lines that pass that. A rule with
//! back-references has no such stand-in and is searched on every line.

use super::address::{AddressClass, classify};

/// netfilter's defaults, used when `F2B_REGEX` is absent (netfilter writes
/// these into Redis itself; cowlogd never writes them).
pub const DEFAULT_RULES: [(&str, &str); 9] = [
    (
        "1",
        r"mailcow UI: Invalid password for .+ by ([0-9a-f\.:]+)",
    ),
    ("2", r"Rspamd UI: Invalid password by ([0-9a-f\.:]+)"),
    (
        "3",
        r"warning: .*\[([0-9a-f\.:]+)\]: SASL .+ authentication failed: (?!.*Connection lost to authentication server).+",
    ),
    (
        "4",
        r"warning: non-SMTP command from .*\[([0-9a-f\.:]+)]:.+",
    ),
    (
        "5",
        r"NOQUEUE: reject: RCPT from \[([0-9a-f\.:]+)].+Protocol error.+",
    ),
    (
        "6",
        r"\w+\([^,]+,([0-9a-f\.:]+),<[^>]+>\): Password mismatch \(SHA1 of given password: [a-f0-9]+\)",
    ),
    (
        "7",
        r"\w+\([^,]+,([0-9a-f\.:]+),<[^>]+>\): unknown user \(SHA1 of given password: [a-f0-9]+\)",
    ),
    (
        "8",
        r"SOGo.+ Login from '([0-9a-f\.:]+)' for user .+ might not have worked",
    ),
    ("9", r#"([0-9a-f\.:]+) \"GET \/SOGo\/.* HTTP.+\" 403 .+"#),
];

/// Rules beyond this many share the metric label `other`.
pub const MAX_RULE_LABELS: usize = 64;

enum Engine {
    /// In the prefilter set; run again only when the set says it matches.
    Plain(regex::Regex),
    /// Look-around or back-references: run on every payload.
    Fancy(fancy_regex::Regex),
}

/// One rule as loaded.
pub struct Rule {
    /// Its key in `F2B_REGEX` (`"3"`).
    pub id: String,
    /// The pattern as written.
    pub pattern: String,
    engine: Option<Engine>,
    /// Why it could not be compiled.
    pub error: Option<String>,
}

/// One rule that matched a payload, and what group 1 turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleHit {
    /// Index into [`RuleSet::rules`].
    pub rule: usize,
    /// The address verdict.
    pub class: AddressClass,
}

/// The compiled rules.
pub struct RuleSet {
    /// In id order (numeric ids numerically).
    pub rules: Vec<Rule>,
    prefilter: regex::RegexSet,
    /// One literal every `prefilter` pattern requires, per pattern: a line
    /// with none of them cannot match any, and skips the set's pass over
    /// it. `None` when some pattern requires no literal.
    gate: Option<Gate>,
    /// `prefilter` index → rule index.
    prefiltered: Vec<usize>,
    /// Rules searched on every payload (look-around, or no prefilter).
    one_by_one: Vec<usize>,
}

impl RuleSet {
    /// netfilter's nine defaults.
    pub fn defaults() -> RuleSet {
        RuleSet::compile(
            DEFAULT_RULES
                .iter()
                .map(|(id, pattern)| ((*id).to_owned(), (*pattern).to_owned()))
                .collect(),
        )
    }

    /// The rules of an `F2B_REGEX` value: a JSON object of id → pattern.
    ///
    /// # Errors
    /// When the value is not such an object (netfilter would exit).
    pub fn from_json(text: &str) -> Result<RuleSet, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("F2B_REGEX is not JSON: {e}"))?;
        let object = value
            .as_object()
            .ok_or_else(|| "F2B_REGEX is not a JSON object".to_owned())?;
        let mut rules = Vec::with_capacity(object.len());
        for (id, pattern) in object {
            let pattern = pattern
                .as_str()
                .ok_or_else(|| format!("F2B_REGEX rule {id:?} is not a string"))?;
            rules.push((id.clone(), pattern.to_owned()));
        }
        Ok(RuleSet::compile(rules))
    }

    fn compile(mut specs: Vec<(String, String)>) -> RuleSet {
        specs.sort_by(|a, b| match (a.0.parse::<u64>(), b.0.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.0.cmp(&b.0),
        });
        let mut rules = Vec::with_capacity(specs.len());
        let mut set_patterns = Vec::new();
        let mut prefiltered = Vec::new();
        let mut one_by_one = Vec::new();
        for (index, (id, pattern)) in specs.into_iter().enumerate() {
            let (engine, error) = match regex::Regex::new(&pattern) {
                Ok(compiled) => {
                    set_patterns.push(pattern.clone());
                    prefiltered.push(index);
                    (Some(Engine::Plain(compiled)), None)
                }
                Err(_) => match fancy_regex::Regex::new(&pattern) {
                    Ok(compiled) => {
                        match without_lookaround(&pattern)
                            .filter(|relaxed| regex::Regex::new(relaxed).is_ok())
                        {
                            Some(relaxed) => {
                                set_patterns.push(relaxed);
                                prefiltered.push(index);
                            }
                            None => one_by_one.push(index),
                        }
                        (Some(Engine::Fancy(compiled)), None)
                    }
                    Err(error) => (None, Some(error.to_string())),
                },
            };
            rules.push(Rule {
                id,
                pattern,
                engine,
                error,
            });
        }
        // Every pattern compiled alone; only regex's size limit can refuse
        // the set, and then every rule is searched one by one.
        let gate = literal_gate(&set_patterns);
        let prefilter = regex::RegexSet::new(&set_patterns).unwrap_or_else(|_| {
            one_by_one.append(&mut prefiltered);
            one_by_one.sort_unstable();
            regex::RegexSet::empty()
        });
        RuleSet {
            rules,
            prefilter,
            gate,
            prefiltered,
            one_by_one,
        }
    }

    /// Rules that compiled.
    pub fn loaded(&self) -> usize {
        self.rules.iter().filter(|r| r.engine.is_some()).count()
    }

    /// Appends a hit for every rule whose search matches `payload`, in rule
    /// order (netfilter counts every matching rule, not only the first).
    pub fn evaluate(&self, payload: &str, hits: &mut Vec<RuleHit>) {
        let start = hits.len();
        let gated_out = self
            .gate
            .as_ref()
            .is_some_and(|gate| !gate.any_in(payload.as_bytes()));
        let set_matches = (!gated_out).then(|| self.prefilter.matches(payload));
        let candidates = set_matches
            .into_iter()
            .flatten()
            .map(|set_index| self.prefiltered[set_index])
            .chain(self.one_by_one.iter().copied());
        for rule in candidates {
            if let Some(group) = self.search(rule, payload) {
                hits.push(RuleHit {
                    rule,
                    class: group.map_or(AddressClass::NotAnAddress, classify),
                });
            }
        }
        hits[start..].sort_by_key(|hit| hit.rule);
    }

    /// `re.search` of rule `rule`: `None` when it does not match, else its
    /// group 1 (`None` when the group took no part).
    fn search<'p>(&self, rule: usize, payload: &'p str) -> Option<Option<&'p str>> {
        match &self.rules[rule].engine {
            Some(Engine::Plain(re)) => re.captures(payload).map(|c| c.get(1).map(|m| m.as_str())),
            // An error is the backtracking limit: no attempt counted.
            Some(Engine::Fancy(re)) => re
                .captures(payload)
                .ok()
                .flatten()
                .map(|c| c.get(1).map(|m| m.as_str())),
            None => None,
        }
    }
}

/// Literals shorter than this do not gate: too common to skip many lines.
const MIN_GATE_LITERAL: usize = 4;

/// Finds whether a line holds any of the required literals.
enum Gate {
    /// SIMD (Teddy): the literals here start with common bytes (` `),
    /// which defeat an automaton's start-byte prefilter.
    Packed(aho_corasick::packed::Searcher),
    /// Where Teddy is not available (no SSSE3/AVX2, too many literals).
    Automaton(aho_corasick::AhoCorasick),
}

impl Gate {
    fn any_in(&self, line: &[u8]) -> bool {
        match self {
            Gate::Packed(searcher) => searcher.find(line).is_some(),
            Gate::Automaton(automaton) => automaton.is_match(line),
        }
    }
}

/// A gate on one required literal of each pattern (the longest), or `None`
/// when a pattern has none of at least [`MIN_GATE_LITERAL`] bytes (then
/// every line goes to the set).
fn literal_gate(patterns: &[String]) -> Option<Gate> {
    let literals = patterns
        .iter()
        .map(|pattern| {
            let hir = regex_syntax::parse(pattern).ok()?;
            required_literal(&hir).filter(|l| l.len() >= MIN_GATE_LITERAL)
        })
        .collect::<Option<Vec<Vec<u8>>>>()?;
    if literals.is_empty() {
        return None;
    }
    let packed = aho_corasick::packed::Config::new()
        .builder()
        .extend(&literals)
        .build();
    match packed {
        Some(searcher) => Some(Gate::Packed(searcher)),
        None => aho_corasick::AhoCorasick::new(literals)
            .ok()
            .map(Gate::Automaton),
    }
}

/// The longest byte string every match of `hir` contains, if any: a run of
/// literals in a concatenation, looked for through groups and repetitions
/// of at least one.
///
/// `warning: .*\[(x)\]: SASL .+ authentication failed: .+` → ` authentication failed: `
pub fn required_literal(hir: &regex_syntax::hir::Hir) -> Option<Vec<u8>> {
    use regex_syntax::hir::HirKind;
    let longer = |a: Option<Vec<u8>>, b: Option<Vec<u8>>| match (a, b) {
        (Some(a), Some(b)) => Some(if b.len() > a.len() { b } else { a }),
        (a, b) => a.or(b),
    };
    match hir.kind() {
        HirKind::Literal(literal) => Some(literal.0.to_vec()),
        HirKind::Capture(capture) => required_literal(&capture.sub),
        HirKind::Repetition(repetition) if repetition.min >= 1 => required_literal(&repetition.sub),
        HirKind::Concat(parts) => {
            let mut best = None;
            let mut run: Vec<u8> = Vec::new();
            for part in parts {
                if let HirKind::Literal(literal) = part.kind() {
                    run.extend_from_slice(&literal.0);
                    continue;
                }
                best = longer(
                    best,
                    Some(std::mem::take(&mut run)).filter(|r| !r.is_empty()),
                );
                best = longer(best, required_literal(part));
            }
            longer(best, Some(run).filter(|r| !r.is_empty()))
        }
        _ => None,
    }
}

/// `pattern` with its look-around groups (`(?=…)`, `(?!…)`, `(?<=…)`,
/// `(?<!…)`) removed: a pattern that matches wherever `pattern` does, and
/// that the `regex` crate may compile. `None` when `pattern` has
/// back-references (no such stand-in) or unbalanced groups.
///
/// `warning: .*\[(x)\]: (?!.*lost).+` → `warning: .*\[(x)\]: .+`
pub fn without_lookaround(pattern: &str) -> Option<String> {
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &pattern[i..];
        if ["(?=", "(?!", "(?<=", "(?<!"]
            .iter()
            .any(|p| rest.starts_with(p))
        {
            i += group_len(rest)?;
            continue;
        }
        if rest.starts_with("(?P=") || rest.starts_with("(?P>") {
            return None;
        }
        let token = token_len(rest)?;
        if token == 2
            && bytes[i] == b'\\'
            && (bytes[i + 1].is_ascii_digit() || bytes[i + 1] == b'k')
        {
            return None;
        }
        out.push_str(&rest[..token]);
        i += token;
    }
    Some(out)
}

/// Length of the group `text` starts with, through its closing paren.
fn group_len(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text.as_bytes()[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += token_len(&text[i..])?;
    }
    None
}

/// Length of one token: an escape (`\x`, two characters), a character
/// class (`[…]`, whose `(`, `)` and `\` are literal or escaped), or one
/// character.
fn token_len(text: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    let (_, first) = chars.next()?;
    match first {
        '\\' => chars.next().map(|(at, c)| at + c.len_utf8()),
        '[' => {
            let bytes = text.as_bytes();
            // `]` right after `[` or `[^` is a literal member.
            let mut i = 1;
            if bytes.get(i) == Some(&b'^') {
                i += 1;
            }
            if bytes.get(i) == Some(&b']') {
                i += 1;
            }
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b']' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        c => Some(c.len_utf8()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(rules: &RuleSet, payload: &str) -> Vec<(String, AddressClass)> {
        let mut out = Vec::new();
        rules.evaluate(payload, &mut out);
        out.into_iter()
            .map(|h| (rules.rules[h.rule].id.clone(), h.class))
            .collect()
    }

    #[test]
    fn the_nine_defaults_compile_and_rule_3_needs_the_backtracking_engine() {
        let rules = RuleSet::defaults();
        assert_eq!(rules.loaded(), 9);
        assert!(
            rules.one_by_one.is_empty(),
            "rule 3 has a stand-in in the set"
        );
        assert_eq!(rules.prefiltered.len(), 9);
    }

    fn public(address: &str) -> AddressClass {
        AddressClass::Public(address.parse().unwrap())
    }

    #[test]
    fn every_default_rule_requires_a_literal_so_most_lines_skip_the_set() {
        let literal = |pattern: &str| {
            let hir = regex_syntax::parse(pattern).unwrap();
            String::from_utf8(required_literal(&hir).unwrap_or_default()).unwrap()
        };
        assert_eq!(
            literal(&without_lookaround(DEFAULT_RULES[2].1).unwrap()),
            " authentication failed: "
        );
        assert_eq!(
            literal(DEFAULT_RULES[0].1),
            "mailcow UI: Invalid password for "
        );
        assert_eq!(literal(r"a(bcd)+e|xyz"), "");
        assert_eq!(literal(r"(?i)warning: x"), ": ");
        assert_eq!(literal(r"ab(?:cdef)?gh\d"), "ab");
        let rules = RuleSet::defaults();
        assert!(rules.gate.is_some());
        let attack =
            "warning: unknown[185.12.64.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6";
        assert_eq!(
            hits(&rules, attack),
            [("3".to_owned(), public("185.12.64.9"))]
        );
        assert_eq!(hits(&rules, "connect from unknown[185.12.64.9]"), []);
    }

    #[test]
    fn a_rule_without_a_literal_turns_the_gate_off_and_still_matches() {
        let rules =
            RuleSet::from_json(r#"{"1": "(?i)LOGIN FAILED from ([0-9.]+)", "2": "Rspamd UI: Invalid password by ([0-9a-f\\.:]+)"}"#)
                .unwrap();
        assert!(rules.gate.is_none());
        assert_eq!(
            hits(&rules, "login failed from 185.12.64.9"),
            [("1".to_owned(), public("185.12.64.9"))]
        );
        assert_eq!(
            hits(&rules, "Rspamd UI: Invalid password by 185.12.64.9"),
            [("2".to_owned(), public("185.12.64.9"))]
        );
    }

    #[test]
    fn look_arounds_come_out_and_back_references_have_no_stand_in() {
        assert_eq!(
            without_lookaround(DEFAULT_RULES[2].1).as_deref(),
            Some(r"warning: .*\[([0-9a-f\.:]+)\]: SASL .+ authentication failed: .+")
        );
        assert_eq!(
            without_lookaround(r"a(?<=[)(]\)(x))b(?<!c)d[\](]").as_deref(),
            Some(r"abd[\](]")
        );
        assert_eq!(without_lookaround(r"(a)\1"), None);
        assert_eq!(without_lookaround(r"(?P<n>a)(?P=n)"), None);
        assert_eq!(without_lookaround(r"a(?!b"), None);
    }

    #[test]
    fn a_rule_with_a_back_reference_is_searched_on_every_line() {
        let rules = RuleSet::from_json(r#"{"1": "(\\w+) again \\1 from ([0-9.]+)"}"#).unwrap();
        assert_eq!(rules.one_by_one, vec![0]);
        assert_eq!(hits(&rules, "x again x from 8.8.8.8").len(), 1);
        assert!(hits(&rules, "x again y from 8.8.8.8").is_empty());
    }

    #[test]
    fn rule_3s_lookahead_excludes_lost_connections() {
        let rules = RuleSet::defaults();
        let failed =
            "warning: unknown[185.12.64.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6";
        assert_eq!(
            hits(&rules, failed),
            vec![(
                "3".to_owned(),
                AddressClass::Public("185.12.64.1".parse().unwrap())
            )]
        );
        let lost = "warning: unknown[185.12.64.1]: SASL LOGIN authentication failed: Connection lost to authentication server";
        assert!(hits(&rules, lost).is_empty());
    }

    #[test]
    fn a_rule_that_does_not_compile_is_reported_and_the_others_work() {
        let rules = RuleSet::from_json(
            r#"{"1": "Invalid password by ([0-9.]+", "2": "bad login from ([0-9.]+)"}"#,
        )
        .unwrap();
        assert_eq!(rules.loaded(), 1);
        assert!(rules.rules[0].error.is_some());
        assert_eq!(hits(&rules, "bad login from 8.8.8.8").len(), 1);
    }

    #[test]
    fn a_capture_that_is_no_address_is_classified_so() {
        let rules = RuleSet::from_json(r#"{"1": "from ([0-9a-f.:]+) x"}"#).unwrap();
        assert_eq!(
            hits(&rules, "from 1.2.3 x"),
            vec![("1".to_owned(), AddressClass::NotAnAddress)]
        );
    }
}
