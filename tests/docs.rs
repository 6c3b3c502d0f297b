//! The documentation stays in step with the code: docs/cli.md is what the
//! CLI definition generates, docs/configuration.md names every config key,
//! docs/exit-codes.md every exit code, and README links every doc.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

#[test]
fn cli_reference_is_generated_from_the_current_cli() {
    let out = Command::new("bash")
        .arg(Path::new(ROOT).join("packaging/cli-reference.sh"))
        .arg(env!("CARGO_BIN_EXE_credloader"))
        .output()
        .expect("run packaging/cli-reference.sh");
    assert!(
        out.status.success(),
        "cli-reference.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = String::from_utf8(out.stdout).expect("UTF-8 help");
    let have = read("docs/cli.md");
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()) + 1);
        panic!(
            "docs/cli.md is stale (first difference at line {line}): run `make docs` and commit it"
        );
    }
    for cmd in ["apply", "seal", "rotate", "rollback", "check", "import"] {
        assert!(
            want.contains(&format!("## credloader {cmd}\n")),
            "no section for {cmd}"
        );
    }
}

/// The field names of `struct NAME { ... }` in src/config/raw.rs, with serde renames.
fn raw_keys(config: &str, name: &str) -> Vec<String> {
    let start = config
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} in src/config/raw.rs"));
    let body = &config[start..];
    let body = &body[..body.find("\n}").expect("end of struct")];
    let mut keys = Vec::new();
    let mut rename = None;
    for line in body.lines().skip(1).map(str::trim) {
        if let Some(r) = line
            .split("rename = \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            rename = Some(r.to_string());
        } else if let Some((field, _)) = line.trim_start_matches("pub(super) ").split_once(':') {
            if field.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !field.is_empty() {
                keys.push(rename.take().unwrap_or_else(|| field.to_string()));
            }
        }
    }
    keys
}

#[test]
fn configuration_reference_names_every_key() {
    let config = read("src/config/raw.rs");
    let doc = read("docs/configuration.md");
    let loader = raw_keys(&config, "RawLoader");
    let service = raw_keys(&config, "RawService");
    let credential = raw_keys(&config, "RawCredential");
    assert_eq!(credential, ["keep_newline"]);
    assert!(
        loader.contains(&"keep_generations".to_string()),
        "{loader:?}"
    );
    assert!(service.contains(&"static".to_string()), "{service:?}");
    for key in loader.iter().chain(&service).chain(&credential) {
        assert!(
            doc.contains(&format!("`{key}`")),
            "docs/configuration.md does not document `{key}`"
        );
    }
}

#[test]
fn exit_code_reference_names_every_code() {
    let exit = read("src/exit.rs");
    let doc = read("docs/exit-codes.md");
    let mut n = 0;
    for line in exit.lines() {
        if let Some(rest) = line.strip_prefix("pub const ") {
            let (name, value) = rest.split_once(": u8 = ").expect("pub const NAME: u8 = N;");
            let value = value.trim_end_matches(';');
            assert!(
                doc.contains(&format!("| {value} |")),
                "docs/exit-codes.md has no row for {name} = {value}"
            );
            n += 1;
        }
    }
    assert!(n >= 5, "read {n} exit codes from src/exit.rs");
}

#[test]
fn readme_links_every_document() {
    let readme = read("README.md");
    for doc in [
        "operator-guide.md",
        "configuration.md",
        "architecture.md",
        "exit-codes.md",
        "cli.md",
        "testbed.md",
    ] {
        assert!(
            readme.contains(&format!("(docs/{doc})")),
            "README.md does not link docs/{doc}"
        );
        assert!(Path::new(ROOT).join("docs").join(doc).is_file());
    }
}
