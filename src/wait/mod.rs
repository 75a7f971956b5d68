//! The eventcount: how every blocking call in shmproc waits for a condition.
//!
//! An [`EventCount`] is eight bytes of shared memory: a futex word (`epoch`) and a
//! count of registered waiters (`waiters`). The epoch's low bit, [`SLEEPING`], says
//! that some waiter registered since the last wake-up and may be asleep. A waiter
//! spins on its condition for a short while, then registers (count and bit), re-checks,
//! and sleeps in `FUTEX_WAIT` on the epoch. A notifier changes the condition, then —
//! only if the bit is set — clears it (or bumps the epoch) and calls `FUTEX_WAKE`.
//! With nobody registered a notify is one load of a line that only sleepers write: no
//! syscall, no shared write, no fence.
//!
//! Why no wake-up is lost (the Dekker pattern):
//!
//! ```text
//! waiter                                notifier
//! waiters += 1        (W)               change condition      (C)
//! e = epoch += SLEEPING (F)             membarrier_light()
//! membarrier_heavy()                   e = epoch             (R)
//! check condition     (K)               if e has SLEEPING { n = waiters; wake (below) }
//! FUTEX_WAIT(epoch, e)
//! ```
//!
//! Each side needs a StoreLoad barrier between its store and its load. The
//! notifier's runs on every put and send, so it is the light half of an asymmetric
//! pair (`os::membarrier`): a compiler barrier, while the waiter — about to sleep anyway
//! — issues `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, a full barrier on every
//! CPU running a notifier. If R ran before that barrier, so did C, and K sees it;
//! otherwise R sees F (and the notifier's later load of `waiters` sees W), and the
//! notifier wakes. Every wake changes the epoch before `FUTEX_WAKE`, and after F, so
//! FUTEX_WAIT either finds the epoch changed (EAGAIN) or is asleep when the wake
//! arrives. Without `membarrier` both sides fence (and the waiter sleeps in short
//! slices, in case a notifier in a differently-filtered process did not).
//!
//! Registering changes the epoch too (`e → (e + 2) | SLEEPING`), so a notifier's CAS
//! from a value it read fails if anybody registered since. The wake itself, with `n`
//! the number to wake (1 or all) and `e` the epoch R read:
//!
//! - `waiters ≤ n`: clear the bit (a CAS from `e` to `e + 1`; on failure read again)
//!   and `FUTEX_WAKE(n)`. Every waiter that registered up to `e` is counted (its W
//!   precedes its F), so all of them are woken or will find the epoch changed. Later
//!   notifies find the bit clear and make no syscall until somebody registers again:
//!   one wake per sleep, not one per item put while the woken waiter waits for a CPU
//!   (under load that was most of them: a sleep-config `Queue<u64>` made a
//!   `FUTEX_WAKE` for 99 % of its puts beside a CPU hog).
//! - `waiters > n` (several sleepers, `notify_one`): bump the epoch by 2 (the bit
//!   stays set) and `FUTEX_WAKE(n)`. If that woke fewer than `n`, nobody was asleep
//!   on the word, and a CAS from the bumped value clears the bit (it fails if anybody
//!   registered meanwhile): waiters that were woken but have not yet left do not
//!   cost every later notify a syscall. A waiter staying registered (below) may have
//!   gone to sleep on the bumped value between the wake and the CAS, so a cleared bit
//!   is followed by a `FUTEX_WAKE` of all (two syscalls for this notify, none for
//!   the next ones; leaving the bit set instead cost a useless wake per notify while
//!   the woken waiters were leaving: 40 times as many wakes as waits in 2P2C).
//!
//! A bit left set by waiters that all left again costs the next notify one CAS.
//!
//! **Staying registered.** A waiter whose `FUTEX_WAIT` returns (woken, or EAGAIN
//! because the epoch moved) and finds [`SLEEPING`] still set keeps its registration:
//! it re-checks and sleeps on the new epoch, with no new registration and no barrier.
//! Its count is still in `waiters`, so a notify's CAS path still counts it. A notify
//! that read the epoch before it moved to the value the waiter just loaded had its
//! change published before its RMW on the epoch (a bump, or a CAS) — and that RMW is
//! in the chain of RMWs the waiter's SeqCst load read from, so the re-check sees the
//! change; a notify that reads the epoch later finds the bit set and wakes, and its
//! RMW makes a `FUTEX_WAIT` on the loaded value fail with EAGAIN if it comes first.
//! Only a cleared bit (a wake that counted this waiter) needs a full registration
//! again. Re-registering on every EAGAIN was a storm between two waiters on one
//! eventcount: each registration moves the epoch, so the other's `FUTEX_WAIT`
//! failed while its own barrier ran, and it registered again in turn — two
//! consumers of a sleep-config `Queue<u64>` with two producers made 80 futex waits
//! (each after a `membarrier`) per futex wake.
//!
//! Spinning yields the CPU between rounds of polls (a peer that is waiting for a CPU
//! gets ours). When a yield did hand the CPU to another task and the condition held
//! right after, the peer most likely shares this CPU: the thread's next wait then
//! sleeps at once, and the wake-up lets the scheduler move it to an idle CPU. (Two
//! processes that only spin and yield were otherwise kept on one CPU by the scheduler
//! for tens of milliseconds: a child started with `Process` landed on its parent's
//! CPU in about half the runs here, and their ping-pong took 6.5 µs a round trip
//! instead of 0.16.)
//!
//! A waiter killed while asleep leaves `waiters` raised; the only cost is that later
//! notifies make a (useless) wake syscall. A peer scribbling on either word can cause
//! spurious wake-ups or extra syscalls, never a missed deadline: every sleep is bounded
//! by the caller's absolute deadline.

use crate::os::clock::{Deadline, monotonic_now};
use crate::os::futex::WaitOutcome;
use crate::shim::{self, AtomicU32, Ordering};
use std::cell::Cell;
use std::time::Duration;

#[cfg(all(test, shmproc_model))]
mod model_tests;

/// A futex-backed eventcount, placed in shared memory. All-zero bytes are a valid,
/// idle eventcount, so a freshly sized segment needs no initialization.
#[derive(Debug, Default)]
#[repr(C)]
pub struct EventCount {
    /// The futex word. Bit 0 ([`SLEEPING`]): a waiter registered since the last wake
    /// and may be asleep; set by waiters, cleared by the notify that wakes them. The
    /// rest counts wakes (wrapping): every wake changes the word.
    epoch: AtomicU32,
    /// Processes between registering and leaving a sleep. May be too high (a waiter
    /// was killed asleep) or garbage (a peer scribbled); both only cost syscalls.
    waiters: AtomicU32,
}

/// The bit of `epoch` a registering waiter sets (see the module docs).
pub const SLEEPING: u32 = 1;

const _: () = assert!(size_of::<EventCount>() == 8);
const _: () = assert!(align_of::<EventCount>() == 4);

/// A wait ran past its deadline without its condition becoming true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}

impl std::error::Error for TimedOut {}

/// How long a waiter spins on its condition before it sleeps in the kernel.
///
/// Spinning is what makes a hand-off fast (two processes on two cores see each
/// other's stores in about 0.1 µs, while a futex sleep and wake costs tens of
/// microseconds); sleeping is what keeps an idle process off the CPU.
///
/// A spin is dropped where it keeps failing: after three waits in a row on one
/// eventcount that each slept longer than the spin, a thread's next waits there only
/// poll briefly (as [`Spin::NONE`]) before sleeping, until one of their sleeps ends
/// within the spin's duration (see `LONG_WAITS_TO_SKIP` in the source for why that
/// matters beyond the CPU it saves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spin {
    /// Spin at most this long before sleeping. Zero sleeps at once.
    pub duration: Duration,
}

impl Spin {
    /// The default: spin up to 50 µs, a little over two sleep-and-wake round trips on
    /// a typical VM, so waiting never costs more than a few times the best case.
    pub const DEFAULT: Spin = Spin {
        duration: Duration::from_micros(50),
    };
    /// Sleep at once: after one check of the condition and a few more polls (64, a
    /// fraction of a microsecond, cheaper than the sleep's own system calls), never
    /// reading the clock or yielding.
    pub const NONE: Spin = Spin {
        duration: Duration::ZERO,
    };
}

impl Default for Spin {
    fn default() -> Spin {
        Spin::DEFAULT
    }
}

impl EventCount {
    /// An idle eventcount (the same as all-zero bytes).
    pub const fn new() -> EventCount {
        EventCount {
            epoch: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// Views eight bytes of shared memory as an eventcount.
    ///
    /// # Safety
    ///
    /// `ptr` must be 4-aligned, valid for reads and writes of 8 bytes for `'a`, and
    /// accessed by everyone (in every process) only through atomics — through an
    /// `EventCount` or `AtomicU32`s at the same addresses.
    pub unsafe fn from_ptr<'a>(ptr: *mut u8) -> &'a EventCount {
        debug_assert!(ptr.cast::<EventCount>().is_aligned());
        // SAFETY: EventCount is two AtomicU32s, valid for any bit pattern; alignment,
        // validity and atomic-only access are the caller's contract.
        unsafe { &*ptr.cast::<EventCount>() }
    }

    /// Processes currently registered as sleeping (or killed while asleep).
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Wakes every sleeping waiter so it re-checks its condition. Call after changing
    /// the condition. No syscall when nobody sleeps.
    #[inline]
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    /// Wakes one sleeping waiter. Use only where any single waiter can act on the
    /// change (one item for any one consumer); otherwise use [`notify_all`].
    ///
    /// [`notify_all`]: EventCount::notify_all
    #[inline]
    pub fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes up to `n` sleeping waiters.
    #[inline]
    pub fn notify(&self, n: u32) {
        // Orders the caller's change of the condition before the load of `waiters`;
        // pairs with the heavy barrier of a waiter (see the module docs).
        shim::membarrier_light();
        let e = self.epoch.load(Ordering::SeqCst);
        if e & SLEEPING != 0 {
            self.wake_slow(e, n);
        }
    }

    /// The wake of a notify that found [`SLEEPING`] set in `e` (see the module docs).
    #[cold]
    fn wake_slow(&self, mut e: u32, n: u32) {
        loop {
            let registered = self.waiters.load(Ordering::SeqCst);
            if registered > n {
                // More sleepers than this notify wakes: the bit stays set for the next
                // notify. SeqCst RMW: a waiter whose FUTEX_WAIT fails with EAGAIN has
                // seen this change.
                let bumped = self.epoch.fetch_add(2, Ordering::SeqCst).wrapping_add(2);
                let woken = shim::futex_wake(&self.epoch, n);
                if woken < n as usize
                    && bumped & SLEEPING != 0
                    && self
                        .epoch
                        .compare_exchange(
                            bumped,
                            bumped.wrapping_add(1),
                            Ordering::SeqCst,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    // Nobody was asleep, and nobody registered since the bump: the
                    // bit is cleared. A waiter staying registered (see the module
                    // docs) may have gone to sleep on the bumped value after the wake,
                    // though: wake it to register again.
                    shim::futex_wake(&self.epoch, u32::MAX);
                }
                return;
            }
            // SeqCst RMW: fails if a waiter registered (or another notify woke)
            // since `e` was read; every waiter that registered before is counted in
            // `registered`.
            match self.epoch.compare_exchange(
                e,
                e.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    if registered > 0 {
                        shim::futex_wake(&self.epoch, n);
                    }
                    return;
                }
                Err(cur) if cur & SLEEPING == 0 => return, // another notify woke them
                Err(cur) => e = cur,
            }
        }
    }

    /// Registers a waiter (W and F in the module docs): counts it, sets
    /// [`SLEEPING`] and changes the epoch. Returns the epoch to sleep on.
    fn register(&self) -> u32 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let next = |e: u32| e.wrapping_add(2) | SLEEPING;
        // SeqCst RMW: a notify that reads the new value sees the registration.
        let prev = self
            .epoch
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |e| Some(next(e)))
            .unwrap_or_else(|e| e);
        next(prev)
    }

    /// Waits until `ready` returns `Some`, or until `deadline` (`None`: forever),
    /// spinning for [`Spin::DEFAULT`] first.
    ///
    /// `ready` is called any number of times; it must check the condition and, if it
    /// can, act on it (take the item, acquire the lock) and return the result.
    ///
    /// # Errors
    ///
    /// [`TimedOut`] once the deadline has passed and one last call of `ready` after it
    /// still returned `None`.
    #[inline]
    pub fn wait_until<T>(
        &self,
        deadline: Option<Deadline>,
        ready: impl FnMut() -> Option<T>,
    ) -> Result<T, TimedOut> {
        self.wait_until_with(Spin::DEFAULT, deadline, ready)
    }

    /// [`wait_until`](EventCount::wait_until) with a chosen spin policy.
    ///
    /// # Errors
    ///
    /// As for [`wait_until`](EventCount::wait_until).
    #[inline]
    pub fn wait_until_with<T>(
        &self,
        spin: Spin,
        deadline: Option<Deadline>,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Result<T, TimedOut> {
        if let Some(v) = ready() {
            return Ok(v);
        }
        self.wait_slow(spin, deadline, &mut ready, None)
    }

    /// Waits like [`wait_until_with`](EventCount::wait_until_with), and while the
    /// condition stays false calls `on_stall` — once when the spin phase ends, then
    /// after 20 ms, 40 ms, 80 ms, then every 100 ms of sleep. `on_stall` is where a
    /// waiter checks whether the process it waits for has died (a lock holder, a
    /// producer that claimed a slot, a peer) and resolves the wait itself; returning
    /// `Some` ends the wait with that value.
    ///
    /// This is how a survivor never hangs on a dead peer: nobody will notify for a
    /// process killed with SIGKILL, so the waiter must look for itself. The checks
    /// cost a few wake-ups per second while blocked; a blocked process still uses
    /// practically no CPU.
    ///
    /// # Errors
    ///
    /// As for [`wait_until`](EventCount::wait_until).
    #[inline]
    pub fn wait_until_checked<T>(
        &self,
        spin: Spin,
        deadline: Option<Deadline>,
        ready: impl FnMut() -> Option<T>,
        on_stall: impl FnMut() -> Option<T>,
    ) -> Result<T, TimedOut> {
        self.wait_until_checked_when(spin, deadline, ready, on_stall, || true)
    }

    /// [`wait_until_checked`](EventCount::wait_until_checked) for a condition that
    /// only a stall of a certain shape can hold up: `may_stall`, asked before each
    /// stall check and again just before each sleep, says whether one is possible
    /// now. While it says no, no stall check runs and the sleep has no timeout (a
    /// timed sleep costs every wake-up a timer's start and cancel: about a
    /// microsecond on a VM). A consumer on an empty queue sleeps so when no producer
    /// holds a claim: a producer that claims and then dies holds up only the
    /// messages after its own, and the first of those to be published wakes the
    /// consumer, which then finds the stall.
    ///
    /// # Errors
    ///
    /// As for [`wait_until`](EventCount::wait_until).
    #[inline]
    pub fn wait_until_checked_when<T>(
        &self,
        spin: Spin,
        deadline: Option<Deadline>,
        mut ready: impl FnMut() -> Option<T>,
        mut on_stall: impl FnMut() -> Option<T>,
        mut may_stall: impl FnMut() -> bool,
    ) -> Result<T, TimedOut> {
        if let Some(v) = ready() {
            return Ok(v);
        }
        let stall = Stall {
            check: &mut on_stall,
            possible: &mut may_stall,
        };
        self.wait_slow(spin, deadline, &mut ready, Some(stall))
    }

    /// The wait after the first check: spin (or, after [`LONG_WAITS_TO_SKIP`] waits
    /// on this eventcount that each slept longer than the spin, only poll briefly),
    /// then sleep; and remember whether this wait's sleep outlasted the spin.
    #[cold]
    fn wait_slow<T>(
        &self,
        spin: Spin,
        deadline: Option<Deadline>,
        ready: &mut dyn FnMut() -> Option<T>,
        stall: Option<Stall<'_, T>>,
    ) -> Result<T, TimedOut> {
        if spin.duration.is_zero() {
            if let Some(v) = poll_briefly(ready) {
                return Ok(v);
            }
            return self.sleep_until_ready(deadline, ready, stall);
        }
        let key = std::ptr::from_ref(self) as usize;
        let run = long_waits(key);
        if run < LONG_WAITS_TO_SKIP {
            if let Some(v) = spin_phase(spin, deadline, ready) {
                if run != 0 {
                    note_wait(key, false);
                }
                return Ok(v);
            }
        } else if let Some(v) = poll_briefly(ready) {
            return Ok(v);
        }
        let asleep_at = monotonic_now();
        let r = self.sleep_until_ready(deadline, ready, stall);
        note_wait(key, monotonic_now() - asleep_at > spin.duration);
        r
    }

    /// Registers, re-checks and sleeps until `ready` holds (or the deadline), running
    /// the stall checks: the sleeping half of every wait.
    fn sleep_until_ready<T>(
        &self,
        deadline: Option<Deadline>,
        ready: &mut dyn FnMut() -> Option<T>,
        mut stall: Option<Stall<'_, T>>,
    ) -> Result<T, TimedOut> {
        let mut stalls = StallClock::new();
        loop {
            if let Some(s) = stall.as_mut()
                && (s.possible)()
                && let Some(v) = stalls.check(s.check, ready)
            {
                return Ok(v);
            }
            if deadline.is_some_and(|d| d.expired()) {
                // A timed-out wait re-checks once before giving up.
                return ready().ok_or(TimedOut);
            }
            let mut epoch = self.register();
            // Orders the registration before the re-check; pairs with the light
            // barrier in `notify` (see the module docs).
            let covered = shim::membarrier_heavy();
            loop {
                if let Some(v) = ready() {
                    self.waiters.fetch_sub(1, Ordering::SeqCst);
                    return Ok(v);
                }
                // Asked after the registration: a stall that starts later is one a
                // notify ends (see `wait_until_checked_when`).
                let checked = stall.as_mut().is_some_and(|s| (s.possible)());
                let sleep_until = stalls.sleep_until(deadline, covered, checked);
                let outcome = shim::futex_wait(&self.epoch, epoch, sleep_until);
                // Woken, or the epoch moved (EAGAIN): while SLEEPING is still set,
                // this registration still stands (see "Staying registered" in the
                // module docs): re-check and sleep on the new epoch, without a new
                // registration or barrier.
                let now = self.epoch.load(Ordering::SeqCst);
                if outcome != WaitOutcome::Woken || now & SLEEPING == 0 {
                    break;
                }
                epoch = now;
            }
            // Every other outcome (the bit cleared by a wake, EINTR, the deadline or
            // a stall check coming due) ends in a re-check; the loop head handles the
            // deadlines and registers again.
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if let Some(v) = ready() {
                return Ok(v);
            }
        }
    }
}

/// Waits until `ready` returns `Some` (or `deadline`), sleeping on several
/// eventcounts at once: any notify on any of them wakes the waiter to re-check. This
/// is how one process blocks on many objects (`connection::wait`). Spins for
/// `spin` first; `on_stall` is called as in [`EventCount::wait_until_checked`].
///
/// # Errors
///
/// [`TimedOut`] once the deadline has passed and a last `ready` still returned `None`.
pub fn wait_any<T>(
    events: &[&EventCount],
    spin: Spin,
    deadline: Option<Deadline>,
    mut ready: impl FnMut() -> Option<T>,
    mut on_stall: impl FnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    if let Some(v) = ready() {
        return Ok(v);
    }
    if let Some(v) = spin_phase(spin, deadline, &mut ready) {
        return Ok(v);
    }
    let mut stalls = StallClock::new();
    loop {
        if let Some(v) = stalls.check(&mut on_stall, &mut ready) {
            return Ok(v);
        }
        if deadline.is_some_and(|d| d.expired()) {
            return ready().ok_or(TimedOut);
        }
        let words: Vec<(&AtomicU32, u32)> =
            events.iter().map(|ev| (&ev.epoch, ev.register())).collect();
        // Orders the registrations before the re-check; pairs with the light barrier
        // in `notify` (see the module docs).
        let covered = shim::membarrier_heavy();
        let sleep_until = stalls.sleep_until(deadline, covered, true);
        let found = ready();
        if found.is_none() {
            let _: WaitOutcome = shim::futex_wait_any(&words, sleep_until);
        }
        for ev in events {
            ev.waiters.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(v) = found.or_else(&mut ready) {
            return Ok(v);
        }
    }
}

/// Spins on `ready` for up to `spin` (and not past `deadline`), checking the clock
/// only every 64 polls: a vDSO clock read costs more than a poll of a line that has
/// not changed. The first 64 polls come before any clock read at all, since a
/// hand-off between two spinning processes usually completes within them, and a
/// clock read (tens of nanoseconds on a VM) at the start of every wait would sit on
/// the critical path of every round trip.
fn spin_phase<T>(
    spin: Spin,
    deadline: Option<Deadline>,
    ready: &mut dyn FnMut() -> Option<T>,
) -> Option<T> {
    if spin.duration.is_zero() {
        return poll_briefly(ready);
    }
    if SLEEP_FIRST.with(|c| c.replace(false)) {
        return None;
    }
    let mut spin_until = None;
    loop {
        for _ in 0..64 {
            if let Some(v) = ready() {
                return Some(v);
            }
            std::hint::spin_loop();
        }
        let now = monotonic_now();
        let until = *spin_until.get_or_insert(now + spin.duration);
        if now >= until || deadline.is_some_and(|d| d.expired()) {
            return None;
        }
        // Give the CPU away between rounds: if the process we wait for is waiting
        // for a CPU (more spinning processes than cores), it gets ours; if not,
        // this returns at once.
        std::thread::yield_now();
        if monotonic_now() - now > CPU_SHARED_AFTER {
            if let Some(v) = ready() {
                // Another task ran on this CPU meanwhile, and then the condition
                // held: the peer probably shares our CPU. Spinning cannot help then,
                // and the scheduler keeps two always-runnable tasks together (an
                // 8-byte ping-pong ran at 6.5 µs a round trip for tens of ms); the
                // next wait sleeps at once instead, and its wake-up lets the
                // scheduler put it on an idle CPU.
                SLEEP_FIRST.with(|c| c.set(true));
                return Some(v);
            }
        }
    }
}

/// The "spin" of [`Spin::NONE`]: [`SLEEP_POLLS`] polls of `ready`, no clock, no
/// yield — a fraction of a microsecond, less than the registration's `membarrier`
/// alone costs (and that barrier interrupts every CPU running a peer). Between busy
/// peers the condition often turns true within it: 2 producers and 2 consumers of a
/// sleep-config `Queue<u64>` otherwise went to sleep every ~125 messages.
#[cfg_attr(
    shmproc_model,
    expect(
        clippy::reversed_empty_ranges,
        reason = "SLEEP_POLLS is 0 in the model build"
    )
)]
fn poll_briefly<T>(ready: &mut dyn FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..SLEEP_POLLS {
        std::hint::spin_loop();
        if let Some(v) = ready() {
            return Some(v);
        }
    }
    None
}

/// Polls of [`Spin::NONE`] before it sleeps. None in the model build: they are only
/// calls of `ready`, and there they would make shuttle's runs reach the registration
/// and sleep (what the model tests are about) less often.
const SLEEP_POLLS: u32 = if cfg!(shmproc_model) { 0 } else { 64 };

/// A `yield` that returned later than this gave the CPU to another task.
const CPU_SHARED_AFTER: Duration = Duration::from_micros(1);

thread_local! {
    /// The next wait of this thread sleeps without spinning (see `spin_phase`).
    static SLEEP_FIRST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Per eventcount this thread waited on lately (by address; the last few): how
    /// many waits in a row slept longer than their spin (see `wait_slow`).
    static LONG_WAITS: [Cell<(usize, u8)>; LONG_WAIT_ENTRIES] =
        const { [const { Cell::new((0, 0)) }; LONG_WAIT_ENTRIES] };
    /// The entry of [`LONG_WAITS`] the next new eventcount takes.
    static LONG_WAITS_NEXT: Cell<usize> = const { Cell::new(0) };
}

/// After this many waits in a row on one eventcount whose sleeps each outlasted the
/// spin, a thread's waits there only poll briefly before sleeping, until a sleep ends
/// within the spin's duration (a spin would have caught it) or a spin succeeds.
///
/// A spin that cannot succeed is not only wasted CPU. On a CPU shared with the
/// process that will wake it (on this 2-core VM a woken task landed on its waker's
/// CPU 98% of the time), the spinning consumer has used up its share by the time it
/// is woken, so it waits for the waker to leave the CPU instead of running at once:
/// in the WAKE shape (a put every 500 µs) the woken consumer preempted its producer in
/// 0 of 2000 wake-ups with the 50 µs spin, 525 with no spin and 963 for a bare futex,
/// and its p50 was 12–15 µs against 10–11 µs and 6–7 µs.
const LONG_WAITS_TO_SKIP: u8 = 3;

/// Eventcounts each thread remembers the waits of (see [`LONG_WAITS_TO_SKIP`]).
const LONG_WAIT_ENTRIES: usize = 4;

/// The run of long waits on eventcount `key`.
fn long_waits(key: usize) -> u8 {
    LONG_WAITS
        .with(|t| t.iter().map(Cell::get).find(|&(k, _)| k == key))
        .map_or(0, |(_, n)| n)
}

/// Counts a wait on eventcount `key`: `long` if it slept longer than its spin. An
/// eventcount not in the table takes the place of the one entered longest ago.
fn note_wait(key: usize, long: bool) {
    LONG_WAITS.with(|t| {
        if let Some(slot) = t.iter().find(|c| c.get().0 == key) {
            let n = slot.get().1;
            slot.set((key, if long { n.saturating_add(1) } else { 0 }));
        } else if long {
            let next = LONG_WAITS_NEXT.with(|n| n.replace((n.get() + 1) % LONG_WAIT_ENTRIES));
            t[next].set((key, 1));
        }
    });
}

/// A waiter's stall check, and whether a stall is possible now.
struct Stall<'a, T> {
    check: &'a mut dyn FnMut() -> Option<T>,
    possible: &'a mut dyn FnMut() -> bool,
}

/// When a sleeping waiter next runs its stall check: at once, then after 20 ms,
/// 40 ms, 80 ms, then every [`STALL_CHECK_MAX`].
struct StallClock {
    every: Duration,
    next: Option<Deadline>,
}

impl StallClock {
    /// Runs `on_stall` if a stall check is due, and then looks at the condition again
    /// (`ready`): the check may have changed it (a repair), and time has passed — the
    /// sleep's barrier and futex calls are worth saving.
    fn check<T>(
        &mut self,
        on_stall: &mut dyn FnMut() -> Option<T>,
        ready: &mut dyn FnMut() -> Option<T>,
    ) -> Option<T> {
        if !self.due() {
            return None;
        }
        on_stall().or_else(ready)
    }

    fn new() -> StallClock {
        StallClock {
            every: STALL_CHECK_FIRST,
            next: None,
        }
    }

    /// Whether a check is due now; if so, schedules the next one.
    fn due(&mut self) -> bool {
        if self.next.is_some_and(|c| !c.expired()) {
            return false;
        }
        self.next = Some(Deadline::after(self.every));
        self.every = (self.every * 2).min(STALL_CHECK_MAX);
        true
    }

    /// Sleep until the caller's deadline or the next check, whichever is sooner; no
    /// longer than [`UNCOVERED_SLICE`] if the heavy barrier did not cover the
    /// notifiers (`covered` false).
    /// Not past the next check only if `checked` (a stall is possible).
    fn sleep_until(
        &self,
        deadline: Option<Deadline>,
        covered: bool,
        checked: bool,
    ) -> Option<Deadline> {
        let until = match (deadline, self.next.filter(|_| checked)) {
            (Some(d), Some(c)) => Some(d.min(c)),
            (d, c) => d.or(c),
        };
        if covered {
            return until;
        }
        let slice = Deadline::after(UNCOVERED_SLICE);
        Some(until.map_or(slice, |u| u.min(slice)))
    }
}

/// Longest sleep when `membarrier` is unavailable to the waiter (see `os::membarrier`).
const UNCOVERED_SLICE: Duration = Duration::from_millis(1);

/// Longest sleep between two stall checks in [`EventCount::wait_until_checked`].
const STALL_CHECK_MAX: Duration = Duration::from_millis(100);

/// The first sleep before a stall check. Not shorter: a futex wait whose timeout is
/// the next timer due on its CPU costs the wake-up several microseconds on a VM
/// (the timer is programmed on the way to sleep and again on the way out) — 10 µs
/// instead of 5 µs p50 in `shmproc bench --only WAKE` with 1 ms here.
const STALL_CHECK_FIRST: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn ready_condition_returns_at_once() {
        let ec = EventCount::new();
        assert_eq!(ec.wait_until(None, || Some(7)), Ok(7));
    }

    #[test]
    fn timeout_is_not_early() {
        let ec = EventCount::new();
        let timeout = Duration::from_millis(30);
        let start = std::time::Instant::now();
        let r: Result<(), _> = ec.wait_until(Some(Deadline::after(timeout)), || None);
        assert_eq!(r, Err(TimedOut));
        assert!(start.elapsed() >= timeout);
        assert_eq!(ec.waiters(), 0);
    }

    #[test]
    fn a_thread_counts_long_waits_per_eventcount_for_the_last_few() {
        // Two rings' eventcounts, 128 bytes apart at the same offsets of two pages.
        let keys = [
            0x7f00_1234_5100usize,
            0x7f00_1234_5180,
            0x7f00_1234_9100,
            0x7f00_1234_9180,
        ];
        for (i, &k) in keys.iter().enumerate() {
            for _ in 0..=i {
                note_wait(k, true);
            }
        }
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(long_waits(k), i as u8 + 1, "eventcount {k:#x}");
        }
        note_wait(keys[2], false);
        assert_eq!(long_waits(keys[2]), 0);
        // A fifth takes the place of the one entered longest ago.
        note_wait(0x7f00_5555_0100, true);
        assert_eq!(long_waits(0x7f00_5555_0100), 1);
        assert_eq!(long_waits(keys[0]), 0);
        assert_eq!(long_waits(keys[3]), 4);
    }

    #[test]
    fn notify_wakes_a_sleeping_thread() {
        let ec = Arc::new(EventCount::new());
        let flag = Arc::new(AtomicBool::new(false));
        let (ec2, flag2) = (ec.clone(), flag.clone());
        let t = std::thread::spawn(move || {
            ec2.wait_until_with(Spin::NONE, None, || {
                flag2.load(Ordering::SeqCst).then_some(())
            })
        });
        while ec.waiters() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        flag.store(true, Ordering::SeqCst);
        ec.notify_all();
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(ec.waiters(), 0);
    }
}
