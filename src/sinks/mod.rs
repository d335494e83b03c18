//! Sinks: where records leave cowlogd.

pub mod graylog;
pub mod redis;
