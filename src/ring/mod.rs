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

pub mod mpmc;
pub mod spsc;

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
