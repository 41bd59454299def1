//! Endpoint health: passive outlier detection (ejections with growing backoff) and the state
//! that active checks set. Lives in each endpoint's [`crate::balance::EndpointLoad`], so it
//! survives config updates while the endpoint stays listed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::config::OutlierDetection;

/// Milliseconds since the first call in this process: a cheap monotonic clock for atomics.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Default)]
pub(crate) struct EndpointHealth {
    /// Failures in a row (passive).
    consecutive_failures: AtomicU32,
    /// Ejections so far; the next lasts this many times the base (capped).
    ejections: AtomicU32,
    /// Ejected until this [`now_ms`]; 0 when never ejected.
    ejected_until_ms: AtomicU64,
    /// Set by active checks: the endpoint failed `unhealthy_threshold` checks in a row.
    down: AtomicBool,
    /// Active check results in a row: passes (positive) or failures (negative).
    check_streak: std::sync::atomic::AtomicI32,
    /// When the next active check is due ([`now_ms`]).
    next_check_ms: AtomicU64,
    /// An active check is running; at most one per endpoint.
    checking: AtomicBool,
}

impl EndpointHealth {
    /// Whether new requests may go to the endpoint.
    pub(crate) fn is_healthy(&self, now_ms: u64) -> bool {
        !self.down.load(Ordering::Relaxed)
            && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    pub(crate) fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub(crate) fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; returns true when it crosses the threshold and `may_eject` allows an
    /// ejection, which then starts now.
    pub(crate) fn record_failure(
        &self,
        policy: &OutlierDetection,
        now_ms: u64,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.consecutive_failures.max(1) || self.is_ejected(now_ms) || !may_eject()
        {
            return false;
        }
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = policy
            .base_ejection_ms
            .saturating_mul(u64::from(ejections))
            .min(policy.max_ejection_ms.max(policy.base_ejection_ms));
        self.ejected_until_ms
            .store(now_ms.saturating_add(duration.max(1)), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        true
    }

    /// Claims the next active check if it is due; the caller runs it and then calls
    /// [`Self::record_check`].
    pub(crate) fn claim_check(&self, now_ms: u64, interval_ms: u64) -> bool {
        if self.next_check_ms.load(Ordering::Relaxed) > now_ms
            || self.checking.swap(true, Ordering::AcqRel)
        {
            return false;
        }
        self.next_check_ms
            .store(now_ms.saturating_add(interval_ms.max(1)), Ordering::Relaxed);
        true
    }

    /// Records an active check; returns the new "down" state if it changed.
    pub(crate) fn record_check(
        &self,
        passed: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        let streak = self.check_streak.load(Ordering::Relaxed);
        let streak = match (passed, streak) {
            (true, s) if s > 0 => s.saturating_add(1),
            (true, _) => 1,
            (false, s) if s < 0 => s.saturating_sub(1),
            (false, _) => -1,
        };
        self.check_streak.store(streak, Ordering::Relaxed);
        self.checking.store(false, Ordering::Release);
        let down = self.down.load(Ordering::Relaxed);
        let threshold = |t: u32| i32::try_from(t.max(1)).unwrap_or(i32::MAX);
        if down && streak >= threshold(healthy_threshold) {
            self.down.store(false, Ordering::Relaxed);
            // A recovered endpoint starts with a clean passive record.
            self.ejections.store(0, Ordering::Relaxed);
            return Some(false);
        }
        if !down && -streak >= threshold(unhealthy_threshold) {
            self.down.store(true, Ordering::Relaxed);
            return Some(true);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_backs_off_and_expires() {
        let policy = OutlierDetection {
            consecutive_failures: 3,
            base_ejection_ms: 100,
            max_ejection_ms: 250,
            max_ejection_percent: 50,
        };
        let h = EndpointHealth::default();
        assert!(!h.record_failure(&policy, 0, || true));
        h.record_success();
        assert!(!h.record_failure(&policy, 0, || true));
        assert!(!h.record_failure(&policy, 0, || true));
        assert!(
            h.record_failure(&policy, 0, || true),
            "third in a row ejects"
        );
        assert!(!h.is_healthy(99) && h.is_healthy(100));
        for _ in 0..3 {
            h.record_failure(&policy, 100, || true);
        }
        assert!(
            !h.is_healthy(299) && h.is_healthy(300),
            "second ejection lasts twice as long"
        );
        for _ in 0..3 {
            h.record_failure(&policy, 1000, || true);
        }
        assert!(!h.is_healthy(1249) && h.is_healthy(1250), "capped at max");
        // The cap on ejected endpoints holds it back.
        for _ in 0..5 {
            assert!(!h.record_failure(&policy, 5000, || false));
        }
        assert!(h.is_healthy(5000));
    }

    #[test]
    fn active_thresholds() {
        let h = EndpointHealth::default();
        assert_eq!(h.record_check(false, 2, 2), None);
        assert_eq!(h.record_check(false, 2, 2), Some(true));
        assert!(!h.is_healthy(0));
        assert_eq!(h.record_check(true, 2, 2), None);
        assert_eq!(h.record_check(false, 2, 2), None);
        assert_eq!(h.record_check(true, 2, 2), None);
        assert_eq!(h.record_check(true, 2, 2), Some(false));
        assert!(h.is_healthy(0));
    }
}
