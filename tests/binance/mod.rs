//! A Binance REST API on loopback (`tests/binance/fake_binance.py`) that
//! checks the HMAC signature of each request, and the keys it knows, for
//! the tests of `health-checks/binance-key-check`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A key Binance knows, with reading and spot trading, from any IP.
pub const GOOD_KEY: &str = "GoodKey0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";
pub const GOOD_SECRET: &str = "GoodSecretZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvutsrqponmlkj";
/// A second good key (a rotation's new value).
pub const NEXT_KEY: &str = "NextKey0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";
/// Known, but only from an IP that is not this host's.
pub const FENCED_KEY: &str = "FencedKey23456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";
/// Known, reading only.
pub const READER_KEY: &str = "ReaderKey23456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";
/// Well formed, unknown to Binance.
pub const UNKNOWN_KEY: &str = "UnknownKey3456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";

/// KEYS.json for the server: every known key shares GOOD_SECRET.
pub fn keys_json() -> String {
    let entry = |ip_allowed: bool, spot: bool| {
        serde_json::json!({
            "secret": GOOD_SECRET,
            "ip_allowed": ip_allowed,
            "ip_restrict": !ip_allowed,
            "restrictions": {
                "enableReading": true,
                "enableSpotAndMarginTrading": spot,
                "enableFutures": false,
                "enableWithdrawals": false,
            },
        })
    };
    serde_json::json!({
        GOOD_KEY: entry(true, true),
        NEXT_KEY: entry(true, true),
        FENCED_KEY: entry(false, true),
        READER_KEY: entry(true, false),
    })
    .to_string()
}

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The check as shipped.
pub fn check_script() -> PathBuf {
    repo("health-checks/binance-key-check")
}

pub fn server_script() -> PathBuf {
    repo("tests/binance/fake_binance.py")
}

/// The server on a free port of 127.0.0.1, killed on drop.
pub struct FakeBinance {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl FakeBinance {
    pub fn start() -> FakeBinance {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.json");
        std::fs::write(&keys, keys_json()).unwrap();
        let mut child = Command::new("/usr/bin/python3")
            .arg(server_script())
            .arg(&keys)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fake Binance");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("fake Binance did not start: {line:?}"));
        FakeBinance {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeBinance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
