//! A stripe's lock and the recovery of a dead holder's intent, and the stripe's
//! slab allocator of records.

use super::entry::{class_for, is_live, make_entry, max_record, pad8, record_bytes, split, tag_of};
use super::fault::{Fault, corrupt};
use super::{Map, OP_ALLOC, OP_FREE, OP_NONE, OP_PUBLISH, STRIPES, TOMB, crash_point};
use crate::dict::WriteError;
use crate::sync::{AcquireError, LockGuard};
use std::sync::atomic::{Ordering, fence};

impl Map {
    /// Takes stripe `s`'s lock, finishing or undoing a dead holder's update first.
    pub(super) fn lock(&self, s: usize) -> Result<LockGuard<'_>, Fault> {
        let mut guard = match self.locks[s].acquire() {
            Ok(g) => g,
            Err(AcquireError::OwnerDied(g)) => g,
            Err(e) => return Err(corrupt(format!("stripe lock: {e}"))),
        };
        if !guard.is_consistent() || self.stripe(s).op.load(Ordering::Relaxed) != OP_NONE {
            self.recover(s)?;
            guard.mark_consistent();
        }
        Ok(guard)
    }

    /// Finishes a dead writer's update of stripe `s` if one is pending and the lock
    /// is free to take now; never waits for a live writer. For counts read without a
    /// lock: a writer killed between publishing an entry and counting it leaves the
    /// stripe's length one short until someone recovers the stripe.
    pub(super) fn settle(&self, s: usize) {
        if self.stripe(s).op.load(Ordering::Acquire) == OP_NONE {
            return;
        }
        // A zero timeout takes the lock over from a dead holder, and never waits.
        let mut guard = match self.locks[s].acquire_timeout(std::time::Duration::ZERO) {
            Ok(g) => g,
            Err(AcquireError::OwnerDied(g)) => g,
            Err(_) => return,
        };
        if self.stripe(s).op.load(Ordering::Relaxed) == OP_NONE || self.recover(s).is_ok() {
            guard.mark_consistent();
        }
    }

    /// Every stripe lock, in order (only resizers and the fallback scan hold more
    /// than one; a writer never waits for a lock while holding one, so no cycle).
    pub(super) fn lock_all(&self) -> Result<Vec<LockGuard<'_>>, Fault> {
        let guards = (0..STRIPES)
            .map(|s| self.lock(s))
            .collect::<Result<Vec<_>, _>>()?;
        self.recover_resize()?;
        Ok(guards)
    }

    /// Finishes or undoes the update stripe `s`'s intent describes (its lock held).
    ///
    /// | phase   | finished if                                  | roll forward                      | roll back |
    /// |---------|----------------------------------------------|-----------------------------------|-----------|
    /// | ALLOC   | never (not published)                        | —                                 | return the block (free list, or bump back) |
    /// | PUBLISH | bucket holds `new` (TOMB: no longer `old`)   | bump version, set len, free `old` | free the new block |
    /// | FREE    | `old`'s block is at its free list's head     | free `old`'s block                | — |
    pub(super) fn recover(&self, s: usize) -> Result<(), Fault> {
        let st = self.stripe(s);
        match st.op.load(Ordering::Acquire) {
            OP_ALLOC => {
                let block = st.block.load(Ordering::Relaxed);
                let class = st.class.load(Ordering::Relaxed) as u32;
                if self.check_block(s, block, class).is_ok() {
                    if st.from_free.load(Ordering::Relaxed) == 1 {
                        self.free_block(s, block, class);
                    } else {
                        let before = st.top_before.load(Ordering::Relaxed);
                        if st.top.load(Ordering::Relaxed) == before.wrapping_add(1 << class) {
                            st.top.store(before, Ordering::Relaxed);
                        }
                    }
                }
            }
            OP_PUBLISH => {
                let bucket = st.bucket.load(Ordering::Relaxed);
                let (old, new) = (
                    st.old.load(Ordering::Relaxed),
                    st.new.load(Ordering::Relaxed),
                );
                let (t, log2) = self.table(self.header().table.load(Ordering::Acquire))?;
                if bucket < t || bucket >= t + (16 << log2) || bucket % 16 != 0 {
                    st.op.store(OP_NONE, Ordering::Release);
                    return Err(corrupt(format!("intent names bucket {bucket:#x}")));
                }
                // SAFETY: a bucket of the checked table.
                let (version, entry) = unsafe { (self.word(bucket), self.word(bucket + 8)) };
                let cur = entry.load(Ordering::Acquire);
                let published = if new == TOMB { cur != old } else { cur == new };
                if published {
                    version.fetch_add(1, Ordering::Release);
                    st.len
                        .store(st.len_after.load(Ordering::Relaxed), Ordering::Relaxed);
                    self.free_entry(s, old);
                } else {
                    self.free_entry(s, new);
                }
            }
            OP_FREE => self.free_entry(s, st.old.load(Ordering::Relaxed)),
            _ => {}
        }
        st.op.store(OP_NONE, Ordering::Release);
        Ok(())
    }

    /// Frees the block a live entry of stripe `s` names (nothing for EMPTY/TOMB or a
    /// block outside the stripe's region).
    pub(super) fn free_entry(&self, s: usize, e: u64) {
        if is_live(e) {
            let (block, class, _) = split(e);
            if self.check_block(s, block, class).is_ok() {
                self.free_block(s, block, class);
            }
        }
    }

    /// Pushes a checked block on stripe `s`'s free list of its class; does nothing if
    /// it is already the head (so recovery may repeat it).
    pub(super) fn free_block(&self, s: usize, block: u64, class: u32) {
        let head = &self.stripe(s).free[class as usize % 32];
        let first = head.load(Ordering::Relaxed);
        if first == block {
            return;
        }
        // Release fence: a reader that copies the link written below sees, after its
        // Acquire fence, the version bump that unpublished the block.
        fence(Ordering::Release);
        // SAFETY: the caller checked the block (in the region, reserved).
        unsafe { self.word(block) }.store(first, Ordering::Relaxed);
        crash_point();
        head.store(block, Ordering::Release);
    }

    /// Takes a block of `class` for stripe `s` (its lock held), recording the intent
    /// ALLOC first.
    pub(super) fn alloc(&self, s: usize, class: u32) -> Result<u64, Fault> {
        let st = self.stripe(s);
        let size = 1u64 << class;
        let head = &st.free[class as usize];
        let first = head.load(Ordering::Acquire);
        if first != 0 {
            if self.check_block(s, first, class).is_ok() {
                // SAFETY: checked.
                let next = unsafe { self.word(first) }.load(Ordering::Relaxed);
                let next = if next == 0 || self.check_block(s, next, class).is_ok() {
                    next
                } else {
                    0 // a scribbled list: cut it here (leaking the rest)
                };
                st.block.store(first, Ordering::Relaxed);
                st.class.store(u64::from(class), Ordering::Relaxed);
                st.from_free.store(1, Ordering::Relaxed);
                st.op.store(OP_ALLOC, Ordering::Release);
                crash_point();
                head.store(next, Ordering::Relaxed);
                crash_point();
                return Ok(first);
            }
            head.store(0, Ordering::Relaxed); // a scribbled head: drop the list
        }
        let top = st.top.load(Ordering::Relaxed);
        let end = top
            .checked_add(size)
            .filter(|&end| end <= self.geo.region_bytes && top % 8 == 0)
            .ok_or_else(|| {
                Fault::Full(format!(
                    "stripe {s}'s region of {} bytes is full",
                    self.geo.region_bytes
                ))
            })?;
        self.grow(s, end)?;
        let block = self.region_start(s) + top;
        st.block.store(block, Ordering::Relaxed);
        st.class.store(u64::from(class), Ordering::Relaxed);
        st.from_free.store(0, Ordering::Relaxed);
        st.top_before.store(top, Ordering::Relaxed);
        st.op.store(OP_ALLOC, Ordering::Release);
        crash_point();
        st.top.store(end, Ordering::Relaxed);
        crash_point();
        Ok(block)
    }

    /// Allocates a block and writes the record `key`, `value` into it; returns the
    /// entry that names it.
    pub(super) fn write_record(
        &self,
        s: usize,
        h: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<u64, Fault> {
        let bytes = record_bytes(key.len(), value.len());
        let class = class_for(bytes)
            .filter(|&c| 1u64 << c <= self.geo.region_bytes)
            .ok_or_else(|| {
                Fault::Refused(WriteError::TooLarge {
                    bytes,
                    max: max_record(self.geo.region_bytes),
                })
            })?;
        let block = self.alloc(s, class)?;
        // Release fence: a reader that copies any of the bytes below from this
        // (possibly reused) block sees, after its Acquire fence, the version bump
        // that preceded the block's free (which happened before our lock acquire).
        fence(Ordering::Release);
        let head = key.len() as u64 | ((value.len() as u64) << 32);
        // SAFETY: the block is ours (just allocated, checked, reserved).
        unsafe { self.word(block) }.store(head, Ordering::Relaxed);
        crash_point();
        self.write_bytes(block + 8, key);
        crash_point();
        self.write_bytes(block + 8 + pad8(key.len() as u64), value);
        Ok(make_entry(block, class, tag_of(h)))
    }
}
