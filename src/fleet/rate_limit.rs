//! Requests per runner token: a token bucket per runner (all its machines
//! together), in memory per instance. With N instances alive (the
//! instance registry) each enforces 1/N of the configured rate and burst,
//! so the limit holds across instances when a load balancer spreads a
//! runner's requests (a runner pinned to one instance gets 1/N).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use uuid::Uuid;

use crate::platform::config::RateLimitConfig;

pub struct RunnerRateLimit {
    config: RateLimitConfig,
    /// The number of instances sharing the limit, and this one's bucket.
    share: std::sync::RwLock<(u32, DefaultKeyedRateLimiter<Uuid>)>,
    clock: DefaultClock,
}

fn limiter(config: &RateLimitConfig, instances: u32) -> DefaultKeyedRateLimiter<Uuid> {
    let part = |total: u32| NonZeroU32::new(total.div_ceil(instances.max(1))).unwrap_or(NonZeroU32::MIN);
    DefaultKeyedRateLimiter::keyed(Quota::per_second(part(config.per_second)).allow_burst(part(config.burst)))
}

impl RunnerRateLimit {
    pub fn new(config: &RateLimitConfig) -> Self {
        RunnerRateLimit {
            config: config.clone(),
            share: std::sync::RwLock::new((1, limiter(config, 1))),
            clock: DefaultClock::default(),
        }
    }

    /// `instances` share the limit from now on (buckets start full again
    /// when the number changes).
    pub fn set_instances(&self, instances: u32) {
        let instances = instances.max(1);
        if self.share.read().expect("rate limit").0 == instances {
            return;
        }
        *self.share.write().expect("rate limit") = (instances, limiter(&self.config, instances));
    }

    /// How many instances this one believes share the limit.
    pub fn instances(&self) -> u32 {
        self.share.read().expect("rate limit").0
    }

    /// `Err(wait)` when the runner must slow down.
    pub fn check(&self, runner_id: Uuid) -> Result<(), Duration> {
        self.share
            .read()
            .expect("rate limit")
            .1
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

    #[test]
    fn instances_share_the_limit() {
        let limit = RunnerRateLimit::new(&RateLimitConfig {
            per_second: 1,
            burst: 10,
        });
        limit.set_instances(2);
        let runner = Uuid::now_v7();
        let passed = (0..10).filter(|_| limit.check(runner).is_ok()).count();
        assert_eq!(passed, 5, "half the burst on each of two instances");
        limit.set_instances(1);
        let passed = (0..20).filter(|_| limit.check(runner).is_ok()).count();
        assert_eq!(passed, 10);
    }
}
