//! Shell completion: the scripts `credloader completions SHELL` prints ask
//! credloader for names at each TAB, and it offers the credential names
//! (sealed or configured) and the service names of this host, as bash
//! itself sees them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_credloader");

/// A configuration with two services and a creds dir with an extra,
/// unconfigured credential.
fn host(dir: &Path) -> std::path::PathBuf {
    let creds = dir.join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(creds.join("KRAKEN_API_KEY.cred"), b"sealed").unwrap();
    std::fs::write(creds.join(".BINANCE_API_KEY.cred.tmp"), b"half").unwrap();
    let config = dir.join("credloader.toml");
    std::fs::write(
        &config,
        format!(
            "[loader]\ncreds_dir = \"{}\"\n\n\
             [services.position-monitor]\nunit = \"quantum-position-monitor.service\"\nuser = \"root\"\n\
             credentials = [\"BINANCE_API_KEY\", \"BINANCE_API_SECRET\"]\n\n\
             [services.order-router]\nunit = \"quantum-order-router.service\"\nuser = \"root\"\n\
             credentials = [\"KRAKEN_API_KEY\"]\n",
            creds.display()
        ),
    )
    .unwrap();
    config
}

/// What bash's completion function offers for `words` (the last is the
/// one being completed).
fn complete(config: &Path, words: &[&str]) -> Vec<String> {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let line = words.join(" ");
    let script = format!(
        "source <(credloader completions bash)\n\
         COMP_WORDS=({line}); COMP_CWORD={}\n\
         _clap_complete_credloader credloader '{}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("CREDLOADER_CONFIG", config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.trim_end().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn completion_offers_this_hosts_credential_and_service_names() {
    let dir = tempfile::tempdir().unwrap();
    let config = host(dir.path());
    assert_eq!(
        complete(&config, &["credloader", "rotate", "B"]),
        ["BINANCE_API_KEY", "BINANCE_API_SECRET"]
    );
    // Sealed but not configured, and configured: both; never a temp file.
    let names =
        |v: Vec<String>| -> Vec<String> { v.into_iter().filter(|w| !w.starts_with('-')).collect() };
    assert_eq!(
        names(complete(&config, &["credloader", "show", ""])),
        ["BINANCE_API_KEY", "BINANCE_API_SECRET", "KRAKEN_API_KEY"]
    );
    assert_eq!(
        complete(&config, &["credloader", "generations", "K"]),
        ["KRAKEN_API_KEY"]
    );
    assert_eq!(
        complete(&config, &["credloader", "status", "--service", "o"]),
        ["order-router"]
    );
    assert_eq!(
        names(complete(&config, &["credloader", "apply", "--service", ""])),
        ["order-router", "position-monitor"]
    );
    // Commands and option values as before.
    assert_eq!(
        complete(&config, &["credloader", "ro"]),
        ["rollback", "rotate"]
    );
    assert!(
        complete(&config, &["credloader", "seal", "X", "--key", ""]).contains(&"tpm2".to_string())
    );
    // zsh and fish get scripts that ask the same way.
    for shell in ["zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains(&format!("COMPLETE=\"{shell}\""))
                || script.contains(&format!("COMPLETE={shell}")),
            "{script}"
        );
    }
}
