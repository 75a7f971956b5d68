//! How one end of a pipe knows whether the other end is still there: the holders of
//! the peer end (closed, exited, or killed), seen cheaply on the hot paths and
//! through kept pidfds when a send's liveness check or a wait's stall check asks.

use crate::os::proc;
use crate::ring::spsc::Writer;
use std::cell::Cell;
use std::sync::atomic::Ordering;

use super::connection::Connection;
use super::error::SendTimeoutError;
use super::registry::*;
use super::shared::*;

/// When a waiting end looks whether the peer has closed: on every 64th poll while
/// spinning, and on every poll once the spin phase is over (`spun`, set by the wait's
/// stall check, which runs before any sleep). The look reads the peer's whole holder
/// registry; doing it on every poll made each hop of a ping-pong ~12 ns slower. A
/// peer that closes while we spin is seen at most 64 polls late; one that closes
/// while we sleep wakes us (`close` notifies) and is seen at once.
#[derive(Default)]
pub(super) struct PeerCheck {
    spun: Cell<bool>,
    polls: Cell<u32>,
}

impl PeerCheck {
    /// The spin phase is over (the wait's stall check runs): every poll looks now.
    pub(super) fn spin_over(&self) {
        self.spun.set(true);
    }

    /// Whether this poll should look.
    pub(super) fn due(&self) -> bool {
        let n = self.polls.get().wrapping_add(1);
        self.polls.set(n);
        self.spun.get() || n % 64 == 0
    }
}

/// Every this many sends, a send checks whether the processes holding the other end
/// are still alive: if the other end consumed anything since the last check it is
/// (one load of its read position); otherwise one `poll(2)` per holder process, on a
/// pidfd kept from check to check. So a peer killed while it kept up is seen within
/// `2 × LIVENESS_EVERY` sends, one that had stopped reading within `LIVENESS_EVERY`.
pub const LIVENESS_EVERY: u32 = 1024;

/// The peer end's holders as one look at its registry found them.
struct PeerHolders {
    /// Entries of processes holding the peer end (the first `n`).
    others: [u64; HOLDERS],
    n: usize,
    /// This process's own unused inherited copies of the peer end.
    own: u64,
}

/// What the liveness check knows of one holder of the peer end.
#[derive(Debug)]
pub(super) enum PeerProc {
    /// Found dead.
    Dead,
    /// Alive when last looked at; the pidfd says when it exits.
    Watched(proc::Pidfd),
    /// No pidfd (an old kernel): looked up in /proc each time.
    Unwatched,
}

/// Whether entry `v` is this process's copy of an end, inherited through a fork and
/// never used here (it does not keep the pipe open for this process).
pub(super) fn own_unused_copy(v: u64, me: u32) -> bool {
    v as u32 == me && v & INHERITED != 0 && v & ACTIVE == 0
}

impl Connection {
    /// Whether the peer is gone, as far as a send can tell cheaply: the first send
    /// after every holder of the other end has closed it (or exited normally: a
    /// [`Process`](crate::Process) child frees its entries on the way out) fails,
    /// seen through the peer's presence word — one load of the line the send's
    /// notify loads anyway. Holders that died without closing (SIGKILL) are found by
    /// a liveness check on every [`LIVENESS_EVERY`]th send of this handle, which
    /// makes system calls only if the reader consumed nothing since the last one.
    #[inline(always)]
    pub(super) fn check_peer(&self, tx: &Writer) -> Result<(), SendTimeoutError> {
        // Acquire; paired with the Release in `Registration::lower_presence`: the
        // entries freed before a lower count are visible to the look below.
        let presence = tx.ring().reader_presence().load(Ordering::Acquire);
        let n = self.sends.get().wrapping_add(1);
        self.sends.set(n);
        let liveness = n % LIVENESS_EVERY == 0;
        if (presence & 1 != 0 && presence <= self.gone_at.get()) || liveness {
            return self.check_peer_slow(tx, liveness);
        }
        Ok(())
    }

    /// Looks at the peer's registry (and, if `liveness`, at its processes).
    #[cold]
    #[inline(never)]
    pub(super) fn check_peer_slow(
        &self,
        tx: &Writer,
        liveness: bool,
    ) -> Result<(), SendTimeoutError> {
        let me = proc::cached_pid();
        let Some(PeerHolders { others, n, own }) = self.peer_holders(me) else {
            return Ok(());
        };
        if n == 0 {
            self.gone_at.set(1 + 2 * own);
            return Err(SendTimeoutError::BrokenPipe);
        }
        // Once the holders were found dead, every send looks again (at the cached
        // answers: no system call) until the registry changes.
        let found_dead = self.gone_at.get() == u64::MAX;
        // A reader that consumed since the last check is at work: no system call.
        // (One load of the reader's line per check; a ping-pong pays nothing else.)
        let reader_moved = liveness && {
            let read = tx.ring().read_position();
            read != self.read_at_check.replace(read)
        };
        if ((liveness && !reader_moved) || found_dead) && self.all_dead(&others[..n], me) {
            self.gone_at.set(u64::MAX);
            return Err(SendTimeoutError::BrokenPipe);
        }
        self.gone_at.set(1 + 2 * own);
        Ok(())
    }

    /// Whether every process named by `entries` has died (a pidfd poll each; the
    /// pidfds are kept for the next check).
    pub(super) fn all_dead(&self, entries: &[u64], me: u32) -> bool {
        let Ok(mut procs) = self.peer_procs.try_borrow_mut() else {
            return false;
        };
        procs.retain(|(v, _)| entries.contains(v));
        let mut all_dead = true;
        for &v in entries {
            if v as u32 == me {
                all_dead = false;
                continue;
            }
            let known = procs.iter().position(|(w, _)| *w == v);
            let i = known.unwrap_or_else(|| {
                let p = if !entry_alive(v) {
                    PeerProc::Dead
                } else {
                    match proc::Pidfd::open(v as u32) {
                        Ok(fd) => PeerProc::Watched(fd),
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => PeerProc::Dead,
                        Err(_) => PeerProc::Unwatched,
                    }
                };
                procs.push((v, p));
                procs.len() - 1
            });
            let dead = match &procs[i].1 {
                PeerProc::Dead => true,
                PeerProc::Watched(fd) => fd.exited(),
                PeerProc::Unwatched => !entry_alive(v),
            };
            if dead {
                procs[i].1 = PeerProc::Dead;
            } else {
                all_dead = false;
            }
        }
        all_dead
    }

    /// The other end's holders.
    pub(super) fn peer(&self) -> &Holders {
        self.reg.shared.holders(1 - self.reg.end)
    }

    /// Cheap: the other end was attached once and every holder has closed it.
    #[inline]
    pub(super) fn peer_gone(&self) -> bool {
        let h = self.peer();
        h.ever.load(Ordering::Acquire) != 0
            && h.entries.iter().all(|e| e.load(Ordering::Acquire) == 0)
    }

    /// The other end was attached once and every holder has closed it, died, or is
    /// this process holding an inherited copy it never used. A `poll(2)` per holder
    /// process, on the pidfds kept by [`Connection::all_dead`].
    pub(super) fn peer_dead(&self) -> bool {
        let me = proc::cached_pid();
        self.peer_holders(me)
            .is_some_and(|h| self.all_dead(&h.others[..h.n], me))
    }

    /// The peer end's registry entries, apart from this process's unused inherited
    /// copies, which are counted; `None` if the peer end was never attached.
    fn peer_holders(&self, me: u32) -> Option<PeerHolders> {
        let h = self.peer();
        if h.ever.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut found = PeerHolders {
            others: [0; HOLDERS],
            n: 0,
            own: 0,
        };
        for e in &h.entries {
            match e.load(Ordering::Acquire) {
                0 => {}
                v if own_unused_copy(v, me) => found.own += 1,
                v => {
                    found.others[found.n] = v;
                    found.n += 1;
                }
            }
        }
        Some(found)
    }
}
