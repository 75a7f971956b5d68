//! The MPMC ring: a bounded ring of fixed-size slots over caller-provided memory, for
//! any number of producer and consumer processes, robust to any of them being killed.
//!
//! # Memory layout
//!
//! ```text
//! offset             size        what
//!      0              128        tail: next position producers claim
//!    128              128        head: next position consumers claim
//!    256              128        not_empty: eventcount consumers sleep on
//!    384              128        not_full: eventcount producers sleep on
//!    512              128        user words: 8 atomic u64 (JoinableQueue's task count …)
//!    640              128        user eventcount
//!    768        128 × 128        records: one per thread that uses the ring
//!  17152        8 × capacity     slot states
//!      …        8 × capacity     slot meta words
//!      …  slot_size × capacity   slot data, 128-aligned, contiguous
//! ```
//!
//! Positions (`head`, `tail`) count up forever as u64; slot `pos % capacity` holds
//! position `pos`. A message takes `span` consecutive slots of contiguous data (never
//! wrapping: a message that would wrap is preceded by a padding entry that fills the
//! ring's end).
//!
//! # The slot state word
//!
//! Only the *lead* slot of a message changes state; the other slots of a multi-slot
//! message stay EMPTY at their old position until the message is consumed.
//!
//! ```text
//! bits 63..24  stamp  position mod 2^40 this state refers to
//! bits 23..22  kind   0 EMPTY    free for a producer at position `stamp`
//!                     1 WRITING  claimed, marked with its owner's record
//!                     2 FULL     message at `stamp` ready for consumers
//!                     3 READING  taken, marked with its owner's record
//! bits 21..0   owner  WRITING / READING: record index + 1 of the thread holding
//!                     it; ANON (ANON_ONE: of a one-slot message) for a READING
//!                     mark made by a repairer
//!                     FULL: 0 — the meta word describes the entry;
//!                     1 ..= INLINE_MAX — a one-slot message of `owner - 1` bytes,
//!                     no meta word; SKIP_ONE — a one-slot SKIP made by a repairer
//! ```
//!
//! The meta word of a lead slot published with owner 0 holds `len` (bits 0..32),
//! `span` (bits 32..48) and flags (bit 48: SKIP, a padding entry or a message
//! abandoned by a dead producer). A one-slot message keeps its length in the state
//! word instead, so its hand-off writes and reads one 8-byte word, eight to a cache
//! line (states and meta words live in separate arrays for the same reason: with
//! both in a 16-byte entry, a hand-off moved twice the lines and the ring ran at
//! two thirds of the speed).
//!
//! # Protocol (Vyukov's bounded queue, with intents)
//!
//! Claims and takes are decided by a CAS on `tail` and `head` — lines that stay in the
//! cache of the side that moves them — while the slot words the other side polls are
//! only ever *stored* to on the fast path, so a hand-off costs no stall on a line in
//! flight. (An earlier design claimed slots with a CAS on the slot word itself, which
//! made every item wait for the peer's line twice: a quarter of the throughput.)
//!
//! Producer, span `k`: `pos = tail`; check slots `pos..pos+k` are EMPTY at their
//! positions (else the ring is full) → store its intent `pos` in its record → CAS
//! tail `pos → pos+k` → write data (and meta, unless one slot) → store lead FULL(pos)
//! (Release) → clear the intent.
//!
//! Consumer: `pos = head`; lead is FULL(pos) (Acquire) → read the span (from the
//! state word or the meta word) →
//! store its intent `pos` → CAS head `pos → pos+span` → read the data → store the
//! other slots and then the lead EMPTY(p + capacity) (Release) → clear the intent.
//!
//! A thread that claims (takes) again while still holding an earlier claim (take)
//! first marks the earlier lead WRITING (READING) with its record, so a record's one
//! intent is always enough to find what it holds (before a READING mark it stores the
//! take's span in the meta word, which is its own until it releases the entry).
//!
//! # Records
//!
//! Each thread that uses the ring owns a record: its pid and tid, its process's start
//! time and a per-process random nonce (so a later process with the same pid is not
//! mistaken for the owner), its producer intent and its consumer intent. Records are
//! claimed with a CAS on first use (through a BUSY owner word while the fields are
//! written) and found again through a per-thread cache; a record whose thread or
//! process is gone is reused once its intents no longer matter. At most [`RECORDS`]
//! threads can use one ring at a time; one more finds the ring full (or empty) until
//! a record frees up. Liveness is judged by pid, so processes that share a ring must
//! share a pid namespace (as for every shmproc object).
//!
//! # Failure model
//!
//! A process killed with SIGKILL leaves at most one unfinished claim and one
//! unfinished take per thread. [`Ring::repair`] (which blocked callers run when a wait
//! stalls) resolves those whose owner is gone:
//!
//! - a claim at `head` that was never published, whose claimants (records with that
//!   intent, or the WRITING mark) are all gone: the message is **lost**; its slots
//!   become one-slot SKIP entries, one CAS each, that consumers step over;
//! - a take (FULL behind `head` with all intents on it gone, or a READING mark of a
//!   gone owner): the message is **lost** (it had been taken but not returned); its
//!   slots are freed.
//!
//! No other message is lost, none is delivered twice, and none torn: a consumer reads
//! data only after the producer's Release store of FULL, producers write a slot only
//! after the consumer's Release store of EMPTY, and a repairer takes a slot over with
//! a CAS from the very state it judged, so a late owner and a repairer never both act.
//! Why a claimant is always found: its intent is stored before the CAS on `tail`, so a
//! repairer that has seen `tail` move past a position sees every intent on it; an
//! owner clears or replaces its intent only after its slot's state tells the story.
//!
//! # Trust
//!
//! Every word of the ring may be scribbled on by a peer. The ring keeps its own copy of
//! capacity and slot size (never re-read from shared memory), checks every meta word
//! against them before touching data (so no access is ever out of bounds), and
//! reports an inconsistent ring as [`PopError::Corrupt`] rather than looping forever.

mod batch;
mod error;
mod guard;
mod protocol;
mod records;
pub(crate) use records::forget_in_child;
mod repair;
mod single;
mod state;
#[cfg(test)]
mod tests;

pub use error::{LayoutError, PopError, PushError};
pub use guard::{ReadSlot, WriteSlot};

use crate::layout::padded::CachePadded;
use crate::shim::{AtomicU64, Ordering};
use crate::wait::EventCount;
use records::Record;
use state::{EMPTY, state};
use std::ptr::NonNull;

/// Records: how many threads can use one ring at a time.
pub const RECORDS: usize = 128;
/// Bytes per record (its own pair of cache lines).
const RECORD_SIZE: usize = 128;
/// Bytes before the records.
const RECORDS_OFFSET: usize = 768;
/// Bytes before the slot state array (the meta array follows it).
const CONTROL_OFFSET: usize = RECORDS_OFFSET + RECORDS * RECORD_SIZE;
/// Bytes of control per slot: a state word and a meta word, in two arrays.
const CONTROL_SIZE: usize = 16;

/// Largest capacity: stamps must tell apart positions in two consecutive laps.
pub const MAX_CAPACITY: u64 = 1 << 32;
/// Largest message span in slots (the meta word holds 16 bits).
const MAX_SPAN: u64 = u16::MAX as u64;

/// The fixed part of the ring, at the start of its memory.
#[repr(C)]
struct Control {
    /// Next position producers claim; moved only by a CAS that claims.
    tail: CachePadded<AtomicU64>,
    /// Next position consumers claim; moved only by a CAS that takes.
    head: CachePadded<AtomicU64>,
    not_empty: CachePadded<EventCount>,
    not_full: CachePadded<EventCount>,
    /// The embedder's words: std atomics in every build (not part of the protocol).
    user_words: CachePadded<[std::sync::atomic::AtomicU64; 8]>,
    user_event: CachePadded<EventCount>,
}

const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(Control, tail) == 0);
    assert!(offset_of!(Control, head) == 128);
    assert!(offset_of!(Control, not_empty) == 256);
    assert!(offset_of!(Control, not_full) == 384);
    assert!(offset_of!(Control, user_words) == 512);
    assert!(offset_of!(Control, user_event) == 640);
    assert!(size_of::<Control>() == RECORDS_OFFSET);
    assert!(CONTROL_OFFSET % 128 == 0);
};

/// A handle to an MPMC ring in memory the caller provides (see the module docs).
///
/// The handle holds the ring's capacity and slot size itself; memory shared with
/// other processes is touched only through atomics and through the data bytes of
/// slots this handle owns by the protocol.
#[derive(Debug, Clone, Copy)]
pub struct Ring {
    base: NonNull<u8>,
    /// The start of the slots' data (`base` + the control area, rounded up to 128),
    /// kept so that finding a slot is one multiply-add.
    data: NonNull<u8>,
    capacity: u64,
    slot_size: usize,
    /// `floor(2^64 / capacity)` for indexing without a division (0 when the
    /// capacity is a power of two, which indexes with a mask).
    reciprocal: u64,
}

// SAFETY: the ring is designed for concurrent use from many processes; a handle is a
// pointer and two numbers, and every shared access it makes is atomic or covered by
// slot ownership.
unsafe impl Send for Ring {}
// SAFETY: as for Send.
unsafe impl Sync for Ring {}

impl Ring {
    /// Bytes of memory a ring of `capacity` slots of `slot_size` bytes needs, or
    /// `None` if the parameters are invalid or the size overflows.
    pub fn bytes_for(capacity: u64, slot_size: u64) -> Option<usize> {
        if capacity == 0 || capacity > MAX_CAPACITY || slot_size == 0 || slot_size % 8 != 0 {
            return None;
        }
        let control = usize::try_from(capacity).ok()?.checked_mul(CONTROL_SIZE)?;
        let data_offset = (CONTROL_OFFSET.checked_add(control)?).checked_next_multiple_of(128)?;
        let data = usize::try_from(capacity)
            .ok()?
            .checked_mul(usize::try_from(slot_size).ok()?)?;
        data_offset.checked_add(data)
    }

    fn check(
        ptr: NonNull<u8>,
        len: usize,
        capacity: u64,
        slot_size: u64,
    ) -> Result<(), LayoutError> {
        let needed =
            Ring::bytes_for(capacity, slot_size).ok_or(LayoutError::InvalidParameters {
                capacity,
                slot_size,
            })?;
        if len < needed {
            return Err(LayoutError::TooSmall { needed, given: len });
        }
        if ptr.as_ptr() as usize % 128 != 0 {
            return Err(LayoutError::Misaligned);
        }
        Ok(())
    }

    /// Initializes a ring in zero-filled memory and returns a handle to it.
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if the parameters are invalid or the memory too small or
    /// misaligned.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes for as long as any
    /// handle to the ring is used, zero-filled, and not yet visible to any other user;
    /// afterwards every user (in every process) must access it only through `Ring`
    /// handles with the same capacity and slot size.
    pub unsafe fn init(
        ptr: NonNull<u8>,
        len: usize,
        capacity: u64,
        slot_size: u64,
    ) -> Result<Ring, LayoutError> {
        Ring::check(ptr, len, capacity, slot_size)?;
        let ring = Ring::handle(ptr, capacity, slot_size);
        for i in 0..capacity {
            ring.state(i as usize)
                .store(state(i, EMPTY, 0), Ordering::Relaxed);
        }
        Ok(ring)
    }

    /// A handle to a ring that [`init`](Ring::init) set up, possibly in another
    /// process.
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if the parameters are invalid or the memory too small or
    /// misaligned.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes for as long as the
    /// handle is used, and be a ring initialized with the same capacity and slot size,
    /// accessed by everyone only through `Ring` handles. (Its *contents* need not be
    /// trusted: a scribbled ring gives errors or wrong data, never out-of-bounds
    /// access.)
    pub unsafe fn attach(
        ptr: NonNull<u8>,
        len: usize,
        capacity: u64,
        slot_size: u64,
    ) -> Result<Ring, LayoutError> {
        Ring::check(ptr, len, capacity, slot_size)?;
        Ok(Ring::handle(ptr, capacity, slot_size))
    }

    /// A handle over checked memory.
    fn handle(base: NonNull<u8>, capacity: u64, slot_size: u64) -> Ring {
        let offset = (CONTROL_OFFSET + capacity as usize * CONTROL_SIZE).next_multiple_of(128);
        Ring {
            base,
            // SAFETY: the memory was checked to hold bytes_for(capacity, slot_size),
            // which is offset + capacity * slot_size (see `bytes_for`).
            data: unsafe { base.add(offset) },
            capacity,
            slot_size: slot_size as usize,
            reciprocal: if capacity.is_power_of_two() {
                0
            } else {
                // capacity >= 3 here, so the quotient fits.
                (u128::from(u64::MAX) + 1).div_euclid(u128::from(capacity)) as u64
            },
        }
    }

    /// The slot index of position `pos` (`pos % capacity`), without a division: a
    /// division costs tens of cycles, and every operation needs several indices.
    #[inline]
    fn index(&self, pos: u64) -> u64 {
        if self.reciprocal == 0 {
            return pos & (self.capacity - 1);
        }
        // Barrett reduction: q is floor(pos / capacity) or one less.
        let q = ((u128::from(pos) * u128::from(self.reciprocal)) >> 64) as u64;
        let r = pos - q * self.capacity;
        if r >= self.capacity {
            r - self.capacity
        } else {
            r
        }
    }

    #[inline]
    fn control(&self) -> &Control {
        // SAFETY: the memory holds at least CONTROL_OFFSET bytes, 128-aligned (checked
        // at init/attach), and Control consists only of atomics.
        unsafe { &*self.base.as_ptr().cast::<Control>() }
    }

    #[inline]
    fn record(&self, i: usize) -> &Record {
        debug_assert!(i < RECORDS);
        // SAFETY: i < RECORDS, so the record lies between RECORDS_OFFSET and
        // CONTROL_OFFSET, inside the memory bytes_for counted; 128-aligned; a Record
        // is atomics only (its padding too), valid for any bits.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(RECORDS_OFFSET + i * RECORD_SIZE)
                .cast::<Record>()
        }
    }

    /// Word `word` (0: state, 1: meta) of slot `idx`: entry `idx` of the state
    /// array or of the meta array after it.
    #[inline]
    fn control_word(&self, idx: usize, word: usize) -> &AtomicU64 {
        debug_assert!((idx as u64) < self.capacity && word < CONTROL_SIZE / 8);
        // SAFETY: idx < capacity and word < 2, so the word lies inside the two
        // arrays (capacity × 16 bytes) that bytes_for counted; 8-aligned; only
        // accessed atomically.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(CONTROL_OFFSET + (word * self.capacity as usize + idx) * 8)
                .cast::<AtomicU64>()
        }
    }

    #[inline]
    fn state(&self, idx: usize) -> &AtomicU64 {
        self.control_word(idx, 0)
    }

    #[inline]
    fn meta_word(&self, idx: usize) -> &AtomicU64 {
        self.control_word(idx, 1)
    }

    /// Pointer to the data of slot `idx`.
    #[inline]
    fn data(&self, idx: usize) -> *mut u8 {
        debug_assert!((idx as u64) < self.capacity);
        // SAFETY: data + idx * slot_size is inside the ring's memory, since
        // data offset + capacity * slot_size = bytes_for(capacity, slot_size).
        unsafe { self.data.as_ptr().add(idx * self.slot_size) }
    }

    /// Capacity in slots.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of data per slot.
    #[inline]
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// The largest message the ring can ever hold, in bytes.
    pub fn max_message(&self) -> usize {
        (self.capacity.min(MAX_SPAN) as usize).saturating_mul(self.slot_size)
    }

    /// Slots in use (claimed by producers and not yet taken by consumers), clamped to
    /// `0..=capacity`. A snapshot: it may be stale by the time it is returned.
    pub fn len(&self) -> u64 {
        let c = self.control();
        let head = c.head.load(Ordering::Acquire);
        let tail = c.tail.load(Ordering::Acquire);
        tail.saturating_sub(head).min(self.capacity)
    }

    /// Whether producers have claimed positions that consumers have not taken yet
    /// (`tail` ahead of `head`; a snapshot). When not, no producer that dies can
    /// hold up a consumer that waits for the next message: its claim would come
    /// after the wait began, and only the messages after it would wait on it.
    #[inline]
    pub fn claims_pending(&self) -> bool {
        let c = self.control();
        c.tail.load(Ordering::Relaxed) != c.head.load(Ordering::Relaxed)
    }

    /// Whether no slot is in use (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The eventcount consumers sleep on; producers notify it after publishing.
    pub fn not_empty(&self) -> &EventCount {
        &self.control().not_empty
    }

    /// The eventcount producers sleep on; consumers notify it after freeing slots.
    pub fn not_full(&self) -> &EventCount {
        &self.control().not_full
    }

    /// Eight atomic words in the ring's memory for the layer above (a task count …).
    pub fn user_words(&self) -> &[std::sync::atomic::AtomicU64; 8] {
        &self.control().user_words
    }

    /// An eventcount in the ring's memory for the layer above.
    pub fn user_event(&self) -> &EventCount {
        &self.control().user_event
    }

    /// Whether the slot `ahead` positions past `tail` is already free for that
    /// position: with consumers freeing slots in order, room for a batch. A producer
    /// that found the ring full waits for this (briefly) before it resumes, so that
    /// it writes lines the consumers have left rather than the one they are reading.
    #[inline]
    pub fn room_ahead(&self, ahead: u64) -> bool {
        let pos = self
            .control()
            .tail
            .load(Ordering::Relaxed)
            .wrapping_add(ahead);
        self.state(self.index(pos) as usize).load(Ordering::Relaxed) == state(pos, EMPTY, 0)
    }

    /// Position of `head` (for stall detection and inspection).
    pub fn head_position(&self) -> u64 {
        self.control().head.load(Ordering::Acquire)
    }

    /// Wakes a producer asleep on a full ring after slots were freed. One, not all:
    /// waking every sleeping producer for each freed slot costs a 2+2 queue that
    /// sleeps at once a third of its throughput. The price, with messages of mixed
    /// sizes: the one woken may need more slots than were freed and sleep again,
    /// while one that needs fewer sleeps on until the next free or its next stall
    /// check (at most 100 ms).
    #[inline]
    fn wake_producers(&self) {
        self.not_full().notify_one();
    }

    /// Wakes sleeping consumers (after [`WriteSlot::commit_quiet`]s).
    pub fn notify_consumers(&self) {
        self.not_empty().notify_all();
    }

    /// Wakes sleeping producers (after [`ReadSlot::release_quiet`]s).
    pub fn notify_producers(&self) {
        self.not_full().notify_all();
    }
}
