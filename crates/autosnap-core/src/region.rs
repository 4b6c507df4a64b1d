//! AWS region names. A name is checked before any call so that a typo fails at once, with
//! where it came from and the region it was probably meant to be, instead of as a DNS error
//! (or, against an emulator, not at all).
//!
//! Two levels: the *shape* every region name of every AWS partition has (the partitions'
//! `regionRegex` in the AWS SDKs' endpoint rules: `aws`, `aws-cn`, `aws-us-gov`, `aws-iso`,
//! `aws-iso-b`, `aws-iso-e`, `aws-iso-f`, `aws-eusc`), which decides what is refused; and the
//! regions known when this release was made, which only drive "did you mean". AWS opens
//! regions every year, so a well-formed name that is not in the list is used as given.

/// The regions of every partition in the AWS SDK's partition table of this release.
pub const KNOWN_REGIONS: &[&str] = &[
    // aws
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    // aws-cn
    "cn-north-1",
    "cn-northwest-1",
    // aws-us-gov
    "us-gov-east-1",
    "us-gov-west-1",
    // aws-iso, aws-iso-b, aws-iso-e, aws-iso-f
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isob-west-1",
    "eu-isoe-west-1",
    "us-isof-east-1",
    "us-isof-south-1",
    // aws-eusc
    "eusc-de-east-1",
];

/// Whether `name` has the shape of a region name in some partition:
/// `cc-word-N` (`us-east-1`), `cc-gov-word-N`, `cc-iso[x]-word-N` (`us-isob-east-1`,
/// `eu-isoe-west-1`) or `eusc-cc-word-N` (`eusc-de-east-1`), all lowercase.
pub fn has_region_shape(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    let letters = |s: &str, n: Option<usize>| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()) && n.is_none_or(|n| s.len() == n)
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let qualifier = |s: &str| {
        s == "gov"
            || s.strip_prefix("iso")
                .is_some_and(|rest| rest.is_empty() || (rest.len() == 1 && letters(rest, None)))
    };
    match parts.as_slice() {
        [cc, word, n] => letters(cc, Some(2)) && letters(word, None) && digits(n),
        [first, second, word, n] => {
            let prefix = (letters(first, Some(2)) && qualifier(second))
                || (*first == "eusc" && letters(second, Some(2)));
            prefix && letters(word, None) && digits(n)
        }
        _ => false,
    }
}

/// Whether `name` is one of [`KNOWN_REGIONS`].
pub fn is_known_region(name: &str) -> bool {
    KNOWN_REGIONS.contains(&name)
}

/// The known region `name` was most likely meant to be: the same letters and digits in
/// another case or without dashes (`useast1`, `US-EAST-1`), or at most two edits away
/// (`us-east-1x`, `eu-west`, `us-esat-1`). `None` for a known region itself.
pub fn closest_known_region(name: &str) -> Option<&'static str> {
    if is_known_region(name) {
        return None;
    }
    let squash = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect::<String>()
    };
    let given = squash(name);
    if let Some(r) = KNOWN_REGIONS.iter().find(|r| squash(r) == given) {
        return Some(r);
    }
    let lower = name.to_ascii_lowercase();
    KNOWN_REGIONS
        .iter()
        .map(|r| (strsim::levenshtein(&lower, r), *r))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, r)| r)
}

/// Why a region name is refused, and the fix: `'us-east-1x' is not an AWS region name;
/// did you mean us-east-1?`. `None` when the name is acceptable.
pub fn region_problem(name: &str) -> Option<String> {
    if has_region_shape(name) {
        return None;
    }
    Some(match closest_known_region(name) {
        Some(r) => format!("'{name}' is not an AWS region name; did you mean {r}?"),
        None => format!(
            "'{name}' is not an AWS region name: expected a name such as us-east-1, \
             eu-west-2 or us-gov-west-1"
        ),
    })
}

/// A note for a well-formed name this release does not know (a new region, or a typo that
/// still looks like a region, such as `us-esat-1`); `None` for a known region.
pub fn unknown_region_note(name: &str) -> Option<String> {
    if is_known_region(name) || !has_region_shape(name) {
        return None;
    }
    Some(match closest_known_region(name) {
        Some(r) => format!(
            "region {name} is not one this version of autosnap knows (did you mean {r}?); \
             using it as given"
        ),
        None => format!(
            "region {name} is not one this version of autosnap knows (a newer region?); \
             using it as given"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_region_has_the_shape() {
        for r in KNOWN_REGIONS {
            assert!(has_region_shape(r), "{r}");
            assert_eq!(closest_known_region(r), None);
            assert_eq!(region_problem(r), None);
            assert_eq!(unknown_region_note(r), None);
        }
    }

    #[test]
    fn new_regions_of_every_partition_are_accepted() {
        for r in [
            "ap-southeast-9",
            "af-north-1",
            "xx-central-3",
            "cn-south-1",
            "us-gov-central-1",
            "us-iso-south-1",
            "us-isob-south-2",
            "eu-isoe-north-1",
            "us-isof-west-1",
            "eusc-fr-west-1",
        ] {
            assert!(has_region_shape(r), "{r}");
            assert_eq!(region_problem(r), None, "{r}");
            assert!(unknown_region_note(r).is_some(), "{r}");
        }
    }

    #[test]
    fn what_cannot_be_a_region_is_refused_with_the_likely_one() {
        for (bad, meant) in [
            ("us-east-1x", Some("us-east-1")),
            ("useast1", Some("us-east-1")),
            ("US-EAST-1", Some("us-east-1")),
            ("us_east_1", Some("us-east-1")),
            ("eu-west", Some("eu-west-1")),
            ("us-east1", Some("us-east-1")),
            ("usgovwest1", Some("us-gov-west-1")),
            ("local", None),
            ("", None),
            ("us-east-1-", Some("us-east-1")),
            ("eu-west-1.", Some("eu-west-1")),
            ("us-east-one", None),
            ("us-isoxy-east-1", Some("us-iso-east-1")),
            ("us east 1", Some("us-east-1")),
        ] {
            assert!(!has_region_shape(bad), "{bad:?}");
            let problem = region_problem(bad).expect(bad);
            assert!(problem.contains(&format!("'{bad}'")), "{problem}");
            match meant {
                Some(r) => assert!(
                    problem.ends_with(&format!("did you mean {r}?")),
                    "{problem}"
                ),
                None => assert!(!problem.contains("did you mean"), "{problem}"),
            }
        }
    }

    #[test]
    fn a_well_formed_typo_is_used_but_noted() {
        let note = unknown_region_note("us-esat-1").unwrap();
        assert!(note.contains("did you mean us-east-1?"), "{note}");
    }
}
