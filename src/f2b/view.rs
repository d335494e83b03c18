//! What `GET /f2b` serves and `cowlogd bans` reads: the rules, the
//! options, netfilter's ban counts and the top offenders, as JSON.

use serde::{Deserialize, Serialize};

use super::Options;
use super::State;
use super::offenders::Offenders;
use super::rules::RuleSet;

/// Offenders shown by `GET /f2b`.
const SHOWN_OFFENDERS: usize = 100;

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

/// The view of `rules` and `state`.
pub(super) fn snapshot(rules: &RuleSet, state: &State) -> Snapshot {
    let rule_ids = |bits: u64| -> Vec<String> {
        rules
            .rules
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1u64 << (*i).min(63)) != 0)
            .map(|(_, r)| r.id.clone())
            .collect()
    };
    let offenders: &Offenders = &state.offenders;
    let views = offenders
        .top(SHOWN_OFFENDERS)
        .into_iter()
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
        rules: rules
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
        tracked: offenders.len(),
        offenders: views,
    }
}
