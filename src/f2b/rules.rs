//! netfilter-mailcow's rules (`F2B_REGEX`), compiled once per change and
//! run on every published payload as Python's `re.search` would.
//!
//! Every rule runs on PCRE2 (JIT-compiled): a backtracking engine like
//! Python's `re`, so group 1 is the group Python would report, and
//! look-around (rule 3's negative lookahead) and back-references need no
//! second engine. Python's spellings PCRE2 lacks (`\Z`, `\uXXXX`,
//! `\UXXXXXXXX`) are rewritten first ([`python_to_pcre2`]).
//!
//! Most payloads match no rule, and most rules require a literal
//! (` authentication failed: `): one SIMD search for all of those literals
//! (the gate) skips such a payload at once. Where the gate finds one, only
//! the rules whose own literal is there are searched. A rule without such
//! a literal is searched on every payload.

use std::sync::atomic::{AtomicU64, Ordering};

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

fn default_specs() -> Vec<(String, String)> {
    DEFAULT_RULES
        .iter()
        .map(|(id, pattern)| ((*id).to_owned(), (*pattern).to_owned()))
        .collect()
}

/// Rules beyond this many share the metric label `other`.
pub const MAX_RULE_LABELS: usize = 64;

/// Room for PCRE2's JIT backtracking stack, reserved per rule per
/// connection and touched only as deep as a search goes. PCRE2's own
/// default (32 KiB) runs out on a repeated group over some KiB of payload,
/// which Python matches.
const JIT_STACK_BYTES: usize = 1 << 20;

/// The most backtracking one search of a payload up to
/// [`BUDGET_LINE_BYTES`] may do with PCRE2's JIT, far below PCRE2's
/// default of 10,000,000: the default rules need at most 15 on 2 KiB
/// lines that match, a crafted line over 8,000 (rule 3: 376 µs; with this
/// limit 52 µs). A search over it gives up, counted as `search_limit`
/// (BENCHMARKS.md: "The ban engine's budget").
pub const JIT_MATCH_LIMIT: u32 = 1_000;

/// The same for PCRE2's interpreter, used when the JIT is not available
/// (`MemoryDenyWriteExecute`): it counts in smaller steps (the default
/// rules need up to 5,775 on a 2 KiB line that matches).
pub const INTERPRETER_MATCH_LIMIT: u32 = 50_000;

/// The payload length the limits above are for: the default channel cut.
/// Longer payloads (a raised `redis.channel_max_bytes`) are searched by a
/// second compilation with [`LONG_PAYLOAD_FACTOR`] times the limit, so the
/// budget stays about proportional to the payload up to 128 KiB.
pub const BUDGET_LINE_BYTES: usize = 2048;

/// See [`BUDGET_LINE_BYTES`].
pub const LONG_PAYLOAD_FACTOR: u32 = 64;

/// One rule compiled twice, with the budget for a payload up to
/// [`BUDGET_LINE_BYTES`] and with the one for longer payloads.
struct Engines {
    line: pcre2::bytes::Regex,
    long: pcre2::bytes::Regex,
}

impl Engines {
    /// Compiles `pattern` (PCRE2 spelling) with the JIT and its match
    /// limits if `jit` and the JIT is available, else for the interpreter
    /// with its own; `true` with the engines when the JIT took them.
    fn compile(pattern: &str, jit: bool) -> Result<(Engines, bool), pcre2::Error> {
        let build = |jit: bool, limit: u32| {
            pcre2::bytes::RegexBuilder::new()
                .utf(true)
                .ucp(true)
                .jit(jit)
                .max_jit_stack_size(jit.then_some(JIT_STACK_BYTES))
                .build(&format!("(*LIMIT_MATCH={limit}){pattern}"))
        };
        let both = |jit: bool, limit: u32| {
            Ok(Engines {
                line: build(jit, limit)?,
                long: build(jit, limit.saturating_mul(LONG_PAYLOAD_FACTOR))?,
            })
        };
        // The JIT fails where writable executable memory is refused
        // (systemd's MemoryDenyWriteExecute=yes, PR_SET_MDWE).
        let interpreter = || both(false, INTERPRETER_MATCH_LIMIT).map(|e| (e, false));
        if jit {
            both(true, JIT_MATCH_LIMIT)
                .map(|e| (e, true))
                .or_else(|_: pcre2::Error| interpreter())
        } else {
            interpreter()
        }
    }

    fn for_payload(&self, payload: &[u8]) -> (&pcre2::bytes::Regex, usize) {
        if payload.len() <= BUDGET_LINE_BYTES {
            (&self.line, 0)
        } else {
            (&self.long, 1)
        }
    }
}

/// One rule as loaded.
pub struct Rule {
    /// Its key in `F2B_REGEX` (`"3"`).
    pub id: String,
    /// The pattern as written.
    pub pattern: String,
    engine: Option<Engines>,
    /// Why it could not be compiled.
    pub error: Option<String>,
}

/// What a search of one rule on one payload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleVerdict {
    /// It matched; the address verdict on group 1 (not an address when the
    /// group took no part).
    Matched(AddressClass),
    /// PCRE2 gave up (the search budget, [`JIT_MATCH_LIMIT`], or the JIT
    /// stack): a crafted line, or a rule that backtracks without end, on
    /// which netfilter itself would hang.
    GaveUp,
}

/// One rule that matched a payload (or was given up on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleHit {
    /// Index into [`RuleSet::rules`].
    pub rule: usize,
    /// What the search found.
    pub verdict: RuleVerdict,
}

/// Per-caller search state (PCRE2's match data, one per rule), so that a
/// search allocates nothing. Made by [`RuleSet::scratch`]; one belongs to
/// one [`RuleSet`] and is remade by [`RuleSet::evaluate`] if handed to
/// another.
pub struct Scratch {
    set: u64,
    /// Per rule, for its two engines.
    locations: Vec<Option<[pcre2::bytes::CaptureLocations; 2]>>,
    /// Rules to search on the payload at hand.
    candidates: Vec<usize>,
}

impl Default for Scratch {
    /// Empty: the first [`RuleSet::evaluate`] fills it.
    fn default() -> Scratch {
        Scratch {
            set: u64::MAX,
            locations: Vec::new(),
            candidates: Vec::new(),
        }
    }
}

/// Tells rule sets apart for [`Scratch`].
static NEXT_SET: AtomicU64 = AtomicU64::new(0);

/// The compiled rules.
pub struct RuleSet {
    /// In id order (numeric ids numerically).
    pub rules: Vec<Rule>,
    /// Unique per set (ties a [`Scratch`] to it).
    set: u64,
    /// Finds the rules' literals in a payload; `None` when no rule has
    /// one.
    gate: Option<Gate>,
    /// Per gate literal, the rules that require it: searched only on
    /// payloads that hold it.
    gated: Vec<Vec<usize>>,
    /// Compiled rules without one: searched on every payload.
    always: Vec<usize>,
    /// Rules the JIT was asked for and could not compile.
    interpreted: usize,
}

impl RuleSet {
    /// netfilter's nine defaults.
    pub fn defaults() -> RuleSet {
        RuleSet::compile(default_specs())
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

    fn compile(specs: Vec<(String, String)>) -> RuleSet {
        RuleSet::compile_with(specs, true)
    }

    /// `jit`: whether to use PCRE2's JIT where available (tests turn it
    /// off to check the interpreter's budget, which systems that forbid
    /// writable executable memory get).
    fn compile_with(mut specs: Vec<(String, String)>, jit: bool) -> RuleSet {
        specs.sort_by(|a, b| match (a.0.parse::<u64>(), b.0.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.0.cmp(&b.0),
        });
        let mut rules = Vec::with_capacity(specs.len());
        let mut literals: Vec<Vec<u8>> = Vec::new();
        let mut gated: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        let mut interpreted = 0;
        for (index, (id, pattern)) in specs.into_iter().enumerate() {
            let compiled = Engines::compile(&python_to_pcre2(&pattern), jit);
            let (engine, error) = match compiled {
                Ok((engine, jitted)) => {
                    if jit && !jitted {
                        interpreted += 1;
                    }
                    match gate_literal(&pattern) {
                        Some(literal) => match literals.iter().position(|l| *l == literal) {
                            Some(known) => gated[known].push(index),
                            None => {
                                literals.push(literal);
                                gated.push(vec![index]);
                            }
                        },
                        None => always.push(index),
                    }
                    (Some(engine), None)
                }
                Err(error) => (None, Some(error.to_string())),
            };
            rules.push(Rule {
                id,
                pattern,
                engine,
                error,
            });
        }
        RuleSet {
            rules,
            set: NEXT_SET.fetch_add(1, Ordering::Relaxed),
            gate: Gate::new(&literals),
            gated,
            always,
            interpreted,
        }
    }

    /// Rules that compiled for PCRE2's interpreter because its JIT was not
    /// available (0 where the JIT works).
    pub fn interpreted(&self) -> usize {
        self.interpreted
    }

    /// Rules that compiled.
    pub fn loaded(&self) -> usize {
        self.rules.iter().filter(|r| r.engine.is_some()).count()
    }

    /// Search state for [`RuleSet::evaluate`].
    pub fn scratch(&self) -> Scratch {
        Scratch {
            set: self.set,
            locations: self
                .rules
                .iter()
                .map(|rule| {
                    rule.engine
                        .as_ref()
                        .map(|e| [e.line.capture_locations(), e.long.capture_locations()])
                })
                .collect(),
            candidates: Vec::with_capacity(self.rules.len()),
        }
    }

    /// Appends a hit for every rule whose search matches `payload` (a
    /// channel payload: UTF-8), in rule order (netfilter counts every
    /// matching rule, not only the first).
    pub fn evaluate(&self, payload: &[u8], hits: &mut Vec<RuleHit>, scratch: &mut Scratch) {
        if scratch.set != self.set {
            *scratch = self.scratch();
        }
        let mut candidates = std::mem::take(&mut scratch.candidates);
        candidates.clear();
        if let Some(gate) = &self.gate {
            gate.each_in(payload, |literal| {
                candidates.extend_from_slice(&self.gated[literal]);
            });
        }
        candidates.extend_from_slice(&self.always);
        // In rule order, each once (a literal may occur twice).
        candidates.sort_unstable();
        candidates.dedup();
        for &rule in &candidates {
            if let Some(verdict) = self.search(rule, payload, scratch) {
                hits.push(RuleHit { rule, verdict });
            }
        }
        scratch.candidates = candidates;
    }

    /// `re.search` of rule `rule`: `None` when it does not match.
    fn search(&self, rule: usize, payload: &[u8], scratch: &mut Scratch) -> Option<RuleVerdict> {
        let (engine, which) = self.rules[rule].engine.as_ref()?.for_payload(payload);
        let locations = &mut scratch.locations.get_mut(rule)?.as_mut()?[which];
        match engine.captures_read(locations, payload) {
            Ok(None) => None,
            Err(_) => Some(RuleVerdict::GaveUp),
            Ok(Some(_)) => {
                let group = locations
                    .get(1)
                    .and_then(|(start, end)| std::str::from_utf8(&payload[start..end]).ok());
                Some(RuleVerdict::Matched(
                    group.map_or(AddressClass::NotAnAddress, classify),
                ))
            }
        }
    }
}

/// `pattern`, a Python `re` pattern, in PCRE2's spelling: `\Z` (Python's
/// end of text) becomes `\z`, `\uXXXX` and `\UXXXXXXXX` become `\x{…}`.
/// Everything else means the same in both.
///
/// `(\d+)\Z` → `(\d+)\z`; `caf\u00e9` → `caf\x{00e9}`
pub fn python_to_pcre2(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let code_point = |digits: usize| {
            escape
                .get(2..2 + digits)
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        let taken = match (escape.as_bytes().get(1), code_point(4), code_point(8)) {
            (Some(b'Z'), ..) => {
                out.push_str(r"\z");
                2
            }
            (Some(b'u'), Some(hex), _) | (Some(b'U'), _, Some(hex)) => {
                out.push_str(r"\x{");
                out.push_str(hex);
                out.push('}');
                2 + hex.len()
            }
            // Any other escape, whole (its character may be multi-byte).
            _ => {
                let len = escape[1..].chars().next().map_or(1, |c| 1 + c.len_utf8());
                out.push_str(&escape[..len]);
                len
            }
        };
        rest = &escape[taken..];
    }
    out.push_str(rest);
    out
}

/// The literal of `pattern` (a Python pattern) that gates it: the longest
/// one every match contains, of at least [`MIN_GATE_LITERAL`] bytes, found
/// on the pattern without its look-arounds (which only narrow a match).
/// `None` when there is none, or when `regex-syntax` reads the pattern
/// otherwise than Python might (verbose mode), or cannot read it.
fn gate_literal(pattern: &str) -> Option<Vec<u8>> {
    if has_verbose_flag(pattern) {
        return None;
    }
    let hir = regex_syntax::parse(&without_lookaround(pattern)?).ok()?;
    required_literal(&hir).filter(|literal| literal.len() >= MIN_GATE_LITERAL)
}

/// Whether an inline flag group turns on verbose mode (`(?x)`, `(?ix:…)`),
/// where Python and `regex-syntax` treat white space in classes apart.
fn has_verbose_flag(pattern: &str) -> bool {
    pattern.match_indices("(?").any(|(at, _)| {
        pattern[at + 2..]
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic() || *b == b'-')
            .any(|b| b == b'x')
    })
}

/// Literals shorter than this do not gate: too common to skip many lines.
const MIN_GATE_LITERAL: usize = 4;

/// Finds which of the rules' literals a payload holds.
enum Gate {
    /// SIMD (Teddy): the literals here start with common bytes (` `),
    /// which defeat an automaton's start-byte prefilter. Searched again
    /// one byte past each match, it finds every occurrence of every
    /// literal, as long as no literal is a prefix of another (two such
    /// can match at one place, and Teddy reports only the first).
    Packed(aho_corasick::packed::Searcher),
    /// Overlapping matches, for literals one of which is a prefix of
    /// another, or where Teddy is not available (no SSSE3/AVX2, too many
    /// literals).
    Automaton(aho_corasick::AhoCorasick),
}

impl Gate {
    /// A gate on `literals` (distinct); `None` when there are none.
    fn new(literals: &[Vec<u8>]) -> Option<Gate> {
        if literals.is_empty() {
            return None;
        }
        let prefixed = literals.iter().enumerate().any(|(i, a)| {
            literals
                .iter()
                .enumerate()
                .any(|(j, b)| i != j && b.starts_with(a))
        });
        let packed = (!prefixed)
            .then(|| {
                aho_corasick::packed::Config::new()
                    .builder()
                    .extend(literals)
                    .build()
            })
            .flatten();
        match packed {
            Some(searcher) => Some(Gate::Packed(searcher)),
            None => aho_corasick::AhoCorasick::new(literals)
                .ok()
                .map(Gate::Automaton),
        }
    }

    /// Calls `found` with the index of each literal `payload` holds, once
    /// per occurrence.
    fn each_in(&self, payload: &[u8], mut found: impl FnMut(usize)) {
        match self {
            Gate::Packed(searcher) => {
                let mut at = 0;
                while let Some(hit) =
                    searcher.find_in(payload, aho_corasick::Span::from(at..payload.len()))
                {
                    found(hit.pattern().as_usize());
                    at = hit.start() + 1;
                }
            }
            Gate::Automaton(automaton) => {
                for hit in automaton.find_overlapping_iter(payload) {
                    found(hit.pattern().as_usize());
                }
            }
        }
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

    fn hits(rules: &RuleSet, payload: &str) -> Vec<(String, RuleVerdict)> {
        let mut out = Vec::new();
        rules.evaluate(payload.as_bytes(), &mut out, &mut Scratch::default());
        out.into_iter()
            .map(|h| (rules.rules[h.rule].id.clone(), h.verdict))
            .collect()
    }

    fn public(address: &str) -> RuleVerdict {
        RuleVerdict::Matched(AddressClass::Public(address.parse().unwrap()))
    }

    #[test]
    fn the_nine_defaults_compile_and_each_is_gated_by_a_literal() {
        let rules = RuleSet::defaults();
        assert_eq!(rules.loaded(), 9);
        assert!(rules.always.is_empty());
        assert_eq!(rules.gated.len(), 9);
        assert!(rules.gate.is_some());
    }

    #[test]
    fn every_default_rule_requires_a_literal_so_most_lines_skip_every_search() {
        let literal =
            |pattern: &str| String::from_utf8(gate_literal(pattern).unwrap_or_default()).unwrap();
        assert_eq!(literal(DEFAULT_RULES[2].1), " authentication failed: ");
        assert_eq!(
            literal(DEFAULT_RULES[0].1),
            "mailcow UI: Invalid password for "
        );
        assert_eq!(literal(r"a(bcd)+e|xyz"), "");
        assert_eq!(literal(r"(?i)warning: x"), "");
        assert_eq!(literal(r"ab(?:cdef)?gh\d"), "");
        assert_eq!(literal(r"abcd(?:cdef)?gh\d"), "abcd");
        assert_eq!(literal(r"(?x) login \  failed"), "");
        let rules = RuleSet::defaults();
        let attack =
            "warning: unknown[185.12.64.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6";
        assert_eq!(
            hits(&rules, attack),
            [("3".to_owned(), public("185.12.64.9"))]
        );
        assert_eq!(hits(&rules, "connect from unknown[185.12.64.9]"), []);
    }

    #[test]
    fn a_rule_without_a_literal_is_searched_on_every_line_and_the_others_stay_gated() {
        let rules = RuleSet::from_json(
            r#"{"1": "(?i)LOGIN FAILED from ([0-9.]+)", "2": "Rspamd UI: Invalid password by ([0-9a-f\\.:]+)"}"#,
        )
        .unwrap();
        assert_eq!(rules.always, [0]);
        assert_eq!(rules.gated.len(), 1);
        assert_eq!(
            hits(&rules, "login failed from 185.12.64.9"),
            [("1".to_owned(), public("185.12.64.9"))]
        );
        assert_eq!(
            hits(
                &rules,
                "Rspamd UI: Invalid password by 185.12.64.9 login failed from 185.12.64.8"
            ),
            [
                ("1".to_owned(), public("185.12.64.8")),
                ("2".to_owned(), public("185.12.64.9"))
            ]
        );
    }

    #[test]
    fn rules_sharing_a_literal_or_a_literal_prefix_all_fire_once_each() {
        let rules = RuleSet::from_json(
            r#"{"1": "login failed from ([0-9.]+)", "2": "login fail(?:ed|ure) from ([0-9.]+) port",
                "3": "login failed from [0-9.]+ port (\\d+)", "4": "x login failed from ([0-9.]+)"}"#,
        )
        .unwrap();
        // "login failed from " twice, and "login fail", its prefix.
        assert_eq!(rules.gated.len(), 3);
        assert!(matches!(rules.gate, Some(Gate::Automaton(_))));
        let line = "x login failed from 8.8.8.8 port 25, login failed from 8.8.4.4";
        let ids: Vec<String> = hits(&rules, line).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["1", "2", "3", "4"]);
        // Distinct literals, none a prefix of another: Teddy where the CPU
        // has it, every occurrence found, including overlapping ones.
        let rules = RuleSet::from_json(
            r#"{"1": "abcd from ([0-9.]+)", "2": "cdef by ([0-9.]+)", "3": "zzzz ([0-9.]+)"}"#,
        )
        .unwrap();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("ssse3") {
            assert!(matches!(rules.gate, Some(Gate::Packed(_))));
        }
        let ids: Vec<String> = hits(&rules, "abcdef by 8.8.8.8 abcd from 8.8.4.4")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["1", "2"]);
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
        assert_eq!(rules.always, [0]);
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
            [("3".to_owned(), public("185.12.64.1"))]
        );
        let lost = "warning: unknown[185.12.64.1]: SASL LOGIN authentication failed: Connection lost to authentication server";
        assert!(hits(&rules, lost).is_empty());
    }

    #[test]
    fn long_payloads_match_as_in_python_past_pcre2s_default_jit_stack() {
        let long = format!(
            "warning: unknown[185.12.64.1]: SASL LOGIN authentication failed: {}",
            "[x] ".repeat(16 * 1024)
        );
        assert_eq!(
            hits(&RuleSet::defaults(), &long),
            [("3".to_owned(), public("185.12.64.1"))]
        );
        // A repeated group keeps a backtracking frame per repetition: 64 KiB
        // of them is more than PCRE2's default 32 KiB JIT stack holds.
        let rules = RuleSet::from_json(r#"{"1": "login from (?:\\w+ )+by ([0-9.]+)"}"#).unwrap();
        let long = format!("login from {}by 185.12.64.1", "ab ".repeat(8 * 1024));
        assert_eq!(
            hits(&rules, &long),
            [("1".to_owned(), public("185.12.64.1"))]
        );
    }

    /// The dearest line found against the default rules (BENCHMARKS.md,
    /// "The ban engine's budget"): every `warning: ` a start, every `[1]` a
    /// capture to try, every "authentication failed" a place for the
    /// lookahead to fail at.
    fn crafted_rule_3_line() -> String {
        let mut line = "warning: ".repeat(30);
        line.push_str(&"[1]: SASL ".repeat(30));
        line.push_str(&" authentication failed: ".repeat(30));
        line.push_str("Connection lost to authentication server");
        line.truncate(2048);
        line
    }

    #[test]
    fn a_crafted_line_over_the_search_budget_is_given_up_on_and_real_lines_up_to_the_channel_cut_match()
     {
        // The JIT's budget, and the interpreter's.
        for jit in [true, false] {
            crafted_and_real_lines_against(&RuleSet::compile_with(default_specs(), jit));
        }
    }

    fn crafted_and_real_lines_against(rules: &RuleSet) {
        assert_eq!(
            hits(rules, &crafted_rule_3_line()),
            [("3".to_owned(), RuleVerdict::GaveUp)]
        );
        let ip = public("185.12.64.1");
        let cut = |line: String| line[..line.len().min(2048)].to_owned();
        for (rule, line) in [
            (
                "1",
                format!(
                    "mailcow UI: Invalid password for {} by 185.12.64.1",
                    "u".repeat(1990)
                ),
            ),
            (
                "3",
                format!(
                    "postfix/smtpd[7]: warning: unknown[185.12.64.1]: SASL LOGIN authentication failed: {}",
                    "x".repeat(1900)
                ),
            ),
            (
                "3",
                format!(
                    "warning: {}unknown[185.12.64.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
                    "[a] ".repeat(480)
                ),
            ),
            (
                "4",
                format!(
                    "warning: non-SMTP command from {}[185.12.64.1]: {}",
                    "unknown".repeat(100),
                    "x".repeat(1200)
                ),
            ),
            (
                "5",
                format!(
                    "NOQUEUE: reject: RCPT from [185.12.64.1]: {} Protocol error {}",
                    "x".repeat(1000),
                    "y".repeat(900)
                ),
            ),
            (
                "6",
                format!(
                    "auth({},185.12.64.1,<{}>): Password mismatch (SHA1 of given password: abcdef0123)",
                    "x".repeat(1000),
                    "s".repeat(900)
                ),
            ),
            (
                "8",
                format!(
                    "SOGo{} Login from '185.12.64.1' for user {} might not have worked",
                    "x".repeat(1000),
                    "u".repeat(900)
                ),
            ),
            (
                "9",
                format!(
                    "{}185.12.64.1 \"GET /SOGo/{} HTTP/1.1\" 403 123",
                    "x ".repeat(400),
                    "a".repeat(1000)
                ),
            ),
        ] {
            let line = cut(line);
            assert_eq!(hits(rules, &line), [(rule.to_owned(), ip)], "rule {rule}");
        }
    }

    #[test]
    fn a_rule_that_backtracks_without_end_is_given_up_on_and_said_so() {
        let rules = RuleSet::from_json(r#"{"1": "^(a+)+$ from x"}"#).unwrap();
        let payload = format!("{}b from x", "a".repeat(64));
        assert_eq!(
            hits(&rules, &payload),
            [("1".to_owned(), RuleVerdict::GaveUp)]
        );
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
            [(
                "1".to_owned(),
                RuleVerdict::Matched(AddressClass::NotAnAddress)
            )]
        );
    }

    #[test]
    fn pythons_own_spellings_are_rewritten_for_pcre2() {
        assert_eq!(python_to_pcre2(r"(\d+)\Z"), r"(\d+)\z");
        assert_eq!(
            python_to_pcre2(r"caf\u00e9 \U0001F600 \u12"),
            r"caf\x{00e9} \x{0001F600} \u12"
        );
        assert_eq!(python_to_pcre2(r"\\Z \é \"), r"\\Z \é \");
        let rules = RuleSet::from_json(r#"{"1": "caf\\u00e9 from ([0-9.]+)\\Z"}"#).unwrap();
        assert_eq!(hits(&rules, "café from 8.8.8.8").len(), 1);
        assert!(hits(&rules, "café from 8.8.8.8\n").is_empty());
    }

    #[test]
    fn a_scratch_made_for_other_rules_is_remade() {
        let one = RuleSet::from_json(r#"{"1": "from ([0-9.]+) x"}"#).unwrap();
        let two =
            RuleSet::from_json(r#"{"1": "a(b)(c)(d) by ([0-9.]+)", "2": "from ([0-9.]+) x"}"#)
                .unwrap();
        let mut scratch = one.scratch();
        let mut out = Vec::new();
        two.evaluate(b"from 8.8.8.8 x", &mut out, &mut scratch);
        assert_eq!(
            out,
            [RuleHit {
                rule: 1,
                verdict: public("8.8.8.8")
            }]
        );
    }
}
