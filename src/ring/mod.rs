//! The ring layer: lock-free algorithms over memory the caller hands in (a pointer and
//! a length), knowing nothing of files or names — public so other IPC crates can place
//! shmproc's rings in memory they own.
//!
//! - [`mpmc`]: bounded multi-producer multi-consumer ring of fixed-size slots, for
//!   messages of one slot or several consecutive slots (the `Queue`);
//! - [`spsc`]: single-producer single-consumer ring of length-prefixed byte records,
//!   streaming messages of any size in fragments (the `Pipe`).
//!
//! Both reach their atomics, and the ids and liveness of threads, through one switch
//! module, so the same code runs under the shuttle model checker with
//! `--cfg shmproc_model`: interleavings at every atomic step, and threads killed at
//! any of them (`model_tests.rs`; README, "Testing").
//!
//! # Examples
//!
//! An MPMC ring of 64 slots of 8 bytes in heap memory, between two threads (between
//! processes, the memory is a [`Segment`](crate::segment::Segment)'s payload instead;
//! the calls are the same):
//!
//! ```
//! use shmproc::ring::{HeapMemory, mpmc::Ring};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let len = Ring::bytes_for(64, 8).ok_or("invalid ring parameters")?;
//! let mem = HeapMemory::new(len)?;
//! // SAFETY: `mem` is `len` zero-filled bytes that outlive the ring (both live to the
//! // end of main), used only through this `Ring` handle.
//! let ring = unsafe { Ring::init(mem.ptr(), len, 64, 8) }?;
//! std::thread::scope(|s| {
//!     s.spawn(|| {
//!         for i in 0u64..1000 {
//!             while ring.try_push(&i.to_ne_bytes()).is_err() {
//!                 std::hint::spin_loop(); // full: the consumer is behind
//!             }
//!         }
//!     });
//!     let mut buf = [0u8; 8];
//!     for i in 0u64..1000 {
//!         while ring.try_pop_into(&mut buf).is_err() {
//!             std::hint::spin_loop(); // empty: the producer is behind
//!         }
//!         assert_eq!(u64::from_ne_bytes(buf), i);
//!     }
//! });
//! # Ok(()) }
//! ```
//!
//! The SPSC byte ring, one writer and one reader, with records read in place:
//!
//! ```
//! use shmproc::ring::{HeapMemory, spsc::{FIRST, Spsc}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let len = Spsc::bytes_for(4096).ok_or("invalid ring capacity")?;
//! let mem = HeapMemory::new(len)?;
//! // SAFETY: zero-filled, outlives the ring, used only through `Spsc` handles of
//! // capacity 4096, with one writer and one reader.
//! let ring = unsafe { Spsc::attach(mem.ptr(), len, 4096) }?;
//! let (writer, reader) = (ring.writer(), ring.reader());
//! assert!(writer.try_write(b"hello", FIRST));
//! let record = reader.peek()?.ok_or("nothing published")?;
//! let mut got = Vec::new();
//! reader.append_to(&record, &mut got);
//! assert_eq!(got, b"hello");
//! reader.consume(&record);
//! assert!(reader.peek()?.is_none());
//! # Ok(()) }
//! ```

mod error;
mod memory;
pub mod mpmc;
pub mod spsc;

pub(crate) use mpmc::forget_in_child;

use std::marker::PhantomData;
use std::mem::MaybeUninit;

pub use error::{Corrupt, CorruptPart, LayoutError};
pub use memory::{AllocError, HeapMemory};

#[cfg(all(test, shmproc_model))]
mod model_tests;

/// `copy_nonoverlapping` with the sizes of small items (a u64, two) done inline: a
/// call to memcpy for eight bytes costs more than the rest of a put.
///
/// # Safety
///
/// As for [`std::ptr::copy_nonoverlapping`].
#[inline(always)]
pub(crate) unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract; each branch copies exactly `len` bytes.
    unsafe {
        match len {
            8 => dst
                .cast::<u64>()
                .write_unaligned(src.cast::<u64>().read_unaligned()),
            16 => dst
                .cast::<u128>()
                .write_unaligned(src.cast::<u128>().read_unaligned()),
            _ => std::ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

/// Memory a ring copies a message into: initialized bytes, or memory that is not
/// initialized yet (a `get` that builds its item in place instead of zeroing it
/// first). Only initialized bytes are ever written through it, so both are sound.
#[derive(Debug)]
pub struct Dest<'a> {
    ptr: *mut u8,
    len: usize,
    _out: PhantomData<&'a mut [MaybeUninit<u8>]>,
}

impl<'a> Dest<'a> {
    /// Copies go into `bytes`.
    #[inline(always)]
    pub fn bytes(bytes: &'a mut [u8]) -> Dest<'a> {
        Dest {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            _out: PhantomData,
        }
    }

    /// Copies go into `bytes`, which need not be initialized.
    #[inline(always)]
    pub fn uninit(bytes: &'a mut [MaybeUninit<u8>]) -> Dest<'a> {
        Dest {
            ptr: bytes.as_mut_ptr().cast(),
            len: bytes.len(),
            _out: PhantomData,
        }
    }

    /// Copies go into the bytes of `value`, which need not be initialized.
    #[inline(always)]
    pub fn value<T>(value: &'a mut MaybeUninit<T>) -> Dest<'a> {
        Dest {
            ptr: value.as_mut_ptr().cast(),
            len: size_of::<T>(),
            _out: PhantomData,
        }
    }

    /// Its length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A shorter borrow of the same memory (to copy into it more than once).
    #[inline(always)]
    pub fn reborrow(&mut self) -> Dest<'_> {
        Dest {
            ptr: self.ptr,
            len: self.len,
            _out: PhantomData,
        }
    }

    /// Copies the first `len.min(self.len())` bytes at `src` into the start.
    ///
    /// # Safety
    ///
    /// `src` is valid for reads of that many bytes, initialized, and does not overlap
    /// this memory.
    #[inline(always)]
    pub(crate) unsafe fn copy_from(&mut self, src: *const u8, len: usize) {
        // SAFETY: the destination holds self.len writable bytes (borrowed for 'a,
        // from one of the constructors); the source is the caller's contract; the
        // bytes written are initialized, so an initialized destination stays so.
        unsafe { copy_bytes(src, self.ptr, len.min(self.len)) }
    }
}
