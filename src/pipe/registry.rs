//! Who holds each end: the registry of holder processes in the segment (how EOF and
//! BrokenPipe are judged), and the fork and exit hooks that keep it true for children
//! started with [`Process`](crate::Process).

use crate::os::proc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use super::shared::*;

/// This handle's entry in its end's holder registry.
#[derive(Debug)]
pub(super) struct Registration {
    pub(super) shared: Arc<PipeShared>,
    pub(super) end: usize,
    /// (pid, entry index, the entry's value) for the process this handle is in.
    pub(super) entry: Mutex<Option<(u32, usize, u64)>>,
}

/// Every live registration of this process, so a forked child can register itself
/// as a holder of everything it inherited.
pub(super) static LIVE: Mutex<Vec<Weak<Registration>>> = Mutex::new(Vec::new());

impl Registration {
    pub(super) fn new(shared: Arc<PipeShared>, end: usize) -> Arc<Registration> {
        let reg = Arc::new(Registration {
            shared,
            end,
            entry: Mutex::new(None),
        });
        reg.register(false);
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&reg));
        }
        reg
    }

    /// Claims an entry for this process (reclaiming entries of dead processes when
    /// full). With all 15 entries held by live processes this handle goes unrecorded,
    /// and the other end could see EOF while it is still open; pipes are meant for
    /// a few processes, far fewer than that.
    pub(super) fn register(&self, active: bool) {
        let me = proc::ProcessId::current();
        let value = holder_value(me, active, false);
        if let Some(i) = self.claim_entry(value) {
            if let Ok(mut e) = self.entry.lock() {
                *e = Some((me.pid, i, value));
            }
        }
    }

    /// Claims a free (or dead) entry of this end for `value`; its index.
    ///
    /// The end's presence word counts entries: raised before an entry is claimed and
    /// lowered after one is freed, so it is never below the number of held entries
    /// (a process killed between the two steps leaves it too high, which only sends
    /// the peer's senders to the liveness check; see [`Connection::check_peer`]).
    pub(super) fn claim_entry(&self, value: u64) -> Option<usize> {
        let holders = self.shared.holders(self.end);
        holders.ever.store(1, Ordering::Release);
        self.raise_presence();
        for pass in 0..2 {
            for (i, slot) in holders.entries.iter().enumerate() {
                let cur = slot.load(Ordering::Acquire);
                let free = cur == 0 || (pass == 1 && !entry_alive(cur));
                if free
                    && slot
                        .compare_exchange(cur, value, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    if cur != 0 {
                        // The dead holder's count goes with its entry.
                        self.lower_presence();
                    }
                    return Some(i);
                }
            }
        }
        self.lower_presence();
        None
    }

    /// Counts one more entry of this end in its presence word (and marks the word as
    /// registered-once, bit 0).
    pub(super) fn raise_presence(&self) {
        if let Some(p) = self.shared.presence(self.end) {
            p.fetch_add(2, Ordering::AcqRel);
            p.fetch_or(1, Ordering::AcqRel);
        }
    }

    /// Counts one entry fewer, after it was freed. Release: the freed entry is
    /// visible to a sender whose Acquire load in `Connection::check_peer` sees the
    /// lower count.
    pub(super) fn lower_presence(&self) {
        if let Some(p) = self.shared.presence(self.end) {
            p.fetch_sub(2, Ordering::AcqRel);
        }
    }

    /// Marks this process's entry as used (so it keeps the peer's EOF away even
    /// within this process).
    pub(super) fn mark_active(&self) {
        let Ok(mut e) = self.entry.lock() else { return };
        let me = proc::cached_pid();
        match *e {
            Some((pid, i, value)) if pid == me => {
                if value & ACTIVE == 0 {
                    let slot = &self.shared.holders(self.end).entries[i];
                    if slot
                        .compare_exchange(
                            value,
                            value | ACTIVE,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok()
                    {
                        *e = Some((pid, i, value | ACTIVE));
                    }
                }
            }
            _ => {
                drop(e);
                self.register(true);
            }
        }
    }

    pub(super) fn deregister(&self) {
        let Ok(mut e) = self.entry.lock() else { return };
        self.free_entry(e.take());
    }

    /// Frees this process's entry, if `entry` is one.
    pub(super) fn free_entry(&self, entry: Option<(u32, usize, u64)>) {
        if let Some((pid, i, value)) = entry {
            if pid == proc::cached_pid() {
                let slot = &self.shared.holders(self.end).entries[i];
                if slot
                    .compare_exchange(value, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.lower_presence();
                }
            }
        }
    }

    /// Wakes everyone waiting on either ring, so they look at the holders again.
    pub(super) fn notify_rings(&self) {
        let s = &self.shared;
        s.to_a.readable().notify_all();
        s.to_a.writable().notify_all();
        if let Some(r) = &s.to_b {
            r.readable().notify_all();
            r.writable().notify_all();
        }
    }
}

/// Called by [`Process`](crate::Process) in a child that is about to exit: frees the
/// child's entry in every pipe end it holds, so the peers see EOF or a broken pipe at
/// once instead of at their next liveness check. Only `try_lock`s: a lock another
/// thread of the parent held at the fork stays held in the child, and then that
/// entry is left for the liveness checks.
pub(crate) fn before_child_exit() {
    let Ok(live) = LIVE.try_lock() else { return };
    let regs: Vec<Arc<Registration>> = live.iter().filter_map(Weak::upgrade).collect();
    drop(live);
    for reg in regs {
        let Ok(mut e) = reg.entry.try_lock() else {
            continue;
        };
        let entry = e.take();
        drop(e);
        if entry.is_some() {
            reg.free_entry(entry);
            reg.notify_rings();
        }
    }
}

/// A holder entry: `pid | (start_ticks & 2^30-1) << 32 | ACTIVE? | INHERITED?`.
pub(super) fn holder_value(who: proc::ProcessId, active: bool, inherited: bool) -> u64 {
    u64::from(who.pid)
        | ((who.start_ticks & START_BITS) << 32)
        | if active { ACTIVE } else { 0 }
        | if inherited { INHERITED } else { 0 }
}

pub(super) fn entry_alive(entry: u64) -> bool {
    let pid = entry as u32;
    let start = (entry >> 32) & START_BITS;
    proc::is_alive_masked(pid, start, START_BITS)
}

/// Entries claimed by a parent for a child it is about to fork (see
/// [`before_fork`]).
pub(crate) struct ForkClaims(Vec<(Arc<Registration>, usize, u64)>);

/// Called by [`Process`](crate::Process) just before `fork`: claims, in the parent,
/// an entry for the child in every pipe end alive in this process (the child will
/// hold copies of them all). Claiming before the fork matters: the parent may drop
/// its own copy of the child's end right after forking, and the other end must not
/// see EOF in the moment before the child runs.
pub(crate) fn before_fork() -> ForkClaims {
    let Ok(live) = LIVE.lock() else {
        return ForkClaims(Vec::new());
    };
    let regs: Vec<Arc<Registration>> = live.iter().filter_map(Weak::upgrade).collect();
    drop(live);
    let mut claims = Vec::new();
    for reg in regs {
        // The placeholder names the parent (alive, inherited, inactive) until the
        // child's pid is known.
        let placeholder = holder_value(proc::ProcessId::current(), false, true);
        if let Some(i) = reg.claim_entry(placeholder) {
            claims.push((reg.clone(), i, placeholder));
        }
    }
    ForkClaims(claims)
}

impl ForkClaims {
    /// In the parent after `fork`: hands the claimed entries to the child (or frees
    /// them if the fork failed, `child == None`).
    pub(crate) fn in_parent(self, child: Option<u32>) {
        for (reg, i, placeholder) in self.0 {
            let new = child.map_or(0, |pid| {
                holder_value(
                    proc::ProcessId {
                        pid,
                        start_ticks: 0,
                    },
                    false,
                    true,
                )
            });
            let slot = &reg.shared.holders(reg.end).entries[i];
            let swapped = slot
                .compare_exchange(placeholder, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if swapped && new == 0 {
                reg.lower_presence();
            }
        }
    }

    /// In the child after `fork`: takes the claimed entries as its own (whichever of
    /// parent and child replaces the placeholder first, the result is the same pid).
    pub(crate) fn in_child(self) {
        let me = proc::ProcessId::current();
        let value = holder_value(me, false, true);
        for (reg, i, placeholder) in self.0 {
            let slot = &reg.shared.holders(reg.end).entries[i];
            let now = match slot.compare_exchange(
                placeholder,
                value,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => value,
                Err(cur) => cur,
            };
            if let Ok(mut e) = reg.entry.lock() {
                *e = Some((me.pid, i, now));
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.deregister();
    }
}
