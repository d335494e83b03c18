//! Sinks: where records leave cowlogd.

pub mod redis;
