//! A process-wide token bucket for the public API, adjustable at run time.
//!
//! The bucket holds up to one second's worth of tokens (at least one), refilled
//! continuously at `rps`. `rps = 0` switches limiting off. It guards the API as a whole,
//! not per client: the point is to protect the database behind it.

use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    rps: u32,
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    bucket: Mutex<Bucket>,
}

impl RateLimiter {
    pub fn new(rps: u32) -> Self {
        RateLimiter {
            bucket: Mutex::new(Bucket {
                rps,
                tokens: capacity(rps),
                last: Instant::now(),
            }),
        }
    }

    pub fn rps(&self) -> u32 {
        self.lock().rps
    }

    /// Changes the rate; the bucket starts full at the new capacity.
    pub fn set_rps(&self, rps: u32) {
        let mut b = self.lock();
        b.rps = rps;
        b.tokens = capacity(rps);
        b.last = Instant::now();
    }

    /// Takes one token; false means the request must be refused.
    pub fn try_acquire(&self) -> bool {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> bool {
        let mut b = self.lock();
        if b.rps == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * f64::from(b.rps)).min(capacity(b.rps));
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn capacity(rps: u32) -> f64 {
    f64::from(rps.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn zero_means_off() {
        let rl = RateLimiter::new(0);
        assert!((0..10_000).all(|_| rl.try_acquire()));
    }

    #[test]
    fn bucket_empties_and_refills() {
        let rl = RateLimiter::new(2);
        let t0 = Instant::now();
        assert!(rl.try_acquire_at(t0));
        assert!(rl.try_acquire_at(t0));
        assert!(!rl.try_acquire_at(t0));
        assert!(rl.try_acquire_at(t0 + Duration::from_millis(500)));
        assert!(!rl.try_acquire_at(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn rate_can_change_at_run_time() {
        let rl = RateLimiter::new(1);
        assert!(rl.try_acquire());
        assert!(!rl.try_acquire());
        rl.set_rps(0);
        assert!(rl.try_acquire());
        assert_eq!(rl.rps(), 0);
    }
}
