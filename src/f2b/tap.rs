//! The ban engine's one point of contact with the pipeline: each channel
//! payload the emit step has encoded passes [`Tap::inspect`], which counts
//! what the rules find and says whether the payload is published
//! (`redis.publish = "matches"` suppresses those on which no rule acted).

use std::sync::Arc;

use super::rules::{RuleHit, Scratch};
use super::{F2b, Loaded};

/// Whether a channel payload goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it.
    Publish,
    /// Keep it off the channel (the list entry is still stored).
    Suppress,
}

/// One listener task's view of the ban engine: a snapshot of the rules
/// taken once per read cycle, and the search state for them.
pub struct Tap {
    f2b: Arc<F2b>,
    rules: Arc<Loaded>,
    hits: Vec<RuleHit>,
    /// Search state for `rules` (remade when they change).
    scratch: Scratch,
    matches_only: bool,
}

impl Tap {
    /// A tap on `f2b`; with `matches_only`, payloads no rule acted on are
    /// suppressed.
    pub fn new(f2b: Arc<F2b>, matches_only: bool) -> Tap {
        Tap {
            rules: f2b.current(),
            f2b,
            hits: Vec::new(),
            scratch: Scratch::default(),
            matches_only,
        }
    }

    /// Takes the rules in force now (cheap when they did not change): at
    /// the start of each read cycle.
    pub fn refresh(&mut self) {
        self.f2b.refresh(&mut self.rules);
    }

    /// Evaluates the rules on `payload`, counts the hits, and says whether
    /// it is published.
    pub fn inspect(&mut self, payload: &[u8]) -> Verdict {
        self.hits.clear();
        self.rules
            .rules
            .evaluate(payload, &mut self.hits, &mut self.scratch);
        let acted = !self.hits.is_empty() && self.f2b.record(&self.rules, &self.hits);
        if self.matches_only && !acted {
            Verdict::Suppress
        } else {
            Verdict::Publish
        }
    }
}
