//! The S3 calls autosnap makes for AMI metadata: check a bucket, write a JSON
//! document with server-side encryption, read one back. Errors name the
//! bucket or object (`s3://bucket/key`) and are classified by status and code.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::context::AwsContext;
use crate::error::{AwsError, CallSite};

/// Server-side encryption for objects autosnap writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSideEncryptionMode {
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS (`aws:kms`) with this key, or the bucket's / AWS managed key.
    Kms(Option<String>),
}

/// An S3 client for one region.
#[derive(Clone)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    site: CallSite,
}

impl S3 {
    /// An S3 client with the context's credentials. Path-style addressing is
    /// used whenever an endpoint override is in effect (emulators and most
    /// S3-compatible stores need it).
    pub async fn connect(ctx: &AwsContext, region: &str) -> Result<S3, AwsError> {
        let account = ctx.account_id().await?;
        let overridden = ctx.sdk_config().endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let conf = aws_sdk_s3::config::Builder::from(ctx.sdk_config())
            .region(aws_config::Region::new(region.to_string()))
            .force_path_style(overridden)
            .build();
        let mut site = ctx.call_site("S3", region);
        site.account = Some(account);
        Ok(S3 {
            client: aws_sdk_s3::Client::from_conf(conf),
            site,
        })
    }

    pub fn raw(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Classifies an S3 error about `bucket` (and `key`, when the call was about
    /// an object). HEAD requests carry no error body, so the status decides.
    fn classify<E>(
        &self,
        err: SdkError<E, HttpResponse>,
        operation: &'static str,
        bucket: &str,
        key: Option<&str>,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = match &err {
            SdkError::ServiceError(ctx) => ctx.err().code().map(str::to_string),
            _ => None,
        };
        let bucket_missing = AwsError::NotFound {
            kind: "S3 bucket",
            id: bucket.to_string(),
            region: self.site.region.clone(),
            account: self
                .site
                .account
                .as_ref()
                .map(|a| format!(" for account {a}"))
                .unwrap_or_default(),
        };
        match (code.as_deref(), status) {
            (Some("NoSuchBucket"), _) => bucket_missing,
            (Some("NoSuchKey") | Some("NotFound"), _) | (None, Some(404)) => match key {
                Some(k) => AwsError::NotFound {
                    kind: "S3 object",
                    id: format!("s3://{bucket}/{k}"),
                    region: self.site.region.clone(),
                    account: String::new(),
                },
                None => bucket_missing,
            },
            (Some("AccessDenied") | Some("Forbidden"), _) | (None, Some(403)) => {
                AwsError::AccessDenied {
                    operation,
                    code: code.unwrap_or_else(|| "403".into()),
                    message: format!(
                        "on s3://{bucket}{}",
                        key.map(|k| format!("/{k}")).unwrap_or_default()
                    ),
                }
            }
            _ => AwsError::from_sdk(err, operation, Some(("S3 bucket", bucket)), &self.site),
        }
    }

    /// Checks that the bucket exists and that we may use it.
    pub async fn check_bucket(&self, bucket: &str) -> Result<(), AwsError> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| self.classify(e, "HeadBucket", bucket, None))?;
        Ok(())
    }

    /// Writes a JSON document with server-side encryption.
    pub async fn put_json(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        sse: &ServerSideEncryptionMode,
    ) -> Result<(), AwsError> {
        let mut req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        req = match sse {
            ServerSideEncryptionMode::Aes256 => {
                req.server_side_encryption(ServerSideEncryption::Aes256)
            }
            ServerSideEncryptionMode::Kms(k) => req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(k.clone()),
        };
        req.send()
            .await
            .map_err(|e| self.classify(e, "PutObject", bucket, Some(key)))?;
        Ok(())
    }

    /// Reads an object whole.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, AwsError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(e, "GetObject", bucket, Some(key)))?;
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| AwsError::BadResponse {
                operation: "GetObject",
                endpoint: format!("s3://{bucket}/{key}"),
                reason: e.to_string(),
            })?;
        Ok(data.into_bytes().to_vec())
    }

    /// Whether an object exists (HeadObject).
    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, AwsError> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match self.classify(e, "HeadObject", bucket, Some(key)) {
                AwsError::NotFound {
                    kind: "S3 object", ..
                } => Ok(false),
                other => Err(other),
            },
        }
    }
}
