//! Token buckets keyed by user or room, as plain code with an explicit clock.
//!
//! Memory stays bounded: a bucket left alone until it is full again behaves exactly like a
//! bucket that was never created, so a periodic sweep drops those. What remains is one entry per
//! key that sent within the last refill period.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::config::RateLimit;

/// The longest pause between two sweeps.
const MAX_SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refusals since the last granted token.
    refused_in_a_row: u32,
}

/// Why a take was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// When the next token will be there.
    pub retry_after: Duration,
    /// Refusals since the key's last granted token, this one included.
    pub in_a_row: u32,
}

#[derive(Debug)]
pub struct Buckets<K> {
    rate: f64,
    burst: f64,
    buckets: HashMap<K, Bucket>,
    sweep_every: Duration,
    next_sweep: Instant,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        let burst = f64::from(limit.burst.max(1));
        let rate = limit.rate_per_sec.max(f64::MIN_POSITIVE);
        // Sweeping once per refill period finds every bucket that has idled full.
        let refill = Duration::try_from_secs_f64(burst / rate).unwrap_or(MAX_SWEEP_EVERY);
        let sweep_every = refill.clamp(Duration::from_secs(1), MAX_SWEEP_EVERY);
        Buckets {
            rate,
            burst,
            buckets: HashMap::new(),
            sweep_every,
            next_sweep: now + sweep_every,
        }
    }

    /// Takes one token for `key`, or says when one will be there.
    pub fn take(&mut self, key: K, now: Instant) -> Result<(), Refused> {
        if now >= self.next_sweep {
            self.sweep(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
            refused_in_a_row: 0,
        });
        bucket.tokens = refilled(bucket, rate, burst, now);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.refused_in_a_row = 0;
            return Ok(());
        }
        bucket.refused_in_a_row = bucket.refused_in_a_row.saturating_add(1);
        let wait_ms = ((1.0 - bucket.tokens) / rate * 1000.0).ceil();
        Err(Refused {
            retry_after: Duration::from_millis(wait_ms.min(u64::MAX as f64) as u64),
            in_a_row: bucket.refused_in_a_row,
        })
    }

    /// Gives back a token taken for `key` (the request was refused for another reason later).
    pub fn give_back(&mut self, key: K) {
        if let Some(bucket) = self.buckets.get_mut(&key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }

    /// Keys tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, bucket| refilled(bucket, rate, burst, now) < burst);
        self.next_sweep = now + self.sweep_every;
    }
}

fn refilled(bucket: &Bucket, rate: f64, burst: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate_per_sec: f64, burst: u32) -> RateLimit {
        RateLimit {
            rate_per_sec,
            burst,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut buckets = Buckets::new(limit(2.0, 3), t0);
        for _ in 0..3 {
            buckets.take(42, t0).unwrap();
        }
        assert_eq!(
            buckets.take(42, t0),
            Err(Refused {
                retry_after: 500 * MS,
                in_a_row: 1
            })
        );
        assert_eq!(buckets.take(42, t0 + 100 * MS).unwrap_err().in_a_row, 2);
        assert_eq!(
            buckets.take(42, t0 + 100 * MS).unwrap_err().retry_after,
            400 * MS
        );
        buckets.take(42, t0 + 500 * MS).unwrap();
        assert_eq!(buckets.take(42, t0 + 500 * MS).unwrap_err().in_a_row, 1);
        // Another key has its own bucket.
        buckets.take(7, t0).unwrap();
        // Long idle refills to the burst, no more.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            buckets.take(42, later).unwrap();
        }
        assert!(buckets.take(42, later).is_err());
    }

    #[test]
    fn a_token_given_back_can_be_taken_again() {
        let t0 = Instant::now();
        let mut buckets = Buckets::new(limit(1.0, 1), t0);
        buckets.take(1, t0).unwrap();
        buckets.give_back(1);
        buckets.take(1, t0).unwrap();
        assert!(buckets.take(1, t0).is_err());
        buckets.give_back(1);
        buckets.give_back(1);
        buckets.take(1, t0).unwrap();
        assert!(buckets.take(1, t0).is_err(), "never above the burst");
    }

    #[test]
    fn idle_buckets_are_evicted() {
        let t0 = Instant::now();
        // Refills fully in 2 s: swept every 2 s.
        let mut buckets = Buckets::new(limit(1.0, 2), t0);
        for uid in 0..1000u64 {
            buckets.take(uid, t0).unwrap();
        }
        assert_eq!(buckets.len(), 1000);
        // One key keeps sending; everyone else is full again by the sweep.
        buckets.take(5000, t0 + 1900 * MS).unwrap();
        buckets.take(5000, t0 + 1900 * MS).unwrap();
        buckets.take(5000, t0 + 2 * 1000 * MS).unwrap_err();
        assert_eq!(buckets.len(), 1, "only the busy key is left");
        // Still limited after the sweep: its bucket was kept.
        assert!(buckets.take(5000, t0 + 2001 * MS).is_err());
    }
}
