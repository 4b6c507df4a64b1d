//! Typed EC2 resource ids, checked for shape before any AWS call so that a typo
//! gets a precise local error instead of a round trip.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An id that does not have the shape of the resource it should name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a valid {kind} id: expected {example}")]
pub struct MalformedId {
    pub input: String,
    pub kind: &'static str,
    pub example: &'static str,
}

/// `prefix-` followed by 8 or 17 lowercase hex digits, as EC2 issues them.
fn has_ec2_id_shape(s: &str, prefix: &str) -> bool {
    let Some(rest) = s.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    (rest.len() == 8 || rest.len() == 17)
        && rest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

macro_rules! ec2_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = MalformedId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let s = s.trim();
                if has_ec2_id_shape(s, $prefix) {
                    Ok(Self(s.to_string()))
                } else {
                    Err(MalformedId {
                        input: s.to_string(),
                        kind: $kind,
                        example: concat!("'", $prefix, "-' and 8 or 17 hex digits, e.g. ", $prefix, "-0123456789abcdef0"),
                    })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = MalformedId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

ec2_id!(
    /// An EBS volume id, `vol-…`.
    VolumeId, "vol", "volume"
);
ec2_id!(
    /// An EBS snapshot id, `snap-…`.
    SnapshotId, "snap", "snapshot"
);
ec2_id!(
    /// An EC2 instance id, `i-…`.
    InstanceId, "i", "instance"
);
ec2_id!(
    /// An AMI id, `ami-…`.
    ImageId, "ami", "AMI"
);

/// What `autosnap snapshot create` was asked to snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotTarget {
    Volume(VolumeId),
    /// All volumes of an instance, as one crash-consistent set.
    Instance(InstanceId),
    /// A mounted filesystem on this instance, resolved to its EBS volume(s).
    Path(std::path::PathBuf),
}

impl FromStr for SnapshotTarget {
    type Err = MalformedId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.starts_with("vol-") {
            s.parse().map(SnapshotTarget::Volume)
        } else if s.starts_with("i-") {
            s.parse().map(SnapshotTarget::Instance)
        } else if s.starts_with('/') {
            Ok(SnapshotTarget::Path(s.into()))
        } else {
            Err(MalformedId {
                input: s.to_string(),
                kind: "snapshot target",
                example: "a volume id (vol-…), an instance id (i-…) or an absolute mount path (/mnt/data)",
            })
        }
    }
}

impl fmt::Display for SnapshotTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotTarget::Volume(v) => v.fmt(f),
            SnapshotTarget::Instance(i) => i.fmt(f),
            SnapshotTarget::Path(p) => p.display().fmt(f),
        }
    }
}

/// A region name such as `us-east-1`, in the shape of some AWS partition's
/// region names (see [`crate::region`]). Checked so that a typo fails fast and clearly.
pub fn is_plausible_region(s: &str) -> bool {
    crate::region::has_region_shape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_short_and_long_ids() {
        assert!("snap-0123abcd".parse::<SnapshotId>().is_ok());
        assert!("snap-01a3463de2fb88ed3".parse::<SnapshotId>().is_ok());
        assert!("vol-5721aeb7b2706c264".parse::<VolumeId>().is_ok());
        assert!("i-ee1d434d745a4344f".parse::<InstanceId>().is_ok());
        assert!("ami-dc6549f12239a9089".parse::<ImageId>().is_ok());
    }

    #[test]
    fn rejects_wrong_prefix_length_and_case() {
        for bad in [
            "vol-0123abcd",
            "snap-0123abc",
            "snap-0123abcde",
            "snap-0123ABCD",
            "snap-0123abcg",
            "snap0123abcd",
            "",
        ] {
            let err = bad.parse::<SnapshotId>().unwrap_err();
            assert_eq!(err.kind, "snapshot");
            assert!(err.to_string().contains("not a valid snapshot id"), "{err}");
        }
    }

    #[test]
    fn target_dispatches_on_prefix() {
        assert_eq!(
            "vol-0123abcd".parse::<SnapshotTarget>().unwrap(),
            SnapshotTarget::Volume("vol-0123abcd".parse().unwrap())
        );
        assert_eq!(
            "i-0123abcd".parse::<SnapshotTarget>().unwrap(),
            SnapshotTarget::Instance("i-0123abcd".parse().unwrap())
        );
        assert_eq!(
            "/mnt/data".parse::<SnapshotTarget>().unwrap(),
            SnapshotTarget::Path("/mnt/data".into())
        );
        let err = "snap-0123abcd".parse::<SnapshotTarget>().unwrap_err();
        assert!(err.to_string().contains("volume id"), "{err}");
    }

    #[test]
    fn ids_round_trip_through_serde() {
        let id: SnapshotId = serde_json::from_str("\"snap-0123abcd\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"snap-0123abcd\"");
        assert!(serde_json::from_str::<SnapshotId>("\"snap-xyz\"").is_err());
    }

    #[test]
    fn region_shape() {
        assert!(is_plausible_region("us-east-1"));
        assert!(is_plausible_region("eu-central-2"));
        assert!(!is_plausible_region("US-EAST-1"));
        assert!(!is_plausible_region("useast1"));
        assert!(!is_plausible_region("us east 1"));
    }
}
