//! An AWS SDK error, said as a sentence with the fix: no credentials, a
//! region or endpoint that does not answer, a permission missing, a secret
//! not found. Never the SDK's debug dump (which holds whole HTTP
//! responses): only error codes, AWS's own one-line messages and the parts
//! of the configuration they concern.

use std::error::Error;
use std::time::Duration;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

/// What the request was for, to name in the sentence.
pub struct Request<'a> {
    pub secret_id: &'a str,
    pub region: &'a str,
    pub endpoint: Option<&'a str>,
    pub timeout: Duration,
}

impl Request<'_> {
    fn endpoint(&self) -> String {
        match self.endpoint {
            Some(e) => format!("endpoint_url {e}"),
            None => format!("the Secrets Manager endpoint of region {}", self.region),
        }
    }
}

/// The texts of `e` and of every error it was caused by.
fn chain(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        out.push(err.to_string());
        cur = err.source();
    }
    out
}

/// The sentence for `e`.
pub fn explain(e: &SdkError<GetSecretValueError>, at: &Request) -> String {
    if let SdkError::ServiceError(s) = e {
        let status = s.raw().status().as_u16();
        let body = s.raw().body().bytes().unwrap_or_default();
        return service(s.err(), status, body, at);
    }
    let texts = chain(e).join(": ").to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| texts.contains(w));
    if has(&[
        "no credentials",
        "credential provider",
        "credentialsnotloaded",
    ]) {
        return "found no AWS credentials (not in the environment, a profile, web identity, \
                ECS nor the instance's role): give credloader-sync.service an instance role, \
                or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in a drop-in \
                (docs/aws.md)"
            .into();
    }
    if matches!(e, SdkError::TimeoutError(_)) || has(&["timed out", "timeout"]) {
        return format!(
            "no answer from {} within {} s: check this host's network and firewall (HTTPS to \
             AWS), or raise [sources] timeout_sec",
            at.endpoint(),
            at.timeout.as_secs()
        );
    }
    if has(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
    ]) {
        return format!(
            "cannot resolve the host of {}: check region = \"{}\" in [sources.aws] (an AWS \
             region such as eu-west-1) and endpoint_url, and this host's DNS",
            at.endpoint(),
            at.region
        );
    }
    if has(&["connection refused"]) {
        return format!(
            "cannot connect to {}: connection refused; check endpoint_url in [sources.aws] and \
             that the endpoint is up",
            at.endpoint()
        );
    }
    if has(&["certificate", "tls", "handshake"]) {
        return format!(
            "the TLS connection to {} failed: check the endpoint's certificate, this host's \
             clock and its CA certificates (ca-certificates)",
            at.endpoint()
        );
    }
    let last = chain(e).pop().unwrap_or_default();
    format!("the request to {} failed: {last}", at.endpoint())
}

/// AWS answered with an error.
fn service(err: &GetSecretValueError, status: u16, body: &[u8], at: &Request) -> String {
    let code = err
        .code()
        .map(str::to_string)
        .or_else(|| xml_code(body))
        .unwrap_or_default();
    let message = err.message().unwrap_or_default();
    let said = match (code.is_empty(), message.is_empty()) {
        (true, _) => format!("HTTP {status}"),
        (false, true) => code.clone(),
        (false, false) => format!("{code}: {message}"),
    };
    let id = at.secret_id;
    match code.as_str() {
        "ResourceNotFoundException" => format!(
            "not found ({code}): there is no secret {id} in region {}; check secret_id (or \
             [sources.aws.credentials.NAME]) and region",
            at.region
        ),
        "AccessDeniedException" | "AccessDenied" => format!(
            "AWS denied access to secret {id} ({said}): the identity credloader runs with \
             needs secretsmanager:GetSecretValue on it (and kms:Decrypt on its key); see the \
             IAM policy in docs/aws.md"
        ),
        "DecryptionFailure" => format!(
            "AWS KMS would not decrypt secret {id} ({said}): the identity credloader runs \
             with needs kms:Decrypt on the secret's KMS key"
        ),
        "ExpiredTokenException" | "ExpiredToken" => format!(
            "the AWS credentials have expired ({said}): renew them (a role's credentials renew \
             themselves; a static session token does not)"
        ),
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => {
            format!(
                "AWS does not accept the credentials ({said}): the access key is unknown, its \
                 secret is wrong, or it is for another account or partition; check the \
                 identity credloader-sync.service runs with (docs/aws.md)"
            )
        }
        c if c.contains("Throttl") || status == 429 => {
            format!("AWS throttled the request ({said}); if it persists, sync less often")
        }
        _ if status >= 500 => format!("AWS had a server error ({said})"),
        _ if status == 401 || status == 403 => format!(
            "AWS refused the request for secret {id} ({said}): its credentials are not \
             accepted or lack permission; check the identity and its IAM policy (docs/aws.md)"
        ),
        _ => format!("AWS refused the request for secret {id} ({said})"),
    }
}

/// `<Code>X</Code>` of an XML error body (some endpoints answer a JSON
/// API's errors in XML, and the SDK then finds no code).
fn xml_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    code.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.')
        .then(|| code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xml_error_body_gives_its_code() {
        let body = b"<?xml version=\"1.0\"?><ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code>\
                     <Message>The security token included in the request is invalid.</Message></Error></Errors></ErrorResponse>";
        assert_eq!(xml_code(body).as_deref(), Some("InvalidClientTokenId"));
        assert_eq!(xml_code(b"{}"), None);
        assert_eq!(xml_code(b"<Code>a b</Code>"), None);
    }
}
