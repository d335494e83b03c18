//! Per-container rate limits (`limits.container_rate`): a token bucket per
//! container, so that one chatty container cannot push other containers'
//! lines — mailcow's mail logs above all — out of the queue. Every listener
//! task shares one [`ContainerRates`]; what a bucket refuses is counted as
//! `dropped{reason="rate_limited"}` (no container label: labels stay
//! bounded) and logged, rate-limited, with the container's name.

use std::sync::{Mutex, PoisonError};

use cowlogd_parsers::{Record, Timestamp};
use lru::LruCache;
use metrics::Counter;

use crate::metrics::{DropReason, drop_counter};
use crate::router::{ContainerName, ContainerPattern};

/// Containers tracked at once; the least recently seen is forgotten (it
/// starts with a full bucket when it comes back). About 100 bytes each.
pub const MAX_TRACKED_CONTAINERS: usize = 4096;

/// What `[limits] container_rate`, `container_burst` and
/// `container_rate_exempt` say.
#[derive(Debug, Clone)]
pub struct RateSettings {
    /// Messages per second each container may send on average.
    pub per_second: f64,
    /// Messages a container may send at once beyond its rate.
    pub burst: f64,
    /// Containers not limited (patterns as a route's `container`).
    pub exempt: Vec<String>,
}

/// The buckets of every container seen.
pub struct ContainerRates {
    per_second: f64,
    burst: f64,
    exempt: Vec<ContainerPattern>,
    buckets: Mutex<LruCache<Vec<u8>, Bucket>>,
    dropped: Counter,
}

struct Bucket {
    /// Messages it may send now.
    tokens: f64,
    /// When `tokens` was last brought up to date, in seconds.
    updated: f64,
    /// Matches `container_rate_exempt`: decided once, when first seen.
    exempt: bool,
}

impl ContainerRates {
    /// Limits by `settings`.
    pub fn new(settings: &RateSettings) -> ContainerRates {
        ContainerRates {
            per_second: settings.per_second,
            burst: settings.burst,
            exempt: settings
                .exempt
                .iter()
                .map(|p| ContainerPattern::new(p))
                .collect(),
            buckets: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(MAX_TRACKED_CONTAINERS)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            dropped: drop_counter(DropReason::RateLimited),
        }
    }

    /// Whether `record` may go on at `now`; a record without a container
    /// is not limited. A refusal is counted and logged.
    pub fn admit(&self, record: &Record<'_>, now: Timestamp) -> bool {
        let Some(container) = record.container else {
            return true;
        };
        let now = now.as_f64();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        // One lookup; the name is copied only for a container seen first.
        let bucket = buckets.get_or_insert_mut_ref(container, || Bucket {
            tokens: self.burst,
            updated: now,
            exempt: ContainerName::of(record)
                .is_some_and(|name| self.exempt.iter().any(|p| p.matches(&name))),
        });
        if bucket.exempt {
            return true;
        }
        // A clock stepped back refills nothing.
        let elapsed = (now - bucket.updated).max(0.0);
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return true;
        }
        drop(buckets);
        self.dropped.increment(1);
        crate::warn_limited!(
            container = %String::from_utf8_lossy(container),
            per_second = self.per_second,
            "container over limits.container_rate; its excess is dropped"
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::with_gelf_record;

    fn rates(per_second: f64, burst: f64) -> ContainerRates {
        ContainerRates::new(&RateSettings {
            per_second,
            burst,
            exempt: vec!["postfix-mailcow".into()],
        })
    }

    /// How many of `n` messages from `container` at time `at` get through.
    fn admitted(rates: &ContainerRates, container: &str, at: f64, n: usize) -> usize {
        let json = serde_json::json!({"short_message": "x", "_container_name": container});
        let now = Timestamp::from_f64(at).unwrap();
        with_gelf_record(&json, |record| {
            (0..n).filter(|_| rates.admit(record, now)).count()
        })
    }

    #[test]
    fn a_container_gets_its_burst_then_its_rate() {
        let rates = rates(10.0, 50.0);
        assert_eq!(admitted(&rates, "shop-web-1", 1000.0, 80), 50);
        // Half a second later: five more.
        assert_eq!(admitted(&rates, "shop-web-1", 1000.5, 80), 5);
        // Another container has its own bucket.
        assert_eq!(admitted(&rates, "shop-db-1", 1000.5, 80), 50);
        // A long pause refills to the burst, no further.
        assert_eq!(admitted(&rates, "shop-web-1", 2000.0, 80), 50);
    }

    #[test]
    fn exempt_containers_and_records_without_a_container_are_not_limited() {
        let rates = rates(1.0, 1.0);
        assert_eq!(
            admitted(&rates, "mailcowdockerized-postfix-mailcow-1", 1.0, 1000),
            1000
        );
        let json = serde_json::json!({"short_message": "no container"});
        with_gelf_record(&json, |record| {
            assert!((0..100).all(|_| rates.admit(record, Timestamp::new(1, 0))));
        });
    }

    #[test]
    fn a_clock_stepped_back_refills_nothing() {
        let rates = rates(10.0, 10.0);
        assert_eq!(admitted(&rates, "a-1", 100.0, 20), 10);
        assert_eq!(admitted(&rates, "a-1", 50.0, 20), 0);
    }

    #[test]
    fn the_buckets_are_bounded() {
        let rates = rates(1.0, 1.0);
        for n in 0..MAX_TRACKED_CONTAINERS + 100 {
            admitted(&rates, &format!("c-{n}"), 1.0, 1);
        }
        let held = rates.buckets.lock().unwrap().len();
        assert_eq!(held, MAX_TRACKED_CONTAINERS);
    }
}
