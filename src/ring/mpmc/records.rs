//! Records: one per thread that uses the ring, claimed on first use and found again
//! through a per-thread cache; whether a record's owner is still alive.

use super::state::{EMPTY, FULL, READING, WRITING, decode, stamp};
use super::{RECORD_SIZE, RECORDS, Ring};
use crate::shim::{self, AtomicU64, Ordering};
use std::cell::Cell;

/// An intent word holding no position.
pub(super) const NONE: u64 = u64::MAX;

/// One thread's record (see "Records" in the module docs).
#[repr(C)]
pub(super) struct Record {
    /// `pid << 32 | tid` of the owner; 0 when free; [`BUSY`] while being claimed.
    pub(super) owner: AtomicU64,
    /// The owner process's start time in clock ticks (0: unknown).
    pub(super) start: AtomicU64,
    /// A number the owner process drew at random when it started using rings: a
    /// later process that reuses the pid (and, for a main thread, the tid) is not
    /// mistaken for it.
    pub(super) nonce: AtomicU64,
    /// Position of the claim this thread is making or holds, or [`NONE`].
    pub(super) prod_pos: AtomicU64,
    /// End of that claim (exclusive): a message's span, or a batch of messages.
    /// Stored before `prod_pos`, so a reader of `prod_pos` sees at least this range.
    pub(super) prod_end: AtomicU64,
    /// Position of the message this thread is taking or holds, or [`NONE`].
    pub(super) cons_pos: AtomicU64,
    /// End of that take (exclusive), as for `prod_end`.
    pub(super) cons_end: AtomicU64,
    /// Atomics too: a peer may write anything here.
    _pad: [AtomicU64; 9],
}

const _: () = assert!(size_of::<Record>() == RECORD_SIZE);

impl Record {
    /// Whether this record's producer intent covers position `p`.
    pub(super) fn claims(&self, p: u64) -> bool {
        let start = self.prod_pos.load(Ordering::Acquire);
        start != NONE && start <= p && p < self.prod_end.load(Ordering::Relaxed)
    }

    /// Whether this record's consumer intent covers position `p`.
    pub(super) fn takes(&self, p: u64) -> bool {
        let start = self.cons_pos.load(Ordering::Acquire);
        start != NONE && start <= p && p < self.cons_end.load(Ordering::Relaxed)
    }
}

/// The calling thread's identity as stored in a record's owner word.
#[inline]
pub(super) fn my_identity() -> u64 {
    u64::from(shim::cached_pid()) << 32 | u64::from(shim::cached_tid())
}

/// An owner word that means "being claimed": judged alive, never adopted.
const BUSY: u64 = u64::MAX;

/// This process's nonce, once drawn (see [`my_nonce`]).
static NONCE: AtomicU64 = AtomicU64::new(0);
/// The pid [`NONCE`] was drawn in; 0 (none) again in every forked child.
static NONCE_FOR_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// This process's nonce (see [`Record::nonce`]), drawn once per process: from the
/// clock and the pid, which no two processes with the same pid share.
///
/// The pid check alone is not enough: a grandchild can be given the pid of a
/// grandparent that died, and would then take the grandparent's nonce (inherited
/// through a child that never drew its own) for its own. The pid cache's atfork
/// child handler forgets the nonce in every forked child ([`forget_in_child`]);
/// only if that handler could not be registered (ENOMEM) is the pid all there is.
pub(super) fn my_nonce() -> u64 {
    let pid = shim::cached_pid();
    if NONCE_FOR_PID.load(Ordering::Acquire) == pid {
        return NONCE.load(Ordering::Relaxed);
    }
    let t = shim::monotonic_now().as_nanos() as u64;
    let nonce = (t ^ u64::from(pid).rotate_left(40)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    NONCE.store(nonce, Ordering::Relaxed);
    NONCE_FOR_PID.store(pid, Ordering::Release);
    nonce
}

/// Whether a nonce is kept (for a test: none in a freshly forked child).
#[cfg(test)]
pub(super) fn nonce_kept() -> bool {
    NONCE_FOR_PID.load(Ordering::Relaxed) != 0
}

/// The rings this thread's record cache holds (for a test).
#[cfg(test)]
pub(super) fn cached_rings() -> usize {
    RECORD_CACHE.with(|c| c.entries.iter().filter(|e| e.get().0 != 0).count())
}

/// Called by the pid cache's atfork child handler, in the forked child's one thread
/// (the thread that forked, whose thread-locals the child has): the nonce and this
/// thread's record cache belong to the parent. Async-signal-safe: atomic and
/// thread-local stores only (the cache is a `const` thread-local without a
/// destructor, so reaching it allocates and registers nothing).
pub(crate) fn forget_in_child() {
    NONCE_FOR_PID.store(0, Ordering::Relaxed);
    // `try_with`: never panics, even were the thread-local being torn down.
    let _ = RECORD_CACHE.try_with(|c| {
        c.identity.set(0);
        for e in &c.entries {
            e.set((0, 0));
        }
    });
}

/// Entries the record cache keeps: the rings a thread used last.
const CACHED_RINGS: usize = 4;

/// A thread's record cache: the identity it was filled with and the records this
/// thread owns in the rings it used last. Only a hint: every hit is checked against
/// the record's owner word.
struct RecordCache {
    /// [`my_identity`] when the entries were filled (0: never, and then every entry
    /// is unused). Kept here so that
    /// the fast path needs no second thread-local (the tid cache) and no pid check of
    /// its own: [`shim::identity_current`] tells with one load whether it is still
    /// this thread's (a forked child's thread has a new pid and tid).
    identity: Cell<u64>,
    /// (ring base, record index), most recent first; index < [`RECORDS`] (the only
    /// values stored), base 0 in an unused entry.
    entries: [Cell<(usize, u32)>; CACHED_RINGS],
}

thread_local! {
    static RECORD_CACHE: RecordCache = const {
        RecordCache {
            identity: Cell::new(0),
            entries: [const { Cell::new((0, 0)) }; CACHED_RINGS],
        }
    };
}

/// Liveness of records' owners, looked up at most once per repair. Keyed by the
/// owner (word, start time, nonce), not by the record: a record can change hands
/// during a repair, and its new owner must be judged afresh.
#[derive(Default)]
pub(super) struct Liveness(Vec<((u64, u64, u64), bool)>);

impl Liveness {
    pub(super) fn alive(&mut self, ring: &Ring, rec: usize) -> bool {
        let who = ring.record_owner(rec);
        if let Some(&(_, a)) = self.0.iter().find(|(w, _)| *w == who) {
            return a;
        }
        let a = owner_alive(who);
        self.0.push((who, a));
        a
    }
}

/// Whether the thread named by a record's (owner word, start, nonce) still exists.
/// A free record's owner does not; one being claimed ([`BUSY`]) does.
fn owner_alive((owner, start, nonce): (u64, u64, u64)) -> bool {
    if owner == 0 {
        return false;
    }
    if owner == BUSY {
        return true;
    }
    let (pid, tid) = ((owner >> 32) as u32, owner as u32);
    if pid == shim::cached_pid() && nonce == my_nonce() {
        return shim::thread_exists(pid, tid);
    }
    // Another process, or an earlier one that had this pid: its start time tells.
    shim::is_alive(pid, start) && shim::thread_exists(pid, tid)
}

impl Ring {
    /// The calling thread's record in this ring, claiming one on first use; `None`
    /// if all are held by live threads.
    #[inline(always)]
    pub(super) fn my_record(&self) -> Option<usize> {
        let base = self.base.as_ptr() as usize;
        // The ring this thread used last, filled under an identity that is still
        // ours: checked inline, the rest out of line.
        let ((b, i), id) = RECORD_CACHE.with(|c| (c.entries[0].get(), c.identity.get()));
        // `% RECORDS` is a no-op (only indices below RECORDS are stored) that lets the
        // compiler see the bound without a branch.
        let i = i as usize % RECORDS;
        if b == base
            && shim::identity_current(id)
            && self.record(i).owner.load(Ordering::Relaxed) == id
        {
            return Some(i);
        }
        self.my_record_slow()
    }

    #[inline(never)]
    fn my_record_slow(&self) -> Option<usize> {
        let id = my_identity();
        let nonce = my_nonce();
        let base = self.base.as_ptr() as usize;
        let mine = |i: usize| {
            let r = self.record(i);
            r.owner.load(Ordering::Acquire) == id && r.nonce.load(Ordering::Relaxed) == nonce
        };
        RECORD_CACHE.with(|c| {
            if c.identity.get() != id {
                // Filled by another thread identity (this thread's parent process,
                // before a fork): nothing in it is ours.
                c.identity.set(id);
                for e in &c.entries {
                    e.set((0, 0));
                }
            }
        });
        let hit = RECORD_CACHE.with(|c| c.entries.iter().map(Cell::get).find(|&(b, _)| b == base));
        let i = match hit
            .map(|(_, i)| i as usize)
            .filter(|&i| i < RECORDS && mine(i))
        {
            Some(i) => i,
            None => match (0..RECORDS).find(|&i| mine(i)) {
                Some(i) => i,
                None => self.claim_record(id, nonce)?,
            },
        };
        RECORD_CACHE.with(|c| {
            let c = &c.entries;
            // Most recent first: shift the others down over this ring's old entry
            // (or the oldest).
            let old = c
                .iter()
                .position(|e| e.get().0 == base)
                .unwrap_or(c.len() - 1);
            for k in (1..=old).rev() {
                c[k].set(c[k - 1].get());
            }
            c[0].set((base, i as u32));
        });
        Some(i)
    }

    /// Claims a free record, or one whose owner is gone and whose intents no longer
    /// matter. The owner word goes through [`BUSY`] (judged alive, never adopted)
    /// while the start time, nonce and intents are written, so nobody judges the new
    /// owner by the old one's start time.
    fn claim_record(&self, id: u64, nonce: u64) -> Option<usize> {
        let start = shim::start_ticks();
        let mut live = Liveness::default();
        for reuse in [false, true] {
            for i in 0..RECORDS {
                let r = self.record(i);
                let owner = r.owner.load(Ordering::Acquire);
                let free = if reuse {
                    owner != 0 && !live.alive(self, i) && self.record_settled(i)
                } else {
                    owner == 0
                };
                if free
                    && r.owner
                        .compare_exchange(owner, BUSY, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    r.prod_pos.store(NONE, Ordering::Relaxed);
                    r.cons_pos.store(NONE, Ordering::Relaxed);
                    r.start.store(start, Ordering::Relaxed);
                    r.nonce.store(nonce, Ordering::Relaxed);
                    // Publishes the fields above with the owner; paired with the
                    // Acquire loads of `owner` in `record_alive`.
                    r.owner.store(id, Ordering::Release);
                    return Some(i);
                }
            }
        }
        None
    }

    /// Whether record `rec` is owned by the calling process (a guard carried into a
    /// forked child must not touch its parent's record).
    #[inline]
    pub(super) fn record_is_mine(&self, rec: usize) -> bool {
        self.record(rec).owner.load(Ordering::Relaxed) >> 32 == u64::from(shim::cached_pid())
    }

    /// The owner of record `rec` as (owner word, start, nonce), read owner first.
    fn record_owner(&self, rec: usize) -> (u64, u64, u64) {
        let r = self.record(rec);
        // Paired with the Release store of the owner in `claim_record`.
        let owner = r.owner.load(Ordering::Acquire);
        (
            owner,
            r.start.load(Ordering::Relaxed),
            r.nonce.load(Ordering::Relaxed),
        )
    }

    /// Whether record `rec` no longer matters to anyone: its producer intent is not
    /// an unpublished claim, its consumer intent is not a taken, unreleased message,
    /// and no slot bears its mark.
    fn record_settled(&self, rec: usize) -> bool {
        let c = self.control();
        let r = self.record(rec);
        let head = c.head.load(Ordering::Acquire);
        let tail = c.tail.load(Ordering::Acquire);
        // Unpublished claims in the producer intent's range? (Once published — or
        // repaired — a slot's state tells the story and the intent no longer
        // matters.)
        let p = r.prod_pos.load(Ordering::Acquire);
        if p != NONE {
            let end = r.prod_end.load(Ordering::Relaxed).min(tail);
            let from = p.max(head);
            let n = end.saturating_sub(from).min(self.capacity);
            let unpublished = (0..n).any(|j| {
                let x = from + j;
                let (st, kind, _) =
                    decode(self.state(self.index(x) as usize).load(Ordering::Acquire));
                st == stamp(x) && (kind == EMPTY || kind == WRITING)
            });
            if unpublished {
                return false;
            }
        }
        // Taken but unreleased messages in the consumer intent's range?
        let q = r.cons_pos.load(Ordering::Acquire);
        if q != NONE {
            let end = r.cons_end.load(Ordering::Relaxed).min(head);
            let n = end.saturating_sub(q).min(self.capacity);
            let unreleased = (0..n).any(|j| {
                let x = q + j;
                let (st, kind, _) =
                    decode(self.state(self.index(x) as usize).load(Ordering::Acquire));
                st == stamp(x) && kind == FULL
            });
            if unreleased {
                return false;
            }
        }
        let mark = rec as u64 + 1;
        (0..self.capacity as usize).all(|idx| {
            let (_, kind, owner) = decode(self.state(idx).load(Ordering::Acquire));
            !((kind == WRITING || kind == READING) && owner == mark)
        })
    }
}
