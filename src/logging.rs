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

/// `verbosity`: 0 = warnings, 1 = info, 2 = debug, 3+ = trace; `quiet` = errors only.
pub fn init(verbosity: u8, quiet: bool) {
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
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
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
                .with_writer(std::io::stderr)
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
