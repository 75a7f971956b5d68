//! Shared futex wait and wake (never `FUTEX_PRIVATE_FLAG`: private futexes are keyed by
//! the process's address space and do not work across processes).

use super::clock::Deadline;
use rustix::io::Errno;
use rustix::thread::futex;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// `FUTEX_WAKE` calls this process has made. Incremented only on the slow path that
/// makes the syscall anyway, so keeping it costs nothing when nobody waits; it lets a
/// test show that a notify without waiters makes no syscall.
static WAKE_CALLS: AtomicU64 = AtomicU64::new(0);
/// `FUTEX_WAIT_BITSET` calls this process has made.
static WAIT_CALLS: AtomicU64 = AtomicU64::new(0);

/// Why a futex wait returned. Every outcome means "re-check your condition".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// Woken by `FUTEX_WAKE`, or the word no longer held the expected value (EAGAIN).
    Woken,
    /// The absolute deadline passed (ETIMEDOUT).
    TimedOut,
    /// A signal handler ran (EINTR).
    Interrupted,
}

/// `futex(FUTEX_WAIT_BITSET, expected, deadline, FUTEX_BITSET_MATCH_ANY)`: sleep while
/// `*word == expected`, until woken or until the absolute `CLOCK_MONOTONIC` deadline.
///
/// See [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html).
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitOutcome {
    WAIT_CALLS.fetch_add(1, Ordering::Relaxed);
    let ts = deadline.map(|d| d.as_timespec());
    let match_any = NonZeroU32::MAX;
    match futex::wait_bitset(
        word,
        futex::Flags::empty(),
        expected,
        ts.as_ref(),
        match_any,
    ) {
        Ok(()) | Err(Errno::AGAIN) => WaitOutcome::Woken,
        Err(Errno::TIMEDOUT) => WaitOutcome::TimedOut,
        Err(Errno::INTR) => WaitOutcome::Interrupted,
        // Nothing else is expected for a mapped, aligned word; treat it as a spurious
        // wake so the caller re-checks (and its own deadline bounds the loop).
        Err(_) => WaitOutcome::Woken,
    }
}

/// `futex_waitv(words, CLOCK_MONOTONIC deadline)` (Linux 5.16+): sleep while every
/// `*word == expected`, until any is woken or changed, or the deadline. Where the call
/// is missing (ENOSYS), sleeps 1 ms instead and reports `Woken`, so callers re-check:
/// polling, but never a missed wake-up.
///
/// See [futex_waitv(2)](https://docs.kernel.org/userspace-api/futex2.html).
pub(crate) fn wait_any(words: &[(&AtomicU32, u32)], deadline: Option<Deadline>) -> WaitOutcome {
    WAIT_CALLS.fetch_add(1, Ordering::Relaxed);
    let waits: Vec<futex::Wait> = words
        .iter()
        .map(|(word, expected)| {
            let mut w = futex::Wait::new();
            w.val = u64::from(*expected);
            w.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
            w.flags = futex::WaitFlags::SIZE_U32;
            w
        })
        .collect();
    let ts = deadline.map(|d| d.as_timespec());
    match futex::waitv(
        &waits,
        futex::WaitvFlags::empty(),
        ts.as_ref(),
        rustix::time::ClockId::Monotonic,
    ) {
        Ok(_) | Err(Errno::AGAIN) => WaitOutcome::Woken,
        Err(Errno::TIMEDOUT) => WaitOutcome::TimedOut,
        Err(Errno::INTR) => WaitOutcome::Interrupted,
        Err(_) => {
            let pause = std::time::Duration::from_millis(1);
            std::thread::sleep(deadline.map_or(pause, |d| d.remaining().min(pause)));
            WaitOutcome::Woken
        }
    }
}

/// `futex(FUTEX_WAKE, n)`: wake up to `n` processes sleeping on `word`; returns how
/// many (`n` if the call failed).
///
/// See [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html).
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    WAKE_CALLS.fetch_add(1, Ordering::Relaxed);
    // A failed wake (it cannot fail on a valid word) counts as having woken `n`:
    // callers read fewer than `n` as "nobody else is asleep".
    futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32)).unwrap_or(n as usize)
}

/// How many `FUTEX_WAKE` system calls this process has made through shmproc.
pub fn wake_calls() -> u64 {
    WAKE_CALLS.load(Ordering::Relaxed)
}

/// How many `FUTEX_WAIT` system calls this process has made through shmproc.
pub fn wait_calls() -> u64 {
    WAIT_CALLS.load(Ordering::Relaxed)
}
