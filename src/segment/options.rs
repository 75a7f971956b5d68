//! Options for creating and opening named segments.

use std::time::Duration;

/// Options for creating a named segment.
#[derive(Clone, Copy, Debug)]
pub struct CreateOptions {
    pub(super) mode: u32,
    /// Bytes of the file to reserve (`fallocate`) at creation; `None`: all of it. A
    /// sparse object (a `Dict`) reserves its fixed part only and the rest as it grows
    /// ([`Segment::reserve_range`]).
    pub(super) reserve: Option<u64>,
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
    pub(super) timeout: Duration,
    pub(super) read_only: bool,
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
