//! The units' sandbox (issue 6): `systemd-analyze security --offline=yes`
//! exposure of credloader.service at most 2.0 (systemd-timesyncd scores 2.3
//! on systemd 252), of credloader-refresh.service and any
//! `units/*sync*.service` at most 2.5. Run inside the test bed: on the host
//! systemd-analyze leaves /run/systemd/systemd-units-load behind.
//! Every option must be justified by a comment; the end-to-end suite
//! (tests/e2e.rs) runs the product under exactly these units.

#[path = "support/testbed.rs"]
mod testbed;

use std::path::Path;

use testbed::TestBed;

fn thresholds() -> Vec<(String, f64)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    let mut out = vec![
        ("credloader.service".to_string(), 2.0),
        ("credloader-refresh.service".to_string(), 2.5),
    ];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains("sync") && name.ends_with(".service") {
            out.push((name, 2.5));
        }
    }
    out
}

#[test]
fn exposure_is_within_bounds() {
    let bed = TestBed::boot();
    bed.install_credloader(env!("CARGO_BIN_EXE_credloader").as_ref());
    let mut report = Vec::new();
    for (unit, max) in thresholds() {
        // systemd 252 takes the threshold on its internal 0..100 scale
        // (an integer, ten times the printed score): 20 means 2.0.
        let threshold = (max * 10.0).round() as u32;
        let out = bed.sh(&format!(
            "systemd-analyze security --offline=yes --threshold={threshold} /etc/systemd/system/{unit} 2>&1"
        ));
        let text = testbed::lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no score in:\n{text}"));
        report.push(format!("{unit}: {score} (max {max})"));
        assert!(
            out.status.success() && score <= max,
            "{unit}: exposure {score} above {max}:\n{text}"
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn every_option_is_justified_by_a_comment() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("credloader") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        let mut section = String::new();
        let mut after_comment = false;
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.starts_with('[') {
                section = l.to_string();
                after_comment = false;
            } else if l.starts_with('#') {
                after_comment = true;
            } else if l.is_empty() {
                after_comment = false;
            } else if section == "[Service]"
                && !["Type=", "ExecStart=", "RemainAfterExit="]
                    .iter()
                    .any(|k| l.starts_with(k))
            {
                // A run of options must start right under its comment.
                assert!(
                    after_comment,
                    "{name}:{}: `{l}` has no comment saying why it is there",
                    i + 1
                );
            }
        }
    }
}
