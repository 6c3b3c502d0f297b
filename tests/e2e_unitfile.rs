//! credloader's unit-file reader (`src/unitfile.rs`) against systemd itself:
//! a corpus of unit files, one per rule of how PID 1 reads them (and the
//! traps of issue #13), plus every service unit the test bed has, is read by
//! credloader offline (through `/proc/PID/root`) and loaded by the bed's
//! real PID 1; for each unit the two must agree on the load state, the
//! names, the fragment, the drop-ins in their order, `User=`,
//! `DynamicUser=`, the flags of every command, the `EnvironmentFile=`s and
//! `UnsetEnvironment=`.

#[path = "support/testbed.rs"]
mod testbed;

use std::collections::BTreeMap;

use credloader::unitfile::{self, LoadState, Lookup, Unit, EXEC_KEYS};
use testbed::TestBed;

const E: &str = "/etc/systemd/system";
const R: &str = "/run/systemd/system";
const U: &str = "/usr/lib/systemd/system";
const RUN: &str = "ExecStart=/bin/sleep infinity\n";

/// (path inside the bed, contents). Every unit name starts with `cu` so
/// that no dash prefix of the corpus reaches the bed's own units.
fn corpus() -> Vec<(String, String)> {
    let f = |p: &str, t: &str| (p.to_string(), t.to_string());
    let svc = |body: &str| format!("[Service]\n{RUN}{body}");
    vec![
        // #13: drop-ins apply by file name across directories: the vendor's
        // 10- in /usr/lib before the admin's 60- in /etc.
        f(&format!("{U}/cuorder.service"), &svc("User=qt\n")),
        f(&format!("{E}/cuorder.service.d/60-override.conf"), "[Service]\nUser=root\n"),
        f(&format!("{U}/cuorder.service.d/10-vendor.conf"), "[Service]\nUser=qt\n"),
        f(&format!("{R}/cuorder.service.d/20-run.conf"), "[Service]\nUser=bot\n"),
        // #13: only [Service] counts.
        f(&format!("{E}/cuinstall.service"), &format!("[Unit]\nUser=qt\n{}[Install]\nUser=qt\nWantedBy=multi-user.target\n", svc(""))),
        // A same-named drop-in in a higher directory hides the lower one;
        // a /dev/null one hides it too.
        f(&format!("{U}/cuhide.service"), &svc("User=qt\n")),
        f(&format!("{U}/cuhide.service.d/30-same.conf"), "[Service]\nUser=root\n"),
        f(&format!("{E}/cuhide.service.d/30-same.conf"), "[Service]\nUser=qt\nDynamicUser=no\n"),
        f(&format!("{U}/cuhide.service.d/40-masked.conf"), "[Service]\nDynamicUser=yes\n"),
        // Hidden, backup and non-.conf files are no drop-ins; one without a
        // section header sets nothing.
        f(&format!("{E}/cuhidden.service"), &svc("User=qt\n")),
        f(&format!("{E}/cuhidden.service.d/.99-hidden.conf"), "[Service]\nUser=root\n"),
        f(&format!("{E}/cuhidden.service.d/99-backup.conf~"), "[Service]\nUser=root\n"),
        f(&format!("{E}/cuhidden.service.d/99-other.txt"), "[Service]\nUser=root\n"),
        f(&format!("{E}/cuhidden.service.d/50-nosection.conf"), "User=root\n"),
        // Continuations, comments inside them, a BOM, CRLF, blanks.
        f(&format!("{E}/cucont.service"), "\u{feff}[Service]\r\nExecStart=/bin/sleep \\\n# a comment\n  infinity\nUser=q\\\nt\n# ends \\\nDynamicUser=no\n"),
        f(&format!("{E}/cublank.service"), "[Service]\n  User =  qt  \nExecStart = /bin/sleep infinity\n[ Service ]\nUser=root\n[service]\nUser=root\n[X-Mine]\nUser=root\n"),
        f(&format!("{E}/cueof.service"), &svc("User=ro\\\not")),
        // Errors: a bad section header or a refused value ends a drop-in,
        // and makes a unit file fail to load.
        f(&format!("{E}/cuerr.service"), &svc("User=qt\n")),
        f(&format!("{E}/cuerr.service.d/10-header.conf"), "[Service]\nEnvironmentFile=/etc/a.env\n[Service\nUser=root\n"),
        f(&format!("{E}/cuerr.service.d/20-user.conf"), "[Service]\nUser=bad:name\nDynamicUser=yes\n"),
        f(&format!("{E}/cuerr.service.d/30-bool.conf"), "[Service]\nDynamicUser=maybe\nUser=root\n"),
        f(&format!("{E}/cuerr.service.d/40-wd.conf"), "[Service]\nWorkingDirectory=relative\nUser=root\n"),
        f(&format!("{E}/cuerr.service.d/50-exec.conf"), "[Service]\nExecStartPre=/bin/true ; ++/bin/true\nUser=root\n"),
        f(&format!("{E}/cuerr.service.d/60-spec.conf"), "[Service]\nExecStartPre=/bin/echo %Z\nUser=root\n"),
        f(&format!("{E}/cuerr.service.d/70-group.conf"), "[Service]\nGroup=a:b\nUser=root\n"),
        f(&format!("{E}/cuerr.service.d/80-pso.conf"), "[Service]\nPermissionsStartOnly=maybe\nUnsetEnvironment=AFTER_BAD_BOOL\n"),
        f(&format!("{E}/cuerr.service.d/85-ignore.conf"), "[Service]\nExecStartPost=-++/bin/true\nUnsetEnvironment=AFTER_IGNORED\n"),
        f(&format!("{E}/cuerr.service.d/90-root.conf"), "[Service]\nRootDirectory=relative\nUser=root\n"),
        f(&format!("{E}/cuerr.service.d/95-image.conf"), "[Service]\nRootImage=relative\nUser=root\n"),
        f(&format!("{E}/cubaduser.service"), &svc("User=a:b\n")),
        f(&format!("{E}/cubadspec.service"), &svc("User=%Z\n")),
        f(&format!("{E}/cubadbool.service"), &svc("DynamicUser=\n")),
        f(&format!("{E}/cubadhead.service"), "[Service\nUser=qt\n"),
        // Users: numbers, unknown names, resets, DynamicUser.
        f(&format!("{E}/cuuid.service"), &svc("User=1500\n")),
        f(&format!("{E}/cughost.service"), &svc("User=ghost\n")),
        f(&format!("{E}/cuhost.service"), &svc("User=%H\n")),
        f(&format!("{E}/cureset.service"), &svc("User=qt\n")),
        f(&format!("{E}/cureset.service.d/10.conf"), "[Service]\nUser=\n"),
        f(&format!("{E}/cudyn.service"), &svc("DynamicUser=Y\nUser=qt\n")),
        f(&format!("{E}/cudynoff.service"), &svc("DynamicUser=yes\n")),
        f(&format!("{E}/cudynoff.service.d/10.conf"), "[Service]\nDynamicUser=off\n"),
        // Command prefixes, separators, resets.
        f(&format!("{E}/cuexec.service"), "[Service]\nExecStartPre=+/bin/true\nExecStartPre=\nExecStartPre=/bin/true ; !!/bin/true\nExecStart=\"-+/bin/sleep\" infinity\nExecStartPost=/bin/echo \\; +/bin/true\nExecStartPost=/bin/echo a;+/bin/true\nExecReload=\\x2b/bin/true\nExecCondition=!/bin/true\nExecStop=-@/bin/true true ; :/bin/true\nExecStopPost=/bin/true ; ; !/bin/true\nUser=qt\n"),
        f(&format!("{E}/cuexec.service.d/10.conf"), "[Service]\nExecStop=\nExecStop=\\053/bin/true\n"),
        // Templates, instances, specifiers, aliases.
        f(&format!("{U}/cutpl@.service"), &svc("User=%i\nEnvironmentFile=-/run/%p/%I.env\n")),
        f(&format!("{E}/cutpl@.service.d/10.conf"), "[Service]\nUnsetEnvironment=FROM_TEMPLATE_DIR\n"),
        f(&format!("{E}/cutpl@root.service.d/10.conf"), "[Service]\nUser=qt\n"),
        f(&format!("{E}/cutpl@own.service"), &svc("User=bot\n")),
        f(&format!("{E}/cualias.service"), &svc("User=qt\n")),
        f(&format!("{E}/cualias-b.service.d/10.conf"), "[Service]\nUser=root\n"),
        f(&format!("{U}/cualias-c.service.d/20.conf"), "[Service]\nUnsetEnvironment=VIA_C\n"),
        // Two aliases with a drop-in of the same name: PID 1 takes the one
        // of whichever alias its hash table lists first.
        f(&format!("{E}/cuamb.service"), &svc("User=qt\n")),
        f(&format!("{E}/cuamb-x.service.d/10.conf"), "[Service]\nUser=root\n"),
        f(&format!("{E}/cuamb-y.service.d/10.conf"), "[Service]\nUser=bot\n"),
        f(&format!("{E}/cutpla@.service.d/10.conf"), "[Service]\nUnsetEnvironment=VIA_TEMPLATE_ALIAS\n"),
        f("/opt/cu/culinked.service", &svc("User=qt\n")),
        f(&format!("{E}/cuempty.service"), ""),
        f(&format!("{U}/cumasked.service"), &svc("User=qt\n")),
        // Dash prefixes: cud-a-b.service gets cud-a-.service.d and cud-.service.d;
        // an instance gets the template's and the prefixes' with its instance.
        f(&format!("{E}/cud-a-b.service"), &svc("User=qt\n")),
        f(&format!("{E}/cud-a-.service.d/10.conf"), "[Service]\nUnsetEnvironment=DASH_AB\n"),
        f(&format!("{U}/cud-.service.d/20.conf"), "[Service]\nUser=root\n"),
        f(&format!("{E}/cud-a-b-.service.d/10.conf"), "[Service]\nUser=bot\n"),
        f(&format!("{U}/cui-a@.service"), &svc("User=qt\n")),
        f(&format!("{E}/cui-a@x.service.d/10.conf"), "[Service]\nUnsetEnvironment=I1\n"),
        f(&format!("{E}/cui-a@.service.d/10.conf"), "[Service]\nUnsetEnvironment=I2\n"),
        f(&format!("{E}/cui-.service.d/11.conf"), "[Service]\nUnsetEnvironment=I3\n"),
        f(&format!("{E}/cui-@x.service.d/12.conf"), "[Service]\nUnsetEnvironment=I4\n"),
        f(&format!("{E}/cui-@.service.d/13.conf"), "[Service]\nUnsetEnvironment=I5\n"),
        // EnvironmentFile= and UnsetEnvironment=: order, resets, paths.
        f(&format!("{E}/cuenv.service"), &svc("EnvironmentFile=/etc/cu/first.env\nEnvironmentFile=relative.env\nEnvironmentFile=-/etc/../x.env\nUnsetEnvironment=A B=v 1BAD\n")),
        f(&format!("{E}/cuenv.service.d/50-credloader.conf"), "[Service]\nEnvironmentFile=-/run/credloader/cuenv.env\n"),
        f(&format!("{E}/cuenv.service.d/credentials.conf"), "[Service]\nEnvironmentFile=-//etc/./cu//legacy.env\nEnvironmentFile=-/etc/cu/%n.env\nUnsetEnvironment=\"C D\" E\n"),
        f(&format!("{E}/cuenvreset.service"), &svc("EnvironmentFile=/etc/cu/first.env\nUnsetEnvironment=A\n")),
        f(&format!("{E}/cuenvreset.service.d/50-credloader.conf"), "[Service]\nEnvironmentFile=-/run/credloader/cuenvreset.env\n"),
        f(&format!("{E}/cuenvreset.service.d/60-reset.conf"), "[Service]\nEnvironmentFile=\nEnvironmentFile=/etc/cu/after.env\nUnsetEnvironment=\nUnsetEnvironment=B\n"),
        // The type-wide drop-in applies to every service (last).
        f(&format!("{E}/service.d/zz-cu.conf"), "[Service]\nUnsetEnvironment=CU_TYPE_WIDE\n"),
    ]
}

/// Symlinks of the corpus: (link, target).
const LINKS: &[(&str, &str)] = &[
    (
        "/etc/systemd/system/cuhide.service.d/40-masked.conf",
        "/dev/null",
    ),
    ("/etc/systemd/system/cualias-b.service", "cualias.service"),
    (
        "/etc/systemd/system/cualias-c.service",
        "/etc/systemd/system/cualias-b.service",
    ),
    ("/etc/systemd/system/cualias-bad.service", "cualias.socket"),
    ("/etc/systemd/system/cuamb-x.service", "cuamb.service"),
    ("/etc/systemd/system/cuamb-y.service", "cuamb.service"),
    (
        "/etc/systemd/system/cutpla@.service",
        "/usr/lib/systemd/system/cutpl@.service",
    ),
    (
        "/etc/systemd/system/culinked.service",
        "/opt/cu/culinked.service",
    ),
    ("/etc/systemd/system/cumasked.service", "/dev/null"),
    (
        "/etc/systemd/system/cudangling.service",
        "/opt/cu/nothing.service",
    ),
];

/// Instances and aliases to load besides the unit files found.
const EXTRA: &[&str] = &[
    "cutpl@qt.service",
    "cutpl@root.service",
    "cutpl@own.service",
    "cutpl@a-b.service",
    "cutpla@qt.service",
    "cualias-b.service",
    "cualias-c.service",
    "cui-a@x.service",
    "cunone.service",
    "cunone@x.service",
];

/// What systemd says of one unit: property → values (a property that
/// repeats, such as `ExecStartEx=`, keeps each line).
type Shown = BTreeMap<String, Vec<String>>;

const PROPS: &str =
    "Id,Names,LoadState,FragmentPath,DropInPaths,User,DynamicUser,EnvironmentFiles,\
UnsetEnvironment,ExecConditionEx,ExecStartPreEx,ExecStartEx,ExecStartPostEx,ExecReloadEx,\
ExecStopEx,ExecStopPostEx";

fn show(bed: &TestBed, units: &[String]) -> Vec<Shown> {
    let mut out = Vec::new();
    for chunk in units.chunks(100) {
        let mut argv = vec!["systemctl", "show", "-p", PROPS];
        argv.extend(chunk.iter().map(String::as_str));
        let o = bed.exec(&argv);
        assert!(o.status.success(), "systemctl show: {o:?}");
        let text = testbed::lossy(&o.stdout);
        let blocks: Vec<&str> = text.trim_end().split("\n\n").collect();
        assert_eq!(blocks.len(), chunk.len(), "one block per unit");
        for b in blocks {
            let mut m = Shown::new();
            for l in b.lines() {
                if let Some((k, v)) = l.split_once('=') {
                    m.entry(k.to_string()).or_default().push(v.to_string());
                }
            }
            out.push(m);
        }
    }
    out
}

/// The flags of each command line of one `Exec*Ex=` property, sorted.
fn shown_flags(lines: Option<&Vec<String>>) -> Vec<String> {
    lines
        .into_iter()
        .flatten()
        .map(|l| {
            let flags = l
                .split(" ; ")
                .find_map(|p| p.strip_prefix("flags="))
                .unwrap_or("");
            let mut f: Vec<&str> = flags.split_whitespace().collect();
            f.sort_unstable();
            f.join(" ")
        })
        .collect()
}

fn my_flags(unit: &Unit, key: &str) -> Vec<String> {
    unit.service
        .commands
        .iter()
        .filter(|c| c.key == key)
        .map(|c| {
            let f = c.flags;
            let mut v = Vec::new();
            for (on, name) in [
                (f.ambient, "ambient"),
                (f.ignore_failure, "ignore-failure"),
                (f.no_env_expand, "no-env-expand"),
                (f.no_setuid, "no-setuid"),
                (f.privileged, "privileged"),
            ] {
                if on {
                    v.push(name);
                }
            }
            v.join(" ")
        })
        .collect()
}

fn state(s: &LoadState) -> &'static str {
    match s {
        LoadState::Loaded => "loaded",
        LoadState::NotFound => "not-found",
        LoadState::Masked => "masked",
        LoadState::BadSetting(_) => "bad-setting",
        LoadState::Error(_) => "error",
    }
}

/// The differences between what credloader read and what PID 1 loaded.
fn compare(name: &str, mine: &Unit, pid1: &Shown) -> Vec<String> {
    let one = |k: &str| {
        pid1.get(k)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    };
    let mut diffs = Vec::new();
    // An alias of a masked unit fails to merge with it (`error`) when PID 1
    // loaded the masked unit first, and is masked otherwise: it never runs.
    if mine.state == LoadState::Masked && mine.names.len() > 1 && one("LoadState") == "error" {
        return diffs;
    }
    let mut check = |what: &str, ours: String, theirs: String| {
        if ours != theirs {
            diffs.push(format!(
                "{name}: {what}: credloader `{ours}`, PID 1 `{theirs}`"
            ));
        }
    };
    check("LoadState", state(&mine.state).into(), one("LoadState"));
    if mine.state == LoadState::NotFound {
        return diffs;
    }
    check("Id", mine.id.clone(), one("Id"));
    let mut names = mine.names.clone();
    names.sort();
    let mut theirs: Vec<String> = one("Names").split_whitespace().map(String::from).collect();
    theirs.sort();
    check("Names", names.join(" "), theirs.join(" "));
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    check(
        "FragmentPath",
        path(&mine.fragment).unwrap_or_default(),
        one("FragmentPath"),
    );
    let dropins: Vec<String> = mine
        .dropins
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    check("DropInPaths", dropins.join(" "), one("DropInPaths"));
    if mine.state != LoadState::Loaded {
        return diffs;
    }
    let s = &mine.service;
    let dynamic = if s.dynamic_user.is_some() {
        "yes"
    } else {
        "no"
    };
    check("DynamicUser", dynamic.into(), one("DynamicUser"));
    if s.dynamic_user.is_none() {
        let user = s.user.as_ref().map(|u| u.value.clone()).unwrap_or_default();
        check("User", user, one("User"));
    }
    for key in EXEC_KEYS {
        let ex = format!("{key}Ex");
        check(
            &ex,
            my_flags(mine, key).join(" | "),
            shown_flags(pid1.get(&ex)).join(" | "),
        );
    }
    let files: Vec<String> = s
        .environment_files
        .iter()
        .map(|f| {
            format!(
                "{} (ignore_errors={})",
                f.path.display(),
                if f.optional { "yes" } else { "no" }
            )
        })
        .collect();
    let theirs = pid1.get("EnvironmentFiles").cloned().unwrap_or_default();
    let theirs: Vec<String> = theirs.into_iter().filter(|l| !l.is_empty()).collect();
    if s.environment_files.iter().all(|f| f.resolved) {
        check("EnvironmentFiles", files.join(", "), theirs.join(", "));
    } else {
        // A path with a specifier the reader does not resolve is only
        // known to be there.
        check(
            "EnvironmentFiles count",
            files.len().to_string(),
            theirs.len().to_string(),
        );
    }
    let unset: Vec<&str> = s
        .unset_environment
        .iter()
        .map(|u| u.value.as_str())
        .collect();
    check("UnsetEnvironment", unset.join(" "), one("UnsetEnvironment"));
    diffs
}

#[test]
fn credloader_reads_unit_files_exactly_as_pid1_loads_them() {
    let bed = TestBed::boot();
    bed.add_user("qt");
    bed.add_user("bot");
    for (path, text) in corpus() {
        bed.write(&path, text.as_bytes(), 0o644);
    }
    for (link, target) in LINKS {
        bed.sh_ok(&format!(
            "mkdir -p \"$(dirname {link})\" && ln -sfn {target} {link}"
        ));
    }
    bed.daemon_reload();

    // Every service unit the bed has (its own and the corpus), and the
    // corpus's instances and aliases.
    let listed = bed.sh_ok(
        "systemctl list-unit-files --type=service --no-legend --no-pager | awk '{print $1}'",
    );
    let mut units: Vec<String> = listed
        .lines()
        .filter(|u| !u.contains("@.") && !u.is_empty())
        .map(String::from)
        .collect();
    units.extend(EXTRA.iter().map(|u| u.to_string()));
    units.sort();
    units.dedup();
    let corpus_units = units.iter().filter(|u| u.starts_with("cu")).count();
    assert!(corpus_units >= 35, "the corpus is listed: {units:?}");
    assert!(
        units.len() > corpus_units + 50,
        "the bed's own units are listed too"
    );

    let pid1 = show(&bed, &units);
    let lookup = Lookup::new(&bed.root());
    let mut diffs = Vec::new();
    let mut unsure = Vec::new();
    for (name, shown) in units.iter().zip(&pid1) {
        let mine = lookup.unit(name);
        if !mine.unsure.is_empty() {
            unsure.push(name.clone());
            continue;
        }
        diffs.extend(compare(name, &mine, shown));
    }
    assert!(
        diffs.is_empty(),
        "credloader and PID 1 disagree:\n{}",
        diffs.join("\n")
    );

    // The traps of issue #13, as the owner check sees them.
    let user = |u: &str| lookup.unit(u).service.user.map(|s| s.value);
    assert_eq!(user("cuorder.service").as_deref(), Some("root"));
    assert_eq!(user("cuinstall.service"), None);
    assert_eq!(user("cucont.service").as_deref(), Some("q t"));
    assert_eq!(user("cutpl@qt.service").as_deref(), Some("qt"));
    assert_eq!(user("cualias.service").as_deref(), Some("root"));
    let exec = lookup.unit("cuexec.service");
    assert!(exec.service.commands.iter().any(|c| c.flags.as_root()));
    assert_eq!(
        unsure,
        [
            "cuamb-x.service",
            "cuamb-y.service",
            "cuamb.service",
            "cuhost.service"
        ],
        "only a specifier the running system resolves and same-named drop-ins of two aliases \
         leave the reader unsure"
    );
    assert_eq!(
        unitfile::load(&bed.root(), "cuerr.service").ignored.len(),
        9
    );
}

/// `PermissionsStartOnly=yes` is not a property systemd shows, so what it
/// does is checked by running the unit: its ExecStartPre= runs as root
/// although `User=qt`, and the reader says so.
#[test]
fn permissions_start_only_runs_the_other_commands_as_root() {
    let bed = TestBed::boot();
    bed.add_user("qt");
    bed.write(
        &format!("{E}/cupso.service"),
        b"[Service]\nUser=qt\nExecStartPre=/bin/sh -c 'id -u > /run/cupso-pre'\n\
          ExecStart=/bin/sh -c 'id -u > /run/cupso-main; exec sleep infinity'\n",
        0o644,
    );
    bed.write(
        &format!("{E}/cupso.service.d/10.conf"),
        b"[Service]\nPermissionsStartOnly=true\n",
        0o644,
    );
    bed.daemon_reload();
    bed.systemctl_ok(&["start", "cupso.service"]);
    assert_eq!(bed.read("/run/cupso-pre").as_deref(), Some(&b"0\n"[..]));
    assert_ne!(bed.read("/run/cupso-main").as_deref(), Some(&b"0\n"[..]));
    let unit = Lookup::new(&bed.root()).unit("cupso.service");
    let at = unit.service.permissions_start_only.expect("seen");
    assert_eq!(at.to_string(), format!("{E}/cupso.service.d/10.conf:2"));
}
