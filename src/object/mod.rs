//! The object skeleton: what every shmproc object (a lock, an event, a value, a queue…)
//! is made of and how it is created, opened and inspected, in one place.
//!
//! An object is a handle to one [`Segment`] whose payload holds the object's shared
//! state. A type becomes an object by implementing [`Object`]: its [`KIND`], the
//! arguments that size a new one ([`Args`]), the [`layout`] they give, how a fresh
//! payload is filled ([`init`]), how a handle is made over a segment whose header has
//! been validated ([`attach`], which checks the rest of the layout before it touches
//! the payload) and what `shmproc inspect` shows of it ([`inspect`]). In return every
//! object gets the same constructors and segment controls — anonymous or named,
//! with a file mode, open, open-or-create, persist, name — from the provided methods,
//! and `shmproc inspect` support from one table ([`inspect::object_state`]).
//!
//! Shared state that is a plain struct of atomics implements [`SharedState`] and is
//! reached through `Shared`, a bounds-checked handle that needs no `unsafe` at the
//! object's side.
//!
//! [`KIND`]: Object::KIND
//! [`Args`]: Object::Args
//! [`layout`]: Object::layout
//! [`init`]: Object::init
//! [`attach`]: Object::attach
//! [`inspect`]: Object::inspect

pub mod inspect;
pub(crate) mod owner;
mod shared;

pub use shared::{Mismatch, Payload, SharedState};
pub(crate) use shared::{Shared, check_layout, peek, show_owner, unreadable};

use crate::layout::header::{ObjectKind, ObjectLayout};
use crate::segment::{
    CreateError, CreateOptions, OpenError, OpenOptions, OpenOrCreateError, Segment,
};
use std::sync::Arc;

/// A Python-shaped object living in one shared-memory segment.
///
/// Implementors describe their layout; the provided methods create, open and manage
/// the segment the same way for every object. `attach` must not trust the payload:
/// the header has been validated (magic, version, kind, sizes against `fstat`), but
/// the capacity, element type and the payload's own words are the object's to check.
///
/// # Examples
///
/// Every object can be created with a file mode, opened with a timeout, or opened if
/// it exists and created if not — exactly one of racing processes creates it:
///
/// ```
/// use shmproc::Object;
/// use shmproc::segment::{CreateOptions, OpenOptions};
/// use shmproc::sync::Event;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let name = format!("shmproc-doc-object-{}", std::process::id());
/// let (event, created) = Event::open_or_create(&name, ())?;
/// assert!(created);
/// let (again, created) = Event::open_or_create(&name, ())?;
/// assert!(!created);
/// event.set();
/// assert!(again.is_set());
/// # Ok(()) }
/// ```
pub trait Object: Sized {
    /// The kind recorded in the segment's header.
    const KIND: ObjectKind;

    /// What sizes and fills a new object: `()` for a lock, the count for a
    /// semaphore, the parties for a barrier, the initial value for a `Value`…
    type Args<'a>;

    /// The layout of a new object made from `args`.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] for arguments out of range (zero parties, a
    /// capacity that overflows), naming the argument and its allowed range.
    fn layout(args: &Self::Args<'_>) -> Result<ObjectLayout, CreateError>;

    /// Fills the zero-filled payload of a new object before any other process can
    /// see it. The default leaves it zero (every object whose all-zero state is its
    /// initial state).
    fn init(args: Self::Args<'_>, payload: &mut Payload<'_>) {
        let _ = (args, payload);
    }

    /// Bytes of a new segment of `layout` (header included) to reserve at creation;
    /// the rest of the file stays sparse until the object reserves it as it grows.
    /// The default, `None`, reserves the whole segment (every fixed-size object).
    #[doc(hidden)]
    fn initial_reserve(layout: &ObjectLayout) -> Option<u64> {
        let _ = layout;
        None
    }

    /// A handle over `segment`, whose header is valid and of [`KIND`](Object::KIND):
    /// checks the rest of the layout (element type, capacity, payload size) before
    /// touching the payload.
    ///
    /// # Errors
    ///
    /// [`Mismatch`] saying what differs from what this type needs.
    fn attach(segment: Arc<Segment>) -> Result<Self, Mismatch>;

    /// The handle for the process that just created `segment` (from
    /// [`layout`](Object::layout) and [`init`](Object::init)). The same as
    /// [`attach`](Object::attach) for most objects; a pipe gives its creator the first
    /// end and an opener the second.
    ///
    /// # Errors
    ///
    /// As for [`attach`](Object::attach).
    fn attach_created(segment: Arc<Segment>) -> Result<Self, Mismatch> {
        Self::attach(segment)
    }

    /// Which of the segment's handles this is, for handing it to another process
    /// ([`crate::start`]): 0 for every object whose handles are all alike, a pipe's
    /// end index for a [`Connection`](crate::Connection).
    #[doc(hidden)]
    fn role(&self) -> u8 {
        0
    }

    /// A handle of `role` (from [`role`](Object::role)) over `segment`, whose header
    /// is valid and of [`KIND`](Object::KIND).
    ///
    /// # Errors
    ///
    /// [`Mismatch`] for a role this object does not have, or as for
    /// [`attach`](Object::attach).
    #[doc(hidden)]
    fn attach_role(segment: Arc<Segment>, role: u8) -> Result<Self, Mismatch> {
        if role == 0 {
            Self::attach(segment)
        } else {
            Err(Mismatch::new("handle role", 0, role))
        }
    }

    /// Whether the handle can be handed to another process ([`crate::start`]), which
    /// gets only [`segment`](Object::segment): `Err` with the reason for a handle that
    /// also depends on another segment.
    #[doc(hidden)]
    fn check_portable(&self) -> Result<(), String> {
        Ok(())
    }

    /// The segment the handle keeps mapped.
    fn segment(&self) -> &Segment;

    /// What `shmproc inspect` shows of the object's live state, as (label, value)
    /// rows, read from `segment` (possibly a read-only mapping) without trusting it.
    fn inspect(segment: &Segment) -> Vec<(&'static str, String)>;

    /// Creates the object in an anonymous segment (a memfd), shared with children
    /// started with [`Process`](crate::Process) afterwards.
    ///
    /// # Errors
    ///
    /// As for [`layout`](Object::layout), and [`CreateError`] from
    /// [`Segment::anonymous`].
    fn create_anonymous(args: Self::Args<'_>) -> Result<Self, CreateError> {
        let layout = Self::layout(&args)?;
        let segment =
            Segment::anonymous_with(&layout, Self::initial_reserve(&layout), |ptr, len| {
                // SAFETY: `Segment` hands its init callback the zero-filled, 128-aligned
                // payload of `len` bytes before publishing the segment.
                Self::init(args, &mut unsafe { Payload::new(ptr, len) });
            })?;
        attach_new(segment)
    }

    /// Creates the object named `name` in `/dev/shm` with `options` (file mode),
    /// failing if the name exists. The name is removed when the creating process's
    /// last handle is dropped, unless [`persist`](Object::persist) is called.
    ///
    /// # Errors
    ///
    /// As for [`layout`](Object::layout), and [`CreateError`] from
    /// [`Segment::create`].
    fn create_with(
        name: &str,
        args: Self::Args<'_>,
        options: CreateOptions,
    ) -> Result<Self, CreateError> {
        let layout = Self::layout(&args)?;
        let options = sparse(options, Self::initial_reserve(&layout));
        let segment = Segment::create(name, &layout, options, |ptr, len| {
            // SAFETY: `Segment` hands its init callback the zero-filled, 128-aligned
            // payload of `len` bytes before publishing the segment.
            Self::init(args, &mut unsafe { Payload::new(ptr, len) });
        })?;
        attach_new(segment)
    }

    /// Opens the object named `name` with `options` (how long to wait for a creator
    /// still initializing it).
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, permissions, another kind (`WrongKind`, naming
    /// both), a layout this type cannot use (`IncompatibleLayout`, naming both), a
    /// corrupt or truncated segment, a creator that died.
    fn open_with(name: &str, options: OpenOptions) -> Result<Self, OpenError> {
        let segment = Segment::open_any(name, options)?;
        attach_opened(segment)
    }

    /// Opens the object named `name` if it exists, else creates it from `args`;
    /// exactly one of several racing processes creates it, the others open it once
    /// it is initialized. Returns the handle and whether this call created it.
    ///
    /// # Errors
    ///
    /// The error of the step that failed ([`OpenOrCreateError`]).
    fn open_or_create(name: &str, args: Self::Args<'_>) -> Result<(Self, bool), OpenOrCreateError> {
        Self::open_or_create_with(name, args, CreateOptions::new(), OpenOptions::new())
    }

    /// [`open_or_create`](Object::open_or_create) with options for each step.
    ///
    /// # Errors
    ///
    /// As for [`open_or_create`](Object::open_or_create).
    fn open_or_create_with(
        name: &str,
        args: Self::Args<'_>,
        create: CreateOptions,
        open: OpenOptions,
    ) -> Result<(Self, bool), OpenOrCreateError> {
        let layout = Self::layout(&args).map_err(OpenOrCreateError::Create)?;
        let create = sparse(create, Self::initial_reserve(&layout));
        let (segment, created) =
            Segment::open_or_create(name, &layout, create, open, |ptr, len| {
                // SAFETY: `Segment` hands its init callback the zero-filled, 128-aligned
                // payload of `len` bytes before publishing the segment.
                Self::init(args, &mut unsafe { Payload::new(ptr, len) });
            })?;
        let handle = if created {
            attach_new(segment).map_err(OpenOrCreateError::Create)?
        } else {
            attach_opened(segment).map_err(OpenOrCreateError::Open)?
        };
        Ok((handle, created))
    }

    /// Keeps the name after the creating process's handles are dropped (Python's
    /// `SharedMemory(track=False)`); remove it later with
    /// [`Segment::remove`] or `shmproc rm`. Applies to every clone of the handle.
    fn persist(&self) {
        self.segment().keep_name();
    }

    /// The segment's name, `None` if anonymous.
    fn segment_name(&self) -> Option<&str> {
        self.segment().name()
    }
}

/// `options`, reserving only `reserve` bytes at creation if the object asks for it.
fn sparse(options: CreateOptions, reserve: Option<u64>) -> CreateOptions {
    match reserve {
        Some(bytes) => options.reserve_only(bytes),
        None => options,
    }
}

/// The handle over a segment this process just created from `O::layout`.
fn attach_new<O: Object>(segment: Segment) -> Result<O, CreateError> {
    O::attach_created(Arc::new(segment)).map_err(|m| {
        CreateError::InvalidArgument(format!(
            "a new {} does not fit its own layout: {} {} (expected {})",
            O::KIND,
            m.what,
            m.found,
            m.expected
        ))
    })
}

/// The handle over an opened segment: its kind, then the rest of its layout.
fn attach_opened<O: Object>(segment: Segment) -> Result<O, OpenError> {
    attach_opened_as(segment, None)
}

/// The handle of `role` (`None`: an opener's) over an opened or handed-over segment:
/// its kind, then the rest of its layout.
pub(crate) fn attach_opened_as<O: Object>(
    segment: Segment,
    role: Option<u8>,
) -> Result<O, OpenError> {
    let found = segment.info().layout.kind;
    let name = segment.name().unwrap_or("(anonymous segment)").to_string();
    if found != O::KIND {
        return Err(OpenError::WrongKind {
            name,
            expected: O::KIND,
            found,
        });
    }
    let segment = Arc::new(segment);
    let attached = match role {
        None => O::attach(segment),
        Some(role) => O::attach_role(segment, role),
    };
    attached.map_err(|m| OpenError::IncompatibleLayout {
        name,
        what: m.what,
        expected: m.expected,
        found: m.found,
    })
}
