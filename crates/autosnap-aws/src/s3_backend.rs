//! An [`autosnap_repo::Backend`] over S3: repository objects live under `s3://bucket/prefix/`.
//!
//! The repository library is synchronous; this backend blocks on a Tokio runtime handle, so
//! call the repository from a thread outside the runtime's workers (`spawn_blocking`, or the
//! repository's own worker threads). Guarantees (see `autosnap_repo::backend`):
//! * writes are one `PutObject` (atomic: readers see the old or the new object);
//! * create-only writes send `If-None-Match: *`; `412 Precondition Failed` means the object
//!   exists (`Ok(false)`); `409 ConditionalRequestConflict` (a concurrent create) is retried;
//! * lists page through `ListObjectsV2` and stream each page to the visitor;
//! * `DeleteObject` of a missing key succeeds (S3's own semantics);
//! * throttling and 5xx are retried by the SDK's standard retry strategy.

use std::fmt;

use autosnap_repo::{Backend, BackendError, ObjectInfo};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokio::runtime::Handle;

use crate::context::AwsContext;
use crate::error::{AwsError, CallSite};

/// How often a create that met `409 ConditionalRequestConflict` is tried again.
const CONFLICT_RETRIES: u32 = 5;

/// A repository location `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket[/prefix]`; `None` when `text` is not an `s3://` URL.
    pub fn parse(text: &str) -> Option<Result<S3Location, String>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(format!("{text:?} has no bucket (s3://bucket/prefix)")));
        }
        Some(Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }))
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Repository objects in S3.
#[derive(Clone)]
pub struct S3Backend {
    client: aws_sdk_s3::Client,
    location: S3Location,
    site: CallSite,
    handle: Handle,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.location.to_string())
            .finish()
    }
}

impl S3Backend {
    /// A backend for `location` with the context's credentials and region (path-style
    /// addressing whenever an endpoint override is in effect). Must be called inside the
    /// runtime whose handle the backend keeps.
    pub async fn connect(ctx: &AwsContext, location: S3Location) -> Result<S3Backend, AwsError> {
        let s3 = crate::s3::S3::connect(ctx, ctx.region()).await?;
        s3.check_bucket(&location.bucket).await?;
        Ok(S3Backend {
            client: s3.raw().clone(),
            site: ctx.call_site("S3", ctx.region()),
            location,
            handle: Handle::current(),
        })
    }

    fn remote<E>(
        &self,
        err: SdkError<E, HttpResponse>,
        op: &'static str,
        name: &str,
    ) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let key = self.location.key(name);
        BackendError::Remote {
            op,
            name: format!("s3://{}/{key}", self.location.bucket),
            source: Box::new(AwsError::from_sdk(
                err,
                op,
                Some(("S3 bucket", &self.location.bucket)),
                &self.site,
            )),
        }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }
}

fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        self.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.location.bucket)
                .key(self.location.key(name))
                .send()
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) if status(&e) == Some(404) => {
                    return Err(BackendError::NotFound {
                        name: name.to_string(),
                    })
                }
                Err(e) => return Err(self.remote(e, "GetObject", name)),
            };
            let bytes = out.body.collect().await.map_err(|e| BackendError::Remote {
                op: "GetObject",
                name: name.to_string(),
                source: Box::new(e),
            })?;
            Ok(bytes.to_vec())
        })
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.block_on(async {
            self.client
                .put_object()
                .bucket(&self.location.bucket)
                .key(self.location.key(name))
                .body(ByteStream::from(data.to_vec()))
                .send()
                .await
                .map_err(|e| self.remote(e, "PutObject", name))?;
            Ok(())
        })
    }

    fn create(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        self.block_on(async {
            let mut attempt = 0;
            loop {
                let result = self
                    .client
                    .put_object()
                    .bucket(&self.location.bucket)
                    .key(self.location.key(name))
                    .if_none_match("*")
                    .body(ByteStream::from(data.to_vec()))
                    .send()
                    .await;
                match result {
                    Ok(_) => return Ok(true),
                    Err(e) if status(&e) == Some(412) => return Ok(false),
                    Err(e) if status(&e) == Some(409) && attempt < CONFLICT_RETRIES => {
                        attempt += 1;
                        tracing::debug!("create {name}: conflicting concurrent create, retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                    }
                    Err(e) => return Err(self.remote(e, "PutObject", name)),
                }
            }
        })
    }

    fn exists(&self, name: &str) -> Result<bool, BackendError> {
        self.block_on(async {
            match self
                .client
                .head_object()
                .bucket(&self.location.bucket)
                .key(self.location.key(name))
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if status(&e) == Some(404) => Ok(false),
                Err(e) => Err(self.remote(e, "HeadObject", name)),
            }
        })
    }

    fn list(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(ObjectInfo) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let root = if self.location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.location.prefix)
        };
        let full = format!("{root}{prefix}");
        let mut token: Option<String> = None;
        loop {
            let page = self.block_on(
                self.client
                    .list_objects_v2()
                    .bucket(&self.location.bucket)
                    .prefix(&full)
                    .set_continuation_token(token.take())
                    .send(),
            );
            let page = page.map_err(|e| self.remote(e, "ListObjectsV2", prefix))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some(name) = key.strip_prefix(&root) else {
                    continue;
                };
                visit(ObjectInfo {
                    name: name.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                })?;
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated().unwrap_or(false) || !next.is_empty() => {
                    token = Some(next.to_string())
                }
                _ => return Ok(()),
            }
        }
    }

    fn delete(&self, name: &str) -> Result<(), BackendError> {
        self.block_on(async {
            match self
                .client
                .delete_object()
                .bucket(&self.location.bucket)
                .key(self.location.key(name))
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if status(&e) == Some(404) => Ok(()),
                Err(e) => Err(self.remote(e, "DeleteObject", name)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let loc = S3Location::parse("s3://b/x/y/").unwrap().unwrap();
        assert_eq!(loc.bucket, "b");
        assert_eq!(loc.prefix, "x/y");
        assert_eq!(loc.key("config"), "x/y/config");
        assert_eq!(loc.to_string(), "s3://b/x/y");
        let bare = S3Location::parse("s3://b").unwrap().unwrap();
        assert_eq!(bare.key("config"), "config");
        assert!(S3Location::parse("s3://").unwrap().is_err());
        assert!(S3Location::parse("/srv/repo").is_none());
    }
}
