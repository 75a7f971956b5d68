//! The spawn start method: the parent re-executes its program with the request
//! socket as the child's standard input; [`init`](super::init) in the child reads the
//! request and runs it.

use super::request::{self, ENV, MAX_REQUEST, REFUSED_CODE, Request};
use super::{READY_TIMEOUT, StartError, reply, send_ready};
use crate::os::{proc, socket};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Starts the program again in `mode` (`spawn` or `forkserver`) with the socket that
/// is returned connected to its standard input; the new process's pid.
pub(super) fn exec_self(mode: &str) -> Result<(OwnedFd, u32), StartError> {
    super::check_not_nested()?;
    let (ours, theirs) = socket::pair()?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "shmproc-child".into());
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // std's Command starts the child with posix_spawn or fork+exec that runs only
    // async-signal-safe code before the exec: safe in a multithreaded parent.
    let child = Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(ENV, mode)
        .stdin(Stdio::from(theirs))
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("re-executing /proc/self/exe: {e}")))?;
    // Reaped by our own waitpid (`Process::join`); std's handle never waits.
    Ok((ours, child.id()))
}

/// Spawns a child that runs `req`; its pid once it answered ready.
pub(crate) fn spawn(req: &Request) -> Result<u32, StartError> {
    let (sock, pid) = exec_self("spawn")?;
    let fail = |e: StartError| {
        // The child may be running the program's main (no `init`): stop it.
        let _ = proc::signal(pid, rustix::process::Signal::KILL);
        let _ = proc::wait(pid);
        e
    };
    let fds: Vec<BorrowedFd<'_>> = req.fds.iter().map(AsFd::as_fd).collect();
    socket::send(&sock, &req.bytes, &fds)
        .map_err(|e| fail(StartError::NotReady(format!("sending the request: {e}"))))?;
    match await_ready(sock.as_fd()) {
        Ok(()) => Ok(pid),
        Err(e) => Err(fail(e)),
    }
}

/// Waits up to [`READY_TIMEOUT`] for a child's ready (or refusal) on `sock`.
pub(super) fn await_ready(sock: BorrowedFd<'_>) -> Result<(), StartError> {
    if !socket::readable(sock, Some(READY_TIMEOUT))? {
        return Err(StartError::NotReady(format!(
            "no answer in {READY_TIMEOUT:?}: does the program's main call \
             shmproc::start::init() first?"
        )));
    }
    match socket::recv(sock, 4096)? {
        None => Err(StartError::NotReady(
            "it exited before reading its request (does the program's main call \
             shmproc::start::init() first?)"
                .into(),
        )),
        Some(m) => parse_ready(&m.bytes),
    }
}

/// A ready or refused message.
pub(super) fn parse_ready(bytes: &[u8]) -> Result<(), StartError> {
    match bytes.split_first() {
        Some((&reply::READY, [])) => Ok(()),
        Some((&reply::REFUSED, why)) => Err(StartError::Refused(
            String::from_utf8_lossy(why).into_owned(),
        )),
        _ => Err(StartError::NotReady(format!(
            "an unexpected answer of {} bytes",
            bytes.len()
        ))),
    }
}

/// Takes the request socket off standard input, which becomes `/dev/null` (as in
/// Python's spawn children).
pub(super) fn take_stdin_socket() -> io::Result<OwnedFd> {
    let sock = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3)?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(sock)
}

/// In a spawned child (from [`init`](super::init)): reads the request, answers,
/// runs it and exits.
pub(super) fn run_child() -> ! {
    let code = match take_stdin_socket().and_then(|s| Ok((socket::recv(&s, MAX_REQUEST)?, s))) {
        Ok((Some(msg), sock)) => {
            let mut sock = Some(sock);
            request::run(msg, &mut |r| {
                if let Some(s) = sock.take() {
                    send_ready(s.as_fd(), r);
                }
            })
        }
        Ok((None, _)) => {
            eprintln!("shmproc: spawned child: the parent closed the request socket");
            REFUSED_CODE
        }
        Err(e) => {
            eprintln!("shmproc: spawned child: reading the start request: {e}");
            REFUSED_CODE
        }
    };
    super::exit_child(code)
}
