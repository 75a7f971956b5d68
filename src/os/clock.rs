//! Absolute deadlines on `CLOCK_MONOTONIC`, the clock `FUTEX_WAIT_BITSET` measures by.

use rustix::time::{ClockId, Timespec, clock_gettime};
use std::time::Duration;

/// `clock_gettime(CLOCK_MONOTONIC)` as a `Duration` since the clock's (boot-time) epoch.
#[inline]
pub(crate) fn monotonic_now() -> Duration {
    let ts = clock_gettime(ClockId::Monotonic);
    // CLOCK_MONOTONIC never reports negative values or nanoseconds >= 1e9.
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// A point in time on `CLOCK_MONOTONIC` after which a blocking call gives up.
///
/// Deadlines are absolute so that a wait interrupted by a signal (EINTR) or woken
/// spuriously resumes with the time that is really left, never with the full timeout
/// again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    /// Time since the monotonic clock's epoch.
    at: Duration,
}

impl Deadline {
    /// The deadline `timeout` from now. A huge timeout saturates (a wait of centuries
    /// is a wait without end, not an overflow).
    #[inline]
    pub fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: monotonic_now().saturating_add(timeout),
        }
    }

    /// Whether the deadline has passed.
    #[inline]
    pub fn expired(&self) -> bool {
        monotonic_now() >= self.at
    }

    /// Time left until the deadline, zero once it has passed.
    #[inline]
    pub fn remaining(&self) -> Duration {
        self.at.saturating_sub(monotonic_now())
    }

    /// The deadline as the absolute `timespec` `FUTEX_WAIT_BITSET` takes.
    pub(crate) fn as_timespec(&self) -> Timespec {
        Timespec {
            tv_sec: i64::try_from(self.at.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(self.at.subsec_nanos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_orders_and_expires() {
        let short = Deadline::after(Duration::ZERO);
        let long = Deadline::after(Duration::from_secs(3600));
        assert!(short < long);
        assert!(short.expired());
        assert!(!long.expired());
        assert!(long.remaining() > Duration::from_secs(3500));
        assert_eq!(short.remaining(), Duration::ZERO);
    }

    #[test]
    fn huge_timeout_saturates() {
        let d = Deadline::after(Duration::MAX);
        assert!(!d.expired());
        assert_eq!(d.as_timespec().tv_sec, i64::MAX);
    }
}
