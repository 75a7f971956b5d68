//! The model-checking side of [`shim`](super): scheduling-point atomics, model thread
//! identities, and killing a model thread at a chosen atomic step.
//!
//! All model threads of one shuttle execution run as coroutines on the OS thread that
//! called the runner, so the model's bookkeeping is a thread-local of that OS thread,
//! reset by [`begin`] at the start of every execution.

use std::cell::RefCell;
use std::panic::resume_unwind;
#[cfg(test)]
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{self, Ordering};
use std::time::Duration;

use crate::os::clock::Deadline;
use crate::os::futex::WaitOutcome;

#[derive(Default)]
struct State {
    /// Inside a model execution: atomics are scheduling points.
    active: bool,
    /// (model thread, atomic steps it may still take before it is killed), for
    /// each thread marked to die.
    victims: Vec<(usize, u64)>,
    /// Model threads that were killed or have finished.
    gone: Vec<usize>,
    /// The model's futex (see [`futex_wait`]), made for each execution.
    futex: Option<std::sync::Arc<Futex>>,
}

/// The model's stand-in for the kernel's futex: one lock of the model (the hash
/// bucket's) and a condition variable per futex word, plus one that multi-word waits
/// block on. A wait checks its words and blocks under the lock, a wake notifies under
/// it, so — as in the kernel — a wake after the word changed cannot fall between a
/// waiter's check and its sleep; and `FUTEX_WAKE(1)` wakes one waiter of that word,
/// so a protocol that relies on a single wake reaching the right waiter is checked.
struct Futex {
    /// Per word: its address, its condition variable, threads blocked on it alone.
    lock: shuttle::sync::Mutex<Vec<(usize, std::sync::Arc<shuttle::sync::Condvar>, usize)>>,
    any: shuttle::sync::Condvar,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// The payload a killed model thread unwinds with (caught by [`spawn`]).
struct Killed;

/// Whether a model execution is running on this OS thread.
pub(crate) fn active() -> bool {
    STATE.with(|s| s.borrow().active)
}

/// Starts a model execution: atomics become scheduling points; nobody is gone.
#[cfg(test)]
pub(crate) fn begin() {
    STATE.with(|s| {
        *s.borrow_mut() = State {
            active: true,
            futex: Some(std::sync::Arc::new(Futex {
                lock: shuttle::sync::Mutex::new(Vec::new()),
                any: shuttle::sync::Condvar::new(),
            })),
            ..State::default()
        }
    });
}

/// Ends a model execution.
#[cfg(test)]
pub(crate) fn end() {
    STATE.with(|s| *s.borrow_mut() = State::default());
}

/// The calling model thread's id (0 for the execution's main thread).
pub(crate) fn me() -> usize {
    usize::from(shuttle::thread::current().id())
}

/// Kills model thread `tid` just before its `steps`-th atomic operation from now
/// (counting from 1).
#[cfg(test)]
pub(crate) fn kill_at(tid: usize, steps: u64) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.victims.retain(|&(t, _)| t != tid);
        s.victims.push((tid, steps.max(1)));
    });
}

/// Whether model thread `tid` was killed or has finished.
pub(crate) fn gone(tid: usize) -> bool {
    STATE.with(|s| s.borrow().gone.contains(&tid))
}

#[cfg(test)]
fn set_gone(tid: usize) {
    STATE.with(|s| s.borrow_mut().gone.push(tid));
}

/// Spawns a model thread running `f`; joining gives `None` if it was killed.
#[cfg(test)]
pub(crate) fn spawn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> shuttle::thread::JoinHandle<Option<T>> {
    shuttle::thread::spawn(move || {
        let out = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(payload) if payload.is::<Killed>() => None,
            Err(payload) => resume_unwind(payload),
        };
        set_gone(me());
        out
    })
}

/// A scheduling point before an atomic operation; where the calling thread is the
/// victim and its steps are used up, it dies here instead: it unwinds (with a payload
/// `spawn` recognizes), so `Drop` impls on its stack still run — unlike under
/// SIGKILL. Tests keep guards in `ManuallyDrop` for that reason.
fn step() {
    let die = STATE.with(|s| {
        let mut s = s.borrow_mut();
        if !s.active {
            return None;
        }
        let me = me();
        let Some(i) = s.victims.iter().position(|&(t, _)| t == me) else {
            return Some(false);
        };
        s.victims[i].1 -= 1;
        if s.victims[i].1 > 0 {
            return Some(false);
        }
        s.victims.swap_remove(i);
        s.gone.push(me);
        Some(true)
    });
    match die {
        None => {}
        // `resume_unwind` skips the panic hook: a kill is not a failure to report.
        Some(true) => resume_unwind(Box::new(Killed)),
        // Shuttle does not model time: a zero sleep is a plain context switch.
        Some(false) => shuttle::thread::sleep(Duration::ZERO),
    }
}

/// The model's thread id for the rings' owner words: the model thread's id + 1
/// inside an execution, the OS thread id outside one.
pub(crate) fn cached_tid() -> u32 {
    if active() {
        me() as u32 + 1
    } else {
        crate::os::proc::cached_tid()
    }
}

/// Whether `identity`, remembered from an earlier `pid << 32 | tid`, is still the
/// calling thread's: the pid as in the normal build, and inside an execution the
/// model thread too, since every model thread runs on one OS thread and so shares
/// its thread-locals with the others.
pub(crate) fn identity_current(identity: u64) -> bool {
    identity >> 32 == u64::from(crate::os::proc::pid_if_cached())
        && (!active() || identity as u32 == cached_tid())
}

/// Whether the thread `tid` of process `pid` exists: inside an execution, whether
/// model thread `tid - 1` is neither killed nor finished (every model thread belongs
/// to this process).
pub(crate) fn thread_exists(pid: u32, tid: u32) -> bool {
    if active() && pid == crate::os::proc::cached_pid() {
        return tid != 0 && !gone(tid as usize - 1);
    }
    crate::os::proc::thread_exists(pid, tid)
}

/// A `std` atomic integer with a scheduling point before every operation: the same
/// layout (`repr(transparent)`), so shared memory can be cast to it. One macro for
/// both widths the rings, the eventcount and the sync objects use.
macro_rules! model_atomic {
    ($name:ident, $std:ident, $int:ty, $size:expr) => {
        #[doc = concat!("`std`'s `", stringify!($std), "` with a scheduling point before every operation.")]
        #[repr(transparent)]
        #[derive(Debug, Default)]
        pub(crate) struct $name(atomic::$std);

        const _: () = assert!(size_of::<$name>() == $size && align_of::<$name>() == $size);

        #[allow(
            dead_code,
            reason = "the subset of std's API the model's users happen to use varies"
        )]
        impl $name {
            pub(crate) const fn new(v: $int) -> $name {
                $name(atomic::$std::new(v))
            }

            /// # Safety
            ///
            #[doc = concat!("As for [`std::sync::atomic::", stringify!($std), "::from_ptr`].")]
            pub(crate) unsafe fn from_ptr<'a>(ptr: *mut $int) -> &'a $name {
                // SAFETY: the caller's contract for std's `from_ptr` (valid, aligned,
                // only accessed atomically for 'a); the wrapper is `repr(transparent)`
                // over std's atomic, so the cast keeps layout and validity.
                unsafe { &*atomic::$std::from_ptr(ptr).as_ptr().cast::<$name>() }
            }

            /// The `std` atomic underneath, for the real futex calls outside an
            /// execution.
            pub(crate) fn as_std(&self) -> &atomic::$std {
                &self.0
            }

            pub(crate) fn load(&self, order: Ordering) -> $int {
                step();
                self.0.load(order)
            }

            pub(crate) fn store(&self, v: $int, order: Ordering) {
                step();
                self.0.store(v, order);
            }

            pub(crate) fn swap(&self, v: $int, order: Ordering) -> $int {
                step();
                self.0.swap(v, order)
            }

            pub(crate) fn fetch_add(&self, v: $int, order: Ordering) -> $int {
                step();
                self.0.fetch_add(v, order)
            }

            pub(crate) fn fetch_sub(&self, v: $int, order: Ordering) -> $int {
                step();
                self.0.fetch_sub(v, order)
            }

            pub(crate) fn fetch_and(&self, v: $int, order: Ordering) -> $int {
                step();
                self.0.fetch_and(v, order)
            }

            pub(crate) fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                step();
                self.0.compare_exchange(current, new, success, failure)
            }

            pub(crate) fn compare_exchange_weak(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                step();
                self.0.compare_exchange_weak(current, new, success, failure)
            }

            /// A CAS loop, as `std`'s: a scheduling point before every load and CAS.
            pub(crate) fn fetch_update(
                &self,
                set: Ordering,
                fetch: Ordering,
                mut f: impl FnMut($int) -> Option<$int>,
            ) -> Result<$int, $int> {
                let mut prev = self.load(fetch);
                while let Some(next) = f(prev) {
                    match self.compare_exchange_weak(prev, next, set, fetch) {
                        Ok(x) => return Ok(x),
                        Err(actual) => prev = actual,
                    }
                }
                Err(prev)
            }
        }
    };
}

model_atomic!(AtomicU64, AtomicU64, u64, 8);
model_atomic!(AtomicU32, AtomicU32, u32, 4);

fn model_futex() -> Option<std::sync::Arc<Futex>> {
    STATE.with(|s| {
        let s = s.borrow();
        s.active.then(|| s.futex.clone()).flatten()
    })
}

/// The condition variable of the futex word at `addr` and the count of model threads
/// blocked on it alone and not yet woken, made on first use.
fn word_var(
    words: &mut Vec<(usize, std::sync::Arc<shuttle::sync::Condvar>, usize)>,
    addr: usize,
) -> (std::sync::Arc<shuttle::sync::Condvar>, &mut usize) {
    let i = match words.iter().position(|(a, _, _)| *a == addr) {
        Some(i) => i,
        None => {
            words.push((addr, std::sync::Arc::new(shuttle::sync::Condvar::new()), 0));
            words.len() - 1
        }
    };
    let (_, var, queued) = &mut words[i];
    (var.clone(), queued)
}

/// The model's `FUTEX_WAIT` on any of `words`: inside an execution, blocks the model
/// thread while every word holds its expected value, until a [`futex_wake`] of one of
/// them. Shuttle does not model time: a wait with a deadline returns at once (a
/// spurious wake-up; the caller re-checks its condition and its clock). A wake-up that
/// nobody sends leaves the thread blocked for good, which shuttle reports as a
/// deadlock: that is how a model test catches a lost wake-up.
pub(crate) fn futex_wait_any(
    words: &[(&AtomicU32, u32)],
    deadline: Option<Deadline>,
) -> WaitOutcome {
    let Some(futex) = model_futex() else {
        let std_words: Vec<(&atomic::AtomicU32, u32)> =
            words.iter().map(|(w, e)| (w.as_std(), *e)).collect();
        return crate::os::futex::wait_any(&std_words, deadline);
    };
    if deadline.is_some() {
        step();
        return WaitOutcome::Woken;
    }
    let mut guard = futex.lock.lock().unwrap_or_else(|e| e.into_inner());
    if words.iter().any(|(w, e)| w.0.load(Ordering::SeqCst) != *e) {
        return WaitOutcome::Woken; // EAGAIN
    }
    let _ = match words {
        [(word, _)] => {
            let (var, queued) = word_var(&mut guard, word.0.as_ptr() as usize);
            // Counted until a wake takes it off (a spurious wake-up leaves it counted:
            // later wakes then report one too many, the safe direction).
            *queued += 1;
            var.wait(guard)
        }
        _ => futex.any.wait(guard),
    };
    WaitOutcome::Woken
}

/// The model's `FUTEX_WAIT` on one word (see [`futex_wait_any`]).
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Deadline>,
) -> WaitOutcome {
    if model_futex().is_none() {
        return crate::os::futex::wait(word.as_std(), expected, deadline);
    }
    futex_wait_any(&[(word, expected)], deadline)
}

/// The model's `FUTEX_WAKE(n)`: wakes up to `n` model threads blocked on `word` alone
/// and every multi-word waiter (they re-check), under the model futex's lock; returns
/// how many of the former it woke (multi-word waiters are not counted).
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    let Some(futex) = model_futex() else {
        return crate::os::futex::wake(word.as_std(), n);
    };
    let mut guard = futex.lock.lock().unwrap_or_else(|e| e.into_inner());
    let (var, queued) = word_var(&mut guard, word.0.as_ptr() as usize);
    let woken = (*queued).min(n as usize);
    *queued -= woken;
    if n == u32::MAX {
        var.notify_all();
    } else {
        for _ in 0..woken {
            var.notify_one();
        }
    }
    futex.any.notify_all();
    woken
}

/// The notifier's half of the asymmetric barrier: shuttle's interleavings are
/// sequentially consistent, so inside an execution there is nothing to order.
pub(crate) fn membarrier_light() {
    if !active() {
        crate::os::membarrier::light();
    }
}

/// The waiter's half (see [`membarrier_light`]); always "covered" in a model.
pub(crate) fn membarrier_heavy() -> bool {
    if active() {
        return true;
    }
    crate::os::membarrier::heavy()
}

/// How many schedules each model test explores per scheduler
/// (`SHMPROC_MODEL_ITERATIONS`, default 2000).
#[cfg(test)]
pub(crate) fn iterations() -> usize {
    std::env::var("SHMPROC_MODEL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Runs `body` as a model execution under a random scheduler and under PCT (which
/// finds bugs that need a few unlikely preemptions).
#[cfg(test)]
pub(crate) fn check(body: impl Fn() + Send + Sync + 'static) {
    use shuttle::scheduler::{PctScheduler, RandomScheduler, Scheduler};
    let body = std::sync::Arc::new(body);
    let schedulers: [Box<dyn Scheduler + Send>; 2] = [
        Box::new(RandomScheduler::new(iterations())),
        Box::new(PctScheduler::new(3, iterations())),
    ];
    for scheduler in schedulers {
        let mut config = shuttle::Config::new();
        config.stack_size = 256 * 1024;
        let body = body.clone();
        shuttle::Runner::new(scheduler, config).run(move || {
            begin();
            body();
            end();
        });
    }
}
