//! [`Connection`]: one end of a pipe — send, receive, poll, close.

use crate::layout::header::{ObjectKind, ObjectLayout};
use crate::object::{Mismatch, Object};
use crate::os::clock::Deadline;
use crate::os::proc;
use crate::ring::spsc::{FIRST, MORE, Reader, Record, Spsc, Writer};
use crate::segment::{CreateError, CreateOptions, OpenError, OpenOptions, Segment};
use crate::wait::{EventCount, Spin};
use bytemuck::Pod;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::DEFAULT_CAPACITY;
use super::error::*;
use super::peer::*;
use super::registry::*;
use super::shared::*;

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
    pub(super) reg: Arc<Registration>,
    pub(super) tx: Option<Writer>,
    pub(super) rx: Option<Reader>,
    pub(super) closed: Cell<bool>,
    pub(super) spin: Cell<Spin>,
    /// The pid of the process that last marked this end as used (0: none yet), so
    /// the hot path checks one cell instead of the registry.
    pub(super) active_in: Cell<u32>,
    /// A send looks at the peer's registry when the peer's presence word is at most
    /// this (bit 0 set): `1 + 2 × n` where `n` counts this process's own unused
    /// inherited copies of the peer end, which do not keep the pipe from being broken
    /// (see [`Connection::check_peer`]). Recomputed by every look.
    pub(super) gone_at: Cell<u64>,
    /// Sends made through this handle (wrapping); every [`LIVENESS_EVERY`]th one
    /// checks whether the peer's holders are alive.
    pub(super) sends: Cell<u32>,
    /// Process descriptors of the peer's holders, by registry entry, for the
    /// liveness check.
    pub(super) peer_procs: RefCell<Vec<(u64, PeerProc)>>,
    /// The peer's read position at the last liveness check.
    pub(super) read_at_check: Cell<u64>,
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

pub(super) fn checked_layout(capacity: usize, duplex: bool) -> Result<ObjectLayout, CreateError> {
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

    /// The end's index: 0 for the creator's, 1 for the other.
    fn role(&self) -> u8 {
        self.reg.end as u8
    }

    fn attach_role(segment: Arc<Segment>, role: u8) -> Result<Connection, Mismatch> {
        if role > 1 {
            return Err(Mismatch::new("pipe end", "0 or 1", role));
        }
        Ok(Connection::end(
            Arc::new(PipeShared::attach(segment)?),
            usize::from(role),
        ))
    }

    fn inspect(segment: &Segment) -> Vec<(&'static str, String)> {
        describe(segment)
    }
}

impl Connection {
    pub(super) fn end(shared: Arc<PipeShared>, end: usize) -> Connection {
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
    #[inline(always)]
    pub(super) fn mark_active(&self) {
        let me = proc::cached_pid();
        if self.active_in.get() != me {
            self.first_use_here(me);
        }
    }

    /// The first send or receive through this handle in this process.
    #[cold]
    pub(super) fn first_use_here(&self, me: u32) {
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

    pub(super) fn deadline(timeout: Option<Duration>) -> Option<Deadline> {
        timeout.map(Deadline::after)
    }

    #[inline(always)]
    pub(super) fn writer(&self) -> Result<&Writer, SendTimeoutError> {
        if self.closed.get() {
            return Err(SendTimeoutError::Closed);
        }
        self.tx.as_ref().ok_or(SendTimeoutError::ReceiveOnly)
    }

    #[inline(always)]
    pub(super) fn reader(&self) -> Result<&Reader, RecvTimeoutError> {
        if self.closed.get() {
            return Err(RecvTimeoutError::Closed);
        }
        self.rx.as_ref().ok_or(RecvTimeoutError::SendOnly)
    }

    /// Writes one record, waiting for room until `deadline` (the first try inline,
    /// the wait out of line).
    #[inline(always)]
    pub(super) fn write_record(
        &self,
        tx: &Writer,
        fragment: &[u8],
        flags: u32,
        deadline: Option<Deadline>,
    ) -> Result<(), SendTimeoutError> {
        if !tx.try_write(fragment, flags) {
            self.wait_to_write(tx, fragment, flags, deadline)?;
        }
        tx.ring().readable().notify_one();
        Ok(())
    }

    #[inline(never)]
    pub(super) fn wait_to_write(
        &self,
        tx: &Writer,
        fragment: &[u8],
        flags: u32,
        deadline: Option<Deadline>,
    ) -> Result<(), SendTimeoutError> {
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
            peer.spin_over();
            self.peer_dead().then_some(false)
        };
        match tx
            .ring()
            .writable()
            .wait_until_checked(self.spin.get(), deadline, ready, on_stall)
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(SendTimeoutError::BrokenPipe),
            Err(_) => Err(SendTimeoutError::Timeout),
        }
    }

    #[inline(always)]
    pub(super) fn send_message(
        &self,
        msg: &[u8],
        deadline: Option<Deadline>,
    ) -> Result<(), SendTimeoutError> {
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
    pub(super) fn send_fragments(
        &self,
        tx: &Writer,
        msg: &[u8],
        deadline: Option<Deadline>,
    ) -> Result<(), SendTimeoutError> {
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
            .map_err(SendTimeoutError::blocking)
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
    /// [`SendTimeoutError::Timeout`] (part of a long message may have been sent: the
    /// receiver then waits for the rest); [`SendTimeoutError::Closed`],
    /// [`SendTimeoutError::ReceiveOnly`], [`SendTimeoutError::BrokenPipe`].
    pub fn send_bytes_timeout(
        &self,
        buf: &[u8],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
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
            .map_err(SendTimeoutError::blocking)
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
    pub(super) fn next_record(
        &self,
        rx: &Reader,
        deadline: Option<Deadline>,
    ) -> Result<Record, RecvTimeoutError> {
        if let Some(rec) = rx.peek()? {
            return Ok(rec);
        }
        self.wait_for_record(rx, deadline, |rec| rec)
    }

    /// Waits for a record, or EOF, and hands it to `take` at once, inside the poll
    /// loop. Each poll returns a small value (errors wait in a cell beside it): with
    /// a `Result<_, RecvTimeoutError>` as the poll's return value, which goes through memory,
    /// an 8-byte ping-pong took 200–210 ns a round trip instead of 160–170 (the
    /// raw ring's own figure).
    ///
    /// Whether the peer has closed is looked at as [`PeerCheck`] says.
    #[inline(never)]
    pub(super) fn wait_for_record<R>(
        &self,
        rx: &Reader,
        deadline: Option<Deadline>,
        take: impl Fn(Record) -> R,
    ) -> Result<R, RecvTimeoutError> {
        // The poll returns `Some(None)` for an error or EOF, which it leaves here:
        // a small return value keeps each poll cheap (a `Result` holding a
        // `RecvTimeoutError` goes through memory).
        let failed: Cell<Option<RecvTimeoutError>> = Cell::new(None);
        let fail = |e: RecvTimeoutError| {
            failed.set(Some(e));
            Some(None)
        };
        let peer = PeerCheck::default();
        let finish = || match rx.peek() {
            Ok(Some(rec)) => Some(Some(take(rec))),
            Ok(None) => fail(RecvTimeoutError::Eof),
            Err(e) => fail(e.into()),
        };
        let ready = || match rx.peek() {
            Ok(Some(rec)) => Some(Some(take(rec))),
            Err(e) => fail(e.into()),
            Ok(None) if peer.due() && self.peer_gone() => finish(),
            Ok(None) => None,
        };
        let on_stall = || {
            peer.spin_over();
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
            Ok(None) => Err(failed.take().unwrap_or(RecvTimeoutError::Eof)),
            Err(_) => Err(RecvTimeoutError::Timeout),
        }
    }

    #[inline(always)]
    pub(super) fn consume(&self, rx: &Reader, rec: &Record) {
        rx.consume(rec);
        rx.ring().writable().notify_one();
    }

    /// Receives one whole message into `out` (cleared first). A message whose writer
    /// dies mid-way is discarded: [`RecvTimeoutError::Eof`].
    pub(super) fn recv_message(
        &self,
        out: &mut Vec<u8>,
        deadline: Option<Deadline>,
    ) -> Result<(), RecvTimeoutError> {
        out.clear();
        self.recv_fragments(deadline, |rx, rec| rx.append_to(rec, out))
    }

    /// Receives one whole message, handing each fragment's bytes to `put` in order.
    /// A message whose writer dies mid-way ends in [`RecvTimeoutError::Eof`].
    pub(super) fn recv_fragments(
        &self,
        deadline: Option<Deadline>,
        mut put: impl FnMut(&Reader, &Record),
    ) -> Result<(), RecvTimeoutError> {
        let rx = self.reader()?;
        self.mark_active();
        let mut first = true;
        loop {
            let rec = self.next_record(rx, deadline)?;
            match (first, rec.flags() & FIRST != 0) {
                (true, false) => {
                    // A stray fragment: dropped, so the next receive goes on.
                    self.consume(rx, &rec);
                    return Err(RecvTimeoutError::Corrupt(
                        "a message fragment without its start".into(),
                    ));
                }
                // Left for the next receive, which it begins.
                (false, true) => {
                    return Err(RecvTimeoutError::Corrupt(
                        "a new message began inside another".into(),
                    ));
                }
                _ => {}
            }
            put(rx, &rec);
            self.consume(rx, &rec);
            if rec.flags() & MORE == 0 {
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
        self.recv_message(&mut out, None)
            .map_err(RecvTimeoutError::blocking)?;
        Ok(out)
    }

    /// [`recv_bytes`](Connection::recv_bytes), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`]; [`RecvTimeoutError::Eof`],
    /// [`RecvTimeoutError::Closed`], [`RecvTimeoutError::SendOnly`],
    /// [`RecvTimeoutError::Corrupt`] as for `recv_bytes`.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
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
        self.recv_fragments(None, |rx, rec| match &mut overflow {
            None if written + rec.len() <= dest.len() => {
                written += rx.copy_to(rec, &mut dest[written..written + rec.len()]);
            }
            None => {
                let mut whole = dest[..written].to_vec();
                rx.append_to(rec, &mut whole);
                overflow = Some(whole);
            }
            Some(whole) => rx.append_to(rec, whole),
        })
        .map_err(RecvTimeoutError::blocking)?;
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
        self.recv_value(None).map_err(RecvTimeoutError::blocking)
    }

    /// [`recv`](Connection::recv), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`]; [`RecvTimeoutError::WrongSize`] and the rest as
    /// for [`recv_bytes_timeout`](Connection::recv_bytes_timeout).
    pub fn recv_timeout<T: Pod>(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_value(Connection::deadline(Some(timeout)))
    }

    #[inline(always)]
    pub(super) fn recv_value<T: Pod>(
        &self,
        deadline: Option<Deadline>,
    ) -> Result<T, RecvTimeoutError> {
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
    #[inline(always)]
    pub(super) fn take_value<T: Pod>(&self, rx: &Reader, rec: Record) -> Option<T> {
        if rec.flags() != FIRST || rec.len() != size_of::<T>() {
            return None;
        }
        let mut v = T::zeroed();
        rx.copy_to(&rec, bytemuck::bytes_of_mut(&mut v));
        self.consume(rx, &rec);
        Some(v)
    }

    /// Receives (and drops) a message that is not the size `recv` expected.
    #[cold]
    pub(super) fn wrong_size<T>(
        &self,
        expected: usize,
        deadline: Option<Deadline>,
    ) -> Result<T, RecvTimeoutError> {
        let mut whole = Vec::new();
        self.recv_message(&mut whole, deadline)?;
        Err(RecvTimeoutError::WrongSize {
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
        let rx = self.reader().map_err(RecvTimeoutError::blocking)?;
        let deadline = match timeout {
            Some(t) if t.is_zero() => {
                return Ok(rx.peek()?.is_some() || self.peer_gone() || self.peer_dead());
            }
            t => Connection::deadline(t),
        };
        match self.next_record(rx, deadline) {
            Ok(_) | Err(RecvTimeoutError::Eof) => Ok(true),
            Err(RecvTimeoutError::Timeout) => Ok(false),
            Err(e) => Err(e.blocking()),
        }
    }

    /// The eventcount a waiter on this end sleeps on, for [`wait`].
    pub(super) fn readable_event(&self) -> Option<&EventCount> {
        self.rx.as_ref().map(|r| r.ring().readable())
    }

    /// Whether a receive would not block: a record or EOF.
    pub(super) fn ready_now(&self, thorough: bool) -> bool {
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
