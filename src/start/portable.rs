//! What can be handed to a child started with [`Spawn`](super::StartMethod::Spawn) or
//! [`Forkserver`](super::StartMethod::Forkserver): the [`Portable`] values and their
//! encoding.
//!
//! A forked child inherits its parent's memory. A spawned one starts from nothing and
//! gets only what its start request carries: bytes, and descriptors passed with
//! `SCM_RIGHTS`. Every shmproc object travels as its segment's descriptor (plus its
//! name, for a named one) and the role of the handle (which pipe end); the child
//! validates what it receives exactly like an open — header, kind, element type,
//! layout — so a wrong or forged handle is an error, never a handle over the wrong
//! memory. Python pickles a `Queue` or a `Lock` for its spawn children the same way.

use crate::object::{Object, attach_opened_as};
use crate::segment::{OpenError, Segment};
use rustix::fd::{AsFd, OwnedFd};
use std::fmt;

/// A value that can cross into a process started with
/// [`Spawn`](super::StartMethod::Spawn) or [`Forkserver`](super::StartMethod::Forkserver),
/// like a picklable argument in Python.
///
/// Implemented for every shmproc [`Object`] (queues, pipe ends, the synchronization
/// types, values and arrays, `Dict`/`List`), for integers, floats, `bool`, `char`,
/// `String`, `Vec<T>`, arrays, `Option<T>`, `()` and tuples of up to eight portable values,
/// and — with the `serde` feature — for any serde value wrapped in
/// [`Serde`](super::Serde).
///
/// # Examples
///
/// ```
/// use shmproc::start::{Decoder, Encoder, Portable};
/// let mut enc = Encoder::default();
/// (7u32, String::from("seven"), vec![1u8, 2], [1.5f64; 3]).encode(&mut enc).unwrap();
/// let (bytes, fds) = enc.into_parts();
/// let mut dec = Decoder::new(&bytes, fds);
/// let back = <(u32, String, Vec<u8>, [f64; 3])>::decode(&mut dec).unwrap();
/// assert_eq!(back, (7, "seven".to_string(), vec![1, 2], [1.5; 3]));
/// ```
pub trait Portable: Sized {
    /// Appends the value to `enc`.
    ///
    /// # Errors
    ///
    /// [`HandoffError`] if the value cannot travel (a descriptor that cannot be
    /// duplicated, a serde value that fails to encode).
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError>;

    /// Reads a value back. Input comes from another process: every length, tag and
    /// descriptor is checked.
    ///
    /// # Errors
    ///
    /// [`HandoffError`] naming what is malformed or which open failed.
    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError>;
}

/// Why a value could not be handed to a child, or read back in it.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandoffError {
    /// The encoded bytes end before the value does, or hold a bad tag or length; or
    /// (when encoding) the value cannot travel, and why.
    Malformed(String),
    /// A handle's descriptor is missing or is not a usable shmproc segment of the
    /// expected kind and layout (the open error says which).
    Open(OpenError),
    /// A descriptor could not be duplicated to travel.
    Io(std::io::Error),
    /// A serde value failed to encode or decode.
    Serde(String),
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoffError::Malformed(what) => write!(f, "malformed handoff: {what}"),
            HandoffError::Open(e) => write!(f, "handed-over object: {e}"),
            HandoffError::Io(e) => write!(f, "handing over a descriptor: {e}"),
            HandoffError::Serde(e) => write!(f, "serde value: {e}"),
        }
    }
}

impl std::error::Error for HandoffError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandoffError::Open(e) => Some(e),
            HandoffError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The bytes and descriptors a start request carries, being written.
#[derive(Debug, Default)]
pub struct Encoder {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Encoder {
    /// Appends raw bytes.
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Appends a length or count.
    pub fn put_len(&mut self, len: usize) {
        self.put_bytes(&(len as u64).to_le_bytes());
    }

    /// Attaches a duplicate of `fd`; returns its index for the decoder.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Io`] if `dup` fails.
    pub fn put_fd(&mut self, fd: impl AsFd) -> Result<usize, HandoffError> {
        let dup = fd.as_fd().try_clone_to_owned().map_err(HandoffError::Io)?;
        self.fds.push(dup);
        Ok(self.fds.len() - 1)
    }

    /// The bytes written and the descriptors attached.
    pub fn into_parts(self) -> (Vec<u8>, Vec<OwnedFd>) {
        (self.bytes, self.fds)
    }
}

/// The bytes and descriptors of a start request, being read.
#[derive(Debug)]
pub struct Decoder<'a> {
    bytes: &'a [u8],
    fds: Vec<Option<OwnedFd>>,
}

impl<'a> Decoder<'a> {
    /// A decoder over `bytes` with the descriptors that came with them.
    pub fn new(bytes: &'a [u8], fds: Vec<OwnedFd>) -> Decoder<'a> {
        Decoder {
            bytes,
            fds: fds.into_iter().map(Some).collect(),
        }
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Malformed`] if fewer are left.
    pub fn take_bytes(&mut self, n: usize) -> Result<&'a [u8], HandoffError> {
        if n > self.bytes.len() {
            return Err(HandoffError::Malformed(format!(
                "{n} bytes wanted, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// The next length or count, checked to be at most what items of at least `unit`
    /// bytes each (`unit` ≥ 1) in the bytes left could hold, so a forged length cannot
    /// make the reader allocate or loop.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Malformed`] for a length the input cannot hold.
    pub fn take_len(&mut self, unit: usize) -> Result<usize, HandoffError> {
        let raw = u64::from_le_bytes(array(self.take_bytes(8)?));
        let left = self.bytes.len() as u64;
        if raw.saturating_mul(unit.max(1) as u64) > left {
            return Err(HandoffError::Malformed(format!(
                "a length of {raw} with {left} bytes left"
            )));
        }
        Ok(raw as usize)
    }

    /// Descriptor `index`, once (a second take of the same index is an error).
    ///
    /// # Errors
    ///
    /// [`HandoffError::Malformed`] for an index that did not come or was taken.
    pub fn take_fd(&mut self, index: usize) -> Result<OwnedFd, HandoffError> {
        let count = self.fds.len();
        self.fds
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| {
                HandoffError::Malformed(format!(
                    "descriptor {index} missing or taken twice ({count} came)"
                ))
            })
    }

    /// Checks that every byte was read.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Malformed`] for bytes left over (the types do not agree).
    pub fn finish(&self) -> Result<(), HandoffError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(HandoffError::Malformed(format!(
                "{} bytes left over: the child's argument type does not match the parent's",
                self.bytes.len()
            )))
        }
    }
}

/// The first `N` bytes of `b` (which holds exactly `N`).
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    a
}

macro_rules! portable_number {
    ($($t:ty),*) => {$(
        impl Portable for $t {
            fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
                enc.put_bytes(&self.to_le_bytes());
                Ok(())
            }
            fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
                Ok(<$t>::from_le_bytes(array(dec.take_bytes(size_of::<$t>())?)))
            }
        }
    )*};
}
portable_number!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);

impl Portable for bool {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        enc.put_bytes(&[u8::from(*self)]);
        Ok(())
    }
    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
        match dec.take_bytes(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(HandoffError::Malformed(format!("bool byte {b}"))),
        }
    }
}

impl Portable for char {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        u32::from(*self).encode(enc)
    }
    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
        let v = u32::decode(dec)?;
        char::from_u32(v).ok_or_else(|| HandoffError::Malformed(format!("char {v:#x}")))
    }
}

impl Portable for () {
    fn encode(&self, _: &mut Encoder) -> Result<(), HandoffError> {
        Ok(())
    }
    fn decode(_: &mut Decoder) -> Result<Self, HandoffError> {
        Ok(())
    }
}

impl Portable for String {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        enc.put_len(self.len());
        enc.put_bytes(self.as_bytes());
        Ok(())
    }
    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
        let n = dec.take_len(1)?;
        let bytes = dec.take_bytes(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| HandoffError::Malformed(format!("string: {e}")))
    }
}

/// Most elements of a zero-sized type in one handed-over `Vec`.
const MAX_ZERO_SIZED: u64 = 1 << 24;

impl<T: Portable> Portable for Vec<T> {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        enc.put_len(self.len());
        self.iter().try_for_each(|v| v.encode(enc))
    }
    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
        // Every element of a sized type takes at least one byte, so the bytes left
        // bound a forged count; zero-sized elements take none and are capped.
        let n = if size_of::<T>() == 0 {
            let n = u64::decode(dec)?;
            if n > MAX_ZERO_SIZED {
                return Err(HandoffError::Malformed(format!(
                    "{n} zero-sized elements (at most {MAX_ZERO_SIZED})"
                )));
            }
            n as usize
        } else {
            dec.take_len(1)?
        };
        (0..n).map(|_| T::decode(dec)).collect()
    }
}

impl<T: Portable, const N: usize> Portable for [T; N] {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        self.iter().try_for_each(|v| v.encode(enc))
    }
    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
        let items: Vec<T> = (0..N).map(|_| T::decode(dec)).collect::<Result<_, _>>()?;
        items
            .try_into()
            .map_err(|_| HandoffError::Malformed(format!("an array of {N}")))
    }
}

impl<T: Portable> Portable for Option<T> {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        match self {
            None => false.encode(enc),
            Some(v) => {
                true.encode(enc)?;
                v.encode(enc)
            }
        }
    }
    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
        Ok(if bool::decode(dec)? {
            Some(T::decode(dec)?)
        } else {
            None
        })
    }
}

macro_rules! portable_tuple {
    ($($n:ident),+) => {
        impl<$($n: Portable),+> Portable for ($($n,)+) {
            #[allow(non_snake_case, reason = "the type parameters name the fields")]
            fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
                let ($($n,)+) = self;
                $($n.encode(enc)?;)+
                Ok(())
            }
            fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
                Ok(($($n::decode(dec)?,)+))
            }
        }
    };
}
portable_tuple!(A);
portable_tuple!(A, B);
portable_tuple!(A, B, C);
portable_tuple!(A, B, C, D);
portable_tuple!(A, B, C, D, E);
portable_tuple!(A, B, C, D, E, F);
portable_tuple!(A, B, C, D, E, F, G);
portable_tuple!(A, B, C, D, E, F, G, H);

/// Tags of an object handle: a named or an anonymous segment.
const HANDLE_ANONYMOUS: u8 = 0;
const HANDLE_NAMED: u8 = 1;

/// Every shmproc object travels as its segment's descriptor, its name (if named) and
/// its role (which pipe end); the child checks the header, kind and layout as an
/// open does.
impl<O: Object> Portable for O {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        self.check_portable().map_err(HandoffError::Malformed)?;
        let segment = self.segment();
        let index = enc.put_fd(segment.fd())?;
        match segment.name() {
            None => enc.put_bytes(&[HANDLE_ANONYMOUS]),
            Some(name) => {
                enc.put_bytes(&[HANDLE_NAMED]);
                name.to_string().encode(enc)?;
            }
        }
        (index as u64).encode(enc)?;
        enc.put_bytes(&[self.role()]);
        Ok(())
    }

    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
        let name = match dec.take_bytes(1)?[0] {
            HANDLE_ANONYMOUS => None,
            HANDLE_NAMED => Some(String::decode(dec)?),
            tag => return Err(HandoffError::Malformed(format!("object handle tag {tag}"))),
        };
        let index = usize::try_from(u64::decode(dec)?)
            .map_err(|_| HandoffError::Malformed("descriptor index out of range".into()))?;
        let role = dec.take_bytes(1)?[0];
        let fd = dec.take_fd(index)?;
        let segment = Segment::from_fd(fd, name.as_deref()).map_err(HandoffError::Open)?;
        attach_opened_as(segment, Some(role)).map_err(HandoffError::Open)
    }
}

/// A serde value handed to a child, encoded with postcard (feature `serde`).
///
/// # Examples
///
/// ```
/// use shmproc::start::{Decoder, Encoder, Portable, Serde};
/// let mut enc = Encoder::default();
/// Serde(vec![("a".to_string(), 1.5f64)]).encode(&mut enc).unwrap();
/// let (bytes, fds) = enc.into_parts();
/// let Serde(back) = Serde::<Vec<(String, f64)>>::decode(&mut Decoder::new(&bytes, fds)).unwrap();
/// assert_eq!(back, vec![("a".to_string(), 1.5)]);
/// ```
#[cfg(feature = "serde")]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Serde<T>(pub T);

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Portable for Serde<T> {
    fn encode(&self, enc: &mut Encoder) -> Result<(), HandoffError> {
        let bytes =
            postcard::to_allocvec(&self.0).map_err(|e| HandoffError::Serde(e.to_string()))?;
        enc.put_len(bytes.len());
        enc.put_bytes(&bytes);
        Ok(())
    }

    fn decode(dec: &mut Decoder) -> Result<Self, HandoffError> {
        let n = dec.take_len(1)?;
        let bytes = dec.take_bytes(n)?;
        postcard::from_bytes(bytes)
            .map(Serde)
            .map_err(|e| HandoffError::Serde(e.to_string()))
    }
}
