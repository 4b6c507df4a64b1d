//! Adaptive concurrency for block transfers: an AIMD (additive increase, multiplicative
//! decrease) limit on the requests one transfer has in flight, shared by all of them.
//!
//! * It starts at the cap (`--concurrency`) and never goes above it, nor below 1.
//! * A throttling answer (ThrottlingException, SlowDown, 503, 429) halves it — from what was
//!   really in flight when the limit was higher than that (TCP's `FlightSize / 2`), once per
//!   window: answers to requests sent before the last decrease do not decrease it again, so a
//!   burst of throttled requests counts as one signal.
//! * A run of successes as long as the limit itself (one window) raises it by one.
//! * Other failures change nothing.
//!
//! [`AimdState`] is the pure rule (tested without a runtime); [`AdaptiveConcurrency`] wraps it
//! for async callers: [`AdaptiveConcurrency::acquire`] waits for a free slot and returns a
//! [`Permit`] that reports how its request ended when it is released. Changes are logged
//! (decreases at info, increases at debug).

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// How a request that held a slot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The service answered normally.
    Success,
    /// The service asked to slow down (throttling, SlowDown, 503, 429).
    Throttled,
    /// Anything else (a transport error, a permanent error, a dropped request): no signal.
    Neutral,
}

/// A change of the limit, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Decreased { from: usize, to: usize },
    Increased { from: usize, to: usize },
}

/// The AIMD rule: the limit, the requests in flight and the current window.
#[derive(Debug, Clone)]
pub struct AimdState {
    cap: usize,
    limit: usize,
    in_flight: usize,
    /// Successes since the limit last changed.
    successes: usize,
    /// Incremented at every decrease; a slot remembers the window it was taken in.
    window: u64,
    /// The most requests ever in flight at once.
    peak: usize,
}

impl AimdState {
    /// Starts at `cap` (at least 1).
    pub fn new(cap: usize) -> AimdState {
        let cap = cap.max(1);
        AimdState {
            cap,
            limit: cap,
            in_flight: 0,
            successes: 0,
            window: 0,
            peak: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The most requests in flight at once so far.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Takes a slot when one is free under the limit; returns the window it belongs to.
    pub fn try_acquire(&mut self) -> Option<u64> {
        if self.in_flight >= self.limit {
            return None;
        }
        self.in_flight += 1;
        self.peak = self.peak.max(self.in_flight);
        Some(self.window)
    }

    /// Gives back a slot taken in `window`, with how its request ended.
    pub fn release(&mut self, window: u64, outcome: Outcome) -> Option<Change> {
        let in_flight = self.in_flight;
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Throttled if window == self.window => {
                let from = self.limit;
                let to = (self.limit.min(in_flight) / 2).max(1);
                self.window += 1;
                self.successes = 0;
                if to < from {
                    self.limit = to;
                    Some(Change::Decreased { from, to })
                } else {
                    None
                }
            }
            Outcome::Success => {
                self.successes += 1;
                if self.successes >= self.limit && self.limit < self.cap {
                    let from = self.limit;
                    self.limit += 1;
                    self.successes = 0;
                    Some(Change::Increased {
                        from,
                        to: self.limit,
                    })
                } else {
                    None
                }
            }
            Outcome::Throttled | Outcome::Neutral => None,
        }
    }
}

/// An [`AimdState`] shared by the concurrent requests of one transfer.
#[derive(Debug)]
pub struct AdaptiveConcurrency {
    /// What is limited, for log lines ("EBS", "S3").
    name: &'static str,
    state: Mutex<AimdState>,
    freed: Notify,
}

impl AdaptiveConcurrency {
    /// A limit of at most `cap` requests in flight (at least 1), starting at `cap`.
    pub fn new(name: &'static str, cap: usize) -> Arc<AdaptiveConcurrency> {
        Arc::new(AdaptiveConcurrency {
            name,
            state: Mutex::new(AimdState::new(cap)),
            freed: Notify::new(),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit()
    }

    /// The most requests that were in flight at once.
    pub fn peak(&self) -> usize {
        self.lock().peak()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AimdState> {
        // The state stays consistent even if a holder panicked (every update is one step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a free slot under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if let Some(window) = self.lock().try_acquire() {
                return Permit {
                    owner: Arc::clone(self),
                    window,
                    outcome: Outcome::Neutral,
                };
            }
            freed.await;
        }
    }

    fn release(&self, window: u64, outcome: Outcome) {
        let change = self.lock().release(window, outcome);
        match change {
            Some(Change::Decreased { from, to }) => {
                tracing::info!("{} is throttling: concurrency {from} → {to}", self.name)
            }
            Some(Change::Increased { from, to }) => {
                tracing::debug!("{}: concurrency {from} → {to}", self.name)
            }
            None => {}
        }
        self.freed.notify_waiters();
    }
}

/// One request's slot; released on drop with the outcome recorded (neutral by default).
#[derive(Debug)]
pub struct Permit {
    owner: Arc<AdaptiveConcurrency>,
    window: u64,
    outcome: Outcome,
}

impl Permit {
    /// The request succeeded: releases the slot.
    pub fn succeeded(mut self) {
        self.outcome = Outcome::Success;
    }

    /// The service throttled the request: releases the slot.
    pub fn throttled(mut self) {
        self.outcome = Outcome::Throttled;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.owner.release(self.window, self.outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn take(state: &mut AimdState, n: usize) -> Vec<u64> {
        (0..n).map(|_| state.try_acquire().unwrap()).collect()
    }

    #[test]
    fn starts_at_the_cap_and_never_exceeds_it() {
        let mut s = AimdState::new(4);
        let slots = take(&mut s, 4);
        assert_eq!(s.try_acquire(), None, "a fifth request waits");
        for w in slots {
            assert_eq!(s.release(w, Outcome::Success), None, "already at the cap");
        }
        assert_eq!(s.limit(), 4);
        assert_eq!(s.peak(), 4);
        assert_eq!(AimdState::new(0).limit(), 1, "a cap of 0 means 1");
    }

    #[test]
    fn a_throttle_halves_once_per_window() {
        let mut s = AimdState::new(16);
        let slots = take(&mut s, 16);
        // The whole burst is throttled: only the first answer decreases.
        assert_eq!(
            s.release(slots[0], Outcome::Throttled),
            Some(Change::Decreased { from: 16, to: 8 })
        );
        for &w in &slots[1..] {
            assert_eq!(s.release(w, Outcome::Throttled), None);
        }
        assert_eq!(s.limit(), 8);
        // A request of the new window that is throttled halves again.
        let w = s.try_acquire().unwrap();
        assert_eq!(
            s.release(w, Outcome::Throttled),
            Some(Change::Decreased { from: 8, to: 1 }),
            "halved from the one request in flight, not from the limit"
        );
    }

    #[test]
    fn halves_what_was_in_flight_when_the_limit_was_not_reached() {
        let mut s = AimdState::new(256);
        let slots = take(&mut s, 10);
        assert_eq!(
            s.release(slots[3], Outcome::Throttled),
            Some(Change::Decreased { from: 256, to: 5 })
        );
    }

    #[test]
    fn never_below_one() {
        let mut s = AimdState::new(2);
        let w = s.try_acquire().unwrap();
        assert_eq!(
            s.release(w, Outcome::Throttled),
            Some(Change::Decreased { from: 2, to: 1 })
        );
        let w = s.try_acquire().unwrap();
        assert_eq!(s.release(w, Outcome::Throttled), None);
        assert_eq!(s.limit(), 1);
        assert!(s.try_acquire().is_some());
        assert_eq!(s.try_acquire(), None);
    }

    #[test]
    fn grows_by_one_after_a_window_of_successes_up_to_the_cap() {
        let mut s = AimdState::new(4);
        let slots = take(&mut s, 4);
        s.release(slots[0], Outcome::Throttled); // 4 in flight → 2
        for &w in &slots[1..] {
            s.release(w, Outcome::Neutral);
        }
        assert_eq!(s.limit(), 2);
        assert_eq!(s.in_flight(), 0);
        let mut limits = Vec::new();
        for _ in 0..20 {
            let w = s.try_acquire().unwrap();
            s.release(w, Outcome::Success);
            limits.push(s.limit());
        }
        // Two successes raise 2 → 3, three more 3 → 4, then the cap holds.
        assert_eq!(&limits[..6], &[2, 3, 3, 3, 4, 4]);
        assert_eq!(*limits.last().unwrap(), 4);
    }

    #[test]
    fn neutral_outcomes_change_nothing() {
        let mut s = AimdState::new(8);
        let slots = take(&mut s, 8);
        s.release(slots[0], Outcome::Throttled);
        for &w in &slots[1..] {
            assert_eq!(s.release(w, Outcome::Neutral), None);
        }
        let before = s.limit();
        for _ in 0..100 {
            let w = s.try_acquire().unwrap();
            assert_eq!(s.release(w, Outcome::Neutral), None);
        }
        assert_eq!(s.limit(), before);
    }

    #[test]
    fn a_success_after_a_throttle_starts_a_new_run() {
        let mut s = AimdState::new(8);
        let slots = take(&mut s, 8);
        // 7 successes of the old window, then a throttle: limit 8 is at the cap, no growth.
        for &w in &slots[..7] {
            s.release(w, Outcome::Success);
        }
        assert_eq!(
            s.release(slots[7], Outcome::Throttled),
            Some(Change::Decreased { from: 8, to: 1 }),
            "only one request was still in flight"
        );
        let w = s.try_acquire().unwrap();
        assert_eq!(
            s.release(w, Outcome::Success),
            Some(Change::Increased { from: 1, to: 2 })
        );
    }

    #[test]
    fn acquire_waits_for_a_released_slot() {
        let limit = AdaptiveConcurrency::new("test", 1);
        let first = limit.acquire().now_or_never().expect("a free slot");
        let mut second = Box::pin(limit.acquire());
        assert!((&mut second).now_or_never().is_none(), "over the limit");
        first.succeeded();
        let second = second.now_or_never().expect("the released slot");
        assert_eq!(limit.peak(), 1);
        second.throttled();
        assert_eq!(limit.limit(), 1);
    }

    #[test]
    fn a_lowered_limit_holds_back_new_requests() {
        let limit = AdaptiveConcurrency::new("test", 4);
        let permits: Vec<Permit> = (0..4)
            .map(|_| limit.acquire().now_or_never().unwrap())
            .collect();
        let mut permits = permits.into_iter();
        permits.next().unwrap().throttled(); // 4 → 2, 3 still in flight
        assert_eq!(limit.limit(), 2);
        assert!(limit.acquire().now_or_never().is_none());
        drop(permits.next()); // 2 in flight: still at the limit
        assert!(limit.acquire().now_or_never().is_none());
        drop(permits.next()); // 1 in flight
        assert!(limit.acquire().now_or_never().is_some());
    }
}
