//! The command line: every flag is defined once here, and `--help`, the man
//! page and shell completions are all generated from these definitions.

use std::path::PathBuf;

use autosnap_core::duration::CalendarDuration;
use autosnap_core::ids::{SnapshotId, SnapshotTarget};
use autosnap_core::retention::Count;
use autosnap_core::tags::TagArg;
use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Back up AWS EC2 with EBS snapshots and AMIs";

const LONG_ABOUT: &str = "\
autosnap backs up AWS EC2 with EBS snapshots and AMIs: it lists, creates, copies \
and safely deletes snapshots, restores volumes from them, and tags everything it \
creates so that it only ever deletes what it owns.

Credentials come from the standard AWS chain (environment, shared profiles, SSO, \
web identity, instance metadata); see `autosnap config show` for what is in effect.";

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 partial failure \
(some items succeeded, some failed).";

#[derive(Debug, Parser)]
#[command(
    name = "autosnap",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file to use
    #[arg(
        short = 'c',
        long,
        global = true,
        value_name = "PATH",
        long_help = "Config file to use. Without it: $AUTOSNAP_CONFIG, then ./autosnap.toml, \
                     then ~/.config/autosnap/config.toml; with none of them, built-in defaults."
    )]
    pub config: Option<PathBuf>,

    /// AWS profile to use (overrides AWS_PROFILE and the config file)
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

    /// AWS region to use (overrides AWS_REGION and the config file)
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// Send AWS calls to this endpoint (e.g. a local emulator)
    #[arg(
        long,
        global = true,
        value_name = "URL",
        long_help = "Send all AWS calls to this endpoint instead of AWS, for example a local \
                     emulator. Without it, AWS_ENDPOINT_URL and the per-service variables \
                     (AWS_ENDPOINT_URL_EC2, …) apply, then endpoint_url in the config file."
    )]
    pub endpoint_url: Option<String>,

    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// More log output (-v info details, -vv debug, -vvv everything including the AWS SDK)
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only log errors
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Never draw progress bars or spinners
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Log line format (logs go to standard error)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables
    Table,
    /// Stable JSON (documented in docs/json-output.md)
    Json,
    /// Prometheus text format (`status` only), for node-exporter's textfile collector
    Prometheus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented starter config file
    #[command(
        long_about = "Write a commented starter config file. The account id and region are \
                      discovered from the credential chain (STS GetCallerIdentity); secrets are \
                      never written. Writes to -c PATH, else $AUTOSNAP_CONFIG, else \
                      ~/.config/autosnap/config.toml."
    )]
    Init(InitArgs),

    /// Show or check the configuration
    #[command(subcommand)]
    Config(ConfigCommand),

    /// List EBS volumes and create volumes from snapshots
    #[command(subcommand, visible_alias = "volumes")]
    Volume(VolumeCommand),

    /// List, create, delete and copy EBS snapshots
    #[command(subcommand, visible_alias = "snapshots")]
    Snapshot(SnapshotCommand),

    /// Show what `run` would do now, and why (reads the account, changes nothing)
    Plan(PolicyArgs),

    /// Run the backup policies: create due backups, copy them, delete expired ones
    Run(RunArgs),

    /// Delete the backups retention no longer keeps (creates nothing)
    Prune(PruneArgs),

    /// Coverage: what is protected, late or missing, and what no policy covers
    Status(StatusArgs),

    /// Run the policies on their schedules until stopped (SIGTERM/SIGINT)
    Daemon(DaemonArgs),

    /// Preview retention rules offline
    #[command(subcommand)]
    Retention(RetentionCommand),

    /// Print a shell completion script
    Completions(CompletionsArgs),

    /// Print the man page (or write all pages to a directory)
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing file (the old one is kept as <file>.bak)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration and where each value comes from (secrets redacted)
    Show,
    /// Validate the config file and the credentials; non-zero exit on problems
    Check,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List volumes with their newest snapshot
    #[command(visible_alias = "ls")]
    List(VolumeListArgs),
    /// Create a new volume from a snapshot (the restore path)
    Create(VolumeCreateArgs),
}

#[derive(Debug, Args)]
pub struct VolumeListArgs {
    /// Only volumes with this tag (KEY=VALUE, or KEY for any value); repeatable, all must match
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<TagArg>,
    /// Only volumes attached to this instance
    #[arg(long, value_name = "INSTANCE_ID")]
    pub instance: Option<autosnap_core::ids::InstanceId>,
}

#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// Snapshot to create the volume from
    #[arg(long, value_name = "SNAPSHOT_ID")]
    pub snapshot: SnapshotId,
    /// Availability zone for the new volume, e.g. us-east-1a
    #[arg(long, visible_alias = "az", value_name = "AZ")]
    pub availability_zone: String,
    /// Volume type (gp3, gp2, io1, io2, st1, sc1, standard)
    #[arg(long = "type", value_name = "TYPE")]
    pub volume_type: Option<String>,
    /// Size in GiB (default: the snapshot's size; never smaller)
    #[arg(long, value_name = "GIB")]
    pub size: Option<i32>,
    /// Provisioned IOPS (io1, io2, gp3)
    #[arg(long)]
    pub iops: Option<i32>,
    /// Throughput in MiB/s (gp3)
    #[arg(long)]
    pub throughput: Option<i32>,
    /// Encrypt the volume with this KMS key (id, ARN or alias/NAME)
    #[arg(long, value_name = "KEY")]
    pub kms_key: Option<String>,
    /// Encrypt the volume with the account's default EBS key
    #[arg(long)]
    pub encrypted: bool,
    /// Tag for the new volume (KEY=VALUE); repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<TagArg>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// Wait until the work is complete, showing progress
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 30m, 2h)
    #[arg(long, value_name = "DURATION", default_value = "2h", requires = "wait")]
    pub wait_timeout: String,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List this account's snapshots, newest first
    #[command(visible_alias = "ls")]
    List(SnapshotListArgs),
    /// Snapshot volumes, or all volumes of an instance as one crash-consistent set
    Create(SnapshotCreateArgs),
    /// Delete snapshots autosnap created (others only with --force)
    #[command(visible_alias = "rm")]
    Delete(SnapshotDeleteArgs),
    /// Copy snapshots to another region, optionally re-encrypting them
    #[command(visible_alias = "cp")]
    Copy(SnapshotCopyArgs),
}

#[derive(Debug, Args)]
pub struct SnapshotListArgs {
    /// Only snapshots of this volume; repeatable
    #[arg(long = "volume", value_name = "VOLUME_ID")]
    pub volumes: Vec<autosnap_core::ids::VolumeId>,
    /// Only snapshots with this tag (KEY=VALUE, or KEY for any value); repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<TagArg>,
    /// Only snapshots autosnap created (tagged autosnap:managed=true)
    #[arg(long)]
    pub managed: bool,
    /// Only snapshots older than this (e.g. 12h, 30d, 2w)
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotCreateArgs {
    /// Volume ids (vol-…), instance ids (i-…, one crash-consistent set of all its volumes), or mount paths on this instance (/mnt/data)
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<SnapshotTarget>,
    /// Extra tag for the snapshots (KEY=VALUE); repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<TagArg>,
    /// Snapshot description (default names autosnap and the source)
    #[arg(long)]
    pub description: Option<String>,
    /// For instance targets: leave out the boot volume
    #[arg(long)]
    pub exclude_boot: bool,
    /// Do not copy the volume's own tags (Name, …) onto its snapshots
    #[arg(long)]
    pub no_copy_tags: bool,
    #[command(flatten)]
    pub consistency: ConsistencyArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Consistency on the instance: for mount path targets only.
#[derive(Debug, Args, Clone, Default)]
pub struct ConsistencyArgs {
    /// Freeze the filesystems (FIFREEZE) around the snapshot call, so the snapshot is filesystem-consistent
    #[arg(long, help_heading = "Consistency (mount path targets)")]
    pub freeze: bool,
    /// Run this shell command before freezing (e.g. flush and lock a database); repeatable
    #[arg(
        long = "pre",
        value_name = "CMD",
        help_heading = "Consistency (mount path targets)"
    )]
    pub pre: Vec<String>,
    /// Run this shell command after thawing, always, even on failure; repeatable
    #[arg(
        long = "post",
        value_name = "CMD",
        help_heading = "Consistency (mount path targets)"
    )]
    pub post: Vec<String>,
    /// A watchdog process thaws the filesystems after this long, whatever happens to autosnap
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        help_heading = "Consistency (mount path targets)"
    )]
    pub freeze_timeout: String,
    /// Kill a hook that runs longer than this
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        help_heading = "Consistency (mount path targets)"
    )]
    pub hook_timeout: String,
    /// When a pre hook fails: fail (no snapshot), or take a crash-consistent snapshot and tag it so
    #[arg(long, value_enum, default_value_t = HookFailure::Fail, help_heading = "Consistency (mount path targets)")]
    pub on_hook_failure: HookFailure,
    /// State the volume behind a mount where autosnap cannot discover it (MOUNT=VOLUME_ID); repeatable
    #[arg(
        long = "volume",
        value_name = "MOUNT=VOLUME_ID",
        help_heading = "Consistency (mount path targets)"
    )]
    pub volumes: Vec<String>,
    /// Freeze even the root filesystem or the one holding autosnap's own files (it can hang the process that must thaw it)
    #[arg(long, help_heading = "Consistency (mount path targets)")]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum HookFailure {
    /// No snapshot, non-zero exit (post hooks still run)
    #[default]
    Fail,
    /// Take a crash-consistent snapshot instead, tagged autosnap:consistency=crash
    Crash,
}

#[derive(Debug, Args)]
pub struct SnapshotDeleteArgs {
    /// Snapshot ids to delete
    #[arg(required = true, value_name = "SNAPSHOT_ID")]
    pub ids: Vec<SnapshotId>,
    /// Show what would be deleted and why, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete snapshots autosnap did not create
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotCopyArgs {
    /// Snapshot ids to copy (from the configured region)
    #[arg(required = true, value_name = "SNAPSHOT_ID")]
    pub ids: Vec<SnapshotId>,
    /// Destination region
    #[arg(long, value_name = "REGION")]
    pub to_region: String,
    /// Encrypt the copies with this KMS key in the destination region (id, ARN or alias/NAME)
    #[arg(long, value_name = "KEY")]
    pub kms_key: Option<String>,
    /// Encrypt the copies with the destination's default EBS key
    #[arg(long)]
    pub encrypt: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// Only this policy (repeatable; default: all policies in the config)
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Longest wait for a new backup to complete before copying it (e.g. 2h)
    #[arg(long, value_name = "DURATION", default_value = "6h")]
    pub wait_timeout: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print what would be deleted and why, delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Exit with 1 when any target is late or missing, or any volume or instance is unprotected
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// On SIGTERM/SIGINT, let in-flight work finish for at most this long
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub shutdown_timeout: String,
    /// Re-read the account at least this often (new volumes are picked up)
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub max_sleep: String,
    /// After a failed run, try again after this long
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub retry_after: String,
    /// Longest wait for a new backup to complete before copying it
    #[arg(long, value_name = "DURATION", default_value = "6h")]
    pub wait_timeout: String,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Apply retention rules to a list of backups and show what is kept and why
    #[command(
        long_about = "Apply retention rules to a list of backups and show, for every \
        backup, whether it is kept and by which rules. Works offline. The rules mean exactly \
        what they mean in restic's `forget`. Input: a JSON array of \
        {\"id\": \"...\", \"time\": \"RFC 3339\", \"tags\": [\"...\"]}."
    )]
    Simulate(RetentionSimulateArgs),
}

#[derive(Debug, Args)]
pub struct RetentionSimulateArgs {
    /// JSON file with the backups, or - for standard input
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Keep the N newest backups (a count or `unlimited`)
    #[arg(long, value_name = "N")]
    pub keep_last: Option<Count>,
    /// Keep the newest backup of each of the N newest hours that have backups
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<Count>,
    /// Keep the newest backup of each of the N newest days that have backups
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<Count>,
    /// Keep the newest backup of each of the N newest ISO weeks that have backups
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<Count>,
    /// Keep the newest backup of each of the N newest months that have backups
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<Count>,
    /// Keep the newest backup of each of the N newest years that have backups
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<Count>,
    /// Keep every backup newer than the newest backup minus DURATION (e.g. 2d, 1y2m3d4h)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<CalendarDuration>,
    /// Keep one backup per hour within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<CalendarDuration>,
    /// Keep one backup per day within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<CalendarDuration>,
    /// Keep one backup per ISO week within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<CalendarDuration>,
    /// Keep one backup per month within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<CalendarDuration>,
    /// Keep one backup per year within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<CalendarDuration>,
    /// Keep backups carrying all of these tags (comma-separated); repeatable
    #[arg(long, value_name = "TAG[,TAG]")]
    pub keep_tag: Vec<String>,
    /// Evaluate as of this time (RFC 3339; default: now)
    #[arg(long, value_name = "TIME")]
    pub now: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate completions for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write autosnap.1 and one page per subcommand into this directory
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn plural_aliases_parse() {
        let cli = Cli::try_parse_from(["autosnap", "snapshots", "list"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Snapshot(SnapshotCommand::List(_))
        ));
        let cli = Cli::try_parse_from(["autosnap", "volumes", "list"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Volume(VolumeCommand::List(_))
        ));
    }

    #[test]
    fn malformed_ids_are_usage_errors() {
        let err = Cli::try_parse_from(["autosnap", "snapshot", "delete", "snap-zz"]).unwrap_err();
        assert!(err.to_string().contains("not a valid snapshot id"), "{err}");
        let err =
            Cli::try_parse_from(["autosnap", "snapshot", "create", "ami-0123abcd"]).unwrap_err();
        assert!(err.to_string().contains("volume id"), "{err}");
    }

    #[test]
    fn wait_timeout_requires_wait() {
        assert!(Cli::try_parse_from([
            "autosnap",
            "snapshot",
            "create",
            "vol-0123abcd",
            "--wait-timeout",
            "5m"
        ])
        .is_err());
    }
}
