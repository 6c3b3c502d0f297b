//! A system image in a temp dir for `credloader --root` tests: accounts, a
//! creds dir, config drop-ins, and a throwaway credential secret that the
//! real `systemd-creds` seals and decrypts with (never the host's secret).
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const QT_UID: u32 = 1500;
pub const BOT_UID: u32 = 1600;

pub struct Tree {
    root: tempfile::TempDir,
    secret_dir: tempfile::TempDir,
}

/// The result of one credloader run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together, for "never shows X" assertions.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "credloader failed: {self:#?}");
        self
    }
}

impl Tree {
    pub fn new() -> Tree {
        let root = tempfile::tempdir().unwrap();
        let secret_dir = tempfile::tempdir().unwrap();
        let t = Tree { root, secret_dir };
        t.write("/etc/passwd", b"root:x:0:0::/root:/bin/sh\nqt:x:1500:1500::/home/qt:/bin/sh\nbot:x:1600:1600::/home/bot:/bin/sh\n", 0o644);
        t.write(
            "/etc/group",
            b"root:x:0:\nqt:x:1500:\nbot:x:1600:\ntrading:x:1700:qt\n",
            0o644,
        );
        t.mkdir("/etc/quantum/creds", 0o700);
        t.mkdir("/etc/quantum/credloader.d", 0o755);
        // As the package ships it.
        t.write(
            "/etc/quantum/credloader.toml",
            b"# credloader main configuration (all defaults)\n",
            0o644,
        );
        let out = Command::new("systemd-creds")
            .arg("setup")
            .env("SYSTEMD_CREDENTIAL_SECRET", t.secret())
            .output()
            .expect("systemd-creds is installed");
        assert!(out.status.success(), "systemd-creds setup: {out:?}");
        t
    }

    /// The throwaway host secret every seal and decrypt here uses.
    pub fn secret(&self) -> PathBuf {
        self.secret_dir.path().join("credential.secret")
    }

    /// The image's root directory on the host.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `credloader ARGS` as a message suggests it for this image: with
    /// `--root` (see src/hint.rs).
    pub fn cmd(&self, args: &str) -> String {
        format!("credloader --root {} {args}", self.root().display())
    }

    /// Host path of the system path `p`.
    pub fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p.trim_start_matches('/'))
    }

    pub fn mkdir(&self, p: &str, mode: u32) {
        let path = self.path(p);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn write(&self, p: &str, contents: &[u8], mode: u32) {
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn read(&self, p: &str) -> Vec<u8> {
        std::fs::read(self.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    pub fn read_string(&self, p: &str) -> String {
        String::from_utf8(self.read(p)).unwrap()
    }

    pub fn exists(&self, p: &str) -> bool {
        self.path(p).symlink_metadata().is_ok()
    }

    /// (uid, gid, mode & 0o7777)
    pub fn owner_mode(&self, p: &str) -> (u32, u32, u32) {
        let m = std::fs::symlink_metadata(self.path(p)).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    }

    /// A config drop-in `/etc/quantum/credloader.d/NAME`.
    pub fn config(&self, name: &str, text: &str) {
        self.write(
            &format!("/etc/quantum/credloader.d/{name}"),
            text.as_bytes(),
            0o644,
        );
    }

    /// Seals `value` as `NAME.cred` with the embedded name set, root 0600.
    pub fn seal(&self, name: &str, value: &[u8]) {
        self.seal_as(name, &format!("--name={name}"), value);
    }

    /// Seals like the legacy manual procedure: no `--name`, so the embedded
    /// name is the output file's name, `NAME.cred`.
    pub fn seal_legacy(&self, name: &str, value: &[u8]) {
        self.seal_as(name, &format!("--name={name}.cred"), value);
    }

    fn seal_as(&self, name: &str, name_arg: &str, value: &[u8]) {
        let dest = self.path(&format!("/etc/quantum/creds/{name}.cred"));
        let sealed = self.encrypt(&[name_arg, "--with-key=host"], value);
        std::fs::write(&dest, sealed).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// The sealed bytes of `value`, from the real `systemd-creds encrypt`
    /// with this tree's throwaway key; `args` are its options
    /// (`--name=...`, `--with-key=...`).
    pub fn encrypt(&self, args: &[&str], value: &[u8]) -> Vec<u8> {
        let mut child = Command::new("systemd-creds")
            .arg("encrypt")
            .args(args)
            .args(["-", "-"])
            .env("SYSTEMD_CREDENTIAL_SECRET", self.secret())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(value).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "systemd-creds encrypt {args:?}: {out:?}"
        );
        out.stdout
    }

    /// `credloader --root <tree> ARGS`, not started: this tree's throwaway
    /// key, no handed-over credentials, no config override. stdio is the
    /// caller's to set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_credloader"));
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .env("SYSTEMD_CREDENTIAL_SECRET", self.secret())
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("CREDLOADER_CONFIG");
        cmd
    }

    /// Starts credloader with `stdin` written and closed (it may refuse and
    /// exit before reading it), its output piped.
    pub fn spawn(&self, args: &[&str], stdin: Option<&[u8]>) -> std::process::Child {
        let mut child = self
            .command(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            match child.stdin.take().unwrap().write_all(input) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.unwrap(),
            }
        }
        child
    }

    /// Runs `credloader --root <tree> ARGS`.
    pub fn credloader(&self, args: &[&str]) -> Run {
        self.credloader_with_stdin(args, None)
    }

    pub fn credloader_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let out = self.spawn(args, stdin).wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A typical service definition for tests.
pub fn service(name: &str, user: &str, creds: &[&str]) -> String {
    let list: Vec<String> = creds.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "[services.{name}]\nunit = \"{name}.service\"\nuser = \"{user}\"\ncredentials = [{}]\n",
        list.join(", ")
    )
}

/// A small deterministic generator (xorshift64*) for randomized tests: a
/// seed replays a run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Mostly one of the first `typed` items, sometimes any.
    pub fn pick_typed<'a>(&mut self, items: &'a [&'a str], typed: usize) -> &'a str {
        if self.chance(8) {
            items[self.below(items.len())]
        } else {
            items[self.below(typed)]
        }
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}
