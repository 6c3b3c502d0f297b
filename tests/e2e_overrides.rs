//! Who wins over credloader's env file, on a real systemd (see
//! docs/testbed.md): the consumer's actual environment
//! (`/proc/MAINPID/environ`) is compared with what credloader says of each
//! setting: a file loaded after credloader's wins, one loaded before does
//! not, `Environment=` never does, `UnsetEnvironment=` removes, an empty
//! `EnvironmentFile=` drops credloader's file, and a missing file wins once
//! it exists. apply, status and check say so; rotate does not verify such a
//! consumer (exit 4) until the line is gone.

#[path = "support/scene.rs"]
mod scene;
#[path = "support/testbed.rs"]
mod testbed;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use scene::{text, Scene};

const CREDLOADER: &str = env!("CARGO_BIN_EXE_credloader");
const UNIT: &str = "quantum-position-monitor.service";
const D: &str = "/etc/systemd/system/quantum-position-monitor.service.d";
const LEGACY: &str = "/etc/quantum/position-monitor-secrets/binance.env";

/// What credloader delivers: two sealed keys and five statics.
const OURS: &[(&str, &str)] = &[
    ("BINANCE_API_KEY", "new-key-1"),
    ("BINANCE_API_SECRET", "new-secret-1"),
    ("EXIT_BRAIN_V35_ENABLED", "yes"),
    ("A_FRAGMENT", "ours"),
    ("A_EARLY", "ours"),
    ("A_ENV", "ours"),
    ("A_UNSET", "ours"),
    ("A_LATER", "ours"),
];

fn setup(bed: &Scene) {
    bed.write(
        &format!("/etc/systemd/system/{UNIT}"),
        b"[Unit]\nDescription=position monitor\n[Service]\nUser=qt\nExecStart=/bin/sleep infinity\n\
          EnvironmentFile=-/etc/e2e/fragment.env\n",
        0o644,
    );
    // The seed host's layout: the operator's drop-in and plaintext file.
    bed.write(
        &format!("{D}/credentials.conf"),
        format!("[Service]\nEnvironmentFile=-{LEGACY}\n").as_bytes(),
        0o644,
    );
    bed.write(
        LEGACY,
        b"BINANCE_API_KEY=legacy-key\nBINANCE_API_SECRET=legacy-secret\nEXIT_BRAIN_V35_ENABLED=true\n",
        0o600,
    );
    bed.write("/etc/e2e/fragment.env", b"A_FRAGMENT=fragment\n", 0o644);
    bed.write("/etc/e2e/early.env", b"A_EARLY=early\n", 0o644);
    bed.write(
        &format!("{D}/10-early.conf"),
        b"[Service]\nEnvironmentFile=/etc/e2e/early.env\n",
        0o644,
    );
    bed.write(
        &format!("{D}/60-env.conf"),
        b"[Service]\nEnvironment=A_ENV=environment\n",
        0o644,
    );
    bed.write(
        &format!("{D}/70-unset.conf"),
        b"[Service]\nUnsetEnvironment=A_UNSET\n",
        0o644,
    );
    bed.write(
        &format!("{D}/80-later.conf"),
        b"[Service]\nEnvironmentFile=-/etc/e2e/later.env\n",
        0o644,
    );
    let statics: Vec<String> = OURS[2..]
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\""))
        .collect();
    bed.config(
        "position-monitor",
        &format!(
            "[services.position-monitor]\nunit = \"{UNIT}\"\nuser = \"qt\"\n\
             credentials = [\"BINANCE_API_KEY\", \"BINANCE_API_SECRET\"]\nstatic = {{ {} }}\n",
            statics.join(", ")
        ),
    );
    for (name, value) in &OURS[..2] {
        let out = bed.credloader(&["seal", name, "--key", "host"], Some(value.as_bytes()));
        assert!(out.status.success(), "seal {name}: {}", text(&out));
    }
}

/// The managed variables whose value in the running service is not
/// credloader's (absent ones included).
fn not_ours(bed: &Scene, ours: &BTreeMap<&str, &str>) -> Vec<String> {
    let env = environ(bed);
    ours.iter()
        .filter(|(k, v)| env.get(**k).map(Vec::as_slice) != Some(v.as_bytes()))
        .map(|(k, _)| k.to_string())
        .collect()
}

/// The managed variables `status` says are taken away (blocking entries),
/// and the full entries.
fn reported(bed: &Scene) -> (Vec<String>, serde_json::Value) {
    let out = bed.credloader(&["status", "--json", "--service", "position-monitor"], None);
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let over = j["services"][0]["overridden"].clone();
    let blocking: Vec<&str> = over
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["blocks"] == true)
        .map(|o| o["problem"].as_str().unwrap())
        .collect();
    let mut vars: Vec<String> = OURS
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| {
            blocking.iter().any(|p| {
                p.contains("does not load")
                    || p.split(": ")
                        .any(|part| part.split([' ', ',']).any(|w| w == k))
            })
        })
        .collect();
    vars.sort();
    (vars, over)
}

fn restart(bed: &Scene) {
    bed.systemctl_ok(&["restart", UNIT]);
}

/// The service's environment, once its main process has exec'd (right
/// after a (re)start, `/proc/MAINPID/environ` may still be PID 1's, copied
/// at fork; systemd gives every service an INVOCATION_ID).
fn environ(bed: &Scene) -> BTreeMap<String, Vec<u8>> {
    bed.wait_until(
        "the service's own environment",
        Duration::from_secs(10),
        || bed.main_pid(UNIT).is_some() && bed.environ(UNIT).contains_key("INVOCATION_ID"),
    );
    bed.environ(UNIT)
}

#[test]
fn what_wins_over_the_env_file_in_the_real_environment_is_what_credloader_reports() {
    let bed = Scene::boot(Path::new(CREDLOADER), &["qt"], &[]);
    setup(&bed);
    let ours: BTreeMap<&str, &str> = OURS.iter().copied().collect();

    let out = bed.credloader(&["apply"], None);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    for part in [
        "credentials.conf:2 loads EnvironmentFile=/etc/quantum/position-monitor-secrets/binance.env",
        "it sets BINANCE_API_KEY, BINANCE_API_SECRET, EXIT_BRAIN_V35_ENABLED",
        "70-unset.conf:2 has UnsetEnvironment=A_UNSET",
        "80-later.conf:2 loads EnvironmentFile=/etc/e2e/later.env",
    ] {
        assert!(said.contains(part), "{part}\n{said}");
    }
    assert!(
        !said.contains("legacy-key") && !said.contains("legacy-secret"),
        "{said}"
    );
    restart(&bed);

    // The real environment: the legacy file won its three, UnsetEnvironment=
    // removed one; the fragment's and an earlier drop-in's file, and
    // Environment=, lost to credloader's file; the missing file set nothing.
    let env = environ(&bed);
    assert_eq!(
        env.get("BINANCE_API_KEY").map(Vec::as_slice),
        Some(&b"legacy-key"[..])
    );
    assert_eq!(
        env.get("EXIT_BRAIN_V35_ENABLED").map(Vec::as_slice),
        Some(&b"true"[..])
    );
    assert_eq!(env.get("A_UNSET"), None);
    let lost = [
        "A_UNSET",
        "BINANCE_API_KEY",
        "BINANCE_API_SECRET",
        "EXIT_BRAIN_V35_ENABLED",
    ];
    assert_eq!(not_ours(&bed, &ours), lost);
    let (vars, over) = reported(&bed);
    assert_eq!(
        vars,
        not_ours(&bed, &ours),
        "credloader reports exactly what lost: {over:#}"
    );
    let check = bed.credloader(&["check"], None);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("credentials.conf:2"),
        "{}",
        text(&check)
    );

    // rotate does not count the consumer verified: the legacy file keeps
    // the old key in it. Rolled back, exit 4, the file named.
    let out = bed.credloader(&["rotate", "BINANCE_API_KEY"], Some(b"new-key-2"));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("credentials.conf:2") && text(&out).contains("=> FAILED"),
        "{}",
        text(&out)
    );
    assert_eq!(
        environ(&bed).get("BINANCE_API_KEY").map(Vec::as_slice),
        Some(&b"legacy-key"[..])
    );

    // The drop-in removed but systemd not reloaded: PID 1 still loads the
    // legacy file, and credloader (asking systemd) still says so.
    bed.sh_ok(&format!("rm {D}/credentials.conf"));
    restart(&bed);
    assert_eq!(
        environ(&bed).get("BINANCE_API_KEY").map(Vec::as_slice),
        Some(&b"legacy-key"[..])
    );
    let (vars, over) = reported(&bed);
    assert!(vars.contains(&"BINANCE_API_KEY".to_string()), "{over:#}");
    assert!(
        over.to_string().contains("systemctl daemon-reload"),
        "{over:#}"
    );
    bed.daemon_reload();
    let out = bed.credloader(&["rotate", "BINANCE_API_KEY"], Some(b"new-key-2"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut ours = ours.clone();
    ours.insert("BINANCE_API_KEY", "new-key-2");
    assert_eq!(not_ours(&bed, &ours), ["A_UNSET"]);
    assert_eq!(reported(&bed).0, ["A_UNSET"]);

    // A file that did not exist wins once it does.
    bed.write("/etc/e2e/later.env", b"A_LATER=later\n", 0o644);
    restart(&bed);
    assert_eq!(not_ours(&bed, &ours), ["A_LATER", "A_UNSET"]);
    assert_eq!(reported(&bed).0, ["A_LATER", "A_UNSET"]);

    // An empty EnvironmentFile= after credloader's drop-in drops its file.
    bed.sh_ok(&format!("rm {D}/70-unset.conf {D}/80-later.conf"));
    bed.write(
        &format!("{D}/90-reset.conf"),
        b"[Service]\nEnvironmentFile=\n",
        0o644,
    );
    bed.daemon_reload();
    restart(&bed);
    let (vars, over) = reported(&bed);
    assert!(
        over.to_string()
            .contains("90-reset.conf:2 empties EnvironmentFile="),
        "{over:#}"
    );
    assert_eq!(vars, not_ours(&bed, &ours), "{over:#}");
    assert_eq!(environ(&bed).get("BINANCE_API_KEY"), None);
}
