//! [`Dict`]: Python's `Manager().dict()` in shared memory, with no server process.
//!
//! Any number of processes read and write one map at once: readers never write to
//! the map and lock only when a key changes under every copy they try (a dead reader
//! harms nobody, a dead writer stalls no reader), writers to keys of different stripes
//! proceed in parallel, and a writer killed at any instruction leaves every key at
//! its old or its new value — the next writer of its stripe finishes or undoes the
//! dead writer's update and reclaims its memory. The algorithm (layout, protocol,
//! recovery, growth) is described in `src/dict/map/mod.rs`.
//!
//! ```
//! use shmproc::{Dict, Process};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let d = Dict::<u32, u32>::new()?;
//! let mut children = Vec::new();
//! for procnum in 0..5 {
//!     let d = d.clone();
//!     children.push(Process::spawn(move || {
//!         d.insert(procnum, procnum).unwrap();
//!     })?);
//! }
//! for child in &mut children {
//!     child.join()?;
//! }
//! let mut values = d.values()?;
//! values.sort();
//! assert_eq!(values, [0, 1, 2, 3, 4]);
//! # Ok(()) }
//! ```
//!
//! # Limits
//!
//! - A map's segment is as large as the map may ever grow — by default 32 GiB of
//!   records plus an index of up to 2^27 buckets (about 100 M entries), 40 GiB of
//!   address space — but only what is used is backed by memory, reserved with
//!   `fallocate` as the map grows (each region doubling from 64 KiB, in steps of at
//!   most 64 MiB) ([`DictOptions::max_bytes`] picks
//!   another bound). A full `/dev/shm` or memory gives [`WriteError::OutOfMemory`],
//!   never a SIGBUS.
//! - Records (key bytes rounded up to 8, value bytes and 8 bytes of header) are
//!   stored in power-of-two blocks of 16 B … 1 GiB, taken from the region of the
//!   key's stripe (one of 16, each 1/16 of the bound). A larger record, or one that
//!   does not fit its stripe's region, is [`WriteError::TooLarge`] — never a
//!   truncation. Removed and replaced records' blocks are reused for records of the
//!   same size class and stripe.
//! - The index grows (doubling) and is rebuilt when tombstones crowd it; old index
//!   tables are kept for reuse by later rebuilds of the same size, so the index
//!   region holds at most about four times the current table.
//! - Keys are hashed with a fixed, unseeded hash: a map shared with untrusted
//!   writers can be made slow (long probe sequences), never wrong or unsafe.

mod codec;
mod list;
mod map;

#[cfg(feature = "serde")]
pub use codec::Serde;
pub use codec::{Counter, Decode, DecodeError, Encode, EncodeError, Plain};
pub use list::{List, ListError};

use crate::layout::header::{ElemType, HEADER_SIZE, ObjectKind, ObjectLayout};
use crate::object::{self, Mismatch, Object, Payload};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use map::{Action, Geometry, Map, STRIPES};
use std::borrow::{Borrow, Cow};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// Why a read ([`get`](Dict::get), [`items`](Dict::items), …) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// The map's memory holds something no writer writes (a process scribbled on
    /// it): what was found.
    Corrupt(String),
    /// The stored bytes are not a value of this handle's type.
    Decode(DecodeError),
    /// The key could not be encoded.
    Encode(EncodeError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Corrupt(why) => write!(f, "the dict is corrupt: {why}"),
            ReadError::Decode(e) => write!(f, "reading the dict: {e}"),
            ReadError::Encode(e) => write!(f, "looking up a key: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Why a write ([`insert`](Dict::insert), [`remove`](Dict::remove),
/// [`update_with`](Dict::update_with), …) failed. The map is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The key and value need a record of `bytes` bytes; this map stores records of
    /// at most `max` bytes.
    TooLarge {
        /// Bytes the record needs (8 + key rounded up to 8 + value).
        bytes: u64,
        /// The largest record the map holds.
        max: u64,
    },
    /// The map is at the bound it was created with (its key's stripe region or its
    /// index is full): what is full.
    Full(String),
    /// Memory for the map to grow into could not be reserved (`/dev/shm` or memory
    /// full): the OS error.
    OutOfMemory(String),
    /// The key or value could not be encoded.
    Encode(EncodeError),
    /// The stored value is not a value of this handle's type (so it was not
    /// replaced).
    Decode(DecodeError),
    /// The map's memory holds something no writer writes: what was found.
    Corrupt(String),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::TooLarge { bytes, max } => write!(
                f,
                "a record of {bytes} bytes is larger than the {max} bytes this dict stores"
            ),
            WriteError::Full(what) => write!(f, "the dict is full: {what}"),
            WriteError::OutOfMemory(why) => {
                write!(f, "cannot reserve memory for the dict to grow: {why}")
            }
            WriteError::Encode(e) => write!(f, "writing to the dict: {e}"),
            WriteError::Decode(e) => write!(f, "reading the old value: {e}"),
            WriteError::Corrupt(why) => write!(f, "the dict is corrupt: {why}"),
        }
    }
}

impl std::error::Error for WriteError {}

/// What sizes a new [`Dict`]: the most record bytes it may ever hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DictOptions {
    max_bytes: u64,
}

impl Default for DictOptions {
    fn default() -> DictOptions {
        DictOptions {
            max_bytes: 32 << 30,
        }
    }
}

impl DictOptions {
    /// 32 GiB of records at most (address space; memory is used as the map grows).
    pub fn new() -> DictOptions {
        DictOptions::default()
    }

    /// The most bytes of records the map may hold, rounded up to a multiple of
    /// 1 MiB (16 stripes × 64 KiB); from 1 MiB to 1 TiB. The index is sized to
    /// match (at most 2^27 buckets).
    pub fn max_bytes(mut self, bytes: u64) -> DictOptions {
        self.max_bytes = bytes;
        self
    }

    fn region_bytes(&self) -> Option<u64> {
        if self.max_bytes > 1 << 40 {
            return None;
        }
        let per = self.max_bytes.div_ceil(STRIPES as u64);
        Some(
            per.next_multiple_of(map::REGION_ALIGN)
                .max(map::REGION_ALIGN),
        )
    }
}

/// A hash map in shared memory, like Python's `Manager().dict()` without the
/// manager: every process that has it (by name, or inherited from a parent through
/// [`Process`](crate::Process)) reads and writes the same map.
///
/// Keys and values are stored as bytes through [`Encode`]/[`Decode`]: plain old
/// data inline ([`Plain`] for your own `Pod` types), `Vec<u8>` and `String`, and any
/// serde type through `Serde` (feature `serde`). Operations copy values in and out;
/// nothing hands out references into shared memory.
///
/// # Concurrency
///
/// - Reads (`get`, `contains_key`, `len`, `items`, …) take no lock: they copy a
///   record and check it was not changed meanwhile, so they see every key at a value
///   it had, never a torn one. (After 64 changed copies in a row a read takes the
///   key's stripe lock, so it cannot starve.)
/// - Each write is atomic for its key, including the read-modify-writes
///   [`update_with`](Dict::update_with), [`compare_and_swap`](Dict::compare_and_swap),
///   [`fetch_add`](Dict::fetch_add) and [`setdefault`](Dict::setdefault) (which
///   Manager().dict() cannot do: there `d[k] += 1` races). Writes to keys of
///   different stripes (16, by hash) run in parallel.
/// - Operations on several keys ([`update`](Dict::update), [`clear`](Dict::clear),
///   iteration) are a sequence of single-key steps, not one atomic step.
///
/// # A writer that dies
///
/// A process killed in the middle of a write leaves its key at the old or the new
/// value; the next writer of the key's stripe (or a reader that falls back to the
/// lock) finishes or rolls back the update and reclaims the dead writer's block. No
/// other key is affected and nobody waits for the dead process longer than the lock's
/// liveness check takes to notice it (its checks come after 1, 2, 4 … up to 100 ms of
/// waiting). Readers do not wait for it at all.
///
/// # Examples
///
/// ```
/// use shmproc::Dict;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let d = Dict::<String, u64>::new()?;
/// assert_eq!(d.insert("apples".to_string(), 3)?, None);
/// assert_eq!(d.insert("apples".to_string(), 5)?, Some(3));
/// assert_eq!(d.get("apples")?, Some(5));
/// assert_eq!(d.fetch_add("pears", 2)?, 0);
/// assert_eq!(d.get_or("pears", 0)?, 2);
/// assert_eq!(d.len(), 2);
/// assert_eq!(d.remove("apples")?, Some(5));
/// assert!(!d.contains_key("apples")?);
/// # Ok(()) }
/// ```
pub struct Dict<K, V> {
    map: Arc<Map>,
    _types: PhantomData<Types<K, V>>,
}

/// What a `Dict` stores, as a marker that is `Send + Sync` whatever `K` and `V` are
/// (the handle holds none of them).
type Types<K, V> = fn(K, V) -> (K, V);

impl<K, V> Clone for Dict<K, V> {
    fn clone(&self) -> Dict<K, V> {
        Dict {
            map: Arc::clone(&self.map),
            _types: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dict")
            .field("name", &self.map.segment().name())
            .field("len", &self.map.len())
            .finish()
    }
}

/// The layout of a dict of `(K, V)` whose data regions are `region_bytes` each.
fn dict_layout<K, V>(region_bytes: u64) -> Option<ObjectLayout> {
    map_layout(ObjectKind::Dict, ElemType::of::<(K, V)>(), region_bytes)
}

/// The layout of an object of `kind` built on a map with data regions of
/// `region_bytes` each.
fn map_layout(kind: ObjectKind, elem: ElemType, region_bytes: u64) -> Option<ObjectLayout> {
    let geo = Geometry::new(region_bytes)?;
    Some(ObjectLayout {
        kind,
        elem,
        slot_size: STRIPES as u32,
        capacity: region_bytes,
        payload_size: geo.payload,
    })
}

impl<K: Encode + Decode, V: Encode + Decode> Object for Dict<K, V> {
    const KIND: ObjectKind = ObjectKind::Dict;
    type Args<'a> = DictOptions;

    fn layout(args: &DictOptions) -> Result<ObjectLayout, CreateError> {
        args.region_bytes()
            .and_then(dict_layout::<K, V>)
            .ok_or_else(|| {
                CreateError::InvalidArgument(format!(
                    "max_bytes {} is above the 1 TiB a Dict may hold",
                    args.max_bytes
                ))
            })
    }

    fn initial_reserve(layout: &ObjectLayout) -> Option<u64> {
        Geometry::new(layout.capacity).map(|g| HEADER_SIZE as u64 + g.initial_reserve())
    }

    fn init(_: DictOptions, payload: &mut Payload<'_>) {
        map::init(payload);
    }

    fn attach(segment: Arc<Segment>) -> Result<Dict<K, V>, Mismatch> {
        let found = segment.info().layout;
        if found.slot_size != STRIPES as u32 {
            return Err(Mismatch::new("stripes", STRIPES, found.slot_size));
        }
        object::check_layout(&found, dict_layout::<K, V>(found.capacity))?;
        let geo = Geometry::new(found.capacity)
            .ok_or_else(|| Mismatch::new("capacity", "a usable region size", found.capacity))?;
        Ok(Dict {
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

/// `shmproc inspect` rows for a `List` segment (any element type).
pub(crate) fn list_inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    list::inspect(segment)
}

/// `shmproc inspect` rows for a `Dict` segment (any key and value types).
pub(crate) fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    map::inspect(segment)
}

/// The bytes of a key or value.
fn encode<T: Encode + ?Sized>(v: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    v.encode(&mut out)?;
    Ok(out)
}

/// Per-thread buffers for a key's encoding and a value's bytes, reused by every
/// lookup so that a get of a small key allocates nothing (two allocations and frees
/// were half of a cache-resident get's instructions).
mod scratch {
    use std::cell::Cell;

    thread_local! {
        static KEY: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
        static VALUE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }

    /// Buffers larger than this go back to the allocator instead of staying.
    const KEEP: usize = 64 * 1024;

    /// Runs `f` with an empty key buffer and an empty value buffer. Re-entrant (a
    /// nested call gets fresh buffers) and usable while the thread's locals are being
    /// torn down.
    #[inline]
    pub(super) fn with<R>(f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> R) -> R {
        let mut key = KEY.try_with(Cell::take).unwrap_or_default();
        let mut value = VALUE.try_with(Cell::take).unwrap_or_default();
        key.clear();
        value.clear();
        let r = f(&mut key, &mut value);
        if key.capacity() <= KEEP {
            let _ = KEY.try_with(|c| c.set(key));
        }
        if value.capacity() <= KEEP {
            let _ = VALUE.try_with(|c| c.set(value));
        }
        r
    }
}

impl<K: Encode + Decode, V: Encode + Decode> Dict<K, V> {
    /// Creates an empty dict in an anonymous segment, shared with children started
    /// with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    pub fn new() -> Result<Dict<K, V>, CreateError> {
        Dict::create_anonymous(DictOptions::new())
    }

    /// Creates an empty dict named `name` (in `/dev/shm`, mode 0600) that other
    /// processes can [`open`](Dict::open); the name is removed when the creating
    /// process's last handle is dropped (see [`Object::persist`]).
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid name, a name that exists, permissions.
    pub fn create(name: &str) -> Result<Dict<K, V>, CreateError> {
        Dict::create_with(name, DictOptions::new(), CreateOptions::new())
    }

    /// Opens the dict named `name`.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not a `Dict` (`WrongKind`), a dict of other key or
    /// value types (`IncompatibleLayout`, naming both), a corrupt header.
    pub fn open(name: &str) -> Result<Dict<K, V>, OpenError> {
        Dict::open_with(name, OpenOptions::new())
    }

    /// Sets `key` to `value` (Python's `d[key] = value`); returns the value it
    /// replaced.
    ///
    /// # Errors
    ///
    /// [`WriteError`]: the record is too large or the map is full or out of memory;
    /// the old value does not decode; the map is corrupt.
    pub fn insert(
        &self,
        key: impl Borrow<K>,
        value: impl Borrow<V>,
    ) -> Result<Option<V>, WriteError> {
        let value = encode(value.borrow()).map_err(WriteError::Encode)?;
        self.modify_decoding(key.borrow(), &mut |_| {
            Ok(Action::Put(Cow::Borrowed(&value)))
        })
    }

    /// The value of `key`, `None` if absent (Python's `d.get(key)`).
    ///
    /// # Errors
    ///
    /// [`ReadError`]: the stored bytes do not decode; the map is corrupt.
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>, ReadError>
    where
        K: Borrow<Q>,
        Q: Encode + ?Sized,
    {
        scratch::with(|k, out| {
            key.encode(k).map_err(ReadError::Encode)?;
            if self.map.get(k, self.map.hash(k), out)? {
                V::decode(out).map(Some).map_err(ReadError::Decode)
            } else {
                Ok(None)
            }
        })
    }

    /// The value of `key`, or `default` if absent (Python's `d.get(key, default)`).
    ///
    /// # Errors
    ///
    /// As for [`get`](Dict::get).
    pub fn get_or<Q>(&self, key: &Q, default: V) -> Result<V, ReadError>
    where
        K: Borrow<Q>,
        Q: Encode + ?Sized,
    {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// Whether `key` is present (Python's `key in d`).
    ///
    /// # Errors
    ///
    /// [`ReadError::Corrupt`] if the map is corrupt.
    pub fn contains_key<Q>(&self, key: &Q) -> Result<bool, ReadError>
    where
        K: Borrow<Q>,
        Q: Encode + ?Sized,
    {
        scratch::with(|k, out| {
            key.encode(k).map_err(ReadError::Encode)?;
            self.map.get(k, self.map.hash(k), out)
        })
    }

    /// Removes `key`; returns its value, `None` if it was absent (Python's
    /// `d.pop(key, None)`).
    ///
    /// # Errors
    ///
    /// As for [`insert`](Dict::insert).
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>, WriteError>
    where
        K: Borrow<Q>,
        Q: Encode + ?Sized,
    {
        self.modify_decoding(key, &mut |_| Ok(Action::Remove))
    }

    /// [`remove`](Dict::remove), by Python's name.
    ///
    /// # Errors
    ///
    /// As for [`remove`](Dict::remove).
    pub fn pop<Q>(&self, key: &Q) -> Result<Option<V>, WriteError>
    where
        K: Borrow<Q>,
        Q: Encode + ?Sized,
    {
        self.remove(key)
    }

    /// Entries in the map (Python's `len(d)`): a snapshot, the sum of the stripes'
    /// counts, each exact at the moment it was read.
    pub fn len(&self) -> usize {
        self.map.len() as usize
    }

    /// Whether [`len`](Dict::len) is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry (Python's `d.clear()`), stripe by stripe: a key inserted
    /// into a stripe already cleared while `clear` runs stays.
    ///
    /// # Errors
    ///
    /// [`WriteError::Corrupt`] if the map is corrupt.
    pub fn clear(&self) -> Result<(), WriteError> {
        self.map.clear()
    }

    /// Inserts every pair of `items` in turn (Python's `d.update(items)`); stops at
    /// the first error, leaving the pairs before it inserted.
    ///
    /// # Errors
    ///
    /// As for [`insert`](Dict::insert).
    pub fn update<I>(&self, items: I) -> Result<(), WriteError>
    where
        I: IntoIterator<Item = (K, V)>,
    {
        for (k, v) in items {
            let value = encode(&v).map_err(WriteError::Encode)?;
            self.modify(&k, &mut |_| Ok(Action::Put(Cow::Borrowed(&value))))?;
        }
        Ok(())
    }

    /// The value of `key`; if absent, inserts `default` and returns it — one atomic
    /// step (Python's `d.setdefault(key, default)`).
    ///
    /// # Errors
    ///
    /// As for [`insert`](Dict::insert).
    pub fn setdefault(&self, key: impl Borrow<K>, default: V) -> Result<V, WriteError> {
        let value = encode(&default).map_err(WriteError::Encode)?;
        let old = self.modify_decoding(key.borrow(), &mut |old| {
            Ok(match old {
                Some(_) => Action::Keep,
                None => Action::Put(Cow::Borrowed(&value)),
            })
        })?;
        Ok(old.unwrap_or(default))
    }

    /// Sets `key` to `f(current value)` as one atomic step for that key, and
    /// returns the new value: no other write to the key comes between the read and
    /// the write (`d[k] = f(d.get(k))` without the race).
    ///
    /// `f` runs under the key's stripe lock (it must not use this dict, or it may
    /// wait for itself), and may run more than once if the index is resized
    /// meanwhile — only its last result is stored, as with
    /// [`AtomicU64::fetch_update`](std::sync::atomic::AtomicU64::fetch_update).
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::Dict;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let d = Dict::<u8, String>::new()?;
    /// d.update_with(1, |old| old.unwrap_or_default() + "a")?;
    /// assert_eq!(d.update_with(1, |old| old.unwrap_or_default() + "b")?, "ab");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`insert`](Dict::insert); nothing is stored on an error.
    pub fn update_with<F>(&self, key: impl Borrow<K>, mut f: F) -> Result<V, WriteError>
    where
        F: FnMut(Option<V>) -> V,
    {
        let mut last = None;
        self.modify(key.borrow(), &mut |old| {
            let old = old
                .map(|b| V::decode(b))
                .transpose()
                .map_err(WriteError::Decode)?;
            let new = f(old);
            let bytes = encode(&new).map_err(WriteError::Encode)?;
            last = Some(new);
            Ok(Action::Put(Cow::Owned(bytes)))
        })?;
        last.ok_or_else(|| WriteError::Corrupt("the update was not applied".into()))
    }

    /// Sets `key` to `new` if its value is `current` (`None`: absent), as one atomic
    /// step. Returns `Ok(())` if it did, `Err(actual)` with the value found if not.
    /// Values are compared by their encoded bytes.
    ///
    /// # Errors
    ///
    /// As for [`insert`](Dict::insert).
    pub fn compare_and_swap(
        &self,
        key: impl Borrow<K>,
        current: Option<&V>,
        new: impl Borrow<V>,
    ) -> Result<Result<(), Option<V>>, WriteError> {
        let expected = current
            .map(|c| encode(c))
            .transpose()
            .map_err(WriteError::Encode)?;
        let new = encode(new.borrow()).map_err(WriteError::Encode)?;
        let mut swapped = false;
        let old = self.modify_decoding(key.borrow(), &mut |old| {
            swapped = old == expected.as_deref();
            Ok(if swapped {
                Action::Put(Cow::Borrowed(&new))
            } else {
                Action::Keep
            })
        })?;
        Ok(if swapped { Ok(()) } else { Err(old) })
    }

    /// Applies `decide` to `key`'s value as one atomic step, for callers that do not
    /// need the old value back: it goes to a per-thread buffer, not a new `Vec`.
    fn modify<Q: Encode + ?Sized>(
        &self,
        key: &Q,
        decide: &mut map::Decide<'_>,
    ) -> Result<(), WriteError> {
        scratch::with(|k, old| {
            key.encode(k).map_err(WriteError::Encode)?;
            self.map
                .modify_into(k, self.map.hash(k), decide, old)
                .map(|_| ())
        })
    }

    /// [`modify`](Dict::modify), decoding the old value from a per-thread buffer
    /// (no allocation for it).
    fn modify_decoding<Q: Encode + ?Sized>(
        &self,
        key: &Q,
        decide: &mut map::Decide<'_>,
    ) -> Result<Option<V>, WriteError> {
        scratch::with(|k, old| {
            key.encode(k).map_err(WriteError::Encode)?;
            if self.map.modify_into(k, self.map.hash(k), decide, old)? {
                V::decode(old).map(Some).map_err(WriteError::Decode)
            } else {
                Ok(None)
            }
        })
    }

    /// Every (key, value) pair: a snapshot taken bucket by bucket, without locking.
    ///
    /// What a concurrent writer can make it see: every key present for the whole
    /// scan appears exactly once, with a value it had during the scan; a key inserted
    /// or removed during the scan may or may not appear; no key appears twice and no
    /// value is torn. It is not one atomic snapshot of the whole map: two keys
    /// updated one after the other may be seen with the second's new value and the
    /// first's old one. (If the index is resized during the scan it starts over;
    /// after 16 restarts it scans with every stripe locked.)
    ///
    /// # Errors
    ///
    /// [`ReadError`]: a key or value does not decode; the map is corrupt.
    pub fn items(&self) -> Result<Vec<(K, V)>, ReadError> {
        self.map
            .items()?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    K::decode(&k).map_err(ReadError::Decode)?,
                    V::decode(&v).map_err(ReadError::Decode)?,
                ))
            })
            .collect()
    }

    /// The keys of [`items`](Dict::items) (the same snapshot rules).
    ///
    /// # Errors
    ///
    /// As for [`items`](Dict::items).
    pub fn keys(&self) -> Result<Vec<K>, ReadError> {
        self.map
            .items()?
            .into_iter()
            .map(|(k, _)| K::decode(&k).map_err(ReadError::Decode))
            .collect()
    }

    /// The values of [`items`](Dict::items) (the same snapshot rules).
    ///
    /// # Errors
    ///
    /// As for [`items`](Dict::items).
    pub fn values(&self) -> Result<Vec<V>, ReadError> {
        self.map
            .items()?
            .into_iter()
            .map(|(_, v)| V::decode(&v).map_err(ReadError::Decode))
            .collect()
    }

    /// The name, `None` for an anonymous dict.
    pub fn name(&self) -> Option<&str> {
        self.map.segment().name()
    }

    /// The largest record (8 + key bytes rounded up to 8 + value bytes) this dict
    /// stores.
    pub fn max_record(&self) -> u64 {
        map::max_record(self.map.geometry().region_bytes)
    }
}

impl<K: Encode + Decode, V: Counter> Dict<K, V> {
    /// Adds `delta` to the value of `key` (wrapping; an absent key counts as 0) as
    /// one atomic step, and returns the value before.
    ///
    /// # Errors
    ///
    /// As for [`insert`](Dict::insert).
    pub fn fetch_add<Q>(&self, key: &Q, delta: V) -> Result<V, WriteError>
    where
        K: Borrow<Q>,
        Q: Encode + ?Sized,
    {
        let mut before = V::ZERO;
        self.modify(key, &mut |old| {
            before = old
                .map(V::decode)
                .transpose()
                .map_err(WriteError::Decode)?
                .unwrap_or(V::ZERO);
            Ok(Action::Put(Cow::Owned(
                encode(&before.wrapping_add(delta)).map_err(WriteError::Encode)?,
            )))
        })?;
        Ok(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_operations() {
        let d = Dict::<u64, String>::new().unwrap();
        assert!(d.is_empty());
        assert_eq!(d.insert(1, "one".to_string()).unwrap(), None);
        assert_eq!(d.insert(1, "uno".to_string()).unwrap(), Some("one".into()));
        assert_eq!(d.get(&1).unwrap().as_deref(), Some("uno"));
        assert_eq!(d.get(&2).unwrap(), None);
        assert_eq!(d.setdefault(2, "two".into()).unwrap(), "two");
        assert_eq!(d.setdefault(2, "deux".into()).unwrap(), "two");
        assert_eq!(d.len(), 2);
        assert_eq!(d.remove(&1).unwrap().as_deref(), Some("uno"));
        assert_eq!(d.remove(&1).unwrap(), None);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.compare_and_swap(2, Some(&"two".to_string()), "2".to_string())
                .unwrap(),
            Ok(())
        );
        assert_eq!(
            d.compare_and_swap(2, None, "x".to_string()).unwrap(),
            Err(Some("2".to_string()))
        );
        assert_eq!(
            d.compare_and_swap(3, Some(&"2".to_string()), "x".to_string())
                .unwrap(),
            Err(None)
        );
        d.update([(5, "five".to_string()), (2, "deux".to_string())])
            .unwrap();
        assert_eq!(d.get(&5).unwrap().as_deref(), Some("five"));
        assert_eq!(d.get(&2).unwrap().as_deref(), Some("deux"));
        assert_eq!(d.len(), 2);
        d.clear().unwrap();
        assert!(d.is_empty());
        assert_eq!(d.items().unwrap(), vec![]);
    }

    #[test]
    fn grows_and_reuses() {
        let d = Dict::<u32, u32>::create_anonymous(DictOptions::new().max_bytes(1 << 20)).unwrap();
        for round in 0..3u32 {
            for i in 0..5000 {
                assert_eq!(
                    d.insert(i, i + round).unwrap(),
                    round.checked_sub(1).map(|r| i + r)
                );
            }
            assert_eq!(d.len(), 5000);
            for i in 0..5000 {
                assert_eq!(d.get(&i).unwrap(), Some(i + round));
            }
        }
        let mut items = d.items().unwrap();
        items.sort();
        assert_eq!(items, (0..5000).map(|i| (i, i + 2)).collect::<Vec<_>>());
        for i in 0..5000 {
            assert_eq!(d.remove(&i).unwrap(), Some(i + 2));
        }
        assert!(d.is_empty());
        // Churn through tombstones: the index is rebuilt, not grown without end.
        for i in 0..50_000u32 {
            d.insert(i, i).unwrap();
            d.remove(&i).unwrap();
        }
        assert!(d.is_empty());
    }

    /// Runs `op` with a crash injected at each of its steps in turn (a fresh map of
    /// `prefill` keys each time), then checks every key is at its old or new value
    /// and the bookkeeping adds up once the next writers recovered.
    fn crash_everywhere(
        prefill: u64,
        key: u64,
        clears: bool,
        op: impl Fn(&Dict<u64, Vec<u8>>),
    ) -> u32 {
        let value = |k: u64, round: u8| vec![round; (k % 40) as usize + 1];
        for n in 1.. {
            let d = Dict::<u64, Vec<u8>>::create_anonymous(DictOptions::new().max_bytes(1 << 20))
                .unwrap();
            for k in 0..prefill {
                d.insert(k, value(k, 1)).unwrap();
                // Some churn, so the free lists are not empty.
                if k % 7 == 0 {
                    d.insert(k, value(k + 3, 9)).unwrap();
                    d.insert(k, value(k, 1)).unwrap();
                }
            }
            map::tests::crash_at(n);
            let crashed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&d))).is_err();
            map::tests::crash_at(0);
            for k in 0..prefill {
                let got = d.get(&k).unwrap();
                if k != key && !(clears && got.is_none()) {
                    assert_eq!(got, Some(value(k, 1)), "crash {n}: key {k}");
                }
            }
            let got = d.get(&key).unwrap();
            assert!(
                got.is_none() || got == Some(value(key, 1)) || got == Some(value(key, 2)),
                "crash {n}: {got:?}"
            );
            // The count agrees with what readers see before any writer has touched
            // the stripe again (a lock-free len must settle a dead writer's update).
            let visible = (0..prefill).filter(|k| d.get(k).unwrap().is_some()).count()
                + usize::from(key >= prefill && got.is_some());
            assert_eq!(d.len(), visible, "crash {n}: len");
            d.map.audit().unwrap_or_else(|e| panic!("crash {n}: {e}"));
            assert_eq!(
                d.get(&key).unwrap(),
                got,
                "crash {n}: recovery changed the key"
            );
            // The map goes on working.
            d.insert(key, value(key, 3)).unwrap();
            d.insert(5000, value(5000, 3)).unwrap();
            d.remove(&5000).unwrap();
            d.map
                .audit()
                .unwrap_or_else(|e| panic!("crash {n}, later: {e}"));
            if !crashed {
                return n - 1;
            }
        }
        unreachable!()
    }

    #[test]
    fn a_writer_dying_at_any_step_is_recovered() {
        // Insert a new key, replace one, remove one, and an insert that resizes the
        // index (80 keys: the next one crowds a 128-bucket table).
        let steps = crash_everywhere(20, 100, false, |d| {
            d.insert(100, vec![2; 21]).unwrap();
        });
        assert!(steps >= 8, "{steps}");
        crash_everywhere(20, 3, false, |d| {
            d.insert(3, vec![2; 4]).unwrap();
        });
        crash_everywhere(20, 4, false, |d| {
            d.remove(&4).unwrap();
        });
        let steps = crash_everywhere(80, 100, false, |d| {
            d.insert(100, vec![2; 21]).unwrap();
        });
        assert!(steps >= 16, "{steps}");
        crash_everywhere(30, 7, true, |d| {
            d.clear().unwrap();
        });
    }

    #[test]
    fn threads_of_one_process_share_a_handle() {
        let d = Dict::<u64, u64>::new().unwrap();
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let d = &d;
                scope.spawn(move || {
                    for i in 0..2000 {
                        d.insert(t * 10_000 + i, i).unwrap();
                        d.fetch_add(&u64::MAX, 1).unwrap();
                        assert_eq!(d.get(&(t * 10_000 + i)).unwrap(), Some(i));
                    }
                });
            }
        });
        assert_eq!(d.len(), 4 * 2000 + 1);
        assert_eq!(d.get(&u64::MAX).unwrap(), Some(8000));
        d.map.audit().unwrap();
    }

    #[test]
    fn oversize_is_an_error() {
        let d =
            Dict::<u8, Vec<u8>>::create_anonymous(DictOptions::new().max_bytes(1 << 20)).unwrap();
        let max = d.max_record();
        assert_eq!(max, 64 << 10);
        let err = d.insert(1, vec![0u8; max as usize]).unwrap_err();
        assert!(matches!(err, WriteError::TooLarge { .. }), "{err}");
        let fits = vec![7u8; max as usize - 16];
        d.insert(1, &fits).unwrap();
        assert_eq!(d.get(&1).unwrap(), Some(fits));
    }
}
