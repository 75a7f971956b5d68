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

#[derive(Default)]
struct State {
    /// Inside a model execution: atomics are scheduling points.
    active: bool,
    /// (model thread, atomic steps it may still take before it is killed), for
    /// each thread marked to die.
    victims: Vec<(usize, u64)>,
    /// Model threads that were killed or have finished.
    gone: Vec<usize>,
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

/// Whether the thread `tid` of process `pid` exists: inside an execution, whether
/// model thread `tid - 1` is neither killed nor finished (every model thread belongs
/// to this process).
pub(crate) fn thread_exists(pid: u32, tid: u32) -> bool {
    if active() && pid == crate::os::proc::cached_pid() {
        return tid != 0 && !gone(tid as usize - 1);
    }
    crate::os::proc::thread_exists(pid, tid)
}

/// `std`'s `AtomicU64` with a scheduling point before every operation; the same
/// layout, so shared memory can be cast to it.
#[repr(transparent)]
#[derive(Debug, Default)]
pub(crate) struct AtomicU64(atomic::AtomicU64);

const _: () = assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);

#[allow(
    dead_code,
    reason = "the subset of std's API the rings happen to use varies"
)]
impl AtomicU64 {
    pub(crate) const fn new(v: u64) -> AtomicU64 {
        AtomicU64(atomic::AtomicU64::new(v))
    }

    /// # Safety
    ///
    /// As for [`std::sync::atomic::AtomicU64::from_ptr`].
    pub(crate) unsafe fn from_ptr<'a>(ptr: *mut u64) -> &'a AtomicU64 {
        // SAFETY: the caller's contract for std's `from_ptr`; the wrapper is
        // `repr(transparent)` over std's atomic, so the cast keeps layout and validity.
        unsafe {
            &*atomic::AtomicU64::from_ptr(ptr)
                .as_ptr()
                .cast::<AtomicU64>()
        }
    }

    pub(crate) fn load(&self, order: Ordering) -> u64 {
        step();
        self.0.load(order)
    }

    pub(crate) fn store(&self, v: u64, order: Ordering) {
        step();
        self.0.store(v, order);
    }

    pub(crate) fn swap(&self, v: u64, order: Ordering) -> u64 {
        step();
        self.0.swap(v, order)
    }

    pub(crate) fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        step();
        self.0.compare_exchange(current, new, success, failure)
    }

    pub(crate) fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
        step();
        self.0.fetch_add(v, order)
    }

    pub(crate) fn fetch_sub(&self, v: u64, order: Ordering) -> u64 {
        step();
        self.0.fetch_sub(v, order)
    }
}
