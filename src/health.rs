//! Whether a dependency (Redis, the Docker Engine API) is usable, and if
//! not the last reason: what `/ready` reports for each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Up, or down with the last error (empty until one was seen).
#[derive(Debug, Default)]
pub struct Health {
    up: AtomicBool,
    last_error: Mutex<String>,
}

impl Health {
    /// Whether the last attempt succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The last attempt succeeded.
    pub fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
    }

    /// The last attempt failed with `error`.
    pub fn set_down(&self, error: String) {
        self.up.store(false, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// The last error; empty when none was seen yet.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
