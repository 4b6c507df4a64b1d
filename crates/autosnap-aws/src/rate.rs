//! A token bucket per EC2 action, mirroring how EC2 throttles: a bucket per account, region and
//! action that holds at most its capacity and refills at a fixed rate ("Request throttling for
//! the Amazon EC2 API"; the figures and the reasoning are in docs/rate-limits.md). Staying under
//! it keeps large runs from spending their time in throttling retries.
//!
//! autosnap paces each action to the documented bucket minus a small margin ([`Pacing`]):
//! EC2 adds its refill once a second at a moment the client cannot see, and requests sent
//! evenly can arrive bunched, so the burst keeps two seconds of refill in reserve; the rate is
//! 1 % under the documented one so that clock drift never accumulates against the bucket.
//! A share below 1 leaves part of every budget to other tools in the account.

use std::fmt;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

pub struct TokenBucket {
    capacity: f64,
    refill_per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A bucket that starts full.
    pub fn new(capacity: u32, refill_per_sec: f64) -> TokenBucket {
        TokenBucket {
            capacity: f64::from(capacity),
            refill_per_sec,
            state: Mutex::new((f64::from(capacity), Instant::now())),
        }
    }

    /// Requests that may go at once from a full bucket.
    pub fn capacity(&self) -> u32 {
        self.capacity as u32
    }

    /// Tokens added per second.
    pub fn refill_per_sec(&self) -> f64 {
        self.refill_per_sec
    }

    /// EC2 throttled a request paced by this bucket even after the SDK's retries: the
    /// account's bucket is emptier than this one thinks (another tool used it, or the account's
    /// limit is lower). Empties this bucket and owes one more second of refill, so every task
    /// waits until EC2's bucket has had time to refill before the next request.
    pub async fn throttled(&self) {
        let mut s = self.state.lock().await;
        s.0 = -self.refill_per_sec;
        s.1 = Instant::now();
    }

    /// Waits (asynchronously) until a token is available and takes it.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                let refilled = s.0 + (now - s.1).as_secs_f64() * self.refill_per_sec;
                s.0 = refilled.min(self.capacity);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                // At least a millisecond: a float remainder (0.999… tokens) must not turn into
                // a zero-length sleep that never lets the clock move.
                Duration::from_secs_f64((1.0 - s.0) / self.refill_per_sec)
                    .max(Duration::from_millis(1))
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One of EC2's documented request buckets: per account, region and action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ec2Budget {
    /// Bucket maximum capacity (the burst).
    pub capacity: u32,
    /// Bucket refill rate (the sustained requests per second).
    pub refill_per_sec: f64,
}

/// EC2's buckets for the actions autosnap paces (docs/rate-limits.md has every call).
pub mod budgets {
    use super::Ec2Budget;

    const fn b(capacity: u32, refill_per_sec: f64) -> Ec2Budget {
        Ec2Budget {
            capacity,
            refill_per_sec,
        }
    }
    /// An uncategorized action with its own bucket.
    pub const CREATE_SNAPSHOT: Ec2Budget = b(100, 5.0);
    pub const CREATE_SNAPSHOTS: Ec2Budget = b(100, 5.0);
    pub const DELETE_SNAPSHOT: Ec2Budget = b(100, 5.0);
    pub const DEREGISTER_IMAGE: Ec2Budget = b(100, 5.0);
    pub const COPY_IMAGE: Ec2Budget = b(100, 1.0);
    pub const CREATE_TAGS: Ec2Budget = b(100, 10.0);
    /// CopySnapshot and CreateImage have no row of their own: the mutating default.
    pub const MUTATING: Ec2Budget = b(50, 5.0);
}

/// How much of each documented budget autosnap uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    share: f64,
}

/// A share outside (0, 1].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the share of EC2's request budget must be above 0 and at most 1 (e.g. 0.5 leaves half to other tools), got {0}")]
pub struct InvalidShare(pub f64);

impl Pacing {
    /// The whole budget (less the safety margin): as fast as EC2 allows.
    pub const FULL: Pacing = Pacing { share: 1.0 };
    /// Seconds of refill kept out of the burst (EC2's once-a-second refill and bunched arrivals).
    pub const MARGIN_SECONDS: f64 = 2.0;
    /// The sustained rate relative to the documented one (clock drift).
    pub const RATE_FACTOR: f64 = 0.99;

    /// A share of every budget, in (0, 1].
    pub fn share(share: f64) -> Result<Pacing, InvalidShare> {
        if share > 0.0 && share <= 1.0 {
            Ok(Pacing { share })
        } else {
            Err(InvalidShare(share))
        }
    }

    pub fn fraction(&self) -> f64 {
        self.share
    }

    /// autosnap's bucket for one of EC2's: the share of the burst less two seconds of the
    /// shared refill (at least 1), refilling at the share of the rate less 1 %.
    pub fn bucket(&self, budget: Ec2Budget) -> TokenBucket {
        let refill = budget.refill_per_sec * self.share;
        let burst = (f64::from(budget.capacity) * self.share).floor()
            - (refill * Self::MARGIN_SECONDS).ceil();
        TokenBucket::new(burst.max(1.0) as u32, refill * Self::RATE_FACTOR)
    }
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing::FULL
    }
}

impl fmt::Display for Pacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.share)
    }
}

/// autosnap's pacing per EC2 action in one account and region (see [`budgets`] and [`Pacing`]):
/// [`crate::execute::execute`] works in one account and makes one per region, and a run across
/// accounts calls it once per account ([`crate::accounts::across`]), so each account × region
/// has its own buckets, as EC2 keeps its own.
pub struct Ec2RateLimits {
    /// CreateSnapshot and CreateSnapshots (one bucket for both: EC2 has one each, so sharing
    /// is the cautious side).
    pub create_snapshot: TokenBucket,
    pub delete_snapshot: TokenBucket,
    /// CopySnapshot (the mutating default bucket).
    pub copy_snapshot: TokenBucket,
    /// CreateImage (the mutating default bucket).
    pub create_image: TokenBucket,
    pub deregister_image: TokenBucket,
    /// CopyImage refills at one per second.
    pub copy_image: TokenBucket,
    /// ModifySnapshotTier, for `archive_after` (the mutating default bucket).
    pub modify_snapshot_tier: TokenBucket,
    /// LockSnapshot, UnlockSnapshot and RestoreSnapshotTier of one-off commands (each the
    /// mutating default bucket).
    pub lock_snapshot: TokenBucket,
    pub unlock_snapshot: TokenBucket,
    pub restore_snapshot_tier: TokenBucket,
    /// CreateTags, for the per-snapshot tags of instance sets: shared with the region's
    /// [`crate::ec2::Ec2`] client (see [`crate::ec2::Ec2::with_tag_pacing`]).
    pub create_tags: std::sync::Arc<TokenBucket>,
}

impl Ec2RateLimits {
    pub fn new(pacing: Pacing) -> Ec2RateLimits {
        Ec2RateLimits {
            create_snapshot: pacing.bucket(budgets::CREATE_SNAPSHOT),
            delete_snapshot: pacing.bucket(budgets::DELETE_SNAPSHOT),
            copy_snapshot: pacing.bucket(budgets::MUTATING),
            create_image: pacing.bucket(budgets::MUTATING),
            deregister_image: pacing.bucket(budgets::DEREGISTER_IMAGE),
            copy_image: pacing.bucket(budgets::COPY_IMAGE),
            modify_snapshot_tier: pacing.bucket(budgets::MUTATING),
            lock_snapshot: pacing.bucket(budgets::MUTATING),
            unlock_snapshot: pacing.bucket(budgets::MUTATING),
            restore_snapshot_tier: pacing.bucket(budgets::MUTATING),
            create_tags: std::sync::Arc::new(pacing.bucket(budgets::CREATE_TAGS)),
        }
    }
}

impl Default for Ec2RateLimits {
    fn default() -> Self {
        Ec2RateLimits::new(Pacing::FULL)
    }
}

/// Tries again after a throttle that survived the SDK's own retries, each after the action's
/// bucket was emptied ([`TokenBucket::throttled`]): the account's budget was emptier than
/// autosnap's pacing assumed (another tool, a lower limit).
pub const THROTTLED_RETRIES: u32 = 5;

/// Calls on many resources at once in a one-off command (`snapshot delete a b c`, `ami delete`,
/// `snapshot lock`, …): their bucket paces them; this only bounds the connections in flight.
pub const ONE_OFF_CONCURRENCY: usize = 4;

/// One call on `id` when `bucket` allows it; a throttled call did nothing at EC2, so the bucket
/// slows down and the call is tried again, at most [`THROTTLED_RETRIES`] times.
pub async fn paced<T, F, Fut>(
    bucket: &TokenBucket,
    operation: &str,
    id: &str,
    mut call: F,
) -> Result<T, crate::AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::AwsError>>,
{
    let mut throttles = 0;
    loop {
        bucket.acquire().await;
        match call().await {
            Err(crate::AwsError::Throttled { .. }) if throttles < THROTTLED_RETRIES => {
                throttles += 1;
                tracing::info!(
                    "EC2 is throttling {operation}: slowing down (retry {throttles} for {id})"
                );
                bucket.throttled().await;
            }
            result => return result,
        }
    }
}

/// [`paced`] for each of `ids` ([`ONE_OFF_CONCURRENCY`] in flight), results in the order of
/// `ids`: how one-off commands on many resources use the same pacing as policy runs.
pub async fn paced_each<T, F, Fut>(
    bucket: &TokenBucket,
    operation: &str,
    ids: impl IntoIterator<Item = String>,
    call: F,
) -> Vec<(String, Result<T, crate::AwsError>)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::AwsError>>,
{
    use futures::stream::{self, StreamExt};
    let call = &call;
    stream::iter(ids)
        .map(|id| async move {
            let r = paced(bucket, operation, &id, || call(id.clone())).await;
            (id, r)
        })
        .buffered(ONE_OFF_CONCURRENCY)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_rate() {
        let bucket = TokenBucket::new(3, 2.0);
        let start = Instant::now();
        for _ in 0..3 {
            bucket.acquire().await;
        }
        assert_eq!(Instant::now(), start, "the burst is free");
        bucket.acquire().await;
        bucket.acquire().await;
        // Two more tokens at 2 per second take one second (virtual time).
        let waited = Instant::now() - start;
        assert!(
            waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1010),
            "{waited:?}"
        );
    }

    /// EC2's bucket as documented: starts full, adds `refill` once a second (at a moment
    /// `phase` seconds after the client starts, unknown to it), never above capacity.
    struct Ec2Bucket {
        tokens: f64,
        capacity: f64,
        refill: f64,
        next_tick: f64,
    }

    impl Ec2Bucket {
        fn new(b: Ec2Budget, phase: f64) -> Ec2Bucket {
            Ec2Bucket {
                tokens: f64::from(b.capacity),
                capacity: f64::from(b.capacity),
                refill: b.refill_per_sec,
                next_tick: phase,
            }
        }
        fn take(&mut self, t: f64) -> bool {
            while self.next_tick <= t {
                self.tokens = (self.tokens + self.refill).min(self.capacity);
                self.next_tick += 1.0;
            }
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    /// Sends `n` requests paced by `ours` to a model of EC2's bucket; returns the throttled
    /// count and the (virtual) seconds it took.
    async fn run(ours: TokenBucket, ec2: Ec2Budget, phase: f64, n: usize) -> (usize, f64) {
        let mut server = Ec2Bucket::new(ec2, phase);
        let start = Instant::now();
        let mut throttled = 0;
        for _ in 0..n {
            ours.acquire().await;
            if !server.take((Instant::now() - start).as_secs_f64()) {
                throttled += 1;
            }
        }
        (throttled, (Instant::now() - start).as_secs_f64())
    }

    /// The floor EC2 allows for `n` requests from a full bucket.
    fn floor(b: Ec2Budget, n: usize) -> f64 {
        (n as f64 - f64::from(b.capacity)).max(0.0) / b.refill_per_sec
    }

    #[tokio::test(start_paused = true)]
    async fn full_pacing_is_never_throttled_and_within_5_percent_of_the_floor() {
        let b = budgets::CREATE_SNAPSHOT;
        for phase in [0.0, 0.001, 0.25, 0.5, 0.999] {
            let (throttled, secs) = run(Pacing::FULL.bucket(b), b, phase, 500).await;
            assert_eq!(throttled, 0, "phase {phase}");
            let ratio = secs / floor(b, 500);
            assert!(
                (1.0..=1.05).contains(&ratio),
                "phase {phase}: {secs} s, {ratio}"
            );
        }
        for b in [budgets::MUTATING, budgets::COPY_IMAGE, budgets::CREATE_TAGS] {
            let (throttled, _) = run(Pacing::FULL.bucket(b), b, 0.001, 300).await;
            assert_eq!(throttled, 0, "{b:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_documented_budget_taken_literally_is_throttled() {
        // Why the margin: a client that bursts the whole bucket and then refills continuously
        // is ahead of EC2's once-a-second refill for most of every second.
        let b = budgets::CREATE_SNAPSHOT;
        let naive = TokenBucket::new(b.capacity, b.refill_per_sec);
        let (throttled, _) = run(naive, b, 0.999, 500).await;
        assert!(throttled > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_empties_the_bucket_and_costs_a_second_of_refill() {
        let bucket = TokenBucket::new(10, 2.0);
        bucket.acquire().await;
        let start = Instant::now();
        bucket.throttled().await;
        bucket.acquire().await;
        // Nine tokens were left; now one second of debt plus one token at 2 per second.
        let waited = Instant::now() - start;
        assert!(
            waited >= Duration::from_millis(1490) && waited <= Duration::from_millis(1510),
            "{waited:?}"
        );
    }

    #[test]
    fn a_share_scales_burst_and_rate_and_keeps_the_margin() {
        let full = Pacing::FULL.bucket(budgets::CREATE_SNAPSHOT);
        assert_eq!(full.capacity(), 90);
        assert!((full.refill_per_sec() - 4.95).abs() < 1e-9);
        let half = Pacing::share(0.5).unwrap().bucket(budgets::CREATE_SNAPSHOT);
        assert_eq!(half.capacity(), 45);
        assert!((half.refill_per_sec() - 2.475).abs() < 1e-9);
        let copy_image = Pacing::FULL.bucket(budgets::COPY_IMAGE);
        assert_eq!(copy_image.capacity(), 98);
        let tiny = Pacing::share(0.01).unwrap().bucket(budgets::MUTATING);
        assert_eq!(tiny.capacity(), 1, "never an empty bucket");
        for bad in [0.0, -0.5, 1.01, f64::NAN] {
            assert!(Pacing::share(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_off_calls_are_paced_retried_after_a_throttle_and_keep_their_order() {
        use std::sync::atomic::{AtomicU32, Ordering};
        // b refuses twice with a throttle, then succeeds; c fails for good.
        let throttles = AtomicU32::new(0);
        let calls = AtomicU32::new(0);
        let bucket = TokenBucket::new(2, 1.0);
        let start = Instant::now();
        let ids = ["a", "b", "c", "d"].map(String::from);
        let results = paced_each(&bucket, "DeleteSnapshot", ids, |id| {
            calls.fetch_add(1, Ordering::SeqCst);
            let throttled = id == "b" && throttles.fetch_add(1, Ordering::SeqCst) < 2;
            async move {
                if throttled {
                    Err(crate::AwsError::Throttled {
                        operation: "DeleteSnapshot",
                        code: "RequestLimitExceeded".into(),
                    })
                } else if id == "c" {
                    Err(crate::AwsError::Failed {
                        what: id,
                        detail: "refused".into(),
                    })
                } else {
                    Ok(id)
                }
            }
        })
        .await;
        let got: Vec<(&str, bool)> = results
            .iter()
            .map(|(id, r)| (id.as_str(), r.is_ok()))
            .collect();
        assert_eq!(got, [("a", true), ("b", true), ("c", false), ("d", true)]);
        // Six calls (b three times), each one token: never faster than the bucket allows.
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        assert!(
            Instant::now() - start >= Duration::from_secs(4),
            "{:?}",
            Instant::now() - start
        );
    }
}
