//! What the machine can back: free space in `/dev/shm` (`statvfs(3)`) and available
//! memory (`/proc/meminfo`), read before a segment is sized so an absurd request is
//! an error instead of a machine-wide out-of-memory kill.
//!
//! Shared memory is not charged to the process that created it when the kernel's OOM
//! killer picks a victim, so a segment larger than what the machine can back gets
//! *other* processes killed. Every size is checked here first.

use std::io;

/// `statvfs(path)`: bytes an unprivileged writer may still allocate on the filesystem
/// holding `path` (`f_bavail × f_frsize`).
pub(crate) fn free_bytes(path: &str) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Bytes of memory that can back new shared memory without pushing the kernel into
/// reclaim it cannot finish: `MemAvailable + SwapFree` from `/proc/meminfo` (shared
/// memory pages can be swapped out, so free swap backs them too).
pub(crate) fn available_bytes() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    parse_meminfo(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/meminfo has no MemAvailable line",
        )
    })
}

/// `MemAvailable + SwapFree` in bytes, from the text of `/proc/meminfo` (lines like
/// `MemAvailable:   23456789 kB`). `None` without a MemAvailable line.
fn parse_meminfo(text: &str) -> Option<u64> {
    let field = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let kib: u64 = line[key.len()..]
            .trim_start_matches(':')
            .split_ascii_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib.saturating_mul(1024))
    };
    let available = field("MemAvailable")?;
    Some(available.saturating_add(field("SwapFree").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_sums_available_and_free_swap() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2000 kB\nSwapFree:  1000 kB\n";
        assert_eq!(parse_meminfo(text), Some(3000 * 1024));
        assert_eq!(parse_meminfo("MemAvailable: 7 kB\n"), Some(7 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 7 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn this_machine_reports_something() {
        assert!(available_bytes().unwrap() > 0);
        // /dev/shm exists on every Linux this crate runs on.
        let _ = free_bytes("/dev/shm").unwrap();
    }
}
