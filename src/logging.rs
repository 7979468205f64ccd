//! The command line's logger: slog to stderr, quiet by default, and never a stranger's
//! control character on the terminal.

use std::io;

use slog::{o, Drain, Level, Logger, OwnedKVList, Record};
use slog_term::{Decorator, RecordDecorator};
use torrent_actors::terminal::printable;

/// Warnings only by default; `-v` adds information, `-vv` debugging detail.
pub fn stderr_logger(verbosity: u8) -> Logger {
    let level = match verbosity {
        0 => Level::Warning,
        1 => Level::Info,
        _ => Level::Debug,
    };
    // Each record is put together in a buffer and written whole, under stderr's lock:
    // the front end's own lines (`eprintln!`, the same lock) never tear a log line in two,
    // nor it them. (A terminal decorator writes a record piece by piece.)
    // The full format: each record one line, its context keys (the torrent, the peer)
    // at its end; the compact one writes them as header lines of their own and indents
    // the records under them, which reads as stray lines among the front end's output.
    let decorator = Printable(slog_term::PlainSyncDecorator::new(std::io::stderr()));
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog_async::Async::new(drain).chan_size(4096).build().fuse();
    Logger::root(drain.filter_level(level).fuse(), o!())
}

/// A slog-term decorator that passes every message, key and value through
/// [`printable`] before it reaches the inner decorator.
///
/// Log lines quote what strangers sent (file names, peers' client names, errors naming
/// either), and the engine logs them as they are; escaping them here, at the one place
/// every line passes, means no call site can forget to. The inner decorator's own colour
/// codes are written by its `start_*` calls, not through `write`, so they survive; the
/// spaces and newlines slog-term writes itself come after `start_whitespace` and pass as
/// they are.
struct Printable<D>(D);

impl<D: Decorator> Decorator for Printable<D> {
    fn with_record<F>(&self, record: &Record, values: &OwnedKVList, f: F) -> io::Result<()>
    where
        F: FnOnce(&mut dyn RecordDecorator) -> io::Result<()>,
    {
        self.0.with_record(record, values, |inner| {
            f(&mut PrintableRecord {
                inner,
                layout: false,
            })
        })
    }
}

/// One record being written through [`Printable`].
struct PrintableRecord<'a> {
    inner: &'a mut dyn RecordDecorator,
    /// Whether slog-term is writing its own layout (spaces, indents, the final
    /// newline), which passes unescaped; everything else may hold a stranger's text.
    layout: bool,
}

impl io::Write for PrintableRecord<'_> {
    /// Each call holds whole UTF-8 text: slog-term formats with `write!`, whose every
    /// piece is a `&str` handed over in one `write_all`, and this `write` always takes
    /// the whole buffer, so a character is never split across calls. Invalid UTF-8
    /// (there should be none) is shown as U+FFFD rather than passed through.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.layout {
            self.inner.write_all(buf)?;
        } else {
            let text = String::from_utf8_lossy(buf);
            self.inner.write_all(printable(&text).as_bytes())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl RecordDecorator for PrintableRecord<'_> {
    fn reset(&mut self) -> io::Result<()> {
        self.layout = false;
        self.inner.reset()
    }

    fn start_whitespace(&mut self) -> io::Result<()> {
        self.layout = true;
        self.inner.start_whitespace()
    }

    fn start_msg(&mut self) -> io::Result<()> {
        self.layout = false;
        self.inner.start_msg()
    }

    fn start_timestamp(&mut self) -> io::Result<()> {
        self.layout = false;
        self.inner.start_timestamp()
    }

    fn start_level(&mut self) -> io::Result<()> {
        self.layout = false;
        self.inner.start_level()
    }

    fn start_comma(&mut self) -> io::Result<()> {
        self.layout = false;
        self.inner.start_comma()
    }

    fn start_key(&mut self) -> io::Result<()> {
        self.layout = false;
        self.inner.start_key()
    }

    fn start_value(&mut self) -> io::Result<()> {
        self.layout = false;
        self.inner.start_value()
    }

    fn start_location(&mut self) -> io::Result<()> {
        self.layout = false;
        self.inner.start_location()
    }

    fn start_separator(&mut self) -> io::Result<()> {
        self.layout = false;
        self.inner.start_separator()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_carry_no_control_or_reordering_characters_from_strangers() {
        let out = Captured::default();
        let decorator = Printable(slog_term::PlainSyncDecorator::new(out.clone()));
        let drain = Mutex::new(slog_term::FullFormat::new(decorator).build()).fuse();
        let log = Logger::root(drain, o!("peer" => "evil\u{1b}]0;title\u{7}"));
        slog::warn!(log, "file \u{1b}[2J\u{9b}31m\u{202E}gpj.exe"; "client" => "x\u{7f}\u{2066}", "note" => "two\nlines");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && torrent_actors::terminal::is_unsafe(c)),
            "{text:?}"
        );
        assert!(
            text.contains("file \\u{1b}[2J\\u{9b}31m\\u{202e}gpj.exe"),
            "{text:?}"
        );
        assert!(text.contains("evil\\u{1b}]0;title\\u{7}"), "{text:?}");
        assert!(text.contains("two\\nlines"), "{text:?}");
        // slog-term's own layout still ends each line with a newline.
        assert!(text.ends_with('\n'), "{text:?}");
    }
}
