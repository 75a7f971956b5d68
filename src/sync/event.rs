//! [`Event`]: Python's `multiprocessing.Event`, a flag processes wait for, in shared
//! memory.
//!
//! The state is one `AtomicU32`: bit 0 is the flag, bits 1..32 count the times it was
//! set (wrapping). A waiter remembers the count it started with, so a `set`
//! immediately followed by `clear` still wakes everyone who was waiting — Python's
//! semantics, where `wait` returns `True` once notified even if the flag was cleared
//! since.

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::layout::padded::CachePadded;
use crate::object::{self, Mismatch, Object, Shared, SharedState};
use crate::os::clock::Deadline;
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::shim::{AtomicU32, Ordering};
use crate::wait::EventCount;
use std::fmt;
use std::mem::offset_of;
use std::sync::Arc;
use std::time::Duration;

/// The shared state of an event. All-zero bytes are a clear event.
#[repr(C)]
struct EventState {
    /// Bit 0: the flag. Bits 1..32: how many times it went from clear to set,
    /// wrapping. Any value is valid.
    word: CachePadded<AtomicU32>,
    /// Waiters sleep here; notified by `set`.
    wake: CachePadded<EventCount>,
}

// SAFETY: repr(C), an atomic word and an eventcount (atomics) on padded lines: any bytes are a valid state, zero is clear, no pointers, alignment 128.
unsafe impl SharedState for EventState {}

const STATE_SIZE: usize = size_of::<EventState>();
const WORD_OFFSET: usize = offset_of!(EventState, word);
const WAKE_OFFSET: usize = offset_of!(EventState, wake);
const _: () = {
    assert!(WORD_OFFSET == 0);
    assert!(WAKE_OFFSET == 128);
    assert!(STATE_SIZE == 256);
};

const LAYOUT: ObjectLayout = ObjectLayout {
    kind: ObjectKind::Event,
    elem: ElemType::NONE,
    slot_size: 0,
    capacity: 0,
    payload_size: STATE_SIZE as u64,
};

const FLAG: u32 = 1;

/// A flag in shared memory that processes can wait for, like Python's
/// `multiprocessing.Event`: [`set`](Event::set) wakes every waiter,
/// [`clear`](Event::clear) resets it, [`wait_timeout`](Event::wait_timeout) waits for
/// it.
///
/// # Examples
///
/// ```
/// use shmproc::sync::Event;
/// use shmproc::Process;
/// use std::time::Duration;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let event = Event::new()?;
/// let mut child = Process::spawn(|| {
///     std::thread::sleep(Duration::from_millis(10));
///     event.set();
/// })?;
/// assert!(event.wait_timeout(Duration::from_secs(10)));
/// assert!(event.is_set());
/// event.clear();
/// assert!(!event.wait_timeout(Duration::from_millis(1)));
/// child.join()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Event {
    /// The flag word and the waiters' eventcount, in a mapping the handle keeps.
    state: Shared<EventState>,
}

impl Object for Event {
    const KIND: ObjectKind = ObjectKind::Event;
    type Args<'a> = ();

    fn layout(_: &()) -> Result<ObjectLayout, CreateError> {
        Ok(LAYOUT)
    }

    fn attach(segment: Arc<Segment>) -> Result<Event, Mismatch> {
        object::check_layout(&segment.info().layout, Some(LAYOUT))?;
        Ok(Event {
            state: Shared::at(segment, 0)?,
        })
    }

    fn segment(&self) -> &Segment {
        self.state.segment()
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        inspect(segment)
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name())
            .field("is_set", &self.is_set())
            .finish()
    }
}

impl Event {
    /// Creates a clear event in an anonymous segment, shared with children started
    /// with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// [`CreateError`] if the segment cannot be created.
    pub fn new() -> Result<Event, CreateError> {
        Event::create_anonymous(())
    }

    /// Creates a clear event named `name`.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: an invalid or taken name, permissions.
    pub fn create(name: &str) -> Result<Event, CreateError> {
        Event::create_with(name, (), CreateOptions::new())
    }

    /// Opens the event named `name`.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not an `Event`, an incompatible layout, a corrupt
    /// header.
    pub fn open(name: &str) -> Result<Event, OpenError> {
        Event::open_with(name, OpenOptions::new())
    }

    #[inline]
    fn word(&self) -> &AtomicU32 {
        &self.state.state().word
    }

    #[inline]
    fn wake(&self) -> &EventCount {
        &self.state.state().wake
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.state.name()
    }

    /// Whether the flag is set (Python's `is_set()`). A snapshot.
    pub fn is_set(&self) -> bool {
        self.word().load(Ordering::Acquire) & FLAG != 0
    }

    /// Sets the flag and wakes every waiter (Python's `set()`). Waits that start while
    /// it is set return at once.
    pub fn set(&self) {
        // Release: what the caller wrote before `set` is visible to a waiter that
        // sees the flag (its Acquire load in `seen`).
        let _ = self
            .word()
            .fetch_update(Ordering::Release, Ordering::Relaxed, |v| {
                (v & FLAG == 0).then(|| (v & !FLAG).wrapping_add(2) | FLAG)
            });
        self.wake().notify_all();
    }

    /// Clears the flag (Python's `clear()`): later waits block until the next
    /// [`set`](Event::set).
    pub fn clear(&self) {
        self.word().fetch_and(!FLAG, Ordering::Relaxed);
    }

    /// Whether the event was set, or has been set since `start` was read.
    #[inline]
    fn seen(&self, start: u32) -> Option<()> {
        let v = self.word().load(Ordering::Acquire);
        (v & FLAG != 0 || (v >> 1) != (start >> 1)).then_some(())
    }

    /// Waits until the flag is set (Python's `wait()`), and returns whether it was
    /// set — always `true`, as Python's `wait()` without a timeout returns `True`
    /// (also when it was set and cleared again meanwhile).
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::sync::Event;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let event = Event::new()?;
    /// event.set();
    /// assert!(event.wait());
    /// # Ok(()) }
    /// ```
    pub fn wait(&self) -> bool {
        let start = self.word().load(Ordering::Acquire);
        self.wake().wait_until(None, || self.seen(start)).is_ok()
    }

    /// Waits until the flag is set, at most `timeout` (Python's `wait(timeout)`).
    /// Returns `true` if it was set (or set and cleared again meanwhile), `false` if
    /// the timeout passed first — never before it has. A zero timeout checks without
    /// waiting.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let start = self.word().load(Ordering::Acquire);
        if self.seen(start).is_some() {
            return true;
        }
        self.wake()
            .wait_until(Some(Deadline::after(timeout)), || self.seen(start))
            .is_ok()
    }

    /// Processes asleep in `wait`. A snapshot.
    pub fn waiters(&self) -> u32 {
        self.wake().waiters()
    }
}

/// `shmproc inspect` rows for an `Event` segment.
pub(crate) fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
    let (Some(word), Some(waiters)) = (
        object::peek::<u32>(segment, WORD_OFFSET),
        object::peek::<u32>(segment, WAKE_OFFSET + 4),
    ) else {
        return object::unreadable(segment);
    };
    vec![
        (
            "set",
            if word & FLAG != 0 { "yes" } else { "no" }.to_string(),
        ),
        ("times set", (word >> 1).to_string()),
        ("waiters", waiters.to_string()),
    ]
}
