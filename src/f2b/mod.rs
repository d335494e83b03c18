//! Ban insight: netfilter-mailcow's own rules, evaluated on every payload
//! cowlogd publishes, so that an attack shows in metrics, in `GET /f2b` and
//! in `cowlogd bans` while it happens.
//!
//! - [`rules`]: `F2B_REGEX` compiled (PCRE2, a backtracking engine like
//!   Python's, behind a literal gate), evaluated like Python's `re.search`.
//! - [`address`]: group 1 judged like Python's `ipaddress` (private and
//!   loopback ignored, text that is no address flagged: it would make
//!   netfilter exit).
//! - [`offenders`]: netfilter's counting, pure (the time passed in).
//! - [`poll`]: netfilter's keys read from Redis, applied under one lock.
//! - [`view`]: the JSON `GET /f2b` serves and `cowlogd bans` reads.
//! - [`tap`]: the pipeline's one point of contact.
//!
//! [`F2b`] holds the rules behind an [`ArcSwap`] (a listener takes the
//! current set once per read cycle without a lock) and the state the poll
//! and the hits update under one short lock; a line that holds none of the
//! rules' literals costs one SIMD literal search.

pub mod address;
pub mod offenders;
pub mod poll;
pub mod rules;
pub mod tap;
pub mod view;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::metrics::Counter;
use arc_swap::ArcSwap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use self::address::AddressClass;
use self::offenders::{Counted, Offenders};
use self::rules::{MAX_RULE_LABELS, RuleHit, RuleSet, RuleVerdict};
use crate::metrics;
pub use poll::{ACTIVE_BANS_KEY, ALLOWLIST_KEY, OPTIONS_KEY, PERM_BANS_KEY, REGEX_KEY};
pub use view::{OffenderView, RuleView, Snapshot};

/// netfilter's options as far as counting needs them (its defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Attempts within the window that make a ban.
    pub max_attempts: u64,
    /// Seconds of quiet after which the count starts again.
    pub retry_window: u64,
    /// Prefix length banned for IPv4.
    pub netban_ipv4: u8,
    /// Prefix length banned for IPv6.
    pub netban_ipv6: u8,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_attempts: 10,
            retry_window: 600,
            netban_ipv4: 32,
            netban_ipv6: 128,
        }
    }
}

impl Options {
    /// Reads `F2B_OPTIONS`; fields that are absent or unreadable keep
    /// netfilter's defaults (numbers may be JSON numbers or strings).
    pub fn from_json(text: &str) -> Options {
        let mut options = Options::default();
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text)
        else {
            return options;
        };
        let number = |key: &str| -> Option<u64> {
            match map.get(key)? {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
        };
        if let Some(v) = number("max_attempts") {
            options.max_attempts = v.max(1);
        }
        if let Some(v) = number("retry_window") {
            options.retry_window = v;
        }
        if let Some(v) = number("netban_ipv4") {
            options.netban_ipv4 = v.min(32) as u8;
        }
        if let Some(v) = number("netban_ipv6") {
            options.netban_ipv6 = v.min(128) as u8;
        }
        options
    }
}

/// Rules with their metric handles.
pub struct Loaded {
    /// The rules.
    pub rules: RuleSet,
    matches: Vec<Counter>,
}

impl Loaded {
    fn new(rules: RuleSet) -> Loaded {
        let matches = rules
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let label = if index < MAX_RULE_LABELS {
                    rule.id.clone()
                } else {
                    "other".to_owned()
                };
                metrics::F2B_MATCHES.counter_with([label.into()])
            })
            .collect();
        Loaded { rules, matches }
    }
}

/// What the poll and the hits update.
pub(crate) struct State {
    offenders: Offenders,
    options: Options,
    /// `F2B_ACTIVE_BANS`: network → unban time.
    active_bans: HashMap<String, i64>,
    active_ban_count: u64,
    /// `F2B_WHITELIST`: its networks, and the addresses of its host names.
    allowlist: Vec<IpNet>,
    /// `F2B_PERM_BANS`: its networks.
    perm_bans: Vec<IpNet>,
    perm_ban_count: u64,
}

/// The ban engine's counters, registered once.
struct F2bMetrics {
    ignored_private: Counter,
    ignored_not_address: Counter,
    ignored_search_limit: Counter,
    ignored_allowlisted: Counter,
}

impl F2bMetrics {
    fn new() -> F2bMetrics {
        let ignored = |reason: &'static str| metrics::F2B_IGNORED.counter_with([reason.into()]);
        // Registered at 0, so that the first failure is an increase an
        // alert can see.
        for reason in ["redis", "regex_unreadable", "too_long"] {
            metrics::F2B_POLL_ERRORS
                .counter_with([reason.into()])
                .absolute(0);
        }
        F2bMetrics {
            ignored_private: ignored("private"),
            ignored_not_address: ignored("not_an_address"),
            ignored_search_limit: ignored("search_limit"),
            ignored_allowlisted: ignored("allowlisted"),
        }
    }
}

/// Counts a failed poll of netfilter's keys.
fn poll_error(reason: &'static str) {
    metrics::F2B_POLL_ERRORS
        .counter_with([reason.into()])
        .increment(1);
}

/// Shared ban-insight state; see the module docs.
pub struct F2b {
    loaded: ArcSwap<Loaded>,
    state: Mutex<State>,
    metrics: F2bMetrics,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl F2b {
    /// State with netfilter's default rules, tracking up to `max_offenders`.
    pub fn new(max_offenders: NonZeroUsize) -> F2b {
        let loaded = Loaded::new(RuleSet::defaults());
        report_rules(&loaded);
        F2b {
            loaded: ArcSwap::from_pointee(loaded),
            state: Mutex::new(State {
                offenders: Offenders::new(max_offenders),
                options: Options::default(),
                active_bans: HashMap::new(),
                active_ban_count: 0,
                allowlist: Vec::new(),
                perm_bans: Vec::new(),
                perm_ban_count: 0,
            }),
            metrics: F2bMetrics::new(),
        }
    }

    /// The loaded rules.
    pub fn current(&self) -> Arc<Loaded> {
        self.loaded.load_full()
    }

    /// Replaces `held` by the rules in force if they changed (no lock, no
    /// reference count touched when they did not).
    pub fn refresh(&self, held: &mut Arc<Loaded>) {
        let now = self.loaded.load();
        if !Arc::ptr_eq(&now, held) {
            *held = Arc::clone(&now);
        }
    }

    fn swap(&self, rules: RuleSet) {
        let loaded = Loaded::new(rules);
        // A rule that is gone no longer fails: clear its error gauge, or an
        // alert on it would fire forever.
        for old in self.current().rules.rules.iter().take(MAX_RULE_LABELS) {
            if !loaded.rules.rules.iter().any(|r| r.id == old.id) {
                metrics::F2B_RULE_ERRORS
                    .gauge_with([old.id.clone().into()])
                    .set(0.0);
            }
        }
        report_rules(&loaded);
        self.loaded.store(Arc::new(loaded));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(&self, polled: poll::Polled) {
        let mut state = self.lock();
        state.options = polled.options;
        state.active_bans = polled.active_bans;
        state.active_ban_count = polled.active_ban_count;
        state.perm_bans = polled.perm_bans;
        state.perm_ban_count = polled.perm_ban_count;
        if let Some(allowlist) = polled.allowlist {
            state.allowlist = allowlist;
        }
    }

    /// Counts `hits` of `loaded` and updates the offenders; `true` when some
    /// hit has a public address (what netfilter acts on).
    pub fn record(&self, loaded: &Loaded, hits: &[RuleHit]) -> bool {
        let mut acted = false;
        let now = now_s();
        for hit in hits {
            let class = match hit.verdict {
                RuleVerdict::Matched(class) => class,
                RuleVerdict::GaveUp => {
                    self.metrics.ignored_search_limit.increment(1);
                    let rule = loaded
                        .rules
                        .rules
                        .get(hit.rule)
                        .map_or("?", |r| r.id.as_str());
                    crate::warn_limited!(
                        rule,
                        "F2B_REGEX rule backtracked past PCRE2's limit on a line; not counted as an attempt"
                    );
                    continue;
                }
            };
            if let Some(counter) = loaded.matches.get(hit.rule) {
                counter.increment(1);
            }
            match class {
                AddressClass::Private => self.metrics.ignored_private.increment(1),
                AddressClass::NotAnAddress => self.metrics.ignored_not_address.increment(1),
                AddressClass::Public(ip) => {
                    acted = true;
                    let mut state = self.lock();
                    let State {
                        offenders,
                        options,
                        allowlist,
                        ..
                    } = &mut *state;
                    if offenders.record(ip, hit.rule, now, options, allowlist)
                        == Counted::Allowlisted
                    {
                        self.metrics.ignored_allowlisted.increment(1);
                    }
                }
            }
        }
        acted
    }

    /// The view `GET /f2b` serves.
    pub fn snapshot(&self) -> Snapshot {
        let loaded = self.current();
        view::snapshot(&loaded.rules, &self.lock())
    }

    /// Polls netfilter's keys every `interval` until `shutdown` (see
    /// [`poll`]).
    pub async fn poll(
        self: Arc<Self>,
        client: redis::Client,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        poll::run(self, client, interval, shutdown).await;
    }
}

fn report_rules(loaded: &Loaded) {
    metrics::F2B_RULES.gauge().set(loaded.rules.loaded() as f64);
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let interpreted = loaded.rules.interpreted();
    if interpreted > 0 && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            rules = interpreted,
            "PCRE2's JIT is not available (writable executable memory is refused, as by systemd's MemoryDenyWriteExecute=yes): the ban rules run in PCRE2's interpreter, with the same verdicts, slower"
        );
    }
    for (index, rule) in loaded.rules.rules.iter().enumerate().take(MAX_RULE_LABELS) {
        metrics::F2B_RULE_ERRORS
            .gauge_with([rule.id.clone().into()])
            .set(if rule.error.is_some() { 1.0 } else { 0.0 });
        if let Some(error) = &rule.error {
            tracing::error!(rule = %rule.id, index, %error, "F2B_REGEX rule does not compile; the other rules keep working");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_holding_old_rules_gets_the_new_ones_once_swapped() {
        let f2b = F2b::new(NonZeroUsize::new(10).unwrap());
        let mut held = f2b.current();
        f2b.refresh(&mut held);
        let before = Arc::as_ptr(&held);
        f2b.swap(RuleSet::from_json(r#"{"1": "from (\\S+)$"}"#).unwrap());
        f2b.refresh(&mut held);
        assert_ne!(Arc::as_ptr(&held), before);
        assert_eq!(held.rules.rules.len(), 1);
    }

    #[test]
    fn hits_on_public_addresses_count_and_private_ones_do_not() {
        let f2b = F2b::new(NonZeroUsize::new(10).unwrap());
        let loaded = f2b.current();
        let hit = |ip: &str| RuleHit {
            rule: 0,
            verdict: RuleVerdict::Matched(address::classify(ip)),
        };
        assert!(!f2b.record(&loaded, &[hit("192.168.1.1")]));
        assert!(f2b.record(&loaded, &[hit("8.8.8.8"), hit("8.8.8.8")]));
        let snapshot = f2b.snapshot();
        assert_eq!(snapshot.tracked, 1);
        assert_eq!(snapshot.offenders[0].network, "8.8.8.8/32");
        assert_eq!(snapshot.offenders[0].attempts, 2);
    }

    #[test]
    fn an_allowlist_from_the_poll_stops_the_count() {
        let f2b = F2b::new(NonZeroUsize::new(10).unwrap());
        f2b.apply(poll::Polled {
            options: Options::default(),
            active_bans: HashMap::from([("8.8.8.8/32".to_owned(), 99)]),
            active_ban_count: 1,
            perm_bans: Vec::new(),
            perm_ban_count: 0,
            allowlist: Some(vec!["8.8.8.0/24".parse().unwrap()]),
        });
        let loaded = f2b.current();
        let hit = RuleHit {
            rule: 0,
            verdict: RuleVerdict::Matched(address::classify("8.8.8.8")),
        };
        f2b.record(&loaded, &[hit]);
        let view = &f2b.snapshot().offenders[0];
        assert_eq!((view.attempts, view.allowlisted), (0, true));
        assert_eq!(view.banned_until, Some(99));
    }
}
