//! The map algorithm over a `Dict` segment's payload: byte keys and byte values, an
//! open-addressed index, per-stripe robust locks, per-stripe slab allocators and
//! intent records. The typed API in `mod.rs` encodes and decodes around it.
//!
//! # Payload layout
//!
//! ```text
//! offset                      size                 what
//! 0                           512                  Header: index descriptor, generation, index allocator, resize intent
//! 1024 + 768 s                256                  stripe s's robust lock (LockState)
//! 1024 + 768 s + 256          512                  stripe s's StripeState: entry count, slab allocator, intent
//! index_base                  index_bytes          index region: tables of 16-byte buckets (sparse)
//! data_base + s region_bytes  region_bytes         stripe s's data region: key+value records (sparse)
//! ```
//!
//! The index and data regions are reserved (`fallocate`) as they are used, in
//! [`GROW_STEP`] steps: the segment's file is as large as the map can ever grow, but
//! only what is used is backed by memory (doubling from 64 KiB, in steps of at most
//! [`GROW_STEP`]). Every process touches a page of a region
//! only after the region's reserved word says it is reserved, and reserves it again
//! itself (`fallocate` is idempotent) before its first touch, so a full `/dev/shm`
//! is an error at the writer that grows the map, never a SIGBUS anywhere.
//!
//! # Buckets and entries
//!
//! A bucket is `[version: u64, entry: u64]`. The entry word:
//!
//! | entry | meaning |
//! |---|---|
//! | `0` (EMPTY) | never used in this table: a probe for a key stops here |
//! | `1` (TOMB)  | a removed entry: probes go on |
//! | other       | bits 0..40 block offset / 8, bits 40..46 size class, bits 48..64 hash tag |
//!
//! A record is written into its block before the entry that names it is published
//! (one Release store, or a CAS into an EMPTY/TOMB bucket), and never written again
//! while published: an update writes a new record elsewhere and publishes it over the
//! old entry. After every change of an entry the writer bumps the bucket's version;
//! a block is freed (and can be reused) only after that bump. A reader loads the
//! version, the entry, copies the record, and re-checks the version and the table
//! generation: unchanged means the block was not freed during the copy, so the copy
//! is whole. Readers never write to the map and never lock: only after
//! [`READ_RETRIES`] failed validations in a row (a key rewritten faster than it can
//! be copied) does a reader take the key's stripe lock, so it cannot starve — and
//! then, like any holder, it finishes a dead writer's update first. (A reader may
//! `fallocate` pages other processes reserved, before it first touches them.)
//!
//! # Writers, intents and recovery
//!
//! A key's hash picks its stripe; every change to a key happens under its stripe's
//! robust [`Lock`]. Keys of other stripes may share buckets (open addressing), so a
//! writer claims a free bucket only by CAS from EMPTY or TOMB. Each write goes
//! through the stripe's intent record (phases ALLOC → PUBLISH → FREE → NONE): the
//! block being allocated and where it came from, the bucket, the old and the new
//! entry and the entry count after. A holder that takes the lock from a dead one
//! (`OwnerDied`) reads the intent and finishes or undoes the dead writer's step (see
//! [`Map::recover`]): a published entry is rolled forward (version bumped, count
//! set, old block freed), an unpublished one rolled back (new block returned).
//!
//! # Growth of the index
//!
//! When the index is ¾ used (live entries and tombstones), a writer takes every
//! stripe lock in order and builds a new table (twice as large, or as large when
//! half of it is tombstones) in the index region, copies the live entries, publishes
//! it with one store of the descriptor and bumps the generation. Records do not move.
//! Readers that were probing the old table finish there and then retry, seeing the
//! new generation. Old tables go to a free list by size, reused by later rebuilds of
//! that size. A resizer that dies leaves a resize intent that the next resizer
//! undoes.

use super::{ReadError, WriteError};
use crate::layout::padded::CachePadded;
use crate::object::{self, SharedState};
use crate::segment::Segment;
use crate::sync::{AcquireError, Lock, LockGuard};
use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Stripes of every map (v1: fixed).
pub(crate) const STRIPES: usize = 16;
/// Bytes of the map's own header at payload offset 0 (its second half,
/// [`SPARE`] on, is free for an object built on the map: a `List`).
const HEADER_BYTES: usize = 1024;
/// Payload offset of the 512 header bytes the map does not use.
pub(crate) const SPARE: usize = 512;
/// Bytes per stripe: its lock state, then its [`StripeState`].
const STRIPE_BYTES: usize = 768;
/// Offset of the index region.
const INDEX_BASE: usize = HEADER_BYTES + STRIPES * STRIPE_BYTES;
/// Buckets of a new map's table (log2).
const MIN_LOG2: u32 = 7;
/// The largest table (log2 buckets): 2^27 buckets, about 100 M entries.
const MAX_LOG2: u32 = 27;
/// The smallest block (log2 bytes).
const MIN_CLASS: u32 = 4;
/// The largest block (log2 bytes): records up to 1 GiB.
pub(crate) const MAX_CLASS: u32 = 30;
/// Regions are reserved in steps of at most this many bytes (or what a record
/// needs), doubling from 64 KiB.
const GROW_STEP: u64 = 64 << 20;
/// Data regions are multiples of this.
pub(crate) const REGION_ALIGN: u64 = 1 << 16;
/// Validations a reader retries before it takes the stripe lock.
const READ_RETRIES: u32 = 64;
/// Rounds of (resize, retry) a writer makes before it reports the map full.
const WRITE_ROUNDS: u32 = 32;

const EMPTY: u64 = 0;
const TOMB: u64 = 1;

// Intent phases (StripeState::op; Header::rz_op).
const OP_NONE: u64 = 0;
const OP_ALLOC: u64 = 1;
const OP_PUBLISH: u64 = 2;
const OP_FREE: u64 = 3;
const RZ_BUILD: u64 = 1;
const RZ_FREE_OLD: u64 = 2;

/// The map's header (payload offset 0).
#[repr(C)]
struct Header {
    /// The current table: its payload offset (a multiple of 128) | log2 of its
    /// buckets. Changed only by a resizer holding every stripe lock (Release store,
    /// paired with the readers' Acquire load).
    table: AtomicU64,
    /// Bumped (Release) after every `table` change; readers re-check it (Acquire
    /// fence before the load) to detect that the table they read was replaced.
    generation: AtomicU64,
    /// Buckets of the current table that are not EMPTY (live or TOMB), advisory: a
    /// resize recounts it; a wrong value only makes a resize come early or late.
    used: AtomicU64,
    _pad0: [AtomicU64; 13],
    /// Bytes of the index region handed out to tables (bump), under every lock.
    index_top: AtomicU64,
    /// Bytes of the index region reserved, `index_top <= index_reserved <= index_bytes`.
    index_reserved: AtomicU64,
    /// Resize intent phase: OP_NONE, RZ_BUILD, RZ_FREE_OLD.
    rz_op: AtomicU64,
    /// The table being built (descriptor).
    rz_new: AtomicU64,
    /// Whether it came from the free list (1) or the bump (0).
    rz_from_free: AtomicU64,
    /// `index_top` before a bump.
    rz_top_before: AtomicU64,
    /// The table being replaced (descriptor).
    rz_old: AtomicU64,
    _pad1: [AtomicU64; 9],
    /// Free tables by log2 size: payload offset of the first (0: none); a free
    /// table's first word holds the next.
    free_tables: [AtomicU64; 32],
}

// SAFETY: repr(C), only atomics, any bits valid (every word is validated before use),
// zero is a valid (not yet initialized) state, no pointers, alignment 8 <= 128.
unsafe impl SharedState for Header {}

/// A stripe's state, after its lock.
#[repr(C)]
struct StripeState {
    /// Live entries of this stripe.
    len: AtomicU64,
    /// Bytes of the data region handed out (bump), `top <= reserved`.
    top: AtomicU64,
    /// Bytes of the data region reserved, `reserved <= region_bytes`.
    reserved: AtomicU64,
    /// Intent phase (OP_*).
    op: AtomicU64,
    /// ALLOC: the block taken (payload offset).
    block: AtomicU64,
    /// ALLOC: its class.
    class: AtomicU64,
    /// ALLOC: 1 if taken from the free list, 0 from the bump.
    from_free: AtomicU64,
    /// ALLOC: `top` before a bump.
    top_before: AtomicU64,
    /// PUBLISH: the bucket (payload offset).
    bucket: AtomicU64,
    /// PUBLISH/FREE: the entry replaced (EMPTY for an insert into a free bucket).
    old: AtomicU64,
    /// PUBLISH: the entry published (TOMB for a removal).
    new: AtomicU64,
    /// PUBLISH: `len` once published.
    len_after: AtomicU64,
    _pad: [AtomicU64; 4],
    /// Free blocks by class: payload offset of the first (0: none); a free block's
    /// first word holds the next.
    free: [AtomicU64; 32],
    _pad2: [AtomicU64; 16],
}

// SAFETY: as for Header.
unsafe impl SharedState for StripeState {}

const _: () = {
    assert!(size_of::<Header>() == 512);
    assert!(size_of::<Header>() <= SPARE && SPARE + 512 == HEADER_BYTES);
    assert!(size_of::<StripeState>() == 512);
    assert!(crate::sync::LOCK_STATE_SIZE == 256);
    assert!(256 + size_of::<StripeState>() == STRIPE_BYTES);
    assert!(INDEX_BASE % 128 == 0);
    assert!(STRIPES.is_power_of_two() && STRIPES <= 64);
    assert!(size_of::<CachePadded<u8>>() == 128);
};

/// The sizes of a map's regions, derived from its data region size alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes of each stripe's data region.
    pub(crate) region_bytes: u64,
    /// log2 of the largest table.
    pub(crate) max_log2: u32,
    /// Bytes of the index region.
    pub(crate) index_bytes: u64,
    /// Offset of stripe 0's data region.
    pub(crate) data_base: u64,
    /// Bytes of the payload.
    pub(crate) payload: u64,
}

impl Geometry {
    /// The geometry for data regions of `region_bytes` (a multiple of
    /// [`REGION_ALIGN`], at most 2^36); `None` if out of range.
    pub(crate) fn new(region_bytes: u64) -> Option<Geometry> {
        if region_bytes == 0 || region_bytes % REGION_ALIGN != 0 || region_bytes > 1 << 36 {
            return None;
        }
        let data = region_bytes * STRIPES as u64;
        // At most data / 16 entries (the smallest block); a table twice that holds
        // them under ¾ load.
        let max_log2 = (data / 8)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(MIN_LOG2, MAX_LOG2);
        // Two tables of each size can exist (the current one and a freed one).
        let index_bytes = 4 * (16u64 << max_log2);
        let data_base = INDEX_BASE as u64 + index_bytes;
        Some(Geometry {
            region_bytes,
            max_log2,
            index_bytes,
            data_base,
            payload: data_base + data,
        })
    }

    /// Bytes of the payload reserved at creation: header, stripes, first table.
    pub(crate) fn initial_reserve(&self) -> u64 {
        INDEX_BASE as u64 + (16u64 << MIN_LOG2)
    }
}

/// Writes the initial state of a new map into its zero-filled payload.
pub(crate) fn init(payload: &mut crate::object::Payload<'_>) {
    let first = INDEX_BASE as u64;
    let table_bytes = 16u64 << MIN_LOG2;
    // Header words 0 (table), 1 (generation), 16 (index_top), 17 (index_reserved).
    let _ = payload.write(0, &[first | u64::from(MIN_LOG2), 1]);
    let _ = payload.write(16 * 8, &[table_bytes, table_bytes]);
}

/// What went wrong inside the map, before it is told to the caller in the words of
/// the operation ([`ReadError`] or [`WriteError`]).
#[derive(Debug)]
pub(crate) enum Fault {
    /// The map's memory holds something no writer writes.
    Corrupt(String),
    /// The map cannot hold more (a region or the index is at its limit).
    Full(String),
    /// Reserving memory for growth failed.
    Reserve(std::io::Error),
    /// The caller's closure or decoder refused.
    Refused(WriteError),
}

impl From<Fault> for ReadError {
    fn from(f: Fault) -> ReadError {
        match f {
            Fault::Corrupt(why) | Fault::Full(why) => ReadError::Corrupt(why),
            Fault::Reserve(e) => ReadError::Corrupt(format!("cannot reserve map memory: {e}")),
            Fault::Refused(e) => ReadError::Corrupt(e.to_string()),
        }
    }
}

impl From<Fault> for WriteError {
    fn from(f: Fault) -> WriteError {
        match f {
            Fault::Corrupt(why) => WriteError::Corrupt(why),
            Fault::Full(why) => WriteError::Full(why),
            Fault::Reserve(e) => WriteError::OutOfMemory(e.to_string()),
            Fault::Refused(e) => e,
        }
    }
}

fn corrupt(what: impl Into<String>) -> Fault {
    Fault::Corrupt(what.into())
}

/// A 64-bit hash of a key's bytes, the same in every process and build (a map's
/// layout depends on it: never change it without bumping the layout version).
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = 0x243f_6a88_85a3_08d3 ^ (bytes.len() as u64).wrapping_mul(M);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(M).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(M).rotate_left(29);
    }
    // murmur3's fmix64
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[inline]
fn stripe_of(h: u64) -> usize {
    (h >> 60) as usize & (STRIPES - 1)
}

#[inline]
fn tag_of(h: u64) -> u64 {
    (h >> 44) & 0xffff
}

#[inline]
fn make_entry(block: u64, class: u32, tag: u64) -> u64 {
    (block >> 3) | (u64::from(class) << 40) | (tag << 48)
}

#[inline]
fn is_live(entry: u64) -> bool {
    entry > TOMB
}

/// (block offset, class, tag) of a live entry.
#[inline]
fn split(entry: u64) -> (u64, u32, u64) {
    (
        (entry & ((1 << 40) - 1)) << 3,
        ((entry >> 40) & 63) as u32,
        entry >> 48,
    )
}

#[inline]
fn pad8(n: u64) -> u64 {
    n.next_multiple_of(8)
}

/// Bytes of a record: header word, key padded to 8, value.
fn record_bytes(klen: usize, vlen: usize) -> u64 {
    8 + pad8(klen as u64) + vlen as u64
}

/// The class (log2 size) of a block for `bytes`, `None` above [`MAX_CLASS`].
fn class_for(bytes: u64) -> Option<u32> {
    let class = bytes.next_power_of_two().trailing_zeros().max(MIN_CLASS);
    (class <= MAX_CLASS && bytes <= 1 << MAX_CLASS).then_some(class)
}

/// The largest record a map of `region_bytes` regions holds.
pub(crate) fn max_record(region_bytes: u64) -> u64 {
    (1u64 << MAX_CLASS).min(1 << region_bytes.ilog2())
}

/// What a writer's decision does to a key.
pub(crate) enum Action {
    /// Leave it as it is.
    Keep,
    /// Store these value bytes.
    Put(Vec<u8>),
    /// Remove it.
    Remove,
}

/// A writer's decision: given the current value bytes (`None`: absent).
pub(crate) type Decide<'a> = dyn FnMut(Option<&[u8]>) -> Result<Action, WriteError> + 'a;

/// A point where a test may make the writer "die" (panic, leaving its intent
/// behind; its guard releases the lock, and the next holder finds the intent).
#[inline]
pub(crate) fn crash_point() {
    #[cfg(test)]
    tests::crash_point();
}

/// A key's and its value's bytes.
pub(crate) type Item = (Vec<u8>, Vec<u8>);

/// One try of a lock-free lookup.
enum Look {
    Found,
    Absent,
    Retry,
}

/// Where a key is, found under its stripe lock.
enum Place {
    /// In this bucket, with this entry.
    Present { bucket: u64, entry: u64 },
    /// Not in the table; the first free (EMPTY or TOMB) bucket of its probe sequence.
    Absent { free: Option<u64> },
}

/// A map over a `Dict` segment.
pub(crate) struct Map {
    segment: Arc<Segment>,
    /// Start of the payload: 128-aligned, `geo.payload` bytes, mapped while
    /// `segment` lives.
    base: NonNull<u8>,
    geo: Geometry,
    locks: Vec<Lock>,
    /// Bytes of each data region (then of the index region, at `STRIPES`) this
    /// process has reserved itself: pages below are safe to touch.
    local: Box<[AtomicU64]>,
}

// SAFETY: `base` points into the mapping `segment` keeps alive; the memory is only
// accessed through atomics (or volatile copies), from any thread.
unsafe impl Send for Map {}
// SAFETY: as for Send.
unsafe impl Sync for Map {}

impl Map {
    /// The map over `segment`, whose payload is `geo.payload` bytes (checked by the
    /// caller against the header).
    pub(crate) fn new(segment: Arc<Segment>, geo: Geometry) -> Result<Map, object::Mismatch> {
        if (segment.payload_len() as u64) < geo.payload {
            return Err(object::Mismatch::new(
                "payload size",
                geo.payload,
                segment.payload_len(),
            ));
        }
        let locks = (0..STRIPES)
            .map(|s| Lock::from_state(Arc::clone(&segment), HEADER_BYTES + s * STRIPE_BYTES))
            .collect::<Result<Vec<_>, _>>()?;
        let base = segment.payload();
        let local = (0..=STRIPES).map(|_| AtomicU64::new(0)).collect();
        let map = Map {
            segment,
            base,
            geo,
            locks,
            local,
        };
        // The fixed part and the first table were reserved by the creator.
        map.local[STRIPES].store(16 << MIN_LOG2, Ordering::Relaxed);
        Ok(map)
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geo
    }

    // ---- raw access -------------------------------------------------------------

    /// The atomic word at payload offset `off`.
    ///
    /// # Safety
    ///
    /// `off` must be 8-aligned, `off + 8 <= geo.payload`, and the page reserved
    /// (inside the fixed part, or below the region's `local` mark).
    #[inline]
    unsafe fn word(&self, off: u64) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= self.geo.payload);
        // SAFETY: in bounds and aligned (the caller's contract; the payload is
        // 128-aligned), only ever accessed atomically, valid for any bits.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off as usize).cast()) }
    }

    fn header(&self) -> &Header {
        // SAFETY: offset 0, 512 bytes inside the payload (>= INDEX_BASE, checked in
        // `new`), 128-aligned, a SharedState.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    fn stripe(&self, s: usize) -> &StripeState {
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
    fn read_bytes(&self, off: u64, len: usize, out: &mut Vec<u8>) {
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
    fn bytes_equal(&self, off: u64, key: &[u8]) -> bool {
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
    fn write_bytes(&self, off: u64, bytes: &[u8]) {
        for (i, c) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            // SAFETY: inside the block the caller allocated (checked, reserved).
            unsafe { self.word(off + 8 * i as u64) }
                .store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
    }

    // ---- reservations -------------------------------------------------------------

    fn region_start(&self, s: usize) -> u64 {
        self.geo.data_base + s as u64 * self.geo.region_bytes
    }

    /// Makes bytes `[0, end)` of region `r` (a stripe, or `STRIPES` for the index)
    /// safe to touch in this process: they must be below the region's reserved
    /// word; `fallocate`s what this process has not reserved itself yet.
    fn ensure(&self, r: usize, end: u64) -> Result<(), Fault> {
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
    fn grow(&self, r: usize, end: u64) -> Result<(), Fault> {
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
    fn check_block(&self, s: usize, off: u64, class: u32) -> Result<(), Fault> {
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
    fn table(&self, desc: u64) -> Result<(u64, u32), Fault> {
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
    fn bucket(&self, t: u64, log2: u32, i: u64) -> (&AtomicU64, &AtomicU64) {
        let b = t + 16 * (i & ((1 << log2) - 1));
        // SAFETY: the table was checked by `table` (inside the index region, reserved);
        // i is masked to its size.
        unsafe { (self.word(b), self.word(b + 8)) }
    }

    // ---- reading --------------------------------------------------------------------

    /// The value stored for `key` (hash `h`), appended to `out`; `false` if absent.
    pub(crate) fn get(&self, key: &[u8], h: u64, out: &mut Vec<u8>) -> Result<bool, ReadError> {
        for _ in 0..READ_RETRIES {
            out.clear();
            match self.look(key, h, out)? {
                Look::Found => return Ok(true),
                Look::Absent => return Ok(false),
                Look::Retry => std::hint::spin_loop(),
            }
        }
        self.get_locked(key, h, out)
    }

    #[cold]
    fn get_locked(&self, key: &[u8], h: u64, out: &mut Vec<u8>) -> Result<bool, ReadError> {
        let _guard = self.lock(stripe_of(h))?;
        out.clear();
        match self.look(key, h, out)? {
            Look::Found => Ok(true),
            Look::Absent => Ok(false),
            // Nothing of this key changes while we hold its stripe, nor the table.
            Look::Retry => Err(ReadError::Corrupt(
                "a bucket changed under its stripe lock".into(),
            )),
        }
    }

    /// One lock-free lookup (see the module docs).
    fn look(&self, key: &[u8], h: u64, out: &mut Vec<u8>) -> Result<Look, Fault> {
        let header = self.header();
        // Acquire: pairs with the resizer's Release bump; the table it names is built.
        let generation = header.generation.load(Ordering::Acquire);
        let desc = header.table.load(Ordering::Acquire);
        let (t, log2) = match self.table(desc) {
            Ok(t) => t,
            Err(e) => return self.unless_moved(generation, e),
        };
        let s = stripe_of(h);
        let tag = tag_of(h);
        for probe in 0..1u64 << log2 {
            let (version, entry) = self.bucket(t, log2, h.wrapping_add(probe));
            let v1 = version.load(Ordering::Acquire);
            // Acquire: pairs with the writer's Release publish; the record is written.
            let e = entry.load(Ordering::Acquire);
            if e == EMPTY {
                fence(Ordering::Acquire);
                return Ok(if header.generation.load(Ordering::Relaxed) == generation {
                    Look::Absent
                } else {
                    Look::Retry
                });
            }
            if !is_live(e) || split(e).2 != tag {
                continue;
            }
            let (block, class, _) = split(e);
            // A key of stripe s lives only in stripe s's region: anything else is
            // another stripe's key with our tag (or garbage, which is not ours either).
            if self.region_of(block) != Some(s) {
                continue;
            }
            if let Err(fault) = self.check_block(s, block, class) {
                if self.moved(version, v1, generation) {
                    return Ok(Look::Retry);
                }
                return Err(fault);
            }
            // SAFETY: the block was checked (in bounds, reserved).
            let head = unsafe { self.word(block) }.load(Ordering::Relaxed);
            let (klen, vlen) = ((head & 0xffff_ffff) as usize, (head >> 32) as usize);
            let fits = record_bytes(klen, vlen) <= 1 << class;
            if !fits || klen != key.len() || !self.bytes_equal(block + 8, key) {
                // Not our key — unless the block was freed and reused while we read
                // it: a replace of our key would change this bucket's version, and
                // moving on would report a present key absent.
                if self.moved(version, v1, generation) {
                    return Ok(Look::Retry);
                }
                if !fits {
                    return Err(corrupt(format!(
                        "record at {block:#x} longer than its block"
                    )));
                }
                continue;
            }
            self.read_bytes(block + 8 + pad8(klen as u64), vlen, out);
            return Ok(if self.moved(version, v1, generation) {
                Look::Retry
            } else {
                Look::Found
            });
        }
        // Every bucket probed, none empty (only a scribbled table is like that).
        fence(Ordering::Acquire);
        Ok(if header.generation.load(Ordering::Relaxed) == generation {
            Look::Absent
        } else {
            Look::Retry
        })
    }

    /// Whether the bucket's version or the table generation changed since they read
    /// `v1` and `generation`: the copy just made may be torn.
    #[inline]
    fn moved(&self, version: &AtomicU64, v1: u64, generation: u64) -> bool {
        // Acquire fence: if a copied byte was written by a writer that reused the
        // block, that writer's Release (fence before its writes, or the lock chain
        // behind it) makes the bump that preceded the reuse visible here.
        fence(Ordering::Acquire);
        version.load(Ordering::Relaxed) != v1
            || self.header().generation.load(Ordering::Relaxed) != generation
    }

    fn unless_moved(&self, generation: u64, fault: Fault) -> Result<Look, Fault> {
        fence(Ordering::Acquire);
        if self.header().generation.load(Ordering::Relaxed) != generation {
            Ok(Look::Retry)
        } else {
            Err(fault)
        }
    }

    /// The stripe whose region holds payload offset `off`.
    fn region_of(&self, off: u64) -> Option<usize> {
        let rel = off.checked_sub(self.geo.data_base)?;
        let s = rel / self.geo.region_bytes;
        (s < STRIPES as u64).then_some(s as usize)
    }

    /// Live entries (the sum of the stripes' counts; a snapshot).
    pub(crate) fn len(&self) -> u64 {
        (0..STRIPES)
            .map(|s| self.stripe(s).len.load(Ordering::Relaxed).min(1 << 40))
            .sum()
    }

    /// Every (key, value) pair, as bytes, each key once (see `Dict::items`).
    pub(crate) fn items(&self) -> Result<Vec<Item>, ReadError> {
        for _ in 0..16 {
            if let Some(items) = self.scan(false)? {
                return Ok(items);
            }
        }
        // Tables replaced again and again, or buckets changing under every copy: a
        // scan with every stripe locked.
        let _guards = self.lock_all()?;
        self.scan(true)?
            .ok_or_else(|| ReadError::Corrupt("a bucket changed under its stripe lock".into()))
    }

    /// One scan of the current table; `None` if it must be restarted.
    fn scan(&self, locked: bool) -> Result<Option<Vec<Item>>, Fault> {
        let header = self.header();
        let generation = header.generation.load(Ordering::Acquire);
        let (t, log2) = match self.table(header.table.load(Ordering::Acquire)) {
            Ok(t) => t,
            Err(e) => return self.unless_moved(generation, e).map(|_| None),
        };
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for i in 0..1u64 << log2 {
            let (version, entry) = self.bucket(t, log2, i);
            let mut tries = 0;
            loop {
                let v1 = version.load(Ordering::Acquire);
                let e = entry.load(Ordering::Acquire);
                if !is_live(e) {
                    break;
                }
                match self.copy_record(e) {
                    Ok((k, v)) if !self.moved(version, v1, generation) => {
                        if seen.insert(k.clone()) {
                            items.push((k, v));
                        }
                        break;
                    }
                    Err(fault) if !self.moved(version, v1, generation) => return Err(fault),
                    _ => {}
                }
                if header.generation.load(Ordering::Relaxed) != generation {
                    return Ok(None);
                }
                tries += 1;
                if tries >= READ_RETRIES || locked {
                    return Ok(None);
                }
            }
        }
        Ok(Some(items))
    }

    /// The key and value bytes of the record a live entry names (unvalidated copy:
    /// the caller re-checks the bucket version).
    fn copy_record(&self, e: u64) -> Result<(Vec<u8>, Vec<u8>), Fault> {
        let (block, class, _) = split(e);
        let s = self
            .region_of(block)
            .ok_or_else(|| corrupt(format!("entry {e:#x} outside every region")))?;
        self.check_block(s, block, class)?;
        // SAFETY: checked above.
        let head = unsafe { self.word(block) }.load(Ordering::Relaxed);
        let (klen, vlen) = ((head & 0xffff_ffff) as usize, (head >> 32) as usize);
        if record_bytes(klen, vlen) > 1 << class {
            return Err(corrupt(format!(
                "record at {block:#x} longer than its block"
            )));
        }
        let (mut k, mut v) = (Vec::new(), Vec::new());
        self.read_bytes(block + 8, klen, &mut k);
        self.read_bytes(block + 8 + pad8(klen as u64), vlen, &mut v);
        Ok((k, v))
    }

    // ---- locking and recovery ------------------------------------------------------

    /// Takes stripe `s`'s lock, finishing or undoing a dead holder's update first.
    fn lock(&self, s: usize) -> Result<LockGuard<'_>, Fault> {
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

    /// Every stripe lock, in order (only resizers and the fallback scan hold more
    /// than one; a writer never waits for a lock while holding one, so no cycle).
    fn lock_all(&self) -> Result<Vec<LockGuard<'_>>, Fault> {
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
    fn recover(&self, s: usize) -> Result<(), Fault> {
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
    fn free_entry(&self, s: usize, e: u64) {
        if is_live(e) {
            let (block, class, _) = split(e);
            if self.check_block(s, block, class).is_ok() {
                self.free_block(s, block, class);
            }
        }
    }

    /// Pushes a checked block on stripe `s`'s free list of its class; does nothing if
    /// it is already the head (so recovery may repeat it).
    fn free_block(&self, s: usize, block: u64, class: u32) {
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
    fn alloc(&self, s: usize, class: u32) -> Result<u64, Fault> {
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
    fn write_record(&self, s: usize, h: u64, key: &[u8], value: &[u8]) -> Result<u64, Fault> {
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

    // ---- writing ----------------------------------------------------------------------

    /// Where `key` is in the current table (its stripe lock held).
    fn find(&self, key: &[u8], h: u64) -> Result<(Place, u64, u32), Fault> {
        let (t, log2) = self.table(self.header().table.load(Ordering::Acquire))?;
        let s = stripe_of(h);
        let tag = tag_of(h);
        let mut free = None;
        for probe in 0..1u64 << log2 {
            let i = h.wrapping_add(probe) & ((1 << log2) - 1);
            let (_, entry) = self.bucket(t, log2, i);
            let e = entry.load(Ordering::Acquire);
            let bucket = t + 16 * i;
            if e == EMPTY {
                return Ok((
                    Place::Absent {
                        free: free.or(Some(bucket)),
                    },
                    t,
                    log2,
                ));
            }
            if e == TOMB {
                free = free.or(Some(bucket));
                continue;
            }
            let (block, class, etag) = split(e);
            if etag != tag || self.region_of(block) != Some(s) {
                continue;
            }
            self.check_block(s, block, class)?;
            // SAFETY: checked; records of our stripe do not change while we hold it.
            let head = unsafe { self.word(block) }.load(Ordering::Relaxed);
            let (klen, vlen) = ((head & 0xffff_ffff) as usize, (head >> 32) as usize);
            if record_bytes(klen, vlen) > 1 << class {
                return Err(corrupt(format!(
                    "record at {block:#x} longer than its block"
                )));
            }
            if klen == key.len() && self.bytes_equal(block + 8, key) {
                return Ok((Place::Present { bucket, entry: e }, t, log2));
            }
        }
        Ok((Place::Absent { free }, t, log2))
    }

    /// The value bytes of a live entry of our stripe (its lock held).
    fn value_of(&self, e: u64) -> Result<Vec<u8>, Fault> {
        self.copy_record(e).map(|(_, v)| v)
    }

    /// Changes `key` (hash `h`) as `decide` says, given its current value; returns
    /// the value it had. `decide` may run more than once (after a resize) and only
    /// its last answer counts.
    pub(crate) fn modify(
        &self,
        key: &[u8],
        h: u64,
        decide: &mut Decide<'_>,
    ) -> Result<Option<Vec<u8>>, WriteError> {
        let s = stripe_of(h);
        for _ in 0..WRITE_ROUNDS {
            let guard = self.lock(s)?;
            let (place, t, log2) = self.find(key, h)?;
            match place {
                Place::Present { bucket, entry } => {
                    let old = self.value_of(entry)?;
                    match decide(Some(&old))? {
                        Action::Keep => {}
                        Action::Put(value) => {
                            let new = self.write_record(s, h, key, &value)?;
                            self.publish(s, bucket, entry, new)?;
                        }
                        Action::Remove => self.publish(s, bucket, entry, TOMB)?,
                    }
                    return Ok(Some(old));
                }
                Place::Absent { free } => {
                    let used = self.header().used.load(Ordering::Relaxed);
                    let crowded = used.saturating_add(STRIPES as u64) >= (3 << log2) / 4;
                    let Some(free) = free.filter(|_| !crowded) else {
                        drop(guard);
                        self.resize(t | u64::from(log2))?;
                        continue;
                    };
                    let value = match decide(None)? {
                        Action::Put(value) => value,
                        Action::Keep | Action::Remove => return Ok(None),
                    };
                    let new = self.write_record(s, h, key, &value)?;
                    if self.insert_new(s, t, log2, free, new)? {
                        return Ok(None);
                    }
                    drop(guard);
                    self.resize(t | u64::from(log2))?;
                }
            }
        }
        Err(WriteError::Full(
            "the index did not make room after several resizes".into(),
        ))
    }

    /// Publishes `new` over the live entry `old` in `bucket` (a replace, or TOMB for
    /// a removal), then frees `old`'s block.
    fn publish(&self, s: usize, bucket: u64, old: u64, new: u64) -> Result<(), Fault> {
        let st = self.stripe(s);
        let len = st.len.load(Ordering::Relaxed);
        let len_after = if new == TOMB {
            len.saturating_sub(1)
        } else {
            len
        };
        st.bucket.store(bucket, Ordering::Relaxed);
        st.old.store(old, Ordering::Relaxed);
        st.new.store(new, Ordering::Relaxed);
        st.len_after.store(len_after, Ordering::Relaxed);
        st.op.store(OP_PUBLISH, Ordering::Release);
        crash_point();
        // SAFETY: a bucket `find` returned from the checked table, stable under our
        // lock (no resize without it).
        let (version, entry) = unsafe { (self.word(bucket), self.word(bucket + 8)) };
        // Release: publishes the record; paired with the readers' Acquire load.
        entry.store(new, Ordering::Release);
        crash_point();
        // Release: orders the bump after the publish for readers that re-check it;
        // every later free (and reuse) of the old block comes after it.
        version.fetch_add(1, Ordering::Release);
        crash_point();
        st.len.store(len_after, Ordering::Relaxed);
        crash_point();
        st.op.store(OP_FREE, Ordering::Release);
        crash_point();
        self.free_entry(s, old);
        st.op.store(OP_NONE, Ordering::Release);
        Ok(())
    }

    /// Publishes the new entry `new` into the first free bucket from `free` on (CAS
    /// from EMPTY or TOMB: other stripes claim buckets too); `false` (the block
    /// returned) if the table has no free bucket left.
    fn insert_new(&self, s: usize, t: u64, log2: u32, free: u64, new: u64) -> Result<bool, Fault> {
        let st = self.stripe(s);
        let len_after = st.len.load(Ordering::Relaxed).saturating_add(1);
        st.old.store(EMPTY, Ordering::Relaxed);
        st.new.store(new, Ordering::Relaxed);
        st.len_after.store(len_after, Ordering::Relaxed);
        st.bucket.store(free, Ordering::Relaxed);
        st.op.store(OP_PUBLISH, Ordering::Release);
        crash_point();
        let start = (free - t) / 16;
        for probe in 0..1u64 << log2 {
            let (version, entry) = self.bucket(t, log2, start + probe);
            let bucket = t + 16 * ((start + probe) & ((1 << log2) - 1));
            let cur = entry.load(Ordering::Relaxed);
            if is_live(cur) {
                continue;
            }
            st.bucket.store(bucket, Ordering::Release);
            crash_point();
            // Release: publishes the record (paired with the readers' Acquire load);
            // Acquire on failure is not needed (we only move on).
            if entry
                .compare_exchange(cur, new, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                crash_point();
                version.fetch_add(1, Ordering::Release);
                crash_point();
                st.len.store(len_after, Ordering::Relaxed);
                crash_point();
                if cur == EMPTY {
                    self.header().used.fetch_add(1, Ordering::Relaxed);
                }
                st.op.store(OP_NONE, Ordering::Release);
                return Ok(true);
            }
        }
        // No free bucket: give the block back.
        self.free_entry(s, new);
        st.op.store(OP_NONE, Ordering::Release);
        Ok(false)
    }

    /// Removes every entry, stripe by stripe (each stripe under its lock).
    pub(crate) fn clear(&self) -> Result<(), WriteError> {
        for s in 0..STRIPES {
            let _guard = self.lock(s)?;
            let (t, log2) = self.table(self.header().table.load(Ordering::Acquire))?;
            for i in 0..1u64 << log2 {
                let (_, entry) = self.bucket(t, log2, i);
                let e = entry.load(Ordering::Acquire);
                if is_live(e) && self.region_of(split(e).0) == Some(s) {
                    self.publish(s, t + 16 * i, e, TOMB)?;
                }
            }
        }
        Ok(())
    }

    // ---- resizing ------------------------------------------------------------------------

    /// Undoes or finishes a dead resizer's step (every lock held).
    fn recover_resize(&self) -> Result<(), Fault> {
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
    fn free_table(&self, desc: u64) {
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
    fn resize(&self, seen: u64) -> Result<(), Fault> {
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
            let h = hash(&key);
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
    fn alloc_table(&self, log2: u32) -> Result<u64, Fault> {
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

/// `shmproc inspect` rows of a `Dict` segment (possibly a read-only mapping): read
/// with volatile loads from the fixed part only, never trusted.
pub(crate) fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    let Some(table) = object::peek::<u64>(segment, 0) else {
        return object::unreadable(segment);
    };
    let mut entries = 0u64;
    let mut used = 0u64;
    let mut reserved = INDEX_BASE as u64;
    for s in 0..STRIPES {
        let st = HEADER_BYTES + s * STRIPE_BYTES + 256;
        entries = entries.saturating_add(object::peek::<u64>(segment, st).unwrap_or(0));
        used = used.saturating_add(object::peek::<u64>(segment, st + 8).unwrap_or(0));
        reserved = reserved.saturating_add(object::peek::<u64>(segment, st + 16).unwrap_or(0));
    }
    let index = object::peek::<u64>(segment, 16 * 8).unwrap_or(0);
    reserved = reserved.saturating_add(object::peek::<u64>(segment, 17 * 8).unwrap_or(0));
    let region = segment.info().layout.capacity;
    vec![
        ("entries", entries.to_string()),
        ("index buckets", format!("{}", 1u64 << (table & 63).min(63))),
        (
            "bytes used",
            format!(
                "{} (records {used}, index {index})",
                used.saturating_add(index)
            ),
        ),
        ("memory reserved", format!("{reserved} bytes")),
        (
            "capacity",
            format!(
                "{} bytes of records ({STRIPES} stripes of {region})",
                region.saturating_mul(STRIPES as u64)
            ),
        ),
    ]
}

#[cfg(test)]
impl Map {
    /// Checks the map's bookkeeping after recovering every stripe and any resize:
    /// every byte of every region handed out is exactly one live record or one free
    /// block (nothing leaked, nothing freed twice), every table is current or free,
    /// and each stripe's count is its live entries.
    pub(crate) fn audit(&self) -> Result<(), String> {
        let _guards = self.lock_all().map_err(|e| format!("{e:?}"))?;
        let header = self.header();
        let desc = header.table.load(Ordering::Relaxed);
        let (t, log2) = self.table(desc).map_err(|e| format!("{e:?}"))?;
        let mut blocks: Vec<Vec<(u64, u64)>> = vec![Vec::new(); STRIPES];
        let mut live = [0u64; STRIPES];
        for i in 0..1u64 << log2 {
            let e = self.bucket(t, log2, i).1.load(Ordering::Relaxed);
            if is_live(e) {
                let (block, class, _) = split(e);
                let s = self.region_of(block).ok_or("entry outside the regions")?;
                blocks[s].push((block, 1 << class));
                live[s] += 1;
            }
        }
        for s in 0..STRIPES {
            let st = self.stripe(s);
            if st.op.load(Ordering::Relaxed) != OP_NONE {
                return Err(format!("stripe {s}: intent left"));
            }
            if st.len.load(Ordering::Relaxed) != live[s] {
                return Err(format!(
                    "stripe {s}: len {} but {} live",
                    st.len.load(Ordering::Relaxed),
                    live[s]
                ));
            }
            for class in MIN_CLASS..=MAX_CLASS {
                let mut at = st.free[class as usize].load(Ordering::Relaxed);
                while at != 0 {
                    blocks[s].push((at, 1 << class));
                    self.check_block(s, at, class)
                        .map_err(|e| format!("{e:?}"))?;
                    // SAFETY: checked.
                    at = unsafe { self.word(at) }.load(Ordering::Relaxed);
                    if blocks[s].len() > 1 << 20 {
                        return Err("a free list with a cycle".into());
                    }
                }
            }
            blocks[s].sort_unstable();
            let mut end = self.region_start(s);
            for &(b, size) in &blocks[s] {
                if b != end {
                    return Err(format!(
                        "stripe {s}: block {b:#x} where {end:#x} was expected (leak or overlap)"
                    ));
                }
                end = b + size;
            }
            if end != self.region_start(s) + st.top.load(Ordering::Relaxed) {
                return Err(format!(
                    "stripe {s}: blocks end at {end:#x}, top says otherwise"
                ));
            }
        }
        let mut tables = vec![(t, 16u64 << log2)];
        for l in MIN_LOG2..=self.geo.max_log2 {
            let mut at = header.free_tables[l as usize].load(Ordering::Relaxed);
            while at != 0 {
                tables.push((at, 16 << l));
                // SAFETY: a table of the index region (checked when freed).
                at = unsafe { self.word(at) }.load(Ordering::Relaxed);
                if tables.len() > 1000 {
                    return Err("a table list with a cycle".into());
                }
            }
        }
        tables.sort_unstable();
        let mut end = INDEX_BASE as u64;
        for &(off, size) in &tables {
            if off != end {
                return Err(format!("table {off:#x} where {end:#x} was expected"));
            }
            end = off + size;
        }
        if end != INDEX_BASE as u64 + header.index_top.load(Ordering::Relaxed) {
            return Err("tables do not add up to the index top".into());
        }
        if header.rz_op.load(Ordering::Relaxed) != OP_NONE {
            return Err("resize intent left".into());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Crash points to pass before the injected crash (0: none).
        static CRASH_IN: Cell<u32> = const { Cell::new(0) };
    }

    /// Makes this thread's writer "die" (panic) at its `n`th crash point from now.
    pub(crate) fn crash_at(n: u32) {
        CRASH_IN.with(|c| c.set(n));
    }

    pub(super) fn crash_point() {
        CRASH_IN.with(|c| {
            let n = c.get();
            if n > 0 {
                c.set(n - 1);
                if n == 1 {
                    panic!("injected crash");
                }
            }
        });
    }

    #[test]
    fn entries_pack_and_classes_round_up() {
        let e = make_entry(0x1234_5678, 9, 0xabcd);
        assert_eq!(split(e), (0x1234_5678, 9, 0xabcd));
        assert!(is_live(e));
        assert_eq!(class_for(1), Some(MIN_CLASS));
        assert_eq!(class_for(17), Some(5));
        assert_eq!(class_for(1 << MAX_CLASS), Some(MAX_CLASS));
        assert_eq!(class_for((1 << MAX_CLASS) + 1), None);
        assert_eq!(record_bytes(3, 5), 8 + 8 + 5);
    }

    #[test]
    fn geometry_is_checked() {
        assert!(Geometry::new(0).is_none());
        assert!(Geometry::new(REGION_ALIGN + 1).is_none());
        let g = Geometry::new(REGION_ALIGN).unwrap();
        assert!(g.data_base > INDEX_BASE as u64);
        assert_eq!(g.payload, g.data_base + REGION_ALIGN * STRIPES as u64);
        let big = Geometry::new(2 << 30).unwrap();
        assert_eq!(big.max_log2, MAX_LOG2);
    }

    #[test]
    fn hash_spreads_stripes() {
        let mut seen = [0u32; STRIPES];
        for i in 0u64..1600 {
            seen[stripe_of(hash(&i.to_ne_bytes()))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
