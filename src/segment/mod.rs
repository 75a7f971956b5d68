//! Shared-memory segments: a header plus a payload, named (in `/dev/shm`) or anonymous
//! (a memfd inherited by children).
//!
//! A segment is how every shmproc object lives in memory. Embedders can use
//! [`ObjectKind::Raw`] segments to hold layouts of their own, such as a ring from
//! [`crate::wait`] or the ring modules, with the same naming, validation and cleanup.

mod backing;
mod error;
mod name;
mod open_by;
mod options;

pub use backing::Backing;
use backing::{check_backing, reserve_error};
pub use error::{CreateError, OpenError, OpenOrCreateError, RemoveError};
pub use name::{NAME_MAX, NameError, validate_name};
pub use open_by::OpenBy;
use open_by::{EMPTY_RESCAN, abandoned};
pub use options::{CreateOptions, OpenOptions};

use crate::layout::header::{
    self, ATTACH_SLOTS, ElemType, HEADER_SIZE, HeaderError, HeaderInfo, InitState, ObjectKind,
    ObjectLayout, STATE_FAILED, STATE_INITIALIZING, STATE_READY,
};
use crate::os::clock::Deadline;
use crate::os::proc::{self, ProcessId};
use crate::os::shm::{self, Mapping};
use rustix::fd::OwnedFd;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

pub(super) fn create_io(
    name: &Option<String>,
    op: &'static str,
) -> impl FnOnce(io::Error) -> CreateError {
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
        let mut unheld_looks = 0;
        let mut regrown = 0;
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
                    // The creator grows the file from one header long to its full
                    // size and then publishes READY: an opener whose fstat came
                    // before the growth and whose read of the state came after sees
                    // a ready header longer than the file. Look again (a few times:
                    // a file that keeps changing size is reported as it is).
                    Err(HeaderError::Truncated { .. })
                        if regrown < 8
                            && shm::file_stat(&fd).map_err(io_err("fstat"))?.0 != file_len =>
                    {
                        regrown += 1;
                        continue;
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
                        // creator holds its descriptor until the header is written)
                        // in two looks EMPTY_RESCAN apart. One is not enough: the
                        // file exists before the creator's `open` has installed its
                        // descriptor, and an opener that looked in that window
                        // called a live creator dead (2 races in 60 runs of
                        // tests/object.rs here).
                        _ => {
                            let look = last_scan
                                .is_none_or(|t: std::time::Instant| t.elapsed() >= EMPTY_RESCAN);
                            look && {
                                last_scan = Some(std::time::Instant::now());
                                if abandoned(name, &fd) {
                                    unheld_looks += 1;
                                } else {
                                    unheld_looks = 0;
                                }
                                unheld_looks >= 2
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

    /// The segment in `fd`, a descriptor another process handed over (with the
    /// segment's `name`, if it has one), validated like any open: the header is
    /// checked against the file's size before anything else is read. The sender
    /// holds a handle, so the segment must be READY already; this call never waits.
    ///
    /// # Errors
    ///
    /// [`OpenError::BadHeader`] for a file that is not a ready shmproc segment (any
    /// descriptor can be handed over), [`OpenError::Io`] for `fstat` or `mmap`.
    pub(crate) fn from_fd(fd: OwnedFd, name: Option<&str>) -> Result<Segment, OpenError> {
        let label = name.unwrap_or("(anonymous segment)").to_string();
        let io_err = |op: &'static str| {
            let name = label.clone();
            move |source: io::Error| OpenError::Io { name, op, source }
        };
        let bad = |reason: HeaderError| OpenError::BadHeader {
            name: label.clone(),
            reason,
        };
        let (file_len, _) = shm::file_stat(&fd).map_err(io_err("fstat"))?;
        if file_len < HEADER_SIZE as u64 {
            return Err(bad(HeaderError::TooShort {
                len: file_len as usize,
            }));
        }
        let len = usize::try_from(file_len).map_err(|_| {
            bad(HeaderError::Corrupt(format!(
                "file size {file_len} too large"
            )))
        })?;
        // Read the header before mapping: any descriptor can be handed over, and one
        // that is not a segment (or is read-only) should fail on what it is.
        let mut image = [0u8; HEADER_SIZE];
        shm::read_at(&fd, 0, &mut image).map_err(io_err("reading the header"))?;
        header::parse(&image, file_len).map_err(bad)?;
        let sparse = shm::is_sparse(&fd).map_err(io_err("fstat"))?;
        let map = Mapping::new(&fd, len, true, !sparse).map_err(io_err("mapping"))?;
        let base = map.ptr().as_ptr();
        // SAFETY: the mapping holds at least HEADER_SIZE bytes.
        let state = unsafe { header::init_state(base) };
        // Paired with the creator's Release store of READY, as in `open_any`.
        let _ = state.load(Ordering::Acquire);
        // SAFETY: the mapping holds at least HEADER_SIZE bytes.
        unsafe { snapshot(base, &mut image) };
        let info = header::parse(&image, file_len).map_err(bad)?;
        let mut segment = Segment {
            map,
            fd,
            name: name.map(str::to_string),
            info,
            unlink_by: None,
            persisted: AtomicBool::new(false),
            attach: None,
        };
        segment.register();
        Ok(segment)
    }

    /// The descriptor of the segment's file (to hand to another process).
    pub(crate) fn fd(&self) -> rustix::fd::BorrowedFd<'_> {
        use rustix::fd::AsFd;
        self.fd.as_fd()
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
