//! Deciding which requested snapshot deletions may go ahead. Pure: the AWS
//! facts (what exists, which AMIs use what) come in as data, the decision
//! with a reason for every id comes out, and the CLI prints it before (or
//! instead of, with `--dry-run`) acting on it.

use serde::Serialize;

use crate::lock::SnapshotLock;
use crate::model::{Image, Snapshot};

/// What will happen to one requested snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteAction {
    Delete,
    /// Refused by a safety rule; the reason says which and how to proceed.
    Refuse,
    /// The snapshot does not exist (or is not ours).
    Missing,
    /// An EBS snapshot lock keeps it; the reason says until when and what to do.
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeleteDecision {
    pub snapshot_id: String,
    pub action: DeleteAction,
    pub reason: String,
}

/// Safety rules, in order: it must exist in our account; it must not back a
/// registered AMI (AWS would refuse anyway, and the AMI is named so the user
/// knows what to deregister); it must not be locked (`locks`: what
/// DescribeLockedSnapshots says about the candidates; `--force` does not
/// override a lock); it must carry autosnap's ownership tag unless `force`.
pub fn plan_deletes(
    requested: &[String],
    found: &[Snapshot],
    images: &[Image],
    locks: &[SnapshotLock],
    force: bool,
    region: &str,
) -> Vec<DeleteDecision> {
    let mut seen = std::collections::HashSet::new();
    requested
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .map(|id| {
            let decide = |action, reason: String| DeleteDecision {
                snapshot_id: id.clone(),
                action,
                reason,
            };
            let Some(snap) = found.iter().find(|s| &s.snapshot_id == id) else {
                return decide(
                    DeleteAction::Missing,
                    format!("does not exist in {region} (or belongs to another account)"),
                );
            };
            let users: Vec<String> = images
                .iter()
                .filter(|i| i.snapshot_ids.iter().any(|s| s == id))
                .map(|i| match &i.name {
                    Some(n) => format!("{} ({n})", i.image_id),
                    None => i.image_id.clone(),
                })
                .collect();
            if !users.is_empty() {
                return decide(
                    DeleteAction::Refuse,
                    format!(
                        "used by AMI {}: deregister the AMI first",
                        users.join(", ")
                    ),
                );
            }
            if let Some(lock) = locks
                .iter()
                .find(|l| &l.snapshot_id == id && l.prevents_deletion())
            {
                return decide(
                    DeleteAction::Locked,
                    format!("{}: {}", lock.reason(), lock.remedy()),
                );
            }
            if !snap.managed && !force {
                return decide(
                    DeleteAction::Refuse,
                    "not created by autosnap (no autosnap:managed=true tag): pass --force to delete it anyway".into(),
                );
            }
            let why = if snap.managed {
                "created by autosnap".to_string()
            } else {
                "not created by autosnap, deleting because of --force".to_string()
            };
            decide(DeleteAction::Delete, why)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::Tags;

    fn snap(id: &str, managed: bool) -> Snapshot {
        Snapshot {
            storage_tier: Default::default(),
            restore_expiry: None,
            snapshot_id: id.into(),
            volume_id: Some("vol-0123abcd".into()),
            state: "completed".into(),
            progress: None,
            start_time: None,
            size_gib: Some(1),
            encrypted: false,
            kms_key_id: None,
            description: None,
            owner_id: None,
            managed,
            tags: Tags::new(),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_rule_with_its_reason() {
        let found = vec![
            snap("snap-00000001", true),
            snap("snap-00000002", false),
            snap("snap-00000003", true),
        ];
        let images = vec![Image {
            image_id: "ami-0000000a".into(),
            name: Some("web".into()),
            state: Some("available".into()),
            snapshot_ids: ids(&["snap-00000003"]),
            tags: Tags::new(),
        }];
        let plan = plan_deletes(
            &ids(&[
                "snap-00000001",
                "snap-00000002",
                "snap-00000003",
                "snap-00000004",
                "snap-00000001",
            ]),
            &found,
            &images,
            &[],
            false,
            "us-east-1",
        );
        let actions: Vec<_> = plan.iter().map(|d| d.action.clone()).collect();
        assert_eq!(
            actions,
            vec![
                DeleteAction::Delete,
                DeleteAction::Refuse,
                DeleteAction::Refuse,
                DeleteAction::Missing
            ],
            "duplicates are planned once"
        );
        assert!(plan[1].reason.contains("--force"));
        assert!(plan[2].reason.contains("ami-0000000a (web)"));
        assert!(plan[3].reason.contains("us-east-1"));
    }

    #[test]
    fn force_allows_unmanaged_but_never_ami_backed() {
        let found = vec![snap("snap-00000002", false), snap("snap-00000003", false)];
        let images = vec![Image {
            image_id: "ami-0000000a".into(),
            name: None,
            state: None,
            snapshot_ids: ids(&["snap-00000003"]),
            tags: Tags::new(),
        }];
        let plan = plan_deletes(
            &ids(&["snap-00000002", "snap-00000003"]),
            &found,
            &images,
            &[],
            true,
            "us-east-1",
        );
        assert_eq!(plan[0].action, DeleteAction::Delete);
        assert!(plan[0].reason.contains("--force"));
        assert_eq!(plan[1].action, DeleteAction::Refuse);
    }

    #[test]
    fn a_lock_keeps_a_snapshot_even_with_force_until_it_expires() {
        use crate::lock::{LockState, SnapshotLock};
        let lock = |id: &str, state: &str| SnapshotLock {
            snapshot_id: id.into(),
            state: LockState::parse(state),
            expires_on: Some("2027-01-02T03:04:00Z".parse().unwrap()),
            cool_off_ends: None,
            duration_days: Some(30),
            created_on: None,
        };
        let found = vec![snap("snap-00000001", true), snap("snap-00000002", false)];
        let locks = vec![
            lock("snap-00000001", "compliance"),
            lock("snap-00000002", "expired"),
        ];
        let plan = plan_deletes(
            &ids(&["snap-00000001", "snap-00000002"]),
            &found,
            &[],
            &locks,
            true,
            "us-east-1",
        );
        assert_eq!(plan[0].action, DeleteAction::Locked);
        assert!(
            plan[0]
                .reason
                .starts_with("locked (compliance) until 2027-01-02 03:04 UTC"),
            "{}",
            plan[0].reason
        );
        assert_eq!(
            plan[1].action,
            DeleteAction::Delete,
            "an expired lock protects nothing"
        );
    }
}
