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

use super::copy_bytes;
use crate::layout::padded::CachePadded;
use crate::shim::{self, AtomicU64, Ordering};
use crate::wait::EventCount;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
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
/// Stamps are positions modulo 2^40.
const STAMP_BITS: u32 = 40;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
const OWNER_MASK: u64 = (1 << 22) - 1;
/// Owner of a READING mark made by a repairer: nobody in particular, so other
/// repairers may redo the work (every step of it is a CAS, so redoing is harmless).
const ANON: u64 = OWNER_MASK - 1;
/// [`ANON`] for a one-slot message (whose state word was all there was to it).
const ANON_ONE: u64 = OWNER_MASK - 2;
/// Largest owner field of a FULL entry that holds its message's length (+ 1).
const INLINE_MAX: u64 = OWNER_MASK - 3;
/// Owner field of a FULL entry that is a one-slot SKIP made by a repairer: the state
/// word alone says so, so the repair is one CAS and writes no meta word.
const SKIP_ONE: u64 = OWNER_MASK;

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
const READING: u64 = 3;

/// Meta flag: a padding entry or a message abandoned by a dead producer.
const SKIP: u64 = 1 << 48;

/// An intent word holding no position.
const NONE: u64 = u64::MAX;

/// `take_raw` flags above the meta bits: nothing taken; head is stuck on a state
/// that makes no sense; the meta was impossible.
const RAW_NOTHING: u64 = 1 << 63;
const RAW_STUCK: u64 = 1 << 62;
const RAW_INVALID: u64 = 1 << 61;

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

/// One thread's record (see "Records" in the module docs).
#[repr(C)]
struct Record {
    /// `pid << 32 | tid` of the owner; 0 when free; [`BUSY`] while being claimed.
    owner: AtomicU64,
    /// The owner process's start time in clock ticks (0: unknown).
    start: AtomicU64,
    /// A number the owner process drew at random when it started using rings: a
    /// later process that reuses the pid (and, for a main thread, the tid) is not
    /// mistaken for it.
    nonce: AtomicU64,
    /// Position of the claim this thread is making or holds, or [`NONE`].
    prod_pos: AtomicU64,
    /// End of that claim (exclusive): a message's span, or a batch of messages.
    /// Stored before `prod_pos`, so a reader of `prod_pos` sees at least this range.
    prod_end: AtomicU64,
    /// Position of the message this thread is taking or holds, or [`NONE`].
    cons_pos: AtomicU64,
    /// End of that take (exclusive), as for `prod_end`.
    cons_end: AtomicU64,
    /// Atomics too: a peer may write anything here.
    _pad: [AtomicU64; 9],
}

const _: () = assert!(size_of::<Record>() == RECORD_SIZE);

impl Record {
    /// Whether this record's producer intent covers position `p`.
    fn claims(&self, p: u64) -> bool {
        let start = self.prod_pos.load(Ordering::Acquire);
        start != NONE && start <= p && p < self.prod_end.load(Ordering::Relaxed)
    }

    /// Whether this record's consumer intent covers position `p`.
    fn takes(&self, p: u64) -> bool {
        let start = self.cons_pos.load(Ordering::Acquire);
        start != NONE && start <= p && p < self.cons_end.load(Ordering::Relaxed)
    }
}

#[inline]
fn stamp(pos: u64) -> u64 {
    pos & STAMP_MASK
}

#[inline]
fn state(stamp_of: u64, kind: u64, owner: u64) -> u64 {
    (stamp(stamp_of) << 24) | (kind << 22) | (owner & OWNER_MASK)
}

#[inline]
fn decode(word: u64) -> (u64, u64, u64) {
    (word >> 24, (word >> 22) & 3, word & OWNER_MASK)
}

#[inline]
fn meta(len: u64, span: u64, flags: u64) -> u64 {
    (len & 0xFFFF_FFFF) | ((span & 0xFFFF) << 32) | flags
}

/// Records the intent `pos..pos+span` in a record's (start, end) words, then moves
/// `index` (`tail` or `head`) from `pos` past it with a CAS; false, with the intent
/// withdrawn, if `index` had moved on.
#[inline(always)]
fn move_index(index: &AtomicU64, start: &AtomicU64, end: &AtomicU64, pos: u64, span: u64) -> bool {
    // Release, paired with the Acquire load of `start` in `Record::claims` /
    // `Record::takes`: a repairer that reads this intent also sees the end (and a
    // mark the caller stored before). The CAS (Release; paired with the repairer's
    // Acquire loads of `tail`/`head`) makes the intent visible to anyone who sees the
    // index move.
    end.store(pos.wrapping_add(span), Ordering::Relaxed);
    start.store(pos, Ordering::Release);
    if index
        .compare_exchange(
            pos,
            pos.wrapping_add(span),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_err()
    {
        // Withdrawn (Release, paired with the same Acquire loads): nothing of this
        // attempt is left for a repairer to act on.
        start.store(NONE, Ordering::Release);
        return false;
    }
    true
}

/// The calling thread's identity as stored in a record's owner word.
#[inline]
fn my_identity() -> u64 {
    u64::from(shim::cached_pid()) << 32 | u64::from(shim::cached_tid())
}

/// An owner word that means "being claimed": judged alive, never adopted.
const BUSY: u64 = u64::MAX;

/// This process's nonce (see [`Record::nonce`]), drawn once per process: from the
/// clock and the pid, which no two processes with the same pid share.
fn my_nonce() -> u64 {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    static FOR_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pid = shim::cached_pid();
    if FOR_PID.load(Ordering::Acquire) == pid {
        return NONCE.load(Ordering::Relaxed);
    }
    let t = shim::monotonic_now().as_nanos() as u64;
    let nonce = (t ^ u64::from(pid).rotate_left(40)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    NONCE.store(nonce, Ordering::Relaxed);
    FOR_PID.store(pid, Ordering::Release);
    nonce
}

thread_local! {
    /// The records this thread owns in the rings it used last: (ring base, index).
    /// Only a hint: every hit is checked against the record's owner word.
    static RECORD_CACHE: [Cell<(usize, u32)>; 4] = const {
        [const { Cell::new((0, 0)) }; 4]
    };
}

/// Why a message could not be put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// No room now (or the lead slot at `tail` is mid-claim by another producer).
    Full,
    /// The message can never fit this ring.
    TooLarge {
        /// Bytes in the message.
        len: usize,
        /// The largest message this ring holds.
        max: usize,
    },
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("ring is full"),
            PushError::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes can never fit: this ring holds messages of at most {max} bytes"
            ),
        }
    }
}

impl std::error::Error for PushError {}

/// Why no message was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PopError {
    /// Nothing to take now (or the next message is still being written).
    Empty,
    /// The ring's shared state is inconsistent (a peer scribbled on it).
    Corrupt(String),
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopError::Empty => f.write_str("ring is empty"),
            PopError::Corrupt(why) => write!(f, "ring is corrupt: {why}"),
        }
    }
}

impl std::error::Error for PopError {}

/// Why memory could not be used as a ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Capacity 0, above [`MAX_CAPACITY`], or a slot size that is 0 or not a multiple
    /// of 8.
    InvalidParameters {
        /// Capacity asked for.
        capacity: u64,
        /// Slot size asked for.
        slot_size: u64,
    },
    /// The memory is smaller than [`Ring::bytes_for`] says the ring needs.
    TooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// The memory is not aligned to 128 bytes.
    Misaligned,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::InvalidParameters {
                capacity,
                slot_size,
            } => write!(
                f,
                "invalid ring parameters: capacity {capacity} (1..={MAX_CAPACITY}), slot size {slot_size} (a non-zero multiple of 8)"
            ),
            LayoutError::TooSmall { needed, given } => {
                write!(f, "ring needs {needed} bytes, got {given}")
            }
            LayoutError::Misaligned => f.write_str("ring memory must be 128-byte aligned"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// A handle to an MPMC ring in memory the caller provides (see the module docs).
///
/// The handle holds the ring's capacity and slot size itself; memory shared with
/// other processes is touched only through atomics and through the data bytes of
/// slots this handle owns by the protocol.
#[derive(Debug, Clone, Copy)]
pub struct Ring {
    base: NonNull<u8>,
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

/// A claimed message, written in place and published with
/// [`commit`](WriteSlot::commit). Dropping it uncommitted (or a panic while writing)
/// turns it into a SKIP entry that consumers step over, so the ring never wedges.
///
/// A claim stays with the thread that made it (the thread's record names it), so the
/// guard is not `Send`; and with the process that made it: a guard captured by the
/// closure of a forked child is published (or turned into a SKIP entry when
/// dropped) only by the process that claimed it — in the child, `commit` and drop
/// do nothing. Do not move guards into children.
///
/// The buffer is shared memory owned by this producer until the commit; a peer that
/// ignores the protocol could change it meanwhile, and the bytes then published are
/// whatever is there.
#[derive(Debug)]
pub struct WriteSlot<'a> {
    ring: &'a Ring,
    pos: u64,
    len: usize,
    span: u64,
    rec: usize,
    /// The process that made the claim: only it publishes (see the type docs).
    pid: u32,
    done: bool,
    _thread: PhantomData<*const ()>,
}

impl WriteSlot<'_> {
    /// The message's bytes, `len` of them as claimed (zeroed or left from earlier
    /// messages: write every byte you publish).
    #[inline]
    pub fn buf(&mut self) -> &mut [u8] {
        let idx = self.ring.index(self.pos) as usize;
        // SAFETY: slots idx..idx+span are ours (claimed by our CAS on tail, so no
        // other producer writes them, and consumers read them only after FULL),
        // contiguous (claims never wrap) and inside the data area; len <= span *
        // slot_size.
        unsafe { std::slice::from_raw_parts_mut(self.ring.data(idx), self.len) }
    }

    /// Publishes the message and wakes a sleeping consumer.
    #[inline]
    pub fn commit(mut self) {
        self.finish(0);
        self.ring.not_empty().notify_one();
    }

    /// Publishes without waking anyone: for batches, which notify once at the end
    /// (see [`Ring::notify_consumers`]).
    #[inline]
    pub fn commit_quiet(mut self) {
        self.finish(0);
    }

    #[inline]
    fn finish(&mut self, flags: u64) {
        self.done = true;
        if self.pid != shim::cached_pid() {
            return; // a copy in a forked child: the claiming process resolves it
        }
        let len = if flags & SKIP != 0 { 0 } else { self.len };
        self.ring
            .finish_claim(self.rec, self.pos, len, self.span, flags);
    }
}

impl Drop for WriteSlot<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.finish(SKIP);
            self.ring.not_empty().notify_all();
        }
    }
}

/// A message taken by a consumer, read in place; its slots are freed when the guard
/// drops. The bytes are shared memory owned by this consumer until then. Not `Send`,
/// and freed only by the process that took it, like [`WriteSlot`].
#[derive(Debug)]
pub struct ReadSlot<'a> {
    ring: &'a Ring,
    pos: u64,
    len: usize,
    span: u64,
    rec: usize,
    /// The process that took the message: only it frees the slots.
    pid: u32,
    notify: bool,
    _thread: PhantomData<*const ()>,
}

impl ReadSlot<'_> {
    /// The message's bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        let idx = self.ring.index(self.pos) as usize;
        // SAFETY: the slots pos..pos+span are ours (taken by our CAS on head),
        // contiguous and in bounds (span <= capacity - idx, checked when taken),
        // holding len <= span * slot_size bytes published by the producer's Release
        // store of FULL, which our Acquire load saw.
        unsafe { std::slice::from_raw_parts(self.ring.data(idx), self.len) }
    }

    /// Frees the slots without waking a sleeping producer: for batches, which notify
    /// once at the end (see [`Ring::notify_producers`]).
    #[inline]
    pub fn release_quiet(mut self) {
        self.notify = false;
    }
}

impl Drop for ReadSlot<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.pid != shim::cached_pid() {
            return; // a copy in a forked child: the taking process frees it
        }
        self.ring.finish_take(self.rec, self.pos, self.span);
        if self.notify {
            self.ring.wake_producers();
        }
    }
}

/// Liveness of records' owners, looked up at most once per repair. Keyed by the
/// owner (word, start time, nonce), not by the record: a record can change hands
/// during a repair, and its new owner must be judged afresh.
#[derive(Default)]
struct Liveness(Vec<((u64, u64, u64), bool)>);

impl Liveness {
    fn alive(&mut self, ring: &Ring, rec: usize) -> bool {
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
        Ring {
            base,
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
        let offset = (CONTROL_OFFSET + self.capacity as usize * CONTROL_SIZE).next_multiple_of(128);
        // SAFETY: offset + idx * slot_size < bytes_for(capacity, slot_size).
        unsafe { self.base.as_ptr().add(offset + idx * self.slot_size) }
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

    /// Slots a message of `len` bytes spans.
    #[inline]
    fn span_for(&self, len: usize) -> u64 {
        if len <= self.slot_size {
            return 1; // the common case, without a division
        }
        len.div_ceil(self.slot_size) as u64
    }

    /// Claims room for one message of `len` bytes, to be written in place and
    /// committed. Does not block.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] if there is no room now (or all [`RECORDS`] records are
    /// held by other live threads); [`PushError::TooLarge`] if the message can never
    /// fit.
    #[inline]
    pub fn try_claim(&self, len: usize) -> Result<WriteSlot<'_>, PushError> {
        let (rec, pos, span) = self.claim_message(len)?;
        Ok(WriteSlot {
            ring: self,
            pos,
            len,
            span,
            rec,
            pid: shim::cached_pid(),
            done: false,
            _thread: PhantomData,
        })
    }

    /// Claims room for a message of `len` bytes: (record, position, span). Plain
    /// numbers: the caller builds a guard, or copies, in place.
    #[inline(always)]
    fn claim_message(&self, len: usize) -> Result<(usize, u64, u64), PushError> {
        let span = self.span_for(len);
        if span > self.capacity || span > MAX_SPAN || len > u32::MAX as usize {
            return Err(PushError::TooLarge {
                len,
                max: self.max_message(),
            });
        }
        let rec = self.my_record().ok_or(PushError::Full)?;
        let pos = self.claim_raw(rec, span).ok_or(PushError::Full)?;
        Ok((rec, pos, span))
    }

    /// Puts one message of `len` bytes, written in place by `write`. Does not block;
    /// wakes a sleeping consumer.
    ///
    /// # Errors
    ///
    /// As for [`try_claim`](Ring::try_claim); `write` is not called then.
    pub fn try_push_with(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<(), PushError> {
        let mut slot = self.try_claim(len)?;
        write(slot.buf());
        slot.commit();
        Ok(())
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

    /// The first of slots `pos..pos+span` (from index `idx`) that is not free in this
    /// lap, if any.
    #[inline]
    fn first_busy(&self, pos: u64, idx: u64, span: u64) -> Option<usize> {
        (0..span).map(|j| (idx + j) as usize).find(|&i| {
            // Paired with the consumer's Release store of EMPTY in `release`.
            self.state(i).load(Ordering::Acquire)
                != state(pos.wrapping_add(i as u64 - idx), EMPTY, 0)
        })
    }

    /// Whether slot `idx` holds a padding (SKIP) entry nobody has taken yet: the one
    /// kind of entry a producer steps over itself rather than wait for a consumer.
    /// Reads only the slot, never `head` (a line the consumers move).
    fn padding_at(&self, idx: usize) -> bool {
        let (_, kind, owner) = decode(self.state(idx).load(Ordering::Acquire));
        kind == FULL
            && (owner == SKIP_ONE
                || owner == 0 && self.meta_word(idx).load(Ordering::Relaxed) & SKIP != 0)
    }

    /// Claims `span` slots at `tail` for a message, first filling the end of the ring
    /// with a SKIP entry if the message would wrap; the position, or `None` if the
    /// ring is full. (Returns a plain number, not a guard: the guard is built inline
    /// by the caller, so it lives in registers.)
    #[inline]
    fn claim_raw(&self, rec: usize, span: u64) -> Option<u64> {
        let c = self.control();
        loop {
            let pos = c.tail.load(Ordering::Acquire);
            let idx = self.index(pos);
            let (span_here, is_pad) = if idx + span > self.capacity {
                (self.capacity - idx, true)
            } else {
                (span, false)
            };
            if let Some(busy) = self.first_busy(pos, idx, span_here) {
                if c.tail.load(Ordering::Acquire) != pos
                    || (self.padding_at(busy) && self.skip_at_head(rec))
                {
                    continue; // tail moved on, or room was made: retry
                }
                return None;
            }
            if !self.claim_at(pos, span_here, rec) {
                continue;
            }
            if is_pad {
                self.finish_claim(rec, pos, 0, span_here, SKIP);
                continue;
            }
            return Some(pos);
        }
    }

    /// Publishes a claim (with `flags`: SKIP for padding or an abandoned claim) and
    /// clears the intent that covered it.
    #[inline]
    fn finish_claim(&self, rec: usize, pos: u64, len: usize, span: u64, flags: u64) {
        self.publish(pos, len, span, flags);
        self.finish_intent(rec, pos);
    }

    /// Clears the producer intent at `pos` once its slots' states tell the story.
    #[inline]
    fn finish_intent(&self, rec: usize, pos: u64) {
        self.clear_intent(&self.record(rec).prod_pos, rec, pos);
    }

    /// Clears an intent word that still says `pos` (not one a later claim or take
    /// replaced, nor another process's: see `record_is_mine`).
    #[inline]
    fn clear_intent(&self, start: &AtomicU64, rec: usize, pos: u64) {
        if start.load(Ordering::Relaxed) == pos && self.record_is_mine(rec) {
            start.store(NONE, Ordering::Release);
        }
    }

    /// Marks the lead of a claim (`WRITING`) or take (`READING`) this thread still
    /// holds with its record, before its intent moves on to another position.
    fn mark(&self, pos: u64, kind: u64, rec: usize) {
        let idx = self.index(pos) as usize;
        // Release, paired with the Acquire loads of slot states in `repair` and
        // `repair_head` (and the AcqRel CAS in `take_over_taken`): a repairer that
        // sees a READING mark also sees the span stored in the meta word just before
        // it (`move_with_intent`).
        self.state(idx)
            .store(state(pos, kind, rec as u64 + 1), Ordering::Release);
    }

    /// If the entry at `head` is a SKIP entry (padding), consumes it, so a producer
    /// never waits for a consumer to step over padding. Whether it did.
    fn skip_at_head(&self, rec: usize) -> bool {
        let c = self.control();
        let pos = c.head.load(Ordering::Acquire);
        let idx = self.index(pos) as usize;
        let word = self.state(idx).load(Ordering::Acquire);
        let span = if word == state(pos, FULL, SKIP_ONE) {
            1
        } else if word == state(pos, FULL, 0) {
            let m = self.meta_word(idx).load(Ordering::Relaxed);
            if m & SKIP == 0 {
                return false;
            }
            self.valid_span(idx, m).unwrap_or(1)
        } else {
            return false;
        };
        if !self.take_at(pos, span, rec) {
            return false;
        }
        self.finish_take(rec, pos, span);
        self.not_full().notify_all();
        true
    }

    /// Claims positions `pos..pos+span` with a CAS on tail, recording the intent
    /// first; false if tail moved on meanwhile (the intent is withdrawn).
    #[inline]
    fn claim_at(&self, pos: u64, span: u64, rec: usize) -> bool {
        let r = self.record(rec);
        let tail = &self.control().tail;
        self.move_with_intent(tail, &r.prod_pos, &r.prod_end, WRITING, pos, span, rec)
    }

    /// Takes positions `pos..pos+span` (a message of `span` slots, or a run of
    /// one-slot messages) with a CAS on head, recording the intent first; false if
    /// head moved on meanwhile (the intent is withdrawn).
    #[inline]
    fn take_at(&self, pos: u64, span: u64, rec: usize) -> bool {
        let r = self.record(rec);
        let head = &self.control().head;
        self.move_with_intent(head, &r.cons_pos, &r.cons_end, READING, pos, span, rec)
    }

    /// How `tail` and `head` move: mark the lead of an earlier claim or take the
    /// thread still holds with `held_kind`, then [`move_index`]. (The one-slot fast
    /// paths call `move_index` directly, having checked they hold nothing.)
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn move_with_intent(
        &self,
        index: &AtomicU64,
        start: &AtomicU64,
        end: &AtomicU64,
        held_kind: u64,
        pos: u64,
        span: u64,
        rec: usize,
    ) -> bool {
        let held = start.load(Ordering::Relaxed);
        if held != NONE {
            // Still holding an earlier one: mark it, so the one intent covers the
            // new one. A take's span goes to its meta word first (the entry is ours
            // until released), for a repairer that must free its slots.
            if held_kind == READING {
                let span = end.load(Ordering::Relaxed).wrapping_sub(held);
                self.meta_word(self.index(held) as usize)
                    .store(meta(0, span, 0), Ordering::Relaxed);
            }
            self.mark(held, held_kind, rec);
        }
        move_index(index, start, end, pos, span)
    }

    /// Frees a taken entry and clears the intent that covered it.
    #[inline]
    fn finish_take(&self, rec: usize, pos: u64, span: u64) {
        self.release(pos, span);
        self.finish_take_intent(rec, pos);
    }

    /// Clears the consumer intent at `pos` once its slots are freed.
    #[inline]
    fn finish_take_intent(&self, rec: usize, pos: u64) {
        self.clear_intent(&self.record(rec).cons_pos, rec, pos);
    }

    /// The span in the meta word of lead slot `idx`, if it is possible there (the
    /// message must not run past the end of the ring).
    fn lead_span(&self, idx: usize) -> Option<u64> {
        self.valid_span(idx, self.meta_word(idx).load(Ordering::Relaxed))
    }

    /// The span in meta word `m` of lead slot `idx`, if the entry is possible there:
    /// one slot at least, not past the end of the ring, its length within its slots.
    /// The one rule every reader of a meta word applies.
    #[inline]
    fn valid_span(&self, idx: usize, m: u64) -> Option<u64> {
        let len = m & 0xFFFF_FFFF;
        let span = (m >> 32) & 0xFFFF;
        (span >= 1 && span <= self.capacity - idx as u64 && len <= span * self.slot_size as u64)
            .then_some(span)
    }

    /// Makes the lead slot FULL: a one-slot message with its length in the state
    /// word, anything else with a meta word.
    #[inline]
    fn publish(&self, pos: u64, len: usize, span: u64, flags: u64) {
        debug_assert!(span >= 1 && len as u64 <= span * self.slot_size as u64);
        let idx = self.index(pos) as usize;
        let owner = if span == 1 && flags == 0 && (len as u64) < INLINE_MAX {
            len as u64 + 1
        } else {
            self.meta_word(idx)
                .store(meta(len as u64, span, flags), Ordering::Relaxed);
            0
        };
        // Publishes data and meta; paired with the Acquire loads in `take_raw`,
        // `pop_one` and `take_run`.
        self.state(idx)
            .store(state(pos, FULL, owner), Ordering::Release);
    }

    /// The meta of a FULL entry at slot `idx` whose state word has owner field
    /// `owner`: from the state word itself, or from the meta word. An owner field no
    /// FULL entry has (a scribble) gives a meta word no check accepts (span 0).
    #[inline]
    fn full_meta(&self, idx: usize, owner: u64) -> u64 {
        match owner {
            0 => self.meta_word(idx).load(Ordering::Relaxed),
            SKIP_ONE => SKIP | 1 << 32,
            o if o <= INLINE_MAX => meta(o - 1, 1, 0),
            _ => 0,
        }
    }

    /// Takes the next message, to be read in place; its slots are freed when the
    /// guard drops. Steps over SKIP entries. Does not block.
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`] if there is nothing to take now (or all [`RECORDS`]
    /// records are held by other live threads); [`PopError::Corrupt`] if the ring's
    /// state is inconsistent (a message with impossible meta is dropped and
    /// reported, so the next call can go on).
    #[inline]
    pub fn try_take(&self) -> Result<ReadSlot<'_>, PopError> {
        let Some(rec) = self.my_record() else {
            return Err(PopError::Empty);
        };
        let (pos, m) = self.take_message(rec)?;
        Ok(ReadSlot {
            ring: self,
            pos,
            len: (m & 0xFFFF_FFFF) as usize,
            span: (m >> 32) & 0xFFFF,
            rec,
            pid: shim::cached_pid(),
            notify: true,
            _thread: PhantomData,
        })
    }

    /// Takes the next message (stepping over SKIP entries, dropping and reporting
    /// one with impossible meta): its position and meta word. Plain numbers: the
    /// caller builds a guard, or copies, in place.
    #[inline(always)]
    fn take_message(&self, rec: usize) -> Result<(u64, u64), PopError> {
        loop {
            let (pos, m) = self.take_raw(rec);
            if m & RAW_NOTHING != 0 {
                return Err(if m & RAW_STUCK != 0 {
                    self.stuck_at(pos)
                } else {
                    PopError::Empty
                });
            }
            if m & (RAW_INVALID | SKIP) == 0 {
                return Ok((pos, m));
            }
            let span = if m & RAW_INVALID != 0 {
                1
            } else {
                (m >> 32) & 0xFFFF
            };
            self.finish_take(rec, pos, span);
            self.wake_producers();
            if m & RAW_INVALID != 0 {
                return Err(self.invalid_meta(pos, m));
            }
        }
    }

    /// Copies `msg` into a new message and publishes it. Does not block; wakes a
    /// sleeping consumer. The fastest way to put a message that is already in
    /// memory: no guard, nothing but the copy between the claim and the publish.
    ///
    /// # Errors
    ///
    /// As for [`try_claim`](Ring::try_claim).
    #[inline]
    pub fn try_push(&self, msg: &[u8]) -> Result<(), PushError> {
        self.push_copy(msg, true)
    }

    /// [`try_push`](Ring::try_push) without waking anyone: for batches, which notify
    /// once at the end (see [`Ring::notify_consumers`]).
    ///
    /// # Errors
    ///
    /// As for [`try_claim`](Ring::try_claim).
    #[inline]
    pub fn try_push_quiet(&self, msg: &[u8]) -> Result<(), PushError> {
        self.push_copy(msg, false)
    }

    #[inline]
    fn push_copy(&self, msg: &[u8], notify: bool) -> Result<(), PushError> {
        if self.push_one(msg) {
            if notify {
                self.not_empty().notify_one();
            }
            return Ok(());
        }
        self.push_copy_general(msg, notify)
    }

    /// The common case of a put, with nothing general in the way: a message of one
    /// slot, the slot at `tail` free, this thread holding no other claim, and no CAS
    /// lost. The same steps as the general path (intent, CAS, copy, publish, clear),
    /// in a straight line; false (having changed nothing) if any condition fails.
    #[inline(always)]
    fn push_one(&self, msg: &[u8]) -> bool {
        let len = msg.len();
        if len > self.slot_size || len > u32::MAX as usize {
            return false; // the general path takes it (or says it is too large)
        }
        let Some(rec) = self.my_record() else {
            return false;
        };
        let c = self.control();
        let r = self.record(rec);
        let pos = c.tail.load(Ordering::Acquire);
        let idx = self.index(pos) as usize;
        // Paired with the consumer's Release store of EMPTY in `release`.
        if self.state(idx).load(Ordering::Acquire) != state(pos, EMPTY, 0)
            || r.prod_pos.load(Ordering::Relaxed) != NONE
        {
            return false;
        }
        // Holding no other claim (checked above), so nothing to mark.
        if !move_index(&c.tail, &r.prod_pos, &r.prod_end, pos, 1) {
            return false;
        }
        // SAFETY: slot idx is ours by the claim; len <= slot_size bytes inside the
        // data area; `msg` is private memory.
        unsafe { copy_bytes(msg.as_ptr(), self.data(idx), len) };
        self.publish(pos, len, 1, 0);
        // The claim is published: the intent no longer matters (Release, paired with
        // the Acquire load in `Record::claims`: who sees it cleared sees FULL).
        r.prod_pos.store(NONE, Ordering::Release);
        true
    }

    #[inline(never)]
    fn push_copy_general(&self, msg: &[u8], notify: bool) -> Result<(), PushError> {
        let len = msg.len();
        let (rec, pos, span) = self.claim_message(len)?;
        let idx = self.index(pos) as usize;
        // SAFETY: slots idx..idx+span are ours by the claim (see `WriteSlot::buf`);
        // len <= span * slot_size bytes inside the data area; `msg` is private
        // memory, so the ranges do not overlap. A copy cannot panic, so no guard is
        // needed to publish on unwinding.
        unsafe { copy_bytes(msg.as_ptr(), self.data(idx), len) };
        self.finish_claim(rec, pos, len, span, 0);
        if notify {
            self.not_empty().notify_one();
        }
        Ok(())
    }

    /// Takes one message and copies it into the start of `out`; returns its length.
    /// A message longer than `out` is cut to `out.len()` bytes (the length returned
    /// is still the whole message's). Does not block; wakes a sleeping producer.
    ///
    /// # Errors
    ///
    /// As for [`try_take`](Ring::try_take).
    #[inline]
    pub fn try_pop_into(&self, out: &mut [u8]) -> Result<usize, PopError> {
        self.pop_copy(out, true)
    }

    /// [`try_pop_into`](Ring::try_pop_into) without waking anyone: for batches,
    /// which notify once at the end (see [`Ring::notify_producers`]).
    ///
    /// # Errors
    ///
    /// As for [`try_take`](Ring::try_take).
    #[inline]
    pub fn try_pop_into_quiet(&self, out: &mut [u8]) -> Result<usize, PopError> {
        self.pop_copy(out, false)
    }

    #[inline]
    fn pop_copy(&self, out: &mut [u8], notify: bool) -> Result<usize, PopError> {
        if let Some(len) = self.pop_one(out) {
            if notify {
                self.wake_producers();
            }
            return Ok(len);
        }
        self.pop_copy_general(out, notify)
    }

    /// The common case of a get, with nothing general in the way: a published
    /// one-slot message at `head` with valid meta, this thread holding no other take,
    /// and no CAS lost. The same steps as the general path (intent, CAS, copy,
    /// release, clear), in a straight line; `None` (having changed nothing) if any
    /// condition fails.
    #[inline(always)]
    fn pop_one(&self, out: &mut [u8]) -> Option<usize> {
        let rec = self.my_record()?;
        let c = self.control();
        let r = self.record(rec);
        let pos = c.head.load(Ordering::Acquire);
        let idx = self.index(pos) as usize;
        // Paired with the producer's Release store of FULL in `publish`.
        let word = self.state(idx).load(Ordering::Acquire);
        // A one-slot message with its length in the state word, a length that fits
        // the slot: anything else (meta words, SKIP entries, a scribbled word) takes
        // the general path.
        let owner = word & OWNER_MASK;
        let len = owner.wrapping_sub(1) as usize; // owner 0 (meta word): too long
        if word & !OWNER_MASK != state(pos, FULL, 0)
            || owner > INLINE_MAX
            || len > self.slot_size
            || r.cons_pos.load(Ordering::Relaxed) != NONE
        {
            return None;
        }
        // Holding no other take (checked above), so nothing to mark.
        if !move_index(&c.head, &r.cons_pos, &r.cons_end, pos, 1) {
            return None;
        }
        // SAFETY: the entry is ours by the take; len <= slot_size bytes published by
        // the producer's Release store of FULL; `out` is private memory.
        unsafe { copy_bytes(self.data(idx), out.as_mut_ptr(), len.min(out.len())) };
        self.release(pos, 1);
        // The slot is free: the intent no longer matters (Release, paired with the
        // Acquire load in `Record::takes`: who sees it cleared sees EMPTY).
        r.cons_pos.store(NONE, Ordering::Release);
        Some(len)
    }

    #[inline(never)]
    fn pop_copy_general(&self, out: &mut [u8], notify: bool) -> Result<usize, PopError> {
        let Some(rec) = self.my_record() else {
            return Err(PopError::Empty);
        };
        let (pos, m) = self.take_message(rec)?;
        let span = (m >> 32) & 0xFFFF;
        let len = (m & 0xFFFF_FFFF) as usize;
        let idx = self.index(pos) as usize;
        // SAFETY: the entry is ours by the take, its len <= span * slot_size
        // bytes published by the producer's Release store of FULL (see
        // `ReadSlot::bytes`); `out` is private memory. A copy cannot panic.
        unsafe { copy_bytes(self.data(idx), out.as_mut_ptr(), len.min(out.len())) };
        self.finish_take(rec, pos, span);
        if notify {
            self.wake_producers();
        }
        Ok(len)
    }

    /// Puts as many of the messages in `items` — `items.len() / item_len` messages of
    /// `item_len` bytes each, at most one slot each — as fit now, claiming a run of
    /// slots with one CAS; returns how many. Wakes nobody: the caller notifies once
    /// (see [`Ring::notify_consumers`]).
    ///
    /// # Errors
    ///
    /// [`PushError::TooLarge`] if `item_len` exceeds a slot. (A full ring is `Ok(0)`.)
    pub fn try_push_slice(&self, items: &[u8], item_len: usize) -> Result<usize, PushError> {
        if item_len > self.slot_size || item_len == 0 && !items.is_empty() {
            return Err(PushError::TooLarge {
                len: item_len,
                max: self.slot_size,
            });
        }
        let count = items.len().checked_div(item_len).unwrap_or(0);
        let Some(rec) = self.my_record() else {
            return Ok(0);
        };
        let mut done = 0;
        while done < count {
            let Some((pos, k)) = self.claim_run(rec, (count - done) as u64) else {
                break;
            };
            let idx = self.index(pos) as usize;
            for j in 0..k as usize {
                let item = &items[(done + j) * item_len..][..item_len];
                // SAFETY: slot idx + j (< capacity: runs never wrap) is ours by the
                // claim; item_len <= slot_size bytes; `items` is private memory.
                unsafe { copy_bytes(item.as_ptr(), self.data(idx + j), item_len) };
                self.publish(pos + j as u64, item_len, 1, 0);
            }
            self.finish_intent(rec, pos);
            done += k as usize;
        }
        Ok(done)
    }

    /// Claims a run of up to `max` single-slot messages at `tail` with one CAS: as
    /// many slots as are free from `tail` on, not past the end of the ring. `None` if
    /// the slot at `tail` is not free (or all [`RECORDS`] records are taken).
    fn claim_run(&self, rec: usize, max: u64) -> Option<(u64, u64)> {
        let c = self.control();
        loop {
            let pos = c.tail.load(Ordering::Acquire);
            let idx = self.index(pos);
            let limit = max.min(self.capacity - idx);
            // Paired with the consumers' Release stores of EMPTY.
            let k = (0..limit)
                .take_while(|&j| {
                    self.state((idx + j) as usize).load(Ordering::Acquire)
                        == state(pos.wrapping_add(j), EMPTY, 0)
                })
                .count() as u64;
            if k == 0 {
                if c.tail.load(Ordering::Acquire) != pos
                    || (self.padding_at(idx as usize) && self.skip_at_head(rec))
                {
                    continue;
                }
                return None;
            }
            if self.claim_at(pos, k, rec) {
                return Some((pos, k));
            }
        }
    }

    /// Takes as many single-slot messages of exactly `item_len` bytes as are there
    /// now, up to `out.len() / item_len`, with one CAS, and copies them into `out`
    /// one after another; returns how many. Stops before anything else (a SKIP
    /// entry, a longer or shorter message), which [`try_pop_into`](Ring::try_pop_into)
    /// then takes. Wakes nobody: the caller notifies once (see
    /// [`Ring::notify_producers`]).
    pub fn try_pop_slice(&self, out: &mut [u8], item_len: usize) -> usize {
        let max = out.len().checked_div(item_len).unwrap_or(0) as u64;
        let Some(rec) = self.my_record() else {
            return 0;
        };
        let Some((pos, k)) = self.take_run(rec, max, item_len) else {
            return 0;
        };
        let idx = self.index(pos) as usize;
        for j in 0..k as usize {
            // SAFETY: slot idx + j is ours by the take, holding item_len <= slot_size
            // bytes (checked in `take_run`) published by the producer's Release store
            // of FULL; `out` is private memory with room for k items.
            unsafe {
                copy_bytes(
                    self.data(idx + j),
                    out[j * item_len..].as_mut_ptr(),
                    item_len,
                )
            };
        }
        for j in 0..k {
            self.release(pos + j, 1);
        }
        self.finish_take_intent(rec, pos);
        k as usize
    }

    /// Takes a run of up to `max` single-slot messages of `item_len` bytes at head
    /// with one CAS. `None` if the entry at head is not one, or if `item_len` is 0 or
    /// more than a slot holds (so a taken item always lies within its slot).
    fn take_run(&self, rec: usize, max: u64, item_len: usize) -> Option<(u64, u64)> {
        if item_len == 0 || item_len > self.slot_size {
            return None;
        }
        let c = self.control();
        let want = meta(item_len as u64, 1, 0);
        // The state word of such an item published with its length inline, if a
        // length that long can be inline (else only the meta form matches).
        let inline = ((item_len as u64) < INLINE_MAX).then_some(item_len as u64 + 1);
        loop {
            let pos = c.head.load(Ordering::Acquire);
            let idx = self.index(pos);
            let limit = max.min(self.capacity - idx);
            // Paired with the producers' Release stores of FULL; the meta words are
            // theirs until taken, which the CAS below decides.
            let k = (0..limit)
                .take_while(|&j| {
                    let i = (idx + j) as usize;
                    let word = self.state(i).load(Ordering::Acquire);
                    let full = state(pos.wrapping_add(j), FULL, 0);
                    inline.is_some_and(|o| word == full | o)
                        || word == full && self.meta_word(i).load(Ordering::Relaxed) == want
                })
                .count() as u64;
            if k == 0 {
                return None;
            }
            if self.take_at(pos, k, rec) {
                return Some((pos, k));
            }
        }
    }

    /// Takes one message and passes its bytes to `read`, returning what `read`
    /// returns. Does not block; wakes a sleeping producer.
    ///
    /// # Errors
    ///
    /// As for [`try_take`](Ring::try_take); `read` is not called then.
    #[inline]
    pub fn try_pop_with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R, PopError> {
        let slot = self.try_take()?;
        Ok(read(slot.bytes()))
    }

    /// Takes the entry at head with a CAS: its position and meta word, with
    /// [`RAW_INVALID`] set if the meta is impossible (the entry was taken as one
    /// slot), or [`RAW_NOTHING`] (and [`RAW_STUCK`] if head sits on a state that
    /// makes no sense). Plain numbers, so the guard lives in the caller's registers.
    #[inline]
    fn take_raw(&self, rec: usize) -> (u64, u64) {
        let c = self.control();
        let mut stale = 0;
        loop {
            let pos = c.head.load(Ordering::Acquire);
            let idx = self.index(pos) as usize;
            let word = self.state(idx).load(Ordering::Acquire);
            if word == state(pos, FULL, SKIP_ONE) {
                // A one-slot SKIP entry left by a repair (no meta to read).
                if self.take_at(pos, 1, rec) {
                    return (pos, SKIP | 1 << 32);
                }
                continue;
            }
            if word & !OWNER_MASK != state(pos, FULL, 0) {
                let (st, kind, _) = decode(word);
                if st == stamp(pos) && (kind == EMPTY || kind == WRITING) {
                    // Nothing published yet, or still being written.
                    return (pos, RAW_NOTHING);
                }
                if c.head.load(Ordering::Acquire) != pos {
                    continue;
                }
                stale += 1;
                if stale > 64 {
                    if c.tail.load(Ordering::Acquire) == pos {
                        // Empty: the slot's previous lap is not freed yet.
                        return (pos, RAW_NOTHING);
                    }
                    // Tail moved past `pos`, so a producer saw the slot free for `pos`
                    // before its CAS (AcqRel; paired with the Acquire load above): a
                    // look now sees that state or a later one. The model checker
                    // found the race this settles: a repair, a claim and a publish,
                    // all after the last poll. A slot still stale is stuck.
                    let (st, kind, _) = decode(self.state(idx).load(Ordering::Acquire));
                    if st == stamp(pos) && kind != READING {
                        stale = 0;
                        continue; // the next poll returns or takes
                    }
                    return (pos, RAW_NOTHING | RAW_STUCK);
                }
                std::hint::spin_loop();
                continue;
            }
            // FULL(pos) and head == pos: meta is the producer's and stays so until
            // the entry is taken, which our CAS on head decides.
            let m = self.full_meta(idx, word & OWNER_MASK);
            let valid = self.valid_span(idx, m);
            if !self.take_at(pos, valid.unwrap_or(1), rec) {
                continue;
            }
            return (pos, if valid.is_some() { m } else { m | RAW_INVALID });
        }
    }

    #[cold]
    fn stuck_at(&self, pos: u64) -> PopError {
        let idx = self.index(pos) as usize;
        let word = self.state(idx).load(Ordering::Relaxed);
        PopError::Corrupt(format!(
            "slot {idx} at head position {pos} has state {word:#x}"
        ))
    }

    #[cold]
    fn invalid_meta(&self, pos: u64, m: u64) -> PopError {
        let m = m & !RAW_INVALID;
        PopError::Corrupt(format!(
            "slot {} holds a message of {} bytes over {} slots (meta {m:#x})",
            self.index(pos),
            m & 0xFFFF_FFFF,
            (m >> 32) & 0xFFFF
        ))
    }

    /// Frees the slots of a taken message: the other slots first, the lead last.
    #[inline]
    fn release(&self, pos: u64, span: u64) {
        let idx = self.index(pos);
        for j in 1..span {
            // Paired with the producer's Acquire load in `first_busy`.
            self.state((idx + j) as usize).store(
                state(pos.wrapping_add(j).wrapping_add(self.capacity), EMPTY, 0),
                Ordering::Release,
            );
        }
        self.state(idx as usize).store(
            state(pos.wrapping_add(self.capacity), EMPTY, 0),
            Ordering::Release,
        );
    }

    /// The calling thread's record in this ring, claiming one on first use; `None`
    /// if all are held by live threads.
    #[inline(always)]
    fn my_record(&self) -> Option<usize> {
        let base = self.base.as_ptr() as usize;
        // The ring this thread used last: checked inline, the rest out of line.
        let (b, i) = RECORD_CACHE.with(|c| c[0].get());
        let i = i as usize;
        if b == base && i < RECORDS && self.record(i).owner.load(Ordering::Relaxed) == my_identity()
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
        let hit = RECORD_CACHE.with(|c| c.iter().map(Cell::get).find(|&(b, _)| b == base));
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
    fn record_is_mine(&self, rec: usize) -> bool {
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

    /// Whether the owner named in a WRITING/READING mark is gone (a mark that names
    /// no record counts as gone).
    fn mark_owner_gone(&self, owner: u64, live: &mut Liveness) -> bool {
        owner == 0 || owner > RECORDS as u64 || !live.alive(self, owner as usize - 1)
    }

    /// Resolves claims and takes left unfinished by threads or processes that no
    /// longer exist (see "Failure model" in the module docs). Returns how many
    /// entries were repaired. Cheap when nothing is stuck (a scan of the slot
    /// states); call it when a wait stalls, not on every operation. Needs no record
    /// of its own, so it works even when every record is held by the dead.
    pub fn repair(&self) -> usize {
        let me = self.my_record();
        let mut live = Liveness::default();
        let mut repaired = 0;
        // Unpublished claims at head, one slot at a time: each becomes a one-slot
        // SKIP entry, which this repairer consumes at once (if it has a record) so
        // that the next slot can be judged.
        for _ in 0..self.capacity {
            if !self.repair_head(&mut live) {
                break;
            }
            repaired += 1;
            if !me.is_some_and(|me| self.skip_at_head(me)) {
                break;
            }
        }
        // Taken but never released.
        let c = self.control();
        let head = c.head.load(Ordering::Acquire);
        for idx in 0..self.capacity as usize {
            let word = self.state(idx).load(Ordering::Acquire);
            let (st, kind, owner) = decode(word);
            if kind != FULL && kind != READING {
                continue;
            }
            // The position with this stamp at or below head.
            let pos = head.wrapping_sub(stamp(head).wrapping_sub(st) & STAMP_MASK);
            if pos == head
                || head.wrapping_sub(pos) > self.capacity
                || self.index(pos) != idx as u64
            {
                continue;
            }
            let gone = if kind == READING {
                self.mark_owner_gone(owner, &mut live)
            } else {
                // FULL behind head: taken, still in its taker's window. Gone if no
                // live record holds the intent.
                !(0..RECORDS).any(|i| self.record(i).takes(pos) && live.alive(self, i))
            };
            if gone && self.take_over_taken(pos, word) {
                repaired += 1;
            }
        }
        if repaired > 0 {
            self.not_empty().notify_all();
            self.not_full().notify_all();
        }
        repaired
    }

    /// If the entry at head is a claim whose claimants are all gone, makes it a
    /// one-slot SKIP entry. Whether it did.
    fn repair_head(&self, live: &mut Liveness) -> bool {
        let c = self.control();
        let head = c.head.load(Ordering::Acquire);
        // Every intent stored before a CAS that moved tail to here is visible now.
        let tail = c.tail.load(Ordering::Acquire);
        let ahead = tail.wrapping_sub(head);
        if ahead == 0 || ahead > self.capacity {
            return false;
        }
        let idx = self.index(head) as usize;
        let word = self.state(idx).load(Ordering::Acquire);
        let (st, kind, owner) = decode(word);
        if st != stamp(head) {
            return false;
        }
        let gone = match kind {
            EMPTY => !(0..RECORDS).any(|i| self.record(i).claims(head) && live.alive(self, i)),
            WRITING => self.mark_owner_gone(owner, live),
            _ => false,
        };
        // One CAS from the very state judged: a late owner's publish and this
        // repair cannot both happen, and no meta word is written (a repairer that
        // stalls here cannot clobber a later message's).
        gone && self
            .state(idx)
            .compare_exchange(
                word,
                state(head, FULL, SKIP_ONE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Frees a taken message at `pos` whose taker is gone, taking it over from the
    /// state `word` it was judged in. Every step is a CAS, so a repairer that
    /// redoes the work of another (which left an [`ANON`] mark) changes nothing
    /// twice. Whether it did.
    fn take_over_taken(&self, pos: u64, word: u64) -> bool {
        let idx = self.index(pos) as usize;
        let (_, kind, owner) = decode(word);
        // One slot for sure (no meta word to read): a SKIP_ONE, a one-slot message
        // with its length in the state word, or another repairer's ANON_ONE mark.
        let one = owner == SKIP_ONE
            || owner == ANON_ONE
            || kind == FULL && owner != 0 && owner <= INLINE_MAX;
        let taken = state(pos, READING, if one { ANON_ONE } else { ANON });
        if self
            .state(idx)
            .compare_exchange(word, taken, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let span = if one {
            1
        } else {
            self.lead_span(idx).unwrap_or(1)
        };
        for j in 1..span {
            let p = pos.wrapping_add(j);
            // Paired with the producer's Acquire load in `first_busy`.
            let _ = self.state(idx + j as usize).compare_exchange(
                state(p, EMPTY, 0),
                state(p.wrapping_add(self.capacity), EMPTY, 0),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
        // Paired with the producer's Acquire load in `first_busy`.
        let _ = self.state(idx).compare_exchange(
            taken,
            state(pos.wrapping_add(self.capacity), EMPTY, 0),
            Ordering::Release,
            Ordering::Relaxed,
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::HeapMemory;
    use std::collections::VecDeque;

    fn ring(capacity: u64, slot: u64) -> (HeapMemory, Ring) {
        let len = Ring::bytes_for(capacity, slot).unwrap();
        let mem = HeapMemory::new(len).unwrap();
        // SAFETY: fresh zeroed memory of len bytes, used only through this ring.
        let r = unsafe { Ring::init(mem.ptr(), len, capacity, slot) }.unwrap();
        (mem, r)
    }

    fn push(r: &Ring, msg: &[u8]) -> Result<(), PushError> {
        r.try_push_with(msg.len(), |b| b.copy_from_slice(msg))
    }

    fn pop(r: &Ring) -> Result<Vec<u8>, PopError> {
        r.try_pop_with(|b| b.to_vec())
    }

    #[test]
    fn index_is_the_remainder_for_every_capacity() {
        let mem = HeapMemory::new(64).unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for cap in [
            1,
            2,
            3,
            7,
            10,
            1000,
            1024,
            65_535,
            (1 << 31) + 11,
            MAX_CAPACITY - 1,
            MAX_CAPACITY,
        ] {
            let r = Ring::handle(mem.ptr(), cap, 8);
            for pos in [
                0,
                1,
                cap - 1,
                cap,
                cap + 1,
                u64::MAX,
                u64::MAX - cap,
                u64::MAX / 2,
            ] {
                assert_eq!(r.index(pos), pos % cap, "{pos} % {cap}");
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert_eq!(r.index(x), x % cap, "{x} % {cap}");
            }
        }
    }

    #[test]
    fn layout_checks() {
        assert_eq!(Ring::bytes_for(0, 8), None);
        assert_eq!(Ring::bytes_for(4, 12), None);
        assert_eq!(Ring::bytes_for(4, 8), Some(CONTROL_OFFSET + 128 + 32));
        let mem = HeapMemory::new(1024).unwrap();
        // SAFETY: the memory is ours; the call fails before touching it.
        let err = unsafe { Ring::init(mem.ptr(), 100, 4, 8) }.unwrap_err();
        assert_eq!(
            err,
            LayoutError::TooSmall {
                needed: CONTROL_OFFSET + 160,
                given: 100
            }
        );
    }

    #[test]
    fn fifo_with_wrap_and_multi_slot_messages() {
        let (_m, r) = ring(8, 8);
        assert_eq!(pop(&r), Err(PopError::Empty));
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut next = 0u8;
        let n = if cfg!(miri) { 200 } else { 20_000 };
        for i in 0..n {
            let len = (i * 7) % 30;
            let msg: Vec<u8> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            if i % 3 != 2 {
                match push(&r, &msg) {
                    Ok(()) => model.push_back(msg),
                    Err(PushError::Full) => {}
                    Err(e) => panic!("{e}"),
                }
            } else {
                match pop(&r) {
                    Ok(got) => assert_eq!(Some(got), model.pop_front()),
                    Err(PopError::Empty) => assert!(model.is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(r.len() <= 8);
        }
        while let Some(want) = model.pop_front() {
            assert_eq!(pop(&r).unwrap(), want);
        }
        assert_eq!(pop(&r), Err(PopError::Empty));
        assert!(r.is_empty());
    }

    #[test]
    fn sizes_zero_one_slot_and_the_largest() {
        let (_m, r) = ring(4, 16);
        assert_eq!(r.max_message(), 64);
        push(&r, &[]).unwrap();
        assert_eq!(pop(&r).unwrap(), Vec::<u8>::new());
        push(&r, &[1; 16]).unwrap();
        assert_eq!(pop(&r).unwrap(), vec![1; 16]);
        // The largest message needs the ring empty and aligned: padding first.
        push(&r, &[9; 64]).unwrap();
        assert_eq!(pop(&r).unwrap(), vec![9; 64]);
        assert_eq!(
            push(&r, &[0; 65]),
            Err(PushError::TooLarge { len: 65, max: 64 })
        );
    }

    #[test]
    fn full_hands_back_and_panicking_writer_skips() {
        let (_m, r) = ring(2, 8);
        push(&r, b"a").unwrap();
        push(&r, b"b").unwrap();
        assert_eq!(push(&r, b"c"), Err(PushError::Full));
        assert_eq!(pop(&r).unwrap(), b"a");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.try_push_with(1, |_| panic!("writer panics"))
        }));
        assert!(caught.is_err());
        // The abandoned claim became a SKIP entry: consumers step over it.
        assert_eq!(pop(&r).unwrap(), b"b");
        assert_eq!(pop(&r), Err(PopError::Empty));
        push(&r, b"d").unwrap();
        assert_eq!(pop(&r).unwrap(), b"d");
    }

    #[test]
    fn scribbled_ring_gives_errors_not_ub() {
        let (_m, r) = ring(4, 8);
        push(&r, b"x").unwrap();
        // A peer writes an impossible meta word (span 9 in a 4-slot ring) and points
        // the state word at it.
        r.meta_word(0).store(meta(72, 9, 0), Ordering::Relaxed);
        r.state(0).store(state(0, FULL, 0), Ordering::Relaxed);
        assert!(matches!(pop(&r), Err(PopError::Corrupt(_))));
        // The bad entry was dropped; the ring goes on.
        push(&r, b"y").unwrap();
        assert_eq!(pop(&r).unwrap(), b"y");
        // An impossible length in the state word of a one-slot message (9 bytes in
        // an 8-byte slot), through the copy and the guard.
        push(&r, b"z").unwrap();
        r.state(2).store(state(2, FULL, 10), Ordering::Relaxed);
        let mut out = [0u8; 16];
        assert!(matches!(
            r.try_pop_into(&mut out),
            Err(PopError::Corrupt(_))
        ));
        push(&r, b"v").unwrap();
        r.state(3).store(state(3, FULL, 10), Ordering::Relaxed);
        assert!(matches!(pop(&r), Err(PopError::Corrupt(_))));
        push(&r, b"w").unwrap();
        assert_eq!(pop(&r).unwrap(), b"w");
        // A scribbled state word at head: an error, not an endless loop.
        r.state(1).store(u64::MAX, Ordering::Relaxed);
        r.control().tail.store(100, Ordering::Relaxed);
        assert!(pop(&r).is_err());
    }

    /// Makes record `rec` look owned by a thread that no longer exists (pid
    /// 0x7FFF_FFFE is above any real pid_max).
    fn fake_dead_owner(r: &Ring, rec: usize) {
        r.record(rec)
            .owner
            .store(0x7FFF_FFFE << 32 | 1, Ordering::Relaxed);
    }

    #[test]
    fn repair_resolves_claims_and_takes_of_gone_threads() {
        let (_m, r) = ring(4, 8);
        push(&r, b"1").unwrap();
        // A producer that died after its CAS on tail, before publishing: its intent
        // names position 1.
        fake_dead_owner(&r, 100);
        r.record(100).prod_pos.store(1, Ordering::Relaxed);
        r.record(100).prod_end.store(2, Ordering::Relaxed);
        r.control().tail.store(2, Ordering::Relaxed);
        assert_eq!(pop(&r).unwrap(), b"1");
        assert_eq!(pop(&r), Err(PopError::Empty));
        assert_eq!(r.repair(), 1);
        push(&r, b"2").unwrap();
        assert_eq!(pop(&r).unwrap(), b"2"); // the abandoned claim was skipped
        // A live claimant (this thread's own record) is never repaired.
        let mut held = r.try_claim(1).unwrap();
        held.buf()[0] = b'3';
        assert_eq!(r.repair(), 0);
        held.commit();
        assert_eq!(pop(&r).unwrap(), b"3");
        // A consumer that died after its CAS on head, mid-read: its intent names
        // the message; the message is lost and its slot freed.
        push(&r, b"4").unwrap();
        let head = r.head_position();
        fake_dead_owner(&r, 101);
        r.record(101).cons_pos.store(head, Ordering::Relaxed);
        r.record(101).cons_end.store(head + 1, Ordering::Relaxed);
        r.control().head.store(head + 1, Ordering::Relaxed);
        for m in [b"5", b"6", b"7"] {
            push(&r, m).unwrap();
        }
        assert_eq!(push(&r, b"8"), Err(PushError::Full));
        assert_eq!(r.repair(), 1);
        push(&r, b"8").unwrap();
        for m in [b"5", b"6", b"7", b"8"] {
            assert_eq!(pop(&r).unwrap(), m);
        }
        // A READING mark of a gone owner (a take held while taking another).
        push(&r, b"9").unwrap();
        let head = r.head_position();
        r.control().head.store(head + 1, Ordering::Relaxed);
        // As `move_with_intent` does: the held take's span first, then the mark.
        r.meta_word(r.index(head) as usize)
            .store(meta(0, 1, 0), Ordering::Relaxed);
        r.mark(head, READING, 101);
        assert_eq!(r.repair(), 1);
        assert_eq!(pop(&r), Err(PopError::Empty));
        assert_eq!(r.len(), 0);
    }

    /// A one-slot message keeps its length in the state word and leaves its meta
    /// word alone, so that word may still hold the span of an older message. A take
    /// held while taking another is marked READING with the span of the take put in
    /// the meta word first: a repairer frees exactly its slot, not the stale span's.
    #[test]
    fn a_held_take_of_a_one_slot_message_frees_only_its_slot() {
        let (_m, r) = ring(4, 8);
        push(&r, &[7; 24]).unwrap(); // positions 0..3: meta word 0 says span 3
        assert_eq!(pop(&r).unwrap(), [7; 24]);
        push(&r, b"x").unwrap(); // position 3
        assert_eq!(pop(&r).unwrap(), b"x");
        push(&r, b"a").unwrap(); // position 4, slot 0: inline, stale meta
        push(&r, b"b").unwrap(); // position 5, slot 1
        let a = r.try_take().unwrap();
        let b = r.try_take().unwrap(); // marks a READING
        let rec = a.rec;
        std::mem::forget((a, b)); // the thread dies holding both
        fake_dead_owner(&r, rec);
        assert_eq!(r.repair(), 2);
        // Slot 2 (position 6) was never claimed and must still be free at 6.
        for m in [b"c", b"d", b"e", b"f"] {
            push(&r, m).unwrap();
        }
        for m in [b"c", b"d", b"e", b"f"] {
            assert_eq!(pop(&r).unwrap(), m);
        }
        assert_eq!(r.len(), 0);
    }

    /// `try_pop_slice` never hands out an entry as an item unless it is a one-slot
    /// message of exactly the item's length, and never items longer than a slot
    /// (which would read past it).
    #[test]
    fn pop_slice_takes_only_one_slot_items_of_its_length() {
        let (_m, r) = ring(8, 8);
        push(&r, &[1; 16]).unwrap(); // two slots, meta word
        let mut out = [0u8; 64];
        assert_eq!(r.try_pop_slice(&mut out, 16), 0); // longer than a slot
        assert_eq!(r.try_pop_slice(&mut out, 8), 0); // not a one-slot item
        assert_eq!(r.try_pop_slice(&mut out, 0), 0);
        assert_eq!(pop(&r).unwrap(), [1; 16]);
        push(&r, &[2; 4]).unwrap();
        assert_eq!(r.try_pop_slice(&mut out, 8), 0); // another length
        assert_eq!(r.try_pop_slice(&mut out, 4), 1);
        assert_eq!(out[..4], [2; 4]);
    }

    #[test]
    fn an_earlier_process_with_my_pid_is_neither_adopted_nor_trusted() {
        let (_m, r) = ring(4, 8);
        // A record left by a dead process that had this pid and tid (a restarted
        // container's pid 1): another nonce, another start time, and a claim at 0
        // it never published.
        let rec = r.record(7);
        rec.owner.store(my_identity(), Ordering::Relaxed);
        rec.start.store(1, Ordering::Relaxed);
        rec.nonce.store(my_nonce() ^ 2, Ordering::Relaxed);
        rec.prod_pos.store(0, Ordering::Relaxed);
        rec.prod_end.store(1, Ordering::Relaxed);
        r.control().tail.store(1, Ordering::Relaxed);
        // Not adopted: this thread gets a record of its own ...
        assert_ne!(r.my_record(), Some(7));
        // ... and the earlier process counts as gone: its claim is skipped.
        assert_eq!(r.repair(), 1);
        push(&r, b"x").unwrap();
        assert_eq!(pop(&r).unwrap(), b"x");
    }

    #[test]
    fn repair_needs_no_record_when_the_dead_hold_them_all() {
        let (_m, r) = ring(4, 8);
        // Every record belongs to a dead thread with an unfinished claim, so none
        // can be reused, and this thread gets none.
        for i in 0..RECORDS {
            fake_dead_owner(&r, i);
            r.record(i).prod_pos.store(0, Ordering::Relaxed);
            r.record(i).prod_end.store(1, Ordering::Relaxed);
        }
        r.control().tail.store(1, Ordering::Relaxed);
        assert_eq!(r.my_record(), None);
        assert_eq!(pop(&r), Err(PopError::Empty));
        // The repair still turns the dead claim into a skip entry ...
        assert_eq!(r.repair(), 1);
        // ... after which the records are settled, reusable, and the ring works.
        push(&r, b"y").unwrap();
        assert_eq!(pop(&r).unwrap(), b"y");
    }

    #[test]
    fn runs_of_items_are_claimed_and_taken_with_one_cas_in_order() {
        let (_m, r) = ring(8, 16);
        let items: Vec<u8> = (0..10u64).flat_map(|i| i.to_le_bytes()).collect();
        // Eight fit; the run stops at the end of the ring, the next starts at 0.
        assert_eq!(r.try_push_slice(&items, 8), Ok(8));
        let mut out = vec![0u8; 5 * 8];
        assert_eq!(r.try_pop_slice(&mut out, 8), 5);
        assert_eq!(out, items[..40]);
        assert_eq!(r.try_push_slice(&items[64..], 8), Ok(2));
        // A message of another size stops a run; the general path takes it.
        r.try_push_with(12, |b| b.fill(7)).unwrap();
        // Runs do not wrap either: 5..8 up to the end, then 8..10 from slot 0.
        let mut out = vec![0u8; 16 * 8];
        assert_eq!(r.try_pop_slice(&mut out, 8), 3);
        assert_eq!(r.try_pop_slice(&mut out[24..], 8), 2);
        let want: Vec<u8> = (5..10u64).flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(out[..40], want[..]);
        assert_eq!(r.try_pop_slice(&mut out, 8), 0);
        let mut big = [0u8; 16];
        assert_eq!(r.try_pop_into(&mut big), Ok(12));
        assert_eq!(r.try_pop_slice(&mut out, 8), 0);
        assert!(r.is_empty());
        assert_eq!(
            r.try_push_slice(&[0; 17], 17),
            Err(PushError::TooLarge { len: 17, max: 16 })
        );
    }

    #[test]
    fn a_run_claimed_by_a_dead_producer_is_skipped_slot_by_slot() {
        let (_m, r) = ring(8, 8);
        push(&r, b"a").unwrap();
        // A dead producer claimed positions 1..4 as one run and published 2 only.
        fake_dead_owner(&r, 9);
        r.record(9).prod_pos.store(1, Ordering::Relaxed);
        r.record(9).prod_end.store(4, Ordering::Relaxed);
        r.control().tail.store(4, Ordering::Relaxed);
        r.publish(2, 1, 1, 0);
        assert_eq!(pop(&r).unwrap(), b"a");
        assert_eq!(pop(&r), Err(PopError::Empty));
        // Position 1 is skipped; 2 was published and is delivered; then 3 skipped.
        assert_eq!(r.repair(), 1);
        assert_eq!(pop(&r).unwrap(), [0u8]);
        assert_eq!(r.repair(), 1);
        push(&r, b"b").unwrap();
        assert_eq!(pop(&r).unwrap(), b"b");
        assert!(r.is_empty());
    }

    #[test]
    fn holding_two_claims_and_two_takes_marks_the_first() {
        let (_m, r) = ring(8, 8);
        let mut a = r.try_claim(1).unwrap();
        let mut b = r.try_claim(1).unwrap();
        a.buf()[0] = b'a';
        b.buf()[0] = b'b';
        let (_, kind, _) = decode(r.state(0).load(Ordering::Relaxed));
        assert_eq!(kind, WRITING, "the first claim is marked");
        b.commit();
        a.commit();
        let x = r.try_take().unwrap();
        let y = r.try_take().unwrap();
        assert_eq!((x.bytes(), y.bytes()), (&b"a"[..], &b"b"[..]));
        let (_, kind, _) = decode(r.state(0).load(Ordering::Relaxed));
        assert_eq!(kind, READING, "the first take is marked");
        drop(x);
        drop(y);
        assert_eq!(r.repair(), 0);
        assert!(r.is_empty());
        push(&r, b"c").unwrap();
        assert_eq!(pop(&r).unwrap(), b"c");
    }

    #[test]
    fn threads_exchange_every_message_exactly_once_in_order_per_producer() {
        const PRODUCERS: u64 = 3;
        const CONSUMERS: usize = 3;
        let per = if cfg!(miri) { 100 } else { 100_000 };
        let (_m, r) = ring(16, 8);
        let done = std::sync::atomic::AtomicU64::new(0);
        let seen = std::thread::scope(|s| {
            for p in 0..PRODUCERS {
                let r = &r;
                s.spawn(move || {
                    for i in 0..per {
                        // Sizes 8..24 bytes: one to three slots.
                        let len = 8 + (i % 3) as usize * 8;
                        let mut msg = vec![0u8; len];
                        msg[..8].copy_from_slice(&((p << 56) | i).to_le_bytes());
                        while let Err(e) = push(r, &msg) {
                            assert_eq!(e, PushError::Full);
                            std::thread::yield_now();
                        }
                    }
                });
            }
            let handles: Vec<_> = (0..CONSUMERS)
                .map(|_| {
                    let (r, done) = (&r, &done);
                    s.spawn(move || {
                        let mut last = [None::<u64>; PRODUCERS as usize];
                        let mut got = Vec::new();
                        while done.load(Ordering::Relaxed) < PRODUCERS * per {
                            match pop(r) {
                                Ok(m) => {
                                    let v = u64::from_le_bytes(m[..8].try_into().unwrap());
                                    let (p, i) = ((v >> 56) as usize, v & ((1 << 56) - 1));
                                    assert_eq!(m.len(), 8 + (i % 3) as usize * 8);
                                    if let Some(prev) = last[p] {
                                        assert!(i > prev, "producer {p}: {i} after {prev}");
                                    }
                                    last[p] = Some(i);
                                    got.push(v);
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(PopError::Empty) => std::thread::yield_now(),
                                Err(e) => panic!("{e}"),
                            }
                        }
                        got
                    })
                })
                .collect();
            let mut all: Vec<u64> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            all.sort_unstable();
            all
        });
        // Every message exactly once: no loss, no duplicate.
        let mut want: Vec<u64> = (0..PRODUCERS)
            .flat_map(|p| (0..per).map(move |i| (p << 56) | i))
            .collect();
        want.sort_unstable();
        assert!(
            seen == want,
            "{} delivered, {} sent",
            seen.len(),
            want.len()
        );
        assert_eq!(pop(&r), Err(PopError::Empty));
    }
}
