//! autosnap's pure core: the types, parsing and decisions that do not need AWS.
//!
//! Nothing in this crate talks to the AWS SDK, starts a tokio runtime, reads the clock or does
//! I/O: functions take the data and the current time (`now`) as parameters and return values,
//! so everything here is deterministic and unit-testable.

pub mod duration;
pub mod retention;

pub mod plan;
pub mod policy;
pub mod schedule;
pub mod variables;

pub mod ami;
pub mod ami_create;
pub mod archive_plan;
pub mod iam;

pub mod accounts;
pub mod backup_account;
pub mod config;
pub mod deletion;
pub mod ids;
pub mod lock;
pub mod model;
pub mod recycle_bin;
pub mod region;
pub mod restore_test;
pub mod tags;
pub mod tier;
