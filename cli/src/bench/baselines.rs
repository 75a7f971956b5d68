//! The floor, the ceilings and the OS: what shmproc is measured against that is not
//! another library — a raw busy-spin ring and one bounced atomic in shared memory, a
//! bare futex wake, single-thread memcpy, an anonymous pipe and a Unix stream socket
//! with length-prefixed frames.

use super::harness::{BenchResult, Sample, Shm, err, expect_seq};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Writes `i` into the first and the last 8 bytes of a message (the same bytes for
/// an 8-byte message), so a consumer can see both order and tearing.
#[inline]
pub fn stamp(buf: &mut [u8], i: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&i.to_le_bytes());
    buf[n - 8..].copy_from_slice(&i.to_le_bytes());
}

/// The sequence number [`stamp`]ed into a message; an error if its two copies
/// differ (a torn message).
#[inline]
pub fn read_stamp(buf: &[u8]) -> BenchResult<u64> {
    if buf.len() < 8 {
        return Err(format!(
            "message of {} bytes, expected at least 8",
            buf.len()
        ));
    }
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let (first, last) = (word(&buf[..8]), word(&buf[buf.len() - 8..]));
    if first == last {
        Ok(first)
    } else {
        Err(format!("torn message: starts as {first}, ends as {last}"))
    }
}

/// The simplest busy-spin single-producer single-consumer ring: two indices on their
/// own lines, each side caching the other's, fixed-size slots, no waiting but spinning.
pub struct RawRing<'a> {
    /// Messages written (producer's index).
    tail: &'a AtomicU64,
    /// Messages read (consumer's index).
    head: &'a AtomicU64,
    data: *mut u8,
    slot: usize,
    cap: u64,
}

impl<'a> RawRing<'a> {
    /// A ring of `cap` slots of `slot` bytes in `shm` (whose data area must hold
    /// `cap * slot` bytes).
    pub fn new(shm: &'a Shm, slot: usize, cap: u64) -> RawRing<'a> {
        let ctl = shm.ctl();
        RawRing {
            tail: &ctl.a,
            head: &ctl.b,
            data: shm.data(),
            slot,
            cap,
        }
    }

    fn slot_ptr(&self, index: u64) -> *mut u8 {
        // SAFETY: index % cap < cap, and the data area holds cap * slot bytes.
        unsafe { self.data.add((index % self.cap) as usize * self.slot) }
    }

    /// Producer: copies `msg` into the next slot, spinning while the ring is full.
    /// `tail` and `head_seen` are the producer's own copies.
    #[inline]
    pub fn push(&self, msg: &[u8], tail: &mut u64, head_seen: &mut u64) {
        while *tail - *head_seen == self.cap {
            // Paired with the consumer's Release store of head: the slot is free.
            *head_seen = self.head.load(Ordering::Acquire);
            std::hint::spin_loop();
        }
        // SAFETY: the slot is free (tail - head < cap) and only this producer writes
        // it until the Release store below hands it to the consumer; msg.len() <= slot.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.slot_ptr(*tail), msg.len()) };
        *tail += 1;
        // Publishes the slot; paired with the consumer's Acquire load of tail.
        self.tail.store(*tail, Ordering::Release);
    }

    /// Consumer: copies the next message into `out`, spinning while the ring is empty.
    #[inline]
    pub fn pop(&self, out: &mut [u8], head: &mut u64, tail_seen: &mut u64) {
        while *head == *tail_seen {
            // Paired with the producer's Release store of tail: the slot is written.
            *tail_seen = self.tail.load(Ordering::Acquire);
            std::hint::spin_loop();
        }
        // SAFETY: the slot was published (head < tail) and the producer does not touch
        // it until the Release store of head below; out.len() <= slot.
        unsafe { std::ptr::copy_nonoverlapping(self.slot_ptr(*head), out.as_mut_ptr(), out.len()) };
        *head += 1;
        // Frees the slot; paired with the producer's Acquire load of head.
        self.head.store(*head, Ordering::Release);
    }

    /// Consumer: reads the next message (`len` bytes) in place with `read`, spinning
    /// while the ring is empty, and frees slots `batch` at a time (and whenever it has
    /// caught up with the producer), so the line of `head` moves less often.
    #[inline]
    pub fn pop_in_place<R>(
        &self,
        len: usize,
        head: &mut u64,
        tail_seen: &mut u64,
        batch: u64,
        read: impl FnOnce(&[u8]) -> R,
    ) -> R {
        while *head == *tail_seen {
            // Paired with the producer's Release store of tail: the slot is written.
            *tail_seen = self.tail.load(Ordering::Acquire);
            std::hint::spin_loop();
        }
        // SAFETY: the slot was published (head < tail) and the producer does not write
        // it until a Release store of head past it; len <= slot. The slice does not
        // outlive this call.
        let r = read(unsafe { std::slice::from_raw_parts(self.slot_ptr(*head), len) });
        *head += 1;
        if *head % batch == 0 || *head == *tail_seen {
            // Frees the slots read so far; paired with the producer's Acquire load of
            // head.
            self.head.store(*head, Ordering::Release);
        }
        r
    }
}

/// Throughput of the raw ring between two processes: `size`-byte messages copied in
/// and copied out, `cap` slots.
pub fn raw_ring_one_way(total: u64, warm: u64, size: usize, cap: u64) -> BenchResult<Sample> {
    let shm = Shm::new(size * cap as usize)?;
    let ring = RawRing::new(&shm, size, cap);
    let mut msg = vec![0u8; size];
    let mut out = vec![0u8; size];
    let (mut tail, mut head_seen, mut head, mut tail_seen) = (0, 0, 0, 0);
    super::harness::one_way(
        total,
        warm,
        size as u64,
        |i| {
            stamp(&mut msg, i);
            ring.push(&msg, &mut tail, &mut head_seen);
            Ok(())
        },
        || {
            ring.pop(&mut out, &mut head, &mut tail_seen);
            read_stamp(&out)
        },
    )
}

/// The raw ring's best at `size` bytes: the fastest of copy in + copy out
/// ([`raw_ring_one_way`]), copy in + read in place, and copy in + read in place
/// freeing slots 16 at a time — so the ceiling is not a ceiling only for one way of
/// moving big messages (at 4 KiB, copying out as well doubles the traffic).
pub fn raw_ring_best(total: u64, warm: u64, size: usize, cap: u64) -> BenchResult<Sample> {
    let rate = |s: &Sample| match s {
        Sample::Rate { msgs, secs, .. } => *msgs as f64 / secs,
        Sample::Latency(_) => 0.0,
    };
    // SHMPROC_BENCH_VARIANTS set: each variant's rate on stderr.
    let show = std::env::var_os("SHMPROC_BENCH_VARIANTS").is_some();
    let mut best = raw_ring_one_way(total, warm, size, cap)?;
    if show {
        eprintln!(
            "raw ring {size} B, copy in + out: {:.3e} msgs/s",
            rate(&best)
        );
    }
    for batch in [1, 16] {
        let s = raw_ring_in_place(total, warm, size, cap, batch)?;
        if show {
            eprintln!(
                "raw ring {size} B, read in place, frees {batch} at a time: {:.3e} msgs/s",
                rate(&s)
            );
        }
        if rate(&s) > rate(&best) {
            best = s;
        }
    }
    Ok(best)
}

/// The raw ring with the consumer reading each message in place (its stamp, as the
/// in-place readers of the other systems do) and freeing slots `batch` at a time.
fn raw_ring_in_place(
    total: u64,
    warm: u64,
    size: usize,
    cap: u64,
    batch: u64,
) -> BenchResult<Sample> {
    let shm = Shm::new(size * cap as usize)?;
    let ring = RawRing::new(&shm, size, cap);
    let mut msg = vec![0u8; size];
    let (mut tail, mut head_seen, mut head, mut tail_seen) = (0, 0, 0, 0);
    super::harness::one_way(
        total,
        warm,
        size as u64,
        |i| {
            stamp(&mut msg, i);
            ring.push(&msg, &mut tail, &mut head_seen);
            Ok(())
        },
        || ring.pop_in_place(size, &mut head, &mut tail_seen, batch, read_stamp),
    )
}

/// The round-trip floor: two processes bouncing one atomic word. The parent stores
/// 2i+1 and spins until it reads 2i+2; the child waits for 2i+1 and stores 2i+2.
pub fn atomic_bounce(trips: u64, warm: u64) -> BenchResult<Sample> {
    let shm = Shm::new(0)?;
    let word = &*shm.ctl().a;
    let spin_until = |v: u64| {
        // Paired with the other side's Release store.
        while word.load(Ordering::Acquire) != v {
            std::hint::spin_loop();
        }
    };
    super::harness::round_trips(
        trips,
        warm,
        |i| {
            spin_until(2 * i + 1);
            word.store(2 * i + 2, Ordering::Release);
            Ok(())
        },
        |i| {
            word.store(2 * i + 1, Ordering::Release);
            spin_until(2 * i + 2);
            Ok(())
        },
    )
}

/// FUTEX_WAIT on a shared (not private) word while it holds `val`.
fn futex_wait(word: &AtomicU32, val: u32) {
    // SAFETY: the address is a live, aligned u32 in shared memory; a null timeout
    // waits without a deadline; a spurious return is handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            val,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// FUTEX_WAKE of one waiter on a shared word.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: the address is a live, aligned u32; FUTEX_WAKE only reads its address.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// The bare wake-up: the parent sleeps in FUTEX_WAIT on a word in shared memory; the
/// child stores a timestamp, bumps the word and calls FUTEX_WAKE.
pub fn futex_wakes(samples: u64, warm: u64, gap: std::time::Duration) -> BenchResult<Sample> {
    let shm = Shm::new(0)?;
    let ctl = shm.ctl();
    // SAFETY: the first 4 bytes of the 128-aligned line are an AtomicU64's low half;
    // nothing else uses `a` in this measurement, and every access is atomic.
    let word = unsafe { AtomicU32::from_ptr(ctl.a.as_ptr().cast::<u32>()) };
    let stamp_ns = &*ctl.b;
    // How many wake-ups the sleeper has taken: the waker never runs ahead of it (a
    // sleeper descheduled for longer than the gap would otherwise see two at once).
    let taken = &ctl.results[0];
    let mut seen = 0u32;
    super::harness::wakes(
        samples,
        warm,
        gap,
        |i, mut ts| {
            if taken.load(Ordering::Acquire) < i {
                while taken.load(Ordering::Acquire) < i {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                ts = super::harness::now_ns();
            }
            stamp_ns.store(ts, Ordering::Relaxed);
            // Publishes the timestamp; paired with the sleeper's Acquire load.
            word.store(i as u32 + 1, Ordering::Release);
            futex_wake(word);
            Ok(())
        },
        || loop {
            let v = word.load(Ordering::Acquire);
            if v != seen {
                seen = v;
                let sent = stamp_ns.load(Ordering::Relaxed);
                taken.store(u64::from(v), Ordering::Release);
                return Ok((u64::from(v) - 1, sent));
            }
            futex_wait(word, v);
        },
    )
}

/// Single-thread memcpy bandwidth: `size`-byte copies into a ring of four buffers
/// (the footprint of a four-message ring).
pub fn memcpy(total: u64, warm: u64, size: usize) -> BenchResult<Sample> {
    let src = vec![7u8; size];
    let mut dst = vec![0u8; size * 4];
    let mut secs = 0.0;
    let mut t0 = Instant::now();
    for i in 0..total {
        if i == warm {
            t0 = Instant::now();
        }
        let at = (i % 4) as usize * size;
        dst[at..at + size].copy_from_slice(&src);
        std::hint::black_box(&mut dst);
    }
    if total > warm {
        secs = t0.elapsed().as_secs_f64();
    }
    Ok(Sample::Rate {
        msgs: total - warm,
        msg_bytes: size as u64,
        secs: secs.max(1e-9),
    })
}

/// An anonymous pipe: (read end, write end).
pub fn os_pipe() -> BenchResult<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid [c_int; 2] to write.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}

/// A frame to send: an 8-byte length, then `size` bytes of message.
pub fn frame(size: usize) -> Vec<u8> {
    let mut f = vec![0u8; 8 + size];
    f[..8].copy_from_slice(&(size as u64).to_le_bytes());
    f
}

/// Stamps `i` into a [`frame`] and writes it whole (one write for small frames).
#[inline]
pub fn write_frame(mut w: impl Write, frame: &mut [u8], i: u64) -> BenchResult<()> {
    stamp(&mut frame[8..], i);
    w.write_all(frame).map_err(err)
}

/// Reads one frame into `buf` (which must be the message's size) and returns its
/// sequence number.
#[inline]
pub fn read_frame(r: &mut impl Read, buf: &mut [u8]) -> BenchResult<u64> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len).map_err(err)?;
    let len = u64::from_le_bytes(len);
    if len != buf.len() as u64 {
        return Err(format!("frame of {len} bytes, expected {}", buf.len()));
    }
    r.read_exact(buf).map_err(err)?;
    read_stamp(buf)
}

/// Throughput over a byte stream (pipe or socket): framed messages written one write
/// each, read through a 64 KiB buffer.
pub fn stream_one_way<S>(total: u64, warm: u64, size: usize, rx: S, tx: S) -> BenchResult<Sample>
where
    for<'s> &'s S: Read + Write,
{
    let mut f = frame(size);
    let mut buf = vec![0u8; size];
    let mut reader = BufReader::with_capacity(64 << 10, &rx);
    super::harness::one_way(
        total,
        warm,
        size as u64,
        |i| write_frame(&tx, &mut f, i),
        || read_frame(&mut reader, &mut buf),
    )
}

/// Round trips over two byte streams (`there` parent → child, `back` child → parent),
/// 8-byte framed messages.
pub fn stream_round_trips<S>(
    trips: u64,
    warm: u64,
    there: (S, S),
    back: (S, S),
) -> BenchResult<Sample>
where
    for<'s> &'s S: Read + Write,
{
    let (there_rx, there_tx) = there;
    let (back_rx, back_tx) = back;
    let (mut f_child, mut f_parent) = (frame(8), frame(8));
    let (mut b_child, mut b_parent) = ([0u8; 8], [0u8; 8]);
    let mut r_child = BufReader::with_capacity(64 << 10, &there_rx);
    let mut r_parent = BufReader::with_capacity(64 << 10, &back_rx);
    super::harness::round_trips(
        trips,
        warm,
        |i| {
            expect_seq(read_frame(&mut r_child, &mut b_child)?, i)?;
            write_frame(&back_tx, &mut f_child, i)
        },
        |i| {
            write_frame(&there_tx, &mut f_parent, i)?;
            expect_seq(read_frame(&mut r_parent, &mut b_parent)?, i)
        },
    )
}

/// Wake-ups over a pipe: the parent blocks in read(2); the child writes a 16-byte
/// frame holding (sequence, timestamp).
pub fn pipe_wakes(samples: u64, warm: u64, gap: std::time::Duration) -> BenchResult<Sample> {
    let (rx, tx) = os_pipe()?;
    let mut f = frame(16);
    let mut buf = [0u8; 16];
    let mut reader = &rx;
    super::harness::wakes(
        samples,
        warm,
        gap,
        |i, ts| {
            f[8..16].copy_from_slice(&i.to_le_bytes());
            f[16..24].copy_from_slice(&ts.to_le_bytes());
            (&tx).write_all(&f).map_err(err)
        },
        || {
            let mut len = [0u8; 8];
            reader.read_exact(&mut len).map_err(err)?;
            reader.read_exact(&mut buf).map_err(err)?;
            let ts = u64::from_le_bytes(buf[8..].try_into().map_err(err)?);
            Ok((read_stamp(&buf[..8])?, ts))
        },
    )
}
