//! What every queue kind is built from: the `Core` (a segment and the ring in it)
//! with its blocking waits and repair, the per-handle state, the ring's user words
//! this module uses, and `shmproc inspect` of a queue.

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout, TypeName};
use crate::object::{Mismatch, Payload};
use crate::os::clock::Deadline;
use crate::ring::Dest;
use crate::ring::mpmc::{PopError, PushError, ReadSlot, Ring, WriteSlot};
use crate::segment::{CreateError, Segment};
use crate::wait::Spin;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::error::*;

/// How long a call may wait.
#[derive(Clone, Copy, Debug)]
pub(super) enum Block {
    /// Not at all.
    No,
    /// Until the deadline (`None`: forever).
    Until(Option<Deadline>),
}

impl Block {
    pub(super) fn timeout(t: Duration) -> Block {
        if t.is_zero() {
            Block::No
        } else {
            Block::Until(Some(Deadline::after(t)))
        }
    }
}

/// The ring's `user_words` this module uses: JoinableQueue's unfinished count, the
/// shutdown state (one of [`RUNNING`], [`SHUT_DOWN`], [`SHUT_DOWN_NOW`]), and whether
/// the queue was made with `maxsize` 0 (1) or not (0). All zero in a fresh ring, and
/// zero is each word's "nothing happened" meaning, so a queue made by an older build
/// reads as running and bounded.
pub(super) const UNFINISHED_WORD: usize = 0;
pub(super) const SHUTDOWN_WORD: usize = 1;
pub(super) const UNBOUNDED_WORD: usize = 2;

/// Shutdown states (the `SHUTDOWN_WORD`): only ever raised, with `fetch_max`.
pub(super) const RUNNING: u64 = 0;
/// `shutdown(false)`: puts fail; gets drain what is left, then fail.
pub(super) const SHUT_DOWN: u64 = 1;
/// `shutdown(true)`: as `SHUT_DOWN`, and the items were discarded.
pub(super) const SHUT_DOWN_NOW: u64 = 2;

/// The element type recorded for byte queues.
pub(super) const BYTES: ElemType = ElemType {
    name: TypeName::new("bytes"),
    size: 1,
    align: 1,
};

/// What every queue handle shares: the segment and the ring in it.
#[derive(Debug)]
pub(super) struct Core {
    pub(super) ring: Ring,
    /// Keeps the mapping alive for `ring`.
    pub(super) segment: Arc<Segment>,
}

impl Core {
    pub(super) fn layout(
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

    /// Lays a fresh ring into a new queue's payload (`layout`'s capacity and slot
    /// size) and records whether the queue was made with `maxsize` 0.
    pub(super) fn init(layout: &ObjectLayout, unbounded: bool, payload: &mut Payload<'_>) {
        let (capacity, slot_size) = (layout.capacity, u64::from(layout.slot_size));
        // SAFETY: the payload is fresh, zero-filled, 128-aligned memory of `len`
        // bytes that no other process uses before the segment is published.
        let r = unsafe { Ring::init(payload.as_ptr(), payload.len(), capacity, slot_size) };
        debug_assert!(r.is_ok(), "{r:?}");
        if let Ok(ring) = r {
            // Before the segment is published: every opener sees it.
            ring.user_words()[UNBOUNDED_WORD].store(u64::from(unbounded), Ordering::Relaxed);
        }
    }

    /// The core over a validated segment of the right kind holding `elem` items in
    /// slots of `slot_size` bytes (`None`: any slot size, a byte queue's). Checks the
    /// ring's parameters against the payload before touching it.
    pub(super) fn attach(
        segment: Arc<Segment>,
        elem: ElemType,
        slot_size: Option<u64>,
    ) -> Result<Core, Mismatch> {
        let l = segment.info().layout;
        if l.elem != elem {
            return Err(Mismatch::new("element type", elem, l.elem));
        }
        if let Some(want) = slot_size {
            if u64::from(l.slot_size) != want {
                return Err(Mismatch::new(
                    "slot size",
                    format!("{want} bytes"),
                    format!("{} bytes", l.slot_size),
                ));
            }
        }
        let needed = Ring::bytes_for(l.capacity, u64::from(l.slot_size));
        if needed != Some(segment.payload_len()) {
            return Err(Mismatch::new(
                "ring size",
                match needed {
                    Some(n) => format!(
                        "{n} bytes for {} slots of {} bytes",
                        l.capacity, l.slot_size
                    ),
                    None => format!(
                        "valid ring parameters, not {} slots of {} bytes",
                        l.capacity, l.slot_size
                    ),
                },
                format!("{} bytes", segment.payload_len()),
            ));
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
        .map_err(|e| Mismatch::new("ring", "a valid ring", e))?;
        Ok(Core { ring, segment })
    }

    /// Claims room for a message of `len` bytes, waiting as `block` allows. The first
    /// try is inline (the guard stays in registers); waiting is out of line.
    #[inline]
    pub(super) fn claim(
        &self,
        len: usize,
        block: Block,
        handle: &HandleState,
    ) -> Result<WriteSlot<'_>, PushError> {
        match (self.ring.try_claim(len), block) {
            (Err(PushError::Full), Block::Until(deadline)) if !self.unbounded() => {
                self.claim_wait(len, deadline, handle.spin())
            }
            (r, _) => r,
        }
    }

    /// Waits for room. While a wait stalls, repairs what gone producers or
    /// consumers left unfinished.
    #[inline(never)]
    pub(super) fn claim_wait(
        &self,
        len: usize,
        deadline: Option<Deadline>,
        spin: Spin,
    ) -> Result<WriteSlot<'_>, PushError> {
        self.wait_for_batch_room(spin, deadline);
        self.wait_repairing(
            Side::Producer,
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
    pub(super) fn wait_for_batch_room(&self, spin: Spin, deadline: Option<Deadline>) {
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
    pub(super) fn take(
        &self,
        block: Block,
        handle: &HandleState,
    ) -> Result<ReadSlot<'_>, PopError> {
        match (self.ring.try_take(), block) {
            (Err(PopError::Empty), Block::Until(deadline)) => {
                self.take_wait(deadline, handle.spin())
            }
            (r, _) => r,
        }
    }

    /// Waits for a message. While a wait stalls, repairs what gone producers or
    /// consumers left unfinished.
    #[inline(never)]
    pub(super) fn take_wait(
        &self,
        deadline: Option<Deadline>,
        spin: Spin,
    ) -> Result<ReadSlot<'_>, PopError> {
        self.wait_repairing(
            Side::Consumer,
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
    #[inline(always)]
    pub(super) fn push(
        &self,
        msg: &[u8],
        block: Block,
        handle: &HandleState,
    ) -> Result<(), PushError> {
        match (self.ring.try_push(msg), block) {
            (Err(PushError::Full), Block::Until(deadline)) if !self.unbounded() => {
                self.push_wait(msg, deadline, handle.spin())
            }
            (r, _) => r,
        }
    }

    /// Waits for room for `msg` and copies it in (see [`Core::wait_repairing`]).
    #[inline(never)]
    pub(super) fn push_wait(
        &self,
        msg: &[u8],
        deadline: Option<Deadline>,
        spin: Spin,
    ) -> Result<(), PushError> {
        self.wait_for_batch_room(spin, deadline);
        self.wait_repairing(
            Side::Producer,
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
    #[inline(always)]
    pub(super) fn pop_into(
        &self,
        mut out: Dest<'_>,
        block: Block,
        handle: &HandleState,
    ) -> Result<usize, PopError> {
        match (self.ring.try_pop_into_dest(out.reborrow()), block) {
            (Err(PopError::Empty), Block::Until(deadline)) => {
                self.pop_wait(out, deadline, handle.spin())
            }
            (r, _) => r,
        }
    }

    /// Waits for a message and copies it out (see [`Core::wait_repairing`]).
    #[inline(never)]
    pub(super) fn pop_wait(
        &self,
        mut out: Dest<'_>,
        deadline: Option<Deadline>,
        spin: Spin,
    ) -> Result<usize, PopError> {
        self.wait_repairing(
            Side::Consumer,
            spin,
            deadline,
            PopError::Empty,
            || match self.ring.try_pop_into_dest(out.reborrow()) {
                Err(PopError::Empty) if self.shut_down() => Err(Some(PopError::Empty)),
                Err(PopError::Empty) => Err(None),
                r => r.map_err(Some),
            },
        )
    }

    /// Waits on `side`'s eventcount until `attempt` succeeds (`Ok`) or fails for
    /// good (`Err(Some(e))`; `Err(None)`: try again), repairing the ring while the
    /// wait stalls (the next attempt then finds what a repair freed); `timed_out`
    /// past the deadline. Each poll returns a small value, its error waiting in a
    /// cell: a poll returning a `Result` whose error owns a `String` goes through
    /// memory, which made every hand-off of a ping-pong slower (queue pair RTT
    /// 190 → 150 ns).
    ///
    /// A consumer sleeps without stall checks (and without a timer) while no
    /// producer holds a claim (see `EventCount::wait_until_checked_when`). A producer
    /// always checks: besides a consumer that died holding a take, its checks are
    /// what wakes a producer whose notify went to another one that needed more room.
    pub(super) fn wait_repairing<R, E>(
        &self,
        side: Side,
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
        let (event, may_stall): (_, &dyn Fn() -> bool) = match side {
            Side::Producer => (self.ring.not_full(), &|| true),
            Side::Consumer => (self.ring.not_empty(), &|| self.ring.claims_pending()),
        };
        match event.wait_until_checked_when(spin, deadline, poll, on_stall, may_stall) {
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
    pub(super) fn shut_down(&self) -> bool {
        self.ring.user_words()[SHUTDOWN_WORD].load(Ordering::Acquire) != RUNNING
    }

    /// Whether the queue was made with `maxsize` 0 (see [`UNBOUNDED_MAXSIZE`]).
    pub(super) fn unbounded(&self) -> bool {
        self.ring.user_words()[UNBOUNDED_WORD].load(Ordering::Relaxed) != 0
    }

    /// What an `Empty` (or `Corrupt`) from the ring means for a get: `ShutDown` once
    /// the queue is shut down and empty.
    #[cold]
    pub(super) fn get_error(&self, e: PopError) -> TryGetError {
        match e {
            PopError::Empty if self.shut_down() => TryGetError::ShutDown,
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
    pub(super) fn shutdown(&self, immediate: bool) -> u64 {
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

/// Which end of the ring a wait is on.
#[derive(Clone, Copy)]
pub(super) enum Side {
    /// Waiting for room (sleeps on `not_full`).
    Producer,
    /// Waiting for a message (sleeps on `not_empty`).
    Consumer,
}

/// Longest a producer waits for a batch of room (see `Core::wait_for_batch_room`).
pub(super) const BATCH_WAIT: Duration = Duration::from_micros(5);

/// A handle's own state: closed or not, and how it waits.
#[derive(Debug)]
pub(super) struct HandleState {
    pub(super) closed: AtomicBool,
    /// The spin duration in nanoseconds (an atomic, so reading it costs a load).
    pub(super) spin_nanos: std::sync::atomic::AtomicU64,
}

impl HandleState {
    pub(super) fn new() -> HandleState {
        HandleState {
            closed: AtomicBool::new(false),
            spin_nanos: std::sync::atomic::AtomicU64::new(Spin::DEFAULT.duration.as_nanos() as u64),
        }
    }

    #[inline]
    pub(super) fn spin(&self) -> Spin {
        Spin {
            duration: Duration::from_nanos(self.spin_nanos.load(Ordering::Relaxed)),
        }
    }

    pub(super) fn set_spin(&self, spin: Spin) {
        let nanos = u64::try_from(spin.duration.as_nanos()).unwrap_or(u64::MAX);
        self.spin_nanos.store(nanos, Ordering::Relaxed);
    }

    #[inline]
    pub(super) fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// Slot size for items of type `T`: its size rounded up to 8 bytes.
pub(super) fn slot_for<T>() -> u64 {
    (size_of::<T>().max(1) as u64).next_multiple_of(8)
}

/// A message of `len` bytes holds a `T` only if it has exactly its size.
#[inline]
pub(super) fn check_item_len<T>(len: usize) -> Result<(), TryGetError> {
    if len == size_of::<T>() {
        return Ok(());
    }
    Err(TryGetError::Corrupt(format!(
        "message of {len} bytes, expected a {} of {} bytes",
        std::any::type_name::<T>(),
        size_of::<T>()
    )))
}

/// Queue state for `shmproc inspect`.
pub(super) fn describe(segment: &Segment) -> Vec<(&'static str, String)> {
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
