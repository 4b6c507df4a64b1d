//! AWS errors, classified by error code (never by message text) and phrased
//! for a person: what failed, on which resource, and what to do about it.

use std::error::Error as StdError;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Where a call went, for messages: region, account (when known) and the
/// endpoint when it was overridden.
#[derive(Debug, Clone, Default)]
pub struct CallSite {
    pub service: &'static str,
    pub region: String,
    pub account: Option<String>,
    pub endpoint: Option<String>,
}

impl CallSite {
    fn account_suffix(&self) -> String {
        match &self.account {
            Some(a) => format!(" for account {a}"),
            None => String::new(),
        }
    }

    fn endpoint_text(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("the AWS {} endpoint in {}", self.service, self.region),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{kind} {id} does not exist in {region}{account}")]
    NotFound {
        kind: &'static str,
        id: String,
        region: String,
        account: String,
    },

    #[error("{kind} {id} is in use: {detail}")]
    InUse {
        kind: &'static str,
        id: String,
        detail: String,
    },

    #[error("AWS rejected {operation} as invalid ({code}): {message}")]
    InvalidRequest {
        operation: &'static str,
        code: String,
        message: String,
    },

    #[error("no AWS credentials found: set AWS_PROFILE (or --profile), run `aws configure sso` or `aws configure`, or run on an instance with a role ({detail})")]
    NoCredentials { detail: String },

    #[error("AWS did not accept the credentials ({code}): {message}. Check that the keys or profile are current (`aws sts get-caller-identity`)")]
    BadCredentials { code: String, message: String },

    #[error("access denied for {operation} ({code}): {message}. `autosnap iam-policy` prints the permissions autosnap needs")]
    AccessDenied {
        operation: &'static str,
        code: String,
        message: String,
    },

    #[error("AWS is throttling {operation} ({code}) even after retries: run again later, or raise aws.max_attempts")]
    Throttled {
        operation: &'static str,
        code: String,
    },

    #[error("{operation} hit an AWS limit ({code}): {message}")]
    LimitExceeded {
        operation: &'static str,
        code: String,
        message: String,
    },

    #[error("cannot reach {endpoint} for {operation}: {reason}. Check --endpoint-url, AWS_ENDPOINT_URL and the network")]
    Unreachable {
        operation: &'static str,
        endpoint: String,
        reason: String,
    },

    #[error("{operation} got an unexpected response from {endpoint}: {reason}")]
    BadResponse {
        operation: &'static str,
        endpoint: String,
        reason: String,
    },

    #[error("{} failed ({code}): {message}", call_name(.service, .operation))]
    Service {
        service: &'static str,
        operation: &'static str,
        code: String,
        message: String,
    },

    /// An error response without an error code (an empty body, or HTML from a proxy):
    /// all there is to say is which call got which HTTP status.
    #[error("{} failed: HTTP {status} {detail}{hint}", call_name(.service, .operation))]
    HttpStatus {
        service: &'static str,
        operation: &'static str,
        status: u16,
        /// `with no error message`, or `: <the message>`.
        detail: String,
        /// What to do, by status class; may be empty.
        hint: String,
    },

    #[error("no AWS region configured: pass --region, set AWS_REGION, or set region in the [aws] section of the config")]
    NoRegion,

    /// A region from the SDK's own chain (a profile) that cannot be a region.
    #[error("region from {origin}: {problem}. Fix it there, or pass --region")]
    InvalidRegion { origin: String, problem: String },

    #[error("timed out after {waited_secs}s waiting for {what}")]
    WaitTimeout { what: String, waited_secs: u64 },

    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },

    #[error("{operation} failed: {detail}")]
    Other {
        operation: &'static str,
        detail: String,
    },
}

impl AwsError {
    /// Errors that mean "this resource is absent", as opposed to a failure.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AwsError::NotFound { .. })
    }

    /// Turns an SDK error into a classified one. `subject` names the resource
    /// the call was about, e.g. `("snapshot", "snap-…")`.
    pub fn from_sdk<E>(
        err: SdkError<E, HttpResponse>,
        operation: &'static str,
        subject: Option<(&'static str, &str)>,
        site: &CallSite,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let reason = innermost_reason(&err);
        match err {
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                let e = ctx.err();
                let message = e.message().map(str::trim).filter(|m| !m.is_empty());
                match e.code().filter(|c| !c.is_empty()) {
                    Some(code) => classify_code(
                        operation,
                        code.to_string(),
                        message
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("HTTP {status} with no error message")),
                        subject,
                        site,
                    ),
                    None => AwsError::HttpStatus {
                        service: site.service,
                        operation,
                        status,
                        detail: match message {
                            Some(m) => format!("with the message: {m}"),
                            None => "with no error message".into(),
                        },
                        hint: status_hint(status, site),
                    },
                }
            }
            SdkError::DispatchFailure(df) => {
                if df.is_io() || df.is_timeout() {
                    AwsError::Unreachable {
                        operation,
                        endpoint: site.endpoint_text(),
                        reason,
                    }
                } else if reason.to_ascii_lowercase().contains("credentials") {
                    AwsError::NoCredentials { detail: reason }
                } else {
                    AwsError::Other {
                        operation,
                        detail: reason,
                    }
                }
            }
            SdkError::TimeoutError(_) => AwsError::Unreachable {
                operation,
                endpoint: site.endpoint_text(),
                reason: "the request timed out".into(),
            },
            SdkError::ResponseError(_) => AwsError::BadResponse {
                operation,
                endpoint: site.endpoint_text(),
                reason,
            },
            SdkError::ConstructionFailure(_) => {
                if reason.to_ascii_lowercase().contains("credentials") {
                    AwsError::NoCredentials { detail: reason }
                } else {
                    AwsError::Other {
                        operation,
                        detail: reason,
                    }
                }
            }
            _ => AwsError::Other {
                operation,
                detail: reason,
            },
        }
    }
}

/// Maps an AWS error code to a class. Codes come from the EC2, EBS, S3 and
/// STS API references.
pub fn classify_code(
    operation: &'static str,
    code: String,
    message: String,
    subject: Option<(&'static str, &str)>,
    site: &CallSite,
) -> AwsError {
    let not_found = || {
        let (kind, id) = match subject {
            Some((kind, id)) => (kind, id.to_string()),
            None => (kind_from_code(&code), message.clone()),
        };
        AwsError::NotFound {
            kind,
            id,
            region: site.region.clone(),
            account: site.account_suffix(),
        }
    };
    match code.as_str() {
        c if c.ends_with(".NotFound") || c == "ResourceNotFoundException" || c == "NoSuchKey" => {
            not_found()
        }
        // SnapshotLocked: a snapshot under an EBS snapshot lock (see lock.rs).
        "InvalidSnapshot.InUse" | "VolumeInUse" | "InvalidVolume.InUse" | "SnapshotLocked" => {
            let (kind, id) = subject.unwrap_or(("resource", ""));
            AwsError::InUse {
                kind,
                id: id.to_string(),
                detail: message,
            }
        }
        "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "UnrecognizedClientException"
        | "InvalidAccessKeyId" => AwsError::BadCredentials { code, message },
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "OptInRequired" => {
            AwsError::AccessDenied {
                operation,
                code,
                message,
            }
        }
        "RequestLimitExceeded"
        | "Throttling"
        | "ThrottlingException"
        | "RequestThrottledException"
        | "SlowDown" => AwsError::Throttled { operation, code },
        "ResourceLimitExceeded"
        | "ConcurrentSnapshotLimitExceeded"
        | "SnapshotLimitExceeded"
        | "SnapshotCreationPerVolumeRateExceeded"
        | "VolumeLimitExceeded"
        | "ServiceQuotaExceededException" => AwsError::LimitExceeded {
            operation,
            code,
            message,
        },
        c if c.ends_with(".Malformed")
            || c.starts_with("InvalidParameter")
            || c == "MissingParameter"
            || c == "ValidationException"
            || c == "InvalidZone.NotFound" =>
        {
            AwsError::InvalidRequest {
                operation,
                code,
                message,
            }
        }
        _ => AwsError::Service {
            service: site.service,
            operation,
            code,
            message,
        },
    }
}

/// `EC2 DescribeVolumes`, or the operation alone when the service is not known.
fn call_name(service: &str, operation: &str) -> String {
    if service.is_empty() {
        operation.to_string()
    } else {
        format!("{service} {operation}")
    }
}

/// What to do about an HTTP status that came without an AWS error code.
fn status_hint(status: u16, site: &CallSite) -> String {
    match status {
        403 => {
            ". Check the credentials, and `autosnap iam-policy` for the permissions autosnap needs"
                .into()
        }
        404 | 405 => format!(
            ". {} does not serve this call: check --endpoint-url and AWS_ENDPOINT_URL",
            site.endpoint_text()
        ),
        500..=599 => format!(
            ". {} answered with a server error, after retries: run again later, or raise \
             aws.max_attempts",
            site.endpoint_text()
        ),
        _ => String::new(),
    }
}

fn kind_from_code(code: &str) -> &'static str {
    match code.split('.').next().unwrap_or("") {
        "InvalidSnapshot" => "snapshot",
        "InvalidVolume" => "volume",
        "InvalidInstanceID" => "instance",
        "InvalidAMIID" => "AMI",
        "InvalidKeyPair" => "key pair",
        _ => "resource",
    }
}

/// The most specific message in an error's source chain (for example
/// "Connection refused (os error 111)").
fn innermost_reason(err: &(dyn StdError + 'static)) -> String {
    let mut last = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() {
            last = s;
        }
        cur = e.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> CallSite {
        CallSite {
            service: "EC2",
            region: "us-east-1".into(),
            account: Some("123456789012".into()),
            endpoint: None,
        }
    }

    #[test]
    fn not_found_names_resource_region_and_account() {
        let e = classify_code(
            "DescribeSnapshots",
            "InvalidSnapshot.NotFound".into(),
            "The snapshot 'snap-1' does not exist.".into(),
            Some(("snapshot", "snap-0123abcd")),
            &site(),
        );
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "snapshot snap-0123abcd does not exist in us-east-1 for account 123456789012"
        );
    }

    #[test]
    fn codes_map_to_classes() {
        let c = |code: &str| classify_code("Op", code.into(), "m".into(), None, &site());
        assert!(matches!(
            c("RequestLimitExceeded"),
            AwsError::Throttled { .. }
        ));
        assert!(matches!(
            c("UnauthorizedOperation"),
            AwsError::AccessDenied { .. }
        ));
        assert!(matches!(c("AuthFailure"), AwsError::BadCredentials { .. }));
        assert!(matches!(c("InvalidSnapshot.InUse"), AwsError::InUse { .. }));
        assert!(matches!(
            c("InvalidVolumeID.Malformed"),
            AwsError::InvalidRequest { .. }
        ));
        assert!(matches!(
            c("ResourceLimitExceeded"),
            AwsError::LimitExceeded { .. }
        ));
        assert!(matches!(c("SomethingNew"), AwsError::Service { .. }));
        match c("InvalidVolume.NotFound") {
            AwsError::NotFound { kind, .. } => assert_eq!(kind, "volume"),
            other => panic!("{other:?}"),
        }
    }
}
