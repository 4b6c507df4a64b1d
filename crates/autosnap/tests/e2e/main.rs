//! End-to-end tests: the real `autosnap` binary against a test bed each test starts for
//! itself (see support/mod.rs). One test binary, one module per area, so the AWS SDK these
//! tests link is linked once.

mod support;

mod accounts;
mod ami;
mod archive;
mod archive_after;
mod archive_ami;
mod backup_account;
mod cli;
mod confirm;
mod consistency;
mod dry_run;
mod durations;
mod errors;
mod help;
mod instance_snapshots;
mod interrupt;
mod json_mode;
mod lambda;
mod lambda_templates;
mod local_trust;
mod policies;
mod protecting_backups;
mod recycle_bin;
mod repo_trust;
mod restore_targets;
mod restore_test;
mod retention_simulate;
mod snapshot_lock;
mod snapshot_tier;
mod time_limit;
mod transfer_buffers;
mod trust_restore;
