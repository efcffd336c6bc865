//! Requests per runner token: a token bucket per runner (all its machines
//! together), in memory per instance.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use uuid::Uuid;

use crate::platform::config::RateLimitConfig;

pub struct RunnerRateLimit {
    limiter: DefaultKeyedRateLimiter<Uuid>,
    clock: DefaultClock,
}

impl RunnerRateLimit {
    pub fn new(config: &RateLimitConfig) -> Self {
        let per_second = NonZeroU32::new(config.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        RunnerRateLimit {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when the runner must slow down.
    pub fn check(&self, runner_id: Uuid) -> Result<(), Duration> {
        self.limiter
            .check_key(&runner_id)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_passes_then_the_runner_waits() {
        let limit = RunnerRateLimit::new(&RateLimitConfig {
            per_second: 1,
            burst: 3,
        });
        let runner = Uuid::now_v7();
        for _ in 0..3 {
            assert!(limit.check(runner).is_ok());
        }
        let wait = limit.check(runner).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        // Other runners are not affected.
        assert!(limit.check(Uuid::now_v7()).is_ok());
    }
}
