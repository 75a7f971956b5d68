//! How keys and values become the bytes a [`Dict`](super::Dict) stores: one pair of
//! traits, [`Encode`] and [`Decode`], for the three payload tiers.
//!
//! | tier | types | bytes stored |
//! |---|---|---|
//! | plain old data | `u8` … `u128`, `i8` … `i128`, `usize`, `isize`, `f32`, `f64`, `char`, `bool`, `[u8; N]`, and any [`bytemuck::Pod`] type through [`Plain`] | the value's own bytes, no serialization |
//! | byte strings | `Vec<u8>` (lookups by `[u8]`), `String` (lookups by `str`) | the bytes as they are |
//! | serde values (feature `serde`) | any `Serialize + DeserializeOwned` type through `Serde` | postcard |
//!
//! A type and the types it can be looked up by (`K: Borrow<Q>`) must encode equal
//! values to equal bytes — as the impls here do (`String` and `str` both store the
//! UTF-8 bytes) — because the map compares keys by their bytes.

use std::fmt;

/// A key or value that can be stored in a [`Dict`](super::Dict): it writes its bytes.
pub trait Encode {
    /// Appends this value's bytes to `out`.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the value cannot be encoded (a serde value whose
    /// `Serialize` fails).
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError>;
}

/// A key or value that can be read back from a [`Dict`](super::Dict).
pub trait Decode: Sized {
    /// The value `bytes` encode.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if they do not encode a `Self` (the wrong length, invalid
    /// UTF-8, a serde decode failure): another process wrote bytes of another type,
    /// or scribbled on the map.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Why a key or value could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

/// Why stored bytes do not decode as the expected type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A fixed-size type expected `expected` bytes and found `found`.
    Length {
        /// The type's size.
        expected: usize,
        /// Bytes stored.
        found: usize,
    },
    /// The bytes are not a valid value of the type (invalid UTF-8, a `bool` that is
    /// neither 0 nor 1, a serde decode error).
    Invalid(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Length { expected, found } => write!(
                f,
                "stored value has {found} bytes where its type has {expected}"
            ),
            DecodeError::Invalid(why) => write!(f, "stored bytes are not a valid value: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The bytes of a fixed-size plain-old-data value, checked for length.
fn pod_from<T: bytemuck::Pod>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() != size_of::<T>() {
        return Err(DecodeError::Length {
            expected: size_of::<T>(),
            found: bytes.len(),
        });
    }
    Ok(bytemuck::pod_read_unaligned(bytes))
}

macro_rules! pod_codec {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
                out.extend_from_slice(bytemuck::bytes_of(self));
                Ok(())
            }
        }
        impl Decode for $t {
            #[inline]
            fn decode(bytes: &[u8]) -> Result<$t, DecodeError> {
                pod_from(bytes)
            }
        }
    )*};
}

pod_codec!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);

impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self);
        Ok(())
    }
}

impl<const N: usize> Decode for [u8; N] {
    fn decode(bytes: &[u8]) -> Result<[u8; N], DecodeError> {
        bytes.try_into().map_err(|_| DecodeError::Length {
            expected: N,
            found: bytes.len(),
        })
    }
}

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(u8::from(*self));
        Ok(())
    }
}

impl Decode for bool {
    fn decode(bytes: &[u8]) -> Result<bool, DecodeError> {
        match pod_from::<u8>(bytes)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::Invalid(format!("{b} is not a bool"))),
        }
    }
}

impl Encode for char {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&u32::from(*self).to_ne_bytes());
        Ok(())
    }
}

impl Decode for char {
    fn decode(bytes: &[u8]) -> Result<char, DecodeError> {
        let v = pod_from::<u32>(bytes)?;
        char::from_u32(v).ok_or_else(|| DecodeError::Invalid(format!("{v:#x} is not a char")))
    }
}

impl Encode for [u8] {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self);
        Ok(())
    }
}

impl Encode for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self);
        Ok(())
    }
}

impl Decode for Vec<u8> {
    fn decode(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(bytes.to_vec())
    }
}

impl Encode for str {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }
}

impl Encode for String {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }
}

impl Decode for String {
    fn decode(bytes: &[u8]) -> Result<String, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError::Invalid(e.to_string()))
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        (**self).encode(out)
    }
}

/// Any [`bytemuck::Pod`] type as a key or value, stored as its own bytes (a
/// `#[repr(C)]` struct of numbers, say).
///
/// ```
/// use shmproc::dict::{Dict, Plain};
/// #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Point { x: f64, y: f64 }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let d = Dict::<u32, Plain<Point>>::new()?;
/// d.insert(1, Plain(Point { x: 1.0, y: 2.0 }))?;
/// assert_eq!(d.get(&1)?, Some(Plain(Point { x: 1.0, y: 2.0 })));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Plain<T>(pub T);

impl<T: bytemuck::Pod> Encode for Plain<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(bytemuck::bytes_of(&self.0));
        Ok(())
    }
}

impl<T: bytemuck::Pod> Decode for Plain<T> {
    fn decode(bytes: &[u8]) -> Result<Plain<T>, DecodeError> {
        pod_from(bytes).map(Plain)
    }
}

/// Any serde value as a key or value, encoded with postcard (feature `serde`).
///
/// Keys are compared by their encoding: two keys are the same key exactly when
/// postcard encodes them to the same bytes.
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serde<T>(pub T);

#[cfg(feature = "serde")]
impl<T: serde::Serialize> Encode for Serde<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let bytes = postcard::to_allocvec(&self.0).map_err(|e| EncodeError(e.to_string()))?;
        out.extend_from_slice(&bytes);
        Ok(())
    }
}

#[cfg(feature = "serde")]
impl<T: serde::de::DeserializeOwned> Decode for Serde<T> {
    fn decode(bytes: &[u8]) -> Result<Serde<T>, DecodeError> {
        postcard::from_bytes(bytes)
            .map(Serde)
            .map_err(|e| DecodeError::Invalid(e.to_string()))
    }
}

/// Integer values [`Dict::fetch_add`](super::Dict::fetch_add) can add to (wrapping).
pub trait Counter: Encode + Decode + Copy {
    /// `self + delta`, wrapping on overflow.
    fn wrapping_add(self, delta: Self) -> Self;
    /// Zero: what an absent key counts as.
    const ZERO: Self;
}

macro_rules! counter {
    ($($t:ty),*) => {$(
        impl Counter for $t {
            #[inline]
            fn wrapping_add(self, delta: $t) -> $t {
                <$t>::wrapping_add(self, delta)
            }
            const ZERO: $t = 0;
        }
    )*};
}

counter!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: Encode + Decode + PartialEq + fmt::Debug>(v: T) {
        let mut out = Vec::new();
        v.encode(&mut out).unwrap();
        assert_eq!(T::decode(&out).unwrap(), v);
    }

    #[test]
    fn round_trips_and_rejects() {
        round(7u64);
        round(-3i8);
        round(1.5f64);
        round(true);
        round('é');
        round(*b"abc");
        round(String::from("héllo"));
        round(vec![1u8, 2, 3]);
        round(Plain([1u16, 2]));
        assert_eq!(
            u64::decode(&[1, 2]),
            Err(DecodeError::Length {
                expected: 8,
                found: 2
            })
        );
        assert!(bool::decode(&[2]).is_err());
        assert!(String::decode(&[0xff]).is_err());
        assert!(char::decode(&0xd800u32.to_ne_bytes()).is_err());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        "key".encode(&mut a).unwrap();
        String::from("key").encode(&mut b).unwrap();
        assert_eq!(a, b);
    }
}
