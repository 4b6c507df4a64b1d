//! The EBS direct APIs (service `ebs`): start, write and complete snapshots block by block,
//! list and read their blocks. Every call is retried with exponential backoff and jitter on
//! throttling, 5xx and transport failures (each retry is logged); non-retryable errors
//! (AccessDenied, validation) fail at once. Every block read is checked against its SHA-256.
//!
//! Block requests (Get/PutSnapshotBlock) of one client share an adaptive concurrency limit
//! ([`crate::adaptive`]): throttling halves the requests in flight, successes win them back.
//! The SDK's own retries are off for this client, so that every throttling answer reaches the
//! limit (and the log) instead of being retried out of sight.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Status, Tag};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use sha2::{Digest, Sha256};

use crate::adaptive::{AdaptiveConcurrency, Permit};
use crate::context::AwsContext;
use crate::error::{AwsError, CallSite};

/// EBS direct block size (AWS documents only this one; responses are checked against it).
pub const BLOCK_SIZE: usize = autosnap_ports::BLOCK_SIZE;
/// Blocks in flight at once by default (AWS: ~1000 Get/Put per second per account; 64 workers
/// have been seen to exceed the per-snapshot rate).
pub const DEFAULT_CONCURRENCY: usize = 16;
/// The cap of a client's adaptive limit until [`Ebs::with_concurrency`] sets one (the largest
/// `--concurrency` the CLI accepts); the transfer's own bound on requests in flight is then
/// what the limit starts from when it first halves.
pub const MAX_CONCURRENCY: usize = 256;
/// Attempts for a throttled or failing call before giving up.
const MAX_ATTEMPTS: u32 = 10;
/// First backoff delay; doubled per attempt up to [`MAX_BACKOFF`], with jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// Right after StartSnapshot, PutSnapshotBlock may answer "snapshot does not exist"; AWS
/// advises retrying for about two minutes.
const NEW_SNAPSHOT_GRACE: Duration = Duration::from_secs(120);
/// Block listings per page (AWS allows 100–10000).
const LIST_PAGE: i32 = 10_000;

/// A failure of an EBS direct transfer.
#[derive(Debug, thiserror::Error)]
pub enum EbsError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(
        "block {index} of snapshot {snapshot} failed its checksum {attempts} times \
         (EBS said {expected}, the data hashes to {actual}); the snapshot or the network is damaged"
    )]
    ChecksumMismatch {
        snapshot: String,
        index: u64,
        expected: String,
        actual: String,
        attempts: u32,
    },
    #[error("snapshot {snapshot}: {detail}")]
    Unexpected { snapshot: String, detail: String },
    #[error("snapshot {snapshot} went to state error on completion ({detail})")]
    CompletionFailed { snapshot: String, detail: String },
}

// Listings and new snapshots are the engine's types (this module fills them from the SDK).
pub use autosnap_ports::ports::{BlockEntry, BlockPage, NewSnapshot};
// The engine's transfers own the block buffer pool; re-exported for this crate's callers.
pub use autosnap_ports::BlockBuffers;

/// Base64 SHA-256 of a block, as EBS sends and expects it.
pub fn block_checksum(data: &[u8]) -> (String, [u8; 32]) {
    let digest: [u8; 32] = Sha256::digest(data).into();
    (aws_smithy_types::base64::encode(digest), digest)
}

/// The LINEAR aggregate checksum (see [`autosnap_ports::LinearChecksum`]), base64 as
/// CompleteSnapshot takes it.
#[derive(Default)]
pub struct LinearChecksum(autosnap_ports::LinearChecksum);

impl LinearChecksum {
    /// Adds the next written block's digest (call in ascending block-index order).
    pub fn push(&mut self, digest: &[u8; 32]) {
        self.0.push(digest);
    }
    pub fn blocks(&self) -> u64 {
        self.0.blocks()
    }
    pub fn finish(self) -> String {
        aws_smithy_types::base64::encode(self.0.finish())
    }
}

/// An EBS direct client. Clones share the adaptive limit on block requests.
#[derive(Clone)]
pub struct Ebs {
    client: aws_sdk_ebs::Client,
    site: CallSite,
    limit: Arc<AdaptiveConcurrency>,
}

enum Verdict {
    /// Throttling (or 503): retry, and lower the concurrency.
    Throttled,
    Retry(&'static str),
    Fail,
}

fn classify<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
    new_snapshot_grace: bool,
) -> Verdict {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Verdict::Retry("transport error")
        }
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match ctx.err().code() {
                Some(
                    "ThrottlingException"
                    | "RequestThrottledException"
                    | "TooManyRequestsException"
                    | "SlowDown"
                    | "ServiceUnavailableException",
                ) => Verdict::Throttled,
                Some("ResourceNotFoundException") if new_snapshot_grace => {
                    Verdict::Retry("snapshot not yet visible")
                }
                Some("InternalServerException") => Verdict::Retry("server error"),
                _ if status == 429 || status == 503 => Verdict::Throttled,
                _ if status >= 500 => Verdict::Retry("server error"),
                _ => Verdict::Fail,
            }
        }
        _ => Verdict::Fail,
    }
}

/// Exponential backoff with jitter (no RNG dependency: the clock's nanoseconds).
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.min(10))
        .min(MAX_BACKOFF);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base / 2 + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

impl Ebs {
    /// An EBS direct client with the context's credentials, region and endpoint (the SDK's
    /// retries off: [`Ebs`] retries itself, visibly, and adapts its concurrency).
    pub fn new(ctx: &AwsContext) -> Ebs {
        let conf = aws_sdk_ebs::config::Builder::from(ctx.sdk_config())
            .retry_config(aws_sdk_ebs::config::retry::RetryConfig::disabled())
            .build();
        Ebs::from_client(
            aws_sdk_ebs::Client::from_conf(conf),
            ctx.call_site("EBS", ctx.region()),
        )
    }

    /// An EBS direct client over a ready SDK client (tests use a fake HTTP client).
    pub fn from_client(client: aws_sdk_ebs::Client, site: CallSite) -> Ebs {
        Ebs {
            client,
            site,
            limit: AdaptiveConcurrency::new("EBS", MAX_CONCURRENCY),
        }
    }

    /// This client with its own adaptive limit on block requests, at most `concurrency` in
    /// flight (one transfer's `--concurrency`).
    pub fn with_concurrency(&self, concurrency: usize) -> Ebs {
        Ebs {
            limit: AdaptiveConcurrency::new("EBS", concurrency),
            ..self.clone()
        }
    }

    /// The adaptive limit on block requests (its current value and the peak in flight).
    pub fn concurrency(&self) -> &AdaptiveConcurrency {
        &self.limit
    }

    /// Runs `call` until it succeeds, fails for good, or the retry budget is spent.
    async fn call<T, E, F, Fut>(
        &self,
        operation: &'static str,
        snapshot: &str,
        started: Option<Instant>,
        call: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let (value, _) = self
            .attempts(operation, snapshot, started, false, call)
            .await?;
        Ok(value)
    }

    /// Like [`Ebs::call`], each attempt holding a slot of the adaptive limit; returns the slot
    /// of the successful attempt (release it once the response is consumed).
    async fn call_limited<T, E, F, Fut>(
        &self,
        operation: &'static str,
        snapshot: &str,
        started: Option<Instant>,
        call: F,
    ) -> Result<(T, Permit), AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let (value, permit) = self
            .attempts(operation, snapshot, started, true, call)
            .await?;
        Ok((value, permit.expect("limited attempts hold a permit")))
    }

    async fn attempts<T, E, F, Fut>(
        &self,
        operation: &'static str,
        snapshot: &str,
        started: Option<Instant>,
        limited: bool,
        mut call: F,
    ) -> Result<(T, Option<Permit>), AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let mut attempt = 0;
        loop {
            let permit = if limited {
                Some(self.limit.acquire().await)
            } else {
                None
            };
            match call().await {
                Ok(v) => return Ok((v, permit)),
                Err(err) => {
                    let grace = started.is_some_and(|s| s.elapsed() < NEW_SNAPSHOT_GRACE);
                    let verdict = classify(&err, grace);
                    // The slot is free again while this request backs off.
                    match (permit, &verdict) {
                        (Some(p), Verdict::Throttled) => p.throttled(),
                        (p, _) => drop(p),
                    }
                    let retry = match verdict {
                        Verdict::Throttled => Some("throttled"),
                        Verdict::Retry(why) => Some(why),
                        Verdict::Fail => None,
                    };
                    match retry {
                        Some(why) if attempt + 1 < MAX_ATTEMPTS || grace => {
                            attempt += 1;
                            let delay = backoff(attempt);
                            tracing::warn!(
                                "{operation} on {snapshot}: {why}; retry {attempt} in {:.1}s",
                                delay.as_secs_f64()
                            );
                            tokio::time::sleep(delay).await;
                        }
                        _ => {
                            return Err(AwsError::from_sdk(
                                err,
                                operation,
                                Some(("EBS snapshot", snapshot)),
                                &self.site,
                            ))
                        }
                    }
                }
            }
        }
    }

    /// StartSnapshot; returns the new snapshot id.
    pub async fn start_snapshot(&self, new: &NewSnapshot) -> Result<String, EbsError> {
        let tags: Vec<Tag> = new
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let out = self
            .call("StartSnapshot", "(new)", None, || {
                self.client
                    .start_snapshot()
                    .volume_size(new.volume_size_gib as i64)
                    .set_description(new.description.clone())
                    .set_tags((!tags.is_empty()).then(|| tags.clone()))
                    .set_parent_snapshot_id(new.parent_snapshot_id.clone())
                    .set_encrypted(new.encrypted.then_some(true))
                    .set_kms_key_arn(new.kms_key_arn.clone())
                    .set_client_token(new.client_token.clone())
                    .send()
            })
            .await?;
        out.snapshot_id.ok_or_else(|| EbsError::Unexpected {
            snapshot: "(new)".into(),
            detail: "StartSnapshot returned no snapshot id".into(),
        })
    }

    /// PutSnapshotBlock of one full block with its base64 SHA-256. `started` is when the
    /// snapshot was started (for the "does not exist yet" grace period).
    pub async fn put_block(
        &self,
        snapshot: &str,
        index: u64,
        data: bytes::Bytes,
        checksum: &str,
        started: Instant,
    ) -> Result<(), AwsError> {
        let (_, permit) = self
            .call_limited("PutSnapshotBlock", snapshot, Some(started), || {
                self.client
                    .put_snapshot_block()
                    .snapshot_id(snapshot)
                    .block_index(index as i32)
                    .data_length(BLOCK_SIZE as i32)
                    .block_data(ByteStream::from(data.clone()))
                    .checksum(checksum)
                    .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                    .send()
            })
            .await?;
        permit.succeeded();
        Ok(())
    }

    /// CompleteSnapshot with the number of blocks written and the linear checksum.
    pub async fn complete(
        &self,
        snapshot: &str,
        changed_blocks: u64,
        linear_checksum: &str,
    ) -> Result<(), EbsError> {
        let out = self
            .call("CompleteSnapshot", snapshot, None, || {
                self.client
                    .complete_snapshot()
                    .snapshot_id(snapshot)
                    .changed_blocks_count(changed_blocks as i32)
                    .checksum(linear_checksum)
                    .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                    .checksum_aggregation_method(
                        ChecksumAggregationMethod::ChecksumAggregationLinear,
                    )
                    .send()
            })
            .await?;
        match out.status() {
            Some(Status::Error) => Err(EbsError::CompletionFailed {
                snapshot: snapshot.to_string(),
                detail: format!("{changed_blocks} blocks, linear checksum {linear_checksum}"),
            }),
            _ => Ok(()),
        }
    }

    /// One page of ListSnapshotBlocks.
    pub async fn list_blocks_page(
        &self,
        snapshot: &str,
        token: Option<String>,
    ) -> Result<BlockPage, EbsError> {
        let out = self
            .call("ListSnapshotBlocks", snapshot, None, || {
                self.client
                    .list_snapshot_blocks()
                    .snapshot_id(snapshot)
                    .max_results(LIST_PAGE)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
        check_block_size(snapshot, out.block_size())?;
        Ok(BlockPage {
            volume_size_gib: out.volume_size().unwrap_or(0).max(0) as u64,
            blocks: out
                .blocks()
                .iter()
                .filter_map(|b| {
                    Some(BlockEntry {
                        index: u64::try_from(b.block_index()?).ok()?,
                        token: b.block_token()?.to_string(),
                    })
                })
                .collect(),
            removed: Vec::new(),
            next_token: out.next_token().map(str::to_string),
        })
    }

    /// One page of ListChangedBlocks between `first` (older) and `second`.
    pub async fn list_changed_page(
        &self,
        first: &str,
        second: &str,
        token: Option<String>,
    ) -> Result<BlockPage, EbsError> {
        let out = self
            .call("ListChangedBlocks", second, None, || {
                self.client
                    .list_changed_blocks()
                    .first_snapshot_id(first)
                    .second_snapshot_id(second)
                    .max_results(LIST_PAGE)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
        check_block_size(second, out.block_size())?;
        let mut page = BlockPage {
            volume_size_gib: out.volume_size().unwrap_or(0).max(0) as u64,
            next_token: out.next_token().map(str::to_string),
            ..BlockPage::default()
        };
        for b in out.changed_blocks() {
            let Some(index) = b.block_index().and_then(|i| u64::try_from(i).ok()) else {
                continue;
            };
            match b.second_block_token() {
                Some(token) => page.blocks.push(BlockEntry {
                    index,
                    token: token.to_string(),
                }),
                None => page.removed.push(index),
            }
        }
        Ok(page)
    }

    /// GetSnapshotBlock, checked against the checksum EBS sends (a mismatch is read again,
    /// up to three times).
    pub async fn get_block(&self, snapshot: &str, block: &BlockEntry) -> Result<Vec<u8>, EbsError> {
        Ok(self.get_block_bytes(snapshot, block).await?.into())
    }

    /// [`Ebs::get_block`] as [`bytes::Bytes`] (no copy into a `Vec`).
    pub async fn get_block_bytes(
        &self,
        snapshot: &str,
        block: &BlockEntry,
    ) -> Result<bytes::Bytes, EbsError> {
        Ok(self.get_block_hashed(snapshot, block).await?.0)
    }

    /// [`Ebs::get_block_bytes`] received into `buf` (its capacity reused: see
    /// [`BlockBuffers`]).
    pub async fn get_block_into(
        &self,
        snapshot: &str,
        block: &BlockEntry,
        buf: bytes::BytesMut,
    ) -> Result<bytes::Bytes, EbsError> {
        Ok(self.get_block_hashed_into(snapshot, block, buf).await?.0)
    }

    /// [`Ebs::get_block_bytes`] and the block's SHA-256, checked against the one EBS sent
    /// (an unencrypted archive repository's chunk id: not computed twice).
    pub async fn get_block_hashed(
        &self,
        snapshot: &str,
        block: &BlockEntry,
    ) -> Result<(bytes::Bytes, [u8; 32]), EbsError> {
        let buf = bytes::BytesMut::with_capacity(BLOCK_SIZE);
        self.get_block_hashed_into(snapshot, block, buf).await
    }

    pub(crate) async fn get_block_hashed_into(
        &self,
        snapshot: &str,
        block: &BlockEntry,
        mut data: bytes::BytesMut,
    ) -> Result<(bytes::Bytes, [u8; 32]), EbsError> {
        const READS: u32 = 3;
        let mut last = (String::new(), String::new());
        for attempt in 1..=READS {
            let (mut out, permit) = self
                .call_limited("GetSnapshotBlock", snapshot, None, || {
                    self.client
                        .get_snapshot_block()
                        .snapshot_id(snapshot)
                        .block_index(block.index as i32)
                        .block_token(&block.token)
                        .send()
                })
                .await?;
            let expected = out.checksum().unwrap_or_default().to_string();
            // Each piece of the body is hashed while it is in cache and copied once into the
            // block, then dropped, so the connection's read buffer is free again at once;
            // collecting the pieces first and joining them costs a second copy and twice the
            // memory per block in flight. The slot covers the body: it is most of the request.
            data.clear();
            let mut hasher = Sha256::new();
            let mut oversized = false;
            let body = loop {
                match out.block_data.try_next().await {
                    Ok(Some(piece)) => {
                        if data.len() + piece.len() > BLOCK_SIZE {
                            oversized = true; // a checksum mismatch below; not stored
                            break Ok(());
                        }
                        hasher.update(&piece);
                        data.extend_from_slice(&piece);
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            match body {
                Ok(()) => permit.succeeded(),
                Err(e) => {
                    drop(permit);
                    tracing::warn!(
                        "GetSnapshotBlock {snapshot} block {}: body cut short ({e}); reading again",
                        block.index
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            }
            let digest: [u8; 32] = hasher.finalize().into();
            let actual = aws_smithy_types::base64::encode(digest);
            if !oversized && data.len() == BLOCK_SIZE && actual == expected {
                return Ok((data.freeze(), digest));
            }
            tracing::warn!(
                "GetSnapshotBlock {snapshot} block {}: checksum mismatch (attempt {attempt})",
                block.index
            );
            last = (expected, actual);
        }
        Err(EbsError::ChecksumMismatch {
            snapshot: snapshot.to_string(),
            index: block.index,
            expected: last.0,
            actual: last.1,
            attempts: READS,
        })
    }
}

fn check_block_size(snapshot: &str, size: Option<i32>) -> Result<(), EbsError> {
    match size {
        Some(s) if s as usize != BLOCK_SIZE => Err(EbsError::Unexpected {
            snapshot: snapshot.to_string(),
            detail: format!("block size {s}, autosnap handles only {BLOCK_SIZE}"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// CompleteSnapshot gets the engine's LINEAR digest (tested there) in base64.
    #[test]
    fn linear_checksum_is_the_engines_in_base64() {
        let mut ours = LinearChecksum::default();
        let mut engine = autosnap_ports::LinearChecksum::default();
        for seed in [1u8, 2] {
            let (_, digest) = block_checksum(&vec![seed; BLOCK_SIZE]);
            ours.push(&digest);
            engine.push(&digest);
        }
        assert_eq!(ours.blocks(), 2);
        assert_eq!(
            ours.finish(),
            aws_smithy_types::base64::encode(engine.finish())
        );
    }

    /// An EBS client whose HTTP layer answers every request with `respond(n)` (n counts calls).
    fn fake_ebs(
        respond: impl Fn(usize) -> http::Response<Vec<u8>> + Send + Sync + 'static,
    ) -> (Ebs, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let http = aws_smithy_http_client::test_util::infallible_client_fn(move |_req| {
            respond(counter.fetch_add(1, Ordering::SeqCst))
        });
        (ebs_over(http), calls)
    }

    /// An EBS client (SDK retries off, as [`Ebs::new`] sets them) over a test HTTP client.
    pub(crate) fn ebs_over(http: aws_smithy_runtime_api::client::http::SharedHttpClient) -> Ebs {
        let conf = aws_sdk_ebs::Config::builder()
            .behavior_version(aws_sdk_ebs::config::BehaviorVersion::latest())
            .region(aws_sdk_ebs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ebs::config::Credentials::new(
                "k", "s", None, None, "test",
            ))
            .retry_config(aws_sdk_ebs::config::retry::RetryConfig::disabled())
            .http_client(http)
            .build();
        let site = CallSite {
            service: "EBS",
            region: "us-east-1".into(),
            account: None,
            endpoint: None,
        };
        Ebs::from_client(aws_sdk_ebs::Client::from_conf(conf), site)
    }

    /// A GetSnapshotBlock answer: `data` with `checksum` in EBS's headers.
    pub(crate) fn block_response(data: Vec<u8>, checksum: &str) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(200)
            .header("x-amz-Checksum", checksum)
            .header("x-amz-Checksum-Algorithm", "SHA256")
            .header("x-amz-Data-Length", data.len().to_string())
            .body(data)
            .unwrap()
    }

    fn entry() -> BlockEntry {
        BlockEntry {
            index: 7,
            token: "t".into(),
        }
    }

    #[tokio::test]
    async fn a_block_failing_its_checksum_is_reread_then_reported() {
        let (wrong, _) = block_checksum(&[0u8; 4]);
        let (ebs, calls) = fake_ebs(move |_| block_response(vec![1u8; BLOCK_SIZE], &wrong));
        let err = ebs.get_block("snap-1", &entry()).await.unwrap_err();
        assert!(
            matches!(
                err,
                EbsError::ChecksumMismatch {
                    index: 7,
                    attempts: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(err.to_string().contains("snap-1"));
    }

    #[tokio::test]
    async fn a_corrupted_read_is_retried_and_the_good_copy_returned() {
        let data = vec![5u8; BLOCK_SIZE];
        let (good, _) = block_checksum(&data);
        let (ebs, calls) = fake_ebs(move |n| {
            let mut body = data.clone();
            if n == 0 {
                body[100] ^= 1; // flipped in transit
            }
            block_response(body, &good)
        });
        let got = ebs.get_block("snap-1", &entry()).await.unwrap();
        assert_eq!(got, vec![5u8; BLOCK_SIZE]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// A body longer or shorter than a block fails like a wrong checksum, even when EBS's
    /// checksum matches the bytes sent (the stream is read piece by piece into one block).
    #[tokio::test]
    async fn a_body_of_the_wrong_length_is_never_returned() {
        for len in [BLOCK_SIZE + 1, 2 * BLOCK_SIZE, BLOCK_SIZE - 1] {
            let data = vec![3u8; len];
            let (sum, _) = block_checksum(&data);
            let (ebs, calls) = fake_ebs(move |_| block_response(data.clone(), &sum));
            let err = ebs.get_block("snap-1", &entry()).await.unwrap_err();
            assert!(
                matches!(err, EbsError::ChecksumMismatch { attempts: 3, .. }),
                "{len}: {err}"
            );
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        }
    }

    #[tokio::test]
    async fn throttling_is_retried_and_access_denied_is_not() {
        let data = vec![9u8; BLOCK_SIZE];
        let (good, _) = block_checksum(&data);
        let (ebs, calls) = fake_ebs(move |n| {
            if n < 2 {
                http::Response::builder()
                    .status(400)
                    .header("x-amzn-ErrorType", "ThrottlingException")
                    .body(br#"{"message":"slow down"}"#.to_vec())
                    .unwrap()
            } else {
                block_response(data.clone(), &good)
            }
        });
        ebs.get_block("snap-1", &entry()).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);

        let (ebs, calls) = fake_ebs(|_| {
            http::Response::builder()
                .status(403)
                .header("x-amzn-ErrorType", "AccessDeniedException")
                .body(br#"{"message":"no"}"#.to_vec())
                .unwrap()
        });
        let err = ebs.get_block("snap-1", &entry()).await.unwrap_err();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "{err}");
    }

    /// The page-at-a-time zero check upload and download use agrees with the byte-by-byte one:
    /// a single set bit anywhere (first byte, last byte, page edges, a short tail) is seen.
    #[test]
    fn zero_check_agrees_with_the_naive_one() {
        use autosnap_repo::writer::is_zero_block;
        let naive = |d: &[u8]| d.iter().all(|&b| b == 0);
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), vec![0; 1], vec![1; 1], vec![0; BLOCK_SIZE]];
        for len in [BLOCK_SIZE, BLOCK_SIZE - 1, 4095, 4097, 12_345] {
            for at in [0, 1, 4095, 4096, len / 2, len - 1]
                .into_iter()
                .filter(|&at| at < len)
            {
                for bit in [0x01u8, 0x80] {
                    let mut d = vec![0u8; len];
                    d[at] = bit;
                    cases.push(d);
                }
            }
        }
        // Pseudo-random blocks (xorshift, fixed seed), and sparse ones: a few random bytes set.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..8 {
            cases.push((0..BLOCK_SIZE).map(|_| next() as u8).collect());
            let mut d = vec![0u8; BLOCK_SIZE];
            d[next() as usize % BLOCK_SIZE] = (next() as u8) | 1;
            cases.push(d);
        }
        for d in &cases {
            assert_eq!(is_zero_block(d), naive(d), "length {}", d.len());
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) < backoff(5));
        assert!(backoff(30) <= MAX_BACKOFF);
        assert!(backoff(1) >= FIRST_BACKOFF / 2);
    }
}
