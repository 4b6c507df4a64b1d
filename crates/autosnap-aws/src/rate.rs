//! A token bucket per EC2 action, mirroring how EC2 throttles (a bucket per
//! account, region and action that refills at a fixed rate). Staying under
//! it keeps large runs from spending their time in throttling retries.

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
                Duration::from_secs_f64((1.0 - s.0) / self.refill_per_sec)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// EC2's documented buckets (shared/aws-facts: CreateSnapshot(s) and
/// DeleteSnapshot, DeregisterImage: 100 tokens, 5 per second; CopyImage: 100,
/// 1/s; other mutating calls (CreateImage): 50, 5/s).
/// autosnap uses half of each burst so that other tools in the account keep
/// some headroom.
pub struct Ec2RateLimits {
    pub create_snapshot: TokenBucket,
    pub delete_snapshot: TokenBucket,
    pub copy_snapshot: TokenBucket,
    /// CreateImage (the mutating default bucket).
    pub create_image: TokenBucket,
    pub deregister_image: TokenBucket,
    /// CopyImage refills at one per second.
    pub copy_image: TokenBucket,
}

impl Default for Ec2RateLimits {
    fn default() -> Self {
        Ec2RateLimits {
            create_snapshot: TokenBucket::new(50, 5.0),
            delete_snapshot: TokenBucket::new(50, 5.0),
            copy_snapshot: TokenBucket::new(25, 5.0),
            create_image: TokenBucket::new(25, 5.0),
            deregister_image: TokenBucket::new(50, 5.0),
            copy_image: TokenBucket::new(50, 1.0),
        }
    }
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
}
