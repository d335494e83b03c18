//! Ban insight: netfilter-mailcow's own rules, evaluated on every payload
//! cowlogd publishes, so that an attack shows in metrics, in `GET /f2b` and
//! in `cowlogd bans` while it happens.
//!
//! - [`rules`]: `F2B_REGEX` compiled (PCRE2, a backtracking engine like
//!   Python's, behind a literal gate), evaluated like Python's `re.search`.
//! - [`address`]: group 1 judged like Python's `ipaddress` (private and
//!   loopback ignored, text that is no address flagged: it would make
//!   netfilter exit).
//! - [`F2b`]: the loaded rules (swapped when `F2B_REGEX` changes), the
//!   recent offenders (netfilter's own counting: per ban network, reset
//!   after `retry_window` of quiet, allowlisted networks not counted), and
//!   the Redis poller (rules, options, active and permanent bans, the
//!   allowlist with its host names resolved).
//!
//! Listener tasks take a snapshot of the rules once per read cycle (an
//! atomic generation check, a lock only after a change) and record hits
//! under one short lock; a line that holds none of the rules' literals
//! costs one SIMD literal search.

pub mod address;
pub mod rules;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{Counter, counter, gauge};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use ipnet::IpNet;

use self::address::{AddressClass, ban_network, parse_network};
use self::rules::{MAX_RULE_LABELS, RuleHit, RuleSet, RuleVerdict};

/// The keys netfilter keeps its state in.
pub const REGEX_KEY: &str = "F2B_REGEX";
/// netfilter's options (JSON).
pub const OPTIONS_KEY: &str = "F2B_OPTIONS";
/// Network → unban time (epoch seconds).
pub const ACTIVE_BANS_KEY: &str = "F2B_ACTIVE_BANS";
/// Networks and host names netfilter never bans (hash; the fields count).
pub const ALLOWLIST_KEY: &str = "F2B_WHITELIST";
/// Network → time banned for good (from the UI's denylist).
pub const PERM_BANS_KEY: &str = "F2B_PERM_BANS";
/// Active and permanent bans read in full only up to this many (the gauges
/// count all).
const ACTIVE_BANS_READ_MAX: usize = 10_000;
/// Allowlist entries read (each attempt is checked against all of them);
/// past this many the allowlist in force is kept and a warning logged.
const ALLOWLIST_READ_MAX: usize = 1_000;
/// Host names on the allowlist resolved (netfilter resolves them all).
const ALLOWLIST_HOSTS_MAX: usize = 64;
/// netfilter re-resolves its allowlist's host names once a minute.
const ALLOWLIST_RESOLVE_EVERY: Duration = Duration::from_secs(60);
/// netfilter's time limit for one host name's lookup.
const ALLOWLIST_RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Offenders shown by `GET /f2b`.
const SHOWN_OFFENDERS: usize = 100;

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
                counter!("cowlogd_f2b_matches_total", "rule" => label)
            })
            .collect();
        Loaded { rules, matches }
    }
}

#[derive(Debug, Clone)]
struct Offender {
    /// netfilter's count: attempts in the current window.
    attempts: u64,
    /// Every match, allowlisted or not.
    total: u64,
    first_seen: f64,
    /// The last counted attempt (the window runs from it).
    last_attempt: f64,
    last_seen: f64,
    /// Bit `i`: rule `i` matched (rules past 64 share bit 63).
    rules: u64,
    /// On netfilter's allowlist at the last match: not counted.
    allowlisted: bool,
}

struct State {
    offenders: lru::LruCache<IpNet, Offender>,
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

/// Shared ban-insight state; see the module docs.
pub struct F2b {
    loaded: RwLock<Arc<Loaded>>,
    generation: AtomicU64,
    state: Mutex<State>,
    ignored_private: Counter,
    ignored_not_address: Counter,
    ignored_gave_up: Counter,
    ignored_allowlisted: Counter,
}

/// One offender as `GET /f2b` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct OffenderView {
    /// The network netfilter bans (`netban_ipv4`/`netban_ipv6`).
    pub network: String,
    /// Attempts in the current window (netfilter's count).
    pub attempts: u64,
    /// Attempts seen since cowlogd first saw it.
    pub total: u64,
    /// The ban threshold.
    pub max_attempts: u64,
    /// Ids of the rules that matched.
    pub rules: Vec<String>,
    /// Epoch seconds.
    pub first_seen: f64,
    /// Epoch seconds.
    pub last_seen: f64,
    /// When netfilter lifts its ban (epoch seconds), if banned.
    pub banned_until: Option<i64>,
    /// On netfilter's allowlist (`F2B_WHITELIST`): never banned, its
    /// attempts not counted.
    #[serde(default)]
    pub allowlisted: bool,
    /// Inside a network banned for good (`F2B_PERM_BANS`).
    #[serde(default)]
    pub denylisted: bool,
}

/// What `GET /f2b` returns.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Rules loaded and failed.
    pub rules: Vec<RuleView>,
    /// Options in force.
    pub options: Options,
    /// `HLEN F2B_ACTIVE_BANS` at the last poll.
    pub active_bans: u64,
    /// `HLEN F2B_PERM_BANS` at the last poll.
    #[serde(default)]
    pub perm_bans: u64,
    /// Allowlist networks in force (host names resolved).
    #[serde(default)]
    pub allowlist: usize,
    /// Offenders tracked (at most `f2b.max_offenders`).
    pub tracked: usize,
    /// The top offenders by attempts.
    pub offenders: Vec<OffenderView>,
}

/// A rule as `GET /f2b` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RuleView {
    /// Its id.
    pub id: String,
    /// The pattern.
    pub pattern: String,
    /// Why it does not compile.
    pub error: Option<String>,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl F2b {
    /// State with netfilter's default rules, tracking up to `max_offenders`.
    pub fn new(max_offenders: usize) -> F2b {
        let f2b = F2b {
            loaded: RwLock::new(Arc::new(Loaded::new(RuleSet::defaults()))),
            generation: AtomicU64::new(0),
            state: Mutex::new(State {
                offenders: lru::LruCache::new(
                    NonZeroUsize::new(max_offenders.max(1)).unwrap_or(NonZeroUsize::MIN),
                ),
                options: Options::default(),
                active_bans: HashMap::new(),
                active_ban_count: 0,
                allowlist: Vec::new(),
                perm_bans: Vec::new(),
                perm_ban_count: 0,
            }),
            ignored_private: counter!("cowlogd_f2b_ignored_total", "reason" => "private"),
            ignored_not_address: counter!("cowlogd_f2b_ignored_total", "reason" => "not_an_address"),
            ignored_gave_up: counter!("cowlogd_f2b_ignored_total", "reason" => "search_limit"),
            ignored_allowlisted: counter!("cowlogd_f2b_ignored_total", "reason" => "allowlisted"),
        };
        f2b.report_rules(&f2b.current());
        // Registered at 0, so that the first failure is an increase an
        // alert can see.
        for reason in ["redis", "regex_unreadable", "too_long"] {
            counter!("cowlogd_f2b_poll_errors_total", "reason" => reason).absolute(0);
        }
        f2b
    }

    /// Generation of the loaded rules: changes when they are swapped.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The loaded rules.
    pub fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn swap(&self, rules: RuleSet) {
        let loaded = Arc::new(Loaded::new(rules));
        // A rule that is gone no longer fails: clear its error gauge, or an
        // alert on it would fire forever.
        for old in self.current().rules.rules.iter().take(MAX_RULE_LABELS) {
            if !loaded.rules.rules.iter().any(|r| r.id == old.id) {
                gauge!("cowlogd_f2b_rule_errors", "rule" => old.id.clone()).set(0.0);
            }
        }
        self.report_rules(&loaded);
        *self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn report_rules(&self, loaded: &Loaded) {
        gauge!("cowlogd_f2b_rules").set(loaded.rules.loaded() as f64);
        for (index, rule) in loaded.rules.rules.iter().enumerate().take(MAX_RULE_LABELS) {
            gauge!("cowlogd_f2b_rule_errors", "rule" => rule.id.clone())
                .set(if rule.error.is_some() { 1.0 } else { 0.0 });
            if let Some(error) = &rule.error {
                tracing::error!(rule = %rule.id, index, %error, "F2B_REGEX rule does not compile; the other rules keep working");
            }
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
                    self.ignored_gave_up.increment(1);
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
                AddressClass::Private => self.ignored_private.increment(1),
                AddressClass::NotAnAddress => self.ignored_not_address.increment(1),
                AddressClass::Public(ip) => {
                    acted = true;
                    let mut state = self
                        .state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    // netfilter's ban(): an allowlisted address is not counted.
                    let allowlisted = state.allowlist.iter().any(|net| net.contains(&ip));
                    if allowlisted {
                        self.ignored_allowlisted.increment(1);
                    }
                    let options = state.options;
                    let network = ban_network(ip, options.netban_ipv4, options.netban_ipv6);
                    let bit = 1u64 << hit.rule.min(63);
                    match state.offenders.get_mut(&network) {
                        Some(offender) => {
                            if !allowlisted {
                                // netfilter: a gap longer than the window restarts the count.
                                if now - offender.last_attempt > options.retry_window as f64 {
                                    offender.attempts = 0;
                                }
                                offender.attempts += 1;
                                offender.last_attempt = now;
                            }
                            offender.total += 1;
                            offender.last_seen = now;
                            offender.rules |= bit;
                            offender.allowlisted = allowlisted;
                        }
                        None => {
                            state.offenders.put(
                                network,
                                Offender {
                                    attempts: u64::from(!allowlisted),
                                    total: 1,
                                    first_seen: now,
                                    last_attempt: now,
                                    last_seen: now,
                                    rules: bit,
                                    allowlisted,
                                },
                            );
                        }
                    }
                }
            }
        }
        acted
    }

    /// The view `GET /f2b` serves.
    pub fn snapshot(&self) -> Snapshot {
        let loaded = self.current();
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut offenders: Vec<(&IpNet, &Offender)> = state.offenders.iter().collect();
        offenders.sort_by(|a, b| {
            b.1.attempts
                .cmp(&a.1.attempts)
                .then(b.1.last_attempt.total_cmp(&a.1.last_attempt))
        });
        let rule_ids = |bits: u64| -> Vec<String> {
            loaded
                .rules
                .rules
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1u64 << (*i).min(63)) != 0)
                .map(|(_, r)| r.id.clone())
                .collect()
        };
        let views = offenders
            .into_iter()
            .take(SHOWN_OFFENDERS)
            .map(|(net, o)| {
                let network = net.to_string();
                OffenderView {
                    banned_until: state.active_bans.get(&network).copied(),
                    denylisted: state.perm_bans.iter().any(|banned| banned.contains(net)),
                    allowlisted: o.allowlisted,
                    network,
                    attempts: o.attempts,
                    total: o.total,
                    max_attempts: state.options.max_attempts,
                    rules: rule_ids(o.rules),
                    first_seen: o.first_seen,
                    last_seen: o.last_seen,
                }
            })
            .collect();
        Snapshot {
            rules: loaded
                .rules
                .rules
                .iter()
                .map(|r| RuleView {
                    id: r.id.clone(),
                    pattern: r.pattern.clone(),
                    error: r.error.clone(),
                })
                .collect(),
            options: state.options,
            active_bans: state.active_ban_count,
            perm_bans: state.perm_ban_count,
            allowlist: state.allowlist.len(),
            tracked: state.offenders.len(),
            offenders: views,
        }
    }

    /// Polls netfilter's keys every `interval` until `shutdown`: rules
    /// swapped when `F2B_REGEX` changes (defaults when it is absent),
    /// options, and the active bans. Never writes.
    pub async fn poll(
        self: Arc<Self>,
        client: redis::Client,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let mut connection = None;
        let mut memory = PollMemory::default();
        loop {
            if connection.is_none() {
                connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|error| {
                        counter!("cowlogd_f2b_poll_errors_total", "reason" => "redis").increment(1);
                        crate::warn_limited!(%error, "f2b: cannot reach Redis");
                    })
                    .ok();
            }
            if let Some(conn) = connection.as_mut()
                && let Err(error) = self.poll_once(conn, &mut memory).await
            {
                counter!("cowlogd_f2b_poll_errors_total", "reason" => "redis").increment(1);
                crate::warn_limited!(%error, "f2b: polling netfilter's keys failed");
                connection = None;
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn poll_once(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        memory: &mut PollMemory,
    ) -> redis::RedisResult<()> {
        let regex: Option<String> = conn.get(REGEX_KEY).await?;
        if regex != memory.last_regex {
            match &regex {
                None => self.swap(RuleSet::defaults()),
                Some(text) => match RuleSet::from_json(text) {
                    Ok(rules) => {
                        tracing::info!(rules = rules.loaded(), "f2b: F2B_REGEX loaded");
                        self.swap(rules);
                    }
                    Err(error) => {
                        counter!("cowlogd_f2b_poll_errors_total", "reason" => "regex_unreadable")
                            .increment(1);
                        tracing::error!(%error, "f2b: F2B_REGEX unreadable; keeping the rules in force");
                    }
                },
            }
            memory.last_regex = regex;
        }
        let options: Option<String> = conn.get(OPTIONS_KEY).await?;
        let options = options.map_or_else(Options::default, |t| Options::from_json(&t));
        let (count, bans) = read_hash(conn, ACTIVE_BANS_KEY, ACTIVE_BANS_READ_MAX).await?;
        let bans: HashMap<String, i64> = bans
            .unwrap_or_default()
            .into_iter()
            .map(|(network, until)| {
                let until = until.trim().parse::<f64>().map_or(0, |v| v as i64);
                (network, until)
            })
            .collect();
        gauge!("cowlogd_f2b_active_bans").set(count as f64);
        let (perm_ban_count, perm_bans) =
            read_hash(conn, PERM_BANS_KEY, ACTIVE_BANS_READ_MAX).await?;
        let perm_bans: Vec<IpNet> = perm_bans
            .unwrap_or_default()
            .iter()
            .filter_map(|(network, _)| parse_network(network))
            .collect();
        gauge!("cowlogd_f2b_perm_bans").set(perm_ban_count as f64);
        let allowlist = read_allowlist(conn, memory).await?;
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.options = options;
        state.active_bans = bans;
        state.active_ban_count = count;
        state.perm_bans = perm_bans;
        state.perm_ban_count = perm_ban_count;
        if let Some(allowlist) = allowlist {
            state.allowlist = allowlist;
        }
        Ok(())
    }
}

/// `HLEN` of the hash `key`, and its fields and values when there are at
/// most `max` (`None` past that: too long to read each poll).
async fn read_hash(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    max: usize,
) -> redis::RedisResult<(u64, Option<Vec<(String, String)>>)> {
    let count: u64 = conn.hlen(key).await?;
    if count as usize > max {
        counter!("cowlogd_f2b_poll_errors_total", "reason" => "too_long").increment(1);
        crate::warn_limited!(key, count, max, "f2b: hash too long to read; not read");
        return Ok((count, None));
    }
    if count == 0 {
        return Ok((0, Some(Vec::new())));
    }
    Ok((count, Some(conn.hgetall(key).await?)))
}

/// `F2B_WHITELIST` as netfilter reads it: its fields that are networks,
/// and the addresses its host names resolve to (again each minute, or
/// when the names change). `None`: keep the allowlist in force (too long
/// to read).
async fn read_allowlist(
    conn: &mut redis::aio::MultiplexedConnection,
    memory: &mut PollMemory,
) -> redis::RedisResult<Option<Vec<IpNet>>> {
    let (_, fields) = read_hash(conn, ALLOWLIST_KEY, ALLOWLIST_READ_MAX).await?;
    let Some(fields) = fields else {
        return Ok(None);
    };
    let mut networks = Vec::with_capacity(fields.len());
    let mut hostnames = Vec::new();
    for (field, _) in fields {
        match parse_network(&field) {
            Some(network) => networks.push(network),
            None => hostnames.push(field),
        }
    }
    hostnames.sort_unstable();
    if hostnames.len() > ALLOWLIST_HOSTS_MAX {
        counter!("cowlogd_f2b_poll_errors_total", "reason" => "too_long").increment(1);
        crate::warn_limited!(
            names = hostnames.len(),
            max = ALLOWLIST_HOSTS_MAX,
            "f2b: F2B_WHITELIST has too many host names; the first resolved"
        );
        hostnames.truncate(ALLOWLIST_HOSTS_MAX);
    }
    let stale = memory
        .resolved_at
        .is_none_or(|at| at.elapsed() >= ALLOWLIST_RESOLVE_EVERY);
    if hostnames != memory.hostnames || stale {
        memory.resolved = resolve_all(&hostnames).await;
        memory.hostnames = hostnames;
        memory.resolved_at = Some(std::time::Instant::now());
    }
    networks.extend_from_slice(&memory.resolved);
    Ok(Some(networks))
}

/// What the poller keeps between polls.
#[derive(Default)]
struct PollMemory {
    last_regex: Option<String>,
    /// The allowlist's host names, and what they resolved to, when.
    hostnames: Vec<String>,
    resolved: Vec<IpNet>,
    resolved_at: Option<std::time::Instant>,
}

/// The addresses `hostnames` resolve to (A and AAAA, through the system's
/// resolver), all looked up at once, each given
/// [`ALLOWLIST_RESOLVE_TIMEOUT`]; a name that fails adds nothing.
async fn resolve_all(hostnames: &[String]) -> Vec<IpNet> {
    let mut lookups = tokio::task::JoinSet::new();
    for name in hostnames {
        let name = name.clone();
        lookups.spawn(async move {
            let lookup = tokio::net::lookup_host((name.as_str(), 0));
            match tokio::time::timeout(ALLOWLIST_RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(addresses)) => addresses.map(|a| IpNet::from(a.ip())).collect(),
                Ok(Err(error)) => {
                    crate::warn_limited!(%name, %error, "f2b: allowlisted host name does not resolve");
                    Vec::new()
                }
                Err(_) => {
                    crate::warn_limited!(%name, "f2b: allowlisted host name timed out on resolve");
                    Vec::new()
                }
            }
        });
    }
    let mut networks: Vec<IpNet> = lookups.join_all().await.into_iter().flatten().collect();
    networks.sort_unstable();
    networks.dedup();
    networks
}
