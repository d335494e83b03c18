//! cowlogd: a log collector appliance for mailcow and Docker hosts.
pub use cowlogd_parsers as parsers;
