//! `credloader sync` on a real systemd (see docs/testbed.md), against moto
//! running INSIDE the bed on its own loopback (the bed has its own network
//! namespace; its root is an overlay of the host's, so the venv under
//! target/ is at the same path inside). The first sync runs as the shipped,
//! hardened credloader-sync.service; a changed secret then restarts only its
//! consumer; an unchanged sync restarts nothing; a stopped server exits 5.

// Needs the AWS client: `cargo test --features aws` (as `make test` runs it).
#![cfg(feature = "aws")]

mod moto;
#[path = "support/scene.rs"]
mod scene;
#[path = "support/testbed.rs"]
mod testbed;

use std::path::Path;
use std::time::Duration;

use scene::{text, Scene};

const CREDLOADER: &str = env!("CARGO_BIN_EXE_credloader");
const PORT: u16 = 5087;

/// The scene (see support/scene.rs) plus moto inside the bed.
struct Bed(Scene);

impl std::ops::Deref for Bed {
    type Target = Scene;
    fn deref(&self) -> &Scene {
        &self.0
    }
}

impl Bed {
    fn boot() -> Bed {
        let moto_server = moto::moto_server_bin();
        let bed = Scene::boot(
            Path::new(CREDLOADER),
            &["qt", "bot"],
            &[("alpha", "qt"), ("beta", "bot")],
        );
        // The bed has a tmpfs of its own on /tmp: a checkout under /tmp (and
        // so the moto venv in its target/) is not visible inside. Then copy
        // the venv in, at the same path so that its scripts still work.
        let server = moto_server.to_str().unwrap();
        if !bed.exec(&["test", "-x", server]).status.success() {
            let venv = moto_server.parent().and_then(Path::parent).unwrap();
            let dest = bed.path(venv.parent().unwrap().to_str().unwrap());
            std::fs::create_dir_all(&dest).unwrap();
            let copied = std::process::Command::new("cp")
                .arg("-a")
                .arg(venv)
                .arg(&dest)
                .status()
                .unwrap();
            assert!(copied.success(), "copying the moto venv into the bed");
        }
        bed.write(
            "/etc/quantum/credloader.d/services.toml",
            b"[services.alpha]\nunit = \"alpha.service\"\nuser = \"qt\"\ncredentials = [\"A_KEY\"]\n\
              [services.beta]\nunit = \"beta.service\"\nuser = \"bot\"\ncredentials = [\"B_KEY\"]\n",
            0o644,
        );
        bed.write(
            "/etc/quantum/credloader.d/00-sources.toml",
            format!(
                "[sources]\nenvironment = \"soak\"\nattempts = 2\ntimeout_sec = 5\n\
                 [sources.aws]\nregion = \"{}\"\nendpoint_url = \"http://127.0.0.1:{PORT}\"\n\
                 secret_id = \"mm-bot/{{environment}}/{{name}}\"\n",
                moto::REGION
            )
            .as_bytes(),
            0o644,
        );
        // The shipped unit, with the test's AWS keys (moto takes any).
        let env: String = moto::AWS_ENV
            .iter()
            .map(|(k, v)| format!("Environment={k}={v}\n"))
            .collect();
        bed.write(
            "/etc/systemd/system/credloader-sync.service.d/10-test.conf",
            format!("[Service]\n{env}").as_bytes(),
            0o644,
        );
        bed.daemon_reload();
        // moto on the bed's own loopback, as a transient unit.
        bed.systemctl_ok(&["reset-failed"]);
        let out = bed.exec(&[
            "systemd-run",
            "--unit=moto",
            "--collect",
            "--quiet",
            moto_server.to_str().unwrap(),
            "-H",
            "127.0.0.1",
            "-p",
            &PORT.to_string(),
        ]);
        assert!(out.status.success(), "moto in the bed: {}", text(&out));
        let b = Bed(bed);
        b.wait_until("moto listening in the bed", Duration::from_secs(30), || {
            b.exec(&["bash", "-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{PORT}")])
                .status
                .success()
        });
        b
    }

    /// boto3 inside the bed against the bed's moto.
    fn boto(&self, calls: &str) {
        let mut argv: Vec<String> = vec!["env".into()];
        argv.extend(moto::AWS_ENV.iter().map(|(k, v)| format!("{k}={v}")));
        argv.push(moto::python_bin().to_string_lossy().into_owned());
        argv.push("-".into());
        let script = moto::boto_script(&format!("http://127.0.0.1:{PORT}"), calls);
        let out = self.exec_with_stdin(&argv, script.as_bytes());
        assert!(out.status.success(), "boto3 in the bed: {}", text(&out));
    }

    fn put(&self, name: &str, value: &str) {
        self.boto(&format!("put(c, \"mm-bot/soak/{name}\", \"{value}\")"));
    }

    fn sync(&self, args: &[&str]) -> std::process::Output {
        let mut argv: Vec<String> = vec!["env".into()];
        argv.extend(moto::AWS_ENV.iter().map(|(k, v)| format!("{k}={v}")));
        argv.extend(["credloader", "sync"].map(String::from));
        argv.extend(args.iter().map(|s| s.to_string()));
        self.exec(&argv)
    }

    fn key(&self, unit: &str, var: &str) -> Option<Vec<u8>> {
        self.environ(unit).get(var).cloned()
    }
}

#[test]
fn sync_restarts_only_the_consumer_of_a_changed_secret() {
    let bed = Bed::boot();
    bed.put("A_KEY", "alpha-value-1");
    bed.put("B_KEY", "beta-value-1");

    // First sync: the hardened unit, over the network, seals everything.
    let out = bed.systemctl(&["start", "credloader-sync.service"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        bed.journal("credloader-sync.service")
    );
    assert_eq!(
        bed.unit_property("credloader-sync.service", "Result"),
        "success"
    );
    let journal = bed.journal("credloader-sync.service");
    assert!(!journal.contains("value-1"), "{journal}");
    for n in ["A_KEY", "B_KEY"] {
        let meta = std::fs::metadata(bed.path(&format!("/etc/quantum/creds/{n}.cred")))
            .unwrap_or_else(|e| panic!("{n}: {e}\n{journal}"));
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
    }
    bed.systemctl_ok(&["start", "alpha.service", "beta.service"]);
    assert_eq!(
        bed.key("alpha.service", "A_KEY").as_deref(),
        Some(&b"alpha-value-1"[..])
    );
    assert_eq!(
        bed.key("beta.service", "B_KEY").as_deref(),
        Some(&b"beta-value-1"[..])
    );
    let alpha0 = bed.main_pid("alpha.service").unwrap();
    let beta0 = bed.main_pid("beta.service").unwrap();

    // Nothing changed: the timer's run restarts nothing.
    bed.systemctl_ok(&["start", "credloader-sync.service"]);
    assert_eq!(bed.main_pid("alpha.service"), Some(alpha0));
    assert_eq!(bed.main_pid("beta.service"), Some(beta0));

    // B_KEY changes: only beta is restarted, and verified.
    bed.put("B_KEY", "beta-value-2");
    let out = bed.sync(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("value-2"), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        j["rotation"]["consumers"],
        serde_json::json!(["beta"]),
        "{j}"
    );
    assert_eq!(j["rotation"]["verified"], true, "{j}");
    let check = &j["rotation"]["verification"][0];
    assert!(
        check["unit_state"].as_str().unwrap().contains("restarted"),
        "{j}"
    );
    let beta1 = bed.main_pid("beta.service").unwrap();
    assert_ne!(beta1, beta0, "beta restarted");
    assert_eq!(
        bed.key("beta.service", "B_KEY").as_deref(),
        Some(&b"beta-value-2"[..])
    );
    assert_eq!(
        bed.main_pid("alpha.service"),
        Some(alpha0),
        "alpha untouched"
    );

    // The server goes away: exit 5 from the unit too, nothing changes.
    bed.systemctl_ok(&["stop", "moto.service"]);
    let out = bed.sync(&[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let out = bed.systemctl(&["start", "credloader-sync.service"]);
    assert!(!out.status.success());
    assert_eq!(
        bed.unit_property("credloader-sync.service", "ExecMainStatus"),
        "5"
    );
    assert_eq!(bed.main_pid("alpha.service"), Some(alpha0));
    assert_eq!(bed.main_pid("beta.service"), Some(beta1));
    assert_eq!(
        bed.key("beta.service", "B_KEY").as_deref(),
        Some(&b"beta-value-2"[..])
    );

    // The timer is valid and schedulable.
    bed.systemctl_ok(&["start", "credloader-sync.timer"]);
    assert_eq!(
        bed.unit_property("credloader-sync.timer", "ActiveState"),
        "active"
    );
}
