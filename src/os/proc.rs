//! Processes: identity (pid and start time), liveness, fork, wait and signals.

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use std::io;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use super::clock::Deadline;

/// `getpid(2)` as a plain number.
#[inline]
pub(crate) fn current_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// This process's pid, cached: no syscall after the first call. A `pthread_atfork`
/// child handler clears the cache, so a forked child (by `Process` or any other
/// fork) sees its own pid.
///
/// No lock: a `Once` here could be held by another thread at the moment of a fork,
/// and the child would then wait for it forever. Until the handler is registered,
/// the pid is not cached (each call asks the kernel), so a child forked meanwhile
/// never inherits a stale cache.
#[inline]
pub(crate) fn cached_pid() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    cached_pid_slow()
}

/// The pid [`cached_pid`] holds, or 0 if it holds none (not asked yet, the atfork
/// handler not registered, or cleared in a forked child): one load and no syscall,
/// for telling whether something computed from the pid was computed in this
/// process.
#[inline]
pub(crate) fn pid_if_cached() -> u32 {
    PID.load(Ordering::Relaxed)
}

static PID: AtomicU32 = AtomicU32::new(0);
/// 0: atfork handler not registered; 1: being registered; 2: registered.
static ATFORK: AtomicU8 = AtomicU8::new(0);

extern "C" fn clear_pid_in_child() {
    // Async-signal-safe: atomic stores, and thread-local ones (the ring's record
    // cache); every cached identity of the crate is forgotten here.
    PID.store(0, Ordering::Relaxed);
    super::membarrier::forget_in_child();
    crate::ring::forget_in_child();
    crate::object::owner::forget_in_child();
}

/// Whether the atfork child handler is registered (so the pid cache, and what
/// `forget_in_child` hooks into it, is cleared in every forked child).
pub(crate) fn atfork_registered() -> bool {
    ATFORK.load(Ordering::Acquire) == 2
}

#[cold]
fn cached_pid_slow() -> u32 {
    if ATFORK
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: registers a handler that only performs atomic stores and a
        // thread-local one (async-signal-safe); no prepare/parent handlers.
        let r = unsafe { libc::pthread_atfork(None, None, Some(clear_pid_in_child)) };
        // Registration failed (ENOMEM): leave the state at 1, never cache.
        if r == 0 {
            ATFORK.store(2, Ordering::Release);
        }
    }
    let pid = current_pid();
    if ATFORK.load(Ordering::Acquire) == 2 {
        PID.store(pid, Ordering::Relaxed);
    }
    pid
}

/// This thread's id (`gettid(2)`), cached per thread: no syscall after the first
/// call. The cache remembers the pid it was filled in, so the thread of a forked
/// child (which has a new tid but inherits the parent thread's cache) refreshes it.
#[inline]
pub(crate) fn cached_tid() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static TID: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    }
    let pid = cached_pid();
    TID.with(|c| {
        let (cached_for, tid) = c.get();
        if cached_for == pid {
            return tid;
        }
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        c.set((pid, tid));
        tid
    })
}

/// Whether thread `tid` of process `pid` still exists: `tgkill(pid, tid, 0)`, which
/// sends nothing. A thread we may not signal (EPERM) exists.
pub(crate) fn thread_exists(pid: u32, tid: u32) -> bool {
    if pid == 0 || tid == 0 || pid > i32::MAX as u32 || tid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: tgkill with signal 0 only checks that the thread exists and that we
    // may signal it; it reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            pid as libc::c_long,
            tid as libc::c_long,
            0,
        )
    };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A process's identity that survives pid reuse: its pid and its start time in clock
/// ticks since boot (`/proc/PID/stat`, field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pub(crate) pid: u32,
    pub(crate) start_ticks: u64,
}

impl ProcessId {
    /// This process.
    pub(crate) fn current() -> ProcessId {
        let pid = current_pid();
        ProcessId {
            pid,
            start_ticks: read_stat(pid).map(|s| s.start_ticks).unwrap_or(0),
        }
    }
}

/// What `/proc/PID/stat` says about a process.
struct Stat {
    state: u8,
    start_ticks: u64,
}

/// Reads `/proc/PID/stat`: the state letter (field 3) and start time (field 22).
fn read_stat(pid: u32) -> io::Result<Stat> {
    let text = std::fs::read(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))
}

/// Parses the fields after the command name, which may itself hold spaces and
/// parentheses; it ends at the last `)`.
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // Field 3 was the state; field 22 (start time) is 19 further on.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_ticks })
}

/// Whether the process `pid` that started at `start_ticks` is still running.
///
/// A zombie (dead, not yet reaped) counts as dead, and so does a live process that
/// reuses the pid but started at another time. `start_ticks == 0` means "unknown":
/// then only the pid is checked. Without `/proc`, falls back to `kill(pid, 0)`.
///
/// A process found alive by its start time is remembered with a pidfd (up to
/// [`WATCHED_MAX`] of them), so asking again costs one `poll(2)` instead of reading
/// `/proc` (an `openat`, a `statx`, six `read`s and a `close`): a stall check of a
/// Queue asks about its producers each time a wait goes to sleep.
pub(crate) fn is_alive(pid: u32, start_ticks: u64) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    if start_ticks != 0
        && let Some(alive) = watched_alive(pid, start_ticks)
    {
        return alive;
    }
    match read_stat(pid) {
        Ok(stat) => {
            let running = stat.state != b'Z' && stat.state != b'X';
            let alive = running && (start_ticks == 0 || stat.start_ticks == start_ticks);
            if alive && start_ticks != 0 {
                watch(pid, start_ticks);
            }
            alive
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(_) => match Pid::from_raw(pid as i32) {
            // `kill(pid, 0)`: EPERM still means the process exists.
            Some(p) => !matches!(
                rustix::process::test_kill_process(p),
                Err(rustix::io::Errno::SRCH)
            ),
            None => false,
        },
    }
}

/// How many processes [`is_alive`] keeps pidfds for.
const WATCHED_MAX: usize = 64;

/// Processes found alive, by pid and start time, each with a pidfd that says when
/// it exits. Only ever `try_lock`ed: a fork while another thread held the lock leaves
/// it locked in the child, which then reads `/proc` as before, never waits.
static WATCHED: std::sync::Mutex<Vec<(u32, u64, Pidfd)>> = std::sync::Mutex::new(Vec::new());

/// What the kept pidfd of (`pid`, `start_ticks`) says, if there is one (and the
/// list is free): alive unless it has exited, in which case it is dropped.
fn watched_alive(pid: u32, start_ticks: u64) -> Option<bool> {
    let mut w = WATCHED.try_lock().ok()?;
    let i = w.iter().position(|e| e.0 == pid && e.1 == start_ticks)?;
    if w[i].2.exited() {
        w.swap_remove(i);
        return Some(false);
    }
    Some(true)
}

/// Keeps a pidfd for (`pid`, `start_ticks`), just found alive in `/proc`. The start
/// time is read again after the pidfd is opened: if the pid was reused in between,
/// the pidfd names another process and is not kept.
fn watch(pid: u32, start_ticks: u64) {
    let Ok(fd) = Pidfd::open(pid) else {
        return;
    };
    if !read_stat(pid).is_ok_and(|s| s.start_ticks == start_ticks) {
        return;
    }
    let Ok(mut w) = WATCHED.try_lock() else {
        return;
    };
    if w.iter().any(|e| e.0 == pid && e.1 == start_ticks) {
        return;
    }
    if w.len() >= WATCHED_MAX {
        // Drop the exited ones, else the oldest.
        w.retain(|e| !e.2.exited());
        if w.len() >= WATCHED_MAX {
            w.remove(0);
        }
    }
    w.push((pid, start_ticks, fd));
}

/// Like [`is_alive`], comparing only the low 32 bits of the start time (the attach
/// registry packs pid and start time into one 64-bit word).
pub(crate) fn is_alive_low32(pid: u32, start_low32: u32) -> bool {
    is_alive_masked(pid, u64::from(start_low32), u64::from(u32::MAX))
}

/// Like [`is_alive`], comparing only the start-time bits in `mask` (registries pack
/// pid and a truncated start time into one word).
pub(crate) fn is_alive_masked(pid: u32, start: u64, mask: u64) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // One read of /proc answers both questions (running, and started then).
    match read_stat(pid) {
        Ok(stat) => {
            stat.state != b'Z'
                && stat.state != b'X'
                && (start == 0 || stat.start_ticks & mask == start & mask)
        }
        // No /proc entry, or none readable: what `is_alive` falls back to.
        Err(_) => is_alive(pid, 0),
    }
}

/// `fork(2)` through libc, so glibc's atfork handlers run (malloc's locks are reset
/// in the child). Returns 0 in the child and the child's pid in the parent.
///
/// # Safety
///
/// The child has only the calling thread. Until it execs or exits it must not rely on
/// any lock or state another thread of the parent might have held or been changing.
pub(crate) unsafe fn fork() -> io::Result<u32> {
    // SAFETY: fork has no memory-safety preconditions of its own; the caller upholds
    // the single-thread discipline in the child (see this function's contract).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid as u32)
    }
}

/// `_exit(2)`: ends the process at once, without running atexit handlers or flushing
/// stdio buffers (a forked child's copy of the parent's buffers must not be written
/// twice).
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no pointers.
    unsafe { libc::_exit(code) }
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit(code)` (or returned from its closure: code 0; or panicked: 1).
    Exited(i32),
    /// It was ended by signal number `signal` (`SIGTERM` = 15, `SIGKILL` = 9, …).
    Signaled(i32),
}

impl ExitStatus {
    /// Python's `Process.exitcode`: the exit code, or minus the signal number.
    pub fn code(&self) -> i32 {
        match *self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => -s,
        }
    }

    /// Whether the child exited with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }

    fn from_wait(status: WaitStatus) -> Option<ExitStatus> {
        if let Some(code) = status.exit_status() {
            Some(ExitStatus::Exited(code))
        } else {
            status.terminating_signal().map(ExitStatus::Signaled)
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

fn to_pid(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid pid {pid}")))
}

/// `waitpid(pid, WNOHANG)`: the child's status if it has ended, reaping it.
pub(crate) fn try_wait(pid: u32) -> io::Result<Option<ExitStatus>> {
    let opts = WaitOptions::NOHANG;
    match rustix::process::waitpid(Some(to_pid(pid)?), opts)? {
        Some((_, status)) => Ok(ExitStatus::from_wait(status)),
        None => Ok(None),
    }
}

/// `waitpid(pid, 0)`, retried on EINTR: blocks until the child ends and reaps it.
pub(crate) fn wait(pid: u32) -> io::Result<ExitStatus> {
    loop {
        match rustix::process::waitpid(Some(to_pid(pid)?), WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                if let Some(s) = ExitStatus::from_wait(status) {
                    return Ok(s);
                }
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits for the child to end until `deadline`: `poll(2)` on a `pidfd_open(2)`
/// descriptor, which becomes readable when the child exits; where pidfds are missing,
/// polls `waitpid(WNOHANG)` with a growing pause.
pub(crate) fn wait_until(pid: u32, deadline: Deadline) -> io::Result<Option<ExitStatus>> {
    use rustix::event::{PollFd, PollFlags, poll};
    if let Some(s) = try_wait(pid)? {
        return Ok(Some(s));
    }
    match rustix::process::pidfd_open(to_pid(pid)?, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => loop {
            let left = deadline.remaining();
            let ts = rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(s) = try_wait(pid)? {
                return Ok(Some(s));
            }
            if deadline.expired() {
                return Ok(None);
            }
        },
        Err(_) => {
            let mut pause = Duration::from_micros(50);
            loop {
                if let Some(s) = try_wait(pid)? {
                    return Ok(Some(s));
                }
                if deadline.expired() {
                    return Ok(None);
                }
                std::thread::sleep(pause.min(deadline.remaining()));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    }
}

/// A process descriptor: `pidfd_open(2)`. It names one process for as long as it
/// is held (pid reuse cannot fool it) and polls readable once that process has exited,
/// reaped or not.
///
/// See [pidfd_open(2)](https://man7.org/linux/man-pages/man2/pidfd_open.2.html).
#[derive(Debug)]
pub(crate) struct Pidfd(rustix::fd::OwnedFd);

impl Pidfd {
    /// `pidfd_open(pid, 0)`: ESRCH if no such process (or only a reaped one), ENOSYS
    /// before Linux 5.3.
    pub(crate) fn open(pid: u32) -> io::Result<Pidfd> {
        let fd = rustix::process::pidfd_open(to_pid(pid)?, rustix::process::PidfdFlags::empty())?;
        Ok(Pidfd(fd))
    }

    /// `poll(2)` until the process exits (or a signal interrupts the wait).
    pub(crate) fn wait_readable(&self) -> io::Result<()> {
        use rustix::event::{PollFd, PollFlags, poll};
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        poll(&mut fds, None)?;
        Ok(())
    }

    /// Whether the process has exited (a zombie counts): `poll(2)` with a zero
    /// timeout. A failing poll answers "not exited".
    pub(crate) fn exited(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, poll};
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }
}

/// `pidfd_open(pid, 0)` as a plain descriptor (to send to another process).
pub(crate) fn pidfd(pid: u32) -> io::Result<rustix::fd::OwnedFd> {
    Ok(rustix::process::pidfd_open(
        to_pid(pid)?,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// `pidfd_send_signal(pidfd, sig)`: signals the very process the descriptor names;
/// Ok if it has already ended (ESRCH).
pub(crate) fn pidfd_signal(pidfd: rustix::fd::BorrowedFd<'_>, sig: Signal) -> io::Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An `eventfd(2)` that ends a [`wait_exits`] running in another thread.
///
/// See [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html).
#[derive(Debug)]
pub(crate) struct WakeFd(rustix::fd::OwnedFd);

impl WakeFd {
    /// `eventfd(0, EFD_CLOEXEC)`.
    pub(crate) fn new() -> io::Result<WakeFd> {
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        Ok(WakeFd(fd))
    }

    /// `write(2)` of 1: makes the descriptor readable.
    pub(crate) fn wake(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

/// `poll(2)` on `pidfds` and `wake` until one is readable (a process exited, or
/// [`WakeFd::wake`] was called); retried on EINTR.
pub(crate) fn wait_exits(pidfds: &[Pidfd], wake: &WakeFd) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds: Vec<PollFd<'_>> = pidfds
        .iter()
        .map(|p| PollFd::new(&p.0, PollFlags::IN))
        .chain(std::iter::once(PollFd::new(&wake.0, PollFlags::IN)))
        .collect();
    loop {
        match poll(&mut fds, None) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills this process when the thread
/// that forked it ends (with its process, or on its own).
///
/// See [PR_SET_PDEATHSIG(2const)](https://man7.org/linux/man-pages/man2/PR_SET_PDEATHSIG.2const.html).
pub(crate) fn die_with_parent() -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(Into::into)
}

/// `getppid(2)`: the parent's pid, 0 if it has none in this pid namespace.
pub(crate) fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}

/// `kill(pid, sig)`.
pub(crate) fn signal(pid: u32, sig: Signal) -> io::Result<()> {
    rustix::process::kill_process(to_pid(pid)?, sig).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = b"1234 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.state, b'S');
        assert_eq!(stat.start_ticks, 987654);
        assert!(parse_stat(b"garbage").is_none());
        assert!(parse_stat(b"1 (x) S 1 2").is_none());
    }

    #[test]
    fn this_process_is_alive_and_pid_reuse_is_detected() {
        let me = ProcessId::current();
        assert!(me.start_ticks > 0);
        assert!(is_alive(me.pid, me.start_ticks));
        assert!(!is_alive(me.pid, me.start_ticks + 1));
        assert!(is_alive_low32(me.pid, me.start_ticks as u32));
        assert!(!is_alive_low32(me.pid, me.start_ticks as u32 ^ 1));
        assert!(!is_alive_low32(0, 0));
        assert!(!is_alive_masked(u32::MAX, 0, u64::MAX));
        assert!(!is_alive(0, 0));
        assert!(!is_alive(u32::MAX, 0));
    }

    #[test]
    fn a_zombie_is_dead_to_the_masked_check_too() {
        let mut child = crate::Process::spawn(|| {}).unwrap();
        let pid = child.pid();
        let start = loop {
            // Not yet reaped: the child stays a zombie until `join`.
            match read_stat(pid) {
                Ok(s) if s.state == b'Z' => break s.start_ticks,
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(e) => panic!("the unreaped child's /proc entry: {e}"),
            }
        };
        assert!(!is_alive_low32(pid, start as u32));
        assert!(!is_alive_masked(pid, 0, 0));
        assert!(child.join().unwrap().success());
    }

    fn watched(pid: u32) -> bool {
        WATCHED.lock().unwrap().iter().any(|e| e.0 == pid)
    }

    #[test]
    fn a_process_found_alive_is_watched_by_pidfd_until_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = read_stat(pid).unwrap().start_ticks;
        assert!(
            !is_alive(pid, start + 1),
            "another start time is another process"
        );
        assert!(!watched(pid));
        assert!(is_alive(pid, start));
        assert!(watched(pid), "found alive: kept with a pidfd");
        assert!(is_alive(pid, start), "answered by the pidfd");
        child.kill().unwrap();
        // A zombie counts as dead, reaped or not.
        while watched(pid) && is_alive(pid, start) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!is_alive(pid, start));
        assert!(!watched(pid), "an exited process is dropped");
        child.wait().unwrap();
        assert!(!is_alive(pid, start));
    }
}
