//! Asymmetric memory barriers with `membarrier(2)`.
//!
//! Every wake-up in shmproc is a Dekker pattern: the notifier stores its change and
//! then loads the waiter count; the waiter stores its registration and then loads the
//! condition. Each side needs a StoreLoad barrier between its store and its load. A
//! full fence on the notifier's side costs a put or a send much more than it looks:
//! it waits until the store that published the message has left the store buffer,
//! which means waiting for the cache line the consumer is polling to come back.
//!
//! So the barrier is split unevenly. A process that registers with
//! `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` may replace the notifier's fence by a
//! compiler barrier ([`light`]); the waiter, which is about to sleep anyway, pays
//! instead with `MEMBARRIER_CMD_GLOBAL_EXPEDITED` ([`heavy`]), which makes every
//! running thread of every registered process execute a full barrier before it
//! returns (a thread that is not running passes a full barrier when it is switched
//! back in). Either the notifier's load of the waiter count comes after that barrier
//! and sees the registration, or its store came before it and the waiter's re-check
//! sees the change.
//!
//! Where `membarrier` is missing (kernels before 4.16, seccomp filters), [`light`]
//! falls back to a full fence and [`heavy`] reports that it covered nobody, and the
//! waiter then sleeps in short slices (it cannot miss a wake-up from a fenced
//! notifier, and no notifier skips its fence unless registration succeeded).

use rustix::thread::{MembarrierCommand, MembarrierQuery, membarrier, membarrier_query};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, compiler_fence, fence};

/// Registration of this process: `pid << 2 | state`. A forked child has a new
/// address space that is not registered, and sees a different pid here, so it
/// registers again.
static REGISTRATION: AtomicU64 = AtomicU64::new(0);
const REGISTERED: u64 = 1;
const UNSUPPORTED: u64 = 2;

/// Whether [`light`] may skip its fence: this process is registered
/// ([`REGISTRATION`] says so for its pid) and the pid cache's atfork handler is in
/// place, which clears this in a forked child (see [`forget_in_child`]). One load on
/// the notifier's path instead of the pid and [`REGISTRATION`].
static LIGHT: AtomicBool = AtomicBool::new(false);

/// Called by the pid cache's atfork child handler: a forked child is not
/// registered. Async-signal-safe: one atomic store.
pub(super) fn forget_in_child() {
    LIGHT.store(false, Ordering::Relaxed);
}

/// The notifier's barrier between publishing a change and loading the waiter count:
/// a compiler barrier once this process is registered, a full fence otherwise.
#[inline]
pub(crate) fn light() {
    if LIGHT.load(Ordering::Relaxed) {
        compiler_fence(Ordering::SeqCst);
    } else {
        light_slow();
    }
}

#[cold]
fn light_slow() {
    let pid = u64::from(super::proc::cached_pid());
    let state = REGISTRATION.load(Ordering::Relaxed);
    if state == pid << 2 | REGISTERED {
        // Registered (a process whose atfork handler could not be installed stays
        // here: without the handler, LIGHT would survive into a forked child).
        if super::proc::atfork_registered() {
            LIGHT.store(true, Ordering::Relaxed);
        }
        compiler_fence(Ordering::SeqCst);
        return;
    }
    if state >> 2 != pid {
        let registered =
            global_supported() && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok();
        let state = if registered { REGISTERED } else { UNSUPPORTED };
        REGISTRATION.store(pid << 2 | state, Ordering::Relaxed);
    }
    // This call still fences: registration only covers later notifies.
    fence(Ordering::SeqCst);
}

/// The waiter's barrier between registering and re-checking its condition: a full
/// barrier on every CPU running a registered process. Returns `false` if it could
/// not be issued; the caller must then not sleep for long, since a registered
/// notifier may have skipped its fence.
pub(crate) fn heavy() -> bool {
    fence(Ordering::SeqCst);
    global_supported() && membarrier(MembarrierCommand::GlobalExpedited).is_ok()
}

/// Whether the kernel offers the global expedited commands (queried once).
fn global_supported() -> bool {
    static SUPPORTED: AtomicU64 = AtomicU64::new(0);
    match SUPPORTED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let needed =
                MembarrierQuery::GLOBAL_EXPEDITED | MembarrierQuery::REGISTER_GLOBAL_EXPEDITED;
            let yes = membarrier_query().contains(needed);
            SUPPORTED.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn light_registers_and_heavy_covers_it() {
        light();
        light();
        let state = REGISTRATION.load(Ordering::Relaxed);
        assert_eq!(state >> 2, u64::from(super::super::proc::cached_pid()));
        if state & 3 == REGISTERED {
            assert!(heavy(), "registered, yet the global barrier failed");
        }
    }
}
