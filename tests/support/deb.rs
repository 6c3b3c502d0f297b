//! The Debian package, built as `make deb` builds it, for the tests that
//! install it in a bed (`tests/e2e_deb.rs`, `tests/e2e_guide_deb.rs`).
//! Include it next to the bed:
//!
//! ```ignore
//! #[path = "support/testbed.rs"]
//! mod testbed;
//! #[path = "support/deb.rs"]
//! mod deb;
//! ```
//!
//! The package is built by packaging/build-deb.sh, the script `make deb`
//! runs (it installs cargo-deb and lintian first when they are missing), so
//! these tests never skip and never test a stale package.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::testbed::{self, TestBed};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The freshly built .deb (built once per test binary).
pub fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        // The same features as this test build (`make test` passes the
        // Makefile's FEATURES), so the release binary is not rebuilt back and
        // forth between `make test`, `make release` and `make deb`.
        let mut args = vec![Path::new(ROOT).join("packaging/build-deb.sh")];
        if cfg!(feature = "aws") {
            args.extend(["--".into(), "--features".into(), "aws".into()]);
        }
        let out = Command::new("bash")
            .args(&args)
            .env(
                "CARGO",
                std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            )
            .output()
            .expect("run packaging/build-deb.sh");
        assert!(
            out.status.success(),
            "packaging/build-deb.sh failed:\n{}",
            testbed::lossy(&out.stderr)
        );
        let stdout = testbed::lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            path.extension().is_some_and(|e| e == "deb") && path.is_file(),
            "build-deb.sh reported no .deb: {stdout:?}"
        );
        path
    })
}

/// A bed for the package: it decrypts with a throwaway host secret (never
/// the host's own), keeps `unmask` unmasked, and has no `policy-rc.d`: a
/// real host has none, and this machine's container one (exit 101) would
/// keep deb-systemd-invoke from starting anything inside the bed.
pub fn boot(unmask: &[&str]) -> (TestBed, tempfile::TempDir) {
    let (secret_dir, secret) = testbed::throwaway_secret();
    let mut builder = TestBed::builder().credential_secret(&secret);
    for unit in unmask {
        builder = builder.unmask(unit);
    }
    let bed = builder.boot();
    bed.sh_ok("rm -f /usr/sbin/policy-rc.d");
    (bed, secret_dir)
}

/// Contents, modes, owners and inodes of every sealed file credloader must
/// never touch: the creds dir and the kept generations.
pub fn sealed_fingerprint(bed: &TestBed) -> String {
    bed.sh_ok(
        "cd / && find etc/quantum/creds var/lib/credloader/generations -type f -name '*.cred' | sort | \
         while read -r f; do echo \"$(sha256sum < \"$f\") $(stat -c '%n %U:%G %a %i %Y' \"$f\")\"; done; \
         stat -c '%n %U:%G %a' etc/quantum/creds",
    )
}
