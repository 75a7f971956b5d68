//! The segment header: the first [`HEADER_SIZE`] bytes of every shmproc segment.
//!
//! ```text
//! offset  size  field                 written
//!      0     8  magic "SHMPROC\0"     once, before init_state = INITIALIZING
//!      8     4  layout version        once, before init_state = INITIALIZING
//!     12     4  object kind           once
//!     16     4  init state (atomic)   EMPTY -> INITIALIZING -> READY (or FAILED)
//!     20     4  header size           once
//!     24     8  segment size          once (the file is at least this long)
//!     32     8  payload offset        once (multiple of 128, >= HEADER_SIZE)
//!     40     8  payload size          once
//!     48     4  creator pid           once
//!     52     4  element size          once
//!     56     8  creator start time    once (clock ticks since boot)
//!     64     8  creation time         once (ms since the Unix epoch)
//!     72     4  element align         once
//!     76     4  slot size             once
//!     80     8  capacity              once
//!     88     4  element name length   once (<= 64)
//!     92     4  reserved (zero)
//!     96    64  element name (UTF-8)  once
//!    160     8  checksum              once, last before READY
//!    256   512  attach registry       64 atomic words, at any time
//! ```
//!
//! Offsets 0..20 (magic, version, kind, init state) are fixed for every future layout
//! version, so any build can tell "not ours", "another version" and "not ready" apart.
//! Everything else is covered by an FNV-1a checksum. The header is input like the rest
//! of the segment: [`parse`] checks every field and never trusts a size or offset that
//! disagrees with the file's real length.

use bytemuck::{Pod, Zeroable};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bytes 0..8 of every shmproc segment.
pub const MAGIC: [u8; 8] = *b"SHMPROC\0";
/// The layout this build writes and reads. Bumped on any change to the header or to
/// the layout of any object kind.
pub const LAYOUT_VERSION: u32 = 3;
/// Size of the header; the payload starts at or after it.
pub const HEADER_SIZE: usize = 1024;
/// Longest element type name stored; longer names are cut at a char boundary.
pub const TYPE_NAME_MAX: usize = 64;
/// Payload offsets are multiples of this (one cache-line pair).
pub const PAYLOAD_ALIGN: usize = 128;
/// Entries in the attach registry.
pub const ATTACH_SLOTS: usize = 64;

/// Byte offset of the init-state word.
pub(crate) const INIT_STATE_OFFSET: usize = 16;
/// Byte offset of the attach registry.
pub(crate) const ATTACH_OFFSET: usize = 256;

/// The init-state word: the creator moves it EMPTY -> INITIALIZING -> READY, and an
/// opener touches nothing else until it reads READY (Acquire, paired with the
/// creator's Release store). Non-zero values are spelled in ASCII so that a stray
/// write is unlikely to forge one.
///
/// | value          | meaning                                              |
/// |----------------|------------------------------------------------------|
/// | 0              | EMPTY: the file was just sized, nothing written yet  |
/// | `"INIT"`       | INITIALIZING: creator pid is valid, header being built |
/// | `"REDY"`       | READY: header and payload complete                   |
/// | `"FAIL"`       | FAILED: the creator gave up; the segment is unusable |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitState {
    /// Nothing written yet.
    Empty,
    /// The creator is writing the header and payload.
    Initializing,
    /// Complete.
    Ready,
    /// The creator gave up.
    Failed,
    /// A value no build of shmproc writes.
    Unknown(u32),
}

pub(crate) const STATE_EMPTY: u32 = 0;
pub(crate) const STATE_INITIALIZING: u32 = u32::from_le_bytes(*b"INIT");
pub(crate) const STATE_READY: u32 = u32::from_le_bytes(*b"REDY");
pub(crate) const STATE_FAILED: u32 = u32::from_le_bytes(*b"FAIL");

impl InitState {
    /// Decodes the init-state word.
    pub fn from_word(word: u32) -> InitState {
        match word {
            STATE_EMPTY => InitState::Empty,
            STATE_INITIALIZING => InitState::Initializing,
            STATE_READY => InitState::Ready,
            STATE_FAILED => InitState::Failed,
            other => InitState::Unknown(other),
        }
    }
}

impl fmt::Display for InitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitState::Empty => f.write_str("empty"),
            InitState::Initializing => f.write_str("initializing"),
            InitState::Ready => f.write_str("ready"),
            InitState::Failed => f.write_str("failed"),
            InitState::Unknown(v) => write!(f, "unknown state {v:#010x}"),
        }
    }
}

/// What kind of object a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A plain segment with a payload the embedder lays out itself.
    Raw = 1,
    /// `Queue`.
    Queue = 2,
    /// `JoinableQueue`.
    JoinableQueue = 3,
    /// `SimpleQueue`.
    SimpleQueue = 4,
    /// `Pipe` (both directions).
    Pipe = 5,
    /// `Value`.
    Value = 6,
    /// `Array`.
    Array = 7,
    /// `Lock`.
    Lock = 8,
    /// `RLock`.
    RLock = 9,
    /// `Semaphore`.
    Semaphore = 10,
    /// `BoundedSemaphore`.
    BoundedSemaphore = 11,
    /// `Event`.
    Event = 12,
    /// `Condition`.
    Condition = 13,
    /// `Barrier`.
    Barrier = 14,
    /// The shared `Dict`.
    Dict = 15,
    /// The shared `List`.
    List = 16,
    /// A `Pool`'s claim table (which task each worker is running).
    Pool = 17,
}

impl ObjectKind {
    const ALL: [ObjectKind; 17] = [
        ObjectKind::Raw,
        ObjectKind::Queue,
        ObjectKind::JoinableQueue,
        ObjectKind::SimpleQueue,
        ObjectKind::Pipe,
        ObjectKind::Value,
        ObjectKind::Array,
        ObjectKind::Lock,
        ObjectKind::RLock,
        ObjectKind::Semaphore,
        ObjectKind::BoundedSemaphore,
        ObjectKind::Event,
        ObjectKind::Condition,
        ObjectKind::Barrier,
        ObjectKind::Dict,
        ObjectKind::List,
        ObjectKind::Pool,
    ];

    /// Decodes a kind word read from a header.
    pub fn from_word(word: u32) -> Option<ObjectKind> {
        ObjectKind::ALL.iter().copied().find(|k| *k as u32 == word)
    }

    /// The kind's name as users write it: `Queue`, `Pipe`, `Lock`, …
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Raw => "Raw",
            ObjectKind::Queue => "Queue",
            ObjectKind::JoinableQueue => "JoinableQueue",
            ObjectKind::SimpleQueue => "SimpleQueue",
            ObjectKind::Pipe => "Pipe",
            ObjectKind::Value => "Value",
            ObjectKind::Array => "Array",
            ObjectKind::Lock => "Lock",
            ObjectKind::RLock => "RLock",
            ObjectKind::Semaphore => "Semaphore",
            ObjectKind::BoundedSemaphore => "BoundedSemaphore",
            ObjectKind::Event => "Event",
            ObjectKind::Condition => "Condition",
            ObjectKind::Barrier => "Barrier",
            ObjectKind::Dict => "Dict",
            ObjectKind::List => "List",
            ObjectKind::Pool => "Pool",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A type name stored inline (at most [`TYPE_NAME_MAX`] bytes of UTF-8), so layouts
/// stay `Copy` and fit the header.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeName {
    bytes: [u8; TYPE_NAME_MAX],
    len: u8,
}

impl TypeName {
    /// Stores `name`, cut at a char boundary to [`TYPE_NAME_MAX`] bytes.
    pub const fn new(name: &str) -> TypeName {
        let src = name.as_bytes();
        let mut len = if src.len() > TYPE_NAME_MAX {
            TYPE_NAME_MAX
        } else {
            src.len()
        };
        // Back up to a char boundary (a UTF-8 continuation byte is 0b10xx_xxxx).
        while len > 0 && len < src.len() && (src[len] & 0xC0) == 0x80 {
            len -= 1;
        }
        let mut bytes = [0u8; TYPE_NAME_MAX];
        let mut i = 0;
        while i < len {
            bytes[i] = src[i];
            i += 1;
        }
        TypeName {
            bytes,
            len: len as u8,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only `new` (from a &str, cut at a char boundary) and `parse` (which checks
        // UTF-8) build a TypeName, so this never fails; fall back to "" regardless.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The element type an object stores: name, size and alignment.
///
/// Names come from [`std::any::type_name`], whose output may change between compiler
/// versions for paths of user types; size and alignment must always match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ElemType {
    /// The type's name, e.g. `u64`.
    pub name: TypeName,
    /// `size_of::<T>()`.
    pub size: u32,
    /// `align_of::<T>()`.
    pub align: u32,
}

impl ElemType {
    /// For objects without an element type (`Lock`, byte `Pipe`s, …).
    pub const NONE: ElemType = ElemType {
        name: TypeName::new(""),
        size: 0,
        align: 1,
    };

    /// The element type `T`.
    pub fn of<T>() -> ElemType {
        ElemType {
            name: TypeName::new(std::any::type_name::<T>()),
            size: size_of::<T>() as u32,
            align: align_of::<T>() as u32,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == ElemType::NONE {
            return f.write_str("no element type");
        }
        let s = if self.size == 1 { "" } else { "s" };
        write!(
            f,
            "{} ({} byte{s}, align {})",
            self.name, self.size, self.align
        )
    }
}

/// The layout fingerprint of an object: what an opener must agree with before it
/// touches the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectLayout {
    /// The kind of object.
    pub kind: ObjectKind,
    /// The element type (or [`ElemType::NONE`]).
    pub elem: ElemType,
    /// Bytes per slot for slotted rings; 0 where not applicable.
    pub slot_size: u32,
    /// Capacity in the object's own unit (items, bytes, parties…); 0 where not
    /// applicable.
    pub capacity: u64,
    /// Bytes of payload after the header.
    pub payload_size: u64,
}

/// The immutable part of the header, as stored at offset 0 (native byte order: a
/// segment never leaves the machine).
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Fields {
    magic: [u8; 8],
    version: u32,
    kind: u32,
    init_state: u32,
    header_size: u32,
    segment_size: u64,
    payload_offset: u64,
    payload_size: u64,
    creator_pid: u32,
    elem_size: u32,
    creator_start_ticks: u64,
    created_unix_ms: u64,
    elem_align: u32,
    slot_size: u32,
    capacity: u64,
    elem_name_len: u32,
    reserved: u32,
    elem_name: [u8; TYPE_NAME_MAX],
    checksum: u64,
}

const FIELDS_SIZE: usize = size_of::<Fields>();
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(Fields, magic) == 0);
    assert!(offset_of!(Fields, version) == 8);
    assert!(offset_of!(Fields, kind) == 12);
    assert!(offset_of!(Fields, init_state) == INIT_STATE_OFFSET);
    assert!(offset_of!(Fields, header_size) == 20);
    assert!(offset_of!(Fields, segment_size) == 24);
    assert!(offset_of!(Fields, payload_offset) == 32);
    assert!(offset_of!(Fields, payload_size) == 40);
    assert!(offset_of!(Fields, creator_pid) == 48);
    assert!(offset_of!(Fields, elem_size) == 52);
    assert!(offset_of!(Fields, creator_start_ticks) == 56);
    assert!(offset_of!(Fields, created_unix_ms) == 64);
    assert!(offset_of!(Fields, elem_align) == 72);
    assert!(offset_of!(Fields, slot_size) == 76);
    assert!(offset_of!(Fields, capacity) == 80);
    assert!(offset_of!(Fields, elem_name_len) == 88);
    assert!(offset_of!(Fields, elem_name) == 96);
    assert!(offset_of!(Fields, checksum) == 160);
    assert!(FIELDS_SIZE == 168);
    assert!(FIELDS_SIZE <= ATTACH_OFFSET);
    assert!(ATTACH_OFFSET + ATTACH_SLOTS * 8 <= HEADER_SIZE);
    assert!(ATTACH_OFFSET % 128 == 0);
    assert!(HEADER_SIZE % PAYLOAD_ALIGN == 0);
};

/// FNV-1a over the fields with the init state and the checksum itself zeroed.
fn checksum(fields: &Fields) -> u64 {
    let mut copy = *fields;
    copy.init_state = 0;
    copy.checksum = 0;
    bytemuck::bytes_of(&copy)
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// A validated copy of a segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The object's layout fingerprint.
    pub layout: ObjectLayout,
    /// Layout version (always [`LAYOUT_VERSION`] once validated).
    pub version: u32,
    /// Total bytes the creator sized the file to.
    pub segment_size: u64,
    /// Where the payload starts.
    pub payload_offset: u64,
    /// Pid of the process that created the segment.
    pub creator_pid: u32,
    /// Its start time in clock ticks since boot (tells a reused pid apart).
    pub creator_start_ticks: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

impl HeaderInfo {
    /// Whether the creator is still running (a zombie or a reused pid counts as dead).
    pub fn creator_alive(&self) -> bool {
        crate::os::proc::is_alive(self.creator_pid, self.creator_start_ticks)
    }
}

/// Why a segment image is not a usable shmproc header.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// Shorter than a header.
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The magic bytes are not shmproc's: some other program's file.
    NotShmproc {
        /// The first bytes found.
        magic: [u8; 8],
    },
    /// Written by a shmproc with another layout version.
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
    },
    /// The creator has not finished (or gave up).
    NotReady {
        /// The init state found.
        state: InitState,
        /// The creator's pid, if the header records it yet.
        creator_pid: u32,
        /// The creator's start time (0 if not recorded yet).
        creator_start_ticks: u64,
    },
    /// The file is shorter than the header says the segment is.
    Truncated {
        /// Size the header claims.
        expected: u64,
        /// Real size of the file.
        found: u64,
    },
    /// A field fails validation.
    Corrupt(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooShort { len } => write!(
                f,
                "file is {len} bytes, shorter than the {HEADER_SIZE}-byte shmproc header"
            ),
            HeaderError::NotShmproc { magic } => write!(
                f,
                "not a shmproc segment (starts with {:?}, expected {:?})",
                String::from_utf8_lossy(magic),
                String::from_utf8_lossy(&MAGIC)
            ),
            HeaderError::UnsupportedVersion { found } => write!(
                f,
                "layout version {found}, but this build of shmproc reads version {LAYOUT_VERSION}"
            ),
            HeaderError::NotReady {
                state, creator_pid, ..
            } => write!(f, "segment is {state} (creator pid {creator_pid})"),
            HeaderError::Truncated { expected, found } => write!(
                f,
                "truncated: the header says {expected} bytes but the file has {found}"
            ),
            HeaderError::Corrupt(why) => write!(f, "corrupt header: {why}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Validates a segment image: the first bytes of a file whose real length is
/// `file_len` (taken from `fstat`, never from the header).
///
/// Pure: reads only `image`, so it is safe on any bytes (and fuzzed as such).
///
/// # Errors
///
/// Every way the bytes can fail to describe a ready, consistent segment of this
/// layout version; see [`HeaderError`].
pub fn parse(image: &[u8], file_len: u64) -> Result<HeaderInfo, HeaderError> {
    let bytes = image
        .get(..HEADER_SIZE)
        .ok_or(HeaderError::TooShort { len: image.len() })?;
    let f: Fields = bytemuck::pod_read_unaligned(&bytes[..FIELDS_SIZE]);
    if f.magic == [0; 8] && f.init_state == STATE_EMPTY {
        return Err(HeaderError::NotReady {
            state: InitState::Empty,
            creator_pid: 0,
            creator_start_ticks: 0,
        });
    }
    if f.magic != MAGIC {
        return Err(HeaderError::NotShmproc { magic: f.magic });
    }
    if f.version != LAYOUT_VERSION {
        return Err(HeaderError::UnsupportedVersion { found: f.version });
    }
    let state = InitState::from_word(f.init_state);
    if state != InitState::Ready {
        return Err(HeaderError::NotReady {
            state,
            creator_pid: f.creator_pid,
            creator_start_ticks: f.creator_start_ticks,
        });
    }
    let corrupt = |why: String| Err(HeaderError::Corrupt(why));
    let sum = checksum(&f);
    if sum != f.checksum {
        return corrupt(format!(
            "checksum {:#018x} does not match the fields ({sum:#018x})",
            f.checksum
        ));
    }
    if f.header_size as usize != HEADER_SIZE {
        return corrupt(format!(
            "header size {} (expected {HEADER_SIZE})",
            f.header_size
        ));
    }
    let Some(kind) = ObjectKind::from_word(f.kind) else {
        return corrupt(format!("unknown object kind {}", f.kind));
    };
    if f.segment_size > file_len {
        return Err(HeaderError::Truncated {
            expected: f.segment_size,
            found: file_len,
        });
    }
    if f.payload_offset < HEADER_SIZE as u64 || f.payload_offset % PAYLOAD_ALIGN as u64 != 0 {
        return corrupt(format!(
            "payload offset {} (must be a multiple of {PAYLOAD_ALIGN}, at least {HEADER_SIZE})",
            f.payload_offset
        ));
    }
    match f.payload_offset.checked_add(f.payload_size) {
        Some(end) if end <= f.segment_size => {}
        _ => {
            return corrupt(format!(
                "payload {}+{} bytes runs past the {}-byte segment",
                f.payload_offset, f.payload_size, f.segment_size
            ));
        }
    }
    if usize::try_from(f.segment_size).is_err() {
        return corrupt(format!(
            "segment size {} does not fit this address space",
            f.segment_size
        ));
    }
    let name_len = f.elem_name_len as usize;
    let Some(name_bytes) = f.elem_name.get(..name_len) else {
        return corrupt(format!(
            "element name length {name_len} (at most {TYPE_NAME_MAX})"
        ));
    };
    let Ok(name) = std::str::from_utf8(name_bytes) else {
        return corrupt("element name is not UTF-8".to_string());
    };
    if !f.elem_align.is_power_of_two() || f.elem_align > 4096 {
        return corrupt(format!(
            "element alignment {} (must be a power of two up to 4096)",
            f.elem_align
        ));
    }
    Ok(HeaderInfo {
        layout: ObjectLayout {
            kind,
            elem: ElemType {
                name: TypeName::new(name),
                size: f.elem_size,
                align: f.elem_align,
            },
            slot_size: f.slot_size,
            capacity: f.capacity,
            payload_size: f.payload_size,
        },
        version: f.version,
        segment_size: f.segment_size,
        payload_offset: f.payload_offset,
        creator_pid: f.creator_pid,
        creator_start_ticks: f.creator_start_ticks,
        created_unix_ms: f.created_unix_ms,
    })
}

/// Where the payload of a segment with this layout starts, and the whole segment's
/// size; `None` if the sizes overflow.
pub(crate) fn segment_extent(layout: &ObjectLayout) -> Option<(u64, u64)> {
    let offset = HEADER_SIZE as u64;
    let size = offset.checked_add(layout.payload_size)?;
    usize::try_from(size).ok()?;
    Some((offset, size))
}

/// Builds the fields a creator writes. `init_state` is left zero: the creator moves
/// the state word itself, atomically.
pub(crate) fn build(
    layout: &ObjectLayout,
    creator: crate::os::proc::ProcessId,
    created_unix_ms: u64,
) -> Option<[u8; FIELDS_SIZE]> {
    let (payload_offset, segment_size) = segment_extent(layout)?;
    let name = layout.elem.name.as_str().as_bytes();
    let mut elem_name = [0u8; TYPE_NAME_MAX];
    elem_name[..name.len()].copy_from_slice(name);
    let mut f = Fields {
        magic: MAGIC,
        version: LAYOUT_VERSION,
        kind: layout.kind as u32,
        init_state: 0,
        header_size: HEADER_SIZE as u32,
        segment_size,
        payload_offset,
        payload_size: layout.payload_size,
        creator_pid: creator.pid,
        elem_size: layout.elem.size,
        creator_start_ticks: creator.start_ticks,
        created_unix_ms,
        elem_align: layout.elem.align,
        slot_size: layout.slot_size,
        capacity: layout.capacity,
        elem_name_len: name.len() as u32,
        reserved: 0,
        elem_name,
        checksum: 0,
    };
    f.checksum = checksum(&f);
    let mut out = [0u8; FIELDS_SIZE];
    out.copy_from_slice(bytemuck::bytes_of(&f));
    Some(out)
}

/// The init-state word of the segment mapped at `base`.
///
/// # Safety
///
/// `base` must point to a live mapping of at least [`HEADER_SIZE`] bytes, aligned to
/// 8, that outlives `'a`.
pub(crate) unsafe fn init_state<'a>(base: *mut u8) -> &'a AtomicU32 {
    // SAFETY: in bounds and 4-aligned by the caller's contract (offset 16 of an
    // 8-aligned mapping); the word is only ever accessed atomically.
    unsafe { AtomicU32::from_ptr(base.add(INIT_STATE_OFFSET).cast()) }
}

/// Entry `i` of the attach registry of the segment mapped at `base`. An entry is 0
/// (free) or `(start_ticks as u32) << 32 | pid` of a process that has the segment open.
///
/// # Safety
///
/// As for [`init_state`], and `i < ATTACH_SLOTS`.
pub(crate) unsafe fn attach_slot<'a>(base: *mut u8, i: usize) -> &'a AtomicU64 {
    debug_assert!(i < ATTACH_SLOTS);
    // SAFETY: offset 256 + 8i < HEADER_SIZE is in bounds and 8-aligned by the
    // caller's contract; registry words are only ever accessed atomically.
    unsafe { AtomicU64::from_ptr(base.add(ATTACH_OFFSET + 8 * i).cast()) }
}

/// Packs a registry entry.
pub(crate) fn attach_entry(pid: u32, start_ticks: u64) -> u64 {
    (start_ticks << 32) | u64::from(pid)
}

/// Unpacks a registry entry into (pid, low 32 bits of start time).
pub(crate) fn attach_unpack(entry: u64) -> (u32, u32) {
    (entry as u32, (entry >> 32) as u32)
}

/// Reads the registry: the pids of processes recorded as having the segment open,
/// with whether each is still alive.
///
/// # Safety
///
/// As for [`init_state`].
pub(crate) unsafe fn attached(base: *mut u8) -> Vec<(u32, bool)> {
    (0..ATTACH_SLOTS)
        .filter_map(|i| {
            // SAFETY: i < ATTACH_SLOTS; the mapping contract is the caller's.
            let entry = unsafe { attach_slot(base, i) }.load(Ordering::Acquire);
            (entry != 0).then(|| {
                let (pid, start) = attach_unpack(entry);
                (pid, crate::os::proc::is_alive_low32(pid, start))
            })
        })
        .collect()
}

/// Builds a ready header image for a layout derived from `seed`, then applies
/// `(offset, byte)` edits to the first 256 bytes and, if `reseal`, recomputes the
/// checksum — so a fuzzer reaches the checks behind the checksum. Not a public API.
#[doc(hidden)]
pub fn fuzz_image(seed: &[u8], reseal: bool) -> Vec<u8> {
    let word = |i: usize| seed.get(i).copied().unwrap_or(0);
    let layout = ObjectLayout {
        kind: ObjectKind::Queue,
        elem: ElemType::of::<u64>(),
        slot_size: u32::from(word(0)),
        capacity: u64::from(word(1)),
        payload_size: u64::from(word(2)) * 8,
    };
    let creator = crate::os::proc::ProcessId {
        pid: 1,
        start_ticks: 1,
    };
    let Some(fields) = build(&layout, creator, 0) else {
        return Vec::new();
    };
    let mut image = vec![0u8; HEADER_SIZE + layout.payload_size as usize];
    image[..FIELDS_SIZE].copy_from_slice(&fields);
    image[INIT_STATE_OFFSET..INIT_STATE_OFFSET + 4].copy_from_slice(&STATE_READY.to_ne_bytes());
    for edit in seed.get(3..).unwrap_or(&[]).chunks_exact(2) {
        image[usize::from(edit[0])] = edit[1];
    }
    if reseal {
        let mut f: Fields = bytemuck::pod_read_unaligned(&image[..FIELDS_SIZE]);
        f.checksum = checksum(&f);
        image[..FIELDS_SIZE].copy_from_slice(bytemuck::bytes_of(&f));
    }
    image
}

/// Reads the attach registry out of a header image (as [`parse`] takes it): the pids
/// recorded as having the segment open, with whether each is still alive. Empty if
/// the image is too short.
pub fn attached_in(image: &[u8]) -> Vec<(u32, bool)> {
    let Some(registry) = image.get(ATTACH_OFFSET..ATTACH_OFFSET + 8 * ATTACH_SLOTS) else {
        return Vec::new();
    };
    registry
        .chunks_exact(8)
        .filter_map(|c| {
            let entry = u64::from_ne_bytes(c.try_into().ok()?);
            (entry != 0).then(|| {
                let (pid, start) = attach_unpack(entry);
                (pid, crate::os::proc::is_alive_low32(pid, start))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::proc::ProcessId;

    fn layout() -> ObjectLayout {
        ObjectLayout {
            kind: ObjectKind::Queue,
            elem: ElemType::of::<u64>(),
            slot_size: 16,
            capacity: 1024,
            payload_size: 16 * 1024 + 512,
        }
    }

    fn image(layout: &ObjectLayout) -> Vec<u8> {
        let fields = build(layout, ProcessId::current(), 1234).unwrap();
        let (_, size) = segment_extent(layout).unwrap();
        let mut img = vec![0u8; size as usize];
        img[..fields.len()].copy_from_slice(&fields);
        img[INIT_STATE_OFFSET..INIT_STATE_OFFSET + 4].copy_from_slice(&STATE_READY.to_ne_bytes());
        img
    }

    #[test]
    fn round_trip() {
        let l = layout();
        let img = image(&l);
        let info = parse(&img, img.len() as u64).unwrap();
        assert_eq!(info.layout, l);
        assert_eq!(info.created_unix_ms, 1234);
        assert_eq!(info.payload_offset, HEADER_SIZE as u64);
        assert!(info.creator_alive());
    }

    #[test]
    fn every_field_is_checked() {
        let l = layout();
        let good = image(&l);
        let len = good.len() as u64;
        assert_eq!(
            parse(&good[..100], len),
            Err(HeaderError::TooShort { len: 100 })
        );
        let mut img = good.clone();
        img[0] = b'X';
        assert!(matches!(
            parse(&img, len),
            Err(HeaderError::NotShmproc { .. })
        ));
        let mut img = good.clone();
        img[8..12].copy_from_slice(&(LAYOUT_VERSION + 1).to_ne_bytes());
        assert_eq!(
            parse(&img, len),
            Err(HeaderError::UnsupportedVersion {
                found: LAYOUT_VERSION + 1
            })
        );
        let mut img = good.clone();
        img[16..20].copy_from_slice(&STATE_INITIALIZING.to_ne_bytes());
        assert!(matches!(
            parse(&img, len),
            Err(HeaderError::NotReady {
                state: InitState::Initializing,
                ..
            })
        ));
        // Any byte of the checksummed fields flipped is caught.
        for at in (20..FIELDS_SIZE).step_by(3) {
            let mut img = good.clone();
            img[at] ^= 0x40;
            assert!(parse(&img, len).is_err(), "flip at {at} went unnoticed");
        }
        assert_eq!(
            parse(&good, len - 1),
            Err(HeaderError::Truncated {
                expected: len,
                found: len - 1
            })
        );
        let zero = vec![0u8; HEADER_SIZE];
        assert!(matches!(
            parse(&zero, HEADER_SIZE as u64),
            Err(HeaderError::NotReady {
                state: InitState::Empty,
                ..
            })
        ));
    }

    #[test]
    fn type_names_are_cut_at_char_boundaries() {
        let long = "é".repeat(40); // 80 bytes
        let t = TypeName::new(&long);
        assert_eq!(t.as_str().len(), 64);
        let odd = format!("a{}", "é".repeat(40)); // boundary falls mid-char at 64
        assert_eq!(TypeName::new(&odd).as_str().len(), 63);
        assert_eq!(ElemType::of::<u64>().to_string(), "u64 (8 bytes, align 8)");
    }
}
