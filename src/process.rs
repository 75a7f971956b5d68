//! Child processes, started with `fork` (the default, Python's on Linux before 3.14) or
//! with the `spawn` and `forkserver` methods of [`crate::start`].

use crate::os::clock::Deadline;
use crate::os::proc;
pub use crate::os::proc::ExitStatus;
use crate::pipe::{Sentinel, Waitable};
use crate::start::{Portable, StartError, StartMethod};
use rustix::fd::AsFd;
use rustix::process::Signal;
use std::io::{self, Write};
use std::time::Duration;

/// Whether the process `pid` that started at `start_ticks` (clock ticks since boot, as
/// recorded in segment headers; 0 if unknown) is running. A zombie, or another
/// process that reuses the pid, counts as dead.
pub fn is_alive(pid: u32, start_ticks: u64) -> bool {
    proc::is_alive(pid, start_ticks)
}

/// What a child's closure may return; it decides the exit code.
pub trait ChildResult {
    /// The exit code for this result (reporting an error on stderr first).
    fn exit_code(self) -> i32;
}

impl ChildResult for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl ChildResult for i32 {
    fn exit_code(self) -> i32 {
        self
    }
}

impl<E: std::fmt::Display> ChildResult for Result<(), E> {
    fn exit_code(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(
                    io::stderr(),
                    "shmproc child {}: error: {e}",
                    std::process::id()
                );
                1
            }
        }
    }
}

/// A child process running a closure, like Python's `multiprocessing.Process` with
/// the `fork` start method.
///
/// The child starts as a copy of the parent: it sees every object the closure
/// captures, including shmproc objects, whose shared memory it then shares with the
/// parent. It runs the closure and exits with code 0 when the closure returns `()`
/// (or `Ok(())`), the returned code for an `i32`, 1 for an `Err` (printed on stderr)
/// and 1 for a panic — like Python's `exitcode` for an uncaught exception. The child
/// exits with `_exit`: no destructors of the parent's state, no atexit handlers; its
/// own stdout is flushed.
///
/// # The fork caveat
///
/// Only the calling thread exists in the child. Locks that another thread of the
/// parent held at the moment of `fork` (inside the allocator, stdout, a `Mutex` of
/// yours) stay held forever in the child, so a child that touches them deadlocks.
/// glibc resets its own malloc locks, so allocation is fine. Keep the child's work to
/// the objects it was handed, or start children before starting threads. The parent's
/// stdout is flushed before forking so buffered output is not printed twice.
///
/// Dropping a `Process` neither waits for nor kills the child (like
/// `std::process::Child`); call [`join`](Process::join).
///
/// # Examples
///
/// ```
/// use shmproc::Process;
/// # fn main() -> std::io::Result<()> {
/// let mut child = Process::spawn(|| {
///     println!("hello from pid {}", std::process::id());
/// })?;
/// let status = child.join()?;
/// assert_eq!(status.code(), 0);
/// let mut failing = Process::spawn(|| panic!("boom"))?;
/// assert_eq!(failing.join()?.code(), 1);
/// let mut coded = Process::spawn_returning(|| 7)?;
/// assert_eq!(coded.join()?.code(), 7);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Process {
    pid: u32,
    /// Set once the child has been reaped; from then on the pid may belong to
    /// another process and is never signalled again.
    status: Option<ExitStatus>,
    /// For a child of the forkserver (not this process's own child): where its exit
    /// status arrives, and its pidfd.
    served: Option<crate::start::Served>,
}

impl Process {
    /// Forks a child that runs `f` and exits with code 0 (1 if `f` panics).
    ///
    /// # Errors
    ///
    /// The `fork` error (EAGAIN: process limit, ENOMEM).
    pub fn spawn(f: impl FnOnce()) -> io::Result<Process> {
        Process::spawn_returning(f)
    }

    /// Forks a child that runs `f` and exits with the code its result gives: an `i32`
    /// as is, `Ok(())` as 0, `Err(e)` as 1 after printing `e` on stderr.
    ///
    /// # Errors
    ///
    /// The `fork` error (EAGAIN: process limit, ENOMEM).
    pub fn spawn_returning<F, R>(f: F) -> io::Result<Process>
    where
        F: FnOnce() -> R,
        R: ChildResult,
    {
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        // The child will hold copies of every pipe end alive here: record it as a
        // holder before forking, so no peer sees EOF before the child runs.
        let claims = crate::pipe::before_fork();
        // SAFETY: the child runs only `f` and then `_exit`s; the fork caveat (locks
        // held by other threads) is documented on `Process` for the caller.
        let pid = match unsafe { proc::fork() } {
            Ok(pid) => pid,
            Err(e) => {
                claims.in_parent(None);
                return Err(e);
            }
        };
        if pid == 0 {
            claims.in_child();
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f().exit_code()))
                .unwrap_or(1);
            let _ = io::stdout().flush();
            // Free this child's holds on pipe ends, so peers see EOF (or a broken
            // pipe) now rather than at their next liveness check.
            crate::pipe::before_child_exit();
            proc::exit_immediately(code);
        }
        claims.in_parent(Some(pid));
        Ok(Process {
            pid,
            status: None,
            served: None,
        })
    }

    /// Starts a child with `method` that runs `f(args)` and exits with the code its
    /// result gives (as [`spawn_returning`](Process::spawn_returning)); a panic exits
    /// with 1, its message on the child's stderr.
    ///
    /// With [`Fork`](StartMethod::Fork) the child is forked and `args` moves into it.
    /// With [`Spawn`](StartMethod::Spawn) and [`Forkserver`](StartMethod::Forkserver)
    /// `args` is encoded (every shmproc object as a handle, see
    /// [`Portable`]), and the call returns once the child has decoded it and holds
    /// its own handles; the parent's are dropped then. Those two need
    /// [`start::init`](crate::start::init) at the top of `main`. `f` must be a fn
    /// item or a closure that captures nothing: a spawned child finds it in its own
    /// copy of the executable.
    ///
    /// # Errors
    ///
    /// [`StartError`]: the fork or exec error; arguments that cannot travel or that
    /// the child refused (with its reason); a child that never answered.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::{Process, Value};
    /// use shmproc::start::StartMethod;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let total = Value::new(0u64)?;
    /// let mut child = Process::start(StartMethod::Fork, |(v, n): (Value<u64>, u64)| {
    ///     v.set(n * 2).unwrap();
    /// }, (total.clone(), 21))?;
    /// child.join()?;
    /// assert_eq!(total.get()?, 42);
    /// # Ok(()) }
    /// ```
    pub fn start<A, R>(method: StartMethod, f: fn(A) -> R, args: A) -> Result<Process, StartError>
    where
        A: Portable,
        R: ChildResult,
    {
        match method {
            StartMethod::Fork => Ok(Process::spawn_returning(move || f(args))?),
            StartMethod::Spawn => {
                let req = crate::start::build(f, &args)?;
                let pid = crate::start::spawn(&req)?;
                drop(args);
                Ok(Process {
                    pid,
                    status: None,
                    served: None,
                })
            }
            StartMethod::Forkserver => {
                let req = crate::start::build(f, &args)?;
                let (pid, served) = crate::start::forkserver_request(&req)?;
                drop(args);
                Ok(Process {
                    pid,
                    status: None,
                    served: Some(served),
                })
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What [`pipe::wait_any`](crate::pipe::wait_any) watches for this child's end
    /// (Python's `Process.sentinel`): its pid, or nothing once it was reaped (it has
    /// ended: ready).
    pub fn sentinel(&self) -> Sentinel {
        Sentinel::new(match self.status {
            Some(_) => None,
            None => Some(self.pid),
        })
    }

    /// Waits for the child to end and returns how it ended (at once if it already
    /// has).
    ///
    /// # Errors
    ///
    /// `waitpid` errors (ECHILD if something else reaped the child).
    pub fn join(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = match &self.served {
            None => proc::wait(self.pid)?,
            Some(served) => served
                .wait(None)?
                .ok_or_else(|| io::Error::other("no status"))?,
        };
        self.status = Some(s);
        Ok(s)
    }

    /// Waits up to `timeout` for the child to end; `None` if it is still running.
    ///
    /// # Errors
    ///
    /// As for [`join`](Process::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let s = match &self.served {
            None => proc::wait_until(self.pid, Deadline::after(timeout))?,
            Some(served) => served.wait(Some(timeout))?,
        };
        self.status = s;
        Ok(s)
    }

    /// Whether the child is still running (reaps it if it has ended).
    pub fn is_alive(&mut self) -> bool {
        self.poll_status().is_none()
    }

    /// Python's `exitcode`: `None` while running, the exit code once ended, or minus
    /// the signal number if a signal ended it.
    pub fn exitcode(&mut self) -> Option<i32> {
        self.poll_status().map(|s| s.code())
    }

    fn poll_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = match &self.served {
                None => proc::try_wait(self.pid).ok().flatten(),
                Some(served) => served.wait(Some(Duration::ZERO)).ok().flatten(),
            };
        }
        self.status
    }

    /// Sends SIGTERM (Python's `terminate`). Does nothing once the child was reaped.
    ///
    /// # Errors
    ///
    /// The `kill` error.
    pub fn terminate(&self) -> io::Result<()> {
        self.signal(Signal::TERM)
    }

    /// Sends SIGKILL (Python's `kill`). Does nothing once the child was reaped.
    ///
    /// # Errors
    ///
    /// The `kill` error.
    pub fn kill(&self) -> io::Result<()> {
        self.signal(Signal::KILL)
    }

    fn signal(&self, sig: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        match &self.served {
            // Not reaped yet, so the pid is still this child's (alive or zombie).
            None => proc::signal(self.pid, sig),
            // Not our child: the pidfd names it whoever reaped it.
            Some(served) => proc::pidfd_signal(served.pidfd.as_fd(), sig),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Reap a child that already ended, so it does not linger as a zombie.
        let _ = self.poll_status();
    }
}

impl<'a> From<&'a Process> for Waitable<'a> {
    fn from(p: &'a Process) -> Waitable<'a> {
        Waitable::Process(p.sentinel())
    }
}
