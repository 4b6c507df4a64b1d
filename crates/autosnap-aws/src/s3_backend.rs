//! An [`autosnap_repo::Backend`] over S3: repository objects live under `s3://bucket/prefix/`.
//!
//! The repository library is synchronous; this backend blocks on a Tokio runtime handle, so
//! call the repository from a thread outside the runtime's workers (`spawn_blocking`, or the
//! repository's own worker threads). Guarantees (see `autosnap_repo::backend`):
//! * writes are one `PutObject` (atomic: readers see the old or the new object);
//! * create-only writes send `If-None-Match: *`; `412 Precondition Failed` means the object
//!   exists (`Ok(false)`); `409 ConditionalRequestConflict` (a concurrent create) is retried.
//!   A create retried after a lost answer may meet its own first attempt and answer
//!   `Ok(false)`: the repository reads a manifest back to learn whether it was committed, and
//!   never needs the answer for a chunk or a lock object (their names are unique or their
//!   content fixed by the name);
//! * lists page through `ListObjectsV2` and stream each page to the visitor;
//! * `DeleteObject` of a missing key succeeds (S3's own semantics);
//! * throttling (`SlowDown`, 503, 429), other 5xx and transport errors are retried here with
//!   exponential backoff and jitter (each retry logged; the SDK's own retries are off for this
//!   client), and the requests of one backend share an adaptive concurrency limit
//!   ([`crate::adaptive`]): throttling halves the requests in flight, successes win them back.

use std::fmt;
use std::sync::Arc;

use autosnap_repo::{Backend, BackendError, ObjectInfo};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokio::runtime::Handle;

use crate::adaptive::{AdaptiveConcurrency, Permit};
use crate::context::AwsContext;
use crate::error::{AwsError, CallSite};

/// How often a create that met `409 ConditionalRequestConflict` is tried again.
const CONFLICT_RETRIES: u32 = 5;
/// Attempts of a throttled or failing request (more when `aws.max_attempts` says so).
const MAX_ATTEMPTS: u32 = 10;
/// Requests in flight at most; the repository's worker threads bound them first.
const MAX_CONCURRENCY: usize = 256;

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

/// Repository objects in S3. Clones share the adaptive limit.
#[derive(Clone)]
pub struct S3Backend {
    client: aws_sdk_s3::Client,
    location: S3Location,
    site: CallSite,
    handle: Handle,
    limit: Arc<AdaptiveConcurrency>,
    max_attempts: u32,
}

/// What to do after a failed attempt.
enum Verdict {
    Throttled,
    Retry,
    Fail,
}

fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Verdict {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Verdict::Retry
        }
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match ctx.err().code() {
                Some(
                    "SlowDown"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestThrottled"
                    | "RequestLimitExceeded"
                    | "TooManyRequestsException"
                    | "ServiceUnavailable",
                ) => Verdict::Throttled,
                Some("RequestTimeout" | "RequestTimeoutException" | "InternalError") => {
                    Verdict::Retry
                }
                _ if status == 503 || status == 429 => Verdict::Throttled,
                _ if status >= 500 => Verdict::Retry,
                _ => Verdict::Fail,
            }
        }
        _ => Verdict::Fail,
    }
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
        Ok(S3Backend::from_client(
            s3.raw(),
            location,
            ctx.call_site("S3", ctx.region()),
            Handle::current(),
        ))
    }

    /// A backend over a ready SDK client (its retries are turned off: the backend retries
    /// itself); tests use a scripted HTTP client.
    pub fn from_client(
        client: &aws_sdk_s3::Client,
        location: S3Location,
        site: CallSite,
        handle: Handle,
    ) -> S3Backend {
        let configured = client
            .config()
            .retry_config()
            .map_or(0, |r| r.max_attempts());
        let conf = client
            .config()
            .to_builder()
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        S3Backend {
            client: aws_sdk_s3::Client::from_conf(conf),
            location,
            site,
            handle,
            limit: AdaptiveConcurrency::new("S3", MAX_CONCURRENCY),
            max_attempts: configured.max(MAX_ATTEMPTS),
        }
    }

    /// The adaptive limit on this backend's requests.
    pub fn concurrency(&self) -> &AdaptiveConcurrency {
        &self.limit
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts are spent; each attempt
    /// holds a slot of the adaptive limit. Returns the slot of the successful attempt (release
    /// it once the response is consumed) or the last error.
    async fn send<T, E, F, Fut>(
        &self,
        op: &'static str,
        name: &str,
        mut call: F,
    ) -> Result<(T, Permit), SdkError<E, HttpResponse>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata,
    {
        let mut attempt = 0;
        loop {
            let permit = self.limit.acquire().await;
            let err = match call().await {
                Ok(v) => return Ok((v, permit)),
                Err(e) => e,
            };
            let why = match classify(&err) {
                Verdict::Throttled => {
                    permit.throttled();
                    "throttled"
                }
                Verdict::Retry => {
                    drop(permit);
                    "server or transport error"
                }
                Verdict::Fail => return Err(err),
            };
            attempt += 1;
            if attempt >= self.max_attempts {
                return Err(err);
            }
            let delay = crate::ebs::backoff(attempt);
            tracing::warn!(
                "{op} {}: {why}; retry {attempt} in {:.1}s",
                self.location.key(name),
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
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

    /// Runs `future` to completion from synchronous code. The repository library is
    /// synchronous and normally runs on blocking threads, but some calls happen where an
    /// async task drops a repository object (a lock released on an error path): there,
    /// `Handle::block_on` would panic, so the worker first hands its other tasks away
    /// (`block_in_place`, multi-threaded runtimes only — the only kind autosnap runs).
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(current)
                if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(|| self.handle.block_on(future))
            }
            _ => self.handle.block_on(future),
        }
    }
}

fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

impl S3Backend {
    /// GetObject; with a `limit`, an object whose `Content-Length` exceeds it is refused
    /// before its body is read (a huge object planted under a repository name must not be
    /// pulled into memory).
    fn get_object_at_most(&self, name: &str, limit: Option<u64>) -> Result<Vec<u8>, BackendError> {
        self.block_on(self.get_object_async(name, limit))
    }

    /// [`Backend::read_at_most`] from async code (an archive's restore reads its chunks so).
    pub async fn read_at_most_async(
        &self,
        name: &str,
        limit: u64,
    ) -> Result<Vec<u8>, BackendError> {
        self.get_object_async(name, Some(limit)).await
    }

    async fn get_object_async(
        &self,
        name: &str,
        limit: Option<u64>,
    ) -> Result<Vec<u8>, BackendError> {
        let mut attempt = 0;
        loop {
            let out = self
                .send("GetObject", name, || {
                    self.client
                        .get_object()
                        .bucket(&self.location.bucket)
                        .key(self.location.key(name))
                        .send()
                })
                .await;
            let (out, permit) = match out {
                Ok(out) => out,
                Err(e) if status(&e) == Some(404) => {
                    return Err(BackendError::NotFound {
                        name: name.to_string(),
                    })
                }
                Err(e) => return Err(self.remote(e, "GetObject", name)),
            };
            let too_large = |size: u64| BackendError::TooLarge {
                name: name.to_string(),
                size: Some(size),
                limit: limit.unwrap_or(u64::MAX),
            };
            let length = out.content_length().and_then(|l| u64::try_from(l).ok());
            if let (Some(limit), Some(length)) = (limit, length) {
                if length > limit {
                    permit.succeeded();
                    return Err(too_large(length));
                }
            }
            // The slot covers the body too.
            match out.body.collect().await {
                Ok(bytes) => {
                    permit.succeeded();
                    let bytes = bytes.to_vec();
                    if limit.is_some_and(|limit| bytes.len() as u64 > limit) {
                        return Err(too_large(bytes.len() as u64));
                    }
                    return Ok(bytes);
                }
                Err(e) if attempt + 1 < self.max_attempts => {
                    drop(permit);
                    attempt += 1;
                    tracing::warn!("GetObject {name}: body cut short ({e}); reading again");
                    tokio::time::sleep(crate::ebs::backoff(attempt)).await;
                }
                Err(e) => {
                    return Err(BackendError::Remote {
                        op: "GetObject",
                        name: name.to_string(),
                        source: Box::new(e),
                    })
                }
            }
        }
    }

    /// [`Backend::create`] from async code (an archive stores its chunks so, without a
    /// blocking thread per chunk).
    pub async fn create_async(&self, name: &str, data: bytes::Bytes) -> Result<bool, BackendError> {
        let mut attempt = 0;
        loop {
            let result = self
                .send("PutObject", name, || {
                    self.client
                        .put_object()
                        .bucket(&self.location.bucket)
                        .key(self.location.key(name))
                        .if_none_match("*")
                        .body(ByteStream::from(data.clone()))
                        .send()
                })
                .await;
            match result {
                Ok((_, permit)) => {
                    permit.succeeded();
                    return Ok(true);
                }
                Err(e) if status(&e) == Some(412) => return Ok(false),
                Err(e) if status(&e) == Some(409) && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!("create {name}: conflicting concurrent create, retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => return Err(self.remote(e, "PutObject", name)),
            }
        }
    }

    /// [`Backend::write`] from async code.
    pub async fn write_async(&self, name: &str, data: bytes::Bytes) -> Result<(), BackendError> {
        let (_, permit) = self
            .send("PutObject", name, || {
                self.client
                    .put_object()
                    .bucket(&self.location.bucket)
                    .key(self.location.key(name))
                    .body(ByteStream::from(data.clone()))
                    .send()
            })
            .await
            .map_err(|e| self.remote(e, "PutObject", name))?;
        permit.succeeded();
        Ok(())
    }

    /// [`Backend::exists`] from async code.
    pub async fn exists_async(&self, name: &str) -> Result<bool, BackendError> {
        match self
            .send("HeadObject", name, || {
                self.client
                    .head_object()
                    .bucket(&self.location.bucket)
                    .key(self.location.key(name))
                    .send()
            })
            .await
        {
            Ok((_, permit)) => {
                permit.succeeded();
                Ok(true)
            }
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.remote(e, "HeadObject", name)),
        }
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        self.get_object_at_most(name, None)
    }

    fn read_at_most(&self, name: &str, limit: u64) -> Result<Vec<u8>, BackendError> {
        self.get_object_at_most(name, Some(limit))
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), BackendError> {
        self.block_on(self.write_async(name, bytes::Bytes::copy_from_slice(data)))
    }

    fn create(&self, name: &str, data: &[u8]) -> Result<bool, BackendError> {
        self.block_on(self.create_async(name, bytes::Bytes::copy_from_slice(data)))
    }

    fn exists(&self, name: &str) -> Result<bool, BackendError> {
        self.block_on(self.exists_async(name))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
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
            let page = self.block_on(self.send("ListObjectsV2", prefix, || {
                self.client
                    .list_objects_v2()
                    .bucket(&self.location.bucket)
                    .prefix(&full)
                    .set_continuation_token(token.clone())
                    .send()
            }));
            let page = match page {
                Ok((page, permit)) => {
                    permit.succeeded();
                    page
                }
                Err(e) => return Err(self.remote(e, "ListObjectsV2", prefix)),
            };
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
                .send("DeleteObject", name, || {
                    self.client
                        .delete_object()
                        .bucket(&self.location.bucket)
                        .key(self.location.key(name))
                        .send()
                })
                .await
            {
                Ok((_, permit)) => {
                    permit.succeeded();
                    Ok(())
                }
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

    /// A backend whose HTTP layer answers request `n` with `respond(n)`, on its own runtime.
    fn scripted(
        respond: impl Fn(usize) -> http::Response<Vec<u8>> + Send + Sync + 'static,
    ) -> (
        S3Backend,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        tokio::runtime::Runtime,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let http = aws_smithy_http_client::test_util::infallible_client_fn(move |_req| {
            respond(counter.fetch_add(1, Ordering::SeqCst))
        });
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "k", "s", None, None, "test",
            ))
            .force_path_style(true)
            .http_client(http)
            .build();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let backend = S3Backend::from_client(
            &aws_sdk_s3::Client::from_conf(conf),
            S3Location::parse("s3://bucket/repo").unwrap().unwrap(),
            CallSite {
                service: "S3",
                region: "us-east-1".into(),
                account: None,
                endpoint: None,
            },
            runtime.handle().clone(),
        );
        (backend, calls, runtime)
    }

    fn s3_error(status: u16, code: &str) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(status)
            .body(
                format!("<Error><Code>{code}</Code><Message>scripted</Message></Error>")
                    .into_bytes(),
            )
            .unwrap()
    }

    #[test]
    fn slow_down_is_retried_and_lowers_the_concurrency() {
        let (backend, calls, _runtime) = scripted(|n| match n {
            0 => s3_error(503, "SlowDown"),
            1 => s3_error(500, "InternalError"),
            _ => http::Response::builder()
                .status(200)
                .body(Vec::new())
                .unwrap(),
        });
        assert_eq!(backend.concurrency().limit(), MAX_CONCURRENCY);
        assert!(backend.create("chunks/ab/cd", b"data").unwrap());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        // One request was in flight when S3 said SlowDown: the limit fell to 1, then the
        // success raised it by one; the server error changed nothing.
        assert_eq!(backend.concurrency().limit(), 2);
    }

    #[test]
    fn calls_from_inside_an_async_task_do_not_panic() {
        // As when an archive fails in async code and drops its writer, whose lock is
        // released by a delete through this backend.
        let (backend, calls, runtime) = scripted(|_| {
            http::Response::builder()
                .status(204)
                .body(Vec::new())
                .unwrap()
        });
        let backend = Arc::new(backend);
        let in_task = Arc::clone(&backend);
        let task = runtime.spawn(async move {
            in_task.delete("locks/20240101T000000Z-shared-00").unwrap();
        });
        runtime.block_on(task).expect("the task did not panic");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn permanent_errors_are_not_retried_and_exists_is_not_an_error() {
        let (backend, calls, _runtime) = scripted(|_| s3_error(403, "AccessDenied"));
        assert!(backend.write("config", b"x").is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        let (backend, calls, _runtime) = scripted(|_| s3_error(412, "PreconditionFailed"));
        assert!(!backend.create("chunks/ab/cd", b"data").unwrap());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(backend.concurrency().limit(), MAX_CONCURRENCY);
    }
}
