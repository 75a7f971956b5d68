//! Who holds a lock: the calling process (for `Lock`) or thread (for `RLock`) as one
//! 64-bit owner word, computed once and cached.
//!
//! An owner word packs an id and the low 32 bits of that id's start time (clock ticks
//! since boot, `/proc/ID/stat` field 22), so a dead owner is told apart from a new
//! process or thread that reuses its id:
//!
//! ```text
//! bits  0..31  pid (Lock) or tid (RLock); 0 = nobody
//! bit     31   INCONSISTENT: the last holder died holding the lock (see lock.rs)
//! bits 32..64  low 32 bits of the owner's start time
//! ```
//!
//! Linux pids and tids are below 2^22 (`PID_MAX_LIMIT`), so bit 31 is free for the flag.
//!
//! Computing an identity reads `/proc`; it is cached so that an uncontended acquire
//! makes no system call. A `fork` invalidates the cache through the crate's one
//! `pthread_atfork` child handler (`os::proc`'s, which calls [`forget_in_child`]) —
//! which runs for children started with [`Process`](crate::Process), `fork(3)` and
//! `std::process::Command`, but not for a raw `clone(2)` system call.

use crate::os::proc::{self, ProcessId};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Set in a lock word while the state the lock protects may be inconsistent: a holder
/// died holding it, and no later holder has marked it consistent yet.
pub(crate) const INCONSISTENT: u64 = 1 << 31;
/// The id (pid or tid) bits of an owner word.
const ID_MASK: u64 = 0x7fff_ffff;

/// Packs an owner word from an id and its start time.
fn pack(id: u32, start_ticks: u64) -> u64 {
    (u64::from(start_ticks as u32) << 32) | (u64::from(id) & ID_MASK)
}

/// The id (pid or tid) of an owner word; 0 if nobody owns it.
#[inline]
pub(crate) fn id_of(word: u64) -> u32 {
    (word & ID_MASK) as u32
}

/// Linux's `PID_MAX_LIMIT` on 64-bit: no pid or tid is above it.
const PID_MAX_LIMIT: u32 = 1 << 22;

/// Whether the owner named by `word` is still running. A word that cannot name a
/// running owner counts as dead (a peer may have scribbled on it): id 0 (nobody), an
/// id above `PID_MAX_LIMIT`, or a live id whose start time differs from the word's
/// (a reused pid, or scribbled start bits).
pub(crate) fn holder_alive(word: u64) -> bool {
    let id = id_of(word);
    id != 0 && id <= PID_MAX_LIMIT && proc::is_alive_low32(id, (word >> 32) as u32)
}

/// This process's owner word, 0 until computed (and again in a forked child).
static PROCESS: AtomicU64 = AtomicU64::new(0);
/// Forks seen by this process's atfork handler: a thread's cached word is valid only
/// for the fork generation it was computed in.
static FORKS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// (fork generation, owner word) of this thread; word 0 = not computed.
    static THREAD: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Called in the child after every `fork(3)` (from `os::proc`'s atfork handler): the
/// child is a new process (and its one thread a new thread), so every cached identity
/// is stale.
pub(crate) fn forget_in_child() {
    // Only atomic stores: async-signal-safe, as an atfork child handler must be.
    PROCESS.store(0, Ordering::Relaxed);
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Whether identities may be cached: the atfork handler that forgets them in a child
/// is registered (registering it if nobody has). Without it (ENOMEM) nothing is
/// cached: slower, never wrong. Never waits: a `std::sync::Once` here had a fork taken
/// while another thread was inside it leave the child's `Once` running for ever, and
/// the child's first lock would have waited on it.
fn cache_ok() -> bool {
    let _ = proc::cached_pid();
    proc::atfork_registered()
}

/// The calling process's owner word.
#[inline]
pub(crate) fn process_word() -> u64 {
    let w = PROCESS.load(Ordering::Relaxed);
    if w != 0 { w } else { process_word_slow() }
}

#[cold]
fn process_word_slow() -> u64 {
    let cache = cache_ok();
    let me = ProcessId::current();
    let w = pack(me.pid, me.start_ticks);
    if cache {
        PROCESS.store(w, Ordering::Relaxed);
    }
    w
}

/// The calling thread's owner word.
#[inline]
pub(crate) fn thread_word() -> u64 {
    let forks = FORKS.load(Ordering::Relaxed);
    match THREAD.try_with(Cell::get) {
        Ok((forks_then, w)) if w != 0 && forks_then == forks => w,
        _ => thread_word_slow(),
    }
}

#[cold]
fn thread_word_slow() -> u64 {
    let cache = cache_ok();
    let forks = FORKS.load(Ordering::Relaxed);
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let w = pack(tid, thread_start_ticks(tid));
    if cache {
        let _ = THREAD.try_with(|c| c.set((forks, w)));
    }
    w
}

/// The calling thread's start time (field 22 of its `/proc` stat line), 0 if unknown
/// (then liveness checks compare the tid alone).
fn thread_start_ticks(tid: u32) -> u64 {
    let text = std::fs::read("/proc/thread-self/stat")
        .or_else(|_| std::fs::read(format!("/proc/self/task/{tid}/stat")));
    text.ok().and_then(|t| start_ticks_in(&t)).unwrap_or(0)
}

/// Field 22 of a `/proc` stat line; the command name (field 2) may hold spaces and
/// parentheses, and ends at the last `)`.
fn start_ticks_in(text: &[u8]) -> Option<u64> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    // `rest` starts at field 3; field 22 is 19 further on.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_name_live_owners() {
        let p = process_word();
        assert_eq!(id_of(p), std::process::id());
        assert_eq!(p & INCONSISTENT, 0);
        assert!(holder_alive(p));
        assert!(holder_alive(p | INCONSISTENT));
        assert_eq!(process_word(), p);
        let t = thread_word();
        assert!(holder_alive(t));
        let other = std::thread::spawn(thread_word).join().unwrap();
        assert_ne!(other, t);
        // That thread has exited: its word names a dead owner (once the kernel has
        // finished tearing it down, a moment after `join` returns).
        let start = std::time::Instant::now();
        while holder_alive(other) {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!holder_alive(0));
        assert!(!holder_alive(INCONSISTENT));
    }

    #[test]
    fn a_forked_child_computes_its_own_words() {
        let (p, t) = (process_word(), thread_word());
        let mut child = crate::Process::spawn_returning(move || -> i32 {
            let (cp, ct) = (process_word(), thread_word());
            let me = std::process::id();
            i32::from(id_of(cp) != me) + 2 * i32::from(ct == t || cp == p)
        })
        .unwrap();
        assert_eq!(
            child.join().unwrap().code(),
            0,
            "the child used its parent's words"
        );
        assert_eq!((process_word(), thread_word()), (p, t));
    }

    #[test]
    fn parses_start_ticks() {
        let line = b"12 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20";
        assert_eq!(start_ticks_in(line), Some(4242));
        assert_eq!(start_ticks_in(b"garbage"), None);
    }
}
