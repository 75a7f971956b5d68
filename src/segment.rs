//! Shared-memory segments: a header plus a payload, named (in `/dev/shm`) or anonymous
//! (a memfd inherited by children).
//!
//! A segment is how every shmproc object lives in memory. Embedders can use
//! [`ObjectKind::Raw`] segments to hold layouts of their own, such as a ring from
//! [`crate::wait`] or the ring modules, with the same naming, validation and cleanup.

use crate::layout::header::{
    self, ATTACH_SLOTS, ElemType, HEADER_SIZE, HeaderError, HeaderInfo, InitState, ObjectKind,
    ObjectLayout, STATE_FAILED, STATE_INITIALIZING, STATE_READY,
};
use crate::os::clock::Deadline;
use crate::os::holders::Holders;
use crate::os::memory;
use crate::os::proc::{self, ProcessId};
use crate::os::shm::{self, Mapping};
use rustix::fd::OwnedFd;
use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest segment name accepted, in bytes (Linux allows 255 for a file name; the rest
/// is left for tools that add suffixes).
pub const NAME_MAX: usize = 200;

/// A segment name that breaks the naming rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty (or only `/`).
    Empty,
    /// Longer than [`NAME_MAX`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside `A-Z a-z 0-9 . _ -`.
    BadChar {
        /// The character.
        ch: char,
        /// Its byte offset in the name.
        at: usize,
    },
    /// Starts with `.` (hidden files, `.` and `..` are not segment names).
    LeadingDot,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("invalid segment name: empty"),
            NameError::TooLong { len } => write!(
                f,
                "invalid segment name: {len} bytes long, at most {NAME_MAX} allowed"
            ),
            NameError::BadChar { ch, at } => write!(
                f,
                "invalid segment name: character {ch:?} at byte {at} (allowed: A-Z a-z 0-9 . _ -)"
            ),
            NameError::LeadingDot => f.write_str("invalid segment name: starts with '.'"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a segment name and returns it without its optional leading `/` (POSIX
/// `shm_open` style names like `/jobs` and plain `jobs` mean the same segment).
///
/// # Errors
///
/// [`NameError`] saying which rule the name breaks.
pub fn validate_name(name: &str) -> Result<&str, NameError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(NameError::Empty);
    }
    if bare.len() > NAME_MAX {
        return Err(NameError::TooLong { len: bare.len() });
    }
    if let Some((at, ch)) = bare
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar { ch, at });
    }
    if bare.starts_with('.') {
        return Err(NameError::LeadingDot);
    }
    Ok(bare)
}

/// Shows a segment's name in messages (`'jobs'`, or `<anonymous>`).
struct Shown<'a>(&'a Option<String>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "segment '{n}'"),
            None => f.write_str("anonymous segment"),
        }
    }
}

/// Why a segment could not be created.
#[derive(Debug)]
#[non_exhaustive]
pub enum CreateError {
    /// The name breaks the naming rules.
    InvalidName(NameError),
    /// A segment (or other file) of that name exists already.
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// `/dev/shm` refused (permissions).
    PermissionDenied {
        /// The name.
        name: String,
    },
    /// An argument is out of range (a capacity of zero, a slot size too large, …).
    InvalidArgument(String),
    /// The layout asks for more memory than can be addressed.
    TooLarge {
        /// Payload bytes asked for.
        payload_size: u64,
    },
    /// The machine cannot back a segment this large: checked before anything is
    /// allocated (and reported the same way if reserving the memory fails).
    InsufficientSpace {
        /// The name, if any.
        name: Option<String>,
        /// Bytes the segment needs (header included).
        requested: u64,
        /// Bytes the machine can back now.
        available: u64,
        /// What bounds it: [`Backing::ShmFree`] or [`Backing::Memory`].
        backing: Backing,
    },
    /// Another OS error, e.g. `/dev/shm` full (ENOSPC) or too many open files.
    Io {
        /// The name, if any.
        name: Option<String>,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::InvalidName(e) => e.fmt(f),
            CreateError::AlreadyExists { name } => write!(f, "segment '{name}' already exists"),
            CreateError::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            CreateError::PermissionDenied { name } => {
                write!(f, "permission denied creating segment '{name}'")
            }
            CreateError::TooLarge { payload_size } => write!(
                f,
                "a payload of {payload_size} bytes is too large for a segment"
            ),
            CreateError::InsufficientSpace {
                name,
                requested,
                available,
                backing,
            } => match backing {
                Backing::ShmFree => write!(
                    f,
                    "{} needs {requested} bytes, but /dev/shm has only {available} bytes free",
                    Shown(name)
                ),
                Backing::Memory => write!(
                    f,
                    "{} needs {requested} bytes, but only {available} bytes of memory can \
                     back it (MemAvailable + SwapFree)",
                    Shown(name)
                ),
            },
            CreateError::Io { name, op, source } => {
                write!(f, "{} while {op}: {source}", Shown(name))
            }
        }
    }
}

/// What bounds the size of a new segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Free space in `/dev/shm` (named segments).
    ShmFree,
    /// Memory the machine can still back shared memory with: `MemAvailable +
    /// SwapFree` (every segment; the only bound on anonymous ones).
    Memory,
}

/// Fails with [`CreateError::InsufficientSpace`] unless the machine can back `size`
/// bytes: memory for every segment, and free space in `/dev/shm` for named ones. A
/// reading the OS does not offer (no `/proc`) is skipped; `fallocate` still catches a
/// full `/dev/shm`.
fn check_backing(name: Option<&str>, size: u64) -> Result<(), CreateError> {
    let mut bounds = vec![(Backing::Memory, memory::available_bytes())];
    if name.is_some() {
        bounds.push((Backing::ShmFree, memory::free_bytes(shm::SHM_DIR)));
    }
    for (backing, available) in bounds {
        match available {
            Ok(available) if available < size => {
                return Err(CreateError::InsufficientSpace {
                    name: name.map(str::to_string),
                    requested: size,
                    available,
                    backing,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The error for a failed `fallocate`: out of space or memory is
/// [`CreateError::InsufficientSpace`] with what is free now; anything else is `Io`.
fn reserve_error(name: Option<&str>, size: u64, e: io::Error) -> CreateError {
    let owned = name.map(str::to_string);
    if matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::ENOMEM | libc::EFBIG)
    ) {
        let (backing, available) = match name {
            Some(_) => (Backing::ShmFree, memory::free_bytes(shm::SHM_DIR)),
            None => (Backing::Memory, memory::available_bytes()),
        };
        if let Ok(available) = available {
            return CreateError::InsufficientSpace {
                name: owned,
                requested: size,
                available,
                backing,
            };
        }
    }
    create_io(&owned, "reserving memory (fallocate)")(e)
}

impl std::error::Error for CreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CreateError::InvalidName(e) => Some(e),
            CreateError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a segment could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The name breaks the naming rules.
    InvalidName(NameError),
    /// No segment of that name.
    NotFound {
        /// The name.
        name: String,
    },
    /// The file exists but its mode does not let this process open it.
    PermissionDenied {
        /// The name.
        name: String,
    },
    /// The segment holds another kind of object.
    WrongKind {
        /// The name.
        name: String,
        /// The kind asked for.
        expected: ObjectKind,
        /// The kind found.
        found: ObjectKind,
    },
    /// Same kind, but a layout this handle cannot use (element type, slot size…).
    IncompatibleLayout {
        /// The name.
        name: String,
        /// What differs.
        what: &'static str,
        /// What this handle needs.
        expected: String,
        /// What the segment has.
        found: String,
    },
    /// The header fails validation: not a shmproc segment, another layout version,
    /// a file shorter than the header says, or a corrupt field (the reason says which).
    BadHeader {
        /// The name.
        name: String,
        /// What is wrong.
        reason: HeaderError,
    },
    /// The creator died before finishing initialization.
    CreatorDied {
        /// The name.
        name: String,
        /// The creator's pid; 0 if it died before recording itself (the file is
        /// empty and no process has it open).
        pid: u32,
    },
    /// The segment did not become ready before the open timeout.
    NotInitialized {
        /// The name.
        name: String,
        /// The state it was left in.
        state: InitState,
        /// The creator's pid, if recorded (0 if not).
        creator_pid: u32,
        /// How long the open waited.
        waited: Duration,
    },
    /// Another OS error.
    Io {
        /// The name.
        name: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::InvalidName(e) => e.fmt(f),
            OpenError::NotFound { name } => write!(f, "segment '{name}' not found"),
            OpenError::PermissionDenied { name } => {
                write!(f, "permission denied opening segment '{name}'")
            }
            OpenError::WrongKind {
                name,
                expected,
                found,
            } => write!(f, "segment '{name}': expected {expected}, found {found}"),
            OpenError::IncompatibleLayout {
                name,
                what,
                expected,
                found,
            } => write!(
                f,
                "segment '{name}': incompatible {what}: expected {expected}, found {found}"
            ),
            OpenError::BadHeader { name, reason } => write!(f, "segment '{name}': {reason}"),
            OpenError::CreatorDied { name, pid: 0 } => write!(
                f,
                "segment '{name}' is empty and no process has it open: its creator died \
                 before writing the header"
            ),
            OpenError::CreatorDied { name, pid } => write!(
                f,
                "segment '{name}': its creator (pid {pid}) died before finishing initialization"
            ),
            OpenError::NotInitialized {
                name,
                state,
                creator_pid,
                waited,
            } => write!(
                f,
                "segment '{name}' is still {state} after waiting {waited:?} (creator pid {creator_pid})"
            ),
            OpenError::Io { name, op, source } => {
                write!(f, "segment '{name}': {op}: {source}")
            }
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::InvalidName(e) => Some(e),
            OpenError::BadHeader { reason, .. } => Some(reason),
            OpenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why `open_or_create` failed: the error of the step that failed.
#[derive(Debug)]
pub enum OpenOrCreateError {
    /// Creating failed (for a reason other than "already exists").
    Create(CreateError),
    /// Opening the existing segment failed.
    Open(OpenError),
}

impl fmt::Display for OpenOrCreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenOrCreateError::Create(e) => e.fmt(f),
            OpenOrCreateError::Open(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenOrCreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenOrCreateError::Create(e) => Some(e),
            OpenOrCreateError::Open(e) => Some(e),
        }
    }
}

/// Why a named segment could not be removed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RemoveError {
    /// The name breaks the naming rules.
    InvalidName(NameError),
    /// No segment of that name.
    NotFound {
        /// The name.
        name: String,
    },
    /// Another OS error (e.g. permission denied).
    Io {
        /// The name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveError::InvalidName(e) => e.fmt(f),
            RemoveError::NotFound { name } => write!(f, "segment '{name}' not found"),
            RemoveError::Io { name, source } => write!(f, "removing segment '{name}': {source}"),
        }
    }
}

impl std::error::Error for RemoveError {}

/// Options for creating a named segment.
#[derive(Clone, Copy, Debug)]
pub struct CreateOptions {
    mode: u32,
    /// Bytes of the file to reserve (`fallocate`) at creation; `None`: all of it. A
    /// sparse object (a `Dict`) reserves its fixed part only and the rest as it grows
    /// ([`Segment::reserve_range`]).
    reserve: Option<u64>,
}

impl Default for CreateOptions {
    fn default() -> CreateOptions {
        CreateOptions {
            mode: 0o600,
            reserve: None,
        }
    }
}

impl CreateOptions {
    /// Options with mode 0600 (only this user may open the segment).
    pub fn new() -> CreateOptions {
        CreateOptions::default()
    }

    /// The file mode (permission bits) of the segment, applied exactly (the umask does
    /// not narrow it). Default 0600.
    pub fn mode(mut self, mode: u32) -> CreateOptions {
        self.mode = mode & 0o777;
        self
    }

    /// Reserves only the first `bytes` of the file at creation (the rest stays sparse
    /// until [`Segment::reserve_range`]); only these bytes are checked against what
    /// the machine can back.
    pub(crate) fn reserve_only(mut self, bytes: u64) -> CreateOptions {
        self.reserve = Some(bytes);
        self
    }
}

/// Options for opening a named segment.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    timeout: Duration,
    read_only: bool,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            timeout: Duration::from_secs(1),
            read_only: false,
        }
    }
}

impl OpenOptions {
    /// Default options: wait up to 1 s for a segment being initialized; read-write.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// How long to wait for a creator that is still initializing the segment.
    pub fn timeout(mut self, timeout: Duration) -> OpenOptions {
        self.timeout = timeout;
        self
    }

    /// Map the segment read-only and do not record this process in its attach
    /// registry (for tools that only look).
    pub fn read_only(mut self, read_only: bool) -> OpenOptions {
        self.read_only = read_only;
        self
    }
}

/// A mapped shared-memory segment: a validated header and a payload.
///
/// Dropping the handle unmaps it. The process that created a named segment also
/// unlinks the name on drop, unless [`persist`](Segment::persist) was called — but
/// only if the name still refers to the same file (never a newer segment that reused
/// the name). Children started with [`Process`](crate::Process) that inherit a
/// `Segment` never unlink it.
///
/// # Examples
///
/// ```
/// use shmproc::segment::{Segment, CreateOptions, OpenOptions};
/// use shmproc::layout::header::{ElemType, ObjectKind, ObjectLayout};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layout = ObjectLayout {
///     kind: ObjectKind::Raw,
///     elem: ElemType::of::<u64>(),
///     slot_size: 0,
///     capacity: 16,
///     payload_size: 16 * 8,
/// };
/// let name = format!("shmproc-doc-segment-{}", std::process::id());
/// let created = Segment::create(&name, &layout, CreateOptions::new(), |_payload, _len| {})?;
/// let opened = Segment::open(&name, ObjectKind::Raw, ElemType::of::<u64>(), OpenOptions::new())?;
/// assert_eq!(opened.info().layout, layout);
/// assert_eq!(opened.payload_len(), 128);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Segment {
    map: Mapping,
    /// Kept open: the identity check before unlinking uses it, and a memfd lives
    /// only as long as a descriptor or mapping of it.
    fd: OwnedFd,
    name: Option<String>,
    info: HeaderInfo,
    /// Pid of the process that unlinks the name on drop (the creator), if any.
    unlink_by: Option<u32>,
    /// Set by [`persist`](Segment::persist): nobody unlinks the name on drop.
    persisted: AtomicBool,
    /// (slot, entry) this process holds in the attach registry.
    attach: Option<(usize, u64)>,
}

fn create_io(name: &Option<String>, op: &'static str) -> impl FnOnce(io::Error) -> CreateError {
    let name = name.clone();
    move |source| CreateError::Io { name, op, source }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Copies bytes out of shared memory with volatile reads: a peer may be writing them,
/// so the copy is a snapshot to validate, never a view to trust.
///
/// # Safety
///
/// `src` must be valid for reads of `dst.len()` bytes.
unsafe fn snapshot(src: *const u8, dst: &mut [u8]) {
    for (i, b) in dst.iter_mut().enumerate() {
        // SAFETY: i < dst.len(), and src is readable for that many bytes.
        *b = unsafe { src.add(i).read_volatile() };
    }
}

/// Marks a segment FAILED and unlinks its name if creation does not finish (an error,
/// or a panic in the caller's init closure).
struct CreateGuard<'a> {
    /// The header page, mapped once the file holds a header; the state word is
    /// written through it.
    head: Option<Mapping>,
    name: Option<&'a str>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(head) = &self.head {
            // SAFETY: `head` maps at least HEADER_SIZE bytes, page-aligned, and is
            // unmapped only after this body (fields drop after `drop`).
            unsafe { header::init_state(head.ptr().as_ptr()) }
                .store(STATE_FAILED, Ordering::Release);
        }
        if let Some(name) = self.name {
            let _ = shm::unlink_named(name);
        }
    }
}

impl Segment {
    /// Creates a named segment holding an object of `layout`, failing if the name
    /// exists. `init` gets the payload (zero-filled) to initialize before any opener
    /// can see the segment; openers wait for it (up to their timeout).
    ///
    /// # Errors
    ///
    /// [`CreateError`]: bad name, name taken, permissions, size, or OS errors.
    pub fn create(
        name: &str,
        layout: &ObjectLayout,
        options: CreateOptions,
        init: impl FnOnce(NonNull<u8>, usize),
    ) -> Result<Segment, CreateError> {
        let name = validate_name(name).map_err(CreateError::InvalidName)?;
        let (_, size) = header::segment_extent(layout).ok_or(CreateError::TooLarge {
            payload_size: layout.payload_size,
        })?;
        let reserve = options.reserve.map_or(size, |r| r.min(size));
        check_backing(Some(name), reserve)?;
        let fd = shm::create_named(name, options.mode).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => CreateError::AlreadyExists {
                name: name.to_string(),
            },
            io::ErrorKind::PermissionDenied => CreateError::PermissionDenied {
                name: name.to_string(),
            },
            _ => create_io(&Some(name.to_string()), "creating")(e),
        })?;
        Segment::initialize(fd, Some(name), size, reserve, layout, init)
    }

    /// Creates an anonymous segment (a memfd, sealed against resizing). Children
    /// started with [`Process`](crate::Process) after this call share it.
    ///
    /// # Errors
    ///
    /// [`CreateError`]: size or OS errors.
    pub fn anonymous(
        layout: &ObjectLayout,
        init: impl FnOnce(NonNull<u8>, usize),
    ) -> Result<Segment, CreateError> {
        Segment::anonymous_with(layout, None, init)
    }

    /// [`anonymous`](Segment::anonymous), reserving only the first `reserve` bytes of
    /// the file now (`None`: all of it); see [`CreateOptions::reserve_only`].
    pub(crate) fn anonymous_with(
        layout: &ObjectLayout,
        reserve: Option<u64>,
        init: impl FnOnce(NonNull<u8>, usize),
    ) -> Result<Segment, CreateError> {
        let (_, size) = header::segment_extent(layout).ok_or(CreateError::TooLarge {
            payload_size: layout.payload_size,
        })?;
        let reserve = reserve.map_or(size, |r| r.min(size));
        check_backing(None, reserve)?;
        let debug_name = format!("shmproc-{}", layout.kind);
        let fd = shm::create_anonymous(&debug_name).map_err(create_io(&None, "memfd_create"))?;
        Segment::initialize(fd, None, size, reserve, layout, init)
    }

    /// Writes the header, sizes the file, lets `init` fill the payload and publishes
    /// the segment READY.
    ///
    /// The creator goes on record before the file is sized: the file first becomes
    /// one header long, holding every field and the state INITIALIZING, and only then
    /// grows to `size` and has its memory reserved (which takes long for a large
    /// segment). An opener or `shmproc rm --stale` that finds it meanwhile knows whose
    /// it is and whether that process lives. Only between `shm_open` and the header
    /// write is the file anonymous (empty); the creator holds its descriptor then, so
    /// a scan of the descriptors tells an abandoned empty file from one in creation.
    fn initialize(
        fd: OwnedFd,
        name: Option<&str>,
        size: u64,
        reserve: u64,
        layout: &ObjectLayout,
        init: impl FnOnce(NonNull<u8>, usize),
    ) -> Result<Segment, CreateError> {
        let owned_name = name.map(str::to_string);
        let mut guard = CreateGuard {
            head: None,
            name,
            armed: true,
        };
        let len = usize::try_from(size).map_err(|_| CreateError::TooLarge {
            payload_size: layout.payload_size,
        })?;
        let creator = ProcessId::current();
        let fields =
            header::build(layout, creator, now_unix_ms()).ok_or(CreateError::TooLarge {
                payload_size: layout.payload_size,
            })?;
        let info = header::parse(&fields_image(&fields), size).map_err(|e| CreateError::Io {
            name: owned_name.clone(),
            op: "building the header",
            source: io::Error::other(e.to_string()),
        })?;

        // 1. The header, with the creator on record, before anything large happens.
        shm::resize(&fd, HEADER_SIZE as u64).map_err(create_io(&owned_name, "sizing"))?;
        let head = Mapping::new(&fd, HEADER_SIZE, true, true)
            .map_err(create_io(&owned_name, "mapping the header"))?;
        let head_base = head.ptr().as_ptr();
        for (i, &b) in fields.iter().enumerate() {
            if (header::INIT_STATE_OFFSET..header::INIT_STATE_OFFSET + 4).contains(&i) {
                continue; // the state word is written atomically below
            }
            // SAFETY: i < fields.len() <= HEADER_SIZE, the length of the `head`
            // mapping; no process trusts these bytes before INITIALIZING is published.
            unsafe { head_base.add(i).write_volatile(b) };
        }
        // SAFETY: `head` maps HEADER_SIZE bytes, page-aligned, and outlives `state`'s
        // uses (it moves into the guard, which lives to the end of this function).
        let state = unsafe { header::init_state(head_base) };
        // Publishes the creator pid for openers watching for a dead creator; paired
        // with the Acquire load in `open_any`.
        state.store(STATE_INITIALIZING, Ordering::Release);
        guard.head = Some(head);

        // 2. The full size, its memory reserved now (an error here, not a SIGBUS later);
        //    a sparse object reserves its first `reserve` bytes only and the rest as
        //    it grows.
        shm::resize(&fd, size).map_err(|e| reserve_error(name, size, e))?;
        shm::reserve(&fd, 0, reserve).map_err(|e| reserve_error(name, reserve, e))?;
        if name.is_none() {
            shm::seal_size(&fd).map_err(create_io(&owned_name, "sealing"))?;
        }
        // A sparse segment is not populated: that would allocate its holes.
        let map = Mapping::new(&fd, len, true, reserve == size)
            .map_err(create_io(&owned_name, "mapping"))?;
        let base = map.ptr().as_ptr();

        // 3. The payload, then READY.
        // SAFETY: payload_offset + payload_size <= size == len (checked by parse).
        let payload = unsafe { NonNull::new_unchecked(base.add(info.payload_offset as usize)) };
        init(payload, info.layout.payload_size as usize);
        // Publishes header and payload; paired with the Acquire load in `open_any`.
        state.store(STATE_READY, Ordering::Release);
        guard.armed = false;
        drop(guard);
        let mut segment = Segment {
            map,
            fd,
            name: owned_name,
            info,
            unlink_by: name.map(|_| creator.pid),
            persisted: AtomicBool::new(false),
            attach: None,
        };
        segment.register();
        Ok(segment)
    }

    /// Opens the named segment, expecting an object of `kind` with elements of `elem`.
    /// Waits up to the options' timeout for a creator that is still initializing it.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, permissions, wrong kind or element type, a corrupt,
    /// truncated or foreign file, or a creator that died or did not finish in time.
    pub fn open(
        name: &str,
        kind: ObjectKind,
        elem: ElemType,
        options: OpenOptions,
    ) -> Result<Segment, OpenError> {
        let segment = Segment::open_any(name, options)?;
        let found = &segment.info.layout;
        let name = || segment.name.clone().unwrap_or_default();
        if found.kind != kind {
            return Err(OpenError::WrongKind {
                name: name(),
                expected: kind,
                found: found.kind,
            });
        }
        if found.elem != elem {
            return Err(OpenError::IncompatibleLayout {
                name: name(),
                what: "element type",
                expected: elem.to_string(),
                found: found.elem.to_string(),
            });
        }
        Ok(segment)
    }

    /// Opens any valid shmproc segment, whatever it holds (for tools).
    ///
    /// # Errors
    ///
    /// As for [`open`](Segment::open), without the kind and type checks.
    pub fn open_any(name: &str, options: OpenOptions) -> Result<Segment, OpenError> {
        let name = validate_name(name).map_err(OpenError::InvalidName)?;
        let io_err = |op: &'static str| {
            move |source: io::Error| OpenError::Io {
                name: name.to_string(),
                op,
                source,
            }
        };
        let writable = !options.read_only;
        let fd = shm::open_named(name, writable).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OpenError::NotFound {
                name: name.to_string(),
            },
            io::ErrorKind::PermissionDenied => OpenError::PermissionDenied {
                name: name.to_string(),
            },
            _ => io_err("opening")(e),
        })?;
        let start = std::time::Instant::now();
        let deadline = Deadline::after(options.timeout);
        let mut pause = Duration::from_micros(20);
        let mut last_scan = None;
        loop {
            let (file_len, _) = shm::file_stat(&fd).map_err(io_err("fstat"))?;
            let problem = if file_len == 0 {
                HeaderError::NotReady {
                    state: InitState::Empty,
                    creator_pid: 0,
                    creator_start_ticks: 0,
                }
            } else if file_len < HEADER_SIZE as u64 {
                HeaderError::TooShort {
                    len: file_len as usize,
                }
            } else {
                let len = usize::try_from(file_len).map_err(|_| OpenError::BadHeader {
                    name: name.to_string(),
                    reason: HeaderError::Corrupt(format!("file size {file_len} too large")),
                })?;
                let sparse = shm::is_sparse(&fd).map_err(io_err("fstat"))?;
                let map = Mapping::new(&fd, len, writable, !sparse).map_err(io_err("mapping"))?;
                let base = map.ptr().as_ptr();
                // SAFETY: the mapping holds at least HEADER_SIZE bytes.
                let state = unsafe { header::init_state(base) };
                // Paired with the creator's Release store of READY: after seeing it,
                // the header and payload bytes are complete.
                let _ = state.load(Ordering::Acquire);
                let mut image = [0u8; HEADER_SIZE];
                // SAFETY: the mapping holds at least HEADER_SIZE bytes.
                unsafe { snapshot(base, &mut image) };
                match header::parse(&image, file_len) {
                    Ok(info) => {
                        let mut segment = Segment {
                            map,
                            fd,
                            name: Some(name.to_string()),
                            info,
                            unlink_by: None,
                            persisted: AtomicBool::new(false),
                            attach: None,
                        };
                        if writable {
                            segment.register();
                        }
                        return Ok(segment);
                    }
                    Err(e) => e,
                }
            };
            match problem {
                HeaderError::NotReady {
                    state,
                    creator_pid,
                    creator_start_ticks,
                } if matches!(state, InitState::Empty | InitState::Initializing) => {
                    let died = match state {
                        InitState::Initializing => {
                            !proc::is_alive(creator_pid, creator_start_ticks)
                        }
                        // No header yet: abandoned if no other process holds it (a
                        // creator holds its descriptor until the header is written).
                        _ => {
                            let look = last_scan
                                .is_none_or(|t: std::time::Instant| t.elapsed() >= EMPTY_RESCAN);
                            look && {
                                last_scan = Some(std::time::Instant::now());
                                abandoned(name, &fd)
                            }
                        }
                    };
                    if died {
                        return Err(OpenError::CreatorDied {
                            name: name.to_string(),
                            pid: creator_pid,
                        });
                    }
                    if deadline.expired() {
                        return Err(OpenError::NotInitialized {
                            name: name.to_string(),
                            state,
                            creator_pid,
                            waited: start.elapsed(),
                        });
                    }
                    std::thread::sleep(pause.min(deadline.remaining()));
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                reason => {
                    return Err(OpenError::BadHeader {
                        name: name.to_string(),
                        reason,
                    });
                }
            }
        }
    }

    /// Opens the named segment if it exists, else creates it; exactly one of several
    /// racing processes creates it, the others open it once it is initialized.
    /// Returns the segment and whether this call created it.
    ///
    /// # Errors
    ///
    /// The error of the create or open step that failed.
    pub fn open_or_create(
        name: &str,
        layout: &ObjectLayout,
        create: CreateOptions,
        open: OpenOptions,
        init: impl FnOnce(NonNull<u8>, usize),
    ) -> Result<(Segment, bool), OpenOrCreateError> {
        let mut init = Some(init);
        // Two rounds: a segment can vanish between our failed create and our open.
        for _ in 0..3 {
            match Segment::open(name, layout.kind, layout.elem, open) {
                Ok(s) => return Ok((s, false)),
                Err(OpenError::NotFound { .. }) => {}
                Err(e) => return Err(OpenOrCreateError::Open(e)),
            }
            let Some(f) = init.take() else { break };
            match Segment::create(name, layout, create, f) {
                Ok(s) => return Ok((s, true)),
                Err(CreateError::AlreadyExists { .. }) => {
                    init = None;
                }
                Err(e) => return Err(OpenOrCreateError::Create(e)),
            }
        }
        Segment::open(name, layout.kind, layout.elem, open)
            .map(|s| (s, false))
            .map_err(OpenOrCreateError::Open)
    }

    /// Removes a named segment from `/dev/shm`. Processes that have it mapped keep
    /// using it; the memory is freed when the last of them unmaps it.
    ///
    /// # Errors
    ///
    /// [`RemoveError`]: bad name, not found, or an OS error.
    pub fn remove(name: &str) -> Result<(), RemoveError> {
        let name = validate_name(name).map_err(RemoveError::InvalidName)?;
        shm::unlink_named(name).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RemoveError::NotFound {
                name: name.to_string(),
            },
            _ => RemoveError::Io {
                name: name.to_string(),
                source: e,
            },
        })
    }

    /// Keeps the name after this handle is dropped (Python's
    /// `SharedMemory(track=False)`); remove it later with [`Segment::remove`] or
    /// `shmproc rm`.
    pub fn persist(&mut self) {
        self.keep_name();
    }

    /// [`persist`](Segment::persist) through a shared handle: objects share their
    /// segment among clones, and persisting through any of them keeps the name.
    pub(crate) fn keep_name(&self) {
        self.persisted.store(true, Ordering::Relaxed);
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The validated header.
    pub fn info(&self) -> &HeaderInfo {
        &self.info
    }

    /// Start of the payload (aligned to 128 bytes).
    pub fn payload(&self) -> NonNull<u8> {
        // SAFETY: payload_offset + payload_size <= segment_size <= mapping length,
        // checked by header::parse against fstat's size.
        unsafe {
            NonNull::new_unchecked(
                self.map
                    .ptr()
                    .as_ptr()
                    .add(self.info.payload_offset as usize),
            )
        }
    }

    /// Length of the payload in bytes.
    pub fn payload_len(&self) -> usize {
        self.info.layout.payload_size as usize
    }

    /// `fallocate(2)` of payload bytes `offset .. offset + len`: reserves their memory
    /// now, so that touching them later cannot fault with SIGBUS on a full
    /// `/dev/shm`. For sparse objects that grow into their segment (a `Dict`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the range is not inside the payload; the OS error (ENOSPC,
    /// ENOMEM, …) otherwise.
    pub(crate) fn reserve_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > self.info.layout.payload_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the payload",
            ));
        }
        shm::reserve(&self.fd, self.info.payload_offset + offset, len)
    }

    /// Processes recorded as having the segment open (pid, still alive). The registry
    /// holds [`ATTACH_SLOTS`] entries; children that inherit a segment are not in it.
    pub fn attached(&self) -> Vec<(u32, bool)> {
        // SAFETY: the mapping holds at least HEADER_SIZE bytes and lives as long as
        // self.
        unsafe { header::attached(self.map.ptr().as_ptr()) }
    }

    /// Records this process in the attach registry, reclaiming entries of dead
    /// processes when it is full. Best effort: a full registry only hides us from
    /// `shmproc inspect`.
    fn register(&mut self) {
        let me = ProcessId::current();
        let entry = header::attach_entry(me.pid, me.start_ticks);
        let base = self.map.ptr().as_ptr();
        for pass in 0..2 {
            for i in 0..ATTACH_SLOTS {
                // SAFETY: i < ATTACH_SLOTS; the mapping holds the header.
                let slot = unsafe { header::attach_slot(base, i) };
                let cur = slot.load(Ordering::Relaxed);
                let free = cur == 0 || {
                    let (pid, start) = header::attach_unpack(cur);
                    pass == 1 && !proc::is_alive_low32(pid, start)
                };
                if free
                    && slot
                        .compare_exchange(cur, entry, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    self.attach = Some((i, entry));
                    return;
                }
            }
        }
    }
}

/// Which processes have named segments open or mapped: one scan of every process's
/// descriptors and mappings (`/proc/PID/fd`, `/proc/PID/maps`), for tools that judge
/// whether a file is abandoned (`shmproc rm --stale`). Unlike the attach registry it
/// sees every holder, inherited handles and foreign programs included — but only in
/// this pid namespace, and not inside processes this user may not inspect.
#[derive(Debug)]
pub struct OpenBy(Holders);

impl OpenBy {
    /// Scans `/proc` once.
    ///
    /// # Errors
    ///
    /// If `/proc` cannot be listed.
    pub fn scan() -> io::Result<OpenBy> {
        Holders::scan().map(OpenBy)
    }

    /// The pids holding the segment `name` (a bare name, as in `/dev/shm`).
    pub fn pids(&self, name: &str) -> Vec<u32> {
        self.0.of(name).iter().map(|&(pid, _)| pid).collect()
    }

    /// Processes of user `uid` the scan could not look into: any of them might hold
    /// a file of that user's.
    pub fn hidden_owned_by(&self, uid: u32) -> usize {
        self.0.hidden_owned_by(uid)
    }
}

/// How often an opener waiting on an empty file looks again for processes holding it.
const EMPTY_RESCAN: Duration = Duration::from_millis(100);

/// Whether the empty file `name` (open as `fd`) is abandoned: no process holds it but
/// through this one's single descriptor (the opener's own), and every process of the
/// file's owner — whoever created it — could be looked into.
fn abandoned(name: &str, fd: &OwnedFd) -> bool {
    let (Ok(scan), Ok(owner)) = (Holders::scan(), shm::file_owner(fd)) else {
        return false;
    };
    let me = proc::current_pid();
    let others: u32 = scan
        .of(name)
        .iter()
        .map(|&(pid, n)| if pid == me { n.saturating_sub(1) } else { n })
        .sum();
    others == 0 && scan.hidden_owned_by(owner) == 0
}

/// The header fields padded to a full header image, for parsing our own header.
fn fields_image(fields: &[u8]) -> [u8; HEADER_SIZE] {
    let mut image = [0u8; HEADER_SIZE];
    image[..fields.len()].copy_from_slice(fields);
    image[header::INIT_STATE_OFFSET..header::INIT_STATE_OFFSET + 4]
        .copy_from_slice(&STATE_READY.to_ne_bytes());
    image
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some((i, entry)) = self.attach {
            // SAFETY: i < ATTACH_SLOTS; the mapping is still alive.
            let slot = unsafe { header::attach_slot(self.map.ptr().as_ptr(), i) };
            // Only our own entry: a reclaimer may have taken the slot meanwhile.
            let _ = slot.compare_exchange(entry, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
        if let (Some(pid), Some(name)) = (self.unlink_by, &self.name) {
            if pid == proc::current_pid() && !self.persisted.load(Ordering::Relaxed) {
                let ours = shm::file_stat(&self.fd).ok().map(|(_, id)| id);
                if ours.is_some() && shm::name_identity(name).ok() == ours {
                    let _ = shm::unlink_named(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_reservation_names_both_numbers() {
        let e = reserve_error(
            Some("jobs"),
            1 << 50,
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        match &e {
            CreateError::InsufficientSpace {
                requested,
                available,
                backing: Backing::ShmFree,
                ..
            } => {
                let text = e.to_string();
                assert!(text.contains("segment 'jobs'"), "{text}");
                assert!(text.contains(&requested.to_string()), "{text}");
                assert!(text.contains(&available.to_string()), "{text}");
            }
            other => panic!("{other:?}"),
        }
        let e = reserve_error(None, 1 << 50, io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(
            matches!(
                e,
                CreateError::InsufficientSpace {
                    backing: Backing::Memory,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = reserve_error(None, 8, io::Error::from_raw_os_error(libc::EBADF));
        assert!(matches!(e, CreateError::Io { .. }), "{e:?}");
    }
}
