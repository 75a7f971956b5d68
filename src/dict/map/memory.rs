//! Raw access to the payload (words, headers, byte copies, buckets) and the
//! reservation of its regions before their first touch.

use super::fault::{Fault, corrupt};
use super::{
    GROW_STEP, HEADER_BYTES, Header, INDEX_BASE, MAX_CLASS, MIN_CLASS, MIN_LOG2, Map, REGION_ALIGN,
    STRIPE_BYTES, STRIPES, StripeState,
};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

impl Map {
    /// The atomic word at payload offset `off`.
    ///
    /// # Safety
    ///
    /// `off` must be 8-aligned, `off + 8 <= geo.payload`, and the page reserved
    /// (inside the fixed part, or below the region's `local` mark).
    #[inline]
    pub(super) unsafe fn word(&self, off: u64) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= self.geo.payload);
        // SAFETY: in bounds and aligned (the caller's contract; the payload is
        // 128-aligned), only ever accessed atomically, valid for any bits.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off as usize).cast()) }
    }

    pub(super) fn header(&self) -> &Header {
        // SAFETY: offset 0, 512 bytes inside the payload (>= INDEX_BASE, checked in
        // `new`), 128-aligned, a SharedState.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    pub(super) fn stripe(&self, s: usize) -> &StripeState {
        debug_assert!(s < STRIPES);
        let off = HEADER_BYTES + (s % STRIPES) * STRIPE_BYTES + 256;
        // SAFETY: inside the fixed part of the payload (checked in `new`), 128-aligned
        // (1024 + 768 s + 256 is a multiple of 128), a SharedState.
        unsafe {
            NonNull::new_unchecked(self.base.as_ptr().add(off))
                .cast::<StripeState>()
                .as_ref()
        }
    }

    /// Copies `len` bytes at `off` (8-aligned, checked in bounds and reserved by the
    /// caller) out with atomic loads, appending them to `out`.
    pub(super) fn read_bytes(&self, off: u64, len: usize, out: &mut Vec<u8>) {
        out.reserve(len);
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: off + i + 8 <= off + len, which the caller checked.
            let w = unsafe { self.word(off + i as u64) }.load(Ordering::Relaxed);
            out.extend_from_slice(&w.to_ne_bytes());
            i += 8;
        }
        if i < len {
            // The last word is inside the block (blocks are multiples of 8).
            // SAFETY: blocks are 8-aligned and multiples of 8 long, so the word
            // holding the tail is inside the block the caller checked.
            let w = unsafe { self.word(off + i as u64) }.load(Ordering::Relaxed);
            out.extend_from_slice(&w.to_ne_bytes()[..len - i]);
        }
    }

    /// Whether the `key.len()` bytes at `off` equal `key` (same contract as
    /// `read_bytes`).
    pub(super) fn bytes_equal(&self, off: u64, key: &[u8]) -> bool {
        let mut chunks = key.chunks(8);
        let mut at = off;
        chunks.all(|c| {
            // SAFETY: as in read_bytes.
            let w = unsafe { self.word(at) }
                .load(Ordering::Relaxed)
                .to_ne_bytes();
            at += 8;
            w[..c.len()] == *c
        })
    }

    /// Writes `bytes` at `off` (8-aligned, inside a block this writer owns) with
    /// atomic stores, zero-padding the last word.
    pub(super) fn write_bytes(&self, off: u64, bytes: &[u8]) {
        for (i, c) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            // SAFETY: inside the block the caller allocated (checked, reserved).
            unsafe { self.word(off + 8 * i as u64) }
                .store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
    }

    // ---- reservations -------------------------------------------------------------

    pub(super) fn region_start(&self, s: usize) -> u64 {
        self.geo.data_base + s as u64 * self.geo.region_bytes
    }

    /// Makes bytes `[0, end)` of region `r` (a stripe, or `STRIPES` for the index)
    /// safe to touch in this process: they must be below the region's reserved
    /// word; `fallocate`s what this process has not reserved itself yet.
    pub(super) fn ensure(&self, r: usize, end: u64) -> Result<(), Fault> {
        if end <= self.local[r].load(Ordering::Relaxed) {
            return Ok(());
        }
        let (start, shared, limit) = if r == STRIPES {
            (
                INDEX_BASE as u64,
                self.header().index_reserved.load(Ordering::Acquire),
                self.geo.index_bytes,
            )
        } else {
            (
                self.region_start(r),
                self.stripe(r).reserved.load(Ordering::Acquire),
                self.geo.region_bytes,
            )
        };
        if end > shared || shared > limit {
            return Err(corrupt(format!(
                "offset {end} of a region beyond its reserved {shared} bytes"
            )));
        }
        let have = self.local[r].load(Ordering::Relaxed).min(shared);
        self.segment
            .reserve_range(start + have, shared - have)
            .map_err(Fault::Reserve)?;
        self.local[r].fetch_max(shared, Ordering::Relaxed);
        Ok(())
    }

    /// Grows region `r`'s reservation to at least `end` bytes (a writer holding the
    /// locks that own the region).
    pub(super) fn grow(&self, r: usize, end: u64) -> Result<(), Fault> {
        let (start, word, limit) = if r == STRIPES {
            (
                INDEX_BASE as u64,
                &self.header().index_reserved,
                self.geo.index_bytes,
            )
        } else {
            (
                self.region_start(r),
                &self.stripe(r).reserved,
                self.geo.region_bytes,
            )
        };
        let shared = word.load(Ordering::Relaxed);
        if shared > limit {
            return Err(corrupt(format!(
                "a region of {limit} bytes says {shared} are reserved"
            )));
        }
        if end <= shared {
            return self.ensure(r, end);
        }
        if end > limit {
            return Err(Fault::Full(format!("a region of {limit} bytes is full")));
        }
        // Grow by what is reserved already (doubling), from 64 KiB up to steps of
        // GROW_STEP: a small map stays small, a large one makes few syscalls.
        let step = shared.clamp(REGION_ALIGN, GROW_STEP);
        let target = (shared + step)
            .max(end)
            .next_multiple_of(REGION_ALIGN)
            .min(limit);
        self.segment
            .reserve_range(start + shared, target - shared)
            .map_err(Fault::Reserve)?;
        // Publishes the reservation; paired with the Acquire load in `ensure`.
        word.store(target, Ordering::Release);
        self.ensure(r, end)
    }

    /// Checks that a block `(off, class)` lies in region `s` below its reserved
    /// bytes and makes it safe to touch.
    pub(super) fn check_block(&self, s: usize, off: u64, class: u32) -> Result<(), Fault> {
        let start = self.region_start(s);
        let ok = (MIN_CLASS..=MAX_CLASS).contains(&class)
            && off % 8 == 0
            && off >= start
            && (off - start)
                .checked_add(1 << class)
                .is_some_and(|end| end <= self.geo.region_bytes);
        if !ok {
            return Err(corrupt(format!(
                "block {off:#x} of class {class} outside stripe {s}'s region"
            )));
        }
        self.ensure(s, off - start + (1 << class))
    }

    /// (offset, log2) of a table descriptor, checked and made safe to touch.
    pub(super) fn table(&self, desc: u64) -> Result<(u64, u32), Fault> {
        let off = desc & !127;
        let log2 = (desc & 127) as u32;
        let base = INDEX_BASE as u64;
        let ok = (MIN_LOG2..=self.geo.max_log2).contains(&log2)
            && off >= base
            && (off - base)
                .checked_add(16 << log2)
                .is_some_and(|end| end <= self.geo.index_bytes);
        if !ok {
            return Err(corrupt(format!("table descriptor {desc:#x}")));
        }
        self.ensure(STRIPES, off - base + (16 << log2))?;
        Ok((off, log2))
    }

    /// The version and entry words of bucket `i` of table `t`.
    pub(super) fn bucket(&self, t: u64, log2: u32, i: u64) -> (&AtomicU64, &AtomicU64) {
        let b = t + 16 * (i & ((1 << log2) - 1));
        // SAFETY: the table was checked by `table` (inside the index region, reserved);
        // i is masked to its size.
        unsafe { (self.word(b), self.word(b + 8)) }
    }
}
