//! The command line: every flag is defined once here, and `--help`, the man
//! page and shell completions are all generated from these definitions.

use std::path::PathBuf;

use autosnap_core::duration::{parse_timeout, CalendarDuration};
use autosnap_core::ids::{SnapshotId, SnapshotTarget};
use autosnap_core::retention::KeepPolicy;
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
(some items succeeded, some failed), 130 a --wait interrupted by Ctrl-C or SIGTERM (what was \
created is printed and continues in AWS).

Durations (every DURATION flag and config field): numbers with units y, mo (months), w, d, h, \
min (minutes), s, ms, e.g. 30d, 1y6mo, 1h30min. A bare m is refused: write min or mo. Timeouts \
and intervals take no months or years. See \"Durations\" in the README.";

#[derive(Debug, Parser)]
#[command(
    name = "autosnap",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true,
    disable_version_flag = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Under their own heading, after each command's own options: clap lists a
// subcommand's options first and appends the propagated global ones.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
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

    /// Output format: table or json; prometheus for `status`
    #[arg(
        short = 'o',
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = OutputFormat::Table,
        long_help = OUTPUT_LONG_HELP
    )]
    pub output: OutputFormat,

    /// More log output: -v debug, -vv trace, -vvv also the AWS SDK's trace
    #[arg(
        short = 'v',
        long,
        global = true,
        action = clap::ArgAction::Count,
        long_help = VERBOSE_LONG_HELP
    )]
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

    /// Use a config file that other users could have changed (warns instead of refusing)
    #[arg(
        long,
        global = true,
        long_help = "Use the config file even when someone other than you or root could have \
                     changed it: it is owned by another user, writable by group or others, or \
                     in a directory they can write to. autosnap refuses such a file by default, \
                     because its policies can run hooks (as root when autosnap runs as root). \
                     With this flag it logs a warning and goes on."
    )]
    pub allow_insecure_config: bool,

    /// Print version
    // Defined here rather than by clap, so that -V sits with the other global
    // options in every command's help instead of among the command's own.
    #[arg(short = 'V', long, global = true, action = clap::ArgAction::Version)]
    pub version: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables
    Table,
    /// Stable JSON (documented in docs/json-output.md)
    Json,
    /// Prometheus text format (`status` only), for node-exporter's textfile collector
    // Hidden from every command's list of formats; `status` lists it (see `command`).
    #[value(hide = true)]
    Prometheus,
}

impl OutputFormat {
    /// The formats `command` (its words after `autosnap`, e.g. "snapshot list") prints.
    pub fn supported_by(command: &str) -> &'static [OutputFormat] {
        match command {
            "status" => &[
                OutputFormat::Table,
                OutputFormat::Json,
                OutputFormat::Prometheus,
            ],
            // A shell script and a man page: neither has a JSON form.
            "completions" | "man" => &[OutputFormat::Table],
            _ => &[OutputFormat::Table, OutputFormat::Json],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Json => "json",
            OutputFormat::Prometheus => "prometheus",
        }
    }
}

const OUTPUT_LONG_HELP: &str = "\
Output format on standard output: table (for people) or json (one document, fields in \
docs/json-output.md; errors become one JSON object on standard error). `status` also prints \
prometheus (node-exporter's textfile format); another command given a format it does not \
print refuses with a usage error.";

const VERBOSE_LONG_HELP: &str = "\
More log output on standard error. Default: autosnap's own messages at info, everything else \
(the AWS SDK included) at warn. -v: autosnap at debug (e.g. hook commands and their output, \
archive concurrency changes). -vv: autosnap at trace, with each line's target, and other \
crates (the AWS SDK included) at info. -vvv: everything at trace, the AWS SDK's requests \
included. AUTOSNAP_LOG (a tracing filter such as autosnap_aws=debug) replaces -v and -q.";

/// The clap command, with what derive cannot say: the commands whose formats
/// differ from table and json (`status`, `completions`, `man`) list their own
/// under -o. `--help`, the man page, the completions and parsing all use it.
pub fn command() -> clap::Command {
    use clap::builder::TypedValueParser;
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // The global -o, as defined above (heading, place, long help).
    let global = cmd
        .get_arguments()
        .find(|a| a.get_id() == "output")
        .expect("GlobalArgs defines --output")
        .clone();
    for (name, help) in [
        ("status", "Output format: table, json or prometheus"),
        (
            "completions",
            "Output format: table only (prints a shell script)",
        ),
        ("man", "Output format: table only (prints a man page)"),
    ] {
        let names: Vec<&'static str> = OutputFormat::supported_by(name)
            .iter()
            .map(|f| f.name())
            .collect();
        let output = global.clone().help(help).value_parser(
            clap::builder::PossibleValuesParser::new(names).map(|s: String| {
                <OutputFormat as ValueEnum>::from_str(&s, false).expect("a listed format")
            }),
        );
        cmd = cmd.mut_subcommand(name, |sub| sub.arg(output));
    }
    cmd
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

    /// AMI backups: create (encrypted), register, list, delete safely, metadata, store and restore via S3
    #[command(subcommand, visible_alias = "amis")]
    Ami(AmiCommand),

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

    /// Print the least-privilege IAM policy for autosnap's features (JSON)
    IamPolicy(IamPolicyArgs),

    /// Print a shell completion script
    Completions(CompletionsArgs),

    /// Print the man page (or write all pages to a directory)
    Man(ManArgs),

    /// Archive repositories (local directory or s3://bucket/prefix): init, list, verify, forget, gc
    #[command(subcommand)]
    Repo(RepoCommand),

    /// Upload a raw disk image as a new EBS snapshot (EBS direct APIs)
    Upload(UploadArgs),

    /// Download an EBS snapshot as a sparse raw image file (EBS direct APIs)
    Download(DownloadArgs),

    /// Archive an EBS snapshot or an AMI into a repository (incremental, deduplicated, verified)
    Archive(ArchiveArgs),

    /// Restore an archive to a new snapshot, an AMI, an image file or a block device
    Restore(RestoreArgs),

    /// Prove a target's newest backup restores: a volume from it, every block read, compared
    /// with its archive, the filesystem superblock checked; the result tagged on the backup
    #[command(long_about = TEST_RESTORE_LONG_ABOUT)]
    TestRestore(TestRestoreArgs),
}

const TEST_RESTORE_LONG_ABOUT: &str = "\
Prove that the newest backup of TARGET restores. For each of its snapshots: create a volume from \
it (tagged autosnap:restore-test-run with this run's id), wait until it is available, delete it; \
read every block through the EBS direct APIs, each checked against the SHA-256 EBS sends; with \
--repo, compare the blocks with the snapshot's archive there; check the ext4 or XFS superblock at \
the start of the volume (another filesystem, or none, is not a failure). The result is tagged on \
the backup (autosnap:restore-test, and autosnap:restore-test-passed when it passed) for `status`. \
Restore-test volumes an earlier run left behind (it was killed) are deleted first. Exit 0 when \
the test passed, 1 when it failed, 130 when interrupted (the volume is deleted first).";

/// `autosnap test-restore TARGET`.
#[derive(Debug, Args)]
pub struct TestRestoreArgs {
    /// Snapshot (snap-…), volume (vol-…) or instance (i-…): its newest completed backup is tested
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Only backups this policy made of TARGET
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Compare the blocks with the snapshot's archive in this repository (directory or s3://…)
    #[arg(long = "repo", value_name = "REPO")]
    pub repo: Option<String>,
    /// File holding the repository passphrase (else $AUTOSNAP_REPO_PASSWORD)
    #[arg(long, value_name = "FILE", requires = "repo")]
    pub password_file: Option<PathBuf>,
    /// Availability zone of the test volume (default: the source volume's, else the region's first)
    #[arg(long, visible_alias = "az", value_name = "AZ")]
    pub availability_zone: Option<String>,
    /// Longest wait for the test volume to become available
    #[arg(long, value_name = "DURATION", default_value = "30min", value_parser = parse_timeout)]
    pub wait_timeout: std::time::Duration,
    /// Blocks read at once
    #[arg(long, value_name = "N", default_value_t = autosnap_aws::ebs::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Print the backup that would be tested and the left-over volumes that would be deleted; change nothing
    #[arg(long)]
    pub dry_run: bool,
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
    // One spelling per idea: `--encrypt`, as on `snapshot copy`, `ami create` and `repo init`;
    // `--encrypted` (the old spelling) still works, hidden, for a release.
    #[arg(long = "encrypt", alias = "encrypted")]
    pub encrypt: bool,
    /// Tag for the new volume (KEY=VALUE); repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<TagArg>,
    /// Print the volume that would be created (checks the snapshot), create nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// Wait until the work is complete, showing progress
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 30min, 2h)
    #[arg(long, value_name = "DURATION", default_value = "2h", requires = "wait", value_parser = parse_timeout)]
    pub wait_timeout: std::time::Duration,
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
    /// Lock snapshots against deletion (EBS snapshot lock, governance or compliance mode)
    Lock(SnapshotLockArgs),
    /// Remove the lock of snapshots (governance, or compliance during its cooling-off)
    Unlock(SnapshotUnlockArgs),
    /// Move snapshots to the EBS Snapshots Archive tier (cheaper storage, billed for at least
    /// 90 days, restored in up to 72 hours before use)
    Archive(SnapshotArchiveArgs),
    /// Restore archived snapshots to the standard tier, for some days or for good
    RestoreTier(SnapshotRestoreTierArgs),
    /// Bring deleted snapshots back from the Recycle Bin (RestoreSnapshotFromRecycleBin)
    Recover(RecoverArgs),
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
    /// Only snapshots older than this (e.g. 90min, 30d, 6mo; see `autosnap --help`)
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<CalendarDuration>,
    /// List the Recycle Bin instead: deleted snapshots a retention rule keeps, and when each is
    /// deleted for good (`autosnap snapshot recover ID` brings one back)
    #[arg(long, conflicts_with_all = ["volumes", "tags", "managed", "older_than"])]
    pub recycle_bin: bool,
}

/// `snapshot recover` and `ami recover`: ids to bring back from the Recycle Bin.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Ids of deleted snapshots (or AMIs, for `ami recover`) in the Recycle Bin
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// Show what would be recovered, recover nothing
    #[arg(long)]
    pub dry_run: bool,
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
    /// Print the snapshots that would be made (checks every target), create nothing; no freeze, no hooks
    #[arg(long)]
    pub dry_run: bool,
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
    /// A watchdog process thaws the filesystems after this long, whatever happens to autosnap (at least 1s)
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        help_heading = "Consistency (mount path targets)",
        // Zero parses: the command refuses anything under its minimum with a fuller reason.
        value_parser = autosnap_core::duration::parse_length
    )]
    pub freeze_timeout: std::time::Duration,
    /// Kill a hook that runs longer than this
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        help_heading = "Consistency (mount path targets)",
        value_parser = parse_timeout
    )]
    pub hook_timeout: std::time::Duration,
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
    /// Do not ask before deleting (asked only when stdin and stderr are terminals)
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("length").required(true).args(["lock_for", "until"])))]
pub struct SnapshotLockArgs {
    /// Snapshot ids to lock (or whose lock to change)
    #[arg(required = true, value_name = "SNAPSHOT_ID")]
    pub ids: Vec<SnapshotId>,
    /// governance: removable with `snapshot unlock`; compliance: removable only during the
    /// cooling-off period, then by nobody until it expires
    #[arg(long, value_name = "MODE", value_parser = ["governance", "compliance"])]
    pub mode: String,
    /// How long to lock, in whole days (e.g. 30d, 2w; at most 36500d)
    #[arg(long = "for", value_name = "DURATION")]
    pub lock_for: Option<CalendarDuration>,
    /// Lock until this time (RFC 3339, e.g. 2027-01-31T00:00:00Z, or a date in UTC)
    #[arg(long, value_name = "TIME", value_parser = parse_lock_until)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Compliance only: how long the lock can still be removed, in whole hours (1h to 72h)
    #[arg(long, value_name = "DURATION")]
    pub cool_off: Option<CalendarDuration>,
    /// Required for compliance mode: after the cooling-off period nobody can unlock or delete
    /// the snapshots until the lock expires
    #[arg(long)]
    pub i_understand_compliance_is_irreversible: bool,
    /// Show what would be locked, lock nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before a compliance lock (asked only when stdin and stderr are terminals)
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// `--until`: an RFC 3339 time, or a date (midnight UTC).
fn parse_lock_until(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(format!(
        "{s:?} is not a time: write 2027-01-31T00:00:00Z (RFC 3339) or 2027-01-31 (midnight UTC)"
    ))
}

#[derive(Debug, Args)]
pub struct SnapshotArchiveArgs {
    /// Snapshot ids to archive (completed snapshots this account owns, used by no AMI)
    #[arg(required = true, value_name = "SNAPSHOT_ID")]
    pub ids: Vec<SnapshotId>,
    /// Show what would be archived and what EC2 would refuse, archive nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["days", "permanent"])))]
pub struct SnapshotRestoreTierArgs {
    /// Archived snapshot ids to restore
    #[arg(required = true, value_name = "SNAPSHOT_ID")]
    pub ids: Vec<SnapshotId>,
    /// Restore for this many days (1 to 180), then the snapshot returns to the archive tier;
    /// on a snapshot restored for a while, changes how long it stays
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=180))]
    pub days: Option<i32>,
    /// Move back to the standard tier for good (before 90 days in the archive tier, the
    /// remaining days are billed anyway)
    #[arg(long)]
    pub permanent: bool,
    /// Show what would be restored, restore nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotUnlockArgs {
    /// Snapshot ids to unlock
    #[arg(required = true, value_name = "SNAPSHOT_ID")]
    pub ids: Vec<SnapshotId>,
    /// Show what would be unlocked, unlock nothing
    #[arg(long)]
    pub dry_run: bool,
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
    /// Print the copies that would be made (checks every source), copy nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `--time-limit` of `run` and `prune`.
const TIME_LIMIT_LONG_HELP: &str = "Start no new step (create, copy, archive, delete, restore \
test) once this long has passed since the command started. Requests already sent finish, waits \
for snapshots or AMIs to complete stop, and the report lists what was not started (`left` with \
-o json). Exits 0 when everything that started succeeded: the next run does the rest, since a \
run finds what exists and never makes a backup twice. For schedulers with a hard stop, such as \
AWS Lambda's 15 minutes. 0s starts nothing (the plan is still printed).";

#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// Only this policy (repeatable; default: all policies in the config)
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Only this account, by its 12-digit id (repeatable; default: every account the config
    /// names or the organization lists; only with [[account]] or accounts = "organization")
    #[arg(long = "account", value_name = "ID")]
    pub accounts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Start no new step after this long (e.g. 14min); what is left is reported, and the next
    /// run does it
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = autosnap_core::duration::parse_length,
        long_help = TIME_LIMIT_LONG_HELP
    )]
    pub time_limit: Option<std::time::Duration>,
    /// Longest wait for a new backup to complete before copying it (e.g. 2h)
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = parse_timeout)]
    pub wait_timeout: std::time::Duration,
    /// Use at most this share of EC2's request budget (0 < FRACTION <= 1; default 1: as fast as
    /// EC2 allows; 0.5 leaves half of every bucket to other tools in the account)
    #[arg(long, value_name = "FRACTION", default_value = "1", value_parser = parse_ec2_share)]
    pub ec2_share: autosnap_aws::rate::Pacing,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print what would be deleted and why, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before deleting (asked only when stdin and stderr are terminals)
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Start no new step after this long (e.g. 14min); what is left is reported, and the next
    /// run does it
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = autosnap_core::duration::parse_length,
        long_help = TIME_LIMIT_LONG_HELP
    )]
    pub time_limit: Option<std::time::Duration>,
    /// Use at most this share of EC2's request budget (0 < FRACTION <= 1; default 1: as fast as
    /// EC2 allows; 0.5 leaves half of every bucket to other tools in the account)
    #[arg(long, value_name = "FRACTION", default_value = "1", value_parser = parse_ec2_share)]
    pub ec2_share: autosnap_aws::rate::Pacing,
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
    #[arg(long, value_name = "DURATION", default_value = "5min", value_parser = parse_timeout)]
    pub shutdown_timeout: std::time::Duration,
    /// Re-read the account at least this often (new volumes are picked up)
    #[arg(long, value_name = "DURATION", default_value = "15min", value_parser = parse_timeout)]
    pub max_sleep: std::time::Duration,
    /// After a failed run, try again after this long
    #[arg(long, value_name = "DURATION", default_value = "5min", value_parser = parse_timeout)]
    pub retry_after: std::time::Duration,
    /// Longest wait for a new backup to complete before copying it
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = parse_timeout)]
    pub wait_timeout: std::time::Duration,
    /// Use at most this share of EC2's request budget (0 < FRACTION <= 1; default 1: as fast as
    /// EC2 allows; 0.5 leaves half of every bucket to other tools in the account)
    #[arg(long, value_name = "FRACTION", default_value = "1", value_parser = parse_ec2_share)]
    pub ec2_share: autosnap_aws::rate::Pacing,
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
    // The `--keep-…` rules are core's policy type, so flags and config file read alike.
    #[command(flatten)]
    pub keep: KeepPolicy,
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

// ---- AMI backups and the IAM policy ------------------------------------------

#[derive(Debug, Subcommand)]
pub enum AmiCommand {
    /// Create an AMI of an instance: its tags kept, optionally encrypted, metadata in S3
    #[command(
        long_about = "Create an AMI of an instance (CreateImage). The AMI and its snapshots \
        get the instance's tags plus autosnap:managed=true and autosnap:source-instance, on \
        create. The default name is autosnap-<Name tag or instance id>-<UTC time>, made unique. \
        --encrypt copies the AMI to an encrypted one (CopyImage) when any snapshot is \
        unencrypted and removes the unencrypted one, so the result is one AMI; if a step fails, \
        what was made is cleaned up and the error says what is left. --encrypt and \
        --metadata-bucket wait for the AMI to be available."
    )]
    Create(AmiCreateArgs),
    /// Register an AMI from an EBS snapshot (RegisterImage) with sensible defaults
    FromSnapshot(AmiFromSnapshotArgs),
    /// List this account's AMIs, newest first
    #[command(visible_alias = "ls")]
    List(AmiListArgs),
    /// Deregister AMIs and delete their snapshots; in-use and foreign AMIs are refused
    #[command(
        visible_alias = "rm",
        long_about = "Deregister AMIs and delete their snapshots, except snapshots another AMI \
        still uses. Refused unless --force: AMIs used by instances (pending, running, stopping, \
        stopped) or by the default or latest version of a launch template (the users are \
        named), and AMIs autosnap did not create. The plan is printed first; --dry-run prints \
        it and changes nothing."
    )]
    Delete(AmiDeleteArgs),
    /// Bring deregistered AMIs back from the Recycle Bin (RestoreImageFromRecycleBin)
    Recover(RecoverArgs),
    /// Print an AMI's metadata document, or store it in S3
    #[command(
        long_about = "Collect an AMI's metadata document (schema: docs/ami-metadata.md): \
        the AMI's attributes, tags and block devices with each snapshot's encryption and tags, \
        and the source instance when known. Without --bucket it is printed; with --bucket it is \
        written to s3://BUCKET/PREFIX/ami-metadata/<ami-id>.json with server-side encryption."
    )]
    Metadata(AmiMetadataArgs),
    /// Store an AMI in S3 (CreateStoreImageTask) with its metadata document beside it
    #[command(long_about = "Store an AMI as one object s3://BUCKET/<ami-id>.bin \
        (CreateStoreImageTask), following DescribeStoreImageTasks until it completes, then \
        write the metadata document (with where the object is) to \
        s3://BUCKET/PREFIX/ami-metadata/<ami-id>.json. Encrypted snapshots are decrypted in \
        the stored object (AWS's behaviour): keep the bucket private and encrypted.")]
    Store(AmiStoreArgs),
    /// Restore an AMI stored in S3, with its original tags re-applied
    #[command(
        long_about = "Restore an AMI from S3: read its metadata document, start \
        CreateRestoreImageTask for the stored object, wait until the new AMI is available, \
        then re-apply the original AMI's tags to it and each original snapshot's tags to the \
        new snapshot of the same device (AWS restores no tags). --encrypt re-encrypts the \
        restored AMI (CopyImage) and removes the unencrypted one. Restore always waits."
    )]
    Restore(AmiRestoreArgs),
}

#[derive(Debug, Args, Clone)]
pub struct PollArgs {
    /// How often to poll EC2 while waiting (e.g. 5s, 1min; 500ms for test beds)
    #[arg(
        long,
        value_name = "DURATION",
        long_help = "How often to poll EC2 while waiting. Default: AMI states start at 2s and \
                     back off to 15s; store tasks every 5s (DescribeStoreImageTasks allows 0.5 \
                     requests per second per account). Accepts any duration of fixed length, \
                     e.g. 500ms, 5s, 1min (see Durations in the README).",
        value_parser = parse_timeout
    )]
    pub poll_interval: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct AmiCreateArgs {
    /// Instance to create the AMI of
    #[arg(value_name = "INSTANCE_ID")]
    pub instance: autosnap_core::ids::InstanceId,
    /// AMI name (default: autosnap-<Name or id>-<UTC YYYYMMDDTHHMMSSZ>, made unique)
    #[arg(long)]
    pub name: Option<String>,
    /// AMI description (default names autosnap and the instance)
    #[arg(long)]
    pub description: Option<String>,
    /// Do not reboot the instance (the file systems are then only crash-consistent)
    #[arg(long)]
    pub no_reboot: bool,
    /// Make every snapshot of the AMI encrypted (CopyImage with encryption when needed)
    #[arg(long)]
    pub encrypt: bool,
    /// KMS key for --encrypt (id, ARN or alias/NAME; default: the account's EBS key)
    #[arg(long, value_name = "KEY", requires = "encrypt")]
    pub kms_key: Option<String>,
    /// Also store the AMI's metadata document in this S3 bucket
    #[arg(long, value_name = "BUCKET")]
    pub metadata_bucket: Option<String>,
    /// Key prefix for the metadata document (PREFIX/ami-metadata/<ami-id>.json)
    #[arg(
        long,
        value_name = "PREFIX",
        requires = "metadata_bucket",
        default_value = ""
    )]
    pub metadata_prefix: String,
    /// Encrypt the metadata object with this KMS key (aws:kms) instead of AES256
    #[arg(long, value_name = "KEY", requires = "metadata_bucket")]
    pub sse_kms_key: Option<String>,
    /// Extra tag for the AMI and its snapshots (KEY=VALUE); repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<TagArg>,
    /// Print the AMI that would be created (checks the instance, name and bucket), create nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub poll: PollArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Architecture {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "arm64")]
    Arm64,
    #[value(name = "i386")]
    I386,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
            Architecture::I386 => "i386",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootMode {
    #[value(name = "legacy-bios")]
    LegacyBios,
    #[value(name = "uefi")]
    Uefi,
    #[value(name = "uefi-preferred")]
    UefiPreferred,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::LegacyBios => "legacy-bios",
            BootMode::Uefi => "uefi",
            BootMode::UefiPreferred => "uefi-preferred",
        }
    }
}

#[derive(Debug, Args)]
pub struct AmiFromSnapshotArgs {
    /// Snapshot of the root volume
    #[arg(value_name = "SNAPSHOT_ID")]
    pub snapshot: SnapshotId,
    /// AMI name (must be unused in the region)
    #[arg(long)]
    pub name: String,
    /// AMI description
    #[arg(long)]
    pub description: Option<String>,
    /// CPU architecture
    #[arg(long, value_enum, default_value_t = Architecture::X86_64)]
    pub architecture: Architecture,
    /// Boot mode (default: the architecture's default; arm64 boots UEFI)
    #[arg(long, value_enum)]
    pub boot_mode: Option<BootMode>,
    /// Root device name
    #[arg(long, value_name = "DEVICE", default_value = "/dev/xvda")]
    pub root_device_name: String,
    /// Enable ENA networking (the default; needed by current instance types)
    #[arg(long, overrides_with = "no_ena")]
    pub ena: bool,
    /// Disable ENA networking
    #[arg(long)]
    pub no_ena: bool,
    /// Root volume type
    #[arg(long, value_name = "TYPE", default_value = "gp3")]
    pub volume_type: String,
    /// Root volume size in GiB (default: the snapshot's size; never smaller)
    #[arg(long, value_name = "GIB")]
    pub size: Option<i32>,
    /// Tag for the AMI (KEY=VALUE); repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<TagArg>,
    /// Print the AMI that would be registered (checks the snapshot and name), register nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct AmiListArgs {
    /// Only AMIs autosnap created (tagged autosnap:managed=true)
    #[arg(long)]
    pub managed: bool,
    /// Only AMIs with this tag (KEY=VALUE, or KEY for any value); repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<TagArg>,
    /// List the Recycle Bin instead: deregistered AMIs a retention rule keeps, and when each is
    /// deleted for good (`autosnap ami recover ID` brings one back)
    #[arg(long, conflicts_with_all = ["managed", "tags"])]
    pub recycle_bin: bool,
}

#[derive(Debug, Args)]
pub struct AmiDeleteArgs {
    /// AMIs to deregister
    #[arg(required = true, value_name = "AMI_ID")]
    pub ids: Vec<autosnap_core::ids::ImageId>,
    /// Deregister only; keep the snapshots
    #[arg(long)]
    pub keep_snapshots: bool,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also deregister AMIs that are in use or that autosnap did not create
    #[arg(long)]
    pub force: bool,
    /// Do not ask before deleting (asked only when stdin and stderr are terminals)
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args, Clone)]
pub struct MetadataStoreArgs {
    /// Key prefix for the metadata document (PREFIX/ami-metadata/<ami-id>.json)
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub prefix: String,
    /// Encrypt the metadata object with this KMS key (aws:kms) instead of AES256
    #[arg(long, value_name = "KEY")]
    pub sse_kms_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct AmiMetadataArgs {
    /// The AMI
    #[arg(value_name = "AMI_ID")]
    pub ami: autosnap_core::ids::ImageId,
    /// Store the document in this S3 bucket instead of printing it
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,
    #[command(flatten)]
    pub store: MetadataStoreArgs,
}

#[derive(Debug, Args)]
pub struct AmiStoreArgs {
    /// The AMI to store
    #[arg(value_name = "AMI_ID")]
    pub ami: autosnap_core::ids::ImageId,
    /// S3 bucket (in the same region) for the AMI object and its metadata
    #[arg(long, value_name = "BUCKET")]
    pub bucket: String,
    #[command(flatten)]
    pub store: MetadataStoreArgs,
    /// Tag for the stored S3 object (KEY=VALUE); repeatable
    #[arg(long = "object-tag", value_name = "KEY=VALUE")]
    pub object_tags: Vec<TagArg>,
    /// Print what would be stored where (checks the AMI and the bucket), store nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Give up waiting after this long (e.g. 30min, 6h)
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = parse_timeout)]
    pub wait_timeout: std::time::Duration,
    #[command(flatten)]
    pub poll: PollArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["ami", "key"])))]
pub struct AmiRestoreArgs {
    /// S3 bucket holding the stored AMI and its metadata
    #[arg(long, value_name = "BUCKET")]
    pub bucket: String,
    /// The original AMI id (its metadata is PREFIX/ami-metadata/<id>.json)
    #[arg(long, value_name = "AMI_ID")]
    pub ami: Option<autosnap_core::ids::ImageId>,
    /// The stored object (<ami-id>.bin) or the metadata document (….json) to restore from
    #[arg(long, value_name = "OBJECT_KEY")]
    pub key: Option<String>,
    /// Key prefix the metadata document was stored under
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub prefix: String,
    /// Name for the restored AMI (default: the original's, or <original>-restored when taken)
    #[arg(long)]
    pub name: Option<String>,
    /// Re-encrypt the restored AMI (stored objects hold decrypted data)
    #[arg(long)]
    pub encrypt: bool,
    /// KMS key for --encrypt (id, ARN or alias/NAME; default: the account's EBS key)
    #[arg(long, value_name = "KEY", requires = "encrypt")]
    pub kms_key: Option<String>,
    /// Accepted for symmetry with `ami create`: restore always waits
    #[arg(long)]
    pub wait: bool,
    /// Print what would be restored (checks the metadata, the object and the name), restore nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Give up waiting after this long (e.g. 30min, 6h)
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = parse_timeout)]
    pub wait_timeout: std::time::Duration,
    #[command(flatten)]
    pub poll: PollArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyFeature {
    /// Create and copy snapshots (no delete permissions at all)
    Backup,
    /// Volumes from snapshots, AMIs restored from S3
    Restore,
    /// Delete snapshots and AMIs autosnap created
    Prune,
    /// AMI backups: create, encrypt, register, store, metadata, deregister
    Ami,
    /// Archives through the EBS direct APIs
    Archive,
    /// Everything above
    All,
    /// Source accounts of copies into a backup account: share and unshare autosnap's snapshots
    /// (not in `all`)
    Share,
    /// The backup account's role: copy shared snapshots in, prune autosnap's copies there (not
    /// in `all`)
    BackupAccount,
}

#[derive(Debug, Args)]
pub struct IamPolicyArgs {
    /// Features the role needs; repeatable (default: all)
    #[arg(long = "for", value_enum, value_name = "FEATURE")]
    pub features: Vec<PolicyFeature>,
    /// S3 bucket to scope S3 permissions to; repeatable (default: a BUCKET-NAME placeholder)
    #[arg(long = "bucket", value_name = "BUCKET")]
    pub buckets: Vec<String>,
    /// KMS key ARN to scope KMS permissions to; repeatable (default: any key, only through EC2)
    // `--kms-key` as everywhere else (an ARN here, since a policy names keys by ARN);
    // `--kms-key-arn` (the old spelling) still works, hidden, for a release.
    #[arg(long = "kms-key", alias = "kms-key-arn", value_name = "ARN")]
    pub kms_key_arns: Vec<String>,
}

/// `--ec2-share`: a fraction in (0, 1].
fn parse_ec2_share(s: &str) -> Result<autosnap_aws::rate::Pacing, String> {
    let share: f64 = s
        .parse()
        .map_err(|_| format!("expected a fraction such as 0.5, got {s:?}"))?;
    autosnap_aws::rate::Pacing::share(share).map_err(|e| e.to_string())
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
    fn status_takes_prometheus_and_the_global_output_wherever_it_is_given() {
        use clap::FromArgMatches;
        command().debug_assert();
        let parse = |line: &str| {
            let m = command()
                .try_get_matches_from(line.split(' '))
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            Cli::from_arg_matches(&m).unwrap().global.output
        };
        assert_eq!(
            parse("autosnap status -o prometheus"),
            OutputFormat::Prometheus
        );
        assert_eq!(
            parse("autosnap -o prometheus status"),
            OutputFormat::Prometheus
        );
        assert_eq!(parse("autosnap -o json status"), OutputFormat::Json);
        assert_eq!(parse("autosnap status --output json"), OutputFormat::Json);
        assert_eq!(parse("autosnap status"), OutputFormat::Table);
        assert_eq!(parse("autosnap -o json snapshot list"), OutputFormat::Json);
        assert!(command()
            .try_get_matches_from(["autosnap", "status", "-o", "yaml"])
            .is_err());
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
        let err = Cli::try_parse_from([
            "autosnap",
            "snapshot",
            "create",
            "vol-0123abcd",
            "--wait-timeout",
            "5min",
        ])
        .unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{err}"
        );
        assert!(err.to_string().contains("--wait"), "{err}");
    }

    #[test]
    fn ec2_share_defaults_to_the_whole_budget_and_takes_a_fraction() {
        use autosnap_aws::rate::Pacing;
        let share = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(a)) => Ok(a.ec2_share),
            Ok(Command::Prune(a)) => Ok(a.ec2_share),
            Ok(Command::Daemon(a)) => Ok(a.ec2_share),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(share(&["autosnap", "run"]), Ok(Pacing::FULL));
        assert_eq!(
            share(&["autosnap", "prune", "--ec2-share", "0.5"]),
            Ok(Pacing::share(0.5).unwrap())
        );
        assert_eq!(
            share(&["autosnap", "daemon", "--ec2-share", "0.25"]),
            Ok(Pacing::share(0.25).unwrap())
        );
        for bad in ["0", "1.5", "-1", "half"] {
            let flag = format!("--ec2-share={bad}");
            let err = share(&["autosnap", "run", &flag]).unwrap_err();
            assert!(err.contains("--ec2-share"), "{err}");
        }
    }
}

// ---- Archives: repositories, upload, download ---------------------------------

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a new archive repository
    #[command(
        long_about = "Create a new archive repository at REPO (a local directory or \
        s3://bucket/prefix). With --encrypt, a random master key is wrapped under a passphrase \
        (Argon2id) taken from $AUTOSNAP_REPO_PASSWORD or --password-file. With --kms-key, the \
        master key is a KMS data key, decrypted through KMS whenever the repository is opened."
    )]
    Init(RepoInitArgs),
    /// List the archives in a repository, oldest first
    #[command(visible_alias = "ls")]
    List(RepoArgs),
    /// Check a repository's structure and references (and with --read-data every chunk)
    Verify(RepoVerifyArgs),
    /// Forget archives by retention rules (deletes manifests; run `repo gc` afterwards)
    // Boxed: its six retention windows make it several times larger than the other variants.
    Forget(Box<RepoForgetArgs>),
    /// Delete chunks and block maps no archive references (exclusive lock)
    Gc(RepoGcArgs),
    /// Show a repository's locks and remove stale ones (or all, with --remove-all)
    #[command(
        long_about = "Show every lock in a repository (who holds it, what for, until when) and \
        remove the stale ones: expired, dated too far in the future, or unreadable. A lock of a \
        process that was killed stays until it expires (30 minutes after its last refresh), \
        because a host name and pid cannot prove another host's process dead; --remove-all \
        removes live locks too, for when you know that no autosnap is using the repository \
        (removing the lock of a running archive lets a gc delete chunks that archive needs). \
        Needs no passphrase or key: lock objects are not encrypted."
    )]
    Unlock(RepoUnlockArgs),
}

/// Where a repository is and how to open it.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Repository: a local directory or s3://bucket/prefix
    #[arg(value_name = "REPO")]
    pub repo: String,
    /// File holding the repository passphrase (else $AUTOSNAP_REPO_PASSWORD)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RepoInitArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Encrypt the repository (XChaCha20-Poly1305; key from the passphrase through Argon2id)
    #[arg(long)]
    pub encrypt: bool,
    /// Encrypt the repository with a KMS data key under this key (id, ARN or alias/NAME)
    #[arg(
        long,
        value_name = "KEY",
        conflicts_with = "encrypt",
        long_help = "Encrypt the repository with a KMS data key: KMS GenerateDataKey under KEY \
        (a key id, key ARN or alias/NAME; an ARN's region is used, else --region) gives the \
        master key, and only its encrypted form is stored in the repository's config. Every \
        command that opens the repository asks KMS to decrypt it (kms:Decrypt on KEY), so no \
        passphrase is needed."
    )]
    pub kms_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct RepoVerifyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Also read every stored chunk and check its hash
    #[arg(long)]
    pub read_data: bool,
}

#[derive(Debug, Args)]
pub struct RepoForgetArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    // The `--keep-…` rules are core's policy type, so flags and config file read alike.
    #[command(flatten)]
    pub keep: KeepPolicy,
    /// Show what would be forgotten, and why, without deleting anything
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before deleting (asked only when stdin and stderr are terminals)
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Evaluate as of this time (RFC 3339; default: now)
    #[arg(long, value_name = "TIME")]
    pub now: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Args)]
pub struct RepoGcArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Show what would be deleted without deleting anything
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before deleting (asked only when stdin and stderr are terminals)
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RepoUnlockArgs {
    /// Repository: a local directory or s3://bucket/prefix
    #[arg(value_name = "REPO")]
    pub repo: String,
    /// Remove live locks too (only when no autosnap is using the repository)
    #[arg(long)]
    pub remove_all: bool,
    /// Show what would be removed without removing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before removing live locks (asked only when stdin and stderr are terminals)
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Raw disk image to upload
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Description of the new snapshot
    #[arg(long)]
    pub description: Option<String>,
    /// Tag for the new snapshot (KEY=VALUE); repeatable
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: Vec<String>,
    /// Wait until EC2 reports the snapshot completed
    #[arg(long)]
    pub wait: bool,
    /// Print the snapshot that would be created (reads the file, counts its non-zero blocks), upload nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Blocks in flight at once
    #[arg(long, value_name = "N", default_value_t = autosnap_aws::ebs::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Snapshot to download (snap-…)
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Image file to write (a new file, mode 0600, appears only when complete)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Replace FILE if it exists (atomically, when the new image is complete)
    #[arg(
        long,
        long_help = "Replace FILE if it exists, or the symbolic link at FILE (the link \
        itself: its target is never written). The old file stays intact until the new image \
        is complete and synced, then is replaced in one rename. Without --force an existing \
        FILE or symbolic link is refused. Directories and devices are always refused."
    )]
    pub force: bool,
    /// Blocks in flight at once
    #[arg(long, value_name = "N", default_value_t = autosnap_aws::ebs::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Snapshot (snap-…) or AMI (ami-…) to archive
    #[arg(
        value_name = "SOURCE",
        long_help = "What to archive: a snapshot (snap-…), or an AMI (ami-…): all its EBS \
        snapshots, deduplicated together, each incremental from the newest archive of its \
        volume, and the AMI's metadata document, in one archive."
    )]
    pub source: String,
    #[command(flatten)]
    pub repo: RepoFlag,
    /// Retention group (and incremental base for a snapshot) instead of the volume id
    #[arg(
        long,
        value_name = "NAME",
        long_help = "The archive's lineage: the group `repo forget` applies retention to. \
        Default: the snapshot's volume id (the snapshot id for snapshots without a volume, \
        such as uploads), or for an AMI the instance it was made from. For a snapshot, the \
        newest archive of the same lineage is also the one it is built on incrementally; \
        use it to chain snapshots written through the EBS direct APIs, which have no volume."
    )]
    pub lineage: Option<String>,
    /// Print what would be archived (volumes, incremental parents) without reading anything
    #[arg(long)]
    pub dry_run: bool,
    /// Blocks in flight at once
    #[arg(long, value_name = "N", default_value_t = autosnap_aws::ebs::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
}

/// `--repo REPO` and how to open it.
#[derive(Debug, Args)]
pub struct RepoFlag {
    /// Repository: a local directory or s3://bucket/prefix
    #[arg(long = "repo", value_name = "REPO", env = "AUTOSNAP_REPO")]
    pub repo: String,
    /// File holding the repository passphrase (else $AUTOSNAP_REPO_PASSWORD)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_file", "to_snapshot", "to_device", "to_ami"])))]
pub struct RestoreArgs {
    /// Archive id, or a source snapshot, AMI or volume id (its newest archive)
    #[arg(value_name = "ARCHIVE")]
    pub archive: String,
    #[command(flatten)]
    pub repo: RepoFlag,
    /// Write a sparse raw image file (a new file, mode 0600, appears only when complete)
    #[arg(
        long,
        value_name = "PATH",
        long_help = "Write the volume as a sparse raw image file at PATH: a private temp file \
        (mode 0600, random name) in the same directory, synced and moved to PATH when \
        complete. An existing file or symbolic link at PATH is refused unless --force."
    )]
    pub to_file: Option<PathBuf>,
    /// Replace an existing file at the --to-file PATH (atomically, when complete)
    #[arg(
        long,
        long_help = "With --to-file: replace the file at PATH if it exists, or the symbolic \
        link at PATH (the link itself: its target is never written). The old file stays \
        intact until the new image is complete and synced, then is replaced in one rename. \
        --force does not apply to --to-device: a mounted or otherwise busy device is never \
        written."
    )]
    pub force: bool,
    /// Create a new EBS snapshot with the original description and tags
    #[arg(long)]
    pub to_snapshot: bool,
    /// Register a new AMI from an AMI archive (each volume to a new snapshot, original tags)
    #[arg(
        long,
        long_help = "Restore an AMI archive as a new AMI: each volume becomes a new snapshot \
        (with the original snapshot's tags), then RegisterImage rebuilds the AMI from the \
        archived metadata document (block device mappings with sizes, volume types, IOPS and \
        throughput, architecture, boot mode, ENA, root device, virtualization type) with the \
        original AMI's tags, plus autosnap:managed=true and autosnap:restored-from. If \
        registering fails, the snapshots just made are deleted. Prints the new AMI id."
    )]
    pub to_ami: bool,
    /// Name of the new AMI (with --to-ami; default: the original AMI's name)
    #[arg(long, value_name = "NAME", requires = "to_ami")]
    pub name: Option<String>,
    /// Encrypt the new snapshot(s) with this KMS key (with --to-snapshot or --to-ami)
    #[arg(
        long,
        value_name = "KEY",
        long_help = "Encrypt the new snapshot(s) with this KMS key (id, ARN or alias/NAME) \
        and write the zero blocks the archive recorded. With --to-ami and no --kms-key, each \
        volume that was encrypted is encrypted again with its original key (which must still \
        be usable), the others stay unencrypted."
    )]
    pub kms_key: Option<String>,
    /// Write every block of the volume to this unused block device (or existing file)
    #[arg(
        long,
        value_name = "DEV",
        long_help = "Write every block of the volume, zeros included, to the block device DEV \
        (or an existing regular file, written in place). A device that is mounted (it or one \
        of its partitions, by device number), active swap, held by device-mapper/LVM or md, \
        or that the kernel will not open exclusively is refused; the device stays open \
        exclusively while it is written, so nothing can mount it meanwhile. A device smaller \
        than the volume is refused."
    )]
    pub to_device: Option<PathBuf>,
    /// The volume of an AMI archive to restore (its device name, e.g. /dev/xvda)
    #[arg(long, value_name = "DEVICE", conflicts_with = "to_ami")]
    pub device: Option<String>,
    /// Print what would be created (with --to-snapshot or --to-ami) without creating it
    #[arg(long)]
    pub dry_run: bool,
    /// Blocks in flight at once
    #[arg(long, value_name = "N", default_value_t = autosnap_aws::ebs::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
}
