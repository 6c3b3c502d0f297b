//! The man pages, generated from the command line (`src/cli.rs`):
//! `credloader(1)` and one `credloader-COMMAND(1)` per command it lists,
//! each with the sections clap_mangen renders plus EXAMPLES, FILES (the
//! main page) and SEE ALSO. The package installs every page the main one
//! points to (`packaging/build-deb.sh`).

use std::io;
use std::path::{Path, PathBuf};

use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

/// Examples, per command (`""`: the main page): the command line and what
/// it does.
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "",
        &[
            ("credloader seal BINANCE_API_KEY", "Seal a new key, typed twice at the prompt."),
            (
                "printf %s \"$NEW_KEY\" | credloader rotate BINANCE_API_KEY --not-after +90d",
                "Give it a new value that expires in 90 days; its consumers are restarted and verified, and rolled back if they fail.",
            ),
            ("credloader apply --dry-run", "Show what apply would write and restart; never a value."),
            ("credloader status --service position-monitor", "Is everything of one service in place?"),
            ("credloader check", "Audit modes, owners, drop-ins and expiry; exit 1 on an error."),
            ("credloader --root /mnt/image list", "Work on an offline image, like systemctl --root."),
        ],
    ),
    ("apply", &[
        ("credloader apply", "Deliver every credential; restart only the services whose secrets changed."),
        ("credloader apply --service position-monitor --no-restart", "Rewrite one service's files, restart nothing."),
    ]),
    ("seal", &[
        ("credloader seal BINANCE_API_KEY", "Ask for the value twice, without echo."),
        ("credloader seal BINANCE_API_SECRET --from-file /root/secret.txt --not-after +90d", "Seal a file's content with an expiry."),
    ]),
    ("rotate", &[
        ("printf %s \"$NEW_KEY\" | credloader rotate BINANCE_API_KEY", "New value from stdin; exit 4 if a consumer rejects it (rolled back)."),
        ("credloader rotate BINANCE_API_KEY --no-apply", "Stage the new value only."),
    ]),
    ("sync", &[
        ("credloader sync --dry-run", "Compare the source with the sealed values; change nothing."),
        ("credloader sync BINANCE_API_KEY", "Fetch one credential and deliver it if it changed."),
    ]),
    ("rollback", &[
        ("credloader rollback BINANCE_API_KEY", "Put back the newest kept value that no rotation rejected."),
        ("credloader rollback BINANCE_API_KEY --to 2", "Put back generation 2 (credloader generations lists them)."),
    ]),
    ("generations", &[("credloader generations BINANCE_API_KEY", "Every kept value by number, the current one marked, masked.")]),
    ("list", &[("credloader list", "Every credential: status, consumers, key, not-after.")]),
    ("show", &[("credloader show BINANCE_API_KEY", "The value's first characters and its length.")]),
    ("status", &[("credloader status --service position-monitor", "One service's env file, drop-in and unit.")]),
    ("check", &[("credloader -q check", "Only the errors; exit 1 if there is one (for a timer).")]),
    ("import", &[(
        "credloader import --env-file /etc/quantum/position-monitor-secrets/binance.env --unit quantum-position-monitor.service --secret BINANCE_API_KEY --secret BINANCE_API_SECRET --static EXIT_BRAIN_V35_ENABLED",
        "Seal a hand-made env file's keys, replace its drop-in, apply, remove the plaintext.",
    )]),
    ("completions", &[("credloader completions bash > /etc/bash_completion.d/credloader", "Install bash completion (the package does it already).")]),
];

/// What credloader reads and writes, with their defaults.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/quantum/credloader.toml, /etc/quantum/credloader.d/*.toml",
        "The configuration (docs/configuration.md).",
    ),
    (
        "/etc/quantum/creds/NAME.cred",
        "Sealed credentials (systemd-creds), root 0600 in a root 0700 directory.",
    ),
    (
        "/run/credloader/SERVICE.env",
        "A service's env file: plaintext on tmpfs, owned by the service's user, 0600.",
    ),
    (
        "/etc/systemd/system/UNIT.d/50-credloader.conf",
        "The drop-in that points a unit at its env file or credentials.",
    ),
    (
        "/var/lib/credloader/state.json",
        "What the last apply delivered (names, paths, digests of sealed bytes; never a value).",
    ),
    (
        "/var/lib/credloader/generations/NAME/",
        "Kept sealed values of a credential, by number, and meta.json.",
    ),
    (
        "/usr/lib/credloader/health/",
        "Ready health checks, such as binance-key-check.",
    ),
    (
        "/usr/share/doc/credloader/",
        "The operator guide and the other documents.",
    ),
];

/// Every page: `credloader.1` and one per command it lists.
fn pages() -> Vec<(String, clap::Command)> {
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = vec![(String::new(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // `build` named it `credloader-NAME` for its page.
        out.push((sub.get_name().to_string(), sub.clone()));
    }
    out
}

/// Renders one page with the extra sections.
fn render(command: &str, cmd: clap::Command) -> io::Result<Vec<u8>> {
    let mut page = Vec::new();
    Man::new(cmd).render(&mut page)?;
    let mut roff = Roff::new();
    if let Some((_, examples)) = EXAMPLES.iter().find(|(c, _)| *c == command) {
        roff.control("SH", ["EXAMPLES"]);
        for (line, what) in *examples {
            roff.control("TP", [])
                .text([bold(*line)])
                .text([roman(*what)]);
        }
    }
    if command.is_empty() {
        roff.control("SH", ["FILES"]);
        for (path, what) in FILES {
            roff.control("TP", [])
                .text([italic(*path)])
                .text([roman(*what)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let see_also = if command.is_empty() {
        "systemd-creds(1), systemctl(1), systemd.exec(5), systemd.unit(5); \
         the operator guide in /usr/share/doc/credloader/operator-guide.md"
    } else {
        "credloader(1)"
    };
    roff.text([roman(see_also)]);
    // Before VERSION, the page's last section.
    let extra = roff.to_roff();
    let text = String::from_utf8_lossy(&page).into_owned();
    let at = text.find(".SH VERSION").unwrap_or(text.len());
    Ok(format!("{}{extra}{}", &text[..at], &text[at..]).into_bytes())
}

/// `credloader.1`, as `credloader man` prints it.
pub fn main_page() -> io::Result<Vec<u8>> {
    let (name, cmd) = pages().swap_remove(0);
    render(&name, cmd)
}

/// Writes every page into `dir`; returns their paths.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, cmd) in pages() {
        let file = dir.join(Man::new(cmd.clone()).get_filename());
        std::fs::write(&file, render(&name, cmd)?)?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_the_main_page_points_to_exists_with_its_sections() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(dir.path()).unwrap();
        let main = String::from_utf8(main_page().unwrap()).unwrap();
        for section in [
            ".SH EXAMPLES",
            ".SH FILES",
            ".SH \"SEE ALSO\"",
            ".SH SUBCOMMANDS",
        ] {
            assert!(main.contains(section), "{section} in:\n{main}");
        }
        // Each `credloader-X(1)` the main page names is a page written.
        let pointed: Vec<&str> = main
            .lines()
            .filter_map(|l| l.strip_suffix("(1)"))
            .filter(|l| l.starts_with("credloader\\-"))
            .collect();
        assert!(pointed.len() >= 12, "{pointed:?}");
        for p in pointed {
            let file = dir.path().join(format!("{}.1", p.replace("\\-", "-")));
            assert!(written.contains(&file), "{} is not written", file.display());
        }
        assert!(!main.contains("credloader\\-help(1)"), "no page for help");
        let rotate = std::fs::read_to_string(dir.path().join("credloader-rotate.1")).unwrap();
        assert!(rotate.contains(".SH EXAMPLES") && rotate.contains("credloader(1)"));
    }
}
