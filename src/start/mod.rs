//! Start methods: how a [`Process`](crate::Process) comes to exist — Python's `fork`,
//! `spawn` and `forkserver`.
//!
//! | method | how | cost to start (2-core VM) | safe with other threads in the parent |
//! |---|---|---|---|
//! | [`Fork`](StartMethod::Fork) | `fork` of the caller | lowest | no: locks other threads held stay held in the child |
//! | [`Spawn`](StartMethod::Spawn) | re-executes the program | highest: a new process image | yes |
//! | [`Forkserver`](StartMethod::Forkserver) | a single-threaded server forks it | between: one fork of a small process, plus a request | yes |
//!
//! `shmproc bench start` measures the three side by side with Python's.
//!
//! **Fork** is the default and the fastest, and the child inherits everything: any
//! closure, every object, without encoding. Use it in programs that have no other
//! threads when children start (or whose threads hold no lock the child will touch).
//!
//! **Spawn** runs `/proc/self/exe` again. The new process calls [`init`] at the top of
//! its `main`, which recognizes it as a child, reads its start request and runs the
//! requested function; `main`'s own code never runs in it. Nothing of the parent's
//! memory comes along — no held lock, no half-updated allocator — so it is the safe
//! method for any multithreaded program (a tokio runtime, a logger thread, a thread
//! pool). Arguments travel as [`Portable`] values: numbers, strings, vectors, tuples,
//! serde values (feature `serde`, [`Serde`]), and every shmproc object as a handle.
//!
//! **Forkserver** starts one server process on first use (or at
//! [`start_forkserver`], which a program calls early, before its threads exist), by
//! spawn; the server is single-threaded and holds nothing of the program's state, so
//! forking *it* is safe. Each child is a fork of the server: no exec, no dynamic
//! loading, so it starts much sooner than a spawned one, and it gets its arguments
//! the same way. The request channel is a socketpair: it has no name in the file
//! system and no address, so only the program's own processes, which hold its
//! descriptor, can ask the server for anything (Python's forkserver listens on a
//! named socket and so needs its HMAC handshake). The server's children outlive
//! the thread that asked for them; the server exits once every process of the
//! program has closed the channel and its last child has ended.
//!
//! For both, the parent keeps its handles to the arguments until the child says it
//! holds its own (the child is then a registered holder of a pipe end, so the peer
//! never sees a false EOF); a child that cannot decode or open what it was sent
//! refuses, and [`Process::start`](crate::Process::start) returns the reason.
//!
//! # The `init` call
//!
//! A program that uses `Spawn` or `Forkserver` must call [`init`] first thing in
//! `main` (as `procspawn::init()`): before it parses arguments, starts threads or
//! prints anything. With an async runtime, call it in a plain `main` before building
//! the runtime (not inside `#[tokio::main]`, whose runtime exists by then). In a normal run it returns at once. A spawned process whose `main`
//! does not call it would run the program again instead of the child function; the
//! parent sees no answer within [`READY_TIMEOUT`], kills it and returns
//! [`StartError::NotReady`].
//!
//! The function a spawned child runs is an `fn(A) -> R` (a fn item or a non-capturing
//! closure): its code is in the executable, so the child finds it at the same offset
//! in its own copy. A capturing closure does not coerce to `fn`, so it is a compile
//! error, not a runtime surprise; its state goes in `A`.
//!
//! # Examples
//!
//! ```no_run
//! use shmproc::{Process, Queue};
//! use shmproc::start::StartMethod;
//!
//! fn worker((queue, n): (Queue<u64>, u64)) {
//!     for i in 0..n {
//!         queue.put(i).unwrap();
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     shmproc::start::init();
//!     let queue = Queue::<u64>::new(64)?;
//!     let mut child = Process::start(StartMethod::Spawn, worker, (queue.clone(), 10))?;
//!     let sum: u64 = (0..10).map(|_| queue.get().unwrap()).sum();
//!     assert_eq!(sum, 45);
//!     assert_eq!(child.join()?.code(), 0);
//!     Ok(())
//! }
//! ```

mod forkserver;
mod portable;
mod request;
mod spawn;

#[cfg(feature = "serde")]
pub use portable::Serde;
pub use portable::{Decoder, Encoder, HandoffError, Portable};

pub(crate) use forkserver::{Served, request as forkserver_request};
pub(crate) use request::{build, code_address, code_offset, in_executable};
pub(crate) use spawn::spawn;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How a child process is started (Python's `start_method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StartMethod {
    /// `fork` of the calling process: the fastest; unsafe with other threads holding
    /// locks (see [`Process`](crate::Process), the fork caveat).
    #[default]
    Fork,
    /// Re-executes the program; the child runs a function by [`init`].
    Spawn,
    /// A single-threaded server process forks the child.
    Forkserver,
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
        })
    }
}

/// How long a parent waits for a spawned child (or a new forkserver) to answer its
/// start request before it kills it.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Set once [`init`] ran in this process.
static INIT_RAN: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main` in every program that starts children with
/// [`Spawn`](StartMethod::Spawn) or [`Forkserver`](StartMethod::Forkserver).
///
/// In the program's own run it returns at once. In a process started as a spawned
/// child it runs the requested function and exits with its code; in the forkserver
/// it serves requests until the program is gone. Neither returns to `main`.
pub fn init() {
    INIT_RAN.store(true, Ordering::Relaxed);
    match std::env::var_os(request::ENV) {
        None => {}
        Some(mode) if mode == "spawn" => spawn::run_child(),
        Some(mode) if mode == "forkserver" => forkserver::serve(),
        Some(mode) => {
            eprintln!(
                "shmproc: {}={mode:?} is not a start mode (spawn, forkserver); running main",
                request::ENV
            );
        }
    }
}

/// Starts the forkserver now, if it is not running (Python's
/// `multiprocessing.forkserver.ensure_running`). Call it early in `main`, right after
/// [`init`] and before other threads exist, so the server is a copy of nothing but a
/// fresh process; otherwise the first [`Forkserver`](StartMethod::Forkserver) start
/// does it.
///
/// # Errors
///
/// As for [`Process::start`](crate::Process::start).
pub fn start_forkserver() -> Result<(), StartError> {
    forkserver::ensure().map(|_| ())
}

/// The pid of the forkserver this program started, if it is running.
pub fn forkserver_pid() -> Option<u32> {
    forkserver::running_pid()
}

/// Refuses to start a child from a process that was started as one but whose `main`
/// skipped [`init`]: it would start copies of itself without end.
fn check_not_nested() -> Result<(), StartError> {
    if !INIT_RAN.load(Ordering::Relaxed) && std::env::var_os(request::ENV).is_some() {
        return Err(StartError::NotReady(format!(
            "this process was started as a shmproc child ({} is set) but its main did \
             not call shmproc::start::init()",
            request::ENV
        )));
    }
    Ok(())
}

/// Why a child could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A system call failed (`fork`, `exec`, a socket): what was being done and why.
    Io(io::Error),
    /// The arguments could not be encoded, or the child could not decode them or
    /// open a handed-over object (the child's reason).
    Handoff(HandoffError),
    /// The child refused the request: its reason.
    Refused(String),
    /// The encoded arguments are larger than one start request carries; pass large
    /// data in a shmproc object (an `Array`, a `Queue`) instead.
    ArgsTooLarge {
        /// Bytes the arguments encode to.
        bytes: usize,
        /// Most bytes of arguments a request carries.
        max: usize,
    },
    /// The function is not in the executable's own code (it is in a shared library),
    /// so a re-executed child cannot find it.
    NotInExecutable {
        /// Which function.
        what: &'static str,
        /// Its address in this process.
        addr: usize,
    },
    /// The child never answered: it exited or did not call [`init`] in time.
    NotReady(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Io(e) => write!(f, "starting a child: {e}"),
            StartError::Handoff(e) => write!(f, "handing arguments to a child: {e}"),
            StartError::Refused(why) => write!(f, "the child refused its start request: {why}"),
            StartError::ArgsTooLarge { bytes, max } => write!(
                f,
                "the arguments encode to {bytes} bytes, more than the {max} a start request \
                 carries; pass large data in a shmproc object"
            ),
            StartError::NotInExecutable { what, addr } => write!(
                f,
                "{what} (at {addr:#x}) is not in the executable's code, so a spawned child \
                 cannot find it"
            ),
            StartError::NotReady(why) => write!(f, "the child did not start: {why}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Io(e) => Some(e),
            StartError::Handoff(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> StartError {
        StartError::Io(e)
    }
}

impl From<StartError> for io::Error {
    fn from(e: StartError) -> io::Error {
        match e {
            StartError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

/// Reply messages on a start socket: the child is ready, refused, its pid (with a
/// pidfd attached), its exit status.
pub(crate) mod reply {
    pub(crate) const READY: u8 = b'R';
    pub(crate) const REFUSED: u8 = b'F';
    pub(crate) const PID: u8 = b'P';
    pub(crate) const STATUS: u8 = b'S';
    pub(crate) const HELLO: u8 = b'H';
}

/// Sends the child's answer on `sock`: ready, or refused with the reason.
pub(crate) fn send_ready(sock: rustix::fd::BorrowedFd<'_>, r: Result<(), String>) {
    let msg = match r {
        Ok(()) => vec![reply::READY],
        Err(why) => {
            let mut m = vec![reply::REFUSED];
            m.extend_from_slice(why.as_bytes());
            m
        }
    };
    // The parent may have gone; the child's exit code still tells.
    let _ = crate::os::socket::send(sock, &msg, &[]);
}

/// Ends a spawned or forkserver child with `code`, as a forked one ends: its stdout
/// flushed, its pipe ends released (peers see EOF now), no destructors of statics.
fn exit_child(code: i32) -> ! {
    use std::io::Write;
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    crate::pipe::before_child_exit();
    crate::os::proc::exit_immediately(code)
}
