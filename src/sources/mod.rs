//! Where `sync` gets values from: a [`Source`] fetches one credential's
//! value by name. [`file`] is the development source (a JSON or TOML file);
//! `aws` (feature `aws`) is AWS Secrets Manager.
//!
//! Errors say what kind of failure it was, because that decides what `sync`
//! does: a [`SourceError::Transient`] one (network, throttling, 5xx) is tried
//! again with bounded exponential backoff; an [`SourceError::Auth`] one is
//! not; either, once final, stops the whole sync before anything local is
//! touched (exit 5). A [`SourceError::Permanent`] one (not found, JSON key
//! missing, unusable value) fails only that credential; its local copy is
//! kept and the others proceed (exit 1). No error text ever holds a value.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::config::Config;
use crate::root::Root;
use crate::secret::Secret;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
mod aws_explain;
pub mod file;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SourceError {
    /// Worth another try: the network, throttling, a server error.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    #[error("{0}")]
    Transient(String),
    /// The source refused us: bad or missing AWS credentials, access denied.
    #[error("{0}")]
    Auth(String),
    /// This credential cannot be had from the source as configured.
    #[error("{0}")]
    Permanent(String),
}

/// A place values come from.
pub trait Source {
    /// `aws` or `file`.
    fn kind(&self) -> &'static str;
    /// Where `name` is read from, for messages (never a value).
    fn locate(&self, name: &str) -> String;
    /// The current value of `name`.
    fn fetch(&self, name: &str) -> Result<Secret, SourceError>;
}

/// Opening the configured source failed.
#[derive(Debug, Error)]
pub enum OpenError {
    /// No `[sources]`, or a source this binary was built without (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The source cannot be used now (exit 5 for AWS, 2 for a bad file).
    #[error(transparent)]
    Source(SourceError),
}

/// Opens the source `config` names.
pub fn open(config: &Config, root: &Root) -> Result<Box<dyn Source>, OpenError> {
    let Some(sources) = &config.sources else {
        return Err(OpenError::Usage(
            "no [sources] in the configuration: sync needs [sources.aws] (see docs/aws.md)".into(),
        ));
    };
    if let Some(f) = &sources.file {
        let path = root.host(&f.path);
        return file::FileSource::open(&path, f.credentials.clone())
            .map(|s| Box::new(s) as Box<dyn Source>)
            .map_err(OpenError::Source);
    }
    let Some(aws) = &sources.aws else {
        return Err(OpenError::Usage("[sources] configures no source".into()));
    };
    #[cfg(feature = "aws")]
    {
        aws::AwsSource::open(aws, sources.environment, sources.timeout)
            .map(|s| Box::new(s) as Box<dyn Source>)
            .map_err(OpenError::Source)
    }
    #[cfg(not(feature = "aws"))]
    {
        let _ = aws;
        Err(OpenError::Usage(
            "[sources.aws] is configured, but this credloader was built without AWS support \
             (cargo feature `aws`); install a release build (`make release`) or use \
             [sources.file] for development"
                .into(),
        ))
    }
}

/// How `fetch_all` tries again.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries per credential, at least 1.
    pub attempts: u32,
    /// The first wait; each further one doubles, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Retry {
    pub fn new(attempts: u32) -> Retry {
        Retry {
            attempts: attempts.max(1),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }

    /// The wait before try `n` (1-based; try 1 has none).
    pub fn wait_before(&self, n: u32) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (n - 2).min(16);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// The whole fetch stopped: the source is unavailable or refused us.
#[derive(Debug, Clone, Error)]
#[error("{name} ({locator}): {error}{}", if *.tries > 1 { format!(" (after {} tries)", .tries) } else { String::new() })]
pub struct Unavailable {
    pub name: String,
    pub locator: String,
    pub error: SourceError,
    pub tries: u32,
}

/// One credential's fetch result: its value, or why it cannot be had.
pub type Fetched = BTreeMap<String, Result<Secret, String>>;

/// Fetches every name, retrying transient errors per `retry`. A final
/// transient or auth error stops everything; permanent ones are per name.
pub fn fetch_all(
    source: &dyn Source,
    names: &[String],
    retry: Retry,
) -> Result<Fetched, Unavailable> {
    let mut out = BTreeMap::new();
    for name in names {
        let mut tries = 0;
        let result = loop {
            tries += 1;
            std::thread::sleep(retry.wait_before(tries));
            match source.fetch(name) {
                Err(SourceError::Transient(e)) if tries < retry.attempts => {
                    tracing::warn!(
                        "{name}: {e}; trying again ({tries} of {} tries)",
                        retry.attempts
                    );
                }
                other => break other,
            }
        };
        match result {
            Ok(v) => {
                out.insert(name.clone(), Ok(v));
            }
            Err(SourceError::Permanent(e)) => {
                out.insert(name.clone(), Err(e));
            }
            Err(error) => {
                return Err(Unavailable {
                    name: name.clone(),
                    locator: source.locate(name),
                    error,
                    tries,
                })
            }
        }
    }
    Ok(out)
}

/// Takes the string under `key` out of the JSON object in `value`; every
/// other string of the document is zeroized before it is freed.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub fn json_key(value: &Secret, key: &str) -> Result<Secret, SourceError> {
    use zeroize::Zeroize;
    let mut doc: serde_json::Value = serde_json::from_slice(value.expose()).map_err(|e| {
        SourceError::Permanent(format!(
            "json_key `{key}` is set, but the secret is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let found = match doc.as_object_mut().map(|m| m.remove(key)) {
        None => Err(SourceError::Permanent(format!(
            "json_key `{key}` is set, but the secret is not a JSON object"
        ))),
        Some(None) => Err(SourceError::Permanent(format!(
            "the JSON secret has no key `{key}`"
        ))),
        Some(Some(serde_json::Value::String(s))) => Ok(Secret::new(s.into_bytes())),
        Some(Some(mut other)) => {
            zeroize_json(&mut other);
            Err(SourceError::Permanent(format!(
                "the JSON secret's key `{key}` is not a string"
            )))
        }
    };
    zeroize_json(&mut doc);
    return found;

    fn zeroize_json(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => s.zeroize(),
            serde_json::Value::Array(a) => a.iter_mut().for_each(zeroize_json),
            serde_json::Value::Object(m) => m.values_mut().for_each(zeroize_json),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Scripted(RefCell<Vec<Result<Secret, SourceError>>>);

    impl Source for Scripted {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn locate(&self, name: &str) -> String {
            format!("test/{name}")
        }
        fn fetch(&self, _: &str) -> Result<Secret, SourceError> {
            self.0.borrow_mut().remove(0)
        }
    }

    fn quick(attempts: u32) -> Retry {
        Retry {
            attempts,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[test]
    fn transient_errors_are_retried_within_the_bound() {
        let t = || Err(SourceError::Transient("connection refused".into()));
        let s = Scripted(RefCell::new(vec![t(), t(), Ok(Secret::copy_from(b"v"))]));
        let got = fetch_all(&s, &["A".into()], quick(3)).unwrap();
        assert_eq!(got["A"].as_ref().unwrap().expose(), b"v");

        let s = Scripted(RefCell::new(vec![t(), t(), t()]));
        let e = fetch_all(&s, &["A".into()], quick(2)).unwrap_err();
        assert_eq!(e.tries, 2);
        assert_eq!(s.0.borrow().len(), 1, "no third try");
        assert!(e.to_string().contains("after 2 tries"), "{e}");
    }

    #[test]
    fn auth_stops_at_once_and_permanent_is_per_name() {
        let s = Scripted(RefCell::new(vec![
            Err(SourceError::Permanent("not found".into())),
            Ok(Secret::copy_from(b"b")),
            Err(SourceError::Auth("denied".into())),
            Ok(Secret::copy_from(b"never")),
        ]));
        let names = ["A".into(), "B".into(), "C".into()];
        let e = fetch_all(&s, &names, quick(5)).unwrap_err();
        assert_eq!((e.name.as_str(), e.tries), ("C", 1));
        let s = Scripted(RefCell::new(vec![
            Err(SourceError::Permanent("not found".into())),
            Ok(Secret::copy_from(b"b")),
        ]));
        let got = fetch_all(&s, &names[..2], quick(5)).unwrap();
        assert_eq!(got["A"].as_ref().unwrap_err(), "not found");
        assert!(got["B"].is_ok());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let r = Retry::new(6);
        let waits: Vec<u64> = (1..=6)
            .map(|n| r.wait_before(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [0, 500, 1000, 2000, 4000, 8000]);
        assert_eq!(r.wait_before(40), Duration::from_secs(8));
    }

    #[test]
    fn json_keys() {
        let doc = Secret::copy_from(br#"{"api_key":"k-1","api_secret":"s-2","n":3}"#);
        assert_eq!(json_key(&doc, "api_key").unwrap().expose(), b"k-1");
        let e = json_key(&doc, "nope").unwrap_err();
        assert!(matches!(&e, SourceError::Permanent(m) if m.contains("no key `nope`")));
        assert!(json_key(&doc, "n").is_err());
        let e = json_key(&Secret::copy_from(b"plain-s3cret"), "k").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
