//! The command line's logger: slog to stderr, quiet by default.

use slog::{o, Drain, Level, Logger};

/// Warnings only by default; `-v` adds information, `-vv` debugging detail.
pub fn stderr_logger(verbosity: u8) -> Logger {
    let level = match verbosity {
        0 => Level::Warning,
        1 => Level::Info,
        _ => Level::Debug,
    };
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let drain = slog_term::CompactFormat::new(decorator).build().fuse();
    let drain = slog_async::Async::new(drain).chan_size(4096).build().fuse();
    Logger::root(drain.filter_level(level).fuse(), o!())
}
