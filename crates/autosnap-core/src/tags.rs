//! Tags: the `K=V` arguments users type, and the ownership tags autosnap puts on
//! everything it creates. Ownership tags are what make deletes safe: autosnap
//! only ever deletes what carries `autosnap:managed=true` unless forced.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Tags as an ordered map, so output is stable.
pub type Tags = BTreeMap<String, String>;

/// Marks a resource as created (and so owned) by autosnap.
pub const MANAGED: &str = "autosnap:managed";
/// The volume a snapshot was taken of.
pub const SOURCE_VOLUME: &str = "autosnap:source-volume";
/// The instance a snapshot set (or AMI) was taken of.
pub const SOURCE_INSTANCE: &str = "autosnap:source-instance";
/// Groups the snapshots of one crash-consistent multi-volume set.
pub const SET_ID: &str = "autosnap:set-id";
/// On a copy: the snapshot it was copied from, and that snapshot's region.
pub const SOURCE_SNAPSHOT: &str = "autosnap:source-snapshot";
pub const SOURCE_REGION: &str = "autosnap:source-region";
/// On an AMI copy: the AMI it was copied from (with `autosnap:source-region`).
pub const SOURCE_IMAGE: &str = "autosnap:source-image";
/// The policy that created a backup (backup policies).
pub const POLICY: &str = "autosnap:policy";
/// The consistency a snapshot achieved: `crash`, `filesystem` or `application`.
pub const CONSISTENCY: &str = "autosnap:consistency";
/// On a restored snapshot or AMI: what it was restored from (the original snapshot or AMI).
/// A restored resource is the user's data, never a policy's backup: the planner skips
/// anything carrying it, so retention never counts or deletes it.
pub const RESTORED_FROM: &str = "autosnap:restored-from";
/// On a snapshot restored from an archive: the archive's id.
pub const SOURCE_ARCHIVE: &str = "autosnap:source-archive";
/// On a snapshot made for an AMI: that AMI. EC2 names the AMI in the description of the
/// snapshots CreateImage and CopyImage make; a restore makes the snapshots before it
/// registers the AMI, so it says so with this tag instead.
pub const FOR_IMAGE: &str = "autosnap:for-image";

/// Prefix of autosnap's own tags; never copied from a source resource.
pub const OWN_PREFIX: &str = "autosnap:";
/// Prefix AWS reserves; such tags cannot be set by users.
pub const AWS_PREFIX: &str = "aws:";

/// The value of `MANAGED` on resources autosnap creates.
pub const MANAGED_VALUE: &str = "true";

/// Whether a resource's tags say autosnap created it.
pub fn is_managed(tags: &Tags) -> bool {
    tags.get(MANAGED).map(String::as_str) == Some(MANAGED_VALUE)
}

/// The tags of a source resource that may be copied onto a backup of it:
/// everything except AWS-reserved tags and autosnap's own.
pub fn copyable_user_tags(tags: &Tags) -> Tags {
    tags.iter()
        .filter(|(k, _)| !k.starts_with(AWS_PREFIX) && !k.starts_with(OWN_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Tags for something restored from `original`: the original's user tags (without `aws:`
/// and `autosnap:` keys, so never `autosnap:policy`, `autosnap:source-volume`,
/// `autosnap:source-instance` or `autosnap:set-id`, which would make a policy adopt it as
/// its newest backup and later prune it), marked as autosnap's and as restored from
/// `restored_from`.
pub fn restored_tags<'a>(
    original: impl IntoIterator<Item = (&'a String, &'a String)>,
    restored_from: &str,
) -> Tags {
    let mut t: Tags = original
        .into_iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !k.starts_with(AWS_PREFIX) && !k.starts_with(OWN_PREFIX)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    t.insert(MANAGED.into(), MANAGED_VALUE.into());
    t.insert(RESTORED_FROM.into(), restored_from.into());
    t
}

/// What a copy was made from: a snapshot or an AMI, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopySource<'a> {
    Snapshot(&'a str),
    Image(&'a str),
}

/// The tags of a copy (`snapshot copy`, a policy's copies of snapshots and of AMIs): EC2 copies
/// no tags, so the copy carries its source's (without AWS-reserved keys, which cannot be set;
/// autosnap's own, such as the policy, stay so the copy belongs where its source does), is
/// autosnap's, and says what it was copied from and where from.
pub fn copy_tags(source_tags: &Tags, source: CopySource<'_>, source_region: &str) -> Tags {
    let mut t: Tags = source_tags
        .iter()
        .filter(|(k, _)| !k.starts_with(AWS_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    t.insert(MANAGED.into(), MANAGED_VALUE.into());
    let (key, id) = match source {
        CopySource::Snapshot(id) => (SOURCE_SNAPSHOT, id),
        CopySource::Image(id) => (SOURCE_IMAGE, id),
    };
    t.insert(key.into(), id.into());
    t.insert(SOURCE_REGION.into(), source_region.into());
    t
}

/// A tag given on the command line as `KEY=VALUE`, or as `KEY` alone when
/// filtering (which then matches any value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagArg {
    pub key: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag '{0}' has an empty key: write KEY=VALUE")]
    EmptyKey(String),
    #[error("tag key '{0}' is longer than 128 characters")]
    KeyTooLong(String),
    #[error("tag '{0}' has a value longer than 256 characters")]
    ValueTooLong(String),
    #[error("tag key '{0}' starts with 'aws:', which AWS reserves for its own tags")]
    Reserved(String),
    #[error("tag '{0}' has no value: write KEY=VALUE (an empty value is KEY=)")]
    MissingValue(String),
}

impl FromStr for TagArg {
    type Err = TagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.to_string())),
            None => (s.trim(), None),
        };
        if key.is_empty() {
            return Err(TagError::EmptyKey(s.to_string()));
        }
        if key.chars().count() > 128 {
            return Err(TagError::KeyTooLong(key.to_string()));
        }
        if value.as_ref().is_some_and(|v| v.chars().count() > 256) {
            return Err(TagError::ValueTooLong(s.to_string()));
        }
        Ok(TagArg {
            key: key.to_string(),
            value,
        })
    }
}

impl fmt::Display for TagArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}", self.key, v),
            None => f.write_str(&self.key),
        }
    }
}

impl TagArg {
    /// A tag to set on a resource: it needs a value and a key that is not reserved.
    pub fn to_settable(&self) -> Result<(String, String), TagError> {
        if self.key.to_ascii_lowercase().starts_with(AWS_PREFIX) {
            return Err(TagError::Reserved(self.key.clone()));
        }
        match &self.value {
            Some(v) => Ok((self.key.clone(), v.clone())),
            None => Err(TagError::MissingValue(self.key.clone())),
        }
    }

    /// Whether a resource's tags match this filter.
    pub fn matches(&self, tags: &Tags) -> bool {
        match (&self.value, tags.get(&self.key)) {
            (Some(want), Some(have)) => want == have,
            (None, Some(_)) => true,
            (_, None) => false,
        }
    }
}

/// Turns `KEY=VALUE` arguments into tags to set, rejecting reserved keys.
pub fn settable_tags(args: &[TagArg]) -> Result<Tags, TagError> {
    args.iter().map(TagArg::to_settable).collect()
}

/// The id shared by the snapshots of one multi-volume set: the instance and
/// the second the set was taken.
pub fn set_id(instance_id: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    format!("{instance_id}-{}", at.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_key_value_and_key_only() {
        let t: TagArg = "Env=prod".parse().unwrap();
        assert_eq!(t.key, "Env");
        assert_eq!(t.value.as_deref(), Some("prod"));
        let t: TagArg = "Backup".parse().unwrap();
        assert_eq!(t.value, None);
        let t: TagArg = "Note=a=b".parse().unwrap();
        assert_eq!(t.value.as_deref(), Some("a=b"));
        let t: TagArg = "Empty=".parse().unwrap();
        assert_eq!(t.value.as_deref(), Some(""));
    }

    #[test]
    fn rejects_bad_tags() {
        assert_eq!("=x".parse::<TagArg>(), Err(TagError::EmptyKey("=x".into())));
        let long = "k".repeat(129);
        assert!(matches!(
            long.parse::<TagArg>(),
            Err(TagError::KeyTooLong(_))
        ));
        let t: TagArg = "aws:foo=1".parse().unwrap();
        assert!(matches!(t.to_settable(), Err(TagError::Reserved(_))));
        let t: TagArg = "Name".parse().unwrap();
        assert!(matches!(t.to_settable(), Err(TagError::MissingValue(_))));
    }

    #[test]
    fn matching() {
        let have = tags(&[("Env", "prod"), ("Team", "db")]);
        assert!("Env=prod".parse::<TagArg>().unwrap().matches(&have));
        assert!(!"Env=dev".parse::<TagArg>().unwrap().matches(&have));
        assert!("Team".parse::<TagArg>().unwrap().matches(&have));
        assert!(!"Owner".parse::<TagArg>().unwrap().matches(&have));
    }

    #[test]
    fn ownership_and_copyable() {
        let t = tags(&[
            ("Name", "db"),
            ("aws:cloudformation:stack-name", "s"),
            ("autosnap:managed", "true"),
        ]);
        assert!(is_managed(&t));
        assert_eq!(copyable_user_tags(&t), tags(&[("Name", "db")]));
        assert!(!is_managed(&tags(&[("autosnap:managed", "false")])));
    }

    #[test]
    fn restored_tags_drop_policy_membership() {
        let original = tags(&[
            ("Name", "db"),
            ("Team", "data"),
            ("aws:backup:source", "x"),
            ("AWS:odd-case", "x"),
            ("autosnap:managed", "true"),
            ("autosnap:policy", "prod-daily"),
            ("autosnap:source-volume", "vol-0000000a"),
            ("autosnap:source-instance", "i-0000000a"),
            ("autosnap:set-id", "i-0000000a-20260101T000000Z"),
        ]);
        let t = restored_tags(&original, "snap-00000001");
        assert_eq!(
            t,
            tags(&[
                ("Name", "db"),
                ("Team", "data"),
                ("autosnap:managed", "true"),
                ("autosnap:restored-from", "snap-00000001"),
            ])
        );
    }

    #[test]
    fn a_copy_keeps_its_sources_tags_and_says_where_it_came_from() {
        // (source tags, source, region, expected tags)
        let cases: Vec<(Tags, CopySource, &str, Tags)> = vec![
            (
                tags(&[("Name", "db"), ("aws:backup:source-resource", "x")]),
                CopySource::Snapshot("snap-1"),
                "us-east-1",
                tags(&[
                    ("Name", "db"),
                    (MANAGED, MANAGED_VALUE),
                    (SOURCE_SNAPSHOT, "snap-1"),
                    (SOURCE_REGION, "us-east-1"),
                ]),
            ),
            (
                // A policy's backup: its policy tag goes with it; a source-of-a-source is replaced.
                tags(&[
                    (POLICY, "daily"),
                    (SOURCE_SNAPSHOT, "snap-0"),
                    (SOURCE_REGION, "eu-west-1"),
                ]),
                CopySource::Snapshot("snap-1"),
                "us-east-1",
                tags(&[
                    (POLICY, "daily"),
                    (MANAGED, MANAGED_VALUE),
                    (SOURCE_SNAPSHOT, "snap-1"),
                    (SOURCE_REGION, "us-east-1"),
                ]),
            ),
            (
                tags(&[("Env", "prod"), (MANAGED, "false")]),
                CopySource::Image("ami-1"),
                "us-west-2",
                tags(&[
                    ("Env", "prod"),
                    (MANAGED, MANAGED_VALUE),
                    (SOURCE_IMAGE, "ami-1"),
                    (SOURCE_REGION, "us-west-2"),
                ]),
            ),
            (
                Tags::new(),
                CopySource::Image("ami-2"),
                "us-east-1",
                tags(&[
                    (MANAGED, MANAGED_VALUE),
                    (SOURCE_IMAGE, "ami-2"),
                    (SOURCE_REGION, "us-east-1"),
                ]),
            ),
        ];
        for (source_tags, source, region, want) in cases {
            assert_eq!(copy_tags(&source_tags, source, region), want, "{source:?}");
        }
    }
}
