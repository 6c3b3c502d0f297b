//! The drop-in that connects a consumer unit to what credloader delivers.

use std::path::PathBuf;

use crate::config::{Delivery, Loader, Service};

pub(crate) const FILE_NAME: &str = "50-credloader.conf";

/// The drop-in `service`'s unit gets.
pub(crate) fn path(service: &Service, loader: &Loader) -> PathBuf {
    loader
        .dropin_dir
        .join(format!("{}.d", service.unit))
        .join(FILE_NAME)
}

/// The drop-in text for `service`. Paths are the running system's.
pub fn render(service: &Service, loader: &Loader) -> String {
    let mut out = format!(
        "# Managed by credloader for service `{}`; changes are overwritten.\n\
         [Unit]\n\
         After=credloader.service\n\
         Wants=credloader.service\n\
         \n\
         [Service]\n",
        service.name
    );
    match service.delivery {
        Delivery::Env => {
            let dash = if service.required { "" } else { "-" };
            out.push_str(&format!(
                "EnvironmentFile={dash}{}\n",
                service.env_file.display()
            ));
        }
        Delivery::Credential => {
            for cred in service.credentials() {
                out.push_str(&format!(
                    "LoadCredentialEncrypted={cred}:{}\n",
                    loader.creds_dir.join(format!("{cred}.cred")).display()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_texts;

    #[test]
    fn env_and_credential_dropins() {
        let c = from_texts(vec![(
            "/m.toml".into(),
            "[services.a]\nunit = \"a.service\"\nuser = \"u\"\ncredentials = [\"K\"]\nrequired = false\n\
             [services.b]\nunit = \"b.service\"\nuser = \"u\"\ncredentials = [\"K\", \"L\"]\ndelivery = \"credential\"\n"
                .into(),
        )])
        .unwrap();
        let a = render(&c.services["a"], &c.loader);
        assert!(a.contains("After=credloader.service\nWants=credloader.service\n"));
        assert!(
            a.ends_with("[Service]\nEnvironmentFile=-/run/credloader/a.env\n"),
            "{a}"
        );
        let b = render(&c.services["b"], &c.loader);
        assert!(b.ends_with(
            "LoadCredentialEncrypted=K:/etc/quantum/creds/K.cred\nLoadCredentialEncrypted=L:/etc/quantum/creds/L.cred\n"
        ), "{b}");
        assert!(!b.contains("EnvironmentFile"));
    }

    #[test]
    fn the_example_in_dropins_is_what_apply_writes() {
        let c = from_texts(vec![(
            "/m.toml".into(),
            "[services.position-monitor]\nunit = \"quantum-position-monitor.service\"\nuser = \"qt\"\ncredentials = [\"K\"]\n".into(),
        )])
        .unwrap();
        assert_eq!(
            render(&c.services["position-monitor"], &c.loader),
            include_str!("../dropins/quantum-position-monitor.service.d/50-credloader.conf")
        );
    }
}
