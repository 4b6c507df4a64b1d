//! Exit codes, documented in `autosnap --help` and the README.

use autosnap_aws::AwsError;
use autosnap_core::config::ConfigError;
use autosnap_core::ids::MalformedId;
use autosnap_core::tags::TagError;

/// What the process exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Success = 0,
    /// Nothing (or the one thing) asked for could be done.
    Failure = 1,
    /// The command line or the configuration is wrong; nothing was done.
    Usage = 2,
    /// Some items succeeded and some failed; a summary says which.
    Partial = 3,
    /// SIGINT or SIGTERM stopped a wait; what was created is printed and
    /// continues in AWS (128 + SIGINT, as shells report it).
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Picks the exit for a set of per-item results.
    pub fn from_counts(succeeded: usize, failed: usize) -> Exit {
        match (succeeded, failed) {
            (_, 0) => Exit::Success,
            (0, _) => Exit::Failure,
            _ => Exit::Partial,
        }
    }
}

/// A mistake in how autosnap was invoked or configured; exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Maps an error that reached `main` to its exit code.
pub fn exit_for_error(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.is::<UsageError>()
            || cause.is::<ConfigError>()
            || cause.is::<MalformedId>()
            || cause.is::<TagError>()
        {
            return Exit::Usage;
        }
        if let Some(aws) = cause.downcast_ref::<AwsError>() {
            return match aws {
                AwsError::NoRegion
                | AwsError::InvalidRegion { .. }
                | AwsError::NoCredentials { .. } => Exit::Usage,
                _ => Exit::Failure,
            };
        }
    }
    Exit::Failure
}

/// An error met while finding, reading or checking the config file: its
/// message is the inner error's, its kind for `-o json` is `config`.
#[derive(Debug)]
pub struct ConfigProblem {
    /// The config file named on the command line, if it was.
    pub path: Option<std::path::PathBuf>,
    pub error: anyhow::Error,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ConfigProblem {
    // The inner error's own causes follow, so exit codes and messages are its.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let inner: &(dyn std::error::Error + Send + Sync + 'static) = self.error.as_ref();
        Some(inner)
    }
}

/// What an error that reached `main` is, for the error object of `-o json`
/// (docs/json-output.md): a stable kind a script can branch on, and the
/// resource the error names (an id, a path, a flag) when it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorClass {
    pub kind: &'static str,
    pub resource: Option<String>,
}

impl ErrorClass {
    fn new(kind: &'static str, resource: Option<String>) -> ErrorClass {
        ErrorClass { kind, resource }
    }
}

/// Classifies by the first typed error in the chain (context strings added
/// on the way up are skipped); anything unrecognised is `failed`.
pub fn classify_error(err: &anyhow::Error) -> ErrorClass {
    for cause in err.chain() {
        if let Some(p) = cause.downcast_ref::<ConfigProblem>() {
            // The file the inner error names, else the one given with -c.
            let inner = classify_error(&p.error);
            let resource = match inner.kind {
                "config" => inner.resource,
                _ => p.path.as_ref().map(|p| p.display().to_string()),
            };
            return ErrorClass::new("config", resource);
        }
        if cause.is::<UsageError>() || cause.is::<TagError>() {
            return ErrorClass::new("usage", None);
        }
        if let Some(e) = cause.downcast_ref::<MalformedId>() {
            return ErrorClass::new("usage", Some(e.input.clone()));
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            let path = match e {
                ConfigError::Read { path, .. }
                | ConfigError::Parse { path, .. }
                | ConfigError::Invalid { path, .. } => path,
            };
            return ErrorClass::new("config", Some(path.display().to_string()));
        }
        if let Some(aws) = cause.downcast_ref::<AwsError>() {
            return classify_aws(aws);
        }
        if let Some(e) = cause.downcast_ref::<autosnap_repo::Error>() {
            return classify_repo(e);
        }
        if let Some(e) = cause.downcast_ref::<autosnap_repo::BackendError>() {
            return classify_backend(e);
        }
        if cause.is::<std::io::Error>() {
            return ErrorClass::new("io", None);
        }
    }
    ErrorClass::new("failed", None)
}

fn classify_aws(aws: &AwsError) -> ErrorClass {
    let (kind, resource) = match aws {
        AwsError::NotFound { id, .. } => ("not_found", Some(id.clone())),
        AwsError::InUse { id, .. } => ("in_use", Some(id.clone())),
        AwsError::InvalidRequest { .. } => ("invalid_request", None),
        AwsError::NoCredentials { .. } | AwsError::BadCredentials { .. } => ("credentials", None),
        AwsError::AccessDenied { .. } => ("access_denied", None),
        AwsError::Throttled { .. } => ("throttled", None),
        AwsError::LimitExceeded { .. } => ("limit_exceeded", None),
        AwsError::Unreachable { endpoint, .. } => ("unreachable", Some(endpoint.clone())),
        AwsError::NoRegion | AwsError::InvalidRegion { .. } => ("config", None),
        AwsError::WaitTimeout { .. } => ("timeout", None),
        // BadResponse, Service, Failed, Other, and any kind added later.
        _ => ("aws", None),
    };
    ErrorClass::new(kind, resource)
}

fn classify_repo(e: &autosnap_repo::Error) -> ErrorClass {
    use autosnap_repo::Error as E;
    match e {
        E::Backend(b) => classify_backend(b),
        E::ArchiveNotFound { id } => ErrorClass::new("not_found", Some(id.clone())),
        E::Locked { .. } | E::LockLost { .. } => ErrorClass::new("locked", None),
        E::CorruptChunk { id, .. } | E::MissingChunk { id } => {
            ErrorClass::new("corrupt", Some(id.to_string()))
        }
        E::CorruptObject { name, .. } => ErrorClass::new("corrupt", Some(name.clone())),
        _ => ErrorClass::new("repository", None),
    }
}

fn classify_backend(e: &autosnap_repo::BackendError) -> ErrorClass {
    use autosnap_repo::BackendError as B;
    match e {
        B::NotFound { name } => ErrorClass::new("not_found", Some(name.clone())),
        B::TooLarge { name, .. } => ErrorClass::new("corrupt", Some(name.clone())),
        B::Io { name, .. } => ErrorClass::new("io", Some(name.clone())),
        _ => ErrorClass::new("repository", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn class(err: anyhow::Error) -> (&'static str, Option<String>) {
        let c = classify_error(&err);
        (c.kind, c.resource)
    }

    #[test]
    fn the_first_typed_error_under_the_context_decides_the_kind() {
        let missing = AwsError::NotFound {
            kind: "snapshot",
            id: "snap-0123456789abcdef0".into(),
            region: "us-east-1".into(),
            account: String::new(),
        };
        let err = Err::<(), _>(missing).context("cannot copy").unwrap_err();
        assert_eq!(
            class(err),
            ("not_found", Some("snap-0123456789abcdef0".into()))
        );
        let archive = autosnap_repo::Error::ArchiveNotFound { id: "x".into() };
        assert_eq!(class(archive.into()), ("not_found", Some("x".into())));
        assert_eq!(class(UsageError("bad".into()).into()).0, "usage");
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no");
        assert_eq!(class(io.into()).0, "io");
        assert_eq!(class(anyhow::anyhow!("something")).0, "failed");
    }

    #[test]
    fn a_config_problem_names_the_file_and_keeps_the_exit_code() {
        let inner: anyhow::Error = UsageError("config file /x.toml does not exist".into()).into();
        let err: anyhow::Error = ConfigProblem {
            path: Some("/x.toml".into()),
            error: inner,
        }
        .into();
        let c = classify_error(&err);
        assert_eq!((c.kind, c.resource.as_deref()), ("config", Some("/x.toml")));
        assert_eq!(exit_for_error(&err), Exit::Usage);
        assert_eq!(err.to_string(), "config file /x.toml does not exist");
    }
}
