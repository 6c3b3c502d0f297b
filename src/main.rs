//! Parses the command line, runs the command, reports. Nothing else.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use credloader::{exit, Cli, Hints};

fn main() -> ExitCode {
    // Run by systemd as /…/system-generators/credloader-generator.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv0 = args.first().map(std::path::Path::new);
    if argv0.and_then(|p| p.file_name()) == Some(credloader::GENERATOR_NAME.as_ref()) {
        return ExitCode::from(credloader::generator_main(&args));
    }
    // `COMPLETE=SHELL credloader -- WORDS`: a shell asking for completions
    // (names only, nothing decrypted; see `complete`). Exits when it was.
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(credloader::COMPLETE_VAR)
        .complete();
    // Before anything can hold a secret: no core dumps, no ptrace by peers.
    if let Err(e) = credloader::no_core_dumps() {
        eprintln!("credloader: error: cannot disable core dumps: {e}");
        return ExitCode::from(exit::ENVIRONMENT);
    }
    let cli = Cli::parse();
    let hints = || Hints::new(cli.global.root.as_deref(), cli.global.config.as_deref());
    credloader::init_logging(cli.global.verbose, cli.global.quiet, hints());
    if let Err(e) = credloader::drop_capabilities() {
        tracing::warn!("could not drop capabilities: {e}");
    }
    let (json, quiet) = (cli.global.json, cli.global.quiet);
    // Suggested commands carry --root (and --config) as given here.
    let hints = hints();
    let result = credloader::run(cli.global, cli.command);
    let mut stdout = std::io::stdout().lock();
    match result {
        Ok(out) => {
            // `-q`: only what went wrong, on stderr. `--json` is the
            // document asked for, quiet or not.
            match (json, quiet.then(|| out.quiet_text()).flatten()) {
                (true, _) => {
                    let _ = stdout.write_all(hints.json(&out.json_text()).as_bytes());
                }
                (false, Some(errors)) => eprint!("{}", hints.text(&errors)),
                (false, None) => {
                    let _ = stdout.write_all(hints.text(&out.human).as_bytes());
                }
            }
            ExitCode::from(out.code)
        }
        Err(e) => {
            let code = e.exit_code();
            let err = hints.text(&format!("{:#}", anyhow::Error::new(e)));
            if json {
                let doc = serde_json::json!({ "error": err, "exit_code": code });
                let _ = writeln!(stdout, "{doc}");
            }
            eprintln!("credloader: error: {err}");
            ExitCode::from(code)
        }
    }
}
