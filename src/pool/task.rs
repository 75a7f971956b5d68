//! Task and result messages, and the keyed MAC that lets a worker trust the code
//! addresses a task names.
//!
//! A task message is a header of five native-endian `u64`s followed by the items:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | address of the trampoline, a `Trampoline` monomorphized for `(T, R)` |
//! | 8..16 | address of the user's `fn(T) -> R` |
//! | 16..24 | task id (never 0) |
//! | 24..32 | item count |
//! | 32..40 | MAC over the four words above |
//! | 40.. | the items, `count × size_of::<T>()` bytes, unaligned |
//!
//! A result message is `task id: u64`, `worker pid: u32`, `kind: u32` (one of the
//! `RESULT_*` constants) and the payload: the results' bytes, or a UTF-8 message.
//!
//! # Why the addresses may be trusted
//!
//! Shared memory is input (the crate's trust model): a process that scribbles on the
//! task queue must never make a worker jump to an address of its choosing. The
//! parent draws a [`Key`] at `Pool::new`, before forking, and keeps it in private
//! memory only; workers inherit it through `fork` and it never enters a segment.
//! Every task carries a SipHash MAC of its addresses, id and count under that key,
//! and a worker calls through the addresses only after the MAC verifies. Without the
//! key, a valid MAC for addresses other than those the parent sent cannot be made
//! (SipHash is a keyed PRF; guessing a 64-bit tag succeeds with probability 2⁻⁶⁴).
//! A process may *replay* a task it saw, with other item bytes: that runs a function
//! the parent asked for, through the trampoline made for its very types, on items
//! that are plain-old-data (any bytes are valid) — wrong data at worst, never UB.

use bytemuck::Pod;
use std::hash::{BuildHasher, Hasher, RandomState};

/// Bytes of a task message's header.
pub(super) const TASK_HEADER: usize = 40;
/// Bytes of a result message's header.
pub(super) const RESULT_HEADER: usize = 16;

/// Result kinds.
pub(super) const RESULT_OK: u32 = 0;
/// The function panicked; the payload is the message.
pub(super) const RESULT_PANIC: u32 = 1;
/// The worker refused the task (bad MAC or size); the payload says why.
pub(super) const RESULT_CORRUPT: u32 = 2;
/// The initializer panicked (task id 0); the payload is the message.
pub(super) const RESULT_INIT: u32 = 3;

/// Runs the `fn(T) -> R` at `func` over `count` items in `items`, appending the
/// results' bytes to `out`.
///
/// # Safety
///
/// `func` must be the address of an `fn(T) -> R` of this program, for the very `T`
/// and `R` the trampoline was instantiated with.
pub(super) type Trampoline =
    unsafe fn(func: usize, items: &[u8], count: usize, out: &mut Vec<u8>) -> Result<(), String>;

/// The [`Trampoline`] for `fn(T) -> R`.
///
/// # Safety
///
/// As for [`Trampoline`].
pub(super) unsafe fn trampoline<T: Pod, R: Pod>(
    func: usize,
    items: &[u8],
    count: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let size = size_of::<T>();
    if count.checked_mul(size) != Some(items.len()) {
        return Err(format!(
            "{} bytes of items do not hold {count} items of {size} bytes",
            items.len()
        ));
    }
    // SAFETY: the caller guarantees `func` is the address of an `fn(T) -> R` of this
    // program; fn pointers and usize have the same size on every Linux target.
    let f = unsafe { std::mem::transmute::<usize, fn(T) -> R>(func) };
    out.reserve(count.saturating_mul(size_of::<R>()));
    for i in 0..count {
        let item: T = bytemuck::pod_read_unaligned(&items[i * size..(i + 1) * size]);
        out.extend_from_slice(bytemuck::bytes_of(&f(item)));
    }
    Ok(())
}

/// The pool's secret: a SipHash key from the standard library's `RandomState` and 16
/// more bytes from `getrandom(2)` hashed ahead of every message (so that a process
/// forked from the same thread before the pool, which could predict the
/// `RandomState` keys, still cannot). Lives in private memory only.
#[derive(Clone)]
pub(super) struct Key {
    hasher: RandomState,
    secret: [u8; 16],
}

impl Key {
    /// A fresh key.
    pub(super) fn new() -> std::io::Result<Key> {
        let mut secret = [0u8; 16];
        crate::os::random::fill(&mut secret)?;
        Ok(Key {
            hasher: RandomState::new(),
            secret,
        })
    }

    /// The MAC of a task's header words.
    fn mac(&self, words: [u64; 4]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(&self.secret);
        for w in words {
            h.write_u64(w);
        }
        h.finish()
    }
}

/// Encodes a task: the trampoline for `fn(T) -> R`, `func`, `id` and `items`.
pub(super) fn encode<T: Pod, R: Pod>(key: &Key, func: fn(T) -> R, id: u64, items: &[T]) -> Vec<u8> {
    let tramp: Trampoline = trampoline::<T, R>;
    let words = [
        tramp as usize as u64,
        func as usize as u64,
        id,
        items.len() as u64,
    ];
    let bytes: &[u8] = bytemuck::cast_slice(items);
    let mut msg = Vec::with_capacity(TASK_HEADER + bytes.len());
    for w in words {
        msg.extend_from_slice(&w.to_ne_bytes());
    }
    msg.extend_from_slice(&key.mac(words).to_ne_bytes());
    msg.extend_from_slice(bytes);
    msg
}

/// A task message whose MAC verified.
pub(super) struct Task<'a> {
    tramp: usize,
    func: usize,
    /// The task id.
    pub(super) id: u64,
    count: usize,
    items: &'a [u8],
}

/// Word `i` of a message at least `8 × (i + 1)` bytes long.
fn word(msg: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&msg[i * 8..i * 8 + 8]);
    u64::from_ne_bytes(w)
}

/// Checks a task message: its size and its MAC. On failure, the id it claims (0 if
/// none) and why.
pub(super) fn verify<'a>(key: &Key, msg: &'a [u8]) -> Result<Task<'a>, (u64, String)> {
    if msg.len() < TASK_HEADER {
        return Err((0, format!("task message of {} bytes", msg.len())));
    }
    let words = [word(msg, 0), word(msg, 1), word(msg, 2), word(msg, 3)];
    if key.mac(words) != word(msg, 4) {
        return Err((words[2], "task message fails its MAC".to_string()));
    }
    let (Ok(tramp), Ok(func), Ok(count)) = (
        usize::try_from(words[0]),
        usize::try_from(words[1]),
        usize::try_from(words[3]),
    ) else {
        return Err((words[2], "task words out of range".to_string()));
    };
    Ok(Task {
        tramp,
        func,
        id: words[2],
        count,
        items: &msg[TASK_HEADER..],
    })
}

impl Task<'_> {
    /// Runs the task, appending the results' bytes to `out`.
    pub(super) fn run(&self, out: &mut Vec<u8>) -> Result<(), String> {
        // SAFETY: `verify` checked the MAC under the pool's key, which only the
        // pool's parent (and its forked workers) hold, in private memory: so
        // `tramp` and `func` are the words `encode` wrote, the addresses of
        // `trampoline::<T, R>` and of an `fn(T) -> R` for the same `T` and `R`, in
        // this program, whose address space workers share with the parent through
        // `fork`. A transmuted fn-pointer from those words is the original one.
        let tramp = unsafe { std::mem::transmute::<usize, Trampoline>(self.tramp) };
        // SAFETY: as above, `func` is an `fn(T) -> R` for the trampoline's `T`, `R`.
        unsafe { tramp(self.func, self.items, self.count, out) }
    }
}

/// Encodes a result message into `msg` (cleared first).
pub(super) fn encode_result(msg: &mut Vec<u8>, id: u64, pid: u32, kind: u32, payload: &[u8]) {
    msg.clear();
    msg.extend_from_slice(&id.to_ne_bytes());
    msg.extend_from_slice(&pid.to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(payload);
}

/// A result message's parts: (task id, pid, kind, payload). `None` if too short.
pub(super) fn decode_result(msg: &[u8]) -> Option<(u64, u32, u32, &[u8])> {
    if msg.len() < RESULT_HEADER {
        return None;
    }
    let id = word(msg, 0);
    let rest = word(msg, 1);
    let pid = u32::from_ne_bytes(rest.to_ne_bytes()[0..4].try_into().ok()?);
    let kind = u32::from_ne_bytes(rest.to_ne_bytes()[4..8].try_into().ok()?);
    Some((id, pid, kind, &msg[RESULT_HEADER..]))
}

/// Decodes `count` results of type `R` from `bytes`.
pub(super) fn decode_items<R: Pod>(
    bytes: &[u8],
    count: usize,
    out: &mut Vec<R>,
) -> Result<(), String> {
    let size = size_of::<R>();
    if count.checked_mul(size) != Some(bytes.len()) {
        return Err(format!(
            "{} bytes of results for {count} items of {size} bytes",
            bytes.len()
        ));
    }
    out.extend(
        (0..count).map(|i| bytemuck::pod_read_unaligned::<R>(&bytes[i * size..(i + 1) * size])),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }

    #[test]
    fn a_task_round_trips_and_a_forged_one_is_refused() {
        let key = Key::new().unwrap();
        let msg = encode(&key, square as fn(u64) -> u64, 7, &[1u64, 2, 3]);
        let task = verify(&key, &msg).ok().unwrap();
        assert_eq!(task.id, 7);
        let mut out = Vec::new();
        task.run(&mut out).unwrap();
        let mut got = Vec::new();
        decode_items::<u64>(&out, 3, &mut got).unwrap();
        assert_eq!(got, [1, 4, 9]);

        // Another key, a changed address, a changed id: all refused.
        let other = Key::new().unwrap();
        assert!(verify(&other, &msg).is_err());
        for at in [0, 8, 16, 24, 32] {
            let mut bad = msg.clone();
            bad[at] ^= 1;
            assert!(verify(&key, &bad).is_err(), "flip at {at}");
        }
        assert!(verify(&key, &msg[..39]).is_err());
        // Changed items still verify (plain data) and a wrong length is caught.
        let mut short = msg.clone();
        short.pop();
        assert!(verify(&key, &short).ok().unwrap().run(&mut out).is_err());
    }
}
