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

use super::WriteError;
use crate::layout::padded::CachePadded;
use crate::object::{self, SharedState};
use crate::segment::Segment;
use crate::sync::Lock;
use std::borrow::Cow;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(test)]
mod audit;
mod entry;
mod fault;
mod memory;
mod read;
mod resize;
mod stripe;
mod write;

pub(crate) use entry::max_record;

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
    /// The hash seed, drawn at creation (read once at attach: a later scribble
    /// cannot move keys under a handle).
    seed: AtomicU64,
    _pad0: [AtomicU64; 12],
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
    // Word 3: the hash seed (0 if the OS has no randomness to give: still a map).
    let mut seed = [0u8; 8];
    let _ = crate::os::random::fill(&mut seed);
    let _ = payload.write(3 * 8, &[u64::from_le_bytes(seed)]);
    let _ = payload.write(16 * 8, &[table_bytes, table_bytes]);
}

/// What a writer's decision does to a key.
pub(crate) enum Action<'a> {
    /// Leave it as it is.
    Keep,
    /// Store these value bytes (borrowed from the caller where it can: a decision
    /// may be asked for more than once, and an owned value would be cloned each time).
    Put(Cow<'a, [u8]>),
    /// Remove it.
    Remove,
}

/// A writer's decision: given the current value bytes (`None`: absent).
pub(crate) type Decide<'a> = dyn FnMut(Option<&[u8]>) -> Result<Action<'a>, WriteError> + 'a;

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
    /// The map's hash seed, as read at attach.
    seed: u64,
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
        let seed = object::peek::<u64>(&segment, 3 * 8).unwrap_or(0);
        let map = Map {
            segment,
            base,
            geo,
            locks,
            local,
            seed,
        };
        // The fixed part and the first table were reserved by the creator.
        map.local[STRIPES].store(16 << MIN_LOG2, Ordering::Relaxed);
        Ok(map)
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// The hash of a key's bytes in this map.
    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        entry::hash_seeded(self.seed, key)
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geo
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
    fn every_map_draws_its_own_seed() {
        let a = crate::Dict::<u64, u64>::new().unwrap();
        let b = crate::Dict::<u64, u64>::new().unwrap();
        assert_ne!(a.map.seed, 0);
        assert_ne!(a.map.seed, b.map.seed);
        assert_ne!(a.map.hash(b"key"), b.map.hash(b"key"));
        // Every handle of one map hashes alike: a clone and an opener find the keys.
        a.insert(7u64, 49u64).unwrap();
        assert_eq!(a.clone().get(&7).unwrap(), Some(49));
    }
}
