//! `credloader check`: the audit; exit 1 when any finding is an error.

use std::fmt::Write as _;

use serde_json::json;

use super::{CommandError, Context, Output};
use crate::audit::{self, Severity};
use crate::escape::text;
use crate::exit;

pub fn run(ctx: &Context) -> Result<Output, CommandError> {
    let config = ctx.load_config()?;
    let findings = audit::audit(&config, &ctx.root, ctx.manager());
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    let mut human = String::new();
    let mut error_lines = Vec::new();
    for f in &findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let line = format!(
            "{sev}: {}: {}\n  fix: {}",
            text(&f.subject),
            text(&f.problem),
            text(&f.fix)
        );
        let _ = writeln!(human, "{line}");
        if f.severity == Severity::Error {
            error_lines.push(line);
        }
    }
    let _ = writeln!(
        human,
        "{} error(s), {} warning(s){}",
        errors,
        warnings,
        if findings.is_empty() {
            ": all is in order"
        } else {
            ""
        }
    );
    let code = if errors > 0 { exit::FAILED } else { exit::OK };
    Ok(Output::new(
        code,
        human,
        json!({ "findings": findings, "errors": errors, "warnings": warnings, "ok": errors == 0 }),
    )
    .with_errors(error_lines))
}
