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
