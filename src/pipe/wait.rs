//! Waiting on many connections and child processes at once: Python's
//! `multiprocessing.connection.wait`.

use crate::os::clock::Deadline;
use crate::os::proc;
use crate::wait::{EventCount, Spin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Connection;

/// Waits until at least one of `connections` can be received from without blocking
/// (a message or EOF), or until `timeout` (`None`: as long as it takes); returns the
/// indices of the ready ones — Python's `multiprocessing.connection.wait`. A closed
/// or send-only connection counts as ready (a receive on it fails at once). To wait
/// on child processes too, use [`wait_any`].
pub fn wait(connections: &[&Connection], timeout: Option<Duration>) -> Vec<usize> {
    let objects: Vec<Waitable<'_>> = connections.iter().map(|&c| c.into()).collect();
    wait_any(&objects, timeout)
}

/// Something [`wait_any`] waits on.
#[derive(Clone, Copy, Debug)]
pub enum Waitable<'a> {
    /// Ready when a receive would not block: a message, EOF, or a closed or
    /// send-only connection (a receive on it fails at once).
    Connection(&'a Connection),
    /// Ready once the child has ended, reaped or not (Python's `Process.sentinel`);
    /// [`Process::join`](crate::Process::join) then returns at once. Made with
    /// `Waitable::from(&process)` or [`Process::sentinel`](crate::Process::sentinel).
    Process(Sentinel),
}

/// What a [`Waitable::Process`] watches: a child's pid, or nothing once the child was
/// reaped (it has ended: ready). This layer knows pids, not `Process` handles (which
/// live a layer below and make these with
/// [`Process::sentinel`](crate::Process::sentinel)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sentinel {
    pid: Option<u32>,
}

impl Sentinel {
    /// A sentinel for the child `pid`; `None`: a child already reaped.
    pub(crate) fn new(pid: Option<u32>) -> Sentinel {
        Sentinel { pid }
    }
}

impl<'a> From<&'a Connection> for Waitable<'a> {
    fn from(c: &'a Connection) -> Waitable<'a> {
        Waitable::Connection(c)
    }
}

/// Processes a [`wait_any`] watches, and the flag its watcher thread raises.
pub(super) struct Exits {
    /// (index in the objects, pid, index in `fds` if it has a pidfd).
    watched: Vec<(usize, u32, Option<usize>)>,
    fds: Vec<proc::Pidfd>,
    /// Notified by the watcher thread when a process exits; the waiter sleeps on it
    /// beside the connections' eventcounts (it is in this process's memory: a shared
    /// futex on private memory works within one process).
    event: EventCount,
    /// Set by the watcher before it notifies; paired with the waiter's SeqCst load.
    fired: std::sync::atomic::AtomicBool,
}

impl Exits {
    /// Whether the watched process at `w` has ended: its pidfd polls readable, or
    /// without one, /proc says so.
    pub(super) fn ended(&self, w: &(usize, u32, Option<usize>)) -> bool {
        match w.2 {
            Some(i) => self.fds[i].exited(),
            None => !proc::is_alive(w.1, 0),
        }
    }
}

/// Waits until at least one of `objects` is ready — a connection that can be
/// received from without blocking, or a child process that has ended — or until
/// `timeout` (`None`: as long as it takes), and returns the indices of the ready
/// ones: Python's `multiprocessing.connection.wait` over connections and process
/// sentinels.
///
/// Connections wake the waiter through their futexes, as in [`wait`]. A process's
/// end is seen through a pidfd (`pidfd_open(2)`): once the wait has spun and is
/// about to sleep, a helper thread blocks in `poll(2)` on the pidfds and wakes the
/// waiter when one becomes readable, so an exit is seen at once; the thread is ended
/// and joined before `wait_any` returns. (Without pidfds, or if the thread cannot be
/// started, exits are looked for by the wait's stall checks: after 20 ms, 40 ms,
/// 80 ms, then every 100 ms.)
///
/// # Examples
///
/// ```
/// use shmproc::pipe::{pipe, wait_any, Waitable};
/// use shmproc::Process;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (ours, _theirs) = pipe(true)?;
/// let mut child = Process::spawn(|| {})?;
/// let ready = wait_any(&[Waitable::from(&ours), Waitable::from(&child)], None);
/// assert_eq!(ready, [1]);
/// assert!(child.join()?.success());
/// # Ok(()) }
/// ```
pub fn wait_any(objects: &[Waitable<'_>], timeout: Option<Duration>) -> Vec<usize> {
    let deadline = timeout.map(Deadline::after);
    let mut exits = Exits {
        watched: Vec::new(),
        fds: Vec::new(),
        event: EventCount::new(),
        fired: std::sync::atomic::AtomicBool::new(false),
    };
    // Reaped children are ready whatever else happens.
    let mut reaped = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        if let Waitable::Process(p) = o {
            match p.pid {
                None => reaped.push(i),
                Some(pid) => {
                    let fd = proc::Pidfd::open(pid).ok().map(|fd| {
                        exits.fds.push(fd);
                        exits.fds.len() - 1
                    });
                    exits.watched.push((i, pid, fd));
                }
            }
        }
    }
    let exits = &exits;
    let ready_set = |thorough: bool| -> Option<Vec<usize>> {
        let look_at_exits = thorough || exits.fired.load(Ordering::SeqCst);
        let v: Vec<usize> = objects
            .iter()
            .enumerate()
            .filter(|&(i, o)| match o {
                Waitable::Connection(c) => c.ready_now(thorough),
                Waitable::Process(_) => {
                    reaped.contains(&i)
                        || (look_at_exits
                            && exits.watched.iter().any(|w| w.0 == i && exits.ended(w)))
                }
            })
            .map(|(i, _)| i)
            .collect();
        (!v.is_empty()).then_some(v)
    };
    // A child that has already ended is ready without any wait.
    if let Some(v) = (!exits.watched.is_empty())
        .then(|| ready_set(true))
        .flatten()
    {
        return v;
    }
    let mut events: Vec<&EventCount> = objects
        .iter()
        .filter_map(|o| match o {
            Waitable::Connection(c) => c.readable_event(),
            Waitable::Process(_) => None,
        })
        .collect();
    events.push(&exits.event);
    std::thread::scope(|scope| {
        let mut wake: Option<Arc<proc::WakeFd>> = None;
        let mut tried = false;
        let mut on_stall = || {
            if !tried && !exits.fds.is_empty() {
                tried = true;
                // The first stall check comes when the spin phase is over: from here
                // on the waiter sleeps, and the watcher wakes it on an exit.
                if let Ok(w) = proc::WakeFd::new() {
                    let w = Arc::new(w);
                    let theirs = w.clone();
                    let started = std::thread::Builder::new()
                        .name("shmproc-wait".into())
                        .spawn_scoped(scope, move || {
                            let _ = proc::wait_exits(&exits.fds, &theirs);
                            exits.fired.store(true, Ordering::SeqCst);
                            exits.event.notify_all();
                        });
                    if started.is_ok() {
                        wake = Some(w);
                    }
                }
            }
            ready_set(true)
        };
        let got = crate::wait::wait_any(
            &events,
            Spin::DEFAULT,
            deadline,
            || ready_set(false),
            &mut on_stall,
        );
        if let Some(w) = &wake {
            w.wake();
        }
        got.unwrap_or_default()
    })
}
