//! `pipe()` and `Connection`: Python's `multiprocessing.Pipe` on shared memory, one
//! SPSC byte ring ([`crate::ring::spsc`]) per direction.
//!
//! | Python | shmproc |
//! |---|---|
//! | `a, b = Pipe()` / `Pipe(duplex=False)` | [`pipe`]`(true)` / [`pipe`]`(false)` (`a` receives, `b` sends) |
//! | `send(obj)` / `recv()` | [`Connection::send`] / [`Connection::recv`] (plain-old-data values) |
//! | `send_bytes(buf, offset, size)` | [`Connection::send_bytes`], [`Connection::send_bytes_range`] |
//! | `recv_bytes()` / `recv_bytes_into(buf, offset)` | [`Connection::recv_bytes`] / [`Connection::recv_bytes_into`] |
//! | `poll(timeout)` | [`Connection::poll`] |
//! | `close()`, `closed`, `readable`, `writable` | [`Connection::close`], [`Connection::closed`], … |
//! | `EOFError`, `BufferTooShort` | [`RecvError::Eof`], [`RecvError::BufferTooShort`] (carrying the message) |
//! | `multiprocessing.connection.wait(conns, timeout)` | [`wait`] |
//! | `connection.wait([conn, process.sentinel, …])` | [`wait_any`] with [`Waitable`] |
//!
//! Messages of any size: a message longer than a quarter of the ring streams through
//! it in fragments, reassembled by the receiver; messages never merge and an empty
//! message is a message.
//!
//! # End of file, like an OS pipe
//!
//! Each end keeps a small registry of the processes holding it: the creator, every
//! child started with [`Process`](crate::Process) while the end was alive (a forked
//! child holds copies of everything, as it holds copies of file descriptors in
//! Python), and processes that opened it by name. Closing or dropping a `Connection`
//! removes its entry. A receiver gets [`RecvError::Eof`] once the ring is drained and
//! every holder of the other end has closed it or died — including by SIGKILL (found
//! by a liveness check when a wait stalls). Unlike Python, a process's own inherited
//! copy of the other end does not keep its receives from seeing EOF unless it has
//! used that copy.
//!
//! A send to a pipe whose other end is gone in that sense fails with
//! [`SendError::BrokenPipe`] and writes nothing (Python's `BrokenPipeError`):
//!
//! - the first send after every holder of the other end closed it fails: the send
//!   loads a count of the other end's holders, kept on the ring line it loads anyway
//!   to see whether the reader sleeps; a [`Process`](crate::Process) child frees its
//!   holds when it returns, so its exit counts as closing;
//! - holders that died without closing (SIGKILL) are found by a liveness check that
//!   a send runs once every [`LIVENESS_EVERY`] sends of its handle: if the other end
//!   consumed anything since the previous check it is alive (one load, no system
//!   call); otherwise a `poll(2)` of a pidfd per holder process decides. So the death
//!   is seen within `LIVENESS_EVERY` sends if the peer had stopped reading, within
//!   `2 × LIVENESS_EVERY` if it was reading up to its death; and by the check a send
//!   makes when it has to wait for room. From then on every send fails, without
//!   further system calls.
//!
//! A `Connection` is `Send` but not `Sync`: one thread uses an end at a time, and
//! two processes must not send (or receive) on the same end at the same time (the
//! ring is single-producer, single-consumer; doing so garbles data, at worst into a
//! `Corrupt` error, never undefined behavior).

use crate::layout::header::{ElemType, ObjectKind, ObjectLayout};
use crate::layout::padded::CachePadded;
use crate::object::{Mismatch, Object};
use crate::os::clock::Deadline;
use crate::os::proc;
use crate::ring::spsc::{self, FIRST, MORE, Reader, Record, Spsc, Writer};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::wait::{EventCount, Spin};
use bytemuck::Pod;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// When a waiting end looks whether the peer has closed: on every 64th poll while
/// spinning, and on every poll once the spin phase is over (`spun`, set by the wait's
/// stall check, which runs before any sleep). The look reads the peer's whole holder
/// registry; doing it on every poll made each hop of a ping-pong ~12 ns slower. A
/// peer that closes while we spin is seen at most 64 polls late; one that closes
/// while we sleep wakes us (`close` notifies) and is seen at once.
#[derive(Default)]
struct PeerCheck {
    spun: Cell<bool>,
    polls: Cell<u32>,
}

impl PeerCheck {
    /// Whether this poll should look.
    fn due(&self) -> bool {
        let n = self.polls.get().wrapping_add(1);
        self.polls.set(n);
        self.spun.get() || n % 64 == 0
    }
}

/// Default bytes per direction.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;
/// Entries in each end's holder registry.
const HOLDERS: usize = 15;
const ACTIVE: u64 = 1 << 62;
/// The entry was inherited through a fork, not created or opened by its process.
const INHERITED: u64 = 1 << 63;
const START_BITS: u64 = (1 << 30) - 1;

/// Who holds one end: `ever` is set once anyone has registered (so a named end no
/// one opened yet is "not connected yet", not "closed"); each entry is 0 or
/// `pid | (start_ticks & 2^30-1) << 32 | ACTIVE? | INHERITED?`.
#[repr(C)]
struct Holders {
    ever: AtomicU64,
    entries: [AtomicU64; HOLDERS],
}

#[repr(C)]
struct PipeControl {
    ends: [CachePadded<Holders>; 2],
}

const _: () = assert!(size_of::<Holders>() == 128);
const _: () = assert!(size_of::<PipeControl>() == 256);

/// Why a message was not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// This connection was closed.
    Closed,
    /// This end of a one-way pipe only receives.
    ReceiveOnly,
    /// Every holder of the other end has closed it or died (Python's
    /// `BrokenPipeError`); nothing was written. Seen by the first send after the last
    /// holder closed, and within `2 ×` [`LIVENESS_EVERY`] sends of the last holder's
    /// death (see the module docs).
    BrokenPipe,
    /// The ring stayed full until the timeout.
    Timeout,
    /// A bad `offset` or `size` (the message says which and why).
    InvalidArgument(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection is closed"),
            SendError::ReceiveOnly => {
                f.write_str("this end of a one-way pipe only receives; send on the other end")
            }
            SendError::BrokenPipe => f.write_str("broken pipe: the other end is closed"),
            SendError::Timeout => f.write_str("timed out waiting for room in the pipe"),
            SendError::InvalidArgument(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SendError {}

/// Why no message was received.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// Every holder of the other end has closed it or died, and everything it sent
    /// has been received (Python's `EOFError`).
    Eof,
    /// This connection was closed.
    Closed,
    /// This end of a one-way pipe only sends.
    SendOnly,
    /// Nothing arrived before the timeout.
    Timeout,
    /// The message did not fit the buffer; here is all of it (Python's
    /// `BufferTooShort`, whose argument is the message).
    BufferTooShort(Vec<u8>),
    /// `recv::<T>` got a message that is not the size of a `T` (it was consumed).
    WrongSize {
        /// `size_of::<T>()`.
        expected: usize,
        /// The message's length.
        found: usize,
    },
    /// A bad offset for `recv_bytes_into`.
    InvalidArgument(String),
    /// The pipe's shared memory is inconsistent (a peer scribbled on it).
    Corrupt(String),
}

impl fmt::Debug for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::BufferTooShort(m) => write!(f, "BufferTooShort({} bytes)", m.len()),
            other => fmt::Display::fmt(other, f),
        }
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Eof => f.write_str("end of file: the other end is closed"),
            RecvError::Closed => f.write_str("connection is closed"),
            RecvError::SendOnly => {
                f.write_str("this end of a one-way pipe only sends; receive on the other end")
            }
            RecvError::Timeout => f.write_str("timed out waiting for a message"),
            RecvError::BufferTooShort(m) => write!(
                f,
                "buffer too short for a message of {} bytes (the message is in the error)",
                m.len()
            ),
            RecvError::WrongSize { expected, found } => write!(
                f,
                "received a message of {found} bytes, expected {expected}"
            ),
            RecvError::InvalidArgument(why) => f.write_str(why),
            RecvError::Corrupt(why) => write!(f, "pipe is corrupt: {why}"),
        }
    }
}

impl std::error::Error for RecvError {}

impl From<spsc::Corrupt> for RecvError {
    fn from(e: spsc::Corrupt) -> RecvError {
        RecvError::Corrupt(e.0)
    }
}

/// The segment, shared by the handles of both ends in one process.
#[derive(Debug)]
struct PipeShared {
    segment: Arc<Segment>,
    /// Ring carrying messages to end A (read by A, written by B).
    to_a: Spsc,
    /// Ring carrying messages to end B; `None` for a one-way pipe.
    to_b: Option<Spsc>,
}

impl PipeShared {
    fn control(&self) -> &PipeControl {
        // SAFETY: the payload starts with 256 bytes of PipeControl (checked against
        // the layout at open), 128-aligned, made only of atomics.
        unsafe { &*self.segment.payload().as_ptr().cast::<PipeControl>() }
    }

    fn holders(&self, end: usize) -> &Holders {
        &self.control().ends[end & 1]
    }

    /// The presence word of `end`: on the readable line of the ring that `end`
    /// receives from, so the other end's sender reads it with the line its notify
    /// loads anyway. `None` for the send-only end of a one-way pipe (nobody sends to
    /// it). Bit 0 is set once anyone has registered; the rest counts the end's
    /// registry entries, two per entry (see [`Registration::claim_entry`]).
    fn presence(&self, end: usize) -> Option<&AtomicU64> {
        if end & 1 == 0 {
            Some(self.to_a.reader_presence())
        } else {
            self.to_b.as_ref().map(|r| r.reader_presence())
        }
    }
}

fn layout(capacity: u64, duplex: bool) -> Option<ObjectLayout> {
    let ring = Spsc::bytes_for(capacity)? as u64;
    let directions: u64 = if duplex { 2 } else { 1 };
    Some(ObjectLayout {
        kind: ObjectKind::Pipe,
        elem: ElemType::NONE,
        slot_size: directions as u32,
        capacity,
        payload_size: size_of::<PipeControl>() as u64 + ring.checked_mul(directions)?,
    })
}

impl PipeShared {
    /// The shared part over a validated `Pipe` segment: checks the direction count
    /// and the sizes before touching the payload.
    fn attach(segment: Arc<Segment>) -> Result<PipeShared, Mismatch> {
        let l = segment.info().layout;
        if l.elem != ElemType::NONE {
            return Err(Mismatch::new("element type", ElemType::NONE, l.elem));
        }
        let duplex = match l.slot_size {
            1 => false,
            2 => true,
            n => return Err(Mismatch::new("direction count", "1 or 2", n)),
        };
        let expected = layout(l.capacity, duplex);
        if expected.map(|e| e.payload_size) != Some(l.payload_size) {
            return Err(Mismatch::new(
                "pipe size",
                format!("a pipe of {} bytes per direction", l.capacity),
                format!("{} bytes of payload", l.payload_size),
            ));
        }
        let ring_len = Spsc::bytes_for(l.capacity).unwrap_or(0);
        let base = segment.payload();
        let at = |i: usize| {
            // SAFETY: 256 + i * ring_len + ring_len <= payload_size (checked above),
            // so the pointer stays inside the payload; 128-aligned since ring_len is
            // 512 + a power of two >= 256.
            let p = unsafe { base.add(size_of::<PipeControl>() + i * ring_len) };
            // SAFETY: the ring memory lives as long as the segment, which PipeShared
            // keeps; it was zero-filled at creation and is used only through Spsc
            // handles of this capacity.
            unsafe { Spsc::attach(p, ring_len, l.capacity) }
        };
        let bad = |e: spsc::LayoutError| Mismatch::new("pipe ring", "a valid byte ring", e);
        let to_a = at(0).map_err(bad)?;
        let to_b = if duplex {
            Some(at(1).map_err(bad)?)
        } else {
            None
        };
        Ok(PipeShared {
            segment,
            to_a,
            to_b,
        })
    }
}

/// This handle's entry in its end's holder registry.
#[derive(Debug)]
struct Registration {
    shared: Arc<PipeShared>,
    end: usize,
    /// (pid, entry index, the entry's value) for the process this handle is in.
    entry: Mutex<Option<(u32, usize, u64)>>,
}

/// Every live registration of this process, so a forked child can register itself
/// as a holder of everything it inherited.
static LIVE: Mutex<Vec<Weak<Registration>>> = Mutex::new(Vec::new());

impl Registration {
    fn new(shared: Arc<PipeShared>, end: usize) -> Arc<Registration> {
        let reg = Arc::new(Registration {
            shared,
            end,
            entry: Mutex::new(None),
        });
        reg.register(false);
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&reg));
        }
        reg
    }

    /// Claims an entry for this process (reclaiming entries of dead processes when
    /// full). With all 15 entries held by live processes this handle goes unrecorded,
    /// and the other end could see EOF while it is still open; pipes are meant for
    /// a few processes, far fewer than that.
    fn register(&self, active: bool) {
        let me = proc::ProcessId::current();
        let value = holder_value(me, active, false);
        if let Some(i) = self.claim_entry(value) {
            if let Ok(mut e) = self.entry.lock() {
                *e = Some((me.pid, i, value));
            }
        }
    }

    /// Claims a free (or dead) entry of this end for `value`; its index.
    ///
    /// The end's presence word counts entries: raised before an entry is claimed and
    /// lowered after one is freed, so it is never below the number of held entries
    /// (a process killed between the two steps leaves it too high, which only sends
    /// the peer's senders to the liveness check; see [`Connection::check_peer`]).
    fn claim_entry(&self, value: u64) -> Option<usize> {
        let holders = self.shared.holders(self.end);
        holders.ever.store(1, Ordering::Release);
        self.raise_presence();
        for pass in 0..2 {
            for (i, slot) in holders.entries.iter().enumerate() {
                let cur = slot.load(Ordering::Acquire);
                let free = cur == 0 || (pass == 1 && !entry_alive(cur));
                if free
                    && slot
                        .compare_exchange(cur, value, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    if cur != 0 {
                        // The dead holder's count goes with its entry.
                        self.lower_presence();
                    }
                    return Some(i);
                }
            }
        }
        self.lower_presence();
        None
    }

    /// Counts one more entry of this end in its presence word (and marks the word as
    /// registered-once, bit 0).
    fn raise_presence(&self) {
        if let Some(p) = self.shared.presence(self.end) {
            p.fetch_add(2, Ordering::AcqRel);
            p.fetch_or(1, Ordering::AcqRel);
        }
    }

    /// Counts one entry fewer, after it was freed. Release: the freed entry is
    /// visible to a sender whose Acquire load in `Connection::check_peer` sees the
    /// lower count.
    fn lower_presence(&self) {
        if let Some(p) = self.shared.presence(self.end) {
            p.fetch_sub(2, Ordering::AcqRel);
        }
    }

    /// Marks this process's entry as used (so it keeps the peer's EOF away even
    /// within this process).
    fn mark_active(&self) {
        let Ok(mut e) = self.entry.lock() else { return };
        let me = proc::cached_pid();
        match *e {
            Some((pid, i, value)) if pid == me => {
                if value & ACTIVE == 0 {
                    let slot = &self.shared.holders(self.end).entries[i];
                    if slot
                        .compare_exchange(
                            value,
                            value | ACTIVE,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok()
                    {
                        *e = Some((pid, i, value | ACTIVE));
                    }
                }
            }
            _ => {
                drop(e);
                self.register(true);
            }
        }
    }

    fn deregister(&self) {
        let Ok(mut e) = self.entry.lock() else { return };
        self.free_entry(e.take());
    }

    /// Frees this process's entry, if `entry` is one.
    fn free_entry(&self, entry: Option<(u32, usize, u64)>) {
        if let Some((pid, i, value)) = entry {
            if pid == proc::cached_pid() {
                let slot = &self.shared.holders(self.end).entries[i];
                if slot
                    .compare_exchange(value, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.lower_presence();
                }
            }
        }
    }

    /// Wakes everyone waiting on either ring, so they look at the holders again.
    fn notify_rings(&self) {
        let s = &self.shared;
        s.to_a.readable().notify_all();
        s.to_a.writable().notify_all();
        if let Some(r) = &s.to_b {
            r.readable().notify_all();
            r.writable().notify_all();
        }
    }
}

/// Called by [`Process`](crate::Process) in a child that is about to exit: frees the
/// child's entry in every pipe end it holds, so the peers see EOF or a broken pipe at
/// once instead of at their next liveness check. Only `try_lock`s: a lock another
/// thread of the parent held at the fork stays held in the child, and then that
/// entry is left for the liveness checks.
pub(crate) fn before_child_exit() {
    let Ok(live) = LIVE.try_lock() else { return };
    let regs: Vec<Arc<Registration>> = live.iter().filter_map(Weak::upgrade).collect();
    drop(live);
    for reg in regs {
        let Ok(mut e) = reg.entry.try_lock() else {
            continue;
        };
        let entry = e.take();
        drop(e);
        if entry.is_some() {
            reg.free_entry(entry);
            reg.notify_rings();
        }
    }
}

/// A holder entry: `pid | (start_ticks & 2^30-1) << 32 | ACTIVE? | INHERITED?`.
fn holder_value(who: proc::ProcessId, active: bool, inherited: bool) -> u64 {
    u64::from(who.pid)
        | ((who.start_ticks & START_BITS) << 32)
        | if active { ACTIVE } else { 0 }
        | if inherited { INHERITED } else { 0 }
}

fn entry_alive(entry: u64) -> bool {
    let pid = entry as u32;
    let start = (entry >> 32) & START_BITS;
    proc::is_alive_masked(pid, start, START_BITS)
}

/// Entries claimed by a parent for a child it is about to fork (see
/// [`before_fork`]).
pub(crate) struct ForkClaims(Vec<(Arc<Registration>, usize, u64)>);

/// Called by [`Process`](crate::Process) just before `fork`: claims, in the parent,
/// an entry for the child in every pipe end alive in this process (the child will
/// hold copies of them all). Claiming before the fork matters: the parent may drop
/// its own copy of the child's end right after forking, and the other end must not
/// see EOF in the moment before the child runs.
pub(crate) fn before_fork() -> ForkClaims {
    let Ok(live) = LIVE.lock() else {
        return ForkClaims(Vec::new());
    };
    let regs: Vec<Arc<Registration>> = live.iter().filter_map(Weak::upgrade).collect();
    drop(live);
    let mut claims = Vec::new();
    for reg in regs {
        // The placeholder names the parent (alive, inherited, inactive) until the
        // child's pid is known.
        let placeholder = holder_value(proc::ProcessId::current(), false, true);
        if let Some(i) = reg.claim_entry(placeholder) {
            claims.push((reg.clone(), i, placeholder));
        }
    }
    ForkClaims(claims)
}

impl ForkClaims {
    /// In the parent after `fork`: hands the claimed entries to the child (or frees
    /// them if the fork failed, `child == None`).
    pub(crate) fn in_parent(self, child: Option<u32>) {
        for (reg, i, placeholder) in self.0 {
            let new = child.map_or(0, |pid| {
                holder_value(
                    proc::ProcessId {
                        pid,
                        start_ticks: 0,
                    },
                    false,
                    true,
                )
            });
            let slot = &reg.shared.holders(reg.end).entries[i];
            let swapped = slot
                .compare_exchange(placeholder, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if swapped && new == 0 {
                reg.lower_presence();
            }
        }
    }

    /// In the child after `fork`: takes the claimed entries as its own (whichever of
    /// parent and child replaces the placeholder first, the result is the same pid).
    pub(crate) fn in_child(self) {
        let me = proc::ProcessId::current();
        let value = holder_value(me, false, true);
        for (reg, i, placeholder) in self.0 {
            let slot = &reg.shared.holders(reg.end).entries[i];
            let now = match slot.compare_exchange(
                placeholder,
                value,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => value,
                Err(cur) => cur,
            };
            if let Ok(mut e) = reg.entry.lock() {
                *e = Some((me.pid, i, now));
            }
        }
    }
}

/// One end of a pipe (see the module docs).
///
/// # Examples
///
/// ```
/// use shmproc::{pipe, Process};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (parent_conn, child_conn) = pipe(true)?;
/// let mut child = Process::spawn(move || {
///     child_conn.send(&[42u32, 0, 7]).unwrap();
///     child_conn.send_bytes(b"hello").unwrap();
/// })?;
/// assert_eq!(parent_conn.recv::<[u32; 3]>()?, [42, 0, 7]);
/// assert_eq!(parent_conn.recv_bytes()?, b"hello");
/// child.join()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Connection {
    reg: Arc<Registration>,
    tx: Option<Writer>,
    rx: Option<Reader>,
    closed: Cell<bool>,
    spin: Cell<Spin>,
    /// The pid of the process that last marked this end as used (0: none yet), so
    /// the hot path checks one cell instead of the registry.
    active_in: Cell<u32>,
    /// A send looks at the peer's registry when the peer's presence word is at most
    /// this (bit 0 set): `1 + 2 × n` where `n` counts this process's own unused
    /// inherited copies of the peer end, which do not keep the pipe from being broken
    /// (see [`Connection::check_peer`]). Recomputed by every look.
    gone_at: Cell<u64>,
    /// Sends made through this handle (wrapping); every [`LIVENESS_EVERY`]th one
    /// checks whether the peer's holders are alive.
    sends: Cell<u32>,
    /// Process descriptors of the peer's holders, by registry entry, for the
    /// liveness check.
    peer_procs: RefCell<Vec<(u64, PeerProc)>>,
    /// The peer's read position at the last liveness check.
    read_at_check: Cell<u64>,
}

/// Every this many sends, a send checks whether the processes holding the other end
/// are still alive: if the other end consumed anything since the last check it is
/// (one load of its read position); otherwise one `poll(2)` per holder process, on a
/// pidfd kept from check to check. So a peer killed while it kept up is seen within
/// `2 × LIVENESS_EVERY` sends, one that had stopped reading within `LIVENESS_EVERY`.
pub const LIVENESS_EVERY: u32 = 1024;

/// What the liveness check knows of one holder of the peer end.
#[derive(Debug)]
enum PeerProc {
    /// Found dead.
    Dead,
    /// Alive when last looked at; the pidfd says when it exits.
    Watched(proc::Pidfd),
    /// No pidfd (an old kernel): looked up in /proc each time.
    Unwatched,
}

/// Whether entry `v` is this process's copy of an end, inherited through a fork and
/// never used here (it does not keep the pipe open for this process).
fn own_unused_copy(v: u64, me: u32) -> bool {
    v as u32 == me && v & INHERITED != 0 && v & ACTIVE == 0
}

/// A pair of connected [`Connection`]s with the default capacity (256 KiB per
/// direction). `duplex`: both ends send and receive; otherwise the first end only
/// receives and the second only sends (Python's `Pipe(duplex=False)`).
///
/// # Errors
///
/// OS errors creating the anonymous segment.
pub fn pipe(duplex: bool) -> Result<(Connection, Connection), CreateError> {
    pipe_with_capacity(DEFAULT_CAPACITY, duplex)
}

/// [`pipe`] with `capacity` bytes per direction (a power of two, at least 256).
/// Messages of any size still fit: larger ones stream through in fragments.
///
/// # Errors
///
/// [`CreateError::InvalidArgument`] for a bad capacity; OS errors.
pub fn pipe_with_capacity(
    capacity: usize,
    duplex: bool,
) -> Result<(Connection, Connection), CreateError> {
    let first = Connection::create_anonymous((capacity, duplex))?;
    let second = Connection::end(first.reg.shared.clone(), 1);
    Ok((first, second))
}

fn checked_layout(capacity: usize, duplex: bool) -> Result<ObjectLayout, CreateError> {
    layout(capacity as u64, duplex).ok_or_else(|| {
        CreateError::InvalidArgument(format!(
            "pipe capacity {capacity} must be a power of two of at least 256 bytes"
        ))
    })
}

impl Object for Connection {
    const KIND: ObjectKind = ObjectKind::Pipe;
    /// `(capacity, duplex)`: bytes per direction (a power of two, at least 256) and
    /// whether both ends send and receive.
    type Args<'a> = (usize, bool);

    fn layout(&(capacity, duplex): &(usize, bool)) -> Result<ObjectLayout, CreateError> {
        checked_layout(capacity, duplex)
    }

    /// The opener's end: the second.
    fn attach(segment: Arc<Segment>) -> Result<Connection, Mismatch> {
        Ok(Connection::end(Arc::new(PipeShared::attach(segment)?), 1))
    }

    /// The creator's end: the first.
    fn attach_created(segment: Arc<Segment>) -> Result<Connection, Mismatch> {
        Ok(Connection::end(Arc::new(PipeShared::attach(segment)?), 0))
    }

    fn segment(&self) -> &Segment {
        &self.reg.shared.segment
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        describe(segment)
    }
}

impl Connection {
    fn end(shared: Arc<PipeShared>, end: usize) -> Connection {
        let (tx, rx) = if end == 0 {
            (shared.to_b.map(|r| r.writer()), Some(shared.to_a.reader()))
        } else {
            (Some(shared.to_a.writer()), shared.to_b.map(|r| r.reader()))
        };
        Connection {
            reg: Registration::new(shared, end),
            tx,
            rx,
            closed: Cell::new(false),
            spin: Cell::new(Spin::DEFAULT),
            active_in: Cell::new(0),
            gone_at: Cell::new(1),
            sends: Cell::new(0),
            peer_procs: RefCell::new(Vec::new()),
            read_at_check: Cell::new(0),
        }
    }

    /// Creates a named pipe and returns its first end; another process gets the
    /// second with [`Connection::open`]. Until someone opens it, receives wait (they
    /// do not see EOF).
    ///
    /// # Errors
    ///
    /// As for [`Segment::create`]; a bad capacity.
    pub fn create(name: &str, capacity: usize, duplex: bool) -> Result<Connection, CreateError> {
        Connection::create_with(name, (capacity, duplex), CreateOptions::new())
    }

    /// Opens the second end of a named pipe.
    ///
    /// # Errors
    ///
    /// As for [`Segment::open`] (`expected Pipe, found Queue` …).
    pub fn open(name: &str) -> Result<Connection, OpenError> {
        Connection::open_with(name, OpenOptions::new())
    }

    /// Whether this end can receive (Python's `readable`).
    pub fn readable(&self) -> bool {
        self.rx.is_some()
    }

    /// Whether this end can send (Python's `writable`).
    pub fn writable(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether [`close`](Connection::close) was called.
    pub fn closed(&self) -> bool {
        self.closed.get()
    }

    /// How blocking calls on this end wait: spin first (the default) or sleep at once.
    pub fn set_spin(&self, spin: Spin) {
        self.spin.set(spin);
    }

    /// Closes this end in this process: later calls fail with `Closed`, and once
    /// every holder of this end has closed it (or died) the other end sees EOF.
    /// Dropping the connection closes it too.
    pub fn close(&self) {
        if !self.closed.replace(true) {
            self.reg.deregister();
            // Wake the other side so it re-checks for EOF / a broken pipe.
            self.reg.notify_rings();
        }
    }

    /// Marks this end as used by this process (once per process).
    #[inline]
    fn mark_active(&self) {
        let me = proc::cached_pid();
        if self.active_in.get() != me {
            self.first_use_here(me);
        }
    }

    /// The first send or receive through this handle in this process.
    #[cold]
    fn first_use_here(&self, me: u32) {
        self.reg.mark_active();
        self.active_in.set(me);
        let own = self
            .peer()
            .entries
            .iter()
            .filter(|e| own_unused_copy(e.load(Ordering::Acquire), me))
            .count() as u64;
        self.gone_at.set(1 + 2 * own);
    }

    /// Whether the peer is gone, as far as a send can tell cheaply: the first send
    /// after every holder of the other end has closed it (or exited normally: a
    /// [`Process`](crate::Process) child frees its entries on the way out) fails,
    /// seen through the peer's presence word — one load of the line the send's
    /// notify loads anyway. Holders that died without closing (SIGKILL) are found by
    /// a liveness check on every [`LIVENESS_EVERY`]th send of this handle, which
    /// makes system calls only if the reader consumed nothing since the last one.
    #[inline]
    fn check_peer(&self, tx: &Writer) -> Result<(), SendError> {
        // Acquire; paired with the Release in `Registration::lower_presence`: the
        // entries freed before a lower count are visible to the look below.
        let presence = tx.ring().reader_presence().load(Ordering::Acquire);
        let n = self.sends.get().wrapping_add(1);
        self.sends.set(n);
        let liveness = n % LIVENESS_EVERY == 0;
        if (presence & 1 != 0 && presence <= self.gone_at.get()) || liveness {
            return self.check_peer_slow(tx, liveness);
        }
        Ok(())
    }

    /// Looks at the peer's registry (and, if `liveness`, at its processes).
    #[cold]
    #[inline(never)]
    fn check_peer_slow(&self, tx: &Writer, liveness: bool) -> Result<(), SendError> {
        let h = self.peer();
        if h.ever.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let me = proc::cached_pid();
        let mut own = 0u64;
        let mut others = [0u64; HOLDERS];
        let mut n = 0;
        for e in &h.entries {
            match e.load(Ordering::Acquire) {
                0 => {}
                v if own_unused_copy(v, me) => own += 1,
                v => {
                    others[n] = v;
                    n += 1;
                }
            }
        }
        if n == 0 {
            self.gone_at.set(1 + 2 * own);
            return Err(SendError::BrokenPipe);
        }
        // Once the holders were found dead, every send looks again (at the cached
        // answers: no system call) until the registry changes.
        let found_dead = self.gone_at.get() == u64::MAX;
        // A reader that consumed since the last check is at work: no system call.
        // (One load of the reader's line per check; a ping-pong pays nothing else.)
        let reader_moved = liveness && {
            let read = tx.ring().read_position();
            read != self.read_at_check.replace(read)
        };
        if ((liveness && !reader_moved) || found_dead) && self.all_dead(&others[..n], me) {
            self.gone_at.set(u64::MAX);
            return Err(SendError::BrokenPipe);
        }
        self.gone_at.set(1 + 2 * own);
        Ok(())
    }

    /// Whether every process named by `entries` has died (a pidfd poll each; the
    /// pidfds are kept for the next check).
    fn all_dead(&self, entries: &[u64], me: u32) -> bool {
        let Ok(mut procs) = self.peer_procs.try_borrow_mut() else {
            return false;
        };
        procs.retain(|(v, _)| entries.contains(v));
        let mut all_dead = true;
        for &v in entries {
            if v as u32 == me {
                all_dead = false;
                continue;
            }
            let known = procs.iter().position(|(w, _)| *w == v);
            let i = known.unwrap_or_else(|| {
                let p = if !entry_alive(v) {
                    PeerProc::Dead
                } else {
                    match proc::Pidfd::open(v as u32) {
                        Ok(fd) => PeerProc::Watched(fd),
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => PeerProc::Dead,
                        Err(_) => PeerProc::Unwatched,
                    }
                };
                procs.push((v, p));
                procs.len() - 1
            });
            let dead = match &procs[i].1 {
                PeerProc::Dead => true,
                PeerProc::Watched(fd) => fd.exited(),
                PeerProc::Unwatched => !entry_alive(v),
            };
            if dead {
                procs[i].1 = PeerProc::Dead;
            } else {
                all_dead = false;
            }
        }
        all_dead
    }

    /// The other end's holders.
    fn peer(&self) -> &Holders {
        self.reg.shared.holders(1 - self.reg.end)
    }

    /// Cheap: the other end was attached once and every holder has closed it.
    #[inline]
    fn peer_gone(&self) -> bool {
        let h = self.peer();
        h.ever.load(Ordering::Acquire) != 0
            && h.entries.iter().all(|e| e.load(Ordering::Acquire) == 0)
    }

    /// Expensive (reads /proc): the other end was attached once and every holder has
    /// closed it, died, or is this process holding an inherited copy it never used.
    fn peer_dead(&self) -> bool {
        let h = self.peer();
        if h.ever.load(Ordering::Acquire) == 0 {
            return false;
        }
        let me = proc::cached_pid();
        h.entries.iter().all(|e| {
            let v = e.load(Ordering::Acquire);
            v == 0 || own_unused_copy(v, me) || !entry_alive(v)
        })
    }

    fn deadline(timeout: Option<Duration>) -> Option<Deadline> {
        timeout.map(Deadline::after)
    }

    #[inline]
    fn writer(&self) -> Result<&Writer, SendError> {
        if self.closed.get() {
            return Err(SendError::Closed);
        }
        self.tx.as_ref().ok_or(SendError::ReceiveOnly)
    }

    #[inline]
    fn reader(&self) -> Result<&Reader, RecvError> {
        if self.closed.get() {
            return Err(RecvError::Closed);
        }
        self.rx.as_ref().ok_or(RecvError::SendOnly)
    }

    /// Writes one record, waiting for room until `deadline` (the first try inline,
    /// the wait out of line).
    #[inline]
    fn write_record(
        &self,
        tx: &Writer,
        fragment: &[u8],
        flags: u32,
        deadline: Option<Deadline>,
    ) -> Result<(), SendError> {
        if !tx.try_write(fragment, flags) {
            self.wait_to_write(tx, fragment, flags, deadline)?;
        }
        tx.ring().readable().notify_one();
        Ok(())
    }

    #[inline(never)]
    fn wait_to_write(
        &self,
        tx: &Writer,
        fragment: &[u8],
        flags: u32,
        deadline: Option<Deadline>,
    ) -> Result<(), SendError> {
        // Each poll returns a bool (written, or the peer is gone), and checks for
        // the peer as `wait_for_record` does.
        let peer = PeerCheck::default();
        let ready = || {
            if tx.try_write(fragment, flags) {
                Some(true)
            } else if peer.due() && self.peer_gone() {
                Some(false)
            } else {
                None
            }
        };
        let on_stall = || {
            peer.spun.set(true);
            self.peer_dead().then_some(false)
        };
        match tx
            .ring()
            .writable()
            .wait_until_checked(self.spin.get(), deadline, ready, on_stall)
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(SendError::BrokenPipe),
            Err(_) => Err(SendError::Timeout),
        }
    }

    #[inline]
    fn send_message(&self, msg: &[u8], deadline: Option<Deadline>) -> Result<(), SendError> {
        let tx = self.writer()?;
        self.mark_active();
        self.check_peer(tx)?;
        if msg.len() <= tx.ring().max_fragment() {
            return self.write_record(tx, msg, FIRST, deadline);
        }
        self.send_fragments(tx, msg, deadline)
    }

    /// Sends a message longer than a fragment, in fragments.
    #[inline(never)]
    fn send_fragments(
        &self,
        tx: &Writer,
        msg: &[u8],
        deadline: Option<Deadline>,
    ) -> Result<(), SendError> {
        let max = tx.ring().max_fragment();
        let mut chunks = msg.chunks(max).peekable();
        let mut flags = FIRST;
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_some() {
                flags |= MORE;
            } else {
                flags &= !MORE;
            }
            self.write_record(tx, chunk, flags, deadline)?;
            flags &= !FIRST;
        }
        Ok(())
    }

    /// Sends a message of bytes, waiting for room (Python's `send_bytes(buf)`).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`], [`SendError::ReceiveOnly`], [`SendError::BrokenPipe`].
    pub fn send_bytes(&self, buf: &[u8]) -> Result<(), SendError> {
        self.send_message(buf, None)
    }

    /// Sends `buf[offset .. offset + size]` (all the rest if `size` is `None`), with
    /// Python's checks: a negative or out-of-range offset or size is an error saying
    /// which.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidArgument`]; as for [`send_bytes`](Connection::send_bytes).
    pub fn send_bytes_range(
        &self,
        buf: &[u8],
        offset: i64,
        size: Option<i64>,
    ) -> Result<(), SendError> {
        let len = buf.len() as i64;
        if offset < 0 {
            return Err(SendError::InvalidArgument(format!(
                "offset is negative ({offset})"
            )));
        }
        if offset > len {
            return Err(SendError::InvalidArgument(format!(
                "offset {offset} is beyond the buffer of {len} bytes"
            )));
        }
        let size = match size {
            None => len - offset,
            Some(s) if s < 0 => {
                return Err(SendError::InvalidArgument(format!(
                    "size is negative ({s})"
                )));
            }
            Some(s) if offset + s > len => {
                return Err(SendError::InvalidArgument(format!(
                    "offset {offset} + size {s} is beyond the buffer of {len} bytes"
                )));
            }
            Some(s) => s,
        };
        self.send_bytes(&buf[offset as usize..(offset + size) as usize])
    }

    /// [`send_bytes`](Connection::send_bytes), waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] (part of a long message may have been sent: the
    /// receiver then waits for the rest); as for `send_bytes`.
    pub fn send_bytes_timeout(&self, buf: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_message(buf, Connection::deadline(Some(timeout)))
    }

    /// Sends a plain-old-data value (Python's `send(obj)` for values that need no
    /// pickling).
    ///
    /// # Errors
    ///
    /// As for [`send_bytes`](Connection::send_bytes).
    #[inline]
    pub fn send<T: Pod>(&self, value: &T) -> Result<(), SendError> {
        self.send_message(bytemuck::bytes_of(value), None)
    }

    /// Encodes a serde value with postcard and sends it (Python's `send(obj)` for
    /// any picklable object; feature `serde`).
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidArgument`] if the value cannot be encoded (reported here,
    /// never later); as for [`send_bytes`](Connection::send_bytes).
    #[cfg(feature = "serde")]
    pub fn send_obj<T: serde::Serialize>(&self, value: &T) -> Result<(), SendError> {
        let bytes = postcard::to_allocvec(value)
            .map_err(|e| SendError::InvalidArgument(format!("cannot encode the value: {e}")))?;
        self.send_bytes(&bytes)
    }

    /// Receives a message sent with [`send_obj`](Connection::send_obj) and decodes
    /// it (feature `serde`).
    ///
    /// # Errors
    ///
    /// [`RecvError::Corrupt`] if it does not decode as a `T` (it is consumed); as for
    /// [`recv_bytes`](Connection::recv_bytes).
    #[cfg(feature = "serde")]
    pub fn recv_obj<T: serde::de::DeserializeOwned>(&self) -> Result<T, RecvError> {
        let bytes = self.recv_bytes()?;
        postcard::from_bytes(&bytes).map_err(|e| {
            RecvError::Corrupt(format!(
                "message does not decode as {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// Waits for the first record of a message, or EOF.
    #[inline]
    fn next_record(&self, rx: &Reader, deadline: Option<Deadline>) -> Result<Record, RecvError> {
        if let Some(rec) = rx.peek()? {
            return Ok(rec);
        }
        self.wait_for_record(rx, deadline, |rec| rec)
    }

    /// Waits for a record, or EOF, and hands it to `take` at once, inside the poll
    /// loop. Each poll returns a small value (errors wait in a cell beside it): with
    /// a `Result<_, RecvError>` as the poll's return value, which goes through memory,
    /// an 8-byte ping-pong took 200–210 ns a round trip instead of 160–170 (the
    /// raw ring's own figure).
    ///
    /// Whether the peer has closed is looked at as [`PeerCheck`] says.
    #[inline(never)]
    fn wait_for_record<R>(
        &self,
        rx: &Reader,
        deadline: Option<Deadline>,
        take: impl Fn(Record) -> R,
    ) -> Result<R, RecvError> {
        // The poll returns `Some(None)` for an error or EOF, which it leaves here:
        // a small return value keeps each poll cheap (a `Result` holding a
        // `RecvError` goes through memory).
        let failed: Cell<Option<RecvError>> = Cell::new(None);
        let fail = |e: RecvError| {
            failed.set(Some(e));
            Some(None)
        };
        let peer = PeerCheck::default();
        let finish = || match rx.peek() {
            Ok(Some(rec)) => Some(Some(take(rec))),
            Ok(None) => fail(RecvError::Eof),
            Err(e) => fail(e.into()),
        };
        let ready = || match rx.peek() {
            Ok(Some(rec)) => Some(Some(take(rec))),
            Err(e) => fail(e.into()),
            Ok(None) if peer.due() && self.peer_gone() => finish(),
            Ok(None) => None,
        };
        let on_stall = || {
            peer.spun.set(true);
            if !self.peer_dead() {
                return None;
            }
            finish()
        };
        match rx
            .ring()
            .readable()
            .wait_until_checked(self.spin.get(), deadline, ready, on_stall)
        {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(failed.take().unwrap_or(RecvError::Eof)),
            Err(_) => Err(RecvError::Timeout),
        }
    }

    #[inline]
    fn consume(&self, rx: &Reader, rec: &Record) {
        rx.consume(rec);
        rx.ring().writable().notify_one();
    }

    /// Receives one whole message into `out` (cleared first). A message whose writer
    /// dies mid-way is discarded: [`RecvError::Eof`].
    fn recv_message(&self, out: &mut Vec<u8>, deadline: Option<Deadline>) -> Result<(), RecvError> {
        out.clear();
        self.recv_fragments(deadline, |bytes| out.extend_from_slice(bytes))
    }

    /// Receives one whole message, handing each fragment's bytes to `put` in order.
    /// A message whose writer dies mid-way ends in [`RecvError::Eof`].
    fn recv_fragments(
        &self,
        deadline: Option<Deadline>,
        mut put: impl FnMut(&[u8]),
    ) -> Result<(), RecvError> {
        let rx = self.reader()?;
        self.mark_active();
        let mut first = true;
        loop {
            let rec = self.next_record(rx, deadline)?;
            match (first, rec.flags & FIRST != 0) {
                (true, false) => {
                    // A stray fragment: dropped, so the next receive goes on.
                    self.consume(rx, &rec);
                    return Err(RecvError::Corrupt(
                        "a message fragment without its start".into(),
                    ));
                }
                // Left for the next receive, which it begins.
                (false, true) => {
                    return Err(RecvError::Corrupt(
                        "a new message began inside another".into(),
                    ));
                }
                _ => {}
            }
            put(rx.bytes(&rec));
            self.consume(rx, &rec);
            if rec.flags & MORE == 0 {
                return Ok(());
            }
            first = false;
        }
    }

    /// Receives a message of bytes, waiting for one (Python's `recv_bytes()`).
    ///
    /// # Errors
    ///
    /// [`RecvError::Eof`] once the other end is closed (or dead) and everything it
    /// sent was received; [`RecvError::Closed`], [`RecvError::SendOnly`],
    /// [`RecvError::Corrupt`].
    pub fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        let mut out = Vec::new();
        self.recv_message(&mut out, None)?;
        Ok(out)
    }

    /// [`recv_bytes`](Connection::recv_bytes), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvError::Timeout`]; as for `recv_bytes`.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let mut out = Vec::new();
        self.recv_message(&mut out, Connection::deadline(Some(timeout)))?;
        Ok(out)
    }

    /// Receives a message into `buf` from `offset` on and returns its length
    /// (Python's `recv_bytes_into`). No allocation when it fits.
    ///
    /// # Errors
    ///
    /// [`RecvError::BufferTooShort`] carrying the whole message if it does not fit;
    /// [`RecvError::InvalidArgument`] if `offset > buf.len()`; as for
    /// [`recv_bytes`](Connection::recv_bytes).
    pub fn recv_bytes_into(&self, buf: &mut [u8], offset: usize) -> Result<usize, RecvError> {
        if offset > buf.len() {
            return Err(RecvError::InvalidArgument(format!(
                "offset {offset} is beyond the buffer of {} bytes",
                buf.len()
            )));
        }
        // Fragments go straight into `buf`; only if the message outgrows it are they
        // gathered in a Vec, which the error then carries whole.
        let dest = &mut buf[offset..];
        let mut written = 0;
        let mut overflow: Option<Vec<u8>> = None;
        self.recv_fragments(None, |bytes| match &mut overflow {
            None if written + bytes.len() <= dest.len() => {
                dest[written..written + bytes.len()].copy_from_slice(bytes);
                written += bytes.len();
            }
            None => {
                let mut whole = dest[..written].to_vec();
                whole.extend_from_slice(bytes);
                overflow = Some(whole);
            }
            Some(whole) => whole.extend_from_slice(bytes),
        })?;
        match overflow {
            Some(whole) => Err(RecvError::BufferTooShort(whole)),
            None => Ok(written),
        }
    }

    /// Receives a plain-old-data value sent with [`send`](Connection::send).
    ///
    /// # Errors
    ///
    /// [`RecvError::WrongSize`] if the message is not `size_of::<T>()` bytes (it is
    /// consumed); as for [`recv_bytes`](Connection::recv_bytes).
    #[inline]
    pub fn recv<T: Pod>(&self) -> Result<T, RecvError> {
        self.recv_value(None)
    }

    /// [`recv`](Connection::recv), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvError::Timeout`]; as for `recv`.
    pub fn recv_timeout<T: Pod>(&self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_value(Connection::deadline(Some(timeout)))
    }

    #[inline]
    fn recv_value<T: Pod>(&self, deadline: Option<Deadline>) -> Result<T, RecvError> {
        let rx = self.reader()?;
        self.mark_active();
        let got = match rx.peek()? {
            Some(rec) => self.take_value::<T>(rx, rec),
            None => self.wait_for_record(rx, deadline, |rec| self.take_value::<T>(rx, rec))?,
        };
        match got {
            Some(v) => Ok(v),
            None => self.wrong_size(size_of::<T>(), deadline),
        }
    }

    /// Reads and consumes `rec` if it is a whole message of `size_of::<T>()` bytes.
    #[inline]
    fn take_value<T: Pod>(&self, rx: &Reader, rec: Record) -> Option<T> {
        if rec.flags != FIRST || rec.len != size_of::<T>() {
            return None;
        }
        let v = bytemuck::pod_read_unaligned(rx.bytes(&rec));
        self.consume(rx, &rec);
        Some(v)
    }

    /// Receives (and drops) a message that is not the size `recv` expected.
    #[cold]
    fn wrong_size<T>(&self, expected: usize, deadline: Option<Deadline>) -> Result<T, RecvError> {
        let mut whole = Vec::new();
        self.recv_message(&mut whole, deadline)?;
        Err(RecvError::WrongSize {
            expected,
            found: whole.len(),
        })
    }

    /// Whether a message (or EOF) is ready to be received, waiting up to `timeout`
    /// (`None`: as long as it takes; zero: just look). Never consumes anything.
    ///
    /// # Errors
    ///
    /// [`RecvError::Closed`], [`RecvError::SendOnly`], [`RecvError::Corrupt`].
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool, RecvError> {
        let rx = self.reader()?;
        let deadline = match timeout {
            Some(t) if t.is_zero() => {
                return Ok(rx.peek()?.is_some() || self.peer_gone() || self.peer_dead());
            }
            t => Connection::deadline(t),
        };
        match self.next_record(rx, deadline) {
            Ok(_) | Err(RecvError::Eof) => Ok(true),
            Err(RecvError::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The eventcount a waiter on this end sleeps on, for [`wait`].
    fn readable_event(&self) -> Option<&EventCount> {
        self.rx.as_ref().map(|r| r.ring().readable())
    }

    /// Whether a receive would not block: a record or EOF.
    fn ready_now(&self, thorough: bool) -> bool {
        match self.reader() {
            Ok(rx) => {
                !matches!(rx.peek(), Ok(None)) || self.peer_gone() || (thorough && self.peer_dead())
            }
            Err(_) => true,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.deregister();
    }
}

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
struct Exits {
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
    fn ended(&self, w: &(usize, u32, Option<usize>)) -> bool {
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

/// Pipe state for `shmproc inspect`.
fn describe(segment: &Segment) -> Vec<(&'static str, String)> {
    let l = segment.info().layout;
    let duplex = l.slot_size == 2;
    let ring_len = Spsc::bytes_for(l.capacity).unwrap_or(0);
    if layout(l.capacity, duplex).map(|x| x.payload_size) != Some(segment.payload_len() as u64) {
        return vec![("state", "payload is not a valid pipe".into())];
    }
    let mut rows = vec![(
        "directions",
        if duplex {
            "2 (duplex)".into()
        } else {
            "1 (one-way)".to_string()
        },
    )];
    for (i, label) in [(0usize, "to end A"), (1, "to end B")] {
        if i == 1 && !duplex {
            break;
        }
        // SAFETY: the payload holds 256 + (i + 1) * ring_len bytes (checked above).
        let p = unsafe {
            segment
                .payload()
                .add(size_of::<PipeControl>() + i * ring_len)
        };
        // SAFETY: live, 128-aligned ring memory of this capacity; we only load atomics.
        if let Ok(r) = unsafe { Spsc::attach(p, ring_len, l.capacity) } {
            rows.push((
                label,
                format!(
                    "{} of {} bytes queued, reader {} asleep, writer {} asleep",
                    r.used(),
                    r.capacity(),
                    r.readable().waiters(),
                    r.writable().waiters()
                ),
            ));
        }
    }
    // SAFETY: the payload starts with PipeControl (size checked above).
    let control = unsafe { &*segment.payload().as_ptr().cast::<PipeControl>() };
    for (i, label) in [(0usize, "end A held by"), (1, "end B held by")] {
        let holders: Vec<String> = control.ends[i]
            .entries
            .iter()
            .map(|e| e.load(Ordering::Acquire))
            .filter(|&v| v != 0)
            .map(|v| {
                format!(
                    "{} ({})",
                    v as u32,
                    if entry_alive(v) { "alive" } else { "dead" }
                )
            })
            .collect();
        rows.push((
            label,
            if holders.is_empty() {
                "nobody".into()
            } else {
                holders.join(", ")
            },
        ));
    }
    rows
}
