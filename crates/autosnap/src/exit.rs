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
                AwsError::NoRegion | AwsError::NoCredentials { .. } => Exit::Usage,
                _ => Exit::Failure,
            };
        }
    }
    Exit::Failure
}
