//! [`SerdeQueue<T>`]: any serde value, one encoded value per slot (feature `serde`).

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout, TypeName};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::core::*;
use super::error::*;
use super::{ByteQueue, UNBOUNDED_MAXSIZE};
use crate::object::{Mismatch, Object, Payload};
use std::sync::Arc;

/// The element type recorded for a queue of serde values of type `T`.
pub(super) fn serde_elem<T>() -> ElemType {
    ElemType {
        name: TypeName::new(&format!("serde {}", std::any::type_name::<T>())),
        size: 0,
        align: 1,
    }
}

/// Why a serde value was not put: by a blocking `put` (`E` =
/// [`PutBytesError`]) or by `put_nowait` / `put_timeout` (`E` = [`TryPutBytesError`],
/// which adds `Full`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerdePutError<E = PutBytesError> {
    /// The value could not be encoded (reported here, by `put` itself, never later).
    Encode(String),
    /// The encoded message was not put.
    Put(E),
}

impl<E> SerdePutError<E> {
    /// The same error with the put's error turned into another type.
    fn map<F>(self, f: impl FnOnce(E) -> F) -> SerdePutError<F> {
        match self {
            SerdePutError::Encode(why) => SerdePutError::Encode(why),
            SerdePutError::Put(e) => SerdePutError::Put(f(e)),
        }
    }
}

impl<E: fmt::Display> fmt::Display for SerdePutError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerdePutError::Encode(why) => write!(f, "cannot encode the value: {why}"),
            SerdePutError::Put(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for SerdePutError<E> {}

/// Why no serde value was got: by a blocking `get` (`E` = [`GetError`]) or by
/// `get_nowait` / `get_timeout` (`E` = [`TryGetError`], which adds `Empty`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerdeGetError<E = GetError> {
    /// No message was got.
    Get(E),
    /// A message was taken but does not decode as the queue's type (it is consumed).
    Decode(String),
}

impl<E: fmt::Display> fmt::Display for SerdeGetError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerdeGetError::Get(e) => e.fmt(f),
            SerdeGetError::Decode(why) => write!(f, "cannot decode the message: {why}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for SerdeGetError<E> {}

/// A queue of any serde value — Python's `Queue` of picklable objects — encoded with
/// postcard (feature `serde`). Encoding errors are returned by `put` itself.
///
/// Sized in items, like [`Queue`](super::Queue): it holds up to `maxsize` values, each encoded in
/// at most `max_item_size` bytes (one slot of the ring per value), and
/// [`qsize`](Self::qsize) and [`full`](Self::full) count values. A value that
/// encodes longer is refused by `put` with `Put(TooLarge)` naming both sizes.
/// `maxsize` 0 is Python's default: [`UNBOUNDED_MAXSIZE`] values (see
/// [`Queue::new`](super::Queue::new)).
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
#[derive(Debug, Clone)]
pub struct SerdeQueue<T> {
    bytes: ByteQueue,
    _items: PhantomData<fn(T) -> T>,
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Object for SerdeQueue<T> {
    const KIND: ObjectKind = ObjectKind::Queue;
    /// `(maxsize, max_item_size)`: how many values (0: [`UNBOUNDED_MAXSIZE`]), each
    /// encoding to at most how many bytes.
    type Args<'a> = (usize, usize);

    fn layout(&(maxsize, max_item_size): &(usize, usize)) -> Result<ObjectLayout, CreateError> {
        SerdeQueue::<T>::layout(maxsize, max_item_size)
    }

    fn init(args: (usize, usize), payload: &mut Payload<'_>) {
        if let Ok(layout) = <SerdeQueue<T> as Object>::layout(&args) {
            Core::init(&layout, args.0 == 0, payload);
        }
    }

    fn attach(segment: Arc<Segment>) -> Result<SerdeQueue<T>, Mismatch> {
        Core::attach(segment, serde_elem::<T>(), None)
            .map(|c| SerdeQueue::wrap(ByteQueue::with_core(c)))
    }

    fn segment(&self) -> &Segment {
        self.bytes.segment()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        describe(segment)
    }
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> SerdeQueue<T> {
    pub(super) fn wrap(bytes: ByteQueue) -> SerdeQueue<T> {
        SerdeQueue {
            bytes,
            _items: PhantomData,
        }
    }

    pub(super) fn layout(
        maxsize: usize,
        max_item_size: usize,
    ) -> Result<ObjectLayout, CreateError> {
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
        SerdeQueue::create_anonymous((maxsize, max_item_size))
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
        SerdeQueue::create_with(name, (maxsize, max_item_size), CreateOptions::new())
    }

    /// Opens a named queue of serde values of type `T` (the type name must match).
    ///
    /// # Errors
    ///
    /// As for [`Segment::open`].
    pub fn open(name: &str) -> Result<SerdeQueue<T>, OpenError> {
        SerdeQueue::open_with(name, OpenOptions::new())
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
    pub(super) fn encode(&self, value: &T) -> Result<Vec<u8>, SerdePutError> {
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

    pub(super) fn decode<E>(bytes: &[u8]) -> Result<T, SerdeGetError<E>> {
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
    pub fn put_timeout(
        &self,
        value: &T,
        timeout: Duration,
    ) -> Result<(), SerdePutError<TryPutBytesError>> {
        let bytes = self.encode(value).map_err(|e| e.map(Into::into))?;
        self.bytes
            .put_timeout(&bytes, timeout)
            .map_err(SerdePutError::Put)
    }

    /// Puts if there is room now.
    ///
    /// # Errors
    ///
    /// As for [`put`](Self::put), and `Put(Full)`.
    pub fn put_nowait(&self, value: &T) -> Result<(), SerdePutError<TryPutBytesError>> {
        let bytes = self.encode(value).map_err(|e| e.map(Into::into))?;
        self.bytes.put_nowait(&bytes).map_err(SerdePutError::Put)
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
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, SerdeGetError<TryGetError>> {
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
    pub fn get_nowait(&self) -> Result<T, SerdeGetError<TryGetError>> {
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

    /// Shuts the queue down for every process; see [`Queue::shutdown`](super::Queue::shutdown).
    pub fn shutdown(&self, immediate: bool) {
        self.bytes.shutdown(immediate);
    }
}
