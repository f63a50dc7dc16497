//! The host functions every instance may call, and the logging macros.

use crate::bindings::steward::resource::host as wit;

pub use wit::{LogLevel, NodeIdentity};

/// Writes a log record into the host's log, tagged with the resource's
/// name. Prefer the macros ([`crate::info!`] and friends).
pub fn log(level: LogLevel, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    wit::log(level, message, &fields);
}

/// Tells the host at once that the resource has failed; the host acts after
/// the current call returns, without waiting for the next probe.
pub fn signal_failure(reason: &str) {
    wit::signal_failure(reason);
}

/// Reports progress while `online` or `offline` is pending.
pub fn report_progress(message: &str) {
    wit::report_progress(message);
}

/// The node and resource this instance runs for.
pub fn node_info() -> NodeIdentity {
    wit::node_info()
}

/// The fencing token of the current ownership of the resource's group.
pub fn fencing_token() -> u64 {
    wit::fencing_token()
}

/// Sleeps, but never past the current call's deadline.
pub fn sleep(duration: core::time::Duration) {
    let ms = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
    wit::sleep_ms(ms);
}

/// Nanoseconds on the host's monotonic clock.
pub fn monotonic_now_ns() -> u64 {
    wit::monotonic_now_ns()
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => {
        $crate::host::log($crate::host::LogLevel::$level, &::std::format!($($arg)+), &[])
    };
}

/// Logs at trace level, `format!` style.
#[macro_export]
macro_rules! trace { ($($arg:tt)+) => { $crate::__log!(Trace, $($arg)+) }; }
/// Logs at debug level, `format!` style.
#[macro_export]
macro_rules! debug { ($($arg:tt)+) => { $crate::__log!(Debug, $($arg)+) }; }
/// Logs at info level, `format!` style.
#[macro_export]
macro_rules! info { ($($arg:tt)+) => { $crate::__log!(Info, $($arg)+) }; }
/// Logs at warn level, `format!` style.
#[macro_export]
macro_rules! warn { ($($arg:tt)+) => { $crate::__log!(Warn, $($arg)+) }; }
/// Logs at error level, `format!` style.
#[macro_export]
macro_rules! error { ($($arg:tt)+) => { $crate::__log!(Error, $($arg)+) }; }
