//! `Queue`, `JoinableQueue`, `SimpleQueue` and `ByteQueue`: Python's
//! `multiprocessing.Queue` family on the robust MPMC ring ([`crate::ring::mpmc`]).
//!
//! Each item goes to exactly one consumer; any number of producer and consumer
//! processes may share a queue, by name or by inheriting it through
//! [`Process`](crate::Process).
//!
//! | Python | shmproc |
//! |---|---|
//! | `Queue(maxsize)` | [`Queue::new`] (anonymous), [`Queue::create`] / [`Queue::open`] (named) |
//! | `put(obj)` / `put(obj, timeout=t)` / `put_nowait(obj)` | [`Queue::put`] / [`Queue::put_timeout`] / [`Queue::put_nowait`] |
//! | `get()` / `get(timeout=t)` / `get_nowait()` | [`Queue::get`] / [`Queue::get_timeout`] / [`Queue::get_nowait`] |
//! | `Queue()` (no maxsize) | [`Queue::new`]`(0)`: room for [`UNBOUNDED_MAXSIZE`] items, then [`PutError::DefaultMaxsizeReached`] |
//! | `qsize()`, `empty()`, `full()` | [`Queue::qsize`], [`Queue::empty`], [`Queue::full`] (`Err(`[`Closed`]`)` on a closed handle, Python's `ValueError`) |
//! | `close()` | [`Queue::close`] (this handle only), [`Queue::closed`] |
//! | `shutdown(immediate)`, `queue.ShutDown` (3.13) | [`Queue::shutdown`], [`JoinableQueue::shutdown`]; [`PutError::ShutDown`], [`GetError::ShutDown`] |
//! | `queue.Full`, `queue.Empty` | [`PutError::Full`] (item handed back), [`GetError::Empty`] |
//! | `JoinableQueue.task_done()`, `join()` | [`JoinableQueue::task_done`], [`JoinableQueue::join`] |
//! | `SimpleQueue` | [`SimpleQueue`] |
//!
//! Payloads: [`Queue<T>`] carries plain-old-data `T` (a copy into the slot, no
//! serialization); [`ByteQueue`] carries byte messages of any length up to the ring's
//! size, a message larger than a slot spanning consecutive slots.
//!
//! # What a crash can lose
//!
//! A process killed with SIGKILL loses at most the one message it had in flight: a
//! producer killed between claiming a slot and publishing it loses that message; a
//! consumer killed between taking a message and returning from `get` loses that one.
//! Survivors never hang on either: a blocked `put` or `get` that stalls checks whether
//! the owner of the slot it waits on is alive and repairs the ring if not. No message
//! is ever delivered twice or torn. (`JoinableQueue`: a message lost this way was
//! counted as unfinished and is never marked done, so `join` waits for it — use
//! [`JoinableQueue::join_timeout`] where producers may die.)

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout, TypeName};
use crate::os::clock::Deadline;
use crate::ring::mpmc::{PopError, PushError, ReadSlot, Ring, WriteSlot};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::wait::{EventCount, Spin};
use bytemuck::Pod;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a call may wait.
#[derive(Clone, Copy, Debug)]
enum Block {
    /// Not at all.
    No,
    /// Until the deadline (`None`: forever).
    Until(Option<Deadline>),
}

impl Block {
    fn timeout(t: Duration) -> Block {
        if t.is_zero() {
            Block::No
        } else {
            Block::Until(Some(Deadline::after(t)))
        }
    }
}

/// The room a queue made with `maxsize` 0 gets: Python's "no limit" cannot be had
/// in a fixed-size segment, so such a queue holds up to this many items, and a `put`
/// that finds it full fails at once with [`PutError::DefaultMaxsizeReached`] (it does
/// not wait: in Python it would not have) instead of `Full`.
pub const UNBOUNDED_MAXSIZE: usize = 1 << 16;

/// The ring's `user_words` this module uses: JoinableQueue's unfinished count, the
/// shutdown state (one of [`RUNNING`], [`SHUT_DOWN`], [`SHUT_DOWN_NOW`]), and whether
/// the queue was made with `maxsize` 0 (1) or not (0). All zero in a fresh ring, and
/// zero is each word's "nothing happened" meaning, so a queue made by an older build
/// reads as running and bounded.
const UNFINISHED_WORD: usize = 0;
const SHUTDOWN_WORD: usize = 1;
const UNBOUNDED_WORD: usize = 2;

/// Shutdown states (the `SHUTDOWN_WORD`): only ever raised, with `fetch_max`.
const RUNNING: u64 = 0;
/// `shutdown(false)`: puts fail; gets drain what is left, then fail.
const SHUT_DOWN: u64 = 1;
/// `shutdown(true)`: as `SHUT_DOWN`, and the items were discarded.
const SHUT_DOWN_NOW: u64 = 2;

/// The element type recorded for byte queues.
const BYTES: ElemType = ElemType {
    name: TypeName::new("bytes"),
    size: 1,
    align: 1,
};

/// What every queue handle shares: the segment and the ring in it.
#[derive(Debug)]
struct Core {
    ring: Ring,
    /// Keeps the mapping alive for `ring`.
    segment: Segment,
}

impl Core {
    fn layout(
        kind: ObjectKind,
        elem: ElemType,
        capacity: u64,
        slot_size: u64,
    ) -> Result<ObjectLayout, CreateError> {
        let payload_size = Ring::bytes_for(capacity, slot_size).ok_or_else(|| {
            CreateError::InvalidArgument(format!(
                "a queue of {capacity} slots of {slot_size} bytes (capacity must be 1..={}, slot size a multiple of 8, and the total addressable)",
                crate::ring::mpmc::MAX_CAPACITY
            ))
        })?;
        Ok(ObjectLayout {
            kind,
            elem,
            slot_size: u32::try_from(slot_size).map_err(|_| {
                CreateError::InvalidArgument(format!("slot size {slot_size} is above 4 GiB"))
            })?,
            capacity,
            payload_size: payload_size as u64,
        })
    }

    fn init(layout: &ObjectLayout, unbounded: bool) -> impl FnOnce(std::ptr::NonNull<u8>, usize) {
        let (capacity, slot_size) = (layout.capacity, u64::from(layout.slot_size));
        move |payload, len| {
            // SAFETY: the payload is fresh, zero-filled, 128-aligned memory of `len`
            // bytes that no other process uses before the segment is published.
            let r = unsafe { Ring::init(payload, len, capacity, slot_size) };
            debug_assert!(r.is_ok(), "{r:?}");
            if let Ok(ring) = r {
                // Before the segment is published: every opener sees it.
                ring.user_words()[UNBOUNDED_WORD].store(u64::from(unbounded), Ordering::Relaxed);
            }
        }
    }

    fn from_segment(segment: Segment) -> Result<Core, OpenError> {
        let l = segment.info().layout;
        let name = segment.name().unwrap_or("<anonymous>").to_string();
        let needed = Ring::bytes_for(l.capacity, u64::from(l.slot_size));
        if needed != Some(segment.payload_len()) {
            return Err(OpenError::IncompatibleLayout {
                name,
                what: "ring size",
                expected: match needed {
                    Some(n) => format!(
                        "{n} bytes for {} slots of {} bytes",
                        l.capacity, l.slot_size
                    ),
                    None => format!(
                        "valid ring parameters, not {} slots of {} bytes",
                        l.capacity, l.slot_size
                    ),
                },
                found: format!("{} bytes", segment.payload_len()),
            });
        }
        // SAFETY: the payload is a live mapping of payload_len bytes, 128-aligned,
        // owned by `segment` which the Core keeps alive; it was initialized as a ring
        // with these parameters by the creator (whose header we validated), and is
        // only used through Ring handles.
        let ring = unsafe {
            Ring::attach(
                segment.payload(),
                segment.payload_len(),
                l.capacity,
                u64::from(l.slot_size),
            )
        }
        .map_err(|e| OpenError::IncompatibleLayout {
            name,
            what: "ring",
            expected: "a valid ring".into(),
            found: e.to_string(),
        })?;
        Ok(Core { ring, segment })
    }

    fn new_anonymous(layout: &ObjectLayout, unbounded: bool) -> Result<Core, CreateError> {
        let segment = Segment::anonymous(layout, Core::init(layout, unbounded))?;
        Core::from_segment(segment).map_err(|e| CreateError::InvalidArgument(e.to_string()))
    }

    fn create(
        name: &str,
        layout: &ObjectLayout,
        options: CreateOptions,
        unbounded: bool,
    ) -> Result<Core, CreateError> {
        let segment = Segment::create(name, layout, options, Core::init(layout, unbounded))?;
        Core::from_segment(segment).map_err(|e| CreateError::InvalidArgument(e.to_string()))
    }

    fn open(
        name: &str,
        kind: ObjectKind,
        elem: ElemType,
        slot_size: Option<u64>,
    ) -> Result<Core, OpenError> {
        let segment = Segment::open(name, kind, elem, OpenOptions::new())?;
        if let Some(want) = slot_size {
            let found = u64::from(segment.info().layout.slot_size);
            if found != want {
                return Err(OpenError::IncompatibleLayout {
                    name: name.to_string(),
                    what: "slot size",
                    expected: format!("{want} bytes"),
                    found: format!("{found} bytes"),
                });
            }
        }
        Core::from_segment(segment)
    }

    /// Claims room for a message of `len` bytes, waiting as `block` allows. The first
    /// try is inline (the guard stays in registers); waiting is out of line.
    #[inline]
    fn claim(&self, len: usize, block: Block, spin: Spin) -> Result<WriteSlot<'_>, PushError> {
        match (self.ring.try_claim(len), block) {
            (Err(PushError::Full), Block::Until(deadline)) if !self.unbounded() => {
                self.claim_wait(len, deadline, spin)
            }
            (r, _) => r,
        }
    }

    /// Waits for room. While a wait stalls, repairs what gone producers or
    /// consumers left unfinished.
    #[inline(never)]
    fn claim_wait(
        &self,
        len: usize,
        deadline: Option<Deadline>,
        spin: Spin,
    ) -> Result<WriteSlot<'_>, PushError> {
        self.wait_for_batch_room(spin, deadline);
        self.wait_repairing(
            self.ring.not_full(),
            spin,
            deadline,
            PushError::Full,
            || match self.ring.try_claim(len) {
                // A shutdown ends the wait: `Full`, which the caller reads as
                // `ShutDown` (see `Core::shut_down`).
                Err(PushError::Full) if self.shut_down() => Err(Some(PushError::Full)),
                Err(PushError::Full) => Err(None),
                r => r.map_err(Some),
            },
        )
    }

    /// A producer that found the ring full first waits, for at most
    /// [`BATCH_WAIT`] of its spin, until a batch of slots is free: resuming at once
    /// would put it on the very line the consumers are reading, and the two sides
    /// would then trade that line for every item. (Bounded, so a consumer that
    /// takes one item and then waits for this producer costs it only that long.)
    fn wait_for_batch_room(&self, spin: Spin, deadline: Option<Deadline>) {
        let batch = (self.ring.capacity() / 4).min(64);
        if batch < 2 || spin.duration.is_zero() {
            return;
        }
        let until = Deadline::after(spin.duration.min(BATCH_WAIT));
        let until = deadline.map_or(until, |d| d.min(until));
        while !until.expired() {
            for _ in 0..32 {
                if self.ring.room_ahead(batch - 1) {
                    return;
                }
                std::hint::spin_loop();
            }
        }
    }

    /// Takes a message, waiting as `block` allows; inline first try, as for `claim`.
    #[inline]
    fn take(&self, block: Block, spin: Spin) -> Result<ReadSlot<'_>, PopError> {
        match (self.ring.try_take(), block) {
            (Err(PopError::Empty), Block::Until(deadline)) => self.take_wait(deadline, spin),
            (r, _) => r,
        }
    }

    /// Waits for a message. While a wait stalls, repairs what gone producers or
    /// consumers left unfinished.
    #[inline(never)]
    fn take_wait(&self, deadline: Option<Deadline>, spin: Spin) -> Result<ReadSlot<'_>, PopError> {
        self.wait_repairing(
            self.ring.not_empty(),
            spin,
            deadline,
            PopError::Empty,
            || match self.ring.try_take() {
                // Empty and shut down ends the wait (the caller says `ShutDown`).
                Err(PopError::Empty) if self.shut_down() => Err(Some(PopError::Empty)),
                Err(PopError::Empty) => Err(None),
                r => r.map_err(Some),
            },
        )
    }
}

impl Core {
    /// Copies `msg` in as one message, waiting for room as `block` allows: the
    /// guard-free path of `put` (a guard returned through the wait's frames costs
    /// store-forwarding stalls on every item a waiting producer puts).
    #[inline]
    fn push(&self, msg: &[u8], block: Block, spin: Spin) -> Result<(), PushError> {
        match (self.ring.try_push(msg), block) {
            (Err(PushError::Full), Block::Until(deadline)) if !self.unbounded() => {
                self.push_wait(msg, deadline, spin)
            }
            (r, _) => r,
        }
    }

    /// Waits for room for `msg` and copies it in (see [`Core::wait_repairing`]).
    #[inline(never)]
    fn push_wait(
        &self,
        msg: &[u8],
        deadline: Option<Deadline>,
        spin: Spin,
    ) -> Result<(), PushError> {
        self.wait_for_batch_room(spin, deadline);
        self.wait_repairing(
            self.ring.not_full(),
            spin,
            deadline,
            PushError::Full,
            || match self.ring.try_push(msg) {
                Err(PushError::Full) if self.shut_down() => Err(Some(PushError::Full)),
                Err(PushError::Full) => Err(None),
                r => r.map_err(Some),
            },
        )
    }

    /// Copies one message out into `out`, waiting for one as `block` allows; its
    /// length. The guard-free path of `get` (see [`Core::push`]).
    #[inline]
    fn pop_into(&self, out: &mut [u8], block: Block, spin: Spin) -> Result<usize, PopError> {
        match (self.ring.try_pop_into(out), block) {
            (Err(PopError::Empty), Block::Until(deadline)) => self.pop_wait(out, deadline, spin),
            (r, _) => r,
        }
    }

    /// Waits for a message and copies it out (see [`Core::wait_repairing`]).
    #[inline(never)]
    fn pop_wait(
        &self,
        out: &mut [u8],
        deadline: Option<Deadline>,
        spin: Spin,
    ) -> Result<usize, PopError> {
        self.wait_repairing(
            self.ring.not_empty(),
            spin,
            deadline,
            PopError::Empty,
            || match self.ring.try_pop_into(out) {
                Err(PopError::Empty) if self.shut_down() => Err(Some(PopError::Empty)),
                Err(PopError::Empty) => Err(None),
                r => r.map_err(Some),
            },
        )
    }

    /// Waits on `event` until `attempt` succeeds (`Ok`) or fails for good
    /// (`Err(Some(e))`; `Err(None)`: try again), repairing the ring while the wait
    /// stalls (the next attempt then finds what a repair freed); `timed_out` past
    /// the deadline. Each poll returns a small value, its error waiting in a cell: a
    /// poll returning a `Result` whose error owns a `String` goes through memory,
    /// which made every hand-off of a ping-pong slower (queue pair RTT 190 → 150 ns).
    fn wait_repairing<R, E>(
        &self,
        event: &EventCount,
        spin: Spin,
        deadline: Option<Deadline>,
        timed_out: E,
        mut attempt: impl FnMut() -> Result<R, Option<E>>,
    ) -> Result<R, E> {
        let failed = Cell::new(None);
        let poll = || match attempt() {
            Ok(v) => Some(Some(v)),
            Err(None) => None,
            Err(Some(e)) => {
                failed.set(Some(e));
                Some(None)
            }
        };
        let on_stall = || {
            self.ring.repair();
            None
        };
        match event.wait_until_checked(spin, deadline, poll, on_stall) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(failed.take().unwrap_or(timed_out)),
            Err(_) => Err(timed_out),
        }
    }
}

impl Core {
    /// Whether the queue was shut down (by any process). Acquire; paired with the
    /// `fetch_max` in [`Core::shutdown`]. A put loads it first (one load of a line
    /// that is written only by `shutdown` and, in a JoinableQueue, by the task
    /// count); a get only once the queue is empty.
    #[inline]
    fn shut_down(&self) -> bool {
        self.ring.user_words()[SHUTDOWN_WORD].load(Ordering::Acquire) != RUNNING
    }

    /// Whether the queue was made with `maxsize` 0 (see [`UNBOUNDED_MAXSIZE`]).
    fn unbounded(&self) -> bool {
        self.ring.user_words()[UNBOUNDED_WORD].load(Ordering::Relaxed) != 0
    }

    /// What an `Empty` (or `Corrupt`) from the ring means for a get: `ShutDown` once
    /// the queue is shut down and empty.
    #[cold]
    fn get_error(&self, e: PopError) -> GetError {
        match e {
            PopError::Empty if self.shut_down() => GetError::ShutDown,
            e => e.into(),
        }
    }

    /// Shuts the queue down for every process (Python 3.13's `Queue.shutdown`):
    /// later puts fail with `ShutDown`, gets take what is left and then fail with
    /// `ShutDown`; with `immediate`, what is left is discarded now. Wakes every
    /// blocked putter, getter and joiner. Returns how many items were discarded.
    ///
    /// A put that had already looked at the state when it changed may still land
    /// (there is no lock to order them); a get then takes it.
    fn shutdown(&self, immediate: bool) -> u64 {
        let state = if immediate { SHUT_DOWN_NOW } else { SHUT_DOWN };
        // Release; paired with the Acquire load in `shut_down`.
        self.ring.user_words()[SHUTDOWN_WORD].fetch_max(state, Ordering::AcqRel);
        let mut drained = 0;
        if immediate {
            // Bounded: only puts that raced the state change can add more.
            let bound = self.ring.capacity().saturating_mul(2).saturating_add(64);
            while drained < bound {
                match self.ring.try_take() {
                    Ok(slot) => {
                        drop(slot);
                        drained += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        self.ring.notify_consumers();
        self.ring.notify_producers();
        drained
    }
}

/// Longest a producer waits for a batch of room (see `Core::wait_for_batch_room`).
const BATCH_WAIT: Duration = Duration::from_micros(5);

/// A handle's own state: closed or not, and how it waits.
#[derive(Debug)]
struct HandleState {
    closed: AtomicBool,
    /// The spin duration in nanoseconds (an atomic, so reading it costs a load).
    spin_nanos: std::sync::atomic::AtomicU64,
}

impl HandleState {
    fn new() -> HandleState {
        HandleState {
            closed: AtomicBool::new(false),
            spin_nanos: std::sync::atomic::AtomicU64::new(Spin::DEFAULT.duration.as_nanos() as u64),
        }
    }

    #[inline]
    fn spin(&self) -> Spin {
        Spin {
            duration: Duration::from_nanos(self.spin_nanos.load(Ordering::Relaxed)),
        }
    }

    fn set_spin(&self, spin: Spin) {
        let nanos = u64::try_from(spin.duration.as_nanos()).unwrap_or(u64::MAX);
        self.spin_nanos.store(nanos, Ordering::Relaxed);
    }

    #[inline]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// Why an item was not put. The item is handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PutError<T> {
    /// The queue stayed full (for `put_nowait`, or until the timeout) — Python's
    /// `queue.Full`.
    Full(T),
    /// This handle was closed.
    Closed(T),
    /// The queue was shut down (Python 3.13's `queue.ShutDown`), by this process or
    /// another.
    ShutDown(T),
    /// The queue was made with `maxsize` 0 (Python's "no limit") and holds
    /// [`UNBOUNDED_MAXSIZE`] items already: the default ran out. (Such a put does not
    /// wait.)
    DefaultMaxsizeReached(T),
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t)
            | PutError::Closed(t)
            | PutError::ShutDown(t)
            | PutError::DefaultMaxsizeReached(t) => t,
        }
    }

    /// The same error carrying `u` instead.
    fn carrying<U>(self, u: U) -> PutError<U> {
        match self {
            PutError::Full(_) => PutError::Full(u),
            PutError::Closed(_) => PutError::Closed(u),
            PutError::ShutDown(_) => PutError::ShutDown(u),
            PutError::DefaultMaxsizeReached(_) => PutError::DefaultMaxsizeReached(u),
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::ShutDown(_) => f.write_str("ShutDown(..)"),
            PutError::DefaultMaxsizeReached(_) => f.write_str("DefaultMaxsizeReached(..)"),
        }
    }
}

/// The message of a `DefaultMaxsizeReached` error.
fn default_maxsize_message(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(
        f,
        "queue is full: it was made with maxsize 0 (no limit in Python), which in shared memory means the default of {UNBOUNDED_MAXSIZE} items (queue::UNBOUNDED_MAXSIZE); make it with a larger maxsize"
    )
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("queue is full"),
            PutError::Closed(_) => f.write_str("queue handle is closed"),
            PutError::ShutDown(_) => f.write_str("queue is shut down"),
            PutError::DefaultMaxsizeReached(_) => default_maxsize_message(f),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

/// Why no item was got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetError {
    /// The queue stayed empty (for `get_nowait`, or until the timeout) — Python's
    /// `queue.Empty`.
    Empty,
    /// This handle was closed.
    Closed,
    /// The queue was shut down and nothing is left in it (Python 3.13's
    /// `queue.ShutDown`).
    ShutDown,
    /// The queue's shared memory is inconsistent, or a message has the wrong size
    /// for this handle's type (a peer scribbled on it). The bad message was dropped.
    Corrupt(String),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => f.write_str("queue is empty"),
            GetError::Closed => f.write_str("queue handle is closed"),
            GetError::ShutDown => f.write_str("queue is shut down and empty"),
            GetError::Corrupt(why) => write!(f, "queue is corrupt: {why}"),
        }
    }
}

impl std::error::Error for GetError {}

impl From<PopError> for GetError {
    fn from(e: PopError) -> GetError {
        match e {
            PopError::Empty => GetError::Empty,
            PopError::Corrupt(why) => GetError::Corrupt(why),
        }
    }
}

/// This queue handle was closed: what `qsize`, `empty` and `full` answer then
/// (Python's `ValueError: Queue is closed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue handle is closed")
    }
}

impl std::error::Error for Closed {}

/// Why a byte message was not put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutBytesError {
    /// The queue stayed full (for `put_nowait`, or until the timeout).
    Full,
    /// The message can never fit this queue.
    TooLarge {
        /// Bytes in the message.
        len: usize,
        /// The largest message the queue holds.
        max: usize,
    },
    /// This handle was closed.
    Closed,
    /// The queue was shut down.
    ShutDown,
    /// A queue made with `maxsize` 0 holds [`UNBOUNDED_MAXSIZE`] items already.
    DefaultMaxsizeReached,
}

impl fmt::Display for PutBytesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutBytesError::Full => f.write_str("queue is full"),
            PutBytesError::ShutDown => f.write_str("queue is shut down"),
            PutBytesError::DefaultMaxsizeReached => default_maxsize_message(f),
            PutBytesError::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes can never fit: this queue holds messages of at most {max} bytes"
            ),
            PutBytesError::Closed => f.write_str("queue handle is closed"),
        }
    }
}

impl std::error::Error for PutBytesError {}

impl From<PushError> for PutBytesError {
    fn from(e: PushError) -> PutBytesError {
        match e {
            PushError::Full => PutBytesError::Full,
            PushError::TooLarge { len, max } => PutBytesError::TooLarge { len, max },
        }
    }
}

/// Slot size for items of type `T`: its size rounded up to 8 bytes.
fn slot_for<T>() -> u64 {
    (size_of::<T>().max(1) as u64).next_multiple_of(8)
}

/// A bounded multi-producer multi-consumer queue of plain-old-data items in shared
/// memory: Python's `multiprocessing.Queue`.
///
/// Items are copied into and out of the ring (no serialization). `put` and `get` make
/// no syscall unless the other side sleeps; a blocked `put`/`get` spins briefly, then
/// sleeps on a futex using no CPU.
///
/// Handles are cheap to clone (clones share the mapping, each has its own `close`).
/// A child started with [`Process`](crate::Process) uses the parent's queue directly.
///
/// # Examples
///
/// ```
/// use shmproc::{Process, Queue};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = Queue::<u64>::new(16)?;
/// let mut child = Process::spawn(|| {
///     for i in 0..100 {
///         q.put(i).unwrap();
///     }
/// })?;
/// let sum: u64 = (0..100).map(|_| q.get().unwrap()).sum();
/// assert_eq!(sum, 4950);
/// child.join()?;
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    core: Arc<Core>,
    handle: HandleState,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.core.segment.name())
            .field("maxsize", &self.core.ring.capacity())
            .field("qsize", &self.core.ring.len())
            .finish()
    }
}

impl<T> Clone for Queue<T> {
    /// Another handle to the same queue, open even if this one is closed.
    fn clone(&self) -> Queue<T> {
        let handle = HandleState::new();
        handle.set_spin(self.handle.spin());
        Queue {
            core: self.core.clone(),
            handle,
            _items: PhantomData,
        }
    }
}

impl<T: Pod> Queue<T> {
    /// `maxsize` 0 means [`UNBOUNDED_MAXSIZE`].
    fn layout(kind: ObjectKind, maxsize: usize) -> Result<ObjectLayout, CreateError> {
        let capacity = if maxsize == 0 {
            UNBOUNDED_MAXSIZE
        } else {
            maxsize
        };
        Core::layout(kind, ElemType::of::<T>(), capacity as u64, slot_for::<T>())
    }

    fn with_core(core: Core) -> Queue<T> {
        Queue {
            core: Arc::new(core),
            handle: HandleState::new(),
            _items: PhantomData,
        }
    }

    /// An anonymous queue holding up to `maxsize` items; children started with
    /// [`Process`](crate::Process) share it.
    ///
    /// `maxsize` 0 is Python's default, "no limit", which a segment of fixed size
    /// cannot give: the queue then holds up to [`UNBOUNDED_MAXSIZE`] (65 536) items,
    /// and a `put` that finds it full fails at once with
    /// [`PutError::DefaultMaxsizeReached`], whose message names the default, rather
    /// than waiting. (The simpler honest choice over a ring that grows: growth would
    /// mean new segments and every process following them.)
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] for a `maxsize` too large; OS errors.
    pub fn new(maxsize: usize) -> Result<Queue<T>, CreateError> {
        Queue::new_kind(ObjectKind::Queue, maxsize)
    }

    /// An anonymous queue of the given kind (Queue, JoinableQueue, SimpleQueue share
    /// the layout; the kind tells them apart on open).
    fn new_kind(kind: ObjectKind, maxsize: usize) -> Result<Queue<T>, CreateError> {
        Core::new_anonymous(&Queue::<T>::layout(kind, maxsize)?, maxsize == 0).map(Queue::with_core)
    }

    /// A named queue of the given kind.
    fn create_kind(
        name: &str,
        kind: ObjectKind,
        maxsize: usize,
        options: CreateOptions,
    ) -> Result<Queue<T>, CreateError> {
        Core::create(
            name,
            &Queue::<T>::layout(kind, maxsize)?,
            options,
            maxsize == 0,
        )
        .map(Queue::with_core)
    }

    /// Opens a named queue of the given kind holding `T` items.
    fn open_kind(name: &str, kind: ObjectKind) -> Result<Queue<T>, OpenError> {
        Core::open(name, kind, ElemType::of::<T>(), Some(slot_for::<T>())).map(Queue::with_core)
    }

    /// Creates a named queue (failing if the name exists), removed when this handle
    /// and its clones are dropped unless [`persist`](Queue::persist) is called.
    ///
    /// # Errors
    ///
    /// As for [`Segment::create`] and [`new`](Queue::new).
    pub fn create(name: &str, maxsize: usize) -> Result<Queue<T>, CreateError> {
        Queue::create_with(name, maxsize, CreateOptions::new())
    }

    /// [`create`](Queue::create) with options (file mode).
    ///
    /// # Errors
    ///
    /// As for [`create`](Queue::create).
    pub fn create_with(
        name: &str,
        maxsize: usize,
        options: CreateOptions,
    ) -> Result<Queue<T>, CreateError> {
        Queue::create_kind(name, ObjectKind::Queue, maxsize, options)
    }

    /// Opens a named queue of `T` items.
    ///
    /// # Errors
    ///
    /// As for [`Segment::open`]: not found, not a `Queue` (`expected Queue, found
    /// Pipe`), another item type (`expected u32 (4 bytes, align 4), found u64 (8
    /// bytes, align 8)`), a corrupt header.
    pub fn open(name: &str) -> Result<Queue<T>, OpenError> {
        Queue::open_kind(name, ObjectKind::Queue)
    }

    /// Keeps the name after the creator's handle is dropped.
    ///
    /// # Errors
    ///
    /// None today; reserved (the handle may be shared by clones).
    pub fn persist(&mut self) -> Result<(), CreateError> {
        match Arc::get_mut(&mut self.core) {
            Some(core) => {
                core.segment.persist();
                Ok(())
            }
            None => Err(CreateError::InvalidArgument(
                "persist must be called before the handle is cloned".into(),
            )),
        }
    }

    /// Puts `item`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`] if this handle was closed, [`PutError::ShutDown`] if the
    /// queue was shut down (also while this put waits),
    /// [`PutError::DefaultMaxsizeReached`] for a full queue made with `maxsize` 0;
    /// the item is handed back.
    #[inline]
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_block(item, Block::Until(None))
    }

    /// Puts `item`, waiting up to `timeout` while the queue is full. A zero timeout
    /// does not wait.
    ///
    /// # Errors
    ///
    /// [`PutError::Full`] if the queue stayed full; [`PutError::Closed`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_block(item, Block::timeout(timeout))
    }

    /// Puts `item` if there is room now.
    ///
    /// # Errors
    ///
    /// [`PutError::Full`] if the queue is full; [`PutError::Closed`].
    #[inline]
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_block(item, Block::No)
    }

    #[inline]
    fn put_block(&self, item: T, block: Block) -> Result<(), PutError<T>> {
        self.put_counted(item, block, None)
    }

    /// Puts `item`; if `count` is given, adds one to it after the claim and before
    /// the item can be taken (JoinableQueue's task count, so `task_done` never runs
    /// ahead of `put`).
    #[inline]
    fn put_counted(
        &self,
        item: T,
        block: Block,
        count: Option<&std::sync::atomic::AtomicU64>,
    ) -> Result<(), PutError<T>> {
        if self.handle.closed() {
            return Err(PutError::Closed(item));
        }
        if self.core.shut_down() {
            return Err(PutError::ShutDown(item));
        }
        if count.is_none() {
            // A copy straight into the ring, no guard.
            return match self
                .core
                .push(bytemuck::bytes_of(&item), block, self.handle.spin())
            {
                Ok(()) => Ok(()),
                // An item of size_of::<T>() always fits a slot sized for it.
                Err(_) => Err(self.full_error(item)),
            };
        }
        match self.core.claim(size_of::<T>(), block, self.handle.spin()) {
            Ok(mut slot) => {
                slot.buf().copy_from_slice(bytemuck::bytes_of(&item));
                if let Some(count) = count {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                slot.commit();
                Ok(())
            }
            // An item of size_of::<T>() always fits a slot sized for it.
            Err(_) => Err(self.full_error(item)),
        }
    }

    /// What a put that found no room says: shut down (it may have been waiting),
    /// the default maxsize ran out, or full.
    #[cold]
    fn full_error(&self, item: T) -> PutError<T> {
        if self.core.shut_down() {
            PutError::ShutDown(item)
        } else if self.core.unbounded() {
            PutError::DefaultMaxsizeReached(item)
        } else {
            PutError::Full(item)
        }
    }

    /// Takes an item, waiting while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`]; [`GetError::ShutDown`] once the queue was shut down and
    /// nothing is left (also while this get waits); [`GetError::Corrupt`] if shared
    /// memory was scribbled on.
    #[inline]
    pub fn get(&self) -> Result<T, GetError> {
        self.get_block(Block::Until(None))
    }

    /// Takes an item, waiting up to `timeout` while the queue is empty; never returns
    /// `Empty` before the timeout has passed. A zero timeout does not wait.
    ///
    /// # Errors
    ///
    /// [`GetError::Empty`] if the queue stayed empty; as for [`get`](Queue::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_block(Block::timeout(timeout))
    }

    /// Takes an item if one is there now.
    ///
    /// # Errors
    ///
    /// [`GetError::Empty`]; as for [`get`](Queue::get).
    #[inline]
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.get_block(Block::No)
    }

    #[inline]
    fn get_block(&self, block: Block) -> Result<T, GetError> {
        if self.handle.closed() {
            return Err(GetError::Closed);
        }
        // A copy straight out of the ring, no guard.
        let mut item = T::zeroed();
        let len = self
            .core
            .pop_into(bytemuck::bytes_of_mut(&mut item), block, self.handle.spin())
            .map_err(|e| self.core.get_error(e))?;
        check_item_len::<T>(len).map(|()| item)
    }

    /// Puts as many of `items` as fit now, in order, with one wake-up for sleeping
    /// consumers at the end; returns how many were put.
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`] (carrying 0) if this handle was closed,
    /// [`PutError::ShutDown`] (carrying 0) if the queue was shut down.
    pub fn put_many_nowait(&self, items: &[T]) -> Result<usize, PutError<usize>> {
        if self.handle.closed() {
            return Err(PutError::Closed(0));
        }
        if self.core.shut_down() {
            return Err(PutError::ShutDown(0));
        }
        let n = if size_of::<T>() == 0 {
            items
                .iter()
                .take_while(|item| {
                    self.core
                        .ring
                        .try_push_quiet(bytemuck::bytes_of(*item))
                        .is_ok()
                })
                .count()
        } else {
            // Runs of slots claimed with one CAS each.
            self.core
                .ring
                .try_push_slice(bytemuck::cast_slice(items), size_of::<T>())
                .unwrap_or(0)
        };
        if n > 0 {
            self.core.ring.notify_consumers();
        }
        Ok(n)
    }

    /// Puts all of `items`, in order, waiting while the queue is full; batches as
    /// many as fit into each wake-up.
    ///
    /// # Errors
    ///
    /// As for [`put`](Queue::put), carrying how many items were put before it.
    pub fn put_many(&self, items: &[T]) -> Result<(), PutError<usize>> {
        let mut done = 0;
        while done < items.len() {
            done += self
                .put_many_nowait(&items[done..])
                .map_err(|e| e.carrying(done))?;
            if done < items.len() {
                self.put(items[done]).map_err(|e| e.carrying(done))?;
                done += 1;
            }
        }
        Ok(())
    }

    /// Takes up to `max` items that are there now into `out`, with one wake-up for
    /// sleeping producers at the end; returns how many.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`]; [`GetError::Corrupt`] (items taken before it stay in
    /// `out`).
    pub fn get_many_nowait(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
        if self.handle.closed() {
            return Err(GetError::Closed);
        }
        // No more than the ring holds can be there now (and a huge `max` must not
        // become a huge allocation).
        let max = max.min(self.core.ring.capacity() as usize);
        let start = out.len();
        out.resize(start + max, T::zeroed());
        let mut n = 0;
        let mut result = Ok(());
        while n < max {
            // A run of items taken with one CAS ...
            let rest = &mut out[start + n..start + max];
            if size_of::<T>() > 0 {
                let k = self
                    .core
                    .ring
                    .try_pop_slice(bytemuck::cast_slice_mut(rest), size_of::<T>());
                if k > 0 {
                    n += k;
                    continue;
                }
            }
            // ... or, if the entry at head is not a plain item, one the general way.
            match self
                .core
                .ring
                .try_pop_into_quiet(bytemuck::bytes_of_mut(&mut rest[0]))
            {
                Ok(len) => match check_item_len::<T>(len) {
                    Ok(()) => n += 1,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                },
                Err(PopError::Empty) => break,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        out.truncate(start + n);
        if n > 0 {
            self.core.ring.notify_producers();
        } else if result.is_ok() && self.core.shut_down() {
            result = Err(GetError::ShutDown);
        }
        result.map(|()| n)
    }

    /// Waits for at least one item, then takes up to `max` that are there into `out`;
    /// returns how many.
    ///
    /// # Errors
    ///
    /// As for [`get`](Queue::get).
    pub fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
        if max == 0 {
            return Ok(0);
        }
        out.push(self.get()?);
        Ok(1 + self.get_many_nowait(out, max - 1)?)
    }

    /// This handle's `Err(Closed)` once it was closed.
    fn open_handle(&self) -> Result<&Core, Closed> {
        if self.handle.closed() {
            return Err(Closed);
        }
        Ok(&self.core)
    }

    /// Approximate number of items in the queue (a snapshot, like Python's).
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed (Python's `ValueError: Queue is closed`).
    pub fn qsize(&self) -> Result<usize, Closed> {
        Ok(self.open_handle()?.ring.len() as usize)
    }

    /// Whether the queue looks empty (a snapshot).
    ///
    /// # Errors
    ///
    /// [`Closed`], as for [`qsize`](Queue::qsize).
    pub fn empty(&self) -> Result<bool, Closed> {
        Ok(self.open_handle()?.ring.is_empty())
    }

    /// Whether the queue looks full (a snapshot).
    ///
    /// # Errors
    ///
    /// [`Closed`], as for [`qsize`](Queue::qsize).
    pub fn full(&self) -> Result<bool, Closed> {
        let ring = &self.open_handle()?.ring;
        Ok(ring.len() >= ring.capacity())
    }

    /// The queue's capacity in items ([`UNBOUNDED_MAXSIZE`] for one made with
    /// `maxsize` 0).
    pub fn maxsize(&self) -> usize {
        self.core.ring.capacity() as usize
    }

    /// Closes this handle: later `put`s and `get`s on it fail with `Closed`, and
    /// `qsize`, `empty` and `full` answer `Err(Closed)`. Other handles, clones and
    /// processes are unaffected.
    pub fn close(&self) {
        self.handle.closed.store(true, Ordering::Relaxed);
    }

    /// Whether [`close`](Queue::close) was called on this handle.
    pub fn closed(&self) -> bool {
        self.handle.closed()
    }

    /// Shuts the queue down, for every handle and process (Python 3.13's
    /// `Queue.shutdown(immediate)`): from now on puts fail with
    /// [`PutError::ShutDown`]; gets take what is left and then fail with
    /// [`GetError::ShutDown`] — with `immediate`, what is left is discarded now, so
    /// gets fail at once. Every put and get blocked on the queue wakes and fails
    /// with `ShutDown` (a get only if nothing is left). The state lives in shared
    /// memory and never goes back. (A `JoinableQueue` has its own
    /// [`shutdown`](JoinableQueue::shutdown), which also counts discarded items as
    /// done.)
    ///
    /// No lock orders a put against the shutdown: a put that had already looked at
    /// the state as it changed may still land, and a get then takes it.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::queue::{GetError, PutError, Queue};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let q = Queue::<u32>::new(4)?;
    /// q.put(1)?;
    /// q.shutdown(false);
    /// assert_eq!(q.put(2), Err(PutError::ShutDown(2)));
    /// assert_eq!(q.get()?, 1);
    /// assert_eq!(q.get(), Err(GetError::ShutDown));
    /// # Ok(()) }
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        self.core.shutdown(immediate);
    }

    /// Whether the queue was shut down (by any process).
    pub fn is_shutdown(&self) -> bool {
        self.core.shut_down()
    }

    /// How blocking calls on this handle wait: spin for a while first (the default)
    /// or sleep at once ([`Spin::NONE`]).
    pub fn set_spin(&self, spin: Spin) {
        self.handle.set_spin(spin);
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.core.segment.name()
    }
}

/// A message of `len` bytes holds a `T` only if it has exactly its size.
#[inline]
fn check_item_len<T>(len: usize) -> Result<(), GetError> {
    if len == size_of::<T>() {
        return Ok(());
    }
    Err(GetError::Corrupt(format!(
        "message of {len} bytes, expected a {} of {} bytes",
        std::any::type_name::<T>(),
        size_of::<T>()
    )))
}

/// Why `task_done` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called more times than there were items put")
    }
}

impl std::error::Error for TaskDoneError {}

/// A [`Queue`] that counts unfinished tasks: Python's `JoinableQueue`.
///
/// Every successful `put` adds one unfinished task; [`task_done`](Self::task_done)
/// marks one finished; [`join`](Self::join) waits until none is left.
///
/// # Examples
///
/// ```
/// use shmproc::{JoinableQueue, Process};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = JoinableQueue::<u32>::new(8)?;
/// let mut worker = Process::spawn(|| {
///     for _ in 0..20 {
///         let _job = q.get().unwrap();
///         q.task_done().unwrap();
///     }
/// })?;
/// for job in 0..20 {
///     q.put(job)?;
/// }
/// q.join();
/// worker.join()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T: Pod> JoinableQueue<T> {
    /// An anonymous joinable queue of up to `maxsize` items.
    ///
    /// # Errors
    ///
    /// As for [`Queue::new`].
    pub fn new(maxsize: usize) -> Result<JoinableQueue<T>, CreateError> {
        let queue = Queue::new_kind(ObjectKind::JoinableQueue, maxsize)?;
        Ok(JoinableQueue { queue })
    }

    /// Creates a named joinable queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::create`].
    pub fn create(name: &str, maxsize: usize) -> Result<JoinableQueue<T>, CreateError> {
        let kind = ObjectKind::JoinableQueue;
        let queue = Queue::create_kind(name, kind, maxsize, CreateOptions::new())?;
        Ok(JoinableQueue { queue })
    }

    /// Opens a named joinable queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::open`].
    pub fn open(name: &str) -> Result<JoinableQueue<T>, OpenError> {
        let queue = Queue::open_kind(name, ObjectKind::JoinableQueue)?;
        Ok(JoinableQueue { queue })
    }

    fn unfinished(&self) -> &std::sync::atomic::AtomicU64 {
        &self.queue.core.ring.user_words()[UNFINISHED_WORD]
    }

    /// Puts `item` (waiting while full) and counts it as an unfinished task.
    ///
    /// # Errors
    ///
    /// As for [`Queue::put`].
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_block(item, Block::Until(None))
    }

    /// Puts with a timeout; see [`Queue::put_timeout`].
    ///
    /// # Errors
    ///
    /// As for [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_block(item, Block::timeout(timeout))
    }

    /// Puts if there is room now; see [`Queue::put_nowait`].
    ///
    /// # Errors
    ///
    /// As for [`Queue::put_nowait`].
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_block(item, Block::No)
    }

    fn put_block(&self, item: T, block: Block) -> Result<(), PutError<T>> {
        self.queue.put_counted(item, block, Some(self.unfinished()))
    }

    /// Marks one task taken with `get` as finished; wakes `join`ers when none is left.
    ///
    /// # Errors
    ///
    /// [`TaskDoneError`] if every task put is already marked done (Python's
    /// `ValueError`).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        let left = self
            .unfinished()
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map_err(|_| TaskDoneError)?;
        if left == 1 {
            self.queue.core.ring.user_event().notify_all();
        }
        Ok(())
    }

    /// Unfinished tasks: put and not yet marked done.
    pub fn unfinished_tasks(&self) -> u64 {
        self.unfinished().load(Ordering::SeqCst)
    }

    /// Waits until every task put has been marked done.
    pub fn join(&self) {
        let _ = self.join_deadline(None);
    }

    /// Waits up to `timeout` until every task put has been marked done; whether they
    /// all were.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_deadline(Some(Deadline::after(timeout)))
    }

    /// Shuts the queue down as [`Queue::shutdown`] does; with `immediate`, every
    /// item discarded counts as a finished task (Python: the unfinished count drops
    /// by the number drained), so a `join` with no task outstanding elsewhere
    /// returns. Tasks already taken still need their `task_done`.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::JoinableQueue;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let q = JoinableQueue::<u32>::new(4)?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// q.shutdown(true);
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// q.join(); // returns: nothing is unfinished
    /// # Ok(()) }
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        let drained = self.queue.core.shutdown(immediate);
        if drained > 0 {
            let _ = self
                .unfinished()
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(drained))
                });
        }
        self.queue.core.ring.user_event().notify_all();
    }

    fn join_deadline(&self, deadline: Option<Deadline>) -> bool {
        self.queue
            .core
            .ring
            .user_event()
            .wait_until(deadline, || {
                (self.unfinished().load(Ordering::SeqCst) == 0).then_some(())
            })
            .is_ok()
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    /// The underlying queue: `get`, `qsize`, `close`… (`put` on it directly would not
    /// count a task; `JoinableQueue`'s own `put` does.)
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

/// A simpler queue: `put`, `get`, `empty`, `close` — Python's `SimpleQueue`.
/// Bounded like every shared-memory queue (Python's is unbounded): `put` waits while
/// it is full; capacity 0 gives [`UNBOUNDED_MAXSIZE`] items, with `put` failing at
/// once when they run out (see [`Queue::new`]).
///
/// # Examples
///
/// ```
/// use shmproc::SimpleQueue;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = SimpleQueue::<i32>::new(4)?;
/// q.put(-1)?;
/// assert!(!q.empty()?);
/// assert_eq!(q.get()?, -1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T: Pod> SimpleQueue<T> {
    /// An anonymous simple queue holding up to `capacity` items.
    ///
    /// # Errors
    ///
    /// As for [`Queue::new`].
    pub fn new(capacity: usize) -> Result<SimpleQueue<T>, CreateError> {
        let queue = Queue::new_kind(ObjectKind::SimpleQueue, capacity)?;
        Ok(SimpleQueue { queue })
    }

    /// Creates a named simple queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::create`].
    pub fn create(name: &str, capacity: usize) -> Result<SimpleQueue<T>, CreateError> {
        let kind = ObjectKind::SimpleQueue;
        let queue = Queue::create_kind(name, kind, capacity, CreateOptions::new())?;
        Ok(SimpleQueue { queue })
    }

    /// Opens a named simple queue.
    ///
    /// # Errors
    ///
    /// As for [`Queue::open`].
    pub fn open(name: &str) -> Result<SimpleQueue<T>, OpenError> {
        let queue = Queue::open_kind(name, ObjectKind::SimpleQueue)?;
        Ok(SimpleQueue { queue })
    }

    /// Puts `item`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`] after [`close`](Self::close).
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.queue.put(item)
    }

    /// Takes an item, waiting while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`] after [`close`](Self::close); [`GetError::Corrupt`].
    pub fn get(&self) -> Result<T, GetError> {
        self.queue.get()
    }

    /// Whether the queue looks empty (a snapshot).
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn empty(&self) -> Result<bool, Closed> {
        self.queue.empty()
    }

    /// Closes this handle.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Whether [`close`](Self::close) was called on this handle.
    pub fn closed(&self) -> bool {
        self.queue.closed()
    }
}

/// A bounded MPMC queue of byte messages of any length up to its size: a message
/// larger than one slot spans consecutive slots, claimed and published at once.
///
/// Besides `put`/`get`, it offers zero-copy: [`loan`](ByteQueue::loan) a buffer in
/// the ring, write in place, [`commit`](Loan::commit); [`get_ref`](ByteQueue::get_ref)
/// to read in place through a guard; and [`get_into`](ByteQueue::get_into) to reuse a
/// buffer (no allocation per message).
///
/// # Examples
///
/// ```
/// use shmproc::ByteQueue;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = ByteQueue::new(64, 64)?; // 64 slots of 64 bytes
/// q.put(b"hello")?;
/// q.put(&[7u8; 1000])?; // spans 16 slots
/// assert_eq!(q.get()?, b"hello");
/// let mut buf = Vec::new();
/// q.get_into(&mut buf)?;
/// assert_eq!(buf, vec![7u8; 1000]);
/// assert!(q.put(&vec![0u8; 64 * 64 + 1]).is_err()); // can never fit
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ByteQueue {
    queue: Queue<u8>,
}

/// A buffer loaned from a [`ByteQueue`]: write the message in place, then
/// [`commit`](Loan::commit). Dropped uncommitted, it is discarded (consumers never
/// see it).
#[derive(Debug)]
pub struct Loan<'a> {
    slot: WriteSlot<'a>,
}

impl Loan<'_> {
    /// The buffer, exactly as long as the loan asked for. Its initial contents are
    /// unspecified: write every byte.
    pub fn buf(&mut self) -> &mut [u8] {
        self.slot.buf()
    }

    /// Publishes the message.
    pub fn commit(self) {
        self.slot.commit();
    }
}

/// A message read in place from a [`ByteQueue`]; its slots are returned to the queue
/// when the guard drops.
#[derive(Debug)]
pub struct MessageRef<'a> {
    slot: ReadSlot<'a>,
}

impl std::ops::Deref for MessageRef<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.slot.bytes()
    }
}

impl ByteQueue {
    fn layout(
        kind: ObjectKind,
        elem: ElemType,
        slots: usize,
        slot_size: usize,
    ) -> Result<ObjectLayout, CreateError> {
        if slots == 0 || slot_size == 0 {
            return Err(CreateError::InvalidArgument(format!(
                "a byte queue needs at least one slot of at least one byte (asked for {slots} slots of {slot_size} bytes)"
            )));
        }
        Core::layout(
            kind,
            elem,
            slots as u64,
            (slot_size as u64).next_multiple_of(8),
        )
    }

    fn with_core(core: Core) -> ByteQueue {
        ByteQueue {
            queue: Queue::with_core(core),
        }
    }

    /// An anonymous byte queue of `slots` slots of `slot_size` bytes (rounded up to a
    /// multiple of 8). Messages of up to `slots × slot_size` bytes fit.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] for zero or oversized parameters; OS errors.
    pub fn new(slots: usize, slot_size: usize) -> Result<ByteQueue, CreateError> {
        Core::new_anonymous(
            &ByteQueue::layout(ObjectKind::Queue, BYTES, slots, slot_size)?,
            false,
        )
        .map(ByteQueue::with_core)
    }

    /// Creates a named byte queue.
    ///
    /// # Errors
    ///
    /// As for [`ByteQueue::new`] and [`Segment::create`].
    pub fn create(name: &str, slots: usize, slot_size: usize) -> Result<ByteQueue, CreateError> {
        Core::create(
            name,
            &ByteQueue::layout(ObjectKind::Queue, BYTES, slots, slot_size)?,
            CreateOptions::new(),
            false,
        )
        .map(ByteQueue::with_core)
    }

    /// Opens a named byte queue (any slot size).
    ///
    /// # Errors
    ///
    /// As for [`Segment::open`].
    pub fn open(name: &str) -> Result<ByteQueue, OpenError> {
        Core::open(name, ObjectKind::Queue, BYTES, None).map(ByteQueue::with_core)
    }

    /// The largest message this queue can hold, in bytes.
    pub fn max_message(&self) -> usize {
        self.core().ring.max_message()
    }

    fn core(&self) -> &Core {
        &self.queue.core
    }

    fn loan_block(&self, len: usize, block: Block) -> Result<Loan<'_>, PutBytesError> {
        if self.queue.handle.closed() {
            return Err(PutBytesError::Closed);
        }
        if self.core().shut_down() {
            return Err(PutBytesError::ShutDown);
        }
        let slot = self
            .core()
            .claim(len, block, self.queue.handle.spin())
            .map_err(|e| self.put_error(e))?;
        Ok(Loan { slot })
    }

    fn put_block(&self, msg: &[u8], block: Block) -> Result<(), PutBytesError> {
        if self.queue.handle.closed() {
            return Err(PutBytesError::Closed);
        }
        if self.core().shut_down() {
            return Err(PutBytesError::ShutDown);
        }
        // A copy straight into the ring, no guard.
        self.core()
            .push(msg, block, self.queue.handle.spin())
            .map_err(|e| self.put_error(e))
    }

    /// What a failed claim means: a `Full` after a shutdown (which ends a waiting
    /// put) is `ShutDown`, and in a queue made with maxsize 0 the default ran out.
    #[cold]
    fn put_error(&self, e: PushError) -> PutBytesError {
        match e {
            PushError::Full if self.core().shut_down() => PutBytesError::ShutDown,
            PushError::Full if self.core().unbounded() => PutBytesError::DefaultMaxsizeReached,
            e => e.into(),
        }
    }

    /// Puts a message, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PutBytesError::TooLarge`] if it can never fit (the message says both sizes);
    /// [`PutBytesError::Closed`].
    pub fn put(&self, msg: &[u8]) -> Result<(), PutBytesError> {
        self.put_block(msg, Block::Until(None))
    }

    /// Puts a message, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`PutBytesError::Full`] if there was no room in time; as for [`put`](Self::put).
    pub fn put_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), PutBytesError> {
        self.put_block(msg, Block::timeout(timeout))
    }

    /// Puts a message if there is room now.
    ///
    /// # Errors
    ///
    /// [`PutBytesError::Full`]; as for [`put`](Self::put).
    pub fn put_nowait(&self, msg: &[u8]) -> Result<(), PutBytesError> {
        self.put_block(msg, Block::No)
    }

    /// Loans a buffer of `len` bytes in the ring (waiting while full) to write a
    /// message in place: no copy.
    ///
    /// # Errors
    ///
    /// As for [`put`](Self::put).
    pub fn loan(&self, len: usize) -> Result<Loan<'_>, PutBytesError> {
        self.loan_block(len, Block::Until(None))
    }

    /// Loans a buffer if there is room now.
    ///
    /// # Errors
    ///
    /// As for [`put_nowait`](Self::put_nowait).
    pub fn try_loan(&self, len: usize) -> Result<Loan<'_>, PutBytesError> {
        self.loan_block(len, Block::No)
    }

    fn take_block(&self, block: Block) -> Result<MessageRef<'_>, GetError> {
        if self.queue.handle.closed() {
            return Err(GetError::Closed);
        }
        let slot = self
            .core()
            .take(block, self.queue.handle.spin())
            .map_err(|e| self.core().get_error(e))?;
        Ok(MessageRef { slot })
    }

    /// Takes a message (waiting while empty) into a new `Vec`.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`]; [`GetError::Corrupt`].
    pub fn get(&self) -> Result<Vec<u8>, GetError> {
        self.take_block(Block::Until(None)).map(|m| m.to_vec())
    }

    /// Takes a message, waiting up to `timeout`; never `Empty` before the timeout.
    ///
    /// # Errors
    ///
    /// [`GetError::Empty`]; as for [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetError> {
        self.take_block(Block::timeout(timeout)).map(|m| m.to_vec())
    }

    /// Takes a message if one is there now.
    ///
    /// # Errors
    ///
    /// [`GetError::Empty`]; as for [`get`](Self::get).
    pub fn get_nowait(&self) -> Result<Vec<u8>, GetError> {
        self.take_block(Block::No).map(|m| m.to_vec())
    }

    /// Takes a message (waiting while empty) into `buf`, replacing its contents and
    /// reusing its allocation; returns the length.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize, GetError> {
        if !self.queue.handle.closed() {
            // The fast path: one message read in place, without moving a guard.
            let copy = |m: &[u8]| {
                buf.clear();
                buf.extend_from_slice(m);
                m.len()
            };
            match self.core().ring.try_pop_with(copy) {
                Ok(n) => return Ok(n),
                Err(PopError::Empty) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let m = self.take_block(Block::Until(None))?;
        buf.clear();
        buf.extend_from_slice(&m);
        Ok(m.len())
    }

    /// Takes a message (waiting while empty) to read in place.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    pub fn get_ref(&self) -> Result<MessageRef<'_>, GetError> {
        self.take_block(Block::Until(None))
    }

    /// Takes a message to read in place if one is there now.
    ///
    /// # Errors
    ///
    /// As for [`get_nowait`](Self::get_nowait).
    pub fn get_ref_nowait(&self) -> Result<MessageRef<'_>, GetError> {
        self.take_block(Block::No)
    }

    /// Approximate slots in use (a message spans one or more).
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn qsize(&self) -> Result<usize, Closed> {
        self.queue.qsize()
    }

    /// Whether the queue looks empty.
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn empty(&self) -> Result<bool, Closed> {
        self.queue.empty()
    }

    /// Whether every slot looks taken.
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn full(&self) -> Result<bool, Closed> {
        self.queue.full()
    }

    /// Closes this handle.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Whether [`close`](Self::close) was called on this handle.
    pub fn closed(&self) -> bool {
        self.queue.closed()
    }

    /// Shuts the queue down for every process; see [`Queue::shutdown`].
    pub fn shutdown(&self, immediate: bool) {
        self.queue.shutdown(immediate);
    }

    /// How blocking calls on this handle wait.
    pub fn set_spin(&self, spin: Spin) {
        self.queue.set_spin(spin);
    }
}

/// Queue state for `shmproc inspect`.
pub(crate) fn describe(segment: &Segment) -> Vec<(&'static str, String)> {
    let l = segment.info().layout;
    // SAFETY: the payload is a live mapping of payload_len bytes owned by `segment`;
    // attach checks the size against the parameters; we only load atomics.
    let ring = unsafe {
        Ring::attach(
            segment.payload(),
            segment.payload_len(),
            l.capacity,
            u64::from(l.slot_size),
        )
    };
    let Ok(ring) = ring else {
        return vec![("state", "payload is not a valid ring".into())];
    };
    let mut rows = vec![
        (
            "depth",
            format!("{} of {} slots", ring.len(), ring.capacity()),
        ),
        ("max message", format!("{} bytes", ring.max_message())),
        (
            "waiting",
            format!(
                "{} consumer(s) asleep, {} producer(s) asleep",
                ring.not_empty().waiters(),
                ring.not_full().waiters()
            ),
        ),
    ];
    if l.kind == ObjectKind::JoinableQueue {
        rows.push((
            "unfinished",
            ring.user_words()[UNFINISHED_WORD]
                .load(Ordering::SeqCst)
                .to_string(),
        ));
    }
    let state = match ring.user_words()[SHUTDOWN_WORD].load(Ordering::SeqCst) {
        RUNNING => "running".to_string(),
        SHUT_DOWN => "shut down".into(),
        SHUT_DOWN_NOW => "shut down (immediate)".into(),
        other => format!("unknown ({other})"),
    };
    rows.push(("state", state));
    rows
}

/// The element type recorded for a queue of serde values of type `T`.
#[cfg(feature = "serde")]
fn serde_elem<T>() -> ElemType {
    ElemType {
        name: TypeName::new(&format!("serde {}", std::any::type_name::<T>())),
        size: 0,
        align: 1,
    }
}

/// Why a serde value was not put.
#[cfg(feature = "serde")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerdePutError {
    /// The value could not be encoded (reported here, by `put` itself, never later).
    Encode(String),
    /// The encoded message was not put.
    Put(PutBytesError),
}

#[cfg(feature = "serde")]
impl fmt::Display for SerdePutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerdePutError::Encode(why) => write!(f, "cannot encode the value: {why}"),
            SerdePutError::Put(e) => e.fmt(f),
        }
    }
}

#[cfg(feature = "serde")]
impl std::error::Error for SerdePutError {}

/// Why no serde value was got.
#[cfg(feature = "serde")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerdeGetError {
    /// No message was got.
    Get(GetError),
    /// A message was taken but does not decode as the queue's type (it is consumed).
    Decode(String),
}

#[cfg(feature = "serde")]
impl fmt::Display for SerdeGetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerdeGetError::Get(e) => e.fmt(f),
            SerdeGetError::Decode(why) => write!(f, "cannot decode the message: {why}"),
        }
    }
}

#[cfg(feature = "serde")]
impl std::error::Error for SerdeGetError {}

/// A queue of any serde value — Python's `Queue` of picklable objects — encoded with
/// postcard (feature `serde`). Encoding errors are returned by `put` itself.
///
/// Sized in items, like [`Queue`]: it holds up to `maxsize` values, each encoded in
/// at most `max_item_size` bytes (one slot of the ring per value), and
/// [`qsize`](Self::qsize) and [`full`](Self::full) count values. A value that
/// encodes longer is refused by `put` with `Put(TooLarge)` naming both sizes.
/// `maxsize` 0 is Python's default: [`UNBOUNDED_MAXSIZE`] values (see
/// [`Queue::new`]).
///
/// # Examples
///
/// ```
/// use shmproc::queue::SerdeQueue;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = SerdeQueue::<(u32, Option<String>)>::new(2, 64)?; // 2 values of <= 64 bytes
/// q.put(&(42, Some("hello".to_string())))?;
/// q.put(&(7, None))?;
/// assert_eq!((q.qsize()?, q.full()?), (2, true));
/// assert_eq!(q.get()?, (42, Some("hello".to_string())));
/// # Ok(()) }
/// ```
#[cfg(feature = "serde")]
#[derive(Debug, Clone)]
pub struct SerdeQueue<T> {
    bytes: ByteQueue,
    _items: PhantomData<fn(T) -> T>,
}

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> SerdeQueue<T> {
    fn wrap(bytes: ByteQueue) -> SerdeQueue<T> {
        SerdeQueue {
            bytes,
            _items: PhantomData,
        }
    }

    fn layout(maxsize: usize, max_item_size: usize) -> Result<ObjectLayout, CreateError> {
        let slots = if maxsize == 0 {
            UNBOUNDED_MAXSIZE
        } else {
            maxsize
        };
        ByteQueue::layout(ObjectKind::Queue, serde_elem::<T>(), slots, max_item_size)
    }

    /// An anonymous queue of up to `maxsize` values (0: [`UNBOUNDED_MAXSIZE`]), each
    /// encoding to at most `max_item_size` bytes (rounded up to a multiple of 8).
    ///
    /// # Errors
    ///
    /// As for [`ByteQueue::new`].
    pub fn new(maxsize: usize, max_item_size: usize) -> Result<SerdeQueue<T>, CreateError> {
        let l = SerdeQueue::<T>::layout(maxsize, max_item_size)?;
        Core::new_anonymous(&l, maxsize == 0).map(|c| SerdeQueue::wrap(ByteQueue::with_core(c)))
    }

    /// Creates a named queue of serde values.
    ///
    /// # Errors
    ///
    /// As for [`ByteQueue::create`].
    pub fn create(
        name: &str,
        maxsize: usize,
        max_item_size: usize,
    ) -> Result<SerdeQueue<T>, CreateError> {
        let l = SerdeQueue::<T>::layout(maxsize, max_item_size)?;
        Core::create(name, &l, CreateOptions::new(), maxsize == 0)
            .map(|c| SerdeQueue::wrap(ByteQueue::with_core(c)))
    }

    /// Opens a named queue of serde values of type `T` (the type name must match).
    ///
    /// # Errors
    ///
    /// As for [`Segment::open`].
    pub fn open(name: &str) -> Result<SerdeQueue<T>, OpenError> {
        Core::open(name, ObjectKind::Queue, serde_elem::<T>(), None)
            .map(|c| SerdeQueue::wrap(ByteQueue::with_core(c)))
    }

    /// The most values the queue holds.
    pub fn maxsize(&self) -> usize {
        self.bytes.core().ring.capacity() as usize
    }

    /// The longest encoding of a value the queue takes, in bytes.
    pub fn max_item_size(&self) -> usize {
        self.bytes.core().ring.slot_size()
    }

    /// Encodes `value`, refusing encodings longer than one slot (one value, one slot:
    /// that is what makes `qsize` count values).
    fn encode(&self, value: &T) -> Result<Vec<u8>, SerdePutError> {
        let bytes =
            postcard::to_allocvec(value).map_err(|e| SerdePutError::Encode(e.to_string()))?;
        let max = self.max_item_size();
        if bytes.len() > max {
            return Err(SerdePutError::Put(PutBytesError::TooLarge {
                len: bytes.len(),
                max,
            }));
        }
        Ok(bytes)
    }

    fn decode(bytes: &[u8]) -> Result<T, SerdeGetError> {
        postcard::from_bytes(bytes).map_err(|e| SerdeGetError::Decode(e.to_string()))
    }

    /// Encodes and puts `value`, waiting while full.
    ///
    /// # Errors
    ///
    /// [`SerdePutError::Encode`]; [`SerdePutError::Put`]: `TooLarge` (the encoding
    /// is longer than [`max_item_size`](Self::max_item_size)), `Closed`, `ShutDown`,
    /// `DefaultMaxsizeReached`.
    pub fn put(&self, value: &T) -> Result<(), SerdePutError> {
        self.bytes
            .put(&self.encode(value)?)
            .map_err(SerdePutError::Put)
    }

    /// Puts, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// As for [`put`](Self::put), and `Put(Full)` on timeout.
    pub fn put_timeout(&self, value: &T, timeout: Duration) -> Result<(), SerdePutError> {
        self.bytes
            .put_timeout(&self.encode(value)?, timeout)
            .map_err(SerdePutError::Put)
    }

    /// Puts if there is room now.
    ///
    /// # Errors
    ///
    /// As for [`put`](Self::put), and `Put(Full)`.
    pub fn put_nowait(&self, value: &T) -> Result<(), SerdePutError> {
        self.bytes
            .put_nowait(&self.encode(value)?)
            .map_err(SerdePutError::Put)
    }

    /// Takes and decodes a value, waiting while empty.
    ///
    /// # Errors
    ///
    /// [`SerdeGetError::Get`] (`Closed`, `ShutDown`, `Corrupt`);
    /// [`SerdeGetError::Decode`].
    pub fn get(&self) -> Result<T, SerdeGetError> {
        let m = self.bytes.get_ref().map_err(SerdeGetError::Get)?;
        SerdeQueue::decode(&m)
    }

    /// Takes a value, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get), and `Get(Empty)` on timeout.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, SerdeGetError> {
        let m = self
            .bytes
            .get_timeout(timeout)
            .map_err(SerdeGetError::Get)?;
        SerdeQueue::decode(&m)
    }

    /// Takes a value if one is there now.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get), and `Get(Empty)`.
    pub fn get_nowait(&self) -> Result<T, SerdeGetError> {
        let m = self.bytes.get_ref_nowait().map_err(SerdeGetError::Get)?;
        SerdeQueue::decode(&m)
    }

    /// Approximate number of values in the queue (a snapshot).
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn qsize(&self) -> Result<usize, Closed> {
        self.bytes.qsize()
    }

    /// Whether the queue looks empty.
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn empty(&self) -> Result<bool, Closed> {
        self.bytes.empty()
    }

    /// Whether the queue holds `maxsize` values (a snapshot).
    ///
    /// # Errors
    ///
    /// [`Closed`] if this handle was closed.
    pub fn full(&self) -> Result<bool, Closed> {
        self.bytes.full()
    }

    /// Closes this handle.
    pub fn close(&self) {
        self.bytes.close();
    }

    /// Whether [`close`](Self::close) was called on this handle.
    pub fn closed(&self) -> bool {
        self.bytes.closed()
    }

    /// Shuts the queue down for every process; see [`Queue::shutdown`].
    pub fn shutdown(&self, immediate: bool) {
        self.bytes.shutdown(immediate);
    }
}
