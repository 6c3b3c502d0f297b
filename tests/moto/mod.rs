//! A real AWS Secrets Manager API on loopback for the `sync` tests: moto's
//! `moto_server` (PyPI `moto[server]`), installed once by `tests/moto.sh`
//! into `target/moto-venv`, one server per test on a free port, killed on
//! drop. It never skips: if moto cannot be installed, the test fails.
//!
//! Secrets are created and changed with boto3 from the same venv (moto
//! depends on it), so the tests do not need the `aws` feature themselves.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The AWS environment every test run of credloader gets: moto accepts
/// any keys (unless auth is switched on); IMDS is never asked.
pub const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_SESSION_TOKEN", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    ),
];

pub const REGION: &str = "eu-west-1";

/// `target/moto-venv/bin/moto_server`, installing it on first use.
pub fn moto_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto.sh");
        let out = Command::new(&script)
            .arg("bin")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("moto: cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "moto: tests/moto.sh could not install moto[server] (this test needs it and never \
             skips): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

pub fn python_bin() -> PathBuf {
    moto_server_bin().with_file_name("python")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// `env` e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`: every request must carry
    /// keys moto's IAM knows (wrong-credentials tests).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let bin = moto_server_bin();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("moto: cannot start {}: {e}", bin.display()));
        let m = Moto {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto: not listening on {port} after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs boto3 `calls` (Python, with a client `c`) against this server.
    pub fn boto(&self, calls: &str) {
        boto(&self.url(), calls)
    }

    pub fn put(&self, id: &str, value: &str) {
        self.boto(&format!("put(c, {}, {})", py_str(id), py_str(value)));
    }

    pub fn delete(&self, id: &str) {
        self.boto(&format!(
            "c.delete_secret(SecretId={}, ForceDeleteWithoutRecovery=True)",
            py_str(id)
        ));
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Python string literal for `s` (JSON is valid Python for strings).
fn py_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Runs boto3 against `url` (inside a test bed too: pass the bed's exec).
pub fn boto(url: &str, calls: &str) {
    let mut child = Command::new(python_bin())
        .arg("-")
        .envs(AWS_ENV.iter().copied())
        .env("AWS_DEFAULT_REGION", REGION)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(boto_script(url, calls).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "boto3: {calls}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python that [`boto`] runs: `put` creates or updates a secret.
pub fn boto_script(url: &str, calls: &str) -> String {
    format!(
        r#"
import boto3
c = boto3.client("secretsmanager", endpoint_url={url}, region_name={region})
def put(c, name, value):
    try:
        c.put_secret_value(SecretId=name, SecretString=value)
    except c.exceptions.ResourceNotFoundException:
        c.create_secret(Name=name, SecretString=value)
{calls}
"#,
        url = py_str(url),
        region = py_str(REGION),
    )
}
