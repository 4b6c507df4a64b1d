//! Recycle Bin: which retention rule keeps a deleted snapshot or AMI, and for how long.
//!
//! AWS's matching rules (Recycle Bin user guide, "Work with retention rules"; CreateRule):
//! - a rule retains one resource type (`EBS_SNAPSHOT` or `EC2_IMAGE`), and only while it is
//!   `available`;
//! - a *tag-level* rule (it has resource tags) retains a resource that carries at least one of its
//!   key/value pairs;
//! - a *Region-level* rule (no resource tags) retains every resource of its type in its Region,
//!   except those carrying one of its exclusion tags.
//!
//! Two answers AWS does not spell out, chosen so that autosnap never calls a final deletion
//! recoverable: a resource several rules retain is kept for the longest period (ties: the rule
//! whose id sorts first), and a rule tag without a value matches only a tag with an empty value.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::tags::Tags;

/// What a rule retains (the rbin API's `ResourceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum BinResource {
    #[serde(rename = "EBS_SNAPSHOT")]
    Snapshot,
    #[serde(rename = "EC2_IMAGE")]
    Image,
}

impl BinResource {
    /// The rbin API's name.
    pub fn api_name(self) -> &'static str {
        match self {
            BinResource::Snapshot => "EBS_SNAPSHOT",
            BinResource::Image => "EC2_IMAGE",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            BinResource::Snapshot => "snapshot",
            BinResource::Image => "AMI",
        }
    }
}

/// A rule's tag: `value` is empty when the rule gives none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTag {
    pub key: String,
    pub value: String,
}

impl RuleTag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> RuleTag {
        RuleTag {
            key: key.into(),
            value: value.into(),
        }
    }

    fn carried_by(&self, tags: &Tags) -> bool {
        tags.get(&self.key).is_some_and(|v| *v == self.value)
    }
}

/// One Recycle Bin retention rule, as GetRule describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionRule {
    pub id: String,
    pub resource: BinResource,
    /// Whole days (the only unit the API has).
    pub retention_days: u32,
    /// Tag-level rules: the tags that select what it retains.
    pub resource_tags: Vec<RuleTag>,
    /// Region-level rules: the tags that exclude a resource.
    pub exclude_tags: Vec<RuleTag>,
    /// `available` (retains) or `pending` (not yet).
    pub available: bool,
    /// `locked`, `pending_unlock`, `unlocked`, or None when never locked.
    pub lock_state: Option<String>,
    pub description: Option<String>,
}

impl RetentionRule {
    /// A tag-level rule selects by tags; a Region-level rule has none.
    pub fn is_tag_level(&self) -> bool {
        !self.resource_tags.is_empty()
    }

    /// Whether a deleted `resource` carrying `tags` goes to the bin under this rule.
    pub fn retains(&self, resource: BinResource, tags: &Tags) -> bool {
        if !self.available || self.resource != resource {
            return false;
        }
        if self.is_tag_level() {
            self.resource_tags.iter().any(|t| t.carried_by(tags))
        } else {
            !self.exclude_tags.iter().any(|t| t.carried_by(tags))
        }
    }

    /// Whether matching needs a resource's tags at all.
    pub fn reads_tags(&self) -> bool {
        self.is_tag_level() || !self.exclude_tags.is_empty()
    }
}

/// The rule that retains a deleted `resource` carrying `tags`, if any: the longest retention
/// wins, ties go to the rule whose id sorts first.
pub fn retaining_rule<'r>(
    rules: &'r [RetentionRule],
    resource: BinResource,
    tags: &Tags,
) -> Option<&'r RetentionRule> {
    rules
        .iter()
        .filter(|r| r.retains(resource, tags))
        .min_by(|a, b| {
            b.retention_days
                .cmp(&a.retention_days)
                .then_with(|| a.id.cmp(&b.id))
        })
}

/// What a Region's rules are, as far as autosnap could read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionRules {
    Known(Vec<RetentionRule>),
    /// Reading them failed (e.g. no `rbin:ListRules` permission): why.
    Unknown(String),
}

/// Where a deleted backup goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Every part goes to the Recycle Bin.
    Recoverable,
    /// Some parts go to the Recycle Bin, the others are deleted for good.
    Partial,
    /// Deleted for good.
    Final,
    /// The Region's rules could not be read.
    Unknown,
}

/// The Recycle Bin's answer for one deletion (a snapshot, an instance set, an AMI with its
/// snapshots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinFate {
    pub fate: Fate,
    /// Recoverable (or partial): for how many days at least (the shortest of the parts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// The rule keeping the part with the shortest period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The plan's words: `→ Recycle Bin 7d (rule abc)`, `final`, `Recycle Bin rules unknown (…)`.
    pub note: String,
}

impl BinFate {
    fn unknown(why: &str) -> BinFate {
        BinFate {
            fate: Fate::Unknown,
            days: None,
            rule: None,
            note: format!("Recycle Bin rules unknown ({why})"),
        }
    }
}

/// The fate of deleting `parts` (each a resource and its tags) under a Region's rules.
pub fn fate_of(rules: &RegionRules, parts: &[(BinResource, &Tags)]) -> BinFate {
    let rules = match rules {
        RegionRules::Known(r) => r,
        RegionRules::Unknown(why) => return BinFate::unknown(why),
    };
    let kept: Vec<Option<&RetentionRule>> = parts
        .iter()
        .map(|(kind, tags)| retaining_rule(rules, *kind, tags))
        .collect();
    let retained = kept.iter().flatten().count();
    let shortest = kept.iter().flatten().min_by_key(|r| r.retention_days);
    match shortest {
        None => BinFate {
            fate: Fate::Final,
            days: None,
            rule: None,
            note: "final (no Recycle Bin rule retains it)".into(),
        },
        Some(r) => {
            let base = format!("→ Recycle Bin {}d (rule {})", r.retention_days, r.id);
            let (fate, note) = if retained == parts.len() {
                (Fate::Recoverable, base)
            } else {
                let finals: Vec<&str> = parts
                    .iter()
                    .zip(&kept)
                    .filter(|(_, k)| k.is_none())
                    .map(|((kind, _), _)| kind.noun())
                    .collect();
                (
                    Fate::Partial,
                    format!(
                        "{base} for {retained} of {} parts; {} final",
                        parts.len(),
                        if finals.len() == 1 {
                            format!("the {} is", finals[0])
                        } else {
                            format!("the other {} are", finals.len())
                        }
                    ),
                )
            };
            BinFate {
                fate,
                days: Some(r.retention_days),
                rule: Some(r.id.clone()),
                note,
            }
        }
    }
}

/// "recoverable for 7 days by rule abc" / "deleted for good (no rule retains it)" for one
/// resource: what `snapshot delete` and friends can say.
pub fn describe(rules: &[RetentionRule], resource: BinResource, tags: &Tags) -> String {
    match retaining_rule(rules, resource, tags) {
        Some(r) => format!(
            "recoverable for {} day{} by rule {}",
            r.retention_days,
            if r.retention_days == 1 { "" } else { "s" },
            r.id
        ),
        None => "deleted for good (no Recycle Bin rule retains it)".into(),
    }
}

/// Per Region with deletions in `plan`, the resource types whose rules are needed: one ListRules
/// per type per Region, never per backup.
pub fn regions_to_read(
    plan: &crate::plan::Plan,
) -> BTreeMap<String, std::collections::BTreeSet<BinResource>> {
    let mut out: BTreeMap<String, std::collections::BTreeSet<BinResource>> = BTreeMap::new();
    for (p, _, g, b) in plan.deletions() {
        let kinds = out.entry(g.region.clone()).or_default();
        if !b.snapshot_ids.is_empty() {
            kinds.insert(BinResource::Snapshot);
        }
        if p.kind == crate::policy::BackupKind::Ami {
            kinds.insert(BinResource::Image);
        }
    }
    out
}

/// Puts each deletion's fate on it (`recycle_bin`). `rules` by Region; `tags` by resource id
/// (snapshot or AMI): a resource absent from it counts as untagged.
pub fn note_deletions(
    plan: &mut crate::plan::Plan,
    rules: &BTreeMap<String, RegionRules>,
    tags: &HashMap<String, Tags>,
) {
    let none = Tags::new();
    for p in &mut plan.policies {
        let ami = p.kind == crate::policy::BackupKind::Ami;
        for t in &mut p.targets {
            for g in &mut t.groups {
                let Some(region_rules) = rules.get(&g.region) else {
                    continue;
                };
                for b in g.backups.iter_mut().filter(|b| b.delete) {
                    let mut parts: Vec<(BinResource, &Tags)> = Vec::new();
                    if ami {
                        let id = b.backup_id.as_str();
                        parts.push((BinResource::Image, tags.get(id).unwrap_or(&none)));
                    }
                    for s in &b.snapshot_ids {
                        parts.push((BinResource::Snapshot, tags.get(s.as_str()).unwrap_or(&none)));
                    }
                    b.recycle_bin = Some(fate_of(region_rules, &parts));
                }
            }
        }
    }
}

/// `status`'s line per policy and Region: where its deleted backups go.
pub fn describe_destination(rules: &RegionRules, resource: BinResource) -> String {
    let rules = match rules {
        RegionRules::Known(r) => r,
        RegionRules::Unknown(why) => return format!("Recycle Bin rules unknown ({why})"),
    };
    let mut of_kind: Vec<&RetentionRule> = rules
        .iter()
        .filter(|r| r.resource == resource && r.available)
        .collect();
    if of_kind.is_empty() {
        return format!(
            "deleted {}s are gone for good (no Recycle Bin rule)",
            resource.noun()
        );
    }
    of_kind.sort_by(|a, b| {
        b.retention_days
            .cmp(&a.retention_days)
            .then_with(|| a.id.cmp(&b.id))
    });
    let each: Vec<String> = of_kind
        .iter()
        .map(|r| {
            let scope = if r.is_tag_level() {
                let tags: Vec<String> = r
                    .resource_tags
                    .iter()
                    .map(|t| format!("{}={}", t.key, t.value))
                    .collect();
                format!("tagged {}", tags.join(" or "))
            } else if r.exclude_tags.is_empty() {
                "all".to_string()
            } else {
                let tags: Vec<String> = r
                    .exclude_tags
                    .iter()
                    .map(|t| format!("{}={}", t.key, t.value))
                    .collect();
                format!("all but {}", tags.join(", "))
            };
            format!("{}d (rule {}, {scope})", r.retention_days, r.id)
        })
        .collect();
    format!(
        "deleted {}s → Recycle Bin {}",
        resource.noun(),
        each.join("; ")
    )
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

    fn rule(id: &str, days: u32) -> RetentionRule {
        RetentionRule {
            id: id.into(),
            resource: BinResource::Snapshot,
            retention_days: days,
            resource_tags: vec![],
            exclude_tags: vec![],
            available: true,
            lock_state: None,
            description: None,
        }
    }

    #[test]
    fn tag_level_rule_needs_one_of_its_pairs_exactly() {
        let mut r = rule("r1", 7);
        r.resource_tags = vec![RuleTag::new("team", "db"), RuleTag::new("tier", "gold")];
        let s = BinResource::Snapshot;
        assert!(r.retains(s, &tags(&[("tier", "gold"), ("x", "y")])));
        assert!(r.retains(s, &tags(&[("team", "db")])));
        assert!(!r.retains(s, &tags(&[("team", "web")])), "value must match");
        assert!(
            !r.retains(s, &tags(&[("Team", "db")])),
            "keys are case-sensitive"
        );
        assert!(!r.retains(s, &Tags::new()), "untagged");
        assert!(!r.retains(BinResource::Image, &tags(&[("team", "db")])));
    }

    #[test]
    fn region_level_rule_retains_all_but_excluded() {
        let mut r = rule("r1", 3);
        assert!(r.retains(BinResource::Snapshot, &Tags::new()));
        r.exclude_tags = vec![RuleTag::new("scratch", "yes")];
        assert!(!r.retains(BinResource::Snapshot, &tags(&[("scratch", "yes")])));
        assert!(r.retains(BinResource::Snapshot, &tags(&[("scratch", "no")])));
        assert!(!r.retains(BinResource::Image, &Tags::new()), "other type");
    }

    #[test]
    fn value_less_rule_tag_matches_only_an_empty_value() {
        let mut r = rule("r1", 3);
        r.resource_tags = vec![RuleTag::new("keep", "")];
        assert!(r.retains(BinResource::Snapshot, &tags(&[("keep", "")])));
        assert!(!r.retains(BinResource::Snapshot, &tags(&[("keep", "yes")])));
    }

    #[test]
    fn a_pending_rule_retains_nothing() {
        let mut r = rule("r1", 3);
        r.available = false;
        assert!(!r.retains(BinResource::Snapshot, &Tags::new()));
    }

    #[test]
    fn longest_retention_wins_then_lowest_id() {
        let mut tagged = rule("b-tagged", 30);
        tagged.resource_tags = vec![RuleTag::new("keep", "long")];
        let rules = vec![rule("z-region", 3), tagged, rule("a-region", 3)];
        let long = tags(&[("keep", "long")]);
        assert_eq!(
            retaining_rule(&rules, BinResource::Snapshot, &long)
                .unwrap()
                .id,
            "b-tagged"
        );
        assert_eq!(
            retaining_rule(&rules, BinResource::Snapshot, &Tags::new())
                .unwrap()
                .id,
            "a-region"
        );
        assert_eq!(
            describe(&rules, BinResource::Snapshot, &long),
            "recoverable for 30 days by rule b-tagged"
        );
        assert_eq!(
            describe(&[], BinResource::Snapshot, &long),
            "deleted for good (no Recycle Bin rule retains it)"
        );
    }

    #[test]
    fn an_excluded_resource_can_still_match_a_tag_level_rule() {
        let mut region = rule("region", 3);
        region.exclude_tags = vec![RuleTag::new("scratch", "yes")];
        let mut tagged = rule("tagged", 1);
        tagged.resource_tags = vec![RuleTag::new("scratch", "yes")];
        let t = tags(&[("scratch", "yes")]);
        assert_eq!(
            retaining_rule(&[region, tagged], BinResource::Snapshot, &t)
                .unwrap()
                .id,
            "tagged"
        );
    }

    #[test]
    fn fate_of_parts() {
        let mut img = rule("img", 10);
        img.resource = BinResource::Image;
        let mut snap = rule("snap", 7);
        snap.resource_tags = vec![RuleTag::new("k", "v")];
        let rules = RegionRules::Known(vec![img, snap]);
        let kv = tags(&[("k", "v")]);
        let none = Tags::new();

        let all = fate_of(
            &rules,
            &[(BinResource::Image, &none), (BinResource::Snapshot, &kv)],
        );
        assert_eq!(all.fate, Fate::Recoverable);
        assert_eq!((all.days, all.rule.as_deref()), (Some(7), Some("snap")));
        assert_eq!(all.note, "→ Recycle Bin 7d (rule snap)");

        let part = fate_of(
            &rules,
            &[(BinResource::Image, &none), (BinResource::Snapshot, &none)],
        );
        assert_eq!(part.fate, Fate::Partial);
        assert!(
            part.note
                .contains("for 1 of 2 parts; the snapshot is final"),
            "{part:?}"
        );

        let fin = fate_of(&rules, &[(BinResource::Snapshot, &none)]);
        assert_eq!(fin.fate, Fate::Final);
        assert!(fin.note.starts_with("final"));

        let unknown = fate_of(
            &RegionRules::Unknown("AccessDenied".into()),
            &[(BinResource::Snapshot, &kv)],
        );
        assert_eq!(unknown.fate, Fate::Unknown);
        assert_eq!(unknown.note, "Recycle Bin rules unknown (AccessDenied)");
    }

    #[test]
    fn destination_per_policy() {
        let mut tagged = rule("t1", 7);
        tagged.resource_tags = vec![RuleTag::new("autosnap:managed", "true")];
        let mut region = rule("r1", 2);
        region.exclude_tags = vec![RuleTag::new("scratch", "yes")];
        let rules = RegionRules::Known(vec![region, tagged]);
        assert_eq!(
            describe_destination(&rules, BinResource::Snapshot),
            "deleted snapshots → Recycle Bin 7d (rule t1, tagged autosnap:managed=true); \
             2d (rule r1, all but scratch=yes)"
        );
        assert_eq!(
            describe_destination(&rules, BinResource::Image),
            "deleted AMIs are gone for good (no Recycle Bin rule)"
        );
    }

    #[test]
    fn fate_serializes_for_json() {
        let f = fate_of(
            &RegionRules::Known(vec![rule("r", 7)]),
            &[(BinResource::Snapshot, &Tags::new())],
        );
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["fate"], "recoverable");
        assert_eq!(v["days"], 7);
        assert_eq!(v["rule"], "r");
        let v = serde_json::to_value(BinResource::Image).unwrap();
        assert_eq!(v, "EC2_IMAGE");
    }
}
