//! Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff and
//! Jitter", 2015): the n-th retry waits a uniformly random time in `[0, min(max, base * 2^n))`.
//! Full jitter spreads a crowd of clients that lost the same gateway at the same instant over
//! the whole window, instead of sending them back in synchronized waves. Plain code: the caller
//! passes the random source.

use std::time::Duration;

use rand::Rng;

/// Backoff settings and the current attempt count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Window of the first retry. Default 250 ms.
    pub base: Duration,
    /// Largest window. Default 30 s.
    pub max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The window of the next retry, `min(max, base * 2^attempt)`.
    pub fn window(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before the next retry, drawn from `rng`; counts the attempt.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let window = self.window();
        self.attempt = self.attempt.saturating_add(1);
        if window.is_zero() {
            return Duration::ZERO;
        }
        rng.gen_range(Duration::ZERO..window)
    }

    /// Back to the first window: called once a connection has joined its room.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn windows_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(7);
        let mut windows = Vec::new();
        for _ in 0..6 {
            windows.push(backoff.window().as_millis());
            let delay = backoff.next_delay(&mut rng);
            assert!(delay < Duration::from_millis(*windows.last().unwrap() as u64));
        }
        assert_eq!(windows, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.window(), Duration::from_millis(100));
        for _ in 0..100 {
            backoff.next_delay(&mut rng);
        }
        assert_eq!(backoff.window(), Duration::from_secs(1), "no overflow");
    }

    #[test]
    fn delays_spread_over_the_whole_window() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay(&mut rng)
            })
            .collect();
        let early = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(100))
            .count();
        let late = delays
            .iter()
            .filter(|d| **d > Duration::from_millis(900))
            .count();
        assert!(early > 50 && late > 50, "early {early}, late {late}");
    }
}
