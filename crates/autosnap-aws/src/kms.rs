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

// ---- data keys for encrypted archive repositories ---------------------------------------

/// Why KMS did not give (or take back) a repository's data key, naming the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    #[error("KMS key {key} does not exist in {region}: give a key id, key ARN or alias/NAME of a key in {region} (`aws kms list-aliases --region {region}`)")]
    NotFound { key: String, region: String },
    #[error("KMS key {key} cannot be used for the repository key ({code}): {reason}")]
    NotUsable {
        key: String,
        code: String,
        reason: String,
    },
    #[error("KMS did not return a 32-byte data key for {key} ({len} bytes): the key must be a symmetric ENCRYPT_DECRYPT key")]
    BadKey { key: String, len: usize },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// A repository master key from KMS `GenerateDataKey` (AES_256): the plaintext to use, and
/// the ciphertext to store. The plaintext is never printed: `Debug` hides it, and it is
/// wiped when dropped.
pub struct DataKey {
    pub plaintext: [u8; 32],
    /// The ARN of the KMS key that encrypted it (as KMS reports it).
    pub key_id: String,
    /// `CiphertextBlob`: what `Decrypt` turns back into `plaintext`.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        wipe(&mut self.plaintext);
    }
}

/// Overwrites key material (the writes are kept by `black_box`).
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// The region of a key ARN (`arn:aws:kms:REGION:ACCOUNT:key/…` or `…:alias/…`), if it is one.
pub fn key_region(key: &str) -> Option<&str> {
    let mut parts = key.splitn(6, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

fn kms_client(ctx: &AwsContext, region: &str) -> aws_sdk_kms::Client {
    let conf = aws_sdk_kms::config::Builder::from(ctx.sdk_config())
        .region(aws_config::Region::new(region.to_string()))
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

fn classify_data_key_error<E>(
    e: aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
    operation: &'static str,
    key: &str,
    region: &str,
    site: &crate::error::CallSite,
) -> DataKeyError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e
        .as_service_error()
        .and_then(|s| s.code())
        .map(str::to_string);
    let message = e
        .as_service_error()
        .and_then(|s| s.message())
        .unwrap_or_default()
        .to_string();
    let not_usable = |code: &str, fix: &str| DataKeyError::NotUsable {
        key: key.to_string(),
        code: code.to_string(),
        reason: format!(
            "{message}{}{fix}",
            if message.is_empty() { "" } else { "; " }
        ),
    };
    match code.as_deref() {
        Some("NotFoundException") | Some("InvalidArnException") => DataKeyError::NotFound {
            key: key.to_string(),
            region: region.to_string(),
        },
        Some("DisabledException") => not_usable(
            "DisabledException",
            "enable it (`aws kms enable-key`) or choose another key",
        ),
        Some("KMSInvalidStateException") => not_usable(
            "KMSInvalidStateException",
            "the key is pending deletion or import: cancel its deletion or choose another key",
        ),
        Some("InvalidKeyUsageException") => not_usable(
            "InvalidKeyUsageException",
            "a repository needs a symmetric ENCRYPT_DECRYPT key",
        ),
        Some("IncorrectKeyException") | Some("InvalidCiphertextException") => not_usable(
            code.as_deref().unwrap_or_default(),
            "the key stored in the repository's config was not encrypted by this key for this repository (its encryption context names another repository id): the config is damaged, was copied from another repository, or was replaced by someone who can write the repository's storage",
        ),
        Some("AccessDeniedException") => not_usable(
            "AccessDeniedException",
            "grant kms:GenerateDataKey (repo init) and kms:Decrypt (every other command) on the key",
        ),
        _ => AwsError::from_sdk(e, operation, Some(("KMS key", key)), site).into(),
    }
}

/// A KMS encryption context of one pair (`autosnap:repository` = the repository id): KMS
/// binds the ciphertext to it, so `Decrypt` fails for a wrapped key moved into another
/// repository's config, and CloudTrail records it with every call.
pub type EncryptionContext<'a> = Option<(&'a str, &'a str)>;

/// Asks KMS for a new 256-bit data key under `key` (id, ARN, `alias/NAME` or alias ARN; in
/// the key ARN's region, else `region`), bound to `context`: the master key of a new encrypted
/// repository. The key is described first, so a disabled, asymmetric or missing key is named
/// with the fix before anything is generated.
pub async fn generate_data_key(
    ctx: &AwsContext,
    region: &str,
    key: &str,
    context: EncryptionContext<'_>,
) -> Result<DataKey, DataKeyError> {
    let region = key_region(key).unwrap_or(region).to_string();
    match check_encryption_key(ctx, &region, key).await {
        Ok(_) => {}
        Err(KmsKeyError::NotFound { key, region }) => {
            return Err(DataKeyError::NotFound { key, region })
        }
        Err(KmsKeyError::NotUsable { key, reason }) => {
            return Err(DataKeyError::NotUsable {
                key,
                code: "KeyState".into(),
                reason,
            })
        }
        Err(KmsKeyError::Aws(e)) => return Err(e.into()),
    }
    let client = kms_client(ctx, &region);
    let site = ctx.call_site("KMS", &region);
    let mut request = client
        .generate_data_key()
        .key_id(key)
        .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256);
    if let Some((k, v)) = context {
        request = request.encryption_context(k, v);
    }
    let out = request
        .send()
        .await
        .map_err(|e| classify_data_key_error(e, "GenerateDataKey", key, &region, &site))?;
    let mut plain = out.plaintext.map(|b| b.into_inner()).unwrap_or_default();
    let result = <[u8; 32]>::try_from(plain.as_slice()).map_err(|_| DataKeyError::BadKey {
        key: key.to_string(),
        len: plain.len(),
    });
    wipe(&mut plain);
    let plaintext = result?;
    let ciphertext = out
        .ciphertext_blob
        .map(|b| b.into_inner())
        .unwrap_or_default();
    Ok(DataKey {
        plaintext,
        key_id: out.key_id.unwrap_or_else(|| key.to_string()),
        ciphertext,
    })
}

/// Asks KMS to decrypt a repository's wrapped data key (`key_id` is the key recorded beside
/// it; its region, when an ARN, is where KMS is asked) under the repository's encryption
/// `context` (`None` for repositories created without one). Returns the 32-byte master key.
pub async fn decrypt_data_key(
    ctx: &AwsContext,
    region: &str,
    key_id: &str,
    ciphertext: &[u8],
    context: EncryptionContext<'_>,
) -> Result<[u8; 32], DataKeyError> {
    let region = key_region(key_id).unwrap_or(region).to_string();
    let client = kms_client(ctx, &region);
    let site = ctx.call_site("KMS", &region);
    let mut request = client
        .decrypt()
        .key_id(key_id)
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(ciphertext.to_vec()));
    if let Some((k, v)) = context {
        request = request.encryption_context(k, v);
    }
    let out = request
        .send()
        .await
        .map_err(|e| classify_data_key_error(e, "Decrypt", key_id, &region, &site))?;
    let mut plain = out.plaintext.map(|b| b.into_inner()).unwrap_or_default();
    let result = <[u8; 32]>::try_from(plain.as_slice()).map_err(|_| DataKeyError::BadKey {
        key: key_id.to_string(),
        len: plain.len(),
    });
    wipe(&mut plain);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_region_reads_arns_only() {
        assert_eq!(
            key_region("arn:aws:kms:eu-west-1:123456789012:key/abcd"),
            Some("eu-west-1")
        );
        assert_eq!(
            key_region("arn:aws:kms:us-east-2:123456789012:alias/backup"),
            Some("us-east-2")
        );
        assert_eq!(key_region("alias/backup"), None);
        assert_eq!(key_region("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
    }

    #[test]
    fn data_key_debug_hides_the_plaintext() {
        let key = DataKey {
            plaintext: [0xAB; 32],
            key_id: "arn:aws:kms:us-east-1:1:key/k".into(),
            ciphertext: vec![1, 2, 3],
        };
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("ab, ab") && !shown.contains("171"));
        assert!(shown.contains("key/k"), "{shown}");
    }
}
