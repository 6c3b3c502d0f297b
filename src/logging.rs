//! Logs go to the journal when stderr is connected to it (running as a
//! unit), to stderr otherwise. They carry names, services and paths; no code
//! path logs a value (the [`crate::secret::Secret`] type cannot be printed).
//! On stderr every field, the message included, is escaped
//! ([`crate::escape`]): a name with a newline in it cannot forge a line. The
//! journal keeps each field apart, and `journalctl` shows control
//! characters in none of them raw.

use tracing::Level;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::prelude::*;

/// `verbosity`: 0 = warnings, 1 = info, 2 = debug (and other crates' logs),
/// 3+ = trace; `quiet` = errors only.
pub fn init(verbosity: u8, quiet: bool, hints: crate::hint::Hints) {
    let level = if quiet {
        Level::ERROR
    } else {
        match verbosity {
            0 => Level::WARN,
            1 => Level::INFO,
            2 => Level::DEBUG,
            _ => Level::TRACE,
        }
    };
    // Other crates' logs (the AWS SDK's notes on its own configuration)
    // only at -vv and beyond; errors always.
    let others = if verbosity >= 2 { level } else { Level::ERROR };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("credloader", level)
        .with_default(others.min(level));
    if libsystemd::logging::connected_to_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(journald.with_syslog_identifier("credloader".into()))
                .with(filter)
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(escaped_fields())
                .with_writer(Stderr(std::sync::Arc::new(hints)))
                .with_target(false)
                .without_time()
                // Colour only for a person at a terminal: not in cron mail,
                // redirected logs or pipes, nor with NO_COLOR set.
                .with_ansi(
                    std::io::IsTerminal::is_terminal(&std::io::stderr())
                        && std::env::var_os("NO_COLOR").is_none(),
                ),
        )
        .with(filter)
        .try_init();
}

/// Records `message` in the journal, whether or not credloader's own log
/// goes there (an operator's `rotate` at a terminal logs to stderr): what a
/// rotation found is kept where `journalctl` finds it later. Quietly does
/// nothing where there is no journal (an image, a machine without systemd).
/// The message must already be safe to keep: names, masked values only.
pub fn journal(priority: libsystemd::logging::Priority, message: &str) {
    if !std::path::Path::new("/run/systemd/journal/socket").exists() {
        return;
    }
    let vars = [("SYSLOG_IDENTIFIER", "credloader")];
    let _ = libsystemd::logging::journal_send(priority, message, vars.into_iter());
}

/// stderr for log lines, whose suggested commands carry `--root` like
/// every other message ([`crate::hint`]). The fmt layer writes
/// each event with one `write_all`.
struct Stderr(std::sync::Arc<crate::hint::Hints>);

struct HintedStderr(std::sync::Arc<crate::hint::Hints>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = HintedStderr;
    fn make_writer(&'a self) -> HintedStderr {
        HintedStderr(self.0.clone())
    }
}

impl std::io::Write for HintedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = self.0.text(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The fields of an event as the default formatter writes them (the
/// message, then `name=value` each), every one escaped.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let shown = format!("{value:?}");
        let shown = crate::escape::text(&shown);
        match field.name() {
            "message" => w.write_str(&shown),
            name => write!(w, "{name}={shown}"),
        }
    })
    .delimited(" ")
}
