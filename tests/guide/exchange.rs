//! Binance's API at `https://api.binance.com` inside a test bed, so that the
//! guide's health check and its `systemd-run` block run exactly as written
//! and ask the Binance they would ask on a host: tests/binance/fake_binance.py
//! serves HTTPS on the bed's 127.0.0.1:443 with a certificate for
//! api.binance.com from a throwaway CA, the bed trusts that CA (OpenSSL's
//! default bundle, `/usr/lib/ssl/cert.pem`), and the bed's `/etc/hosts`
//! points the name at 127.0.0.1. All of it is in the bed's own layer and
//! network namespace: the host's trust store, `/etc/hosts` and network are
//! untouched, and nothing leaves the bed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::binance::{keys_json, server_script};
use crate::testbed::{self, TestBed};

const HOST: &str = "api.binance.com";

/// Starts the fake Binance as `https://api.binance.com` in `bed`.
pub fn serve_api_binance_com(bed: &TestBed) {
    let dir = testbed::tempdir();
    let (ca, server) = certificates(dir.path());
    let bundle = "/usr/lib/ssl/cert.pem";
    let mut trusted = bed.read(bundle).unwrap_or_default();
    trusted.extend_from_slice(&ca);
    bed.write(bundle, &trusted, 0o644);
    bed.sh_ok(&format!("echo '127.0.0.1 {HOST}' >> /etc/hosts"));
    bed.write("/etc/fake-binance/tls.pem", &server, 0o600);
    bed.write("/etc/fake-binance/keys.json", keys_json().as_bytes(), 0o644);
    bed.copy_in(&server_script(), "/usr/local/lib/fake_binance.py", 0o755);
    bed.sh_ok(
        "systemd-run --unit=fake-binance -p Type=exec /usr/bin/python3 \
         /usr/local/lib/fake_binance.py /etc/fake-binance/keys.json 443 /etc/fake-binance/tls.pem",
    );
    bed.wait_until("the fake Binance listens", Duration::from_secs(20), || {
        bed.exec(&["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/443"])
            .status
            .success()
    });
}

/// A CA certificate, and the server's certificate for [`HOST`] (signed by
/// the CA, with the extensions a strict verifier wants) followed by its key.
fn certificates(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (tests/deps.sh installs it)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=credloader test CA"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
            &["-subj", &format!("/CN={HOST}")],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName=DNS:{HOST}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
             authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
        ),
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-days",
        "2",
        "-out",
        "server.pem",
        "-extfile",
        "server.ext",
    ]);
    let read = |name: &str| std::fs::read(dir.join(name)).expect("read a certificate");
    let mut server = read("server.pem");
    server.extend_from_slice(&read("server.key"));
    (read("ca.pem"), server)
}
