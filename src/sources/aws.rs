//! `[sources.aws]`: AWS Secrets Manager through the AWS SDK (feature `aws`).
//!
//! Access comes from the standard AWS credential chain (environment,
//! profile files, web identity, ECS, EC2 instance role); credloader never
//! stores AWS keys. The SDK's own retries are off: [`super::fetch_all`]
//! retries transient errors itself, the same way for every source. Each
//! request is bounded by `[sources] timeout_sec`.
//!
//! Secrecy: the SDK returns the value as a `String` (or a `Blob`) inside its
//! output struct. Its buffer is moved, not copied, into a [`Secret`] at once,
//! so that heap allocation is zeroized when the value is dropped. What this
//! cannot reach: the HTTP response body and the JSON parser's buffers inside
//! the SDK (hyper/aws-smithy own them and free them unzeroized), and the TLS
//! library's record buffers. Core dumps are off (see `harden`), which keeps
//! those from reaching disk.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_secretsmanager::Client;

use super::aws_explain::{explain, Request};
use super::{Source, SourceError};
use crate::config::{self, Environment};
use crate::secret::Secret;

pub struct AwsSource {
    config: config::AwsSource,
    environment: Environment,
    runtime: tokio::runtime::Runtime,
    client: Client,
    timeout: Duration,
}

impl AwsSource {
    /// Builds the client: a current-thread runtime lives as long as it.
    pub fn open(
        config: &config::AwsSource,
        environment: Environment,
        timeout: Duration,
    ) -> Result<AwsSource, SourceError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SourceError::Transient(format!("cannot start the AWS client: {e}")))?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .operation_attempt_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            );
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = runtime.block_on(loader.load());
        let client = Client::new(&sdk);
        Ok(AwsSource {
            config: config.clone(),
            environment,
            runtime,
            client,
            timeout,
        })
    }
}

impl Source for AwsSource {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn locate(&self, name: &str) -> String {
        let l = self.config.locate(self.environment, name);
        let mut s = format!("secret {}", l.secret_id);
        if let Some(k) = &l.json_key {
            s.push_str(&format!(", JSON key {k}"));
        }
        if let Some(v) = &l.version_stage {
            s.push_str(&format!(", stage {v}"));
        }
        s
    }

    fn fetch(&self, name: &str) -> Result<Secret, SourceError> {
        let l = self.config.locate(self.environment, name);
        // Checked at config load too; checked again here, where it is used.
        self.environment
            .allows(&l.secret_id)
            .map_err(SourceError::Permanent)?;
        let call = self
            .client
            .get_secret_value()
            .secret_id(&l.secret_id)
            .set_version_stage(l.version_stage.clone())
            .send();
        let at = Request {
            secret_id: &l.secret_id,
            region: &self.config.region,
            endpoint: self.config.endpoint_url.as_deref(),
            timeout: self.timeout,
        };
        let mut out = self.runtime.block_on(call).map_err(|e| classify(&e, &at))?;
        // Move the SDK's buffers into zeroizing ones; nothing is copied.
        let value = if let Some(s) = out.secret_string.take() {
            Secret::new(s.into_bytes())
        } else if let Some(b) = out.secret_binary.take() {
            Secret::new(b.into_inner())
        } else {
            return Err(SourceError::Permanent(format!(
                "secret {} has no value (neither SecretString nor SecretBinary)",
                l.secret_id
            )));
        };
        drop(out);
        match &l.json_key {
            Some(key) => super::json_key(&value, key).map_err(|e| match e {
                SourceError::Permanent(m) => {
                    SourceError::Permanent(format!("secret {}: {m}", l.secret_id))
                }
                other => other,
            }),
            None => Ok(value),
        }
    }
}

/// Sorts an SDK error into transient (try again), auth (stop) and
/// permanent (this secret only), said as a sentence with the fix.
fn classify(e: &SdkError<GetSecretValueError>, at: &Request) -> SourceError {
    let text = explain(e, at);
    let service = match e {
        SdkError::ServiceError(s) => s,
        // The request could not even be built, or there were no
        // credentials to sign it with: an access problem.
        SdkError::ConstructionFailure(_) => return SourceError::Auth(text),
        _ if text.starts_with("found no AWS credentials") => return SourceError::Auth(text),
        // Timeouts, refused connections, DNS, a garbled answer: try again.
        _ => return SourceError::Transient(text),
    };
    let status = service.raw().status().as_u16();
    let err = service.err();
    let code = err.code().unwrap_or_default();
    match err {
        GetSecretValueError::ResourceNotFoundException(_)
        // Deleted (scheduled for deletion) or otherwise unusable secrets.
        | GetSecretValueError::InvalidRequestException(_)
        | GetSecretValueError::InvalidParameterException(_) => {
            return SourceError::Permanent(text)
        }
        // KMS would not decrypt it for us: an access problem.
        GetSecretValueError::DecryptionFailure(_) => return SourceError::Auth(text),
        GetSecretValueError::InternalServiceError(_) => return SourceError::Transient(text),
        _ => {}
    }
    const THROTTLED: &[&str] = &[
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
    ];
    const AUTH: &[&str] = &[
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredTokenException",
        "ExpiredToken",
        "MissingAuthenticationToken",
        "AuthFailure",
    ];
    if THROTTLED.contains(&code) || status == 429 || status >= 500 {
        SourceError::Transient(text)
    } else if AUTH.contains(&code) || status == 401 || status == 403 {
        SourceError::Auth(text)
    } else {
        SourceError::Permanent(text)
    }
}
