//! `make bench`: credloader against the manual procedure, on a real systemd.
//!
//! For each fleet size it boots a test bed (PID 1 in throwaway namespaces,
//! with D-Bus like a real host), seals the credentials, starts one consumer
//! per service, and measures *inside the bed* (so no nsenter cost is counted):
//!
//! 1. the manual procedure as a shell loop — the baseline;
//! 2. the boot path: `systemctl start credloader.service` with /run wiped;
//! 3. the CLI path: `credloader apply` outside a unit, /run wiped;
//! 4. a no-op re-apply: wall time, files written, reloads, restarts;
//! 5. one rotated credential: what was decrypted, written and restarted,
//!    and the time from the `.cred` landing to its consumer running with it;
//! 6. peak RSS of a full apply.
//!
//! Prints each figure with its ratio to the baseline and writes
//! target/bench/fleet.json. Sizes: CREDLOADER_BENCH_FLEETS="200x50,10x5,...".

#[path = "../tests/support/testbed.rs"]
mod testbed;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use testbed::TestBed;

const CREDLOADER: &str = env!("CARGO_BIN_EXE_credloader");
const REPEAT: usize = 5;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and runs this too: do nothing there.
        eprintln!("fleet: a benchmark; run it with `make bench`");
        return;
    }
    let fleets = std::env::var("CREDLOADER_BENCH_FLEETS")
        .unwrap_or_else(|_| "200x50,10x5,100x25,1000x250".into());
    let mut results = Vec::new();
    for spec in fleets.split(',') {
        let (c, s) = spec.split_once('x').expect("fleet spec is CREDSxSERVICES");
        let (creds, services) = (c.parse().unwrap(), s.parse().unwrap());
        // The headline fleet gets every measurement; the others show scaling.
        let full = results.is_empty();
        eprintln!("fleet: {creds} credentials for {services} services...");
        results.push(Fleet::new(creds, services).measure(full));
    }
    let machine = machine();
    let doc = json!({ "machine": machine, "fleets": results });
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write(
        "target/bench/fleet.json",
        format!("{}\n", serde_json::to_string_pretty(&doc).unwrap()),
    )
    .unwrap();
    println!("{}", report(&doc));
    println!("written: target/bench/fleet.json");
}

struct Fleet {
    bed: TestBed,
    _secret: tempfile::TempDir,
    creds: usize,
    services: usize,
}

impl Fleet {
    fn new(creds: usize, services: usize) -> Fleet {
        let secret_dir = testbed::tempdir();
        let secret = secret_dir.path().join("credential.secret");
        let ok = Command::new("systemd-creds")
            .arg("setup")
            .env("SYSTEMD_CREDENTIAL_SECRET", &secret)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "systemd-creds setup");
        let bed = TestBed::builder()
            .credential_secret(&secret)
            .unmask("dbus.socket")
            .unmask("dbus.service")
            .boot();
        bed.install_credloader(Path::new(CREDLOADER));
        bed.add_user("qt");
        let f = Fleet {
            bed,
            _secret: secret_dir,
            creds,
            services,
        };
        f.setup();
        f
    }

    fn cred(i: usize) -> String {
        format!("BENCH_KEY_{i:04}")
    }

    /// The credentials of service `s`: an even share, round robin.
    fn creds_of(&self, s: usize) -> Vec<String> {
        (0..self.creds)
            .filter(|i| i % self.services == s)
            .map(Self::cred)
            .collect()
    }

    fn setup(&self) {
        let b = &self.bed;
        b.sh_ok("install -d -m 0700 /etc/quantum/creds && install -d /etc/quantum/credloader.d /bench/manual");
        b.write(
            "/etc/quantum/credloader.toml",
            b"# services in credloader.d/\n",
            0o644,
        );
        // Seal everything in one script inside the bed.
        let mut seal = String::from("set -e\ncd /etc/quantum/creds\n");
        for i in 0..self.creds {
            let n = Self::cred(i);
            let _ = writeln!(seal, "printf 'secret-value-{i:04}-0123456789abcdef' | systemd-creds encrypt --name={n} --with-key=host - {n}.cred 2>/dev/null");
        }
        seal.push_str("chmod 0600 *.cred\n");
        b.write("/bench/seal.sh", seal.as_bytes(), 0o700);
        b.sh_ok("/bench/seal.sh");

        let mut manual = String::from("set -e\nstart=$(date +%s%N)\n");
        for s in 0..self.services {
            let list: Vec<String> = self
                .creds_of(s)
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect();
            let conf = format!(
                "[services.svc{s:03}]\nunit = \"bench{s:03}.service\"\nuser = \"qt\"\ncredentials = [{}]\n",
                list.join(", ")
            );
            b.write(
                &format!("/etc/quantum/credloader.d/svc{s:03}.toml"),
                conf.as_bytes(),
                0o644,
            );
            let unit = "[Service]\nUser=qt\nExecStart=/bin/sleep infinity\n";
            b.write(
                &format!("/etc/systemd/system/bench{s:03}.service"),
                unit.as_bytes(),
                0o644,
            );
            // The manual procedure, as an operator's loop would do it.
            let f = format!("/bench/manual/svc{s:03}.env");
            let _ = writeln!(manual, ": > {f}");
            for c in self.creds_of(s) {
                let _ = writeln!(
                    manual,
                    "systemd-creds decrypt --name={c} /etc/quantum/creds/{c}.cred /tmp/{c}.plain 2>/dev/null\n\
                     printf '%s=' {c} >> {f}; cat /tmp/{c}.plain >> {f}; echo >> {f}\n\
                     shred -u /tmp/{c}.plain"
                );
            }
            let _ = writeln!(manual, "chmod 0600 {f}; chown qt:qt {f}");
        }
        manual.push_str("echo $(( ($(date +%s%N) - start) / 1000 ))\n");
        b.write("/bench/manual.sh", manual.as_bytes(), 0o700);
        b.daemon_reload();
        // The first apply writes the drop-ins (an install-time step).
        b.sh_ok("credloader apply >/dev/null");
        b.sh_ok("systemctl enable --quiet credloader.service credloader.path");
    }

    /// Runs `command` inside the bed `repeat` times after `prep`, returns
    /// the median wall time in microseconds. The clock is bash's own
    /// `$EPOCHREALTIME`: a `date` process on each side would add its own
    /// start-up (~1 ms) to every figure.
    fn time_us(&self, prep: &str, command: &str, repeat: usize) -> f64 {
        let script = format!(
            "set -e\nfor i in $(seq {repeat}); do {prep}\n s=${{EPOCHREALTIME/./}}; {command} >/dev/null; e=${{EPOCHREALTIME/./}}; echo $(( e - s )); done"
        );
        // bash, for $EPOCHREALTIME (/bin/sh is dash).
        let out = self.bed.exec(&["/bin/bash", "-c", &script]);
        assert!(out.status.success(), "{script}: {out:?}");
        let out = String::from_utf8_lossy(&out.stdout);
        median(
            out.lines()
                .map(|l| l.trim().parse::<f64>().unwrap())
                .collect(),
        )
    }

    fn measure(self, full: bool) -> Value {
        let b = &self.bed;
        let wipe = "rm -f /run/credloader/*.env";
        let baseline = median(
            (0..if full { 3 } else { 1 })
                .map(|_| b.sh_ok("/bench/manual.sh").trim().parse().unwrap())
                .collect(),
        );
        let boot = self.time_us(
            &format!("systemctl stop credloader.service; {wipe}"),
            "systemctl start credloader.service",
            REPEAT,
        );
        let cli = self.time_us(wipe, "credloader apply", REPEAT);
        let cli_serial = self.time_us(
            wipe,
            "CREDLOADER_NO_BULK_DECRYPT=1 credloader apply",
            if full { 3 } else { 1 },
        );
        // The first no-op after a change runs in full and leaves a stamp;
        // the ones after it are answered by the stamp (see src/stamp.rs).
        let noop_full = self.time_us("rm -f /run/credloader/.noop-*", "credloader apply", 20);
        // Inputs changed in the last 50 ms are not stamped (src/stamp.rs).
        b.sh_ok("sleep 0.1; credloader apply >/dev/null");
        let noop = self.time_us("true", "credloader apply", 20);
        let noop_report: Value = serde_json::from_str(&b.sh_ok("credloader apply --json")).unwrap();
        let rss_kib: u64 = b
            .sh_ok(&format!(
                "{wipe}; /usr/bin/time -f %M credloader apply 2>&1 >/dev/null | tail -1"
            ))
            .trim()
            .parse()
            .unwrap();
        let mut doc = json!({
            "credentials": self.creds,
            "services": self.services,
            "baseline_ms": baseline / 1000.0,
            "boot_path_ms": boot / 1000.0,
            "cli_path_ms": cli / 1000.0,
            "cli_path_one_by_one_ms": cli_serial / 1000.0,
            "noop_ms": noop / 1000.0,
            "noop_full_run_ms": noop_full / 1000.0,
            "noop_files_written": files_written(&noop_report),
            "noop_daemon_reload": noop_report["daemon_reload"],
            "noop_restarts": restarts(&noop_report),
            "peak_rss_kib": rss_kib,
            "speedup_boot_path": baseline / boot,
            "speedup_cli_path": baseline / cli,
        });
        if full {
            doc["rotation"] = self.rotation();
        }
        doc
    }

    /// One credential of service 0 changes: through the path unit, as in life.
    fn rotation(&self) -> Value {
        let b = &self.bed;
        b.sh_ok("systemctl start credloader.path");
        let units: Vec<String> = (0..self.services)
            .map(|s| format!("bench{s:03}.service"))
            .collect();
        b.sh_ok(&format!("systemctl start {}", units.join(" ")));
        let pids = |b: &TestBed| units.iter().map(|u| b.main_pid(u)).collect::<Vec<_>>();
        let before = pids(b);
        let cred = self.creds_of(0)[0].clone();
        // Seal beside, then time from the rename to the consumer's new environment.
        let script = format!(
            "set -e\ncd /etc/quantum/creds\n\
             printf 'rotated-value-0123456789' | systemd-creds encrypt --name={cred} --with-key=host - .{cred}.new 2>/dev/null\n\
             chmod 0600 .{cred}.new\nold=$(systemctl show -p MainPID --value bench000.service)\n\
             s=$(date +%s%N); mv .{cred}.new {cred}.cred\n\
             while :; do p=$(systemctl show -p MainPID --value bench000.service)\n\
               if [ \"$p\" != \"$old\" ] && [ \"$p\" != 0 ] && tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx '{cred}=rotated-value-0123456789'; then break; fi\n\
               sleep 0.002; done\n\
             echo $(( ($(date +%s%N) - s) / 1000 ))"
        );
        let landed_us: f64 = b.sh_ok(&script).trim().parse().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = pids(b);
        let restarted: Vec<&String> = units
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (x, y))| x != y)
            .map(|(u, _)| u)
            .collect();
        // What one rotation costs, counted by the CLI on a second rotation.
        b.sh_ok(&format!(
            "systemctl stop credloader.path; cd /etc/quantum/creds && printf 'rotated-again-0123456789' | \
             systemd-creds encrypt --name={cred} --with-key=host - .{cred}.new 2>/dev/null && chmod 0600 .{cred}.new && mv .{cred}.new {cred}.cred"
        ));
        let r: Value = serde_json::from_str(&b.sh_ok("credloader apply --json")).unwrap();
        let decrypted: usize = r["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["decrypted"].as_array().unwrap().len())
            .sum();
        json!({
            "credential": cred,
            "landed_ms": landed_us / 1000.0,
            "restarted_by_path_unit": restarted,
            "cli_credentials_decrypted": decrypted,
            "cli_decrypt": r["decrypt"],
            "cli_files_written": files_written(&r),
            "cli_restarts": restarts(&r),
        })
    }
}

fn files_written(r: &Value) -> usize {
    r["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["env_file_written"].as_bool().unwrap() as usize
                + s["dropin_written"].as_bool().unwrap() as usize
        })
        .sum()
}

fn restarts(r: &Value) -> usize {
    r["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["action"].is_null())
        .count()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let systemd = Command::new("systemctl")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": mem_kib / 1024 / 1024,
        "systemd": systemd,
    })
}

fn report(doc: &Value) -> String {
    let mut out = String::new();
    let m = &doc["machine"];
    let _ = writeln!(
        out,
        "\nmachine: {} CPUs, {} GiB, {}, {}",
        m["cpus"],
        m["memory_gib"],
        m["cpu"].as_str().unwrap_or(""),
        m["systemd"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "\n{:>6} {:>5} | {:>11} | {:>15} | {:>15} | {:>13} | {:>10} | {:>8}",
        "creds",
        "svcs",
        "baseline ms",
        "boot path ms",
        "CLI path ms",
        "1-by-1 CLI ms",
        "no-op ms",
        "peak RSS"
    );
    for f in doc["fleets"].as_array().unwrap() {
        let ms = |k: &str| f[k].as_f64().unwrap();
        let _ = writeln!(
            out,
            "{:>6} {:>5} | {:>11.0} | {:>7.1} ({:>4.0}x) | {:>7.1} ({:>4.0}x) | {:>13.0} | {:>10.2} | {:>5} MiB",
            f["credentials"],
            f["services"],
            ms("baseline_ms"),
            ms("boot_path_ms"),
            ms("speedup_boot_path"),
            ms("cli_path_ms"),
            ms("speedup_cli_path"),
            ms("cli_path_one_by_one_ms"),
            ms("noop_ms"),
            f["peak_rss_kib"].as_u64().unwrap() / 1024,
        );
    }
    let f = &doc["fleets"][0];
    let _ = writeln!(
        out,
        "\nno-op re-apply ({} credentials): {:.2} ms ({:.2} ms for the full run that leaves the stamp), {} files written, daemon-reload {}, {} restarts",
        f["credentials"], f["noop_ms"].as_f64().unwrap(), f["noop_full_run_ms"].as_f64().unwrap(), f["noop_files_written"], f["noop_daemon_reload"], f["noop_restarts"]
    );
    if let Some(r) = f.get("rotation") {
        let _ = writeln!(
            out,
            "one rotated credential ({}): landed in {:.0} ms; restarted {}; CLI apply decrypted {} credential(s) ({}), wrote {} file(s), restarted {}",
            r["credential"].as_str().unwrap(),
            r["landed_ms"].as_f64().unwrap(),
            r["restarted_by_path_unit"],
            r["cli_credentials_decrypted"],
            r["cli_decrypt"],
            r["cli_files_written"],
            r["cli_restarts"],
        );
    }
    out
}
