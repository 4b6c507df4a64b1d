//! Checking a KMS key before EC2 encrypts with it. EC2 accepts any key id in
//! CopyImage and only reports a bad one later as a failed AMI ("Copy image
//! failed with an internal error"), so autosnap asks KMS first and says
//! exactly what is wrong with the key.

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::context::AwsContext;
use crate::error::AwsError;

/// Why a key cannot be used, naming the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum KmsKeyError {
    #[error("KMS key {key} does not exist in {region}: give a key id, key ARN or alias/NAME of a key in {region} (`aws kms list-aliases --region {region}`)")]
    NotFound { key: String, region: String },
    #[error("KMS key {key} cannot encrypt EBS data: {reason}")]
    NotUsable { key: String, reason: String },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// A key EBS can encrypt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsableKey {
    pub arn: String,
    pub key_id: String,
}

/// Describes the key (id, ARN, `alias/NAME` or alias ARN) in `region` and
/// checks that it is enabled and a symmetric encryption key.
pub async fn check_encryption_key(
    ctx: &AwsContext,
    region: &str,
    key: &str,
) -> Result<UsableKey, KmsKeyError> {
    let conf = aws_sdk_kms::config::Builder::from(ctx.sdk_config())
        .region(aws_config::Region::new(region.to_string()))
        .build();
    let client = aws_sdk_kms::Client::from_conf(conf);
    let mut site = ctx.call_site("KMS", region);
    site.account = ctx.account_id().await.ok();
    let out = client
        .describe_key()
        .key_id(key)
        .send()
        .await
        .map_err(|e| {
            let code = e
                .as_service_error()
                .and_then(|s| s.code())
                .map(str::to_string);
            match code.as_deref() {
                Some("NotFoundException") | Some("InvalidArnException") => KmsKeyError::NotFound {
                    key: key.to_string(),
                    region: region.to_string(),
                },
                _ => AwsError::from_sdk(e, "DescribeKey", Some(("KMS key", key)), &site).into(),
            }
        })?;
    let meta = out.key_metadata().ok_or_else(|| AwsError::Other {
        operation: "DescribeKey",
        detail: "the response carried no key metadata".into(),
    })?;
    let not_usable = |reason: String| KmsKeyError::NotUsable {
        key: key.to_string(),
        reason,
    };
    let state = meta
        .key_state()
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "Enabled".into());
    if state != "Enabled" {
        return Err(not_usable(format!(
            "it is {state}, not Enabled (enable it with `aws kms enable-key`, cancel its \
             deletion, or choose another key)"
        )));
    }
    if let Some(usage) = meta.key_usage() {
        if usage.as_str() != "ENCRYPT_DECRYPT" {
            return Err(not_usable(format!(
                "its usage is {}: EBS needs a symmetric ENCRYPT_DECRYPT key",
                usage.as_str()
            )));
        }
    }
    if let Some(spec) = meta.key_spec() {
        if spec.as_str() != "SYMMETRIC_DEFAULT" {
            return Err(not_usable(format!(
                "it is a {} key: EBS needs a symmetric (SYMMETRIC_DEFAULT) key",
                spec.as_str()
            )));
        }
    }
    Ok(UsableKey {
        arn: meta.arn().unwrap_or(key).to_string(),
        key_id: meta.key_id().to_string(),
    })
}
