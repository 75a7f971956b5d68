//! Who holds a named segment: one `/proc` scan, and the verdict on an empty file
//! nobody holds.

use crate::os::holders::Holders;
use crate::os::proc::{self};
use crate::os::shm::{self};
use rustix::fd::OwnedFd;
use std::io;
use std::time::Duration;

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
pub(super) const EMPTY_RESCAN: Duration = Duration::from_millis(100);

/// Whether the empty file `name` (open as `fd`) is abandoned: no process holds it but
/// through this one's single descriptor (the opener's own), and every process of the
/// file's owner — whoever created it — could be looked into.
pub(super) fn abandoned(name: &str, fd: &OwnedFd) -> bool {
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
