//! The planner: from the policies, what the account holds and `now`, what `run` would do —
//! which targets get a backup, which backups get copied to other regions, and which backups
//! retention removes — with a reason for every decision. Pure: the AWS layer gathers the
//! [`Inventory`], the CLI prints the [`Plan`] (`plan -o json` is its serde form) and the
//! executor carries it out.
//!
//! # Targets
//! A policy's targets are the inventory targets of its kind, in its regions, that it selects
//! and does not exclude ([`PolicyConfig::covers`]). Targets are listed by id.
//!
//! # Backups and groups
//! A target's backups in a region are the snapshots there that carry *all* of
//! `autosnap:managed=true`, `autosnap:policy=<policy>` and `autosnap:source-volume=<id>`
//! (volume policies) or `autosnap:source-instance=<id>` (instance policies). Nothing else is
//! ever a candidate for deletion: not unmanaged snapshots, not another policy's, not this
//! policy's in regions it neither backs up nor copies to. Nor anything carrying
//! `autosnap:restored-from`: a restored snapshot or AMI is the user's data, never a backup,
//! whatever other tags it carries (restores made by older versions copied the original's
//! policy tags), so it neither makes a target "not due" nor is ever pruned.
//!
//! For AMI policies (`kind = "ami"`) a target's backups are the AMIs carrying those tags (the
//! snapshots behind them are not backups of their own); an AMI is kept or removed with its
//! snapshots, and one that an instance or launch template uses is protected like a snapshot an
//! AMI uses. A planned create is an AMI ([`AmiCreate`]) and copies are whole AMIs.
//!
//! Instance backups are grouped into one backup per `autosnap:set-id` (a snapshot without
//! one is a backup of its own). A set's time is the earliest start time of its snapshots; it
//! is kept or removed as a whole, and one protected snapshot protects the whole set.
//!
//! Retention applies per group: (policy, target, region). The source region uses the
//! policy's `retain`; each copy region uses its copy rule's `retain` (or the policy's).
//!
//! # Due and health
//! From the newest backup in the source region that is dated at or before `now` and whose
//! snapshots are all `completed` or `pending`. Snapshots in state `error` are ordinary
//! candidates for retention, but they never count as a target's newest backup: a failed
//! snapshot does not make a target "not due".
//!
//! # Creating
//! When a target is due, a [`CreateAction`] with tags, in this order (later ones win):
//! the volume's own tags (volume targets, with `copy_volume_tags`; without `aws:` and
//! `autosnap:` keys), the default tags, the policy's tags with variables expanded, and the
//! ownership tags `autosnap:managed`, `autosnap:policy` and `autosnap:source-volume` /
//! `autosnap:source-instance`. The executor adds `autosnap:set-id` to instance sets.
//!
//! Retention of the source group then counts the backup about to be created as existing at
//! `now`, so the plan shows what `run` deletes after creating it (that backup is not listed).
//! The executor must skip the deletions of a group whose create failed.
//!
//! # Retention tags
//! The retention `tags` rule sees each backup's EC2 tags both as `key=value` and as plain
//! `key`: `tags = [["Keep=yes"]]` keeps backups tagged `Keep` = `yes`, `tags = [["Keep"]]`
//! keeps backups with a `Keep` tag of any value. A set carries the tags of all its snapshots.
//!
//! # Safety
//! Whatever retention decides, a backup is never deleted (its [`BackupDecision::protected`]
//! says why) when it is, or has a snapshot that is:
//! * `pending` (or in any state other than `completed` and `error`);
//! * used by an AMI;
//! * without a start time (listed last, dated 1970-01-01, not judged by retention);
//! * dated after `now` (such backups never count as the newest either);
//! * the newest backup of its group (dated at or before `now`, not failed) — unless a create
//!   is planned, in which case the new backup is the newest;
//! * the newest *completed* backup of its group, so that a pending or failed newer backup
//!   never leaves a group without a usable one.
//!
//! `keep` is what the retention rules say, `delete = !keep && protected.is_none()`.
//! Retention's time horizon is `now` inclusive: a backup dated exactly `now` counts as the
//! latest, as it does for due.
//!
//! # Copies
//! Per copy rule: when a create is planned, copy the new backup after it completes. Otherwise
//! take the newest completed source backup dated at or before `now`; if some of its snapshots
//! have no copy in the copy region (a snapshot there whose `autosnap:source-snapshot` names
//! it), copy those — unless a newer source backup already has a copy there. Older backups are
//! never copied after the fact. Planned copies are not counted by the copy region's retention
//! (it may keep one more copy until the next run).
//!
//! # Not handled here
//! Backups of targets that no longer exist or are no longer selected are left alone.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use smallvec::{smallvec, SmallVec};

use crate::ami::ImageDetails;
use crate::config::DefaultsSection;
use crate::model::Snapshot;
use crate::policy::{BackupKind, CopyRule, PolicyConfig, ResourceKind};
use crate::retention::{apply_indexed, KeepPolicy, Retainable, REASON_NEWEST};
use crate::schedule::Health;
use crate::tags::{self, Tags};
use crate::variables::{expand, truncate_chars, VarContext};

/// The longest snapshot description EC2 accepts.
pub const MAX_DESCRIPTION_CHARS: usize = 255;

/// Reason given to a kept backup whose start time is unknown.
pub const REASON_NO_START_TIME: &str = "start time unknown";

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// A volume or an instance that policies may back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub id: String,
    pub kind: ResourceKind,
    pub region: String,
    pub tags: Tags,
    /// The `Name` tag, when there is one.
    pub name: Option<String>,
    /// Instance: its attached volumes. Volume: empty.
    #[serde(default)]
    pub volume_ids: Vec<String>,
}

impl Target {
    /// `name`, else the `Name` tag, else the id.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or_else(|| self.tags.get("Name").map(String::as_str))
            .unwrap_or(&self.id)
    }

    /// `name`, else the `Name` tag.
    pub fn name_tag(&self) -> Option<&str> {
        self.name
            .as_deref()
            .or_else(|| self.tags.get("Name").map(String::as_str))
    }
}

/// Ids of one backup's snapshots: most backups have exactly one, kept inline.
pub type SnapshotIds = SmallVec<[CompactString; 1]>;

/// The state of a backup, snapshot or AMI, as far as the planner cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupState {
    /// A snapshot `completed`, an AMI `available`.
    Completed,
    /// Still being made.
    Pending,
    /// A snapshot in `error`, an AMI `failed`, `invalid` or `error`: retention may delete it,
    /// but it never counts as a target's newest backup.
    Error,
    /// Anything else (`recoverable`, `disabled`, …; its name is in [`BackupExtra::state`]):
    /// never deleted.
    Other,
}

impl BackupState {
    /// From a snapshot's state name.
    pub fn of_snapshot(state: &str) -> BackupState {
        match state {
            "completed" => BackupState::Completed,
            "pending" => BackupState::Pending,
            "error" => BackupState::Error,
            _ => BackupState::Other,
        }
    }

    /// From an AMI's state name.
    pub fn of_image(state: &str) -> BackupState {
        match state {
            "available" => BackupState::Completed,
            "pending" => BackupState::Pending,
            "failed" | "invalid" | "error" => BackupState::Error,
            _ => BackupState::Other,
        }
    }
}

/// A backup autosnap may have made for a policy, in `region`: a snapshot, or an AMI (for
/// `kind = "ami"` policies).
///
/// It holds only what the planner reads, compactly, because an account may hold millions:
/// the ownership tags parsed into fields, strings that repeat across backups (regions, policy
/// names, source and set ids) as shared `Arc<str>`s (see [`BackupBuilder`]), ids inline, and
/// the rarely present rest boxed in [`BackupExtra`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExistingBackup {
    /// The snapshot id, or the AMI's image id.
    pub id: CompactString,
    pub kind: BackupKind,
    pub region: Arc<str>,
    pub state: BackupState,
    /// A snapshot's start time, an AMI's creation date.
    pub start_time: Option<DateTime<Utc>>,
    /// Carries `autosnap:managed=true`.
    pub managed: bool,
    /// Carries `autosnap:restored-from`: restored data, never a backup.
    pub restored: bool,
    /// `autosnap:policy`.
    pub policy: Option<Arc<str>>,
    /// `autosnap:source-volume`: the volume it was taken of.
    pub source_volume: Option<Arc<str>>,
    /// `autosnap:source-instance`: the instance it was taken of.
    pub source_instance: Option<Arc<str>>,
    /// `autosnap:set-id`: the instance set this snapshot belongs to.
    pub set_id: Option<Arc<str>>,
    pub extra: Option<Box<BackupExtra>>,
}

/// The parts of a backup that most backups do not have.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackupExtra {
    /// The state's name when it is [`BackupState::Other`].
    pub state: Option<String>,
    /// `autosnap:source-snapshot` or `autosnap:source-image`: the backup this one is a
    /// cross-region copy of.
    pub copy_of: Option<CompactString>,
    /// AMI backups: the snapshots behind the AMI.
    pub snapshot_ids: Vec<CompactString>,
    /// What uses it and so keeps it: AMIs using a snapshot; instances and launch templates
    /// using an AMI.
    pub in_use_by: Vec<String>,
    /// The backup's tags that a retention `tags` rule asks about.
    pub tags: Tags,
}

impl ExistingBackup {
    fn extra(&self) -> Option<&BackupExtra> {
        self.extra.as_deref()
    }

    /// The snapshots that make it up: the snapshot itself, or the AMI's.
    pub fn snapshot_ids(&self) -> SnapshotIds {
        match self.kind {
            BackupKind::Snapshot => smallvec![self.id.clone()],
            BackupKind::Ami => self
                .extra()
                .map(|e| e.snapshot_ids.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// The AMIs, instances or launch templates that use it.
    pub fn in_use_by(&self) -> &[String] {
        self.extra().map_or(&[], |e| e.in_use_by.as_slice())
    }

    /// The backup this one is a copy of.
    pub fn copy_of(&self) -> Option<&str> {
        self.extra().and_then(|e| e.copy_of.as_deref())
    }

    /// The state's name, for explanations.
    pub fn state_name(&self) -> &str {
        match self.state {
            BackupState::Completed => "completed",
            BackupState::Pending => "pending",
            BackupState::Error => "error",
            BackupState::Other => self
                .extra()
                .and_then(|e| e.state.as_deref())
                .unwrap_or("unknown"),
        }
    }

    /// Whether it carries `tag` as retention's `tags` rule spells it (`key=value` or `key`).
    fn carries(&self, tag: &str) -> bool {
        self.extra().is_some_and(|e| carries(&e.tags, tag))
    }

    fn extra_mut(&mut self) -> &mut BackupExtra {
        self.extra.get_or_insert_with(Default::default)
    }
}

/// Makes [`ExistingBackup`]s from what EC2 describes: shares repeated strings among them and
/// keeps only the tags the policies' retention rules ask about.
#[derive(Debug, Default)]
pub struct BackupBuilder {
    strings: HashSet<Arc<str>>,
    /// Tag keys retention `tags` rules name; `None`: keep every tag (tests).
    tag_keys: Option<HashSet<String>>,
}

impl BackupBuilder {
    /// For planning `policies`.
    pub fn new(policies: &[PolicyConfig]) -> Self {
        let mut keys = HashSet::new();
        for policy in policies {
            let copies = policy.copy.iter().filter_map(|c| c.retain.as_ref());
            for retain in std::iter::once(&policy.retain).chain(copies) {
                for tag in retain.keep_tags.iter().flatten() {
                    let key = tag.split_once('=').map_or(tag.as_str(), |(k, _)| k);
                    keys.insert(key.to_owned());
                }
            }
        }
        // What `status` and `plan` say of restore tests is read from these.
        keys.insert(crate::restore_test::RESULT_TAG.to_owned());
        keys.insert(crate::restore_test::PASSED_TAG.to_owned());
        BackupBuilder {
            strings: HashSet::new(),
            tag_keys: Some(keys),
        }
    }

    /// Keeps every tag (for tests and tools that look at backups without policies).
    pub fn keeping_all_tags() -> Self {
        BackupBuilder::default()
    }

    /// One shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    /// A snapshot in `region`, used by the AMIs `in_use_by`.
    pub fn snapshot(
        &mut self,
        snapshot: &Snapshot,
        region: &str,
        in_use_by: Vec<String>,
    ) -> ExistingBackup {
        let mut backup = self.common(
            &snapshot.snapshot_id,
            BackupKind::Snapshot,
            region,
            &snapshot.tags,
            snapshot.start_time,
        );
        backup.state = BackupState::of_snapshot(&snapshot.state);
        if backup.state == BackupState::Other {
            backup.extra_mut().state = Some(snapshot.state.clone());
        }
        if let Some(source) = snapshot.tags.get(tags::SOURCE_SNAPSHOT) {
            backup.extra_mut().copy_of = Some(source.into());
        }
        if !in_use_by.is_empty() {
            backup.extra_mut().in_use_by = in_use_by;
        }
        backup
    }

    /// An AMI in `region`, used by the instances and launch templates `in_use_by`. Its time
    /// is its creation date.
    pub fn image(
        &mut self,
        image: &ImageDetails,
        region: &str,
        in_use_by: Vec<String>,
    ) -> ExistingBackup {
        let created = image
            .creation_date
            .as_deref()
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.with_timezone(&Utc));
        let mut backup = self.common(
            &image.image_id,
            BackupKind::Ami,
            region,
            &image.tags,
            created,
        );
        backup.state = BackupState::of_image(&image.state);
        let other = backup.state == BackupState::Other;
        let extra = backup.extra_mut();
        if other {
            extra.state = Some(image.state.clone());
        }
        extra.copy_of = image.tags.get(tags::SOURCE_IMAGE).map(|s| s.into());
        extra.snapshot_ids = image.snapshot_ids().into_iter().map(Into::into).collect();
        extra.in_use_by = in_use_by;
        backup
    }

    fn common(
        &mut self,
        id: &str,
        kind: BackupKind,
        region: &str,
        all_tags: &Tags,
        start_time: Option<DateTime<Utc>>,
    ) -> ExistingBackup {
        let own = Ownership::of(all_tags);
        let mut backup = ExistingBackup {
            id: id.into(),
            kind,
            region: self.intern(region),
            state: BackupState::Completed,
            start_time,
            managed: own.managed,
            restored: own.restored,
            policy: own.policy.map(|p| self.intern(p)),
            source_volume: own.source_volume.map(|v| self.intern(v)),
            source_instance: own.source_instance.map(|i| self.intern(i)),
            set_id: all_tags.get(tags::SET_ID).map(|s| self.intern(s)),
            extra: None,
        };
        let kept: Tags = all_tags
            .iter()
            .filter(|(k, _)| {
                self.tag_keys
                    .as_ref()
                    .is_none_or(|keys| keys.contains(k.as_str()))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            backup.extra_mut().tags = kept;
        }
        backup
    }
}

/// What the account holds: the targets of all source regions, and every backup (snapshot
/// or AMI) carrying `autosnap:policy` (any value) in the source and copy regions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Inventory {
    pub targets: Vec<Target>,
    pub backups: Vec<ExistingBackup>,
}

/// Settings from `[defaults]` that shape new backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Copy a volume's own tags onto its snapshots.
    pub copy_volume_tags: bool,
    /// Tags put on everything autosnap creates.
    pub default_tags: Tags,
    /// Plan creations (and copies of the new backups) for due targets. Off for `prune`,
    /// whose retention must then not count a backup that will not be made.
    pub include_creates: bool,
}

impl Default for PlanOptions {
    /// The same defaults as the config file's `[defaults]`.
    fn default() -> Self {
        PlanOptions::from_defaults(&DefaultsSection::default())
    }
}

impl PlanOptions {
    pub fn from_defaults(defaults: &DefaultsSection) -> Self {
        PlanOptions {
            copy_volume_tags: defaults.copy_volume_tags,
            default_tags: defaults.tags.clone(),
            include_creates: true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

/// What `run` would do at `now`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub now: DateTime<Utc>,
    /// In the order of the config.
    pub policies: Vec<PolicyPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyPlan {
    pub policy: String,
    pub resource: ResourceKind,
    /// `snapshot` or `ami`: what its backups are.
    pub kind: BackupKind,
    /// As written in the config.
    pub schedule: String,
    /// The source region's retention, e.g. `keep daily 7, weekly 4`.
    pub retention: String,
    /// By target id.
    pub targets: Vec<TargetPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetPlan {
    pub target_id: String,
    pub kind: ResourceKind,
    pub region: String,
    pub name: Option<String>,
    pub due: bool,
    pub due_reason: String,
    pub health: Health,
    /// When the target is due next (`now` when it is due).
    pub next_due: DateTime<Utc>,
    /// The newest backup in the source region that counts (completed or pending, not dated in
    /// the future).
    pub newest_backup: Option<DateTime<Utc>>,
    /// The oldest backup in the source region.
    pub oldest_backup: Option<DateTime<Utc>>,
    /// Backups in the source region (a set counts once).
    pub backup_count: usize,
    pub create: Option<CreateAction>,
    pub copies: Vec<CopyAction>,
    /// The source region first, then one group per copy rule, in config order.
    pub groups: Vec<GroupPlan>,
    /// Restore tests: when the next is due (policies with `restore_test`) and what the
    /// backups' tags say of the last ones; filled in by [`crate::restore_test::annotate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<crate::restore_test::TargetRestoreTest>,
    /// Copy rules into other accounts: the copy to make there and the copies' fate, filled in
    /// from what those accounts hold (see [`crate::backup_account`]). Not in `copies`/`groups`,
    /// which are this account's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub account_copies: Vec<crate::backup_account::AccountCopies>,
}

/// A backup to take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateAction {
    pub target_id: String,
    pub kind: ResourceKind,
    pub region: String,
    /// Everything to tag the snapshots with (the executor adds `autosnap:set-id` to sets).
    pub tags: Tags,
    pub description: String,
    /// Instance sets: leave the root volume out.
    pub exclude_boot: bool,
    /// Instance sets: volumes to leave out (EC2's `ExcludeDataVolumes`), from `exclude.ids`.
    pub exclude_volumes: Vec<String>,
    /// Instance sets: also copy each volume's own tags onto its snapshot (EC2's
    /// `CopyTagsFromSource = volume`), from `copy_volume_tags`. For volume targets the
    /// volume's tags are already in `tags`, and this is false.
    pub copy_tags_from_volumes: bool,
    /// AMI policies: the AMI to make (CreateImage) instead of a snapshot set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami: Option<AmiCreate>,
    /// The policy's `lock`: put on each new snapshot right after it is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::lock::LockRequest>,
}

/// How an AMI policy makes its AMI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmiCreate {
    /// The AMI's name (the executor adds `-2`, `-3`, … if it is taken).
    pub name: String,
    /// Let CreateImage reboot the instance.
    pub reboot: bool,
    /// Make every snapshot encrypted (CopyImage when CreateImage made unencrypted ones).
    pub encrypt: bool,
    pub kms_key: Option<String>,
}

/// Which backup a copy is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CopySource {
    /// The backup this run creates, once it completes.
    New,
    /// An existing backup; `snapshot_ids` are those of its snapshots still to be copied (AMI
    /// policies copy the AMI `backup_id` as a whole, and this is empty).
    Existing {
        backup_id: String,
        snapshot_ids: Vec<String>,
    },
}

/// A cross-region copy to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyAction {
    pub source: CopySource,
    pub from_region: String,
    pub to_region: String,
    pub kms_key: Option<String>,
    pub reason: String,
    /// The copy rule's `lock` (else the policy's): put on each copy once it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::lock::LockRequest>,
}

/// Retention of one group: one target's backups in one region.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupPlan {
    pub region: String,
    pub retention: String,
    /// Newest first; backups without a start time last.
    pub backups: Vec<BackupDecision>,
    /// `archive_after`: the kept backups old enough to archive, archived by `run` or not and
    /// why (see [`crate::archive_plan`]). Empty without `archive_after` and for `prune`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<crate::archive_plan::ArchiveDecision>,
}

/// What happens to one backup, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupDecision {
    /// The set id for instance sets, the AMI id for AMI backups, else the snapshot id.
    pub backup_id: CompactString,
    /// Its snapshots (an AMI's: deleted after it is deregistered).
    pub snapshot_ids: SnapshotIds,
    pub time: DateTime<Utc>,
    /// What the retention rules decided.
    pub keep: bool,
    /// The rules that keep it (`daily snapshot`, `within 2d`, …).
    pub reasons: Vec<String>,
    /// `!keep` and not protected: `run` and `prune` delete it.
    pub delete: bool,
    /// Why it is never deleted, whatever retention says (`pending`, `used by AMI ami-…`, …).
    pub protected: Option<String>,
    /// A deletion of a snapshot archived less than 90 days ago: what is billed anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_charge: Option<String>,
    /// A deletion: whether the Recycle Bin keeps it and for how long (None: rules not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recycle_bin: Option<crate::recycle_bin::BinFate>,
}

impl Plan {
    /// Every planned backup.
    pub fn creates(&self) -> impl Iterator<Item = (&PolicyPlan, &TargetPlan, &CreateAction)> {
        self.policies.iter().flat_map(|p| {
            p.targets
                .iter()
                .filter_map(move |t| t.create.as_ref().map(|c| (p, t, c)))
        })
    }

    /// Every planned copy.
    pub fn copies(&self) -> impl Iterator<Item = (&PolicyPlan, &TargetPlan, &CopyAction)> {
        self.policies.iter().flat_map(|p| {
            p.targets
                .iter()
                .flat_map(move |t| t.copies.iter().map(move |c| (p, t, c)))
        })
    }

    /// Every backup to delete.
    pub fn deletions(
        &self,
    ) -> impl Iterator<Item = (&PolicyPlan, &TargetPlan, &GroupPlan, &BackupDecision)> {
        self.policies.iter().flat_map(|p| {
            p.targets.iter().flat_map(move |t| {
                t.groups.iter().flat_map(move |g| {
                    g.backups
                        .iter()
                        .filter(|b| b.delete)
                        .map(move |b| (p, t, g, b))
                })
            })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------------

/// Plans every policy against the inventory at `now`. `policies` must have passed
/// [`crate::policy::validate_policies`]; `default_region` is the region of policies without
/// `regions`.
pub fn plan(
    policies: &[PolicyConfig],
    inventory: &Inventory,
    default_region: &str,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Plan {
    let index = BackupIndex::build(policies, &inventory.backups);
    let policies = policies
        .iter()
        .enumerate()
        .map(|(p, policy)| {
            let mut targets: Vec<&Target> = inventory
                .targets
                .iter()
                .filter(|t| policy.covers(t, default_region))
                .collect();
            targets.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.region.cmp(&b.region)));
            PolicyPlan {
                policy: policy.name.clone(),
                resource: policy.resource,
                kind: policy.kind,
                schedule: policy.schedule.to_string(),
                retention: policy.retain.to_string(),
                targets: targets
                    .into_iter()
                    .map(|target| {
                        plan_target(p, policy, target, &index, &inventory.backups, now, options)
                    })
                    .collect(),
            }
        })
        .collect();
    Plan { now, policies }
}

/// The targets no policy covers, in input order.
///
/// A volume also counts as covered when an instance policy covers an instance it is attached
/// to (listed in that instance's `volume_ids`, and not in the policy's `exclude.ids`); an
/// instance also counts as covered when it has volumes and volume policies cover all of them.
/// `exclude_boot` is not considered (which volume is the root one is not known here).
pub fn unprotected<'a>(
    policies: &[PolicyConfig],
    targets: &'a [Target],
    default_region: &str,
) -> Vec<&'a Target> {
    let covered = |t: &Target| policies.iter().any(|p| p.covers(t, default_region));
    let mut volumes_in_sets: HashSet<(&str, &str)> = HashSet::new();
    let mut covered_volumes: HashSet<(&str, &str)> = HashSet::new();
    for target in targets {
        match target.kind {
            ResourceKind::Instance => {
                for policy in policies.iter().filter(|p| p.covers(target, default_region)) {
                    for volume in &target.volume_ids {
                        if !policy.exclude.ids.contains(volume) {
                            volumes_in_sets.insert((volume, &target.region));
                        }
                    }
                }
            }
            ResourceKind::Volume => {
                if covered(target) {
                    covered_volumes.insert((&target.id, &target.region));
                }
            }
        }
    }
    targets
        .iter()
        .filter(|t| {
            if covered(t) {
                return false;
            }
            match t.kind {
                ResourceKind::Volume => {
                    !volumes_in_sets.contains(&(t.id.as_str(), t.region.as_str()))
                }
                ResourceKind::Instance => {
                    t.volume_ids.is_empty()
                        || !t
                            .volume_ids
                            .iter()
                            .all(|v| covered_volumes.contains(&(v.as_str(), t.region.as_str())))
                }
            }
        })
        .collect()
}

/// The inventory's backups by (policy position, source id, region), built in one pass.
struct BackupIndex<'a> {
    slots: HashMap<(usize, &'a str, &'a str), usize>,
    groups: Vec<Vec<usize>>,
}

/// The ownership tags of one snapshot.
#[derive(Default)]
struct Ownership<'a> {
    managed: bool,
    restored: bool,
    policy: Option<&'a str>,
    source_volume: Option<&'a str>,
    source_instance: Option<&'a str>,
}

impl<'a> Ownership<'a> {
    /// Reads the `autosnap:` tags in one ordered scan of that key range.
    fn of(tags: &'a Tags) -> Self {
        let mut own = Ownership::default();
        // `;` is the character after `:`, so this is every key starting with `autosnap:`.
        let range = (
            Bound::Included(tags::OWN_PREFIX),
            Bound::Excluded("autosnap;"),
        );
        for (key, value) in tags.range::<str, _>(range) {
            match key.as_str() {
                tags::MANAGED => own.managed = value == tags::MANAGED_VALUE,
                tags::RESTORED_FROM => own.restored = true,
                tags::POLICY => own.policy = Some(value),
                tags::SOURCE_VOLUME => own.source_volume = Some(value),
                tags::SOURCE_INSTANCE => own.source_instance = Some(value),
                _ => {}
            }
        }
        own
    }
}

impl<'a> BackupIndex<'a> {
    fn build(policies: &[PolicyConfig], backups: &'a [ExistingBackup]) -> Self {
        let mut by_name: HashMap<&str, (usize, ResourceKind, BackupKind)> = HashMap::new();
        for (p, policy) in policies.iter().enumerate() {
            by_name
                .entry(policy.name.as_str())
                .or_insert((p, policy.resource, policy.kind));
        }
        let mut slots: HashMap<(usize, &str, &str), usize> = HashMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        // A listing tends to return a group's snapshots together: the previous snapshot's
        // group is checked before hashing.
        let mut previous: Option<((usize, &str, &str), usize)> = None;
        for (i, backup) in backups.iter().enumerate() {
            if !backup.managed || backup.restored {
                continue;
            }
            let Some(&(p, resource, kind)) = backup.policy.as_deref().and_then(|n| by_name.get(n))
            else {
                continue;
            };
            // An AMI policy's backups are its AMIs, not the snapshots behind them.
            if backup.kind != kind {
                continue;
            }
            let source = match resource {
                ResourceKind::Volume => &backup.source_volume,
                ResourceKind::Instance => &backup.source_instance,
            };
            let Some(source) = source else {
                continue;
            };
            let key = (p, &**source, &*backup.region);
            let slot = match previous {
                Some((previous_key, slot)) if previous_key == key => slot,
                _ => {
                    let slot = *slots.entry(key).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    previous = Some((key, slot));
                    slot
                }
            };
            groups[slot].push(i);
        }
        BackupIndex { slots, groups }
    }

    fn get<'s>(&'s self, policy: usize, source: &'s str, region: &'s str) -> &'s [usize] {
        // The map is covariant in its keys' lifetime, so it can be searched with shorter ones.
        let slots: &'s HashMap<(usize, &'s str, &'s str), usize> = &self.slots;
        slots
            .get(&(policy, source, region))
            .map_or(&[], |&slot| self.groups[slot].as_slice())
    }
}

/// One backup of a group: a snapshot, or an instance set of snapshots.
struct Item<'a> {
    /// Set id or snapshot id.
    id: &'a str,
    /// Its snapshots.
    members: Members<'a>,
    /// The earliest known start time of its snapshots.
    time: Option<DateTime<Utc>>,
    /// What its snapshots are, summed up once: see the `ANY_*`/`ALL_*` bits.
    flags: u8,
}

/// Some snapshot is `pending`.
const ANY_PENDING: u8 = 1;
/// Some snapshot is in a state other than `pending`, `completed` and `error`.
const ANY_OTHER_STATE: u8 = 1 << 1;
/// Some snapshot is used by an AMI.
const ANY_IN_USE: u8 = 1 << 2;
/// Some snapshot has no start time.
const ANY_NO_TIME: u8 = 1 << 3;
/// Every snapshot is `completed`.
const ALL_COMPLETED: u8 = 1 << 4;
/// Every snapshot is `completed` or `pending`.
const ALL_COUNTING: u8 = 1 << 5;
/// The bits that make a backup protected on its own.
const PROTECTING: u8 = ANY_PENDING | ANY_OTHER_STATE | ANY_IN_USE | ANY_NO_TIME;

/// The flags of one snapshot (or AMI).
fn flags_of(b: &ExistingBackup) -> u8 {
    let mut flags = match b.state {
        BackupState::Completed => ALL_COMPLETED | ALL_COUNTING,
        BackupState::Pending => ANY_PENDING | ALL_COUNTING,
        BackupState::Error => 0,
        BackupState::Other => ANY_OTHER_STATE,
    };
    if !b.in_use_by().is_empty() {
        flags |= ANY_IN_USE;
    }
    if b.start_time.is_none() {
        flags |= ANY_NO_TIME;
    }
    flags
}

/// The flags of a set, from its members' flags: `ANY_*` bits or, `ALL_*` bits and.
fn combine_flags(a: u8, b: u8) -> u8 {
    let all = ALL_COMPLETED | ALL_COUNTING;
    ((a | b) & !all) | (a & b & all)
}

/// The snapshots of an item, without an allocation for the (usual) single one.
enum Members<'a> {
    One(&'a ExistingBackup),
    Many(Vec<&'a ExistingBackup>),
}

impl<'a> Members<'a> {
    fn as_slice(&self) -> &[&'a ExistingBackup] {
        match self {
            Members::One(b) => std::slice::from_ref(b),
            Members::Many(v) => v,
        }
    }

    fn push(&mut self, b: &'a ExistingBackup) {
        match self {
            Members::One(first) => *self = Members::Many(vec![*first, b]),
            Members::Many(v) => v.push(b),
        }
    }
}

impl<'a> Item<'a> {
    fn single(b: &'a ExistingBackup) -> Self {
        Item {
            id: b.id.as_str(),
            time: b.start_time,
            members: Members::One(b),
            flags: flags_of(b),
        }
    }

    fn add(&mut self, b: &'a ExistingBackup) {
        self.members.push(b);
        self.flags = combine_flags(self.flags, flags_of(b));
        self.time = match (self.time, b.start_time) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
    }

    fn members(&self) -> &[&'a ExistingBackup] {
        self.members.as_slice()
    }

    /// Its members' ids: snapshot ids, or for AMI backups the AMI id.
    fn member_ids(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.members().iter().map(|m| m.id.as_str())
    }

    /// Completed or pending, so it counts as a backup for due and health.
    fn counts(&self) -> bool {
        self.flags & ALL_COUNTING != 0
    }

    fn completed(&self) -> bool {
        self.flags & ALL_COMPLETED != 0
    }

    /// Dated at or before `now`.
    fn is_past(&self, now: DateTime<Utc>) -> bool {
        self.time.is_some_and(|t| t <= now)
    }

    fn has_member(&self, ids: &HashSet<&str>) -> bool {
        self.member_ids().any(|id| ids.contains(id))
    }

    /// Safety reasons that hold regardless of the group (not the newest-backup ones).
    fn protections(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut out = Vec::new();
        let future = self.time.is_some_and(|t| t > now);
        if self.flags & PROTECTING == 0 && !future {
            return out;
        }
        if self.flags & ANY_PENDING != 0 {
            out.push("pending".to_owned());
        }
        if self.flags & ANY_OTHER_STATE != 0 {
            let mut states: Vec<&str> = self
                .members()
                .iter()
                .filter(|m| m.state == BackupState::Other)
                .map(|m| m.state_name())
                .collect();
            states.sort_unstable();
            states.dedup();
            for state in states {
                out.push(format!("state {state}"));
            }
        }
        if self.flags & ANY_IN_USE != 0 {
            let mut users: Vec<&str> = self
                .members()
                .iter()
                .flat_map(|m| m.in_use_by().iter().map(String::as_str))
                .collect();
            users.sort_unstable();
            users.dedup();
            if self.members().iter().any(|m| m.kind == BackupKind::Ami) {
                out.push(format!("in use by {}", users.join(", ")));
            } else {
                out.push(format!("used by AMI {}", users.join(", ")));
            }
        }
        if self.flags & ANY_NO_TIME != 0 {
            out.push(REASON_NO_START_TIME.to_owned());
        }
        if future {
            out.push("dated in the future".to_owned());
        }
        out
    }
}

/// A sort key that puts newer times first and items without a time last: minus the time in
/// nanoseconds (cheaper to compare than a `DateTime`). Times outside 1677–2262, which no
/// snapshot has, share the extreme keys and keep their listing order.
fn newest_first_key(time: Option<DateTime<Utc>>) -> i64 {
    match time {
        Some(t) => t
            .timestamp_nanos_opt()
            .unwrap_or(if t.timestamp() < 0 {
                i64::MIN
            } else {
                i64::MAX
            })
            .saturating_neg(),
        None => i64::MAX,
    }
}

/// A group's backups: items in the order the inventory lists them (which is the order
/// their data sits in memory), and their positions newest first.
struct Group<'a> {
    items: Vec<Item<'a>>,
    /// Positions in `items`, newest first (stable; items without a time last).
    order: Vec<usize>,
}

impl<'a> Group<'a> {
    /// Cuts a group's snapshots into items — one per snapshot, or for instance policies one
    /// per set id.
    fn new(policy: &PolicyConfig, indices: &[usize], backups: &'a [ExistingBackup]) -> Self {
        let sets = policy.resource == ResourceKind::Instance && policy.kind == BackupKind::Snapshot;
        let items: Vec<Item<'a>> = match sets {
            false => indices.iter().map(|&i| Item::single(&backups[i])).collect(),
            true => {
                let mut items: Vec<Item<'a>> = Vec::new();
                let mut by_set: HashMap<&str, usize> = HashMap::new();
                for &i in indices {
                    let b = &backups[i];
                    let Some(set) = b.set_id.as_deref() else {
                        items.push(Item::single(b));
                        continue;
                    };
                    match by_set.get(set) {
                        Some(&at) => items[at].add(b),
                        None => {
                            by_set.insert(set, items.len());
                            items.push(Item {
                                id: set,
                                ..Item::single(b)
                            });
                        }
                    }
                }
                for item in &mut items {
                    if let Members::Many(members) = &mut item.members {
                        members.sort_by(|a, b| a.id.cmp(&b.id));
                    }
                }
                items
            }
        };
        // Sorting small (time, position) pairs rather than the items: the position breaks
        // ties, so this is a stable sort by time.
        let mut keyed: Vec<(i64, usize)> = items
            .iter()
            .enumerate()
            .map(|(at, item)| (newest_first_key(item.time), at))
            .collect();
        keyed.sort_unstable();
        Group {
            items,
            order: keyed.into_iter().map(|(_, at)| at).collect(),
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// The items, newest first.
    fn newest_first(&self) -> impl Iterator<Item = &Item<'a>> {
        self.order.iter().map(|&at| &self.items[at])
    }

    /// The newest item dated at or before `now` for which `pick` holds.
    fn newest_where(
        &self,
        now: DateTime<Utc>,
        pick: impl Fn(&Item<'a>) -> bool,
    ) -> Option<&Item<'a>> {
        self.newest_first().find(|i| i.is_past(now) && pick(i))
    }

    /// Like [`newest_where`](Self::newest_where), as a position in `items`.
    fn newest_position(
        &self,
        now: DateTime<Utc>,
        pick: impl Fn(&Item<'a>) -> bool,
    ) -> Option<usize> {
        self.order
            .iter()
            .copied()
            .find(|&at| self.items[at].is_past(now) && pick(&self.items[at]))
    }

    fn oldest_time(&self) -> Option<DateTime<Utc>> {
        self.items.iter().filter_map(|i| i.time).min()
    }
}

/// Whether `tags` carries `tag` as retention's `tags` rule spells it: `key=value` or `key`.
fn carries(tags: &Tags, tag: &str) -> bool {
    tags.contains_key(tag)
        || tag
            .split_once('=')
            .is_some_and(|(k, v)| tags.get(k).is_some_and(|have| have == v))
}

/// What the retention engine sees of an item (or of the backup about to be created).
struct View<'g, 'a> {
    time: DateTime<Utc>,
    /// Position in the group's items; `None` for the backup about to be created.
    item: Option<usize>,
    group: &'g Group<'a>,
    /// Tags of the backup about to be created.
    new_tags: Option<&'g Tags>,
}

impl Retainable for View<'_, '_> {
    fn time(&self) -> DateTime<Utc> {
        self.time
    }

    fn has_tag(&self, tag: &str) -> bool {
        match (self.item, self.new_tags) {
            (Some(at), _) => self.group.items[at]
                .members()
                .iter()
                .any(|m| m.carries(tag)),
            (None, Some(tags)) => carries(tags, tag),
            (None, None) => false,
        }
    }
}

/// Retention and safety for one group. `planned` holds the tags of a backup about to be
/// created in this group.
fn decide_group(
    retain: &KeepPolicy,
    group: &Group<'_>,
    now: DateTime<Utc>,
    planned: Option<&Tags>,
) -> Vec<BackupDecision> {
    // Newest first, so that the engine's own sort finds its input in order.
    let mut views: Vec<View> = Vec::with_capacity(group.len() + 1);
    views.extend(group.order.iter().filter_map(|&at| {
        Some(View {
            time: group.items[at].time?,
            item: Some(at),
            group,
            new_tags: None,
        })
    }));
    if let Some(tags) = planned {
        views.push(View {
            time: now,
            item: None,
            group,
            new_tags: Some(tags),
        });
    }
    // Retention's `now` is exclusive; the planner's is inclusive (a backup at `now` is past).
    let horizon = now + TimeDelta::nanoseconds(1);
    let mut verdicts = apply_indexed(retain, &views, horizon);
    // The engine keeps its first (newest) backup even when no rule does, but that may be a
    // backup dated in the future; the planner protects the right one itself, below.
    if let Some(first) = verdicts.first_mut() {
        if first.reasons.last().map(String::as_str) == Some(REASON_NEWEST) {
            first.reasons.pop();
            first.keep = !first.reasons.is_empty();
        }
    }

    // The newest backup (unless a new one is planned) and the newest completed one.
    let newest = if planned.is_some() {
        None
    } else {
        group.newest_position(now, Item::counts)
    };
    let newest_completed = group.newest_position(now, Item::completed);

    let decide = |at: usize, time: DateTime<Utc>, keep: bool, reasons: Vec<String>| {
        let item = &group.items[at];
        let mut protections = item.protections(now);
        if newest == Some(at) {
            protections.push(REASON_NEWEST.to_owned());
        } else if newest_completed == Some(at) {
            protections.push("newest completed backup".to_owned());
        }
        let protected = (!protections.is_empty()).then(|| protections.join(", "));
        // Ids are inline strings: copying them allocates nothing.
        let snapshot_ids = match &item.members {
            Members::One(b) => b.snapshot_ids(),
            Members::Many(members) => members.iter().map(|m| m.id.clone()).collect(),
        };
        BackupDecision {
            backup_id: CompactString::from(item.id),
            snapshot_ids,
            time,
            keep,
            reasons,
            delete: !keep && protected.is_none(),
            protected,
            archive_charge: None,
            recycle_bin: None,
        }
    };

    let mut decisions = Vec::with_capacity(group.len());
    for verdict in verdicts {
        let view = &views[verdict.index];
        if let Some(at) = view.item {
            decisions.push(decide(at, view.time, verdict.keep, verdict.reasons));
        }
    }
    for &at in &group.order {
        if group.items[at].time.is_none() {
            decisions.push(decide(
                at,
                DateTime::<Utc>::UNIX_EPOCH,
                true,
                vec![REASON_NO_START_TIME.to_owned()],
            ));
        }
    }
    decisions
}

fn plan_target(
    p: usize,
    policy: &PolicyConfig,
    target: &Target,
    index: &BackupIndex,
    backups: &[ExistingBackup],
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> TargetPlan {
    let source = Group::new(policy, index.get(p, &target.id, &target.region), backups);
    let newest = source.newest_where(now, Item::counts).and_then(|i| i.time);
    let due = policy.due(newest, now);
    let health = policy.health(newest, now);
    let next_due = policy.next_due(newest, now);
    let create =
        (due.due && options.include_creates).then(|| create_action(policy, target, now, options));

    let mut groups = vec![GroupPlan {
        region: target.region.clone(),
        retention: policy.retain.to_string(),
        backups: decide_group(
            &policy.retain,
            &source,
            now,
            create.as_ref().map(|c| &c.tags),
        ),
        archives: Vec::new(),
    }];
    let mut copies = Vec::new();
    // Copies into other accounts are planned from those accounts' listings.
    for rule in policy.copy.iter().filter(|r| r.account.is_none()) {
        let copies_there = Group::new(policy, index.get(p, &target.id, &rule.region), backups);
        if let Some(action) = copy_action(
            rule,
            policy.lock.as_ref(),
            target,
            &source,
            &copies_there,
            create.is_some(),
            now,
        ) {
            copies.push(action);
        }
        let retain = policy.copy_retention(rule);
        groups.push(GroupPlan {
            region: rule.region.clone(),
            retention: retain.to_string(),
            backups: decide_group(retain, &copies_there, now, None),
            archives: Vec::new(),
        });
    }

    TargetPlan {
        target_id: target.id.clone(),
        kind: target.kind,
        region: target.region.clone(),
        name: target.name_tag().map(str::to_owned),
        due: due.due,
        due_reason: due.reason,
        health,
        next_due,
        newest_backup: newest,
        oldest_backup: source.oldest_time(),
        backup_count: source.len(),
        create,
        copies,
        groups,
        restore_test: None,
        account_copies: Vec::new(),
    }
}

/// A copy rule into another account (`rule.account`), for each of `targets` (target id,
/// source region, whether a create is planned): the copy to make there and the fate of the
/// copies already there. `source` is the source account's backups, `there` the backup
/// account's copies of this policy from this source account (in `rule.region`). The same rules
/// as a copy region of this account (see "Copies" above), except that no lock is put on them.
pub fn plan_account_copies(
    policy: &PolicyConfig,
    rule: &CopyRule,
    targets: &[(&str, ResourceKind, &str, bool)],
    source: &[ExistingBackup],
    there: &[ExistingBackup],
    now: DateTime<Utc>,
) -> Vec<(Option<CopyAction>, Vec<BackupDecision>)> {
    let policies = std::slice::from_ref(policy);
    let source_index = BackupIndex::build(policies, source);
    let there_index = BackupIndex::build(policies, there);
    let retain = policy.copy_retention(rule);
    targets
        .iter()
        .map(|&(id, kind, region, create_planned)| {
            let target = Target {
                id: id.to_owned(),
                kind,
                region: region.to_owned(),
                tags: Tags::new(),
                name: None,
                volume_ids: Vec::new(),
            };
            let from = Group::new(policy, source_index.get(0, id, region), source);
            let copies = Group::new(policy, there_index.get(0, id, &rule.region), there);
            let action = copy_action(rule, None, &target, &from, &copies, create_planned, now);
            (action, decide_group(retain, &copies, now, None))
        })
        .collect()
}

fn create_action(
    policy: &PolicyConfig,
    target: &Target,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> CreateAction {
    let ctx = VarContext {
        policy: &policy.name,
        region: &target.region,
        target,
        now,
    };
    let is_ami = policy.kind == BackupKind::Ami;
    let mut tags = Tags::new();
    // Volume snapshots carry their volume's tags (`copy_volume_tags`); AMIs carry their
    // instance's, as `ami create` does.
    if (options.copy_volume_tags && target.kind == ResourceKind::Volume) || is_ami {
        tags.extend(tags::copyable_user_tags(&target.tags));
    }
    tags.extend(
        options
            .default_tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    for (key, template) in &policy.tags {
        tags.insert(key.clone(), expand(template, &ctx));
    }
    tags.insert(tags::MANAGED.to_owned(), tags::MANAGED_VALUE.to_owned());
    tags.insert(tags::POLICY.to_owned(), policy.name.clone());
    let source_key = match target.kind {
        ResourceKind::Volume => tags::SOURCE_VOLUME,
        ResourceKind::Instance => tags::SOURCE_INSTANCE,
    };
    tags.insert(source_key.to_owned(), target.id.clone());

    let description = match &policy.description {
        Some(template) => expand(template, &ctx),
        None => match target.name_tag() {
            Some(name) => format!("autosnap policy {}: {} ({name})", policy.name, target.id),
            None => format!("autosnap policy {}: {}", policy.name, target.id),
        },
    };
    let is_instance = target.kind == ResourceKind::Instance && !is_ami;
    let ami = is_ami.then(|| AmiCreate {
        name: crate::ami::policy_image_name(&policy.name, &target.id, target.name_tag(), now),
        reboot: policy.reboot,
        encrypt: policy.encrypt || policy.kms_key.is_some(),
        kms_key: policy.kms_key.clone(),
    });
    CreateAction {
        target_id: target.id.clone(),
        kind: target.kind,
        region: target.region.clone(),
        tags,
        description: truncate_chars(description, MAX_DESCRIPTION_CHARS),
        exclude_boot: is_instance && policy.exclude_boot,
        exclude_volumes: if is_instance {
            policy.excluded_volumes(target)
        } else {
            Vec::new()
        },
        copy_tags_from_volumes: is_instance && options.copy_volume_tags,
        // Validated with the config (`PolicyConfig::validate`), so never dropped here.
        lock: if is_ami {
            None
        } else {
            policy.lock.as_ref().and_then(|l| l.request().ok())
        },
        ami,
    }
}

fn copy_action(
    rule: &CopyRule,
    policy_lock: Option<&crate::lock::LockPolicy>,
    target: &Target,
    source: &Group<'_>,
    copies_there: &Group<'_>,
    create_planned: bool,
    now: DateTime<Utc>,
) -> Option<CopyAction> {
    let action = |source: CopySource, reason: String| CopyAction {
        source,
        from_region: target.region.clone(),
        to_region: rule.region.clone(),
        kms_key: rule.kms_key.clone(),
        reason,
        lock: rule
            .lock
            .as_ref()
            .or(policy_lock)
            .and_then(|l| l.request().ok()),
    };
    if create_planned {
        return Some(action(
            CopySource::New,
            "copy the new backup after it completes".to_owned(),
        ));
    }
    let latest = source.newest_where(now, Item::completed)?;
    let copied: HashSet<&str> = copies_there
        .items
        .iter()
        .flat_map(|i| i.members().iter())
        .filter_map(|m| m.copy_of())
        .collect();
    let missing: Vec<String> = latest
        .member_ids()
        .filter(|id| !copied.contains(id))
        .map(str::to_owned)
        .collect();
    if missing.is_empty() {
        return None;
    }
    // Never backfill: a newer source backup already has a copy there.
    let newest_copied = source
        .items
        .iter()
        .filter(|i| i.has_member(&copied))
        .filter_map(|i| i.time)
        .max();
    let latest_time = latest.time?;
    if newest_copied.is_some_and(|t| t > latest_time) {
        return None;
    }
    let when = crate::schedule::format_time(latest_time, chrono_tz::Tz::UTC);
    let total = latest.members().len();
    let reason = if missing.len() == total {
        format!(
            "newest completed backup {} ({when}) has no copy in {}",
            latest.id, rule.region
        )
    } else {
        format!(
            "{} of {total} snapshots of the newest completed backup {} ({when}) have no copy in {}",
            missing.len(),
            latest.id,
            rule.region
        )
    };
    let is_ami = latest.members().iter().any(|m| m.kind == BackupKind::Ami);
    Some(action(
        CopySource::Existing {
            backup_id: latest.id.to_owned(),
            // An AMI is copied whole, by its id.
            snapshot_ids: if is_ami { Vec::new() } else { missing },
        },
        reason,
    ))
}
