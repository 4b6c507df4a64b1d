//! Plain descriptions of the AWS resources autosnap works with. The AWS layer
//! fills these from SDK types; everything above it (plans, output) reads only
//! these. Their JSON form is autosnap's documented `-o json` output, so field
//! names here are a public contract (see docs/json-output.md).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::tags::{self, Tags};

/// An EBS volume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Volume {
    pub volume_id: String,
    /// The `Name` tag, when there is one.
    pub name: Option<String>,
    pub size_gib: i32,
    pub volume_type: String,
    pub availability_zone: String,
    pub state: String,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub snapshot_id: Option<String>,
    pub create_time: Option<DateTime<Utc>>,
    pub attachments: Vec<VolumeAttachment>,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeAttachment {
    pub instance_id: String,
    pub device: Option<String>,
    pub state: Option<String>,
}

/// An EBS snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub snapshot_id: String,
    pub volume_id: Option<String>,
    /// `pending`, `completed`, `error`, `recoverable` or `recovering`.
    pub state: String,
    /// Copy progress as EC2 reports it, e.g. `100%`.
    pub progress: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub size_gib: Option<i32>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub description: Option<String>,
    pub owner_id: Option<String>,
    /// Whether autosnap created it (carries `autosnap:managed=true`).
    pub managed: bool,
    pub tags: Tags,
    /// `standard` or `archive` (EBS Snapshots Archive).
    pub storage_tier: crate::tier::StorageTier,
    /// When a temporarily restored archived snapshot goes back to the archive tier.
    pub restore_expiry: Option<DateTime<Utc>>,
}

impl Snapshot {
    pub fn is_completed(&self) -> bool {
        self.state == "completed"
    }

    /// States that will not change any more.
    pub fn is_settled(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "error")
    }

    /// Progress in percent, parsed from EC2's `NN%` string.
    pub fn progress_percent(&self) -> Option<u8> {
        let p = self.progress.as_deref()?.trim().trim_end_matches('%');
        p.parse::<u8>().ok().map(|p| p.min(100))
    }

    pub fn name(&self) -> Option<&str> {
        self.tags.get("Name").map(String::as_str)
    }
}

/// The newest snapshot of a volume, for `volume list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotRef {
    pub snapshot_id: String,
    pub start_time: Option<DateTime<Utc>>,
}

/// An AMI, as much as autosnap needs of it so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    pub image_id: String,
    pub name: Option<String>,
    pub state: Option<String>,
    /// Snapshots behind its block device mappings.
    pub snapshot_ids: Vec<String>,
    pub tags: Tags,
}

/// Builds a `Tags` map from pairs; absent keys or values are skipped.
pub fn tags_from_pairs<I, K, V>(pairs: I) -> Tags
where
    I: IntoIterator<Item = (Option<K>, Option<V>)>,
    K: Into<String>,
    V: Into<String>,
{
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((k?.into(), v.map(Into::into).unwrap_or_default())))
        .collect()
}

/// Whether autosnap's ownership tag is present.
pub fn is_managed(tags: &Tags) -> bool {
    tags::is_managed(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(state: &str, progress: Option<&str>) -> Snapshot {
        Snapshot {
            storage_tier: Default::default(),
            restore_expiry: None,
            snapshot_id: "snap-0123abcd".into(),
            volume_id: None,
            state: state.into(),
            progress: progress.map(Into::into),
            start_time: None,
            size_gib: Some(8),
            encrypted: false,
            kms_key_id: None,
            description: None,
            owner_id: None,
            managed: false,
            tags: Tags::new(),
        }
    }

    #[test]
    fn progress_parsing() {
        assert_eq!(snap("pending", Some("42%")).progress_percent(), Some(42));
        assert_eq!(snap("pending", Some("")).progress_percent(), None);
        assert_eq!(snap("pending", None).progress_percent(), None);
        assert!(snap("error", None).is_settled());
        assert!(!snap("pending", None).is_settled());
    }

    #[test]
    fn json_field_names_are_stable() {
        let v = serde_json::to_value(snap("completed", Some("100%"))).unwrap();
        for key in [
            "snapshot_id",
            "volume_id",
            "state",
            "start_time",
            "size_gib",
            "encrypted",
            "tags",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(v["tags"].is_object());
    }
}
