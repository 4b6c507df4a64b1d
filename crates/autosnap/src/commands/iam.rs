//! `autosnap iam-policy`: the least-privilege IAM policy for the chosen
//! features, generated from the table in autosnap-core (no AWS calls).

use autosnap_core::iam::{iam_policy, Feature, PolicyScope, BUCKET_PLACEHOLDER};

use crate::cli::{IamPolicyArgs, PolicyFeature};
use crate::exit::{Exit, UsageError};
use crate::output;

pub fn policy(args: &IamPolicyArgs) -> anyhow::Result<Exit> {
    let mut features: Vec<Feature> = Vec::new();
    let chosen = if args.features.is_empty() {
        vec![PolicyFeature::All]
    } else {
        args.features.clone()
    };
    for f in chosen {
        match f {
            PolicyFeature::Backup => features.push(Feature::Backup),
            PolicyFeature::Restore => features.push(Feature::Restore),
            PolicyFeature::Prune => features.push(Feature::Prune),
            PolicyFeature::Ami => features.push(Feature::Ami),
            PolicyFeature::Archive => features.push(Feature::Archive),
            PolicyFeature::All => features.extend(Feature::ALL),
            PolicyFeature::Share => features.push(Feature::Share),
            PolicyFeature::BackupAccount => features.push(Feature::BackupAccount),
        }
    }
    for arn in &args.kms_key_arns {
        if !arn.starts_with("arn:") || !arn.contains(":kms:") {
            return Err(UsageError(format!(
                "--kms-key-arn '{arn}' is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"
            ))
            .into());
        }
    }
    let scope = PolicyScope {
        buckets: args.buckets.clone(),
        kms_key_arns: args.kms_key_arns.clone(),
    };
    let doc = iam_policy(&features, &scope);
    if args.buckets.is_empty() && doc.to_value().to_string().contains(BUCKET_PLACEHOLDER) {
        eprintln!(
            "note: S3 permissions name the placeholder bucket {BUCKET_PLACEHOLDER}: pass --bucket B (repeatable) or replace it"
        );
    }
    // The policy is JSON whatever -o says: it is meant to be saved and attached.
    output::print_json(&doc)?;
    Ok(Exit::Success)
}
