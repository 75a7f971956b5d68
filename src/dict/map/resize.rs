//! Growth and rebuild of the index under every stripe lock, and the recovery of a
//! dead resizer.

use super::entry::{is_live, make_entry, split, stripe_of, tag_of};
use super::fault::Fault;
use super::{EMPTY, INDEX_BASE, Map, OP_NONE, RZ_BUILD, RZ_FREE_OLD, STRIPES, crash_point};
use std::sync::atomic::{Ordering, fence};

impl Map {
    /// Undoes or finishes a dead resizer's step (every lock held).
    pub(super) fn recover_resize(&self) -> Result<(), Fault> {
        let header = self.header();
        match header.rz_op.load(Ordering::Acquire) {
            RZ_BUILD => {
                let new = header.rz_new.load(Ordering::Relaxed);
                if header.table.load(Ordering::Relaxed) == new {
                    // Published: the bump may not have happened yet.
                    header.generation.fetch_add(1, Ordering::Release);
                    self.free_table(header.rz_old.load(Ordering::Relaxed));
                } else if header.rz_from_free.load(Ordering::Relaxed) == 1 {
                    self.free_table(new);
                } else {
                    let before = header.rz_top_before.load(Ordering::Relaxed);
                    let size = 16u64 << (new & 127).min(63);
                    if header.index_top.load(Ordering::Relaxed) == before.wrapping_add(size) {
                        header.index_top.store(before, Ordering::Relaxed);
                    }
                }
            }
            RZ_FREE_OLD => self.free_table(header.rz_old.load(Ordering::Relaxed)),
            _ => {}
        }
        header.rz_op.store(OP_NONE, Ordering::Release);
        Ok(())
    }

    /// Pushes a table on the free list of its size (idempotent; ignores a bad one).
    pub(super) fn free_table(&self, desc: u64) {
        let Ok((off, log2)) = self.table(desc) else {
            return;
        };
        let head = &self.header().free_tables[log2 as usize % 32];
        let first = head.load(Ordering::Relaxed);
        if first == off {
            return;
        }
        // Release fence: as in free_block (the generation bump came first).
        fence(Ordering::Release);
        // SAFETY: the table was checked (inside the index region, reserved).
        unsafe { self.word(off) }.store(first, Ordering::Relaxed);
        crash_point();
        head.store(off, Ordering::Release);
    }

    /// Builds a new table if the one described by `seen` is still current (every lock
    /// held meanwhile).
    pub(super) fn resize(&self, seen: u64) -> Result<(), Fault> {
        let guards = self.lock_all()?;
        let header = self.header();
        let desc = header.table.load(Ordering::Acquire);
        if desc != seen {
            return Ok(()); // someone else resized meanwhile
        }
        let (old_t, old_log2) = self.table(desc)?;
        // Count what survives.
        let mut live = 0u64;
        for i in 0..1u64 << old_log2 {
            if is_live(self.bucket(old_t, old_log2, i).1.load(Ordering::Relaxed)) {
                live += 1;
            }
        }
        let mut log2 = old_log2;
        while (live + STRIPES as u64) * 2 > 1 << log2 {
            log2 += 1;
        }
        if log2 > self.geo.max_log2 {
            return Err(Fault::Full(format!(
                "the index holds its maximum of {} buckets",
                1u64 << self.geo.max_log2
            )));
        }
        let new_t = self.alloc_table(log2)?;
        let new_desc = new_t | u64::from(log2);
        // Zero it: it may have been used before (a reader still probing it as the
        // old table it was sees, after its Acquire fence, the generation bump that
        // preceded its free: paired with this Release fence).
        fence(Ordering::Release);
        for i in 0..2u64 << log2 {
            // SAFETY: inside the table just allocated (reserved by alloc_table).
            unsafe { self.word(new_t + 8 * i) }.store(0, Ordering::Relaxed);
        }
        let mut counts = [0u64; STRIPES];
        for i in 0..1u64 << old_log2 {
            let e = self.bucket(old_t, old_log2, i).1.load(Ordering::Relaxed);
            if !is_live(e) {
                continue;
            }
            let Ok((key, _)) = self.copy_record(e) else {
                continue; // a scribbled entry: dropped
            };
            let h = self.hash(&key);
            let s = stripe_of(h);
            if self.region_of(split(e).0) != Some(s) {
                continue; // not where its key's stripe keeps records: scribbled
            }
            let (block, class, _) = split(e);
            let moved = make_entry(block, class, tag_of(h));
            for probe in 0..1u64 << log2 {
                let (_, entry) = self.bucket(new_t, log2, h.wrapping_add(probe));
                if entry.load(Ordering::Relaxed) == EMPTY {
                    entry.store(moved, Ordering::Relaxed);
                    counts[s] += 1;
                    break;
                }
            }
        }
        for (s, &n) in counts.iter().enumerate() {
            self.stripe(s).len.store(n, Ordering::Relaxed);
        }
        header.used.store(counts.iter().sum(), Ordering::Relaxed);
        crash_point();
        // Release: publishes the built table; paired with the readers' Acquire loads.
        header.table.store(new_desc, Ordering::Release);
        crash_point();
        header.generation.fetch_add(1, Ordering::Release);
        crash_point();
        header.rz_op.store(RZ_FREE_OLD, Ordering::Release);
        crash_point();
        self.free_table(desc);
        crash_point();
        header.rz_op.store(OP_NONE, Ordering::Release);
        drop(guards);
        Ok(())
    }

    /// A table of 2^log2 buckets from the free list or the index bump, recording the
    /// resize intent BUILD (every lock held).
    pub(super) fn alloc_table(&self, log2: u32) -> Result<u64, Fault> {
        let header = self.header();
        let size = 16u64 << log2;
        let old = header.table.load(Ordering::Relaxed);
        header.rz_old.store(old, Ordering::Relaxed);
        let head = &header.free_tables[log2 as usize];
        let first = head.load(Ordering::Acquire);
        if first != 0 {
            if self.table(first | u64::from(log2)).is_ok() && first != old & !127 {
                // SAFETY: checked by `table`.
                let next = unsafe { self.word(first) }.load(Ordering::Relaxed);
                let next = if self.table(next | u64::from(log2)).is_ok() {
                    next
                } else {
                    0
                };
                header
                    .rz_new
                    .store(first | u64::from(log2), Ordering::Relaxed);
                header.rz_from_free.store(1, Ordering::Relaxed);
                header.rz_op.store(RZ_BUILD, Ordering::Release);
                crash_point();
                head.store(next, Ordering::Relaxed);
                crash_point();
                return Ok(first);
            }
            head.store(0, Ordering::Relaxed);
        }
        let top = header.index_top.load(Ordering::Relaxed);
        let end = top
            .checked_add(size)
            .filter(|&end| end <= self.geo.index_bytes && top % 128 == 0)
            .ok_or_else(|| Fault::Full("the index region is full".into()))?;
        self.grow(STRIPES, end)?;
        let off = INDEX_BASE as u64 + top;
        header
            .rz_new
            .store(off | u64::from(log2), Ordering::Relaxed);
        header.rz_from_free.store(0, Ordering::Relaxed);
        header.rz_top_before.store(top, Ordering::Relaxed);
        header.rz_op.store(RZ_BUILD, Ordering::Release);
        crash_point();
        header.index_top.store(end, Ordering::Relaxed);
        crash_point();
        Ok(off)
    }
}
