//! A test bed set up for credloader, as a host would be after the package is
//! installed: a throwaway credential secret (made here with `systemd-creds
//! setup`, never the host's), D-Bus as on every real host (so credloader can
//! ask PID 1 to decrypt in bulk), the binary and `units/` installed, the
//! `/etc/quantum` layout, the given users, and consumer units that just
//! sleep. Include it next to the bed:
//!
//! ```ignore
//! #[path = "support/testbed.rs"]
//! mod testbed;
//! #[path = "support/scene.rs"]
//! mod scene;
//! ```
#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

use crate::testbed::{self, TestBed};

pub struct Scene {
    bed: TestBed,
    _secret_dir: tempfile::TempDir,
}

impl std::ops::Deref for Scene {
    type Target = TestBed;
    fn deref(&self) -> &TestBed {
        &self.bed
    }
}

impl Scene {
    /// Boots a bed with credloader installed, `users` created, and one
    /// `UNIT.service` per `(unit, user)` in `consumers` (`ExecStart=sleep`,
    /// `WantedBy=e2e.target`, a target the tests start like a boot would).
    pub fn boot(credloader: &Path, users: &[&str], consumers: &[(&str, &str)]) -> Scene {
        let (secret_dir, secret) = testbed::throwaway_secret();
        let bed = TestBed::builder()
            .credential_secret(&secret)
            .unmask("dbus.socket")
            .unmask("dbus.service")
            .boot();
        bed.install_credloader(credloader);
        for user in users {
            bed.add_user(user);
        }
        bed.sh_ok(
            "install -d -m 0700 /etc/quantum/creds && install -d -m 0755 /etc/quantum/credloader.d",
        );
        // As the package ships it. Without the main file, systemd 252's path
        // unit watches /etc/quantum instead and loses a rename into creds/
        // that comes from /etc/quantum (it re-creates its watches on the event).
        bed.write(
            "/etc/quantum/credloader.toml",
            b"# Services are configured in credloader.d/.\n",
            0o644,
        );
        bed.write(
            "/etc/systemd/system/e2e.target",
            b"[Unit]\nDescription=e2e services\n",
            0o644,
        );
        for (unit, user) in consumers {
            let text = format!(
                "[Unit]\nDescription=consumer {unit}\n[Service]\nUser={user}\nExecStart=/bin/sleep infinity\n\
                 [Install]\nWantedBy=e2e.target\n"
            );
            bed.write(
                &format!("/etc/systemd/system/{unit}.service"),
                text.as_bytes(),
                0o644,
            );
        }
        bed.daemon_reload();
        Scene {
            bed,
            _secret_dir: secret_dir,
        }
    }

    /// The host file that is the bed's `/var/lib/systemd/credential.secret`:
    /// `SYSTEMD_CREDENTIAL_SECRET` for `systemd-creds` run on the host (the
    /// bed shares the host's machine id, to which the key is bound).
    pub fn secret(&self) -> std::path::PathBuf {
        self._secret_dir.path().join("credential.secret")
    }

    /// Seals `value` inside the bed with the real systemd-creds and renames it
    /// into place from a temp name in the creds dir (as `credloader seal` does).
    pub fn seal(&self, name: &str, value: &[u8]) {
        let out = self.exec_with_stdin(
            &[
                "systemd-creds",
                "encrypt",
                &format!("--name={name}"),
                "--with-key=host",
                "-",
                "-",
            ],
            value,
        );
        assert!(out.status.success(), "seal {name}: {out:?}");
        self.write(
            &format!("/etc/quantum/creds/.{name}.staging"),
            &out.stdout,
            0o600,
        );
        self.sh_ok(&format!(
            "mv /etc/quantum/creds/.{name}.staging /etc/quantum/creds/{name}.cred"
        ));
    }

    /// Writes `/etc/quantum/credloader.d/NAME.toml`.
    pub fn config(&self, name: &str, text: &str) {
        self.write(
            &format!("/etc/quantum/credloader.d/{name}.toml"),
            text.as_bytes(),
            0o644,
        );
    }

    /// Runs `credloader ARGS` inside the bed, with `stdin` if given.
    pub fn credloader(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut argv = vec!["credloader"];
        argv.extend_from_slice(args);
        match stdin {
            Some(s) => self.exec_with_stdin(&argv, s),
            None => self.exec(&argv),
        }
    }

    pub fn active(&self, unit: &str) -> bool {
        self.unit_property(unit, "ActiveState") == "active"
    }

    /// A monotonic timestamp property of a unit, in microseconds.
    pub fn monotonic(&self, unit: &str, prop: &str) -> u64 {
        self.unit_property(unit, prop)
            .parse()
            .unwrap_or_else(|_| panic!("{unit} {prop}"))
    }
}

/// stdout and stderr of a command, for messages and assertions.
pub fn text(o: &Output) -> String {
    format!("{}{}", testbed::lossy(&o.stdout), testbed::lossy(&o.stderr))
}
