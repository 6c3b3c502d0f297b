//! Under `--root`, the commands a message suggests are for the image: each
//! `credloader ...` it names carries `--root DIR` (and `--config PATH`
//! when one was given), so it can be pasted as it is. Messages are written
//! once, for a running system; this is the one place that adapts them, for
//! every command, error and output form alike.

use std::path::Path;

/// How suggested commands are written in messages.
const FORMS: [&str; 2] = ["`credloader ", "| credloader "];

/// Rewrites the commands that messages suggest (`` `credloader seal X` ``)
/// so that they carry the `--root` and `--config` given on this command line.
pub struct Hints {
    /// The options every suggested command needs (empty: none).
    options: String,
}

impl Hints {
    /// `root` and `config` as given on the command line.
    pub fn new(root: Option<&Path>, config: Option<&Path>) -> Hints {
        let mut options = String::new();
        if let Some(root) = root.filter(|r| *r != Path::new("/")) {
            options.push_str(&format!("--root {} ", quote(root)));
        }
        if let Some(config) = config {
            options.push_str(&format!("--config {} ", quote(config)));
        }
        Hints { options }
    }

    /// `text` with the options added to every suggested command.
    pub fn text(&self, text: &str) -> String {
        self.replace(text, &self.options)
    }

    /// The same in a JSON document (the options JSON-escaped).
    pub fn json(&self, json: &str) -> String {
        let escaped = serde_json::to_string(&self.options).expect("a string serializes");
        self.replace(json, &escaped[1..escaped.len() - 1])
    }

    fn replace(&self, text: &str, options: &str) -> String {
        if self.options.is_empty() {
            return text.to_string();
        }
        FORMS.iter().fold(text.to_string(), |t, form| {
            t.replace(form, &format!("{form}{options}"))
        })
    }
}

/// `path` as a shell word.
fn quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@,%=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(root: Option<&str>, config: Option<&str>) -> Hints {
        Hints::new(root.map(Path::new), config.map(Path::new))
    }

    #[test]
    fn suggested_commands_carry_the_image() {
        let h = global(Some("/mnt/img"), None);
        assert_eq!(
            h.text("seal it with `credloader seal K`; or `printf %s V | credloader rotate K`"),
            "seal it with `credloader --root /mnt/img seal K`; \
             or `printf %s V | credloader --root /mnt/img rotate K`"
        );
        assert_eq!(h.text("credloader.path watches"), "credloader.path watches");
        let h = global(Some("/mnt/my \"img\""), Some("/etc/c.toml"));
        let json = r#"{"fix":"run `credloader apply`"}"#;
        let out: serde_json::Value = serde_json::from_str(&h.json(json)).unwrap();
        assert_eq!(
            out["fix"],
            "run `credloader --root '/mnt/my \"img\"' --config /etc/c.toml apply`"
        );
        let live = global(None, None);
        assert_eq!(live.text("`credloader apply`"), "`credloader apply`");
    }
}
