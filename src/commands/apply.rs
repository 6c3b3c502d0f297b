//! `credloader apply`.

use std::fmt::Write;

use super::{CommandError, Context, Output};
use crate::apply::{self, Options, Outcome, Report};
use crate::cli::ApplyArgs;
use crate::escape::{self, text};
use crate::{exit, stamp};

pub fn run(ctx: &Context, args: ApplyArgs) -> Result<Output, CommandError> {
    let opts = Options {
        dry_run: args.dry_run,
        only: args.services,
        restart: !args.no_restart,
        jobs: args.jobs,
    };
    // Nothing changed since the last apply that had nothing to do: say so
    // again without parsing anything (see `stamp`). Only for a full run.
    let (config_path, explicit) = ctx.config_path();
    let key = (!opts.dry_run && opts.only.is_empty())
        .then(|| stamp::Key::new(&ctx.root, &config_path, explicit, opts.restart))
        .flatten();
    if let Some(said) = key.as_ref().and_then(stamp::check) {
        tracing::debug!("nothing changed since the last apply");
        return Ok(Output::rendered(exit::OK, said.human, said.json));
    }
    let mut inputs = key
        .as_ref()
        .map(|_| stamp::Snapshot::of_config(&config_path));
    let config = ctx.load_config()?;
    if let Some(i) = inputs.as_mut() {
        i.add_inputs(&ctx.root, &config);
    }
    if opts.dry_run {
        let mut report = apply::apply(&config, &ctx.root, ctx.manager(), &opts)?;
        report.warnings.extend(config.sources_warnings());
        return Ok(output(&report, ctx.root.is_offline()));
    }
    let (_state_dir, held) = apply::lock(&config, &ctx.root)?;
    let mut report = apply::apply_locked(&config, &ctx.root, ctx.manager(), &opts, &held)?;
    // A mistake in `[sources]` concerns `sync` only: said, not fatal (and
    // a run with a warning is never stamped as a no-op).
    report.warnings.extend(config.sources_warnings());
    let out = output(&report, ctx.root.is_offline());
    // Recorded while the lock is held (see `stamp::void`).
    if let (Some(key), Some(inputs)) = (&key, inputs) {
        let said = || stamp::Said {
            human: out.human.clone(),
            json: out.json_text(),
        };
        let no_op = report.is_no_op() && config.is_clean();
        stamp::record(key, inputs, no_op, said);
    }
    Ok(out)
}

/// `offline`: an image (`--root`), whose systemd is not running.
fn output(report: &Report, offline: bool) -> Output {
    let code = if report.all_ok() {
        exit::OK
    } else {
        exit::FAILED
    };
    Output::new(code, human(report, offline), report).with_errors(errors(report))
}

/// What failed, for `-q`.
fn errors(r: &Report) -> Vec<String> {
    let failed = r.services.iter().filter(|s| s.outcome == Outcome::Failed);
    failed
        .map(|s| {
            let why = s.error.as_deref().unwrap_or("failed");
            format!("{} ({}): FAILED: {why}", s.service, s.unit)
        })
        .chain(
            r.config_problems
                .iter()
                .map(|p| format!("config error: {p}")),
        )
        .collect()
}

fn human(r: &Report, offline: bool) -> String {
    let mut out = String::new();
    if r.dry_run {
        out.push_str("dry run: nothing is written or restarted\n");
    }
    for s in &r.services {
        let what = match (s.outcome, r.dry_run) {
            (Outcome::Unchanged, _) => "unchanged",
            (Outcome::Updated, false) => "updated",
            (Outcome::Updated, true) => "would update",
            (Outcome::Failed, _) => "FAILED",
        };
        let _ = write!(out, "{:<24} {:<40} {what}", text(&s.service), text(&s.unit));
        let mut details = Vec::new();
        if s.env_file_written {
            details.push(format!(
                "env file {}",
                s.env_file.as_deref().map(escape::path).unwrap_or_default()
            ));
        }
        if s.dropin_written {
            details.push(format!("drop-in {}", escape::Shown(&s.dropin)));
        }
        if let Some(a) = &s.action {
            details.push(format!("{a} queued"));
        } else if r.dry_run && s.secrets_changed {
            details.push("would restart".into());
        }
        if !details.is_empty() {
            let _ = write!(out, " ({})", details.join(", "));
        }
        out.push('\n');
        if let Some(e) = &s.error {
            let _ = writeln!(out, "  error: {}", text(e));
        }
    }
    for name in &r.removed {
        let _ = writeln!(
            out,
            "{:<24} removed from the configuration: drop-in and env file deleted",
            text(name)
        );
    }
    if r.daemon_reload && !r.dry_run {
        out.push_str(if offline {
            "drop-ins changed: the image's systemd loads them at its boot\n"
        } else {
            "daemon-reload done\n"
        });
    }
    for p in &r.config_problems {
        let _ = writeln!(out, "config error: {}", text(p));
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {}", text(w));
    }
    out
}
