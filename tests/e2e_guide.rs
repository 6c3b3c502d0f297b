//! docs/operator-guide.md, "Migrating a host set up by hand", run as
//! written on a real systemd (see docs/testbed.md): every `sh` block of the
//! section, in order, each of which must succeed. The first block is the
//! manual procedure itself, which builds the host the walkthrough starts
//! from; the consumer's environment it leaves is what every later step must
//! keep, byte for byte (the rotation's new key aside). The guide cannot
//! drift from what credloader does.

#[path = "support/scene.rs"]
mod scene;
#[path = "support/testbed.rs"]
mod testbed;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use scene::{text, Scene};

const CREDLOADER: &str = env!("CARGO_BIN_EXE_credloader");
const SECTION: &str = "## Migrating a host set up by hand";
const UNIT: &str = "quantum-position-monitor.service";
const VARS: [&str; 3] = [
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "EXIT_BRAIN_V35_ENABLED",
];
/// What the operator types at `credloader rotate`'s prompt.
const TYPED: &[u8] = b"NEW_API_KEY_ROTATED\n";

/// The `sh` blocks of the section, in order.
fn blocks() -> Vec<String> {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operator-guide.md"),
    )
    .expect("read the guide");
    let start = guide
        .find(&format!("\n{SECTION}\n"))
        .unwrap_or_else(|| panic!("no section {SECTION:?} in the guide"));
    let section = &guide[start + 1..];
    let end = section[3..]
        .find("\n## ")
        .map(|i| i + 3)
        .unwrap_or(section.len());
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section[..end].lines() {
        match (&mut current, line) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().expect("open")),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, l) => assert!(
                !l.trim_start().starts_with("```sh"),
                "an indented sh block would not be run: {l}"
            ),
        }
    }
    assert!(current.is_none(), "an sh block is not closed");
    blocks
}

fn vars(bed: &Scene) -> BTreeMap<String, Vec<u8>> {
    let env = bed.environ(UNIT);
    VARS.iter()
        .map(|v| (v.to_string(), env.get(*v).cloned().unwrap_or_default()))
        .collect()
}

/// Runs one block as written (`sh -e`); the rotation reads what the
/// operator would type. Returns its output.
fn run(bed: &Scene, i: usize, block: &str) -> String {
    let input: &[u8] = if block.contains("credloader rotate") {
        TYPED
    } else {
        b""
    };
    let out = bed.exec_with_stdin(&["/bin/sh", "-ec", block], input);
    let said = text(&out);
    assert!(
        out.status.success(),
        "guide block {i} failed ({}):\n{block}\n{said}",
        out.status
    );
    said
}

#[test]
fn the_guides_walkthrough_from_the_manual_layout_runs_as_written() {
    let blocks = blocks();
    assert!(blocks.len() >= 6, "{} blocks: {blocks:#?}", blocks.len());
    assert!(blocks[0].contains("systemd-creds encrypt /root/.tmp_key"));
    let bed = Scene::boot(
        Path::new(CREDLOADER),
        &["qt"],
        &[("quantum-position-monitor", "qt")],
    );
    run(&bed, 0, &blocks[0]);
    let manual = vars(&bed);
    assert_eq!(manual["BINANCE_API_KEY"], b"NEW_API_KEY_HERE");
    assert_eq!(manual["EXIT_BRAIN_V35_ENABLED"], b"true");

    let (mut imported, mut rotated) = (false, false);
    for (i, block) in blocks.iter().enumerate().skip(1) {
        let before = bed.main_pid(UNIT).expect("the consumer runs");
        let said = run(&bed, i, block);
        assert!(!said.contains("NEW_API_"), "a value was shown:\n{said}");
        let real_import = block.contains("credloader import") && !block.contains("--dry-run");
        let rotation = block.contains("credloader rotate");
        if real_import || rotation {
            bed.wait_until("the consumer to restart", Duration::from_secs(15), || {
                bed.active(UNIT) && bed.main_pid(UNIT).is_some_and(|p| p != before)
            });
        }
        if real_import {
            imported = true;
            assert_eq!(vars(&bed), manual, "after block {i}:\n{said}");
            assert!(said.contains("without the trailing newline"), "{said}");
        }
        if rotation {
            rotated = true;
            assert!(
                said.contains("removed the trailing newline of the input"),
                "{said}"
            );
            let now = vars(&bed);
            assert_eq!(now["BINANCE_API_KEY"], b"NEW_API_KEY_ROTATED");
            assert_eq!(now["BINANCE_API_SECRET"], manual["BINANCE_API_SECRET"]);
            assert_eq!(
                now["EXIT_BRAIN_V35_ENABLED"],
                manual["EXIT_BRAIN_V35_ENABLED"]
            );
        }
    }
    assert!(imported && rotated, "the walkthrough imports and rotates");
    assert!(bed
        .read("/etc/quantum/position-monitor-secrets/binance.env")
        .is_none());
}
