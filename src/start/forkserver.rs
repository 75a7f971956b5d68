//! The forkserver start method: one single-threaded server process, spawned on first
//! use, forks every child.
//!
//! Protocol, all on `SOCK_SEQPACKET` sockets (one send is one message):
//! - The program holds one end of the request socket (the server's standard input at
//!   its start). A request is one message: the start request's bytes, with the
//!   descriptors of a fresh *reply* socket first and then the arguments' objects.
//! - The server forks; the child answers ready or refused on the reply socket and
//!   runs the request. The server sends the child's pid with a pidfd of it, and once
//!   it has reaped the child, its exit status; then it closes the reply socket.
//! - The server exits when every process of the program has closed the request
//!   socket (end of file) and its last child has been reaped.

use super::request::{self, MAX_REQUEST, REFUSED_CODE, Request};
use super::spawn::{exec_self, parse_ready, take_stdin_socket};
use super::{StartError, reply, send_ready};
use crate::os::{proc, socket};
use crate::process::ExitStatus;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// The running server, as the program sees it.
#[derive(Debug)]
pub(super) struct Server {
    sock: OwnedFd,
    pid: u32,
}

/// The server this program started, if any. Held only to read or replace the handle,
/// never across a request.
static SERVER: Mutex<Option<Arc<Server>>> = Mutex::new(None);

/// The running server, started if there is none (or the last one died).
pub(super) fn ensure() -> Result<Arc<Server>, StartError> {
    let mut cur = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = cur.as_ref() {
        if proc::is_alive(s.pid, 0) {
            return Ok(Arc::clone(s));
        }
    }
    let (sock, pid) = exec_self("forkserver")?;
    match await_hello(sock.as_fd()) {
        Ok(()) => {}
        Err(e) => {
            let _ = proc::signal(pid, rustix::process::Signal::KILL);
            let _ = proc::wait(pid);
            return Err(e);
        }
    }
    let server = Arc::new(Server { sock, pid });
    *cur = Some(Arc::clone(&server));
    Ok(server)
}

/// The running server's pid, if any.
pub(super) fn running_pid() -> Option<u32> {
    let cur = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    cur.as_ref()
        .map(|s| s.pid)
        .filter(|&pid| proc::is_alive(pid, 0))
}

/// Waits for the new server's hello.
fn await_hello(sock: BorrowedFd<'_>) -> Result<(), StartError> {
    if !socket::readable(sock, Some(super::READY_TIMEOUT))? {
        return Err(StartError::NotReady(
            "the forkserver did not answer: does the program's main call \
             shmproc::start::init() first?"
                .into(),
        ));
    }
    match socket::recv(sock, 64)? {
        Some(m) if m.bytes == [reply::HELLO] => Ok(()),
        _ => Err(StartError::NotReady(
            "the forkserver exited at its start (does the program's main call \
             shmproc::start::init() first?)"
                .into(),
        )),
    }
}

/// A child of the forkserver, as its requester holds it.
#[derive(Debug)]
pub(crate) struct Served {
    /// Where the server sends the exit status.
    pub(crate) reply: OwnedFd,
    /// The child's pidfd (signals go through it: no pid-reuse race).
    pub(crate) pidfd: OwnedFd,
}

/// Asks the forkserver for a child that runs `req`: its pid and handle, once it
/// answered ready.
pub(crate) fn request(req: &Request) -> Result<(u32, Served), StartError> {
    let server = ensure()?;
    let (ours, theirs) = socket::pair()?;
    let mut fds: Vec<BorrowedFd<'_>> = vec![theirs.as_fd()];
    fds.extend(req.fds.iter().map(AsFd::as_fd));
    if let Err(e) = socket::send(&server.sock, &req.bytes, &fds) {
        return Err(StartError::NotReady(format!(
            "sending the request to the forkserver (pid {}): {e}",
            server.pid
        )));
    }
    drop(theirs);
    let mut pid = None;
    let mut ready = None;
    while pid.is_none() || ready.is_none() {
        let msg = socket::recv(&ours, 4096)?.ok_or_else(|| {
            StartError::NotReady("the forkserver closed the reply without a child".into())
        })?;
        match msg.bytes.first() {
            Some(&reply::PID) if msg.bytes.len() == 5 && msg.fds.len() == 1 => {
                let mut b = [0u8; 4];
                b.copy_from_slice(&msg.bytes[1..5]);
                pid = msg
                    .fds
                    .into_iter()
                    .next()
                    .map(|fd| (u32::from_le_bytes(b), fd));
            }
            Some(&reply::READY | &reply::REFUSED) => ready = Some(parse_ready(&msg.bytes)),
            Some(&reply::STATUS) if ready.is_none() => {
                return Err(StartError::NotReady(
                    "the child ended before it answered its request".into(),
                ));
            }
            _ => {
                return Err(StartError::NotReady(format!(
                    "an unexpected message of {} bytes from the forkserver",
                    msg.bytes.len()
                )));
            }
        }
    }
    let (Some((pid, pidfd)), Some(ready)) = (pid, ready) else {
        unreachable!("the loop ends only with both")
    };
    ready?;
    Ok((pid, Served { reply: ours, pidfd }))
}

impl Served {
    /// Waits up to `timeout` (`None`: without limit) for the server's report of the
    /// child's exit status.
    ///
    /// # Errors
    ///
    /// The socket error, or an error if the server closed the reply without a status
    /// (it was killed).
    pub(crate) fn wait(
        &self,
        timeout: Option<std::time::Duration>,
    ) -> std::io::Result<Option<ExitStatus>> {
        if !socket::readable(self.reply.as_fd(), timeout)? {
            return Ok(None);
        }
        match socket::recv(&self.reply, 64)? {
            Some(m) => decode_status(&m.bytes).map(Some).ok_or_else(|| {
                std::io::Error::other(format!(
                    "a malformed status message of {} bytes from the forkserver",
                    m.bytes.len()
                ))
            }),
            None => Err(std::io::Error::other(
                "the forkserver ended without reporting the child's exit status",
            )),
        }
    }
}

/// Encodes an exit status for the reply socket.
fn encode_status(s: ExitStatus) -> Vec<u8> {
    let (kind, value) = match s {
        ExitStatus::Exited(c) => (0i32, c),
        ExitStatus::Signaled(sig) => (1i32, sig),
    };
    let mut m = vec![reply::STATUS];
    m.extend_from_slice(&kind.to_le_bytes());
    m.extend_from_slice(&value.to_le_bytes());
    m
}

/// Reads a status message from the reply socket (`None` at end of file: the server
/// is gone without reporting).
pub(crate) fn decode_status(bytes: &[u8]) -> Option<ExitStatus> {
    if bytes.len() != 9 || bytes[0] != reply::STATUS {
        return None;
    }
    let word = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[i..i + 4]);
        i32::from_le_bytes(b)
    };
    match word(1) {
        0 => Some(ExitStatus::Exited(word(5))),
        1 => Some(ExitStatus::Signaled(word(5))),
        _ => None,
    }
}

/// A child the server forked and has not reaped yet.
struct Child {
    pid: u32,
    pidfd: OwnedFd,
    reply: OwnedFd,
}

/// The server's loop (from [`init`](super::init) in the process spawned as the
/// forkserver). Never returns.
pub(super) fn serve() -> ! {
    // The server reaps its children with waitpid: an ignored SIGCHLD, inherited
    // through exec from a program that set it, would have the kernel reap them first
    // and their statuses would be lost.
    // SAFETY: signal(2) with SIG_DFL installs no handler; the server is single-threaded.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
    let listen = match take_stdin_socket() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shmproc forkserver: taking the request socket: {e}");
            super::exit_child(REFUSED_CODE)
        }
    };
    if socket::send(&listen, &[reply::HELLO], &[]).is_err() {
        super::exit_child(0);
    }
    let mut listen = Some(listen);
    let mut children: Vec<Child> = Vec::new();
    loop {
        if listen.is_none() && children.is_empty() {
            super::exit_child(0);
        }
        let mut fds: Vec<BorrowedFd<'_>> = children.iter().map(|c| c.pidfd.as_fd()).collect();
        if let Some(l) = &listen {
            fds.push(l.as_fd());
        }
        let ready = match socket::ready(&fds) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("shmproc forkserver: poll: {e}");
                super::exit_child(1)
            }
        };
        let listen_ready = listen.is_some() && ready.contains(&children.len());
        let mut ended: Vec<usize> = ready.into_iter().filter(|&i| i < children.len()).collect();
        ended.sort_unstable_by(|a, b| b.cmp(a));
        for i in ended {
            let c = children.swap_remove(i);
            if let Ok(status) = proc::wait(c.pid) {
                let _ = socket::send(&c.reply, &encode_status(status), &[]);
            }
        }
        if listen_ready {
            let Some(l) = listen.take() else { continue };
            match socket::recv(&l, MAX_REQUEST) {
                Ok(Some(msg)) => {
                    listen = Some(l);
                    if let Some(c) = fork_child(msg, &mut listen, &mut children) {
                        children.push(c);
                    }
                }
                // Every process of the program closed its end: serve no more.
                Ok(None) => {}
                Err(e) => {
                    eprintln!("shmproc forkserver: reading a request: {e}");
                    listen = Some(l);
                }
            }
        }
    }
}

/// Forks the child for one request; in the server, the child's record.
///
/// The child closes the server's descriptors first (the request socket, the other
/// children's reply sockets and pidfds): a requester learns that the server died by
/// the end of file on its reply socket, which a sibling's copy would hold off.
fn fork_child(
    msg: socket::Message,
    listen: &mut Option<OwnedFd>,
    children: &mut Vec<Child>,
) -> Option<Child> {
    let socket::Message { bytes, mut fds } = msg;
    if fds.is_empty() {
        return None;
    }
    let reply = fds.remove(0);
    // SAFETY: the server is single-threaded (it runs from `init` at the top of a
    // fresh process's main and starts no thread), so the child is a complete copy.
    match unsafe { proc::fork() } {
        Err(e) => {
            let mut m = vec![reply::REFUSED];
            m.extend_from_slice(format!("the forkserver could not fork: {e}").as_bytes());
            let _ = socket::send(&reply, &m, &[]);
            None
        }
        Ok(0) => {
            // The child: nothing of the server's but its request.
            drop(listen.take());
            children.clear();
            let mut reply = Some(reply);
            let code = request::run(socket::Message { bytes, fds }, &mut |r| {
                if let Some(s) = reply.take() {
                    send_ready(s.as_fd(), r);
                }
            });
            super::exit_child(code)
        }
        Ok(pid) => {
            drop(fds);
            let pidfd = match proc::pidfd(pid) {
                Ok(fd) => fd,
                Err(e) => {
                    eprintln!("shmproc forkserver: pidfd_open({pid}): {e}");
                    return None;
                }
            };
            let mut m = vec![reply::PID];
            m.extend_from_slice(&pid.to_le_bytes());
            let _ = socket::send(&reply, &m, &[pidfd.as_fd()]);
            Some(Child { pid, pidfd, reply })
        }
    }
}
