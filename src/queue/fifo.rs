//! [`Queue<T>`]: Python's `multiprocessing.Queue` of plain-old-data items.

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::ring::Dest;
use crate::ring::mpmc::PopError;
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::wait::Spin;
use bytemuck::Pod;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::core::*;
use super::error::*;
use super::{JoinableQueue, SimpleQueue, UNBOUNDED_MAXSIZE};
use crate::object::{Mismatch, Object, Payload};

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
    pub(super) core: Arc<Core>,
    pub(super) handle: HandleState,
    pub(super) _items: PhantomData<fn(T) -> T>,
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
    pub(super) fn layout(kind: ObjectKind, maxsize: usize) -> Result<ObjectLayout, CreateError> {
        let capacity = if maxsize == 0 {
            UNBOUNDED_MAXSIZE
        } else {
            maxsize
        };
        Core::layout(kind, ElemType::of::<T>(), capacity as u64, slot_for::<T>())
    }

    pub(super) fn with_core(core: Core) -> Queue<T> {
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
    /// [`TryPutError::DefaultMaxsizeReached`], whose message names the default, rather
    /// than waiting. (The simpler honest choice over a ring that grows: growth would
    /// mean new segments and every process following them.)
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] for a `maxsize` too large; OS errors.
    pub fn new(maxsize: usize) -> Result<Queue<T>, CreateError> {
        Queue::create_anonymous(maxsize)
    }

    /// Creates a named queue (failing if the name exists), removed when this handle
    /// and its clones are dropped unless [`persist`](Object::persist) is called.
    /// [`Object::create_with`] takes a file mode too.
    ///
    /// # Errors
    ///
    /// As for [`Segment::create`] and [`new`](Queue::new).
    pub fn create(name: &str, maxsize: usize) -> Result<Queue<T>, CreateError> {
        Queue::create_with(name, maxsize, CreateOptions::new())
    }

    /// Opens a named queue of `T` items.
    ///
    /// # Errors
    ///
    /// As for [`Segment::open`]: not found, not a `Queue` (`expected Queue, found
    /// Pipe`), another item type (`expected u32 (4 bytes, align 4), found u64 (8
    /// bytes, align 8)`), a corrupt header.
    pub fn open(name: &str) -> Result<Queue<T>, OpenError> {
        Queue::open_with(name, OpenOptions::new())
    }

    /// Fills a new queue's payload: the ring for `maxsize` items of kind `kind`.
    pub(super) fn init_kind(kind: ObjectKind, maxsize: usize, payload: &mut Payload<'_>) {
        if let Ok(layout) = Queue::<T>::layout(kind, maxsize) {
            Core::init(&layout, maxsize == 0, payload);
        }
    }

    /// The handle over a validated segment holding `T` items.
    pub(super) fn attach_items(segment: Arc<Segment>) -> Result<Queue<T>, Mismatch> {
        Core::attach(segment, ElemType::of::<T>(), Some(slot_for::<T>())).map(Queue::with_core)
    }

    /// Puts `item`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Closed`] if this handle was closed, [`TryPutError::ShutDown`] if the
    /// queue was shut down (also while this put waits),
    /// [`TryPutError::DefaultMaxsizeReached`] for a full queue made with `maxsize` 0;
    /// the item is handed back.
    #[inline]
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_block(item, Block::Until(None))
            .map_err(TryPutError::blocking)
    }

    /// Puts `item`, waiting up to `timeout` while the queue is full. A zero timeout
    /// does not wait.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] if the queue stayed full; [`TryPutError::Closed`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), TryPutError<T>> {
        self.put_block(item, Block::timeout(timeout))
    }

    /// Puts `item` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] if the queue is full; [`TryPutError::Closed`].
    #[inline]
    pub fn put_nowait(&self, item: T) -> Result<(), TryPutError<T>> {
        self.put_block(item, Block::No)
    }

    #[inline]
    pub(super) fn put_block(&self, item: T, block: Block) -> Result<(), TryPutError<T>> {
        self.put_counted(item, block, None)
    }

    /// Puts `item`; if `count` is given, adds one to it after the claim and before
    /// the item can be taken (JoinableQueue's task count, so `task_done` never runs
    /// ahead of `put`).
    #[inline]
    pub(super) fn put_counted(
        &self,
        item: T,
        block: Block,
        count: Option<&std::sync::atomic::AtomicU64>,
    ) -> Result<(), TryPutError<T>> {
        if self.handle.closed() {
            return Err(TryPutError::Closed(item));
        }
        if self.core.shut_down() {
            return Err(TryPutError::ShutDown(item));
        }
        if count.is_none() {
            // A copy straight into the ring, no guard.
            return match self
                .core
                .push(bytemuck::bytes_of(&item), block, &self.handle)
            {
                Ok(()) => Ok(()),
                // An item of size_of::<T>() always fits a slot sized for it.
                Err(_) => Err(self.full_error(item)),
            };
        }
        match self.core.claim(size_of::<T>(), block, &self.handle) {
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

    /// Puts a copy of `*item`, waiting while the queue is full: [`put`](Queue::put)
    /// for items too large to move cheaply, whose bytes go from `item` straight into
    /// the ring.
    ///
    /// # Errors
    ///
    /// As for [`put`](Queue::put), carrying `()`: the item stays with the caller.
    #[inline]
    pub fn put_ref(&self, item: &T) -> Result<(), PutError<()>> {
        if self.handle.closed() {
            return Err(PutError::Closed(()));
        }
        if self.core.shut_down() {
            return Err(PutError::ShutDown(()));
        }
        self.core
            .push(bytemuck::bytes_of(item), Block::Until(None), &self.handle)
            // An item of size_of::<T>() always fits a slot sized for it.
            .map_err(|_| self.full_error(()).blocking())
    }

    /// Takes an item into `*out`, waiting while the queue is empty: [`get`](Queue::get)
    /// for items too large to return cheaply, whose bytes go from the ring straight
    /// into `out` (a `get` returns the item it builds, one move more).
    ///
    /// # Errors
    ///
    /// As for [`get`](Queue::get). After an error `*out` holds its old bytes or
    /// others (any bytes are a valid `T`).
    #[inline]
    pub fn get_into(&self, out: &mut T) -> Result<(), GetError> {
        if self.handle.closed() {
            return Err(GetError::Closed);
        }
        let len = self
            .core
            .pop_into(
                Dest::bytes(bytemuck::bytes_of_mut(out)),
                Block::Until(None),
                &self.handle,
            )
            .map_err(|e| self.core.get_error(e).blocking())?;
        check_item_len::<T>(len).map_err(TryGetError::blocking)
    }

    /// What a put that found no room says: shut down (it may have been waiting),
    /// the default maxsize ran out, or full.
    #[cold]
    pub(super) fn full_error<U>(&self, item: U) -> TryPutError<U> {
        if self.core.shut_down() {
            TryPutError::ShutDown(item)
        } else if self.core.unbounded() {
            TryPutError::DefaultMaxsizeReached(item)
        } else {
            TryPutError::Full(item)
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
        let mut item = MaybeUninit::uninit();
        match self.get_block(&mut item, Block::Until(None)) {
            // SAFETY: `get_block` returned Ok, so it initialized the item.
            Ok(()) => Ok(unsafe { item.assume_init() }),
            Err(e) => Err(e.blocking()),
        }
    }

    /// Takes an item, waiting up to `timeout` while the queue is empty; never returns
    /// `Empty` before the timeout has passed. A zero timeout does not wait.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`] if the queue stayed empty; as for [`get`](Queue::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, TryGetError> {
        let mut item = MaybeUninit::uninit();
        self.get_block(&mut item, Block::timeout(timeout))?;
        // SAFETY: `get_block` returned Ok, so it initialized the item.
        Ok(unsafe { item.assume_init() })
    }

    /// Takes an item if one is there now.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`]; as for [`get`](Queue::get).
    #[inline]
    pub fn get_nowait(&self) -> Result<T, TryGetError> {
        let mut item = MaybeUninit::uninit();
        self.get_block(&mut item, Block::No)?;
        // SAFETY: `get_block` returned Ok, so it initialized the item.
        Ok(unsafe { item.assume_init() })
    }

    /// Takes an item into `item`, waiting as `block` allows; `Ok` only if every byte
    /// of `item` was written. The item is built where the caller will return it
    /// from, not zeroed first (which cost as much as the copy for a large item) and
    /// not moved through a `Result` of its own.
    #[inline(always)]
    pub(super) fn get_block(
        &self,
        item: &mut MaybeUninit<T>,
        block: Block,
    ) -> Result<(), TryGetError> {
        if self.handle.closed() {
            return Err(TryGetError::Closed);
        }
        // A copy straight out of the ring into the item, no guard. The ring copies
        // min(len, size_of::<T>()) bytes, so with len == size_of::<T>() (checked)
        // every byte is written; any bytes are a valid T (T: Pod).
        let len = self
            .core
            .pop_into(Dest::value(item), block, &self.handle)
            .map_err(|e| self.core.get_error(e))?;
        check_item_len::<T>(len)
    }

    /// Puts as many of `items` as fit now, in order, with one wake-up for sleeping
    /// consumers at the end; returns how many were put.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Closed`] (carrying 0) if this handle was closed,
    /// [`TryPutError::ShutDown`] (carrying 0) if the queue was shut down.
    pub fn put_many_nowait(&self, items: &[T]) -> Result<usize, TryPutError<usize>> {
        if self.handle.closed() {
            return Err(TryPutError::Closed(0));
        }
        if self.core.shut_down() {
            return Err(TryPutError::ShutDown(0));
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
        self.put_many_blocking(items).map_err(TryPutError::blocking)
    }

    fn put_many_blocking(&self, items: &[T]) -> Result<(), TryPutError<usize>> {
        let mut done = 0;
        while done < items.len() {
            done += self
                .put_many_nowait(&items[done..])
                .map_err(|e| e.carrying(done))?;
            if done < items.len() {
                self.put(items[done])
                    .map_err(|e| TryPutError::from(e).carrying(done))?;
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
    /// [`TryGetError::Closed`]; [`TryGetError::Corrupt`] (items taken before it stay in
    /// `out`).
    pub fn get_many_nowait(&self, out: &mut Vec<T>, max: usize) -> Result<usize, TryGetError> {
        if self.handle.closed() {
            return Err(TryGetError::Closed);
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
            result = Err(TryGetError::ShutDown);
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
        self.get_many_blocking(out, max)
            .map_err(TryGetError::blocking)
    }

    fn get_many_blocking(&self, out: &mut Vec<T>, max: usize) -> Result<usize, TryGetError> {
        if max == 0 {
            return Ok(0);
        }
        out.push(self.get()?);
        Ok(1 + self.get_many_nowait(out, max - 1)?)
    }

    /// This handle's `Err(Closed)` once it was closed.
    pub(super) fn open_handle(&self) -> Result<&Core, Closed> {
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
    /// [`TryPutError::ShutDown`]; gets take what is left and then fail with
    /// [`TryGetError::ShutDown`] — with `immediate`, what is left is discarded now, so
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

/// The [`Object`] side of the three kinds of queue of `T` items, which share their
/// layout and differ in the kind recorded in the header (and the handle wrapping the
/// `Queue`).
macro_rules! queue_object {
    ($ty:ident, $kind:expr, |$q:ident| $wrap:expr, |$h:ident| $queue:expr) => {
        impl<T: Pod> Object for $ty<T> {
            const KIND: ObjectKind = $kind;
            /// `maxsize`: the most items it holds (0: [`UNBOUNDED_MAXSIZE`]).
            type Args<'a> = usize;

            fn layout(maxsize: &usize) -> Result<ObjectLayout, CreateError> {
                Queue::<T>::layout($kind, *maxsize)
            }

            fn init(maxsize: usize, payload: &mut Payload<'_>) {
                Queue::<T>::init_kind($kind, maxsize, payload);
            }

            fn attach(segment: Arc<Segment>) -> Result<$ty<T>, Mismatch> {
                Queue::<T>::attach_items(segment).map(|$q| $wrap)
            }

            fn segment(&self) -> &Segment {
                let $h = self;
                &$queue.core.segment
            }

            fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
                describe(segment)
            }
        }
    };
}

queue_object!(Queue, ObjectKind::Queue, |q| q, |h| h);
queue_object!(
    JoinableQueue,
    ObjectKind::JoinableQueue,
    |queue| JoinableQueue { queue },
    |h| h.queue
);
queue_object!(
    SimpleQueue,
    ObjectKind::SimpleQueue,
    |queue| SimpleQueue { queue },
    |h| h.queue
);
