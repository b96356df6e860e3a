//! Waiting for a condition by polling it with a deadline, never with a fixed sleep.

use std::fmt::Display;
use std::time::Duration;

use tokio::time::{Instant, sleep};

/// First pause between two polls; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// What a poll in [`eventually`] may return: `Option<T>` or `anyhow::Result<Option<T>>`.
///
/// `None` and `Err` both mean "not yet"; the last error is reported if the deadline passes.
pub trait Poll<T> {
    fn into_poll(self) -> anyhow::Result<Option<T>>;
}

impl<T> Poll<T> for Option<T> {
    fn into_poll(self) -> anyhow::Result<Option<T>> {
        Ok(self)
    }
}

impl<T> Poll<T> for anyhow::Result<Option<T>> {
    fn into_poll(self) -> anyhow::Result<Option<T>> {
        self
    }
}

impl Poll<()> for bool {
    fn into_poll(self) -> anyhow::Result<Option<()>> {
        Ok(self.then_some(()))
    }
}

/// Polls `f` with a short backoff until it yields a value, and fails naming `what` once `timeout`
/// has passed. `f` is always polled at least once, and once more at the deadline.
///
/// `f` is an async closure (`async || ...` or `|| async { ... }`) returning `Option<T>`,
/// `anyhow::Result<Option<T>>` or `bool`. An `Err` counts as "not yet" (a server still starting
/// refuses connections); the last one is part of the timeout error.
pub async fn eventually<T, R, F>(
    what: impl Display,
    timeout: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: AsyncFnMut() -> R,
    R: Poll<T>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0u32;
    let mut last_error = None;
    loop {
        attempts += 1;
        match f().await.into_poll() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        let now = Instant::now();
        if now >= deadline {
            let waited = now - started;
            return Err(match last_error {
                Some(e) => e.context(format!(
                    "timed out after {waited:.1?} ({attempts} attempts) waiting for {what}"
                )),
                None => anyhow::anyhow!(
                    "timed out after {waited:.1?} ({attempts} attempts) waiting for {what}"
                ),
            });
        }
        sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Asserts that a condition becomes true within a timeout, polling it with [`eventually`].
///
/// `assert_eventually!(Duration::from_secs(5), "the stream holds 3 messages", count().await == 3)`.
/// The condition is re-evaluated on every poll inside an async closure, so it may `.await` and
/// borrow local variables mutably. Panics with the timeout error otherwise; use it in async tests.
#[macro_export]
macro_rules! assert_eventually {
    ($timeout:expr, $what:expr, $cond:expr $(,)?) => {
        if let Err(e) = $crate::wait::eventually($what, $timeout, async || -> bool { $cond }).await
        {
            panic!("{e:#}");
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value() {
        let mut polls = 0;
        let got = eventually("three polls", Duration::from_secs(5), async || {
            polls += 1;
            (polls == 3).then_some(polls * 10)
        })
        .await
        .unwrap();
        assert_eq!(got, 30);
    }

    #[tokio::test]
    async fn accepts_closures_returning_futures_and_results() {
        let got: u8 = eventually("ok", Duration::from_secs(1), || async {
            anyhow::Ok(Some(7))
        })
        .await
        .unwrap();
        assert_eq!(got, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_naming_what_and_the_last_error() {
        let err = eventually(
            "the moon",
            Duration::from_secs(2),
            async || -> anyhow::Result<Option<()>> { anyhow::bail!("still dark") },
        )
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("waiting for the moon"), "{text}");
        assert!(text.contains("still dark"), "{text}");
    }

    #[tokio::test]
    async fn assert_eventually_polls_until_true() {
        let mut n = 0;
        assert_eventually!(Duration::from_secs(5), "n reaches 4", {
            n += 1;
            n >= 4
        });
        assert_eq!(n, 4);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for never")]
    async fn assert_eventually_panics_at_the_deadline() {
        assert_eventually!(Duration::from_millis(50), "never", false);
    }
}
