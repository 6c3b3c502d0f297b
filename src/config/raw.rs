//! The configuration files exactly as they hold it: serde structs with
//! spans, so that every mistake found later can name its line. Nothing
//! here is checked beyond what serde itself refuses (unknown keys, types).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::errors::Origin;
use super::model::{Delivery, Environment, Manage, OnChange};

/// One file. `S` is what `[sources]` is read as: a second, lenient read
/// with [`serde::de::IgnoredAny`] tells a mistake in `[sources]` (which
/// concerns `sync` only) from one in the rest of the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile<S = Spanned<RawSources>> {
    pub(super) loader: Option<RawLoader>,
    #[serde(default)]
    pub(super) services: BTreeMap<Spanned<String>, RawService>,
    pub(super) sources: Option<S>,
    #[serde(default)]
    pub(super) credentials: BTreeMap<Spanned<String>, RawCredential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) keep_newline: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSources {
    pub(super) environment: Option<Spanned<Environment>>,
    #[serde(default)]
    pub(super) manage: Manage,
    pub(super) attempts: Option<Spanned<u32>>,
    pub(super) timeout_sec: Option<Spanned<u64>>,
    pub(super) aws: Option<Spanned<RawAws>>,
    pub(super) file: Option<Spanned<RawFileSource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    pub(super) region: Spanned<String>,
    pub(super) endpoint_url: Option<Spanned<String>>,
    pub(super) secret_id: Spanned<String>,
    #[serde(default)]
    pub(super) credentials: BTreeMap<Spanned<String>, RawAwsCredential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAwsCredential {
    pub(super) secret_id: Option<Spanned<String>>,
    pub(super) json_key: Option<Spanned<String>>,
    pub(super) version_stage: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFileSource {
    pub(super) path: Spanned<String>,
    #[serde(default)]
    pub(super) credentials: BTreeMap<Spanned<String>, RawFileCredential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFileCredential {
    pub(super) key: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoader {
    pub(super) creds_dir: Option<Spanned<String>>,
    pub(super) env_dir: Option<Spanned<String>>,
    pub(super) dropin_dir: Option<Spanned<String>>,
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) env_file_dirs: Option<Vec<Spanned<String>>>,
    pub(super) keep_generations: Option<Spanned<u32>>,
    pub(super) lock_timeout_sec: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) unit: Spanned<String>,
    pub(super) user: Spanned<String>,
    pub(super) group: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) credentials: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default, rename = "static")]
    pub(super) statics: BTreeMap<Spanned<String>, Spanned<String>>,
    pub(super) env_file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) delivery: Option<Spanned<Delivery>>,
    #[serde(default = "default_true")]
    pub(super) required: bool,
    #[serde(default)]
    pub(super) on_change: OnChange,
    pub(super) health_check: Option<Spanned<Vec<String>>>,
    pub(super) health_timeout_sec: Option<Spanned<u64>>,
}

fn default_true() -> bool {
    true
}

/// A parsed file plus what is needed to turn byte offsets into lines.
pub(super) struct Parsed {
    pub(super) path: PathBuf,
    pub(super) text: String,
    pub(super) raw: RawFile,
}

impl Parsed {
    pub(super) fn origin<T>(&self, s: &Spanned<T>) -> Origin {
        Origin {
            file: self.path.clone(),
            line: self.text[..s.span().start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1,
        }
    }
}
