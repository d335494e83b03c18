//! Sinks: where records leave cowlogd.

pub mod graylog;
pub mod redis;

use std::hash::{BuildHasher, Hasher};

/// A random 64-bit id (a writer's marker key, a GELF message id): std's
/// per-process random hash keys, fresh for each call, over the clock.
/// Not for secrets; unique enough that two writers or two messages do not
/// collide.
pub(crate) fn random_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ_call_to_call() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| super::random_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
