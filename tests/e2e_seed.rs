//! The seed host on a real systemd (see docs/testbed.md): its layout made
//! exactly as the manual procedure made it (`echo KEY > f`, `systemd-creds
//! encrypt` without `--name`, the env file written with `$(cat ...)` of the
//! decrypted file, the `EnvironmentFile=-` drop-in, the unit running as
//! `qt`), its consumer started the manual way and its environment recorded.
//! Then each way onto credloader (import; a plain config over the old
//! files; `echo KEY | credloader rotate`) must leave the consumer with
//! exactly those bytes (or the new key, without echo's newline).

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
const PLAIN: &str = "/etc/quantum/position-monitor-secrets/binance.env";
const LEGACY_DROPIN: &str =
    "/etc/systemd/system/quantum-position-monitor.service.d/credentials.conf";
const VARS: [&str; 3] = [
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "EXIT_BRAIN_V35_ENABLED",
];

/// The manual procedure, per key, as it was run on the seed host.
const MANUAL: &str = r#"set -e
mkdir -p /etc/quantum/creds /etc/quantum/position-monitor-secrets
echo "k-seed-0123456789abcdef" > /root/.tmp_key
systemd-creds encrypt /root/.tmp_key /etc/quantum/creds/BINANCE_API_KEY.cred
echo "s-seed-fedcba9876543210" > /root/.tmp_key
systemd-creds encrypt /root/.tmp_key /etc/quantum/creds/BINANCE_API_SECRET.cred
rm /root/.tmp_key
systemd-creds decrypt /etc/quantum/creds/BINANCE_API_KEY.cred > /tmp/k
systemd-creds decrypt /etc/quantum/creds/BINANCE_API_SECRET.cred > /tmp/s
cat > /etc/quantum/position-monitor-secrets/binance.env <<EOF
BINANCE_API_KEY=$(cat /tmp/k)
BINANCE_API_SECRET=$(cat /tmp/s)
EXIT_BRAIN_V35_ENABLED=true
EOF
rm /tmp/k /tmp/s
mkdir -p /etc/systemd/system/quantum-position-monitor.service.d
cat > /etc/systemd/system/quantum-position-monitor.service.d/credentials.conf <<EOF
[Service]
EnvironmentFile=-/etc/quantum/position-monitor-secrets/binance.env
EOF
systemctl daemon-reload
systemctl restart quantum-position-monitor.service
"#;

/// A bed with the seed host's layout, its consumer started the manual way;
/// and the consumer's variables as the manual procedure gave them.
fn seed() -> (Scene, BTreeMap<String, Vec<u8>>) {
    let bed = Scene::boot(
        Path::new(CREDLOADER),
        &["qt"],
        &[("quantum-position-monitor", "qt")],
    );
    bed.sh_ok(MANUAL);
    // What the hand-sealed files hold: the key plus echo's newline.
    let sealed = bed
        .sh_ok("systemd-creds decrypt /etc/quantum/creds/BINANCE_API_KEY.cred - | od -c | head -3");
    assert!(sealed.contains("\\n"), "{sealed}");
    let manual = vars(&bed);
    assert_eq!(manual["BINANCE_API_KEY"], b"k-seed-0123456789abcdef");
    assert_eq!(manual["BINANCE_API_SECRET"], b"s-seed-fedcba9876543210");
    assert_eq!(manual["EXIT_BRAIN_V35_ENABLED"], b"true");
    (bed, manual)
}

/// The consumer's variables of interest, from `/proc/PID/environ`.
fn vars(bed: &Scene) -> BTreeMap<String, Vec<u8>> {
    let env = bed.environ(UNIT);
    VARS.iter()
        .map(|v| (v.to_string(), env.get(*v).cloned().unwrap_or_default()))
        .collect()
}

/// Waits for the consumer to run with a new main process.
fn restarted(bed: &Scene, before: u32) {
    bed.wait_until("the consumer to restart", Duration::from_secs(15), || {
        bed.active(UNIT) && bed.main_pid(UNIT).is_some_and(|p| p != before)
    });
}

/// `echo KEY | credloader rotate BINANCE_API_KEY`: the consumer gets the
/// key without echo's newline, and the output says so.
fn rotate_with_echo(bed: &Scene, manual: &BTreeMap<String, Vec<u8>>) {
    let before = bed.main_pid(UNIT).expect("runs");
    let out = bed.credloader(
        &["rotate", "BINANCE_API_KEY"],
        Some(b"k-rotated-0011223344556677\n"),
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(
            "BINANCE_API_KEY: removed the trailing newline of the input (echo adds one); \
             the service receives 26 bytes."
        ),
        "{said}"
    );
    assert!(said.contains("every consumer verified"), "{said}");
    assert!(!said.contains("0011223344"), "{said}");
    restarted(bed, before);
    let now = vars(bed);
    assert_eq!(now["BINANCE_API_KEY"], b"k-rotated-0011223344556677");
    assert_eq!(now["BINANCE_API_SECRET"], manual["BINANCE_API_SECRET"]);
    assert_eq!(
        now["EXIT_BRAIN_V35_ENABLED"],
        manual["EXIT_BRAIN_V35_ENABLED"]
    );
}

#[test]
fn import_of_the_seed_layout_gives_the_consumer_what_the_manual_procedure_did() {
    let (bed, manual) = seed();
    let before = bed.main_pid(UNIT).expect("runs");
    // The issue's command, as a new user types it.
    let import = [
        "import",
        "--env-file",
        PLAIN,
        "--unit",
        UNIT,
        "--secret",
        "BINANCE_API_KEY",
        "--secret",
        "BINANCE_API_SECRET",
        "--static",
        "EXIT_BRAIN_V35_ENABLED",
    ];
    let dry = bed.credloader(&[&import[..], &["--dry-run"]].concat(), None);
    assert!(dry.status.success(), "{}", text(&dry));
    let out = bed.credloader(&import, None);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("without the trailing newline"), "{said}");
    assert!(said.contains("as optional (EnvironmentFile=-)"), "{said}");
    assert!(!said.contains("0123456789") && !said.contains("9876543210"));
    restarted(&bed, before);
    // Byte for byte what the manual procedure gave, from credloader's file
    // alone: the plaintext and the legacy drop-in are gone.
    assert_eq!(vars(&bed), manual);
    assert!(bed.read(PLAIN).is_none() && bed.read(LEGACY_DROPIN).is_none());
    let files = bed.unit_property(UNIT, "EnvironmentFiles");
    assert!(
        files.contains("/run/credloader/quantum-position-monitor.env") && !files.contains(PLAIN),
        "{files}"
    );
    let check = bed.credloader(&["check"], None);
    assert!(check.status.success(), "{}", text(&check));

    rotate_with_echo(&bed, &manual);
}

#[test]
fn a_plain_config_over_the_hand_sealed_files_gives_the_consumer_what_the_manual_procedure_did() {
    let (bed, manual) = seed();
    bed.config(
        "position-monitor",
        "[services.position-monitor]\nunit = \"quantum-position-monitor.service\"\nuser = \"qt\"\n\
         credentials = [\"BINANCE_API_KEY\", \"BINANCE_API_SECRET\"]\n\
         static = { EXIT_BRAIN_V35_ENABLED = \"true\" }\n",
    );
    let out = bed.credloader(&["apply"], None);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for k in ["BINANCE_API_KEY", "BINANCE_API_SECRET"] {
        assert!(
            said.contains(&format!(
                "credential {k}: its sealed value ends in a newline (as `echo` adds), which \
                 position-monitor receives without"
            )),
            "{said}"
        );
    }
    // The operator moves off the plaintext by hand: credloader's file alone.
    bed.sh_ok(&format!(
        "rm {LEGACY_DROPIN} {PLAIN} && systemctl daemon-reload"
    ));
    bed.systemctl_ok(&["restart", UNIT]);
    assert_eq!(vars(&bed), manual);
    let env = bed.read("/run/credloader/position-monitor.env").unwrap();
    assert!(
        testbed::lossy(&env).contains("BINANCE_API_KEY=\"k-seed-0123456789abcdef\"\n"),
        "{}",
        testbed::lossy(&env)
    );
    // check reports the hand-sealed newlines every time, with the fix.
    let check = text(&bed.credloader(&["check"], None));
    assert!(
        check.contains("its sealed value ends in a newline")
            && check.contains("credloader rotate BINANCE_API_SECRET"),
        "{check}"
    );

    rotate_with_echo(&bed, &manual);
}
