//! [`HeapMemory`]: zero-filled, 128-byte aligned heap memory to place a ring in —
//! for rings shared between threads of one process, for tests, fuzzing and examples.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fmt;
use std::ptr::NonNull;

/// A zero-filled block of heap memory aligned to 128 bytes (the alignment every ring
/// needs), freed on drop. Rings between processes live in a
/// [`Segment`](crate::segment::Segment) instead; this is the same kind of memory for
/// threads of one process, tests and fuzzing.
///
/// # Examples
///
/// ```
/// use shmproc::ring::HeapMemory;
/// let mem = HeapMemory::new(4096).unwrap();
/// assert_eq!(mem.len(), 4096);
/// assert_eq!(mem.ptr().as_ptr() as usize % 128, 0);
/// ```
pub struct HeapMemory {
    /// Start of the block; 128-aligned, valid for `layout.size()` bytes.
    ptr: NonNull<u8>,
    /// Size (at least 1) and alignment (128) it was allocated with.
    layout: Layout,
    /// The length asked for (`layout.size()`, or 0 for an empty request).
    len: usize,
}

// SAFETY: the block is plain memory owned by this value; the handle exposes only its
// address, and whoever accesses the memory through it upholds their own protocol.
unsafe impl Send for HeapMemory {}
// SAFETY: as for Send: shared references give out nothing but the address.
unsafe impl Sync for HeapMemory {}

/// Why a block could not be allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError {
    /// The size asked for.
    pub len: usize,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot allocate {} bytes aligned to 128", self.len)
    }
}

impl std::error::Error for AllocError {}

impl HeapMemory {
    /// Allocates `len` zero-filled bytes aligned to 128 (a zero `len` allocates one
    /// byte, so the pointer is always valid).
    ///
    /// # Errors
    ///
    /// [`AllocError`] if the size is too large for a layout or the allocator fails.
    pub fn new(len: usize) -> Result<HeapMemory, AllocError> {
        let layout = Layout::from_size_align(len.max(1), 128).map_err(|_| AllocError { len })?;
        // SAFETY: the layout's size is non-zero.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or(AllocError { len })?;
        Ok(HeapMemory { ptr, layout, len })
    }

    /// Allocates `len` bytes that start with a copy of `fill` (cut to `len`), the rest
    /// zero.
    ///
    /// # Errors
    ///
    /// As for [`new`](HeapMemory::new).
    pub fn with_contents(len: usize, fill: &[u8]) -> Result<HeapMemory, AllocError> {
        let mem = HeapMemory::new(len)?;
        let n = fill.len().min(len);
        // SAFETY: n <= len bytes of the fresh block, which nobody else can see yet.
        unsafe { std::ptr::copy_nonoverlapping(fill.as_ptr(), mem.ptr.as_ptr(), n) };
        Ok(mem)
    }

    /// The start of the block.
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The length asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length asked for was zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for HeapMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapMemory")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for HeapMemory {
    fn drop(&mut self) {
        // SAFETY: allocated by `new` with exactly this layout, freed only here.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
