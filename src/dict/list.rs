//! [`List`]: Python's `Manager().list()` in shared memory, built on the dict's map.
//!
//! Element `i` is the map entry keyed by `i` (a `u64`); the list's own state — its
//! length, a version and an intent record — and its robust lock live in the half of
//! the map header the map does not use ([`SPARE`]).
//!
//! # Protocol
//!
//! Every change to the list happens under the list lock and inside one version
//! window: the writer makes the version odd, records what it is doing (intent:
//! append / pop / insert / remove, the index, the length before and how far a shift
//! got), changes map entries (each change one crash-safe map write), stores the new
//! length, and makes the version even again. Readers never lock: they read an even
//! version, the length and the elements, then check that the version is unchanged
//! (else retry; after [`RETRIES`] tries they take the lock, which also repairs the
//! list if its last writer died).
//!
//! A holder that finds an intent (its predecessor died) rolls it forward: an append
//! whose element is stored gets its length, a pop is finished, a shift is redone from
//! the step the intent records (every step copies element `j` to its neighbour,
//! which the previous step left untouched, so a step done twice does no harm; the
//! element an insert places is parked under a reserved key until it is placed).

use super::map::{self, Action, Map, SPARE, crash_point};
use super::{Decode, DictOptions, Encode, ReadError, WriteError, encode, map_layout};
use crate::layout::header::{ElemType, HEADER_SIZE, ObjectKind, ObjectLayout};
use crate::object::{self, Mismatch, Object, Payload, Shared, SharedState};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::sync::{AcquireError, Lock, LockGuard};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Lock-free read attempts before a reader takes the list lock.
const RETRIES: u32 = 64;
/// The map key an insert parks its element under until it is placed.
const PENDING: u64 = u64::MAX;
/// Payload offset of the list lock's state.
const LOCK_AT: usize = SPARE;
/// Payload offset of the [`ListState`].
const STATE_AT: usize = SPARE + 256;

const OP_NONE: u64 = 0;
const OP_APPEND: u64 = 1;
const OP_POP: u64 = 2;
const OP_INSERT: u64 = 3;
const OP_REMOVE: u64 = 4;

/// The list's state (all-zero: empty, consistent).
#[repr(C)]
struct ListState {
    /// Elements: map keys `0 .. len` are present (outside a version window).
    len: AtomicU64,
    /// Even: stable; odd: a writer is changing the list (or died doing so).
    version: AtomicU64,
    /// Intent: OP_*.
    op: AtomicU64,
    /// Intent: the index inserted at or removed.
    index: AtomicU64,
    /// Intent: `len` before the operation.
    n: AtomicU64,
    /// Intent: a shift's next step (insert: elements `progress ..` are moved up;
    /// remove: elements `.. progress` are moved down).
    progress: AtomicU64,
    _pad: [AtomicU64; 26],
}

// SAFETY: repr(C), only atomics, any bits are a valid (validated) state, zero is an
// empty list, no pointers, alignment 8.
unsafe impl SharedState for ListState {}

const _: () = {
    assert!(size_of::<ListState>() == 256);
    assert!(crate::sync::LOCK_STATE_SIZE == 256);
    assert!(STATE_AT + 256 <= 1024 && LOCK_AT % 128 == 0 && STATE_AT % 128 == 0);
};

/// Why a list operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListError {
    /// `index` is not below the list's length `len` (Python's `IndexError`).
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The length then.
        len: u64,
    },
    /// Reading an element failed.
    Read(ReadError),
    /// Writing an element failed (too large, out of memory, …); see the
    /// [`List`] docs for what a failure in the middle of an insert or remove leaves.
    Write(WriteError),
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListError::IndexOutOfRange { index, len } => {
                write!(f, "list index {index} out of range (length {len})")
            }
            ListError::Read(e) => e.fmt(f),
            ListError::Write(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ListError {}

impl From<ReadError> for ListError {
    fn from(e: ReadError) -> ListError {
        ListError::Read(e)
    }
}

impl From<WriteError> for ListError {
    fn from(e: WriteError) -> ListError {
        ListError::Write(e)
    }
}

fn corrupt(why: impl Into<String>) -> ListError {
    ListError::Read(ReadError::Corrupt(why.into()))
}

/// A list in shared memory, like Python's `Manager().list()` without the manager:
/// `append`, `extend`, `pop`, `get`, `set`, `insert`, `remove`, `len`, `to_vec`.
///
/// Elements are stored through [`Encode`]/[`Decode`] like a [`Dict`](super::Dict)'s
/// values (each element is one record of the map underneath, so the dict's limits
/// apply: records up to 1 GiB, the map's bound, growth as elements are added).
///
/// # Concurrency
///
/// Each operation is atomic: readers ([`get`](List::get), [`to_vec`](List::to_vec))
/// see the list before or after any write, never in between (they check a version
/// and retry). Writes are serialized by one robust lock; `insert` and `remove` move
/// every element after the index (O(n) map writes) and readers retry (then wait)
/// while they do. `append`, `pop` and `set` are a few map writes.
///
/// # A writer that dies
///
/// The next writer (or a reader that falls back to the lock) finishes the dead
/// writer's operation: an interrupted insert or remove is completed, an append whose
/// element was stored is kept, a pop completed. The list is never left with a hole,
/// a duplicate or a torn element. A write that fails on its own (out of memory) in
/// the middle of an insert or remove leaves the rest to the next writer, which
/// finishes it once memory is available (until then writes report the error).
///
/// # Examples
///
/// ```
/// use shmproc::{List, Process};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let l = List::<u32>::new()?;
/// let mut child = Process::spawn(|| {
///     l.extend([1, 2, 3]).unwrap();
/// })?;
/// child.join()?;
/// l.insert(0, 0)?;
/// assert_eq!(l.to_vec()?, [0, 1, 2, 3]);
/// assert_eq!(l.remove(1)?, 1);
/// assert_eq!(l.pop()?, Some(3));
/// assert_eq!(l.to_vec()?, [0, 2]);
/// # Ok(()) }
/// ```
pub struct List<T> {
    map: Arc<Map>,
    lock: Lock,
    state: Shared<ListState>,
    _types: PhantomData<fn(T) -> T>,
}

impl<T> Clone for List<T> {
    fn clone(&self) -> List<T> {
        List {
            map: Arc::clone(&self.map),
            lock: self.lock.clone(),
            state: self.state.clone(),
            _types: PhantomData,
        }
    }
}

impl<T> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("List")
            .field("name", &self.map.segment().name())
            .field("len", &self.state.state().len.load(Ordering::Relaxed))
            .finish()
    }
}

/// The layout of a list of `T` on a map with data regions of `region_bytes`.
fn list_layout<T>(region_bytes: u64) -> Option<ObjectLayout> {
    map_layout(ObjectKind::List, ElemType::of::<T>(), region_bytes)
}

impl<T: Encode + Decode> Object for List<T> {
    const KIND: ObjectKind = ObjectKind::List;
    type Args<'a> = DictOptions;

    fn layout(args: &DictOptions) -> Result<ObjectLayout, CreateError> {
        super::Dict::<u64, T>::layout(args).map(|l| ObjectLayout {
            kind: ObjectKind::List,
            elem: ElemType::of::<T>(),
            ..l
        })
    }

    fn initial_reserve(layout: &ObjectLayout) -> Option<u64> {
        map::Geometry::new(layout.capacity).map(|g| HEADER_SIZE as u64 + g.initial_reserve())
    }

    fn init(_: DictOptions, payload: &mut Payload<'_>) {
        map::init(payload);
    }

    fn attach(segment: Arc<Segment>) -> Result<List<T>, Mismatch> {
        let found = segment.info().layout;
        if found.slot_size != map::STRIPES as u32 {
            return Err(Mismatch::new("stripes", map::STRIPES, found.slot_size));
        }
        object::check_layout(&found, list_layout::<T>(found.capacity))?;
        let geo = map::Geometry::new(found.capacity)
            .ok_or_else(|| Mismatch::new("capacity", "a usable region size", found.capacity))?;
        Ok(List {
            lock: Lock::from_state(Arc::clone(&segment), LOCK_AT)?,
            state: Shared::at(Arc::clone(&segment), STATE_AT)?,
            map: Arc::new(Map::new(segment, geo)?),
            _types: PhantomData,
        })
    }

    fn segment(&self) -> &Segment {
        self.map.segment()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

/// `shmproc inspect` rows for a `List` segment.
pub(crate) fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    let mut rows = vec![(
        "length",
        object::peek::<u64>(segment, STATE_AT).map_or_else(|| "?".into(), |n| n.to_string()),
    )];
    rows.extend(map::inspect(segment));
    rows
}

fn key(i: u64) -> [u8; 8] {
    i.to_ne_bytes()
}

impl<T: Encode + Decode> List<T> {
    /// Creates an empty list in an anonymous segment, shared with children started
    /// with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    pub fn new() -> Result<List<T>, CreateError> {
        List::create_anonymous(DictOptions::new())
    }

    /// Creates an empty list named `name` (in `/dev/shm`, mode 0600).
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid name, a name that exists, permissions.
    pub fn create(name: &str) -> Result<List<T>, CreateError> {
        List::create_with(name, DictOptions::new(), CreateOptions::new())
    }

    /// Opens the list named `name`.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not a `List`, a list of another element type
    /// (`IncompatibleLayout`), a corrupt header.
    pub fn open(name: &str) -> Result<List<T>, OpenError> {
        List::open_with(name, OpenOptions::new())
    }

    fn st(&self) -> &ListState {
        self.state.state()
    }

    /// Elements (Python's `len(l)`): a snapshot.
    pub fn len(&self) -> usize {
        self.st().len.load(Ordering::Acquire).min(usize::MAX as u64) as usize
    }

    /// Whether [`len`](List::len) is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // ---- element access on the map ---------------------------------------------------

    fn read_at(&self, i: u64) -> Result<Option<Vec<u8>>, ReadError> {
        let k = key(i);
        let mut out = Vec::new();
        Ok(self
            .map
            .get(&k, self.map.hash(&k), &mut out)?
            .then_some(out))
    }

    fn write_at(&self, i: u64, bytes: &[u8]) -> Result<(), WriteError> {
        let k = key(i);
        self.map
            .modify(&k, self.map.hash(&k), &mut |_| {
                Ok(Action::Put(std::borrow::Cow::Borrowed(bytes)))
            })
            .map(drop)
    }

    fn remove_at(&self, i: u64) -> Result<(), WriteError> {
        let k = key(i);
        self.map
            .modify(&k, self.map.hash(&k), &mut |_| Ok(Action::Remove))
            .map(drop)
    }

    // ---- locking and recovery ------------------------------------------------------------

    /// Takes the list lock, finishing a dead holder's operation first.
    fn locked(&self) -> Result<LockGuard<'_>, ListError> {
        let mut guard = match self.lock.acquire() {
            Ok(g) => g,
            Err(AcquireError::OwnerDied(g)) => g,
            Err(e) => return Err(corrupt(format!("list lock: {e}"))),
        };
        let st = self.st();
        if !guard.is_consistent()
            || st.op.load(Ordering::Acquire) != OP_NONE
            || st.version.load(Ordering::Relaxed) % 2 == 1
        {
            self.recover()?;
            guard.mark_consistent();
        }
        Ok(guard)
    }

    /// Opens a version window (odd) for a change.
    fn begin(&self) {
        let v = &self.st().version;
        if v.load(Ordering::Relaxed) % 2 == 0 {
            // Release is not what orders this before the element writes: readers
            // that see one of those writes synchronize with the map's Release
            // publish that comes after this store in program order.
            v.fetch_add(1, Ordering::Release);
        }
        crash_point();
    }

    /// Closes the version window (even) and clears the intent.
    fn end(&self) {
        let st = self.st();
        crash_point();
        if st.version.load(Ordering::Relaxed) % 2 == 1 {
            // Release: the list's new state before the even version; paired with the
            // readers' Acquire load of the version.
            st.version.fetch_add(1, Ordering::Release);
        }
        st.op.store(OP_NONE, Ordering::Release);
    }

    fn intent(&self, op: u64, index: u64, n: u64, progress: u64) {
        let st = self.st();
        st.index.store(index, Ordering::Relaxed);
        st.n.store(n, Ordering::Relaxed);
        st.progress.store(progress, Ordering::Relaxed);
        st.op.store(op, Ordering::Release);
        crash_point();
    }

    /// Rolls the recorded operation forward (the list lock held).
    fn recover(&self) -> Result<(), ListError> {
        let st = self.st();
        self.begin();
        let (i, n, progress) = (
            st.index.load(Ordering::Relaxed),
            st.n.load(Ordering::Relaxed),
            st.progress.load(Ordering::Relaxed),
        );
        let len = st.len.load(Ordering::Relaxed);
        let result = match st.op.load(Ordering::Acquire) {
            OP_APPEND if len == n || len == n.wrapping_add(1) => {
                let stored = self.read_at(n)?.is_some();
                st.len
                    .store(if stored { n + 1 } else { n }, Ordering::Release);
                Ok(())
            }
            OP_POP if n > 0 && (len == n || len == n - 1) => {
                st.len.store(n - 1, Ordering::Release);
                self.remove_at(n - 1).map_err(ListError::from)
            }
            OP_INSERT if i <= progress && progress <= n && (len == n || len == n + 1) => {
                self.finish_insert(i, n, progress)
            }
            OP_REMOVE if i <= progress && progress < n && (len == n || len == n - 1) => {
                self.finish_remove(i, n, progress)
            }
            // An insert that died before recording its intent may have parked its
            // element already.
            OP_NONE => self.remove_at(PENDING).map_err(ListError::from),
            op => Err(corrupt(format!(
                "list intent {op} (index {i}, length {n}, progress {progress}) with length {len}"
            ))),
        };
        self.end();
        result
    }

    /// Moves elements `i .. progress` up by one (from the top), places the parked
    /// element at `i`, and sets the length to `n + 1`.
    fn finish_insert(&self, i: u64, n: u64, progress: u64) -> Result<(), ListError> {
        let st = self.st();
        if st.len.load(Ordering::Relaxed) == n + 1 {
            return self.remove_at(PENDING).map_err(ListError::from);
        }
        for j in (i..progress).rev() {
            let v = self
                .read_at(j)?
                .ok_or_else(|| corrupt(format!("list element {j} of {n} missing")))?;
            self.write_at(j + 1, &v)?;
            crash_point();
            st.progress.store(j, Ordering::Relaxed);
        }
        let v = self
            .read_at(PENDING)?
            .ok_or_else(|| corrupt("the element being inserted is missing"))?;
        self.write_at(i, &v)?;
        crash_point();
        st.len.store(n + 1, Ordering::Release);
        crash_point();
        self.remove_at(PENDING)?;
        Ok(())
    }

    /// Moves elements `progress + 1 .. n` down by one, removes the last and sets the
    /// length to `n - 1`.
    fn finish_remove(&self, _i: u64, n: u64, progress: u64) -> Result<(), ListError> {
        let st = self.st();
        if st.len.load(Ordering::Relaxed) == n - 1 {
            return Ok(());
        }
        for j in progress..n - 1 {
            let v = self
                .read_at(j + 1)?
                .ok_or_else(|| corrupt(format!("list element {} of {n} missing", j + 1)))?;
            self.write_at(j, &v)?;
            crash_point();
            st.progress.store(j + 1, Ordering::Relaxed);
        }
        self.remove_at(n - 1)?;
        crash_point();
        st.len.store(n - 1, Ordering::Release);
        Ok(())
    }

    // ---- writing -------------------------------------------------------------------------

    /// Appends `value` (Python's `l.append(value)`).
    ///
    /// # Errors
    ///
    /// [`ListError::Write`] if the element cannot be stored (the list is unchanged).
    pub fn append(&self, value: impl std::borrow::Borrow<T>) -> Result<(), ListError> {
        let bytes = encode(value.borrow()).map_err(WriteError::Encode)?;
        let _guard = self.locked()?;
        let st = self.st();
        let n = st.len.load(Ordering::Relaxed);
        self.begin();
        self.intent(OP_APPEND, n, n, n);
        let stored = self.write_at(n, &bytes);
        if stored.is_ok() {
            crash_point();
            st.len.store(n + 1, Ordering::Release);
        }
        self.end();
        Ok(stored?)
    }

    /// Appends every item in turn (Python's `l.extend(items)`); stops at the first
    /// error, leaving the items before it appended.
    ///
    /// # Errors
    ///
    /// As for [`append`](List::append).
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<(), ListError> {
        items.into_iter().try_for_each(|v| self.append(v))
    }

    /// Removes and returns the last element, `None` if the list is empty (Python's
    /// `l.pop()`).
    ///
    /// # Errors
    ///
    /// [`ListError`] if the element cannot be read or removed.
    pub fn pop(&self) -> Result<Option<T>, ListError> {
        let _guard = self.locked()?;
        let st = self.st();
        let n = st.len.load(Ordering::Relaxed);
        if n == 0 {
            return Ok(None);
        }
        let bytes = self
            .read_at(n - 1)?
            .ok_or_else(|| corrupt(format!("list element {} of {n} missing", n - 1)))?;
        let value = T::decode(&bytes).map_err(ReadError::Decode)?;
        self.begin();
        self.intent(OP_POP, n - 1, n, n);
        st.len.store(n - 1, Ordering::Release);
        crash_point();
        let removed = self.remove_at(n - 1);
        self.end();
        removed?;
        Ok(Some(value))
    }

    /// Sets element `index` to `value` (Python's `l[index] = value`); returns the
    /// value it replaced.
    ///
    /// # Errors
    ///
    /// [`ListError::IndexOutOfRange`], or a failed write (the element unchanged).
    pub fn set(&self, index: u64, value: impl std::borrow::Borrow<T>) -> Result<T, ListError> {
        let bytes = encode(value.borrow()).map_err(WriteError::Encode)?;
        let _guard = self.locked()?;
        let len = self.st().len.load(Ordering::Relaxed);
        if index >= len {
            return Err(ListError::IndexOutOfRange { index, len });
        }
        let old = self
            .read_at(index)?
            .ok_or_else(|| corrupt(format!("list element {index} of {len} missing")))?;
        self.begin();
        let written = self.write_at(index, &bytes);
        self.end();
        written?;
        Ok(T::decode(&old).map_err(ReadError::Decode)?)
    }

    /// Inserts `value` before element `index`, or at the end if `index >= len`
    /// (Python's `l.insert(index, value)`). Moves every later element: O(len - index).
    ///
    /// # Errors
    ///
    /// [`ListError::Write`] if an element cannot be stored (see the type docs).
    pub fn insert(&self, index: u64, value: impl std::borrow::Borrow<T>) -> Result<(), ListError> {
        let bytes = encode(value.borrow()).map_err(WriteError::Encode)?;
        let _guard = self.locked()?;
        let st = self.st();
        let n = st.len.load(Ordering::Relaxed);
        let i = index.min(n);
        self.begin();
        if let Err(e) = self.write_at(PENDING, &bytes) {
            self.end();
            return Err(e.into());
        }
        self.intent(OP_INSERT, i, n, n);
        let done = self.finish_insert(i, n, n);
        if done.is_ok() {
            self.end();
        }
        done
    }

    /// Removes and returns element `index`, moving every later element down
    /// (Python's `l.pop(index)` / `del l[index]`; Rust's `Vec::remove`).
    ///
    /// # Errors
    ///
    /// [`ListError::IndexOutOfRange`], or a failed read or write (see the type
    /// docs).
    pub fn remove(&self, index: u64) -> Result<T, ListError> {
        let _guard = self.locked()?;
        let st = self.st();
        let n = st.len.load(Ordering::Relaxed);
        if index >= n {
            return Err(ListError::IndexOutOfRange { index, len: n });
        }
        let bytes = self
            .read_at(index)?
            .ok_or_else(|| corrupt(format!("list element {index} of {n} missing")))?;
        let value = T::decode(&bytes).map_err(ReadError::Decode)?;
        self.remove_locked(index, n)?;
        Ok(value)
    }

    /// Removes element `index` of `n`, the list lock held.
    fn remove_locked(&self, index: u64, n: u64) -> Result<(), ListError> {
        self.begin();
        self.intent(OP_REMOVE, index, n, index);
        self.finish_remove(index, n, index)?;
        self.end();
        Ok(())
    }

    /// Removes the first element equal to `value` (Python's `l.remove(value)`, which
    /// raises `ValueError` when there is none: here `Ok(false)`). Elements compare by
    /// their stored encoding: plain-old-data by bytes, strings by content, serde
    /// values by their postcard encoding.
    ///
    /// # Errors
    ///
    /// [`ListError::Write`] if `value` cannot be encoded, or a failed read or write
    /// (see the type docs).
    pub fn remove_value(&self, value: impl std::borrow::Borrow<T>) -> Result<bool, ListError> {
        let wanted = encode(value.borrow()).map_err(WriteError::Encode)?;
        let _guard = self.locked()?;
        let n = self.st().len.load(Ordering::Relaxed);
        for i in 0..n {
            let bytes = self
                .read_at(i)?
                .ok_or_else(|| corrupt(format!("list element {i} of {n} missing")))?;
            if bytes == wanted {
                self.remove_locked(i, n)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The index of the first element equal to `value` (compared as in
    /// [`remove_value`](List::remove_value); Python's `l.index(value)`), from one
    /// consistent snapshot.
    ///
    /// # Errors
    ///
    /// As for [`remove_value`](List::remove_value).
    pub fn index_of(&self, value: impl std::borrow::Borrow<T>) -> Result<Option<u64>, ListError> {
        let wanted = encode(value.borrow()).map_err(WriteError::Encode)?;
        self.read(|len| {
            for i in 0..len {
                match self.read_at(i)? {
                    Some(b) if b == wanted => return Ok(Some(i)),
                    Some(_) => {}
                    None => return Err(corrupt(format!("list element {i} of {len} missing"))),
                }
            }
            Ok(None)
        })
    }

    // ---- reading -------------------------------------------------------------------------

    /// Reads inside a version window: `f` runs until it saw an unchanged, even
    /// version (at most [`RETRIES`] times), then once under the lock.
    fn read<R>(&self, mut f: impl FnMut(u64) -> Result<R, ListError>) -> Result<R, ListError> {
        let version = &self.st().version;
        for _ in 0..RETRIES {
            // Acquire: pairs with the Release store that made it even.
            let v1 = version.load(Ordering::Acquire);
            if v1 % 2 == 0 {
                let len = self.st().len.load(Ordering::Acquire);
                let r = f(len);
                // Acquire fence: a read that saw an element written inside a later
                // window synchronizes with its map publish, which follows that
                // window's odd version in program order.
                fence(Ordering::Acquire);
                if version.load(Ordering::Relaxed) == v1 {
                    return r;
                }
            }
            std::hint::spin_loop();
        }
        let _guard = self.locked()?;
        f(self.st().len.load(Ordering::Relaxed))
    }

    /// Element `index`, `None` if `index >= len` (Python's `l[index]`, as
    /// `slice::get`).
    ///
    /// # Errors
    ///
    /// [`ListError::Read`] if the element does not decode or the list is corrupt.
    pub fn get(&self, index: u64) -> Result<Option<T>, ListError> {
        let bytes = self.read(|len| {
            if index >= len {
                return Ok(None);
            }
            self.read_at(index)?
                .map(Some)
                .ok_or_else(|| corrupt(format!("list element {index} of {len} missing")))
        })?;
        Ok(bytes
            .map(|b| T::decode(&b))
            .transpose()
            .map_err(ReadError::Decode)?)
    }

    /// Every element, in order: one consistent snapshot (Python's `list(l)`).
    ///
    /// # Errors
    ///
    /// As for [`get`](List::get).
    pub fn to_vec(&self) -> Result<Vec<T>, ListError> {
        let all = self.read(|len| {
            let mut all = Vec::new();
            for i in 0..len {
                match self.read_at(i)? {
                    Some(b) => all.push(b),
                    // A length that outruns the elements: a writer is mid-change
                    // (the version check retries) or the list is corrupt.
                    None => return Err(corrupt(format!("list element {i} of {len} missing"))),
                }
            }
            Ok(all)
        })?;
        all.iter()
            .map(|b| T::decode(b).map_err(|e| ListError::Read(ReadError::Decode(e))))
            .collect()
    }

    /// Checks the list (and its map) after recovering: keys `0 .. len` present,
    /// nothing parked, the map's bookkeeping whole.
    #[cfg(test)]
    pub(crate) fn audit(&self) -> Result<(), String> {
        drop(self.locked().map_err(|e| e.to_string())?);
        // First the map (its audit recovers every stripe, so its counts are exact).
        self.map.audit()?;
        let st = self.st();
        let len = st.len.load(Ordering::Relaxed);
        if st.op.load(Ordering::Relaxed) != OP_NONE || st.version.load(Ordering::Relaxed) % 2 == 1 {
            return Err("an intent or an odd version left".into());
        }
        if self.read_at(PENDING).map_err(|e| e.to_string())?.is_some() {
            return Err("a parked element left".into());
        }
        if self.map.len() != len {
            return Err(format!("{} map entries for length {len}", self.map.len()));
        }
        for i in 0..len {
            if self.read_at(i).map_err(|e| e.to_string())?.is_none() {
                return Err(format!("element {i} of {len} missing"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_operations_match_a_vec() {
        let l = List::<u32>::create_anonymous(DictOptions::new().max_bytes(1 << 20)).unwrap();
        let mut model = Vec::new();
        let mut x = 12345u64;
        for step in 0..3000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = model.len() as u64;
            match x % 7 {
                0 | 1 => {
                    l.append(step).unwrap();
                    model.push(step);
                }
                2 => assert_eq!(l.pop().unwrap(), model.pop()),
                3 => {
                    let i = (x >> 8) % (len + 2);
                    l.insert(i, step).unwrap();
                    model.insert((i as usize).min(model.len()), step);
                }
                4 if len > 0 => {
                    let i = (x >> 8) % len;
                    assert_eq!(l.remove(i).unwrap(), model.remove(i as usize));
                }
                5 if len > 0 => {
                    let i = (x >> 8) % len;
                    assert_eq!(l.set(i, step).unwrap(), model[i as usize]);
                    model[i as usize] = step;
                }
                _ => {
                    let i = (x >> 8) % (len + 1);
                    assert_eq!(l.get(i).unwrap(), model.get(i as usize).copied());
                }
            }
            assert_eq!(l.len(), model.len());
        }
        assert_eq!(l.to_vec().unwrap(), model);
        assert_eq!(
            l.remove(model.len() as u64),
            Err(ListError::IndexOutOfRange {
                index: model.len() as u64,
                len: model.len() as u64
            })
        );
        assert!(l.set(u64::MAX, 0).is_err());
        l.audit().unwrap();
    }

    #[test]
    fn a_list_writer_dying_at_any_step_is_recovered() {
        type Op = fn(&List<Vec<u8>>);
        let ops: [(&str, Op); 5] = [
            ("append", |l| l.append(vec![9; 30]).unwrap()),
            ("pop", |l| drop(l.pop().unwrap())),
            ("insert", |l| l.insert(2, vec![9; 3]).unwrap()),
            ("remove", |l| drop(l.remove(1).unwrap())),
            ("set", |l| drop(l.set(3, vec![9; 50]).unwrap())),
        ];
        for (name, op) in ops {
            let before: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; usize::from(i) * 7 + 1]).collect();
            let mut after = before.clone();
            match name {
                "append" => after.push(vec![9; 30]),
                "pop" => drop(after.pop()),
                "insert" => after.insert(2, vec![9; 3]),
                "remove" => drop(after.remove(1)),
                _ => after[3] = vec![9; 50],
            }
            let mut steps = 0;
            for n in 1.. {
                let l = List::<Vec<u8>>::create_anonymous(DictOptions::new().max_bytes(1 << 20))
                    .unwrap();
                l.extend(before.clone()).unwrap();
                map::tests::crash_at(n);
                let crashed =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&l))).is_err();
                map::tests::crash_at(0);
                // Readers see the list before or after, never in between.
                let seen = l.to_vec().unwrap();
                assert!(
                    seen == before || seen == after,
                    "{name}, crash {n}: {seen:?}"
                );
                l.audit()
                    .unwrap_or_else(|e| panic!("{name}, crash {n}: {e}"));
                let settled = l.to_vec().unwrap();
                assert!(settled == before || settled == after, "{name}, crash {n}");
                // It goes on working.
                l.append(vec![1]).unwrap();
                l.insert(0, vec![2]).unwrap();
                l.remove(0).unwrap();
                l.audit()
                    .unwrap_or_else(|e| panic!("{name}, crash {n}, later: {e}"));
                if !crashed {
                    break;
                }
                steps = n;
            }
            assert!(steps >= 4, "{name}: {steps} crash points");
        }
    }
}
