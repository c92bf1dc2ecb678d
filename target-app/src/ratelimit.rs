//! A process-wide token bucket for the public API, adjustable at run time.
//!
//! The limit is `max_requests` per `window_seconds`: the bucket holds up to
//! `max_requests` tokens (at least one), refilled continuously at
//! `max_requests / window_seconds` per second. `rps = N` is `N` per 1 s. `0` requests
//! switches limiting off. It guards the API as a whole, not per client: the point is to
//! protect the database behind it.

use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    max_requests: u32,
    window_s: u32,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn rate(&self) -> f64 {
        f64::from(self.max_requests) / f64::from(self.window_s.max(1))
    }
}

pub struct RateLimiter {
    bucket: Mutex<Bucket>,
}

impl RateLimiter {
    pub fn new(rps: u32) -> Self {
        RateLimiter {
            bucket: Mutex::new(Bucket {
                max_requests: rps,
                window_s: 1,
                tokens: capacity(rps),
                last: Instant::now(),
            }),
        }
    }

    /// Requests per second, rounded up (0 = off); exact when the window is 1 s.
    pub fn rps(&self) -> u32 {
        let b = self.lock();
        b.max_requests.div_ceil(b.window_s.max(1))
    }

    /// `(max_requests, window_seconds)`.
    pub fn window(&self) -> (u32, u32) {
        let b = self.lock();
        (b.max_requests, b.window_s)
    }

    /// Changes the rate to `rps` per second; the bucket starts full at the new capacity.
    pub fn set_rps(&self, rps: u32) {
        self.set_window(rps, 1);
    }

    /// Changes the limit to `max_requests` per `window_s` seconds (`window_s` ≥ 1); the
    /// bucket starts full at the new capacity.
    pub fn set_window(&self, max_requests: u32, window_s: u32) {
        let mut b = self.lock();
        b.max_requests = max_requests;
        b.window_s = window_s.max(1);
        b.tokens = capacity(max_requests);
        b.last = Instant::now();
    }

    /// Takes one token; false means the request must be refused.
    pub fn try_acquire(&self) -> bool {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> bool {
        let mut b = self.lock();
        if b.max_requests == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate()).min(capacity(b.max_requests));
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

fn capacity(max_requests: u32) -> f64 {
    f64::from(max_requests.max(1))
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
    fn a_window_allows_a_burst_then_refills_slowly() {
        let rl = RateLimiter::new(0);
        rl.set_window(3, 60);
        assert_eq!(rl.window(), (3, 60));
        assert_eq!(rl.rps(), 1);
        let t0 = rl.lock().last;
        assert!((0..3).all(|_| rl.try_acquire_at(t0)));
        assert!(!rl.try_acquire_at(t0));
        // 3 per 60 s: one token every 20 s.
        assert!(!rl.try_acquire_at(t0 + Duration::from_secs(19)));
        assert!(rl.try_acquire_at(t0 + Duration::from_secs(21)));
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
