use std::time::Duration;

/// Bounded retries with exponential backoff and full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// Upper bound of the first backoff; doubles with each retry.
    pub base_delay: Duration,
    /// Upper bound of any backoff, including a server's `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (0-based): uniformly random in
    /// `[0, min(max_delay, base_delay * 2^retry)]`. Full jitter spreads a crowd of clients that
    /// failed together instead of letting them retry in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(fastrand::f64())
    }

    /// The pause before retry number `retry` of a request the server refused as too many
    /// (429): what it asked for with `Retry-After`, but at least half the backoff's ceiling
    /// (jittered up to the ceiling). Full jitter may retry almost at once, and HashiCorp Vault
    /// answers its rate-limit quota without `Retry-After` (v1.19.0, seen on the bed): retrying
    /// at once only meets the limit again.
    pub fn throttled(&self, retry: u32, asked: Option<Duration>) -> Duration {
        let ceiling = self.ceiling(retry);
        let own = ceiling / 2 + ceiling.mul_f64(fastrand::f64()) / 2;
        asked.unwrap_or_default().max(own)
    }

    /// `min(max_delay, base_delay * 2^retry)`.
    fn ceiling(&self, retry: u32) -> Duration {
        self.base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(16)))
            .min(self.max_delay)
    }

    /// The pause a server asked for with `Retry-After` (seconds form), capped at `max_delay`.
    pub fn server_requested(&self, retry_after: Option<&str>) -> Option<Duration> {
        let seconds: u64 = retry_after?.trim().parse().ok()?;
        Some(Duration::from_secs(seconds).min(self.max_delay))
    }
}

/// Whether an answer with this HTTP status is worth repeating: the store is overloaded, restarting
/// or sealed (5xx), or rate-limiting us (429). 501 means "never", so it is not retried.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status) && status != 501
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(429, true)]
    #[case(500, true)]
    #[case(502, true)]
    #[case(503, true)]
    #[case(501, false)]
    #[case(400, false)]
    #[case(403, false)]
    #[case(404, false)]
    #[case(412, false)]
    fn retries_only_overload_and_server_errors(#[case] status: u16, #[case] retry: bool) {
        assert_eq!(is_retryable_status(status), retry);
    }

    #[test]
    fn backoff_grows_but_stays_under_its_ceiling() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        for _ in 0..200 {
            assert!(policy.backoff(0) <= Duration::from_millis(100));
            assert!(policy.backoff(1) <= Duration::from_millis(200));
            assert!(policy.backoff(5) <= Duration::from_millis(350));
            assert!(policy.backoff(u32::MAX) <= Duration::from_millis(350));
        }
        // Full jitter: over many draws the delays are spread, not constant.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| policy.backoff(3)).collect();
        assert!(draws.len() > 10, "backoff is not jittered: {draws:?}");
    }

    #[test]
    fn a_throttled_retry_waits_at_least_half_the_ceiling_even_when_asked_for_none() {
        let policy = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        };
        for _ in 0..200 {
            let zero = policy.throttled(2, Some(Duration::ZERO));
            assert!(zero >= Duration::from_millis(400) && zero <= Duration::from_millis(800));
            assert!(policy.throttled(0, None) >= Duration::from_millis(100));
            assert_eq!(
                policy.throttled(0, Some(Duration::from_secs(1))),
                Duration::from_secs(1)
            );
        }
        // Five retries wait 3 s at least: past a 1-second rate-limit interval.
        let least: Duration = (0..5).map(|retry| policy.ceiling(retry) / 2).sum();
        assert_eq!(least, Duration::from_millis(2_500));
    }

    #[rstest]
    #[case(Some("1"), Some(Duration::from_secs(1)))]
    #[case(Some("600"), Some(Duration::from_secs(2)))]
    #[case(Some("Wed, 21 Oct 2015 07:28:00 GMT"), None)]
    #[case(None, None)]
    fn honours_retry_after_within_bounds(
        #[case] header: Option<&str>,
        #[case] want: Option<Duration>,
    ) {
        assert_eq!(RetryPolicy::default().server_requested(header), want);
    }
}
