//! Task and result messages, and the keyed MAC that lets a worker trust the code
//! addresses a task names.
//!
//! A task message is a header of five native-endian `u64`s followed by the items:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | code offset of the trampoline, a `Trampoline` monomorphized for `(T, R)` |
//! | 8..16 | code offset of the user's `fn(T) -> R` |
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
//! parent draws a `Key` at `Pool::new`, before starting workers, and keeps it in
//! private memory only; workers inherit it through `fork` or get it in their start
//! request (a socketpair only the parent holds), and it never enters a segment.
//!
//! Functions travel as code offsets (`crate::start`'s anchor): the same in every
//! process that runs the executable, so spawned and forkserver workers, whose
//! executable is mapped elsewhere, find the same functions as forked ones.
//! Every task carries a SipHash MAC of its addresses, id and count under that key,
//! and a worker calls through the addresses only after the MAC verifies. Without the
//! key, a valid MAC for addresses other than those the parent sent cannot be made
//! (SipHash is a keyed PRF; guessing a 64-bit tag succeeds with probability 2⁻⁶⁴).
//! A process may *replay* a task it saw, with other item bytes: that runs a function
//! the parent asked for, through the trampoline made for its very types, on items
//! that are plain-old-data (any bytes are valid) — wrong data at worst, never UB.

use crate::start::{code_address, code_offset};
use bytemuck::Pod;
use std::hash::Hasher;

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
/// Encoding or decoding a serde value failed, or a result was too large; the payload
/// says why.
pub(super) const RESULT_ENCODING: u32 = 4;

/// Why a trampoline did not run its task to the end.
#[derive(Debug)]
pub(super) enum Refused {
    /// The items' bytes do not hold what the task says (a scribbled message).
    Corrupt(String),
    /// Encoding or decoding a serde value failed.
    #[cfg_attr(
        not(feature = "serde"),
        expect(dead_code, reason = "only the serde trampoline refuses this way")
    )]
    Encoding(String),
}

/// Runs the function at `func` over `count` items encoded in `items`, appending the
/// encoded results to `out`.
///
/// # Safety
///
/// `func` must be the address of a function of this program of the very type the
/// trampoline was instantiated for (`fn(T) -> R` for [`trampoline`]`::<T, R>`…).
pub(super) type Trampoline =
    unsafe fn(func: usize, items: &[u8], count: usize, out: &mut Vec<u8>) -> Result<(), Refused>;

/// What a task carries: the trampoline, the function, and the encoded items.
pub(super) struct Body<'a> {
    tramp: Trampoline,
    func: usize,
    /// Items in the chunk.
    pub(super) count: usize,
    bytes: &'a [u8],
}

impl<'a> Body<'a> {
    /// `items` for `func`, copied as they are (plain-old-data).
    pub(super) fn pod<T: Pod, R: Pod>(func: fn(T) -> R, items: &'a [T]) -> Body<'a> {
        Body {
            tramp: trampoline::<T, R>,
            func: func as usize,
            count: items.len(),
            bytes: bytemuck::cast_slice(items),
        }
    }

    /// `count` pairs in `bytes` (from [`pair_bytes`]) for `func`.
    pub(super) fn pairs<A: Pod, B: Pod, R: Pod>(
        func: fn(A, B) -> R,
        count: usize,
        bytes: &'a [u8],
    ) -> Body<'a> {
        Body {
            tramp: pair_trampoline::<A, B, R>,
            func: func as usize,
            count,
            bytes,
        }
    }

    /// `count` serde values in `bytes` (from [`serde_bytes`]) for `func`.
    #[cfg(feature = "serde")]
    pub(super) fn serde<T, R>(func: fn(T) -> R, count: usize, bytes: &'a [u8]) -> Body<'a>
    where
        T: serde::de::DeserializeOwned,
        R: serde::Serialize,
    {
        Body {
            tramp: serde_trampoline::<T, R>,
            func: func as usize,
            count,
            bytes,
        }
    }
}

/// Checks that `items` holds `count` items of `size` bytes.
fn check_len(items: &[u8], count: usize, size: usize) -> Result<(), Refused> {
    if count.checked_mul(size) == Some(items.len()) {
        Ok(())
    } else {
        Err(Refused::Corrupt(format!(
            "{} bytes of items do not hold {count} items of {size} bytes",
            items.len()
        )))
    }
}

/// The [`Trampoline`] for `fn(T) -> R` over plain-old-data.
///
/// # Safety
///
/// `func` is the address of an `fn(T) -> R` of this program.
unsafe fn trampoline<T: Pod, R: Pod>(
    func: usize,
    items: &[u8],
    count: usize,
    out: &mut Vec<u8>,
) -> Result<(), Refused> {
    let size = size_of::<T>();
    check_len(items, count, size)?;
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

/// The items of a starmap: each pair's `A` then its `B`, unaligned.
pub(super) fn pair_bytes<A: Pod, B: Pod>(items: &[(A, B)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(items.len() * (size_of::<A>() + size_of::<B>()));
    for (a, b) in items {
        bytes.extend_from_slice(bytemuck::bytes_of(a));
        bytes.extend_from_slice(bytemuck::bytes_of(b));
    }
    bytes
}

/// The [`Trampoline`] for `fn(A, B) -> R` over pairs of plain-old-data.
///
/// # Safety
///
/// `func` is the address of an `fn(A, B) -> R` of this program.
unsafe fn pair_trampoline<A: Pod, B: Pod, R: Pod>(
    func: usize,
    items: &[u8],
    count: usize,
    out: &mut Vec<u8>,
) -> Result<(), Refused> {
    let (sa, sb) = (size_of::<A>(), size_of::<B>());
    check_len(items, count, sa + sb)?;
    // SAFETY: the caller guarantees `func` is the address of an `fn(A, B) -> R`.
    let f = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(func) };
    for i in 0..count {
        let at = i * (sa + sb);
        let a: A = bytemuck::pod_read_unaligned(&items[at..at + sa]);
        let b: B = bytemuck::pod_read_unaligned(&items[at + sa..at + sa + sb]);
        out.extend_from_slice(bytemuck::bytes_of(&f(a, b)));
    }
    Ok(())
}

/// The items of a serde map: the chunk as one postcard sequence.
#[cfg(feature = "serde")]
pub(super) fn serde_bytes<T: serde::Serialize>(items: &[T]) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(items).map_err(|e| format!("encoding an item: {e}"))
}

/// Decodes a serde chunk of `count` values.
#[cfg(feature = "serde")]
pub(super) fn decode_serde<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    count: usize,
) -> Result<Vec<T>, Refused> {
    let values: Vec<T> =
        postcard::from_bytes(bytes).map_err(|e| Refused::Encoding(format!("decoding: {e}")))?;
    if values.len() != count {
        return Err(Refused::Corrupt(format!(
            "{} values where {count} were sent",
            values.len()
        )));
    }
    Ok(values)
}

/// The [`Trampoline`] for `fn(T) -> R` over serde values (postcard).
///
/// # Safety
///
/// `func` is the address of an `fn(T) -> R` of this program.
#[cfg(feature = "serde")]
unsafe fn serde_trampoline<T, R>(
    func: usize,
    items: &[u8],
    count: usize,
    out: &mut Vec<u8>,
) -> Result<(), Refused>
where
    T: serde::de::DeserializeOwned,
    R: serde::Serialize,
{
    // SAFETY: the caller guarantees `func` is the address of an `fn(T) -> R`.
    let f = unsafe { std::mem::transmute::<usize, fn(T) -> R>(func) };
    let results: Vec<R> = decode_serde::<T>(items, count)?
        .into_iter()
        .map(f)
        .collect();
    let bytes = postcard::to_allocvec(&results)
        .map_err(|e| Refused::Encoding(format!("encoding a result: {e}")))?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// The pool's secret: a SipHash key from the standard library's `RandomState` and 16
/// more bytes from `getrandom(2)` hashed ahead of every message (so that a process
/// forked from the same thread before the pool, which could predict the
/// `RandomState` keys, still cannot). Lives in private memory only.
#[derive(Clone)]
pub(super) struct Key {
    /// SipHash-2-4's two key words.
    k0: u64,
    k1: u64,
}

impl Key {
    /// A fresh key.
    pub(super) fn new() -> std::io::Result<Key> {
        let mut secret = [0u8; 16];
        crate::os::random::fill(&mut secret)?;
        Ok(Key::from_words(
            u64::from_le_bytes(secret[..8].try_into().unwrap_or_default()),
            u64::from_le_bytes(secret[8..].try_into().unwrap_or_default()),
        ))
    }

    /// The key with these words (handed to a spawned worker).
    pub(super) fn from_words(k0: u64, k1: u64) -> Key {
        Key { k0, k1 }
    }

    /// The key's words, for a spawned worker's start request (a private channel).
    pub(super) fn words(&self) -> (u64, u64) {
        (self.k0, self.k1)
    }

    /// The MAC of a task's header words.
    fn mac(&self, words: [u64; 4]) -> u64 {
        // std's keyed SipHash-2-4: deprecated as a `Hasher` for hash maps, and the
        // PRF this MAC needs (a key that can travel, unlike RandomState's).
        #[allow(deprecated, reason = "SipHasher is std's only keyed SipHash")]
        let mut h = std::hash::SipHasher::new_with_keys(self.k0, self.k1);
        for w in words {
            h.write_u64(w);
        }
        h.finish()
    }
}

/// Encodes task `id` carrying `body`.
pub(super) fn encode(key: &Key, id: u64, body: &Body<'_>) -> Vec<u8> {
    let words = [
        code_offset(body.tramp as usize),
        code_offset(body.func),
        id,
        body.count as u64,
    ];
    let mut msg = Vec::with_capacity(TASK_HEADER + body.bytes.len());
    for w in words {
        msg.extend_from_slice(&w.to_ne_bytes());
    }
    msg.extend_from_slice(&key.mac(words).to_ne_bytes());
    msg.extend_from_slice(body.bytes);
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
    let Ok(count) = usize::try_from(words[3]) else {
        return Err((words[2], "task words out of range".to_string()));
    };
    let (tramp, func) = (code_address(words[0]), code_address(words[1]));
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
    pub(super) fn run(&self, out: &mut Vec<u8>) -> Result<(), Refused> {
        // SAFETY: `verify` checked the MAC under the pool's key, which only the
        // pool's parent and its workers hold, in private memory: so the words are
        // the ones `encode` wrote, the code offsets of `trampoline::<T, R>` and of
        // an `fn(T) -> R` for the same `T` and `R`. Workers run the parent's very
        // executable (forked, or re-executed and checked by inode), where an offset
        // names the same function in every process; `tramp` and `func` are those
        // functions' addresses here, and a transmuted fn-pointer from them is the
        // original one.
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
        let msg = encode(&key, 7, &Body::pod(square as fn(u64) -> u64, &[1u64, 2, 3]));
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
