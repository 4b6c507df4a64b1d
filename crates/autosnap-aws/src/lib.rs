//! autosnap's AWS layer: client construction (credential chain, profile,
//! assumed role, endpoint override, retries) and thin typed wrappers over
//! EC2 and STS that return autosnap-core models and classified errors.
//!
//! Nothing here decides *what* to do; the CLI and the planning code decide,
//! this crate only does it.

pub mod accounts;
pub mod adaptive;
pub mod ami;
pub mod ami_flow;
pub mod backup_account;
pub mod config_source;
pub mod context;
pub mod ebs;
pub mod ec2;
pub mod engine_ports;
pub mod error;
pub mod execute;
pub mod imds;
pub mod inventory;
pub mod kms;
pub mod lock;
pub mod rate;
pub mod recycle_bin;
pub mod restore_test;
pub mod s3;
pub mod s3_backend;
pub mod tier;

pub use context::{AwsContext, AwsSettings, CallerIdentity, StaticKeys};
pub use ec2::{Ec2, NewVolume, SnapshotQuery, VolumeQuery, WaitObserver};
pub use error::{AwsError, CallSite};
