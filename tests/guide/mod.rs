//! docs/operator-guide.md as a script: its sections and fenced blocks, and a
//! [`Walk`] that runs one section's blocks, in order, as written, in a test
//! bed. `sh` blocks run as root in `/root` (`sh -e`, so every command of a
//! block must succeed); `toml` and `ini` blocks are files, each introduced
//! by a `# /path` line, and are saved where that line says.
//!
//! A test names the blocks it checks (by a piece of their text); every block
//! before a named one runs too, and [`Walk::finish`] runs what is left: a
//! block added to the guide is run unless a test decides otherwise
//! ([`Walk::skip`], with the reason). [`SECTIONS`] says which test walks
//! each section, and `every_section_with_commands_is_walked` fails on a new
//! section no test walks.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::testbed::{self, TestBed};

/// Every section of the guide with a fenced block, and the test that walks
/// it (`FILE::TEST`).
pub const SECTIONS: &[(&str, &str)] = &[
    (
        "Install",
        "e2e_guide_deb::a_new_host_installs_sets_up_and_removes_as_written",
    ),
    (
        "First setup: one consumer",
        "e2e_guide_deb::a_new_host_installs_sets_up_and_removes_as_written",
    ),
    (
        "Migrating a host set up by hand",
        "e2e_guide::the_guides_walkthrough_from_the_manual_layout_runs_as_written",
    ),
    (
        "Rotating a key",
        "e2e_guide::rotating_a_key_runs_as_written",
    ),
    ("Rolling back", "e2e_guide::rolling_back_runs_as_written"),
    (
        "When an exchange rejects a key",
        "e2e_guide::the_binance_check_runs_as_written",
    ),
    (
        "A 90-day rotation policy",
        "e2e_guide::the_90_day_policy_runs_as_written",
    ),
    ("Day to day", "e2e_guide::day_to_day_runs_as_written"),
    ("Break-glass", "e2e_guide::break_glass_runs_as_written"),
    (
        "Removing the package",
        "e2e_guide_deb::a_new_host_installs_sets_up_and_removes_as_written",
    ),
];

/// The languages of the guide's fenced blocks: commands, and files.
const COMMANDS: &str = "sh";
const FILES: &[&str] = &["toml", "ini"];

#[derive(Debug, Clone)]
pub struct Block {
    pub lang: String,
    /// Without the indentation of its fence (a block in a list item).
    pub text: String,
    /// The line of its opening fence in the guide.
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Section {
    /// The `## ` heading, without the `## `.
    pub title: String,
    pub blocks: Vec<Block>,
}

pub fn guide_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operator-guide.md"))
        .expect("read docs/operator-guide.md")
}

/// The guide's `## ` sections and their fenced blocks, in order.
pub fn sections() -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for (i, line) in guide_text().lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            Some((_, block)) if trimmed == "```" => {
                let block = block.clone();
                open = None;
                sections
                    .last_mut()
                    .unwrap_or_else(|| panic!("line {}: a block before any section", block.line))
                    .blocks
                    .push(block);
            }
            Some((width, block)) => {
                let cut = line.len() - line.trim_start().len();
                block.text.push_str(&line[cut.min(*width)..]);
                block.text.push('\n');
            }
            None if trimmed.starts_with("```") => {
                let lang = trimmed.trim_start_matches('`').trim().to_string();
                assert!(
                    !lang.is_empty(),
                    "guide line {}: a block without a language",
                    i + 1
                );
                let block = Block {
                    lang,
                    text: String::new(),
                    line: i + 1,
                };
                open = Some((indent, block));
            }
            None => {
                if let Some(title) = line.strip_prefix("## ") {
                    sections.push(Section {
                        title: title.trim().to_string(),
                        blocks: Vec::new(),
                    });
                }
            }
        }
    }
    assert!(open.is_none(), "the guide ends inside a block");
    sections
}

/// The section titled `title` (without `## `).
pub fn section(title: &str) -> Section {
    sections()
        .into_iter()
        .find(|s| s.title == title)
        .unwrap_or_else(|| panic!("no section `## {title}` in docs/operator-guide.md"))
}

/// The files of a `toml` or `ini` block: each starts at a `# /path` line.
pub fn files(block: &Block) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in block.text.lines() {
        match line.strip_prefix("# /") {
            Some(path) if !path.contains(' ') => files.push((format!("/{path}"), String::new())),
            _ => {
                let (path, text) = files.last_mut().unwrap_or_else(|| {
                    panic!(
                        "guide line {}: a {} block must start with a `# /path` line that says \
                         where it goes",
                        block.line, block.lang
                    )
                });
                assert!(!path.is_empty());
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    for (_, text) in &mut files {
        let kept = text.trim_end_matches('\n').len();
        text.truncate(kept);
        text.push('\n');
    }
    files
}

/// What a block reads: nothing, stdin, or lines typed at a terminal, each
/// once its prompt is on the screen.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Nothing,
    Stdin(&'a [u8]),
    /// (prompt, line typed after it) pairs, in order.
    Terminal(&'a [(&'a str, &'a str)]),
}

/// What the operator types at the two prompts of `rotate` or `seal NAME`.
pub fn twice(value: &str) -> [(&str, &str); 2] {
    [("Value for ", value), ("Again, to confirm ", value)]
}

/// One block, run.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    /// stdout, then stderr (on a terminal, the screen).
    pub out: String,
    pub line: usize,
}

/// One section's blocks, run in order in `bed`.
pub struct Walk<'a> {
    bed: &'a TestBed,
    title: String,
    pending: VecDeque<Block>,
    secrets: Vec<Vec<u8>>,
    finished: bool,
}

impl<'a> Walk<'a> {
    pub fn new(bed: &'a TestBed, title: &str) -> Walk<'a> {
        let section = section(title);
        assert!(
            SECTIONS.iter().any(|(t, _)| *t == title),
            "add `## {title}` to guide::SECTIONS"
        );
        assert!(!section.blocks.is_empty(), "`## {title}` has no blocks");
        Walk {
            bed,
            title: title.to_string(),
            pending: section.blocks.into(),
            secrets: Vec::new(),
            finished: false,
        }
    }

    /// Values no block's output may show.
    pub fn never_shows(&mut self, values: &[&[u8]]) {
        self.secrets.extend(values.iter().map(|v| v.to_vec()));
    }

    /// Runs (or saves) every block before the next one whose text contains
    /// `marker`, and returns that one, not yet run.
    fn up_to(&mut self, marker: &str) -> Block {
        loop {
            let block = self.pending.pop_front().unwrap_or_else(|| {
                panic!("`## {}` has no further block with {marker:?}", self.title)
            });
            if block.text.contains(marker) {
                return block;
            }
            eprintln!(
                "guide: `## {}`, line {}: a block no check names; run as written",
                self.title, block.line
            );
            self.run_unnamed(&block);
        }
    }

    fn run_unnamed(&self, block: &Block) {
        if block.lang == COMMANDS {
            self.expect_success(run(self.bed, block, Input::Nothing), block);
        } else {
            self.save(block);
        }
    }

    /// Runs the `sh` block with `marker`, which must succeed; returns what it said.
    pub fn sh(&mut self, marker: &str, input: Input) -> Ran {
        let block = self.up_to(marker);
        assert_eq!(block.lang, COMMANDS, "line {}: not an sh block", block.line);
        let ran = run(self.bed, &block, input);
        self.expect_success(ran, &block)
    }

    /// Runs the `sh` block with `marker` one command (one line) at a time,
    /// calling `check` after each; every command must succeed.
    pub fn sh_each(&mut self, marker: &str, mut check: impl FnMut(&str, &Ran)) {
        let block = self.up_to(marker);
        assert_eq!(block.lang, COMMANDS, "line {}: not an sh block", block.line);
        for command in block.text.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                !command.ends_with('\\') && !command.contains("<<"),
                "line {}: run this block whole, not line by line",
                block.line
            );
            let one = Block {
                text: format!("{command}\n"),
                ..block.clone()
            };
            let ran = self.expect_success(run(self.bed, &one, Input::Nothing), &one);
            check(command, &ran);
        }
    }

    /// Saves the files of the `toml`/`ini` block with `marker`; returns their paths.
    pub fn file(&mut self, marker: &str) -> Vec<String> {
        let block = self.up_to(marker);
        assert!(
            FILES.contains(&block.lang.as_str()),
            "line {}: not a file block",
            block.line
        );
        self.save(&block)
    }

    /// Passes over the block with `marker` without running it, for `reason`.
    pub fn skip(&mut self, marker: &str, reason: &str) -> Block {
        let block = self.up_to(marker);
        assert!(!reason.trim().is_empty(), "say why a block is not run");
        eprintln!(
            "guide: `## {}`, line {}: not run: {reason}",
            self.title, block.line
        );
        block
    }

    /// Runs every block left; the section is done.
    pub fn finish(mut self) {
        while let Some(block) = self.pending.pop_front() {
            eprintln!(
                "guide: `## {}`, line {}: a block no check names; run as written",
                self.title, block.line
            );
            self.run_unnamed(&block);
        }
        self.finished = true;
    }

    fn save(&self, block: &Block) -> Vec<String> {
        assert!(
            FILES.contains(&block.lang.as_str()),
            "guide line {}: a `{}` block: neither commands ({COMMANDS}) nor a file ({FILES:?}); \
             teach tests/guide/mod.rs what to do with it",
            block.line,
            block.lang
        );
        files(block)
            .into_iter()
            .map(|(path, text)| {
                save_file(self.bed, &path, text.as_bytes());
                path
            })
            .collect()
    }

    fn expect_success(&self, ran: Ran, block: &Block) -> Ran {
        assert_eq!(
            ran.code,
            Some(0),
            "guide line {} (`## {}`) failed:\n{}\n--- it said:\n{}",
            block.line,
            self.title,
            block.text,
            ran.out
        );
        for secret in &self.secrets {
            assert!(
                !contains(ran.out.as_bytes(), secret),
                "guide line {}: a value was shown:\n{}",
                block.line,
                ran.out
            );
        }
        ran
    }
}

impl Drop for Walk<'_> {
    fn drop(&mut self) {
        if !self.finished && !std::thread::panicking() {
            panic!("`## {}`: the walk ended without finish()", self.title);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Saves `text` at `path` in the bed (mode 0644) as an editor that renames
/// its copy into place does: a watcher (`credloader.path`) never sees half a
/// file.
pub fn save_file(bed: &TestBed, path: &str, text: &[u8]) {
    let (dir, name) = path.rsplit_once('/').expect("an absolute path");
    let staged = format!("{dir}/.{name}.guide-new");
    bed.write(&staged, text, 0o644);
    bed.sh_ok(&format!("mv -f '{staged}' '{path}'"));
}

/// Where a block's script is put in the bed to run.
const SCRIPT: &str = "/run/guide-block.sh";

/// Runs an `sh` block in the bed as root in /root, `sh -e`.
pub fn run(bed: &TestBed, block: &Block, input: Input) -> Ran {
    bed.write(
        SCRIPT,
        format!("cd /root\n{}", block.text).as_bytes(),
        0o700,
    );
    let (code, out) = match input {
        Input::Nothing => captured(bed.exec(&["/bin/sh", "-e", SCRIPT])),
        Input::Stdin(bytes) => captured(bed.exec_with_stdin(&["/bin/sh", "-e", SCRIPT], bytes)),
        Input::Terminal(answers) => typed(bed, &format!("/bin/sh -e {SCRIPT}"), answers),
    };
    Ran {
        code,
        out,
        line: block.line,
    }
}

fn captured(out: std::process::Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        format!(
            "{}{}",
            testbed::lossy(&out.stdout),
            testbed::lossy(&out.stderr)
        ),
    )
}

/// Runs `command` on a terminal (a pty from `script`) and types each answer
/// once its prompt shows: a prompt that turns echo off flushes what was
/// typed before it, as a person's terminal would.
fn typed(bed: &TestBed, command: &str, answers: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = bed
        .command(&["script", "-qec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) in the bed");
    let screen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let screen = Arc::clone(&screen);
        let mut stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                screen.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        })
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let mut seen = 0;
    for (prompt, line) in answers {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let shown = testbed::lossy(&screen.lock().unwrap()[seen..]);
            if let Some(at) = shown.find(prompt) {
                seen += at + prompt.len();
                break;
            }
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                panic!("no prompt {prompt:?} on the terminal:\n{shown}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("type at the terminal");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait for script");
    reader.join().expect("the screen reader");
    let shown = testbed::lossy(&screen.lock().unwrap()).replace("\r\n", "\n");
    (
        out.status.code(),
        format!("{shown}{}", testbed::lossy(&out.stderr)),
    )
}

/// The guide's consumer, and the variables it gets.
pub const UNIT: &str = "quantum-position-monitor.service";
pub const VARS: [&str; 3] = [
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "EXIT_BRAIN_V35_ENABLED",
];
/// The consumer's env file, as credloader writes it.
pub const ENV_FILE: &str = "/run/credloader/position-monitor.env";

/// [`VARS`] in the consumer's environment (empty when unset).
pub fn vars(bed: &TestBed) -> std::collections::BTreeMap<String, Vec<u8>> {
    let env = bed.environ(UNIT);
    VARS.iter()
        .map(|v| (v.to_string(), env.get(*v).cloned().unwrap_or_default()))
        .collect()
}

/// Waits until the applies `credloader.path` started have run (none
/// running, no job queued), so a check reads a settled host.
pub fn settle(bed: &TestBed) {
    bed.wait_until(
        "credloader.path's applies to finish",
        Duration::from_secs(60),
        || {
            bed.unit_property("credloader-refresh.service", "ActiveState") != "activating"
                && testbed::lossy(&bed.systemctl(&["list-jobs", "--no-legend"]).stdout)
                    .trim()
                    .is_empty()
        },
    );
}
