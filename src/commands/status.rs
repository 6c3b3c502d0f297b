//! `credloader status`: per service, where things stand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use super::{CommandError, Context, Output};
use crate::cli::StatusArgs;
use crate::config::{Delivery, Loader, Service};
use crate::escape::{self, text};
use crate::exit;
use crate::generations::format_utc;
use crate::overrides::Override;
use crate::root::Root;
use crate::safefs::{self, Dir, DirPolicy};
use crate::state::{self, FileId, Served, State};
use crate::systemd::Manager;

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    pub unit: String,
    pub user: String,
    pub delivery: Delivery,
    pub credentials: Vec<String>,
    pub env_file: Option<PathBuf>,
    /// Seconds since the epoch of the last successful apply.
    pub last_apply: Option<u64>,
    /// The env file is still the one the last apply wrote (None: not applicable/never applied).
    pub env_file_matches: Option<bool>,
    pub dropin: PathBuf,
    /// The drop-in exists with the content credloader writes.
    pub dropin_present: bool,
    /// systemd has loaded it (None without a running systemd).
    pub dropin_loaded: Option<bool>,
    /// `ActiveState` of the unit (None without a running systemd).
    pub active_state: Option<String>,
    /// Its own definition is broken: what is wrong and the file to fix. It
    /// is served from the definition it was last applied from (shown here).
    pub definition_error: Option<String>,
    /// What in its unit wins over credloader's env file (see
    /// `crate::overrides`).
    pub overridden: Vec<Overridden>,
}

/// One thing that takes a variable from credloader's env file.
#[derive(Debug, Serialize)]
pub struct Overridden {
    pub problem: String,
    pub fix: String,
    /// It keeps the service from getting credloader's values (a rotation
    /// does not verify while it is there).
    pub blocks: bool,
}

impl Overridden {
    fn all(root: &Root, service: &Service, found: &[Override]) -> Vec<Overridden> {
        found
            .iter()
            .map(|o| Overridden {
                problem: o.problem(root, service),
                fix: o.fix(root, service),
                blocks: o.blocks(),
            })
            .collect()
    }

    /// The `overridden:` lines of one service.
    fn human(out: &mut String, s: &ServiceStatus) {
        if s.delivery == Delivery::Env && s.overridden.is_empty() {
            let _ = writeln!(out, "  overridden:    no");
        }
        for o in &s.overridden {
            let what = if o.blocks { "YES" } else { "maybe" };
            let _ = writeln!(
                out,
                "  overridden:    {what}: {}\n    fix: {}",
                o.problem, o.fix
            );
        }
    }
}

/// A service whose definition is broken and that was never applied.
#[derive(Debug, Serialize)]
pub struct NotServed {
    pub service: String,
    pub error: String,
}

pub fn run(ctx: &Context, args: StatusArgs) -> Result<Output, CommandError> {
    let config = ctx.load_config()?;
    let state = State::inspect(&ctx.root, &config.loader.state_dir);
    // As apply serves them: a service whose file is broken is still served.
    let served = Served::new(&config, &state);
    check_known(&served, &args.services)?;
    let wanted = |name: &str| args.services.is_empty() || args.services.iter().any(|s| s == name);
    let manager = ctx.manager();
    let shown: Vec<&Service> = served
        .services
        .values()
        .copied()
        .filter(|s| wanted(&s.name))
        .collect();
    let overrides = crate::overrides::find(manager, &ctx.root, &config.loader, &shown);
    let look = Look {
        ctx,
        loader: &config.loader,
        state: &state,
        served: &served,
        manager,
    };
    let out: Vec<ServiceStatus> = shown
        .iter()
        .copied()
        .zip(overrides)
        .map(|(service, found)| look.at(service, &found))
        .collect();
    let not_served: Vec<NotServed> = served
        .unservable
        .iter()
        .filter(|(n, _)| wanted(n))
        .map(|(n, p)| NotServed {
            service: n.to_string(),
            error: state::describe(p),
        })
        .collect();
    Ok(output(&out, &not_served))
}

/// Why `status` shows nothing (exit 2).
#[derive(Debug, Error)]
pub enum StatusError {
    /// A service asked for by name is not in the configuration.
    #[error(
        "no service named `{}` in the configuration (known: {})",
        text(name),
        text(&known.join(", "))
    )]
    UnknownService {
        /// The name asked for.
        name: String,
        /// The services the configuration has.
        known: Vec<String>,
    },
}

/// Every service asked for by name must be one the configuration has.
fn check_known(served: &Served, asked: &[String]) -> Result<(), StatusError> {
    let known = |s: &str| served.services.contains_key(s) || served.unservable.contains_key(s);
    let Some(unknown) = asked.iter().find(|s| !known(s)) else {
        return Ok(());
    };
    Err(StatusError::UnknownService {
        name: unknown.clone(),
        known: (served.services.keys())
            .chain(served.unservable.keys())
            .map(|s| s.to_string())
            .collect(),
    })
}

/// What status looks at for each service.
struct Look<'a> {
    ctx: &'a Context,
    loader: &'a Loader,
    state: &'a State,
    served: &'a Served<'a>,
    manager: Manager,
}

impl Look<'_> {
    /// Where `service` stands; `found` is what in its unit wins over its
    /// env file.
    fn at(&self, service: &Service, found: &[Override]) -> ServiceStatus {
        let rec = self.state.services.get(&service.name);
        let env_file = (service.delivery == Delivery::Env).then(|| service.env_file.clone());
        let env_file_matches = match (&env_file, rec) {
            (Some(path), Some(rec)) => Some(
                stat(self.ctx, path)
                    .map(|st| Some(FileId::from(&st)) == rec.env_file_id)
                    .unwrap_or(false),
            ),
            _ => None,
        };
        let dropin = crate::dropin::path(service, self.loader);
        let expected = crate::dropin::render(service, self.loader);
        let dropin_present = read(self.ctx, &dropin).as_deref() == Some(expected.as_bytes());
        ServiceStatus {
            service: service.name.clone(),
            unit: service.unit.clone(),
            user: service.user.clone(),
            delivery: service.delivery,
            credentials: service
                .credentials()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            env_file,
            // 0: recorded before its first write, which has not completed.
            last_apply: rec.map(|r| r.applied_at).filter(|&t| t != 0),
            env_file_matches,
            dropin_loaded: self.dropin_loaded(service, &dropin),
            dropin,
            dropin_present,
            active_state: self.manager.property(&service.unit, "ActiveState"),
            definition_error: (self.served.stored.get(service.name.as_str()))
                .map(|p| state::describe(p)),
            overridden: Overridden::all(&self.ctx.root, service, found),
        }
    }

    /// Whether systemd has loaded the drop-in (`None` without a running
    /// systemd).
    fn dropin_loaded(&self, service: &Service, dropin: &Path) -> Option<bool> {
        let manager = self.manager;
        (manager == Manager::Live).then(|| {
            manager
                .property(&service.unit, "DropInPaths")
                .is_some_and(|p| p.split_whitespace().any(|x| Path::new(x) == dropin))
                && manager
                    .property(&service.unit, "NeedDaemonReload")
                    .as_deref()
                    != Some("yes")
        })
    }
}

/// What `status` says (always exit 0: `check` is the command that fails).
fn output(out: &[ServiceStatus], not_served: &[NotServed]) -> Output {
    let mut human = String::new();
    for s in out {
        ServiceStatus::human(&mut human, s);
    }
    for n in not_served {
        let _ = writeln!(
            human,
            "{}\n  definition:    BROKEN and never applied, so NOT served: {}",
            text(&n.service),
            text(&n.error)
        );
    }
    if out.is_empty() && not_served.is_empty() {
        human.push_str("no services configured\n");
    }
    Output::new(
        exit::OK,
        human,
        serde_json::json!({ "services": out, "not_served": not_served }),
    )
}

impl ServiceStatus {
    /// The lines of one service.
    fn human(human: &mut String, s: &ServiceStatus) {
        let _ = writeln!(human, "{} ({})", text(&s.service), text(&s.unit));
        if let Some(e) = &s.definition_error {
            let _ = writeln!(
                human,
                "  definition:    BROKEN, served from its last good definition (shown below): {}",
                text(e)
            );
        }
        let _ = writeln!(human, "  user:          {}", text(&s.user));
        let _ = writeln!(
            human,
            "  delivery:      {}{}",
            match s.delivery {
                Delivery::Env => "env",
                Delivery::Credential => "credential",
            },
            s.env_file
                .as_ref()
                .map(|p| format!(" ({})", escape::Shown(p)))
                .unwrap_or_default()
        );
        let _ = writeln!(
            human,
            "  credentials:   {}",
            text(&s.credentials.join(", "))
        );
        let _ = writeln!(
            human,
            "  last apply:    {}",
            s.last_apply
                .map(format_utc)
                .unwrap_or_else(|| "never".into())
        );
        if let Some(m) = s.env_file_matches {
            let _ = writeln!(
                human,
                "  env file:      {}",
                if m {
                    "as applied"
                } else {
                    "CHANGED or missing since the last apply; run `credloader apply`"
                }
            );
        }
        Self::human_systemd(human, s);
    }

    /// The lines of what systemd has of it: its drop-in, its unit, what in
    /// its unit wins over credloader's env file.
    fn human_systemd(human: &mut String, s: &ServiceStatus) {
        let yes = |b: bool| if b { "yes" } else { "NO" };
        let _ = writeln!(
            human,
            "  drop-in:       {} ({})",
            yes(s.dropin_present),
            escape::Shown(&s.dropin)
        );
        let unknown = || "unknown (no running systemd)".to_string();
        let loaded = s.dropin_loaded.map(|b| yes(b).to_string());
        let _ = writeln!(
            human,
            "  drop-in loaded: {}",
            loaded.unwrap_or_else(unknown)
        );
        let unit = s.active_state.clone().unwrap_or_else(unknown);
        let _ = writeln!(human, "  unit:          {unit}");
        Overridden::human(human, s);
    }
}

fn stat(ctx: &Context, path: &std::path::Path) -> Option<nix::sys::stat::FileStat> {
    let (dir, name) = safefs::split(path);
    Dir::open(&ctx.root, dir, DirPolicy::EXISTING)
        .ok()?
        .entry(name)
        .ok()
        .flatten()
}

fn read(ctx: &Context, path: &std::path::Path) -> Option<Vec<u8>> {
    let (dir, name) = safefs::split(path);
    Dir::open(&ctx.root, dir, DirPolicy::EXISTING)
        .ok()?
        .read(name, 64 * 1024)
        .ok()
        .flatten()
        .map(|(b, _)| b)
}
