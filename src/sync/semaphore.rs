//! [`Semaphore`] and [`BoundedSemaphore`]: Python's counting semaphores, in shared
//! memory.
//!
//! The count is one `AtomicU32` on its own cache line; acquire is a CAS from `v > 0`
//! to `v - 1` (Acquire, paired with the Release of the `release` that raised it), and
//! waiters sleep on an eventcount on the next line. A `BoundedSemaphore` keeps its
//! bound (the initial value) in the checksummed segment header, where a peer cannot
//! change it.

use super::AcquireError;
use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::layout::padded::CachePadded;
use crate::object::{self, Mismatch, Object, Payload, Shared, SharedState};
use crate::os::clock::Deadline;
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::shim::{AtomicU32, Ordering};
use crate::wait::{EventCount, TimedOut};
use std::convert::Infallible;
use std::fmt;
use std::mem::offset_of;
use std::sync::Arc;
use std::time::Duration;

/// The shared state of a semaphore.
#[repr(C)]
struct SemaphoreState {
    /// The count: units available. Any value is valid (a scribbled one is a wrong
    /// count, nothing worse).
    value: CachePadded<AtomicU32>,
    /// Acquirers waiting for a unit sleep here; notified by `release`.
    wake: CachePadded<EventCount>,
}

// SAFETY: repr(C), an atomic count and an eventcount (atomics) on padded lines: any
// bytes are a valid state (a scribbled count is a wrong count), no pointers,
// alignment 128.
unsafe impl SharedState for SemaphoreState {}

const STATE_SIZE: usize = size_of::<SemaphoreState>();
const VALUE_OFFSET: usize = offset_of!(SemaphoreState, value);
const WAKE_OFFSET: usize = offset_of!(SemaphoreState, wake);
const _: () = {
    assert!(VALUE_OFFSET == 0);
    assert!(WAKE_OFFSET == 128);
    assert!(STATE_SIZE == 256);
};

/// The layout of a semaphore segment: a `BoundedSemaphore` keeps its maximum in
/// `capacity`, a `Semaphore` has none.
fn layout(kind: ObjectKind, max: u32) -> ObjectLayout {
    ObjectLayout {
        kind,
        elem: ElemType::NONE,
        slot_size: 0,
        capacity: if kind == ObjectKind::BoundedSemaphore {
            u64::from(max)
        } else {
            0
        },
        payload_size: STATE_SIZE as u64,
    }
}

/// A [`release`](Semaphore::release) would raise the count above its maximum: the
/// initial value of a [`BoundedSemaphore`] (Python's "Semaphore released too many
/// times"), or `u32::MAX` for a [`Semaphore`]. The count is left unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemaphoreReleaseError {
    /// The count when the release was refused.
    pub value: u32,
    /// How many units the release tried to add.
    pub n: u32,
    /// The largest count allowed.
    pub max: u32,
}

impl fmt::Display for SemaphoreReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "semaphore released too many times: releasing {} at value {} would exceed {}",
            self.n, self.value, self.max
        )
    }
}

impl std::error::Error for SemaphoreReleaseError {}

/// A counting semaphore in shared memory, like Python's `multiprocessing.Semaphore`:
/// [`acquire`](Semaphore::acquire) takes a unit, waiting while there is none;
/// [`release`](Semaphore::release) gives units back, from any process.
///
/// A semaphore has no owner: units taken by a process that dies are not returned.
///
/// # Examples
///
/// ```
/// use shmproc::sync::Semaphore;
/// use shmproc::Process;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sem = Semaphore::new(0)?;
/// let mut child = Process::spawn(|| {
///     let _ = sem.release_n(2);
/// })?;
/// sem.acquire(); // waits for the child's release
/// sem.acquire();
/// assert_eq!(sem.value(), 0);
/// assert!(sem.try_acquire().is_err());
/// child.join()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    core: Core,
}

/// A semaphore that refuses to be released above its initial value, like Python's
/// `multiprocessing.BoundedSemaphore` — which catches a release without a matching
/// acquire.
///
/// # Examples
///
/// ```
/// use shmproc::sync::BoundedSemaphore;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sem = BoundedSemaphore::new(2)?;
/// sem.acquire();
/// sem.release()?;
/// assert!(sem.release().is_err()); // would exceed the initial value
/// assert!(sem.release_n(0).is_ok());
/// assert_eq!(sem.value(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    core: Core,
}

/// What both semaphores share: the state and the largest count.
#[derive(Clone)]
struct Core {
    /// The count and the waiters' eventcount, in a mapping the handle keeps.
    state: Shared<SemaphoreState>,
    /// `u32::MAX`, or a bounded semaphore's initial value (from the validated
    /// header).
    max: u32,
}

impl Core {
    /// The core over a segment of `kind`: a `BoundedSemaphore`'s maximum comes from
    /// the validated header's capacity.
    fn attach(segment: Arc<Segment>, kind: ObjectKind) -> Result<Core, Mismatch> {
        let found = segment.info().layout;
        let max = if kind == ObjectKind::BoundedSemaphore {
            u32::try_from(found.capacity).ok()
        } else {
            Some(u32::MAX)
        };
        object::check_layout(&found, max.map(|m| layout(kind, m)))?;
        Ok(Core {
            state: Shared::at(segment, 0)?,
            max: max.unwrap_or(u32::MAX),
        })
    }

    /// Writes the initial count into a new semaphore's payload.
    fn init(value: u32, payload: &mut Payload<'_>) {
        let written = payload.write(VALUE_OFFSET, &[value]);
        debug_assert!(written, "the layout holds the count");
    }

    #[inline]
    fn count(&self) -> &AtomicU32 {
        &self.state.state().value
    }

    #[inline]
    fn wake(&self) -> &EventCount {
        &self.state.state().wake
    }

    /// Takes one unit if there is one.
    #[inline]
    fn take(&self) -> Option<()> {
        let count = self.count();
        let mut v = count.load(Ordering::Relaxed);
        while v > 0 {
            // Acquire: pairs with the Release in `release`, so what the releaser did
            // before releasing is visible to us.
            match count.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(()),
                Err(actual) => v = actual,
            }
        }
        None
    }

    fn acquire_within(&self, timeout: Option<Duration>) -> Result<(), TimedOut> {
        if self.take().is_some() {
            return Ok(());
        }
        self.wake()
            .wait_until(timeout.map(Deadline::after), || self.take())
    }

    fn release(&self, n: u32) -> Result<(), SemaphoreReleaseError> {
        if n == 0 {
            return Ok(());
        }
        let count = self.count();
        let mut v = count.load(Ordering::Relaxed);
        loop {
            let new = match v.checked_add(n) {
                Some(new) if new <= self.max => new,
                _ => {
                    return Err(SemaphoreReleaseError {
                        value: v,
                        n,
                        max: self.max,
                    });
                }
            };
            // Release: pairs with the Acquire CAS in `take`.
            match count.compare_exchange_weak(v, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => v = actual,
            }
        }
        // Each sleeper woken can take one unit; one that finds none (taken by a
        // spinner) sleeps again, and the taker's release wakes the next.
        self.wake().notify(n);
        Ok(())
    }
}

macro_rules! semaphore_api {
    ($ty:ident, $release_error:literal) => {
        impl $ty {
            /// The segment's name, `None` if anonymous.
            pub fn name(&self) -> Option<&str> {
                self.core.state.name()
            }

            /// Takes a unit, waiting as long as it takes for one (Python's
            /// `acquire()`).
            #[inline]
            pub fn acquire(&self) {
                let _ = self.core.acquire_within(None);
            }

            /// Takes a unit, waiting at most `timeout` (Python's
            /// `acquire(timeout=...)`).
            ///
            /// # Errors
            ///
            /// [`AcquireError::Timeout`] once `timeout` has passed (never earlier).
            #[inline]
            pub fn acquire_timeout(
                &self,
                timeout: Duration,
            ) -> Result<(), AcquireError<Infallible>> {
                self.core
                    .acquire_within(Some(timeout))
                    .map_err(|TimedOut| AcquireError::Timeout)
            }

            /// Takes a unit if one is available, without waiting or any system call
            /// (Python's `acquire(block=False)`).
            ///
            /// # Errors
            ///
            /// [`AcquireError::WouldBlock`] if the count is 0.
            #[inline]
            pub fn try_acquire(&self) -> Result<(), AcquireError<Infallible>> {
                self.core.take().ok_or(AcquireError::WouldBlock)
            }

            /// Gives back one unit, waking one waiter (Python's `release()`). Any
            /// process may release.
            ///
            /// # Errors
            ///
            #[doc = $release_error]
            #[inline]
            pub fn release(&self) -> Result<(), SemaphoreReleaseError> {
                self.core.release(1)
            }

            /// Gives back `n` units, waking up to `n` waiters (Python's
            /// `release(n)`); `n == 0` does nothing. Any process may release.
            ///
            /// # Errors
            ///
            #[doc = $release_error]
            pub fn release_n(&self, n: u32) -> Result<(), SemaphoreReleaseError> {
                self.core.release(n)
            }

            /// The count (Python's `get_value()`). A snapshot.
            pub fn value(&self) -> u32 {
                self.core.count().load(Ordering::Relaxed)
            }

            /// Processes asleep in `acquire`. A snapshot.
            pub fn waiters(&self) -> u32 {
                self.core.wake().waiters()
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("name", &self.name())
                    .field("value", &self.value())
                    .finish()
            }
        }
    };
}

semaphore_api!(
    Semaphore,
    "[`SemaphoreReleaseError`] if the count would exceed `u32::MAX`; it is left unchanged."
);
semaphore_api!(
    BoundedSemaphore,
    "[`SemaphoreReleaseError`] if the count would exceed the initial value; it is left unchanged."
);

impl Semaphore {
    /// Creates a semaphore with count `value` in an anonymous segment, shared with
    /// children started with [`Process`](crate::Process) afterwards (Python's
    /// `Semaphore(value)`; Python's default is 1).
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    pub fn new(value: u32) -> Result<Semaphore, CreateError> {
        Semaphore::create_anonymous(value)
    }

    /// Creates a semaphore named `name` with count `value`.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid or taken name, permissions.
    pub fn create(name: &str, value: u32) -> Result<Semaphore, CreateError> {
        Semaphore::create_with(name, value, CreateOptions::new())
    }

    /// Opens the semaphore named `name`.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not a `Semaphore`, an incompatible layout, a
    /// corrupt header.
    pub fn open(name: &str) -> Result<Semaphore, OpenError> {
        Semaphore::open_with(name, OpenOptions::new())
    }
}

impl Object for Semaphore {
    const KIND: ObjectKind = ObjectKind::Semaphore;
    /// The initial count.
    type Args<'a> = u32;

    fn layout(_: &u32) -> Result<ObjectLayout, CreateError> {
        Ok(layout(ObjectKind::Semaphore, u32::MAX))
    }

    fn init(value: u32, payload: &mut Payload<'_>) {
        Core::init(value, payload);
    }

    fn attach(segment: Arc<Segment>) -> Result<Semaphore, Mismatch> {
        Core::attach(segment, ObjectKind::Semaphore).map(|core| Semaphore { core })
    }

    fn segment(&self) -> &Segment {
        self.core.state.segment()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

impl Object for BoundedSemaphore {
    const KIND: ObjectKind = ObjectKind::BoundedSemaphore;
    /// The initial count, which is also the maximum.
    type Args<'a> = u32;

    fn layout(value: &u32) -> Result<ObjectLayout, CreateError> {
        Ok(layout(ObjectKind::BoundedSemaphore, *value))
    }

    fn init(value: u32, payload: &mut Payload<'_>) {
        Core::init(value, payload);
    }

    fn attach(segment: Arc<Segment>) -> Result<BoundedSemaphore, Mismatch> {
        Core::attach(segment, ObjectKind::BoundedSemaphore).map(|core| BoundedSemaphore { core })
    }

    fn segment(&self) -> &Segment {
        self.core.state.segment()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

impl BoundedSemaphore {
    /// Creates a bounded semaphore with count and maximum `value` in an anonymous
    /// segment (Python's `BoundedSemaphore(value)`).
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    pub fn new(value: u32) -> Result<BoundedSemaphore, CreateError> {
        BoundedSemaphore::create_anonymous(value)
    }

    /// Creates a bounded semaphore named `name` with count and maximum `value`.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid or taken name, permissions.
    pub fn create(name: &str, value: u32) -> Result<BoundedSemaphore, CreateError> {
        BoundedSemaphore::create_with(name, value, CreateOptions::new())
    }

    /// Opens the bounded semaphore named `name`; its maximum comes from the segment.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not a `BoundedSemaphore`, an incompatible layout, a
    /// corrupt header.
    pub fn open(name: &str) -> Result<BoundedSemaphore, OpenError> {
        BoundedSemaphore::open_with(name, OpenOptions::new())
    }

    /// The largest count allowed: the initial value.
    pub fn max_value(&self) -> u32 {
        self.core.max
    }
}

/// `shmproc inspect` rows for a `Semaphore` or `BoundedSemaphore` segment.
pub(crate) fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    let (Some(value), Some(waiters)) = (
        object::peek::<u32>(segment, VALUE_OFFSET),
        object::peek::<u32>(segment, WAKE_OFFSET + 4),
    ) else {
        return object::unreadable(segment);
    };
    let mut rows = vec![("value", value.to_string())];
    let layout = segment.info().layout;
    if layout.kind == ObjectKind::BoundedSemaphore {
        rows.push(("max value", layout.capacity.to_string()));
    }
    rows.push(("waiters", waiters.to_string()));
    rows
}
