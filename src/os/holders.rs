//! Who has a file in `/dev/shm` open or mapped: a scan of every process's
//! `/proc/PID/fd` links and `/proc/PID/maps` lines.
//!
//! This is how a file with no header (its creator died before writing one) can still be
//! judged: a creator always holds the descriptor `shm_open` gave it until the header is
//! written, so an empty file that no process holds is abandoned.
//!
//! Limits: processes in other pid namespaces are invisible, and a process whose
//! `/proc/PID/fd` this user may not read (another user's, without privileges) is
//! listed by owner in [`Holders::hidden_owned_by`] rather than looked into. A creator
//! owns the file it creates, so for an abandonment verdict only hidden processes of the
//! file's owner matter.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;

use super::shm::SHM_DIR;

/// The result of one scan: for each name in `/dev/shm`, the processes that hold it.
#[derive(Debug, Default)]
pub(crate) struct Holders {
    /// Name → (pid, how many descriptors and mappings of it that process has).
    by_name: HashMap<String, Vec<(u32, u32)>>,
    /// Owners (uids) of the processes whose descriptors could not be read
    /// (permission denied), one entry per process.
    hidden: Vec<u32>,
}

impl Holders {
    /// `readdir(/proc)`, then for each process `readlink(/proc/PID/fd/*)` and a read of
    /// `/proc/PID/maps`.
    ///
    /// # Errors
    ///
    /// Only if `/proc` itself cannot be listed; processes that exit during the scan
    /// are skipped.
    pub(crate) fn scan() -> io::Result<Holders> {
        let mut holders = Holders::default();
        let prefix = format!("{SHM_DIR}/");
        for entry in std::fs::read_dir("/proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = entry.path();
            match std::fs::read_dir(dir.join("fd")) {
                Ok(fds) => {
                    for fd in fds.flatten() {
                        if let Ok(target) = std::fs::read_link(fd.path()) {
                            if let Some(name) =
                                target.to_str().and_then(|t| t.strip_prefix(&prefix))
                            {
                                holders.add(name, pid);
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    if let Ok(meta) = entry.metadata() {
                        holders.hidden.push(meta.uid());
                    }
                    continue;
                }
                Err(_) => continue, // exited meanwhile
            }
            if let Ok(maps) = std::fs::read_to_string(dir.join("maps")) {
                for name in maps.lines().filter_map(|l| mapped_name(l, &prefix)) {
                    holders.add(name, pid);
                }
            }
        }
        Ok(holders)
    }

    fn add(&mut self, name: &str, pid: u32) {
        let name = name.strip_suffix(" (deleted)").unwrap_or(name);
        let list = self.by_name.entry(name.to_string()).or_default();
        match list.iter_mut().find(|(p, _)| *p == pid) {
            Some((_, n)) => *n += 1,
            None => list.push((pid, 1)),
        }
    }

    /// Processes holding `name`, each with its count of descriptors and mappings.
    pub(crate) fn of(&self, name: &str) -> &[(u32, u32)] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// How many processes owned by `uid` could not be looked into.
    pub(crate) fn hidden_owned_by(&self, uid: u32) -> usize {
        self.hidden.iter().filter(|&&u| u == uid).count()
    }
}

/// The `/dev/shm` name a `/proc/PID/maps` line maps, if any. The path is the sixth
/// field and may itself hold spaces, so it is everything from the prefix on.
fn mapped_name<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let at = line.find(prefix)?;
    Some(&line[at + prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_name_their_file() {
        let p = "/dev/shm/";
        let line = "7f00-7f01 rw-s 00000000 00:1a 123   /dev/shm/jobs queue";
        assert_eq!(mapped_name(line, p), Some("jobs queue"));
        assert_eq!(
            mapped_name("7f00-7f01 r-xp 0 00:00 0  /usr/lib/x.so", p),
            None
        );
        let mut h = Holders::default();
        h.add("a (deleted)", 7);
        h.add("a", 7);
        h.add("a", 8);
        assert_eq!(h.of("a"), &[(7, 2), (8, 1)]);
        assert!(h.of("b").is_empty());
    }
}
