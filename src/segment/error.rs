//! Why a segment could not be created, opened or removed.

use crate::layout::header::{HeaderError, InitState, ObjectKind};
use std::fmt;
use std::io;
use std::time::Duration;

use super::backing::Backing;
use super::name::{NameError, Shown};

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
