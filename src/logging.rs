//! Logs go to the journal when stderr is connected to it (running as a
//! unit), to stderr otherwise. They carry names, services and paths; no code
//! path logs a value (the [`crate::secret::Secret`] type cannot be printed).

use tracing::Level;
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
