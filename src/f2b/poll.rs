//! The poller: netfilter's keys read from Redis every `poll_interval_s`
//! (rules, options, active and permanent bans, the allowlist with its host
//! names resolved) into one `Polled`, applied under one lock. Never
//! writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::address::parse_network;
use super::rules::RuleSet;
use super::{F2b, Options, poll_error};
use crate::metrics;

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

/// One poll's reading of netfilter's state (the rules apart).
pub(super) struct Polled {
    pub(super) options: Options,
    pub(super) active_bans: HashMap<String, i64>,
    pub(super) active_ban_count: u64,
    pub(super) perm_bans: Vec<IpNet>,
    pub(super) perm_ban_count: u64,
    /// `None`: keep the allowlist in force (too long to read).
    pub(super) allowlist: Option<Vec<IpNet>>,
}

/// Polls every `interval` until `shutdown`: rules swapped when `F2B_REGEX`
/// changes (defaults when it is absent), the rest applied at once.
pub(super) async fn run(
    f2b: Arc<F2b>,
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
                    poll_error("redis");
                    crate::warn_limited!(%error, "f2b: cannot reach Redis");
                })
                .ok();
        }
        if let Some(conn) = connection.as_mut() {
            match poll_once(&f2b, conn, &mut memory).await {
                Ok(polled) => f2b.apply(polled),
                Err(error) => {
                    poll_error("redis");
                    crate::warn_limited!(%error, "f2b: polling netfilter's keys failed");
                    connection = None;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn poll_once(
    f2b: &F2b,
    conn: &mut redis::aio::MultiplexedConnection,
    memory: &mut PollMemory,
) -> redis::RedisResult<Polled> {
    let regex: Option<String> = conn.get(REGEX_KEY).await?;
    if regex != memory.last_regex {
        match &regex {
            None => f2b.swap(RuleSet::defaults()),
            Some(text) => match RuleSet::from_json(text) {
                Ok(rules) => {
                    tracing::info!(rules = rules.loaded(), "f2b: F2B_REGEX loaded");
                    f2b.swap(rules);
                }
                Err(error) => {
                    poll_error("regex_unreadable");
                    tracing::error!(%error, "f2b: F2B_REGEX unreadable; keeping the rules in force");
                }
            },
        }
        memory.last_regex = regex;
    }
    let options: Option<String> = conn.get(OPTIONS_KEY).await?;
    let options = options.map_or_else(Options::default, |t| Options::from_json(&t));
    let (active_ban_count, bans) = read_hash(conn, ACTIVE_BANS_KEY, ACTIVE_BANS_READ_MAX).await?;
    let active_bans: HashMap<String, i64> = bans
        .unwrap_or_default()
        .into_iter()
        .map(|(network, until)| {
            let until = until.trim().parse::<f64>().map_or(0, |v| v as i64);
            (network, until)
        })
        .collect();
    metrics::F2B_ACTIVE_BANS
        .gauge()
        .set(active_ban_count as f64);
    let (perm_ban_count, perm_bans) = read_hash(conn, PERM_BANS_KEY, ACTIVE_BANS_READ_MAX).await?;
    let perm_bans: Vec<IpNet> = perm_bans
        .unwrap_or_default()
        .iter()
        .filter_map(|(network, _)| parse_network(network))
        .collect();
    metrics::F2B_PERM_BANS.gauge().set(perm_ban_count as f64);
    let allowlist = read_allowlist(conn, memory).await?;
    Ok(Polled {
        options,
        active_bans,
        active_ban_count,
        perm_bans,
        perm_ban_count,
        allowlist,
    })
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
        poll_error("too_long");
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
        poll_error("too_long");
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
