//! Unit tests of the ring, reaching into its private state.

use super::records::{my_identity, my_nonce};
use super::state::{FULL, READING, WRITING, decode, meta};
use super::*;
use crate::ring::HeapMemory;
use std::collections::VecDeque;

fn ring(capacity: u64, slot: u64) -> (HeapMemory, Ring) {
    let len = Ring::bytes_for(capacity, slot).unwrap();
    let mem = HeapMemory::new(len).unwrap();
    // SAFETY: fresh zeroed memory of len bytes, used only through this ring.
    let r = unsafe { Ring::init(mem.ptr(), len, capacity, slot) }.unwrap();
    (mem, r)
}

fn push(r: &Ring, msg: &[u8]) -> Result<(), PushError> {
    r.try_push_with(msg.len(), |b| b.copy_from_slice(msg))
}

fn pop(r: &Ring) -> Result<Vec<u8>, PopError> {
    r.try_pop_with(|b| b.to_vec())
}

#[test]
fn index_is_the_remainder_for_every_capacity() {
    let mem = HeapMemory::new(64).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for cap in [
        1,
        2,
        3,
        7,
        10,
        1000,
        1024,
        65_535,
        (1 << 31) + 11,
        MAX_CAPACITY - 1,
        MAX_CAPACITY,
    ] {
        let r = Ring::handle(mem.ptr(), cap, 8);
        for pos in [
            0,
            1,
            cap - 1,
            cap,
            cap + 1,
            u64::MAX,
            u64::MAX - cap,
            u64::MAX / 2,
        ] {
            assert_eq!(r.index(pos), pos % cap, "{pos} % {cap}");
        }
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(r.index(x), x % cap, "{x} % {cap}");
        }
    }
}

#[test]
fn layout_checks() {
    assert_eq!(Ring::bytes_for(0, 8), None);
    assert_eq!(Ring::bytes_for(4, 12), None);
    assert_eq!(Ring::bytes_for(4, 8), Some(CONTROL_OFFSET + 128 + 32));
    let mem = HeapMemory::new(1024).unwrap();
    // SAFETY: the memory is ours; the call fails before touching it.
    let err = unsafe { Ring::init(mem.ptr(), 100, 4, 8) }.unwrap_err();
    assert_eq!(
        err,
        LayoutError::TooSmall {
            needed: CONTROL_OFFSET + 160,
            given: 100
        }
    );
}

#[test]
fn fifo_with_wrap_and_multi_slot_messages() {
    let (_m, r) = ring(8, 8);
    assert_eq!(pop(&r), Err(PopError::Empty));
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut next = 0u8;
    let n = if cfg!(miri) { 200 } else { 20_000 };
    for i in 0..n {
        let len = (i * 7) % 30;
        let msg: Vec<u8> = (0..len)
            .map(|_| {
                next = next.wrapping_add(1);
                next
            })
            .collect();
        if i % 3 != 2 {
            match push(&r, &msg) {
                Ok(()) => model.push_back(msg),
                Err(PushError::Full) => {}
                Err(e) => panic!("{e}"),
            }
        } else {
            match pop(&r) {
                Ok(got) => assert_eq!(Some(got), model.pop_front()),
                Err(PopError::Empty) => assert!(model.is_empty()),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(r.len() <= 8);
    }
    while let Some(want) = model.pop_front() {
        assert_eq!(pop(&r).unwrap(), want);
    }
    assert_eq!(pop(&r), Err(PopError::Empty));
    assert!(r.is_empty());
}

#[test]
fn sizes_zero_one_slot_and_the_largest() {
    let (_m, r) = ring(4, 16);
    assert_eq!(r.max_message(), 64);
    push(&r, &[]).unwrap();
    assert_eq!(pop(&r).unwrap(), Vec::<u8>::new());
    push(&r, &[1; 16]).unwrap();
    assert_eq!(pop(&r).unwrap(), vec![1; 16]);
    // The largest message needs the ring empty and aligned: padding first.
    push(&r, &[9; 64]).unwrap();
    assert_eq!(pop(&r).unwrap(), vec![9; 64]);
    assert_eq!(
        push(&r, &[0; 65]),
        Err(PushError::TooLarge { len: 65, max: 64 })
    );
}

#[test]
fn full_hands_back_and_panicking_writer_skips() {
    let (_m, r) = ring(2, 8);
    push(&r, b"a").unwrap();
    push(&r, b"b").unwrap();
    assert_eq!(push(&r, b"c"), Err(PushError::Full));
    assert_eq!(pop(&r).unwrap(), b"a");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.try_push_with(1, |_| panic!("writer panics"))
    }));
    assert!(caught.is_err());
    // The abandoned claim became a SKIP entry: consumers step over it.
    assert_eq!(pop(&r).unwrap(), b"b");
    assert_eq!(pop(&r), Err(PopError::Empty));
    push(&r, b"d").unwrap();
    assert_eq!(pop(&r).unwrap(), b"d");
}

#[test]
fn scribbled_ring_gives_errors_not_ub() {
    let (_m, r) = ring(4, 8);
    push(&r, b"x").unwrap();
    // A peer writes an impossible meta word (span 9 in a 4-slot ring) and points
    // the state word at it.
    r.meta_word(0).store(meta(72, 9, 0), Ordering::Relaxed);
    r.state(0).store(state(0, FULL, 0), Ordering::Relaxed);
    assert!(matches!(pop(&r), Err(PopError::Corrupt(_))));
    // The bad entry was dropped; the ring goes on.
    push(&r, b"y").unwrap();
    assert_eq!(pop(&r).unwrap(), b"y");
    // An impossible length in the state word of a one-slot message (9 bytes in
    // an 8-byte slot), through the copy and the guard.
    push(&r, b"z").unwrap();
    r.state(2).store(state(2, FULL, 10), Ordering::Relaxed);
    let mut out = [0u8; 16];
    assert!(matches!(
        r.try_pop_into(&mut out),
        Err(PopError::Corrupt(_))
    ));
    push(&r, b"v").unwrap();
    r.state(3).store(state(3, FULL, 10), Ordering::Relaxed);
    assert!(matches!(pop(&r), Err(PopError::Corrupt(_))));
    push(&r, b"w").unwrap();
    assert_eq!(pop(&r).unwrap(), b"w");
    // A scribbled state word at head: an error, not an endless loop.
    r.state(1).store(u64::MAX, Ordering::Relaxed);
    r.control().tail.store(100, Ordering::Relaxed);
    assert!(pop(&r).is_err());
}

/// Makes record `rec` look owned by a thread that no longer exists (pid
/// 0x7FFF_FFFE is above any real pid_max).
fn fake_dead_owner(r: &Ring, rec: usize) {
    r.record(rec)
        .owner
        .store(0x7FFF_FFFE << 32 | 1, Ordering::Relaxed);
}

#[test]
fn repair_resolves_claims_and_takes_of_gone_threads() {
    let (_m, r) = ring(4, 8);
    push(&r, b"1").unwrap();
    // A producer that died after its CAS on tail, before publishing: its intent
    // names position 1.
    fake_dead_owner(&r, 100);
    r.record(100).prod_pos.store(1, Ordering::Relaxed);
    r.record(100).prod_end.store(2, Ordering::Relaxed);
    r.control().tail.store(2, Ordering::Relaxed);
    assert_eq!(pop(&r).unwrap(), b"1");
    assert_eq!(pop(&r), Err(PopError::Empty));
    assert_eq!(r.repair(), 1);
    push(&r, b"2").unwrap();
    assert_eq!(pop(&r).unwrap(), b"2"); // the abandoned claim was skipped
    // A live claimant (this thread's own record) is never repaired.
    let mut held = r.try_claim(1).unwrap();
    held.buf()[0] = b'3';
    assert_eq!(r.repair(), 0);
    held.commit();
    assert_eq!(pop(&r).unwrap(), b"3");
    // A consumer that died after its CAS on head, mid-read: its intent names
    // the message; the message is lost and its slot freed.
    push(&r, b"4").unwrap();
    let head = r.head_position();
    fake_dead_owner(&r, 101);
    r.record(101).cons_pos.store(head, Ordering::Relaxed);
    r.record(101).cons_end.store(head + 1, Ordering::Relaxed);
    r.control().head.store(head + 1, Ordering::Relaxed);
    for m in [b"5", b"6", b"7"] {
        push(&r, m).unwrap();
    }
    assert_eq!(push(&r, b"8"), Err(PushError::Full));
    assert_eq!(r.repair(), 1);
    push(&r, b"8").unwrap();
    for m in [b"5", b"6", b"7", b"8"] {
        assert_eq!(pop(&r).unwrap(), m);
    }
    // A READING mark of a gone owner (a take held while taking another).
    push(&r, b"9").unwrap();
    let head = r.head_position();
    r.control().head.store(head + 1, Ordering::Relaxed);
    // As `move_with_intent` does: the held take's span first, then the mark.
    r.meta_word(r.index(head) as usize)
        .store(meta(0, 1, 0), Ordering::Relaxed);
    r.mark(head, READING, 101);
    assert_eq!(r.repair(), 1);
    assert_eq!(pop(&r), Err(PopError::Empty));
    assert_eq!(r.len(), 0);
}

/// A one-slot message keeps its length in the state word and leaves its meta
/// word alone, so that word may still hold the span of an older message. A take
/// held while taking another is marked READING with the span of the take put in
/// the meta word first: a repairer frees exactly its slot, not the stale span's.
#[test]
fn a_held_take_of_a_one_slot_message_frees_only_its_slot() {
    let (_m, r) = ring(4, 8);
    push(&r, &[7; 24]).unwrap(); // positions 0..3: meta word 0 says span 3
    assert_eq!(pop(&r).unwrap(), [7; 24]);
    push(&r, b"x").unwrap(); // position 3
    assert_eq!(pop(&r).unwrap(), b"x");
    push(&r, b"a").unwrap(); // position 4, slot 0: inline, stale meta
    push(&r, b"b").unwrap(); // position 5, slot 1
    let a = r.try_take().unwrap();
    let b = r.try_take().unwrap(); // marks a READING
    let rec = a.rec;
    std::mem::forget((a, b)); // the thread dies holding both
    fake_dead_owner(&r, rec);
    assert_eq!(r.repair(), 2);
    // Slot 2 (position 6) was never claimed and must still be free at 6.
    for m in [b"c", b"d", b"e", b"f"] {
        push(&r, m).unwrap();
    }
    for m in [b"c", b"d", b"e", b"f"] {
        assert_eq!(pop(&r).unwrap(), m);
    }
    assert_eq!(r.len(), 0);
}

/// `try_pop_slice` never hands out an entry as an item unless it is a one-slot
/// message of exactly the item's length, and never items longer than a slot
/// (which would read past it).
#[test]
fn pop_slice_takes_only_one_slot_items_of_its_length() {
    let (_m, r) = ring(8, 8);
    push(&r, &[1; 16]).unwrap(); // two slots, meta word
    let mut out = [0u8; 64];
    assert_eq!(r.try_pop_slice(&mut out, 16), 0); // longer than a slot
    assert_eq!(r.try_pop_slice(&mut out, 8), 0); // not a one-slot item
    assert_eq!(r.try_pop_slice(&mut out, 0), 0);
    assert_eq!(pop(&r).unwrap(), [1; 16]);
    push(&r, &[2; 4]).unwrap();
    assert_eq!(r.try_pop_slice(&mut out, 8), 0); // another length
    assert_eq!(r.try_pop_slice(&mut out, 4), 1);
    assert_eq!(out[..4], [2; 4]);
}

#[test]
fn an_earlier_process_with_my_pid_is_neither_adopted_nor_trusted() {
    let (_m, r) = ring(4, 8);
    // A record left by a dead process that had this pid and tid (a restarted
    // container's pid 1): another nonce, another start time, and a claim at 0
    // it never published.
    let rec = r.record(7);
    rec.owner.store(my_identity(), Ordering::Relaxed);
    rec.start.store(1, Ordering::Relaxed);
    rec.nonce.store(my_nonce() ^ 2, Ordering::Relaxed);
    rec.prod_pos.store(0, Ordering::Relaxed);
    rec.prod_end.store(1, Ordering::Relaxed);
    r.control().tail.store(1, Ordering::Relaxed);
    // Not adopted: this thread gets a record of its own ...
    assert_ne!(r.my_record(), Some(7));
    // ... and the earlier process counts as gone: its claim is skipped.
    assert_eq!(r.repair(), 1);
    push(&r, b"x").unwrap();
    assert_eq!(pop(&r).unwrap(), b"x");
}

#[test]
fn repair_needs_no_record_when_the_dead_hold_them_all() {
    let (_m, r) = ring(4, 8);
    // Every record belongs to a dead thread with an unfinished claim, so none
    // can be reused, and this thread gets none.
    for i in 0..RECORDS {
        fake_dead_owner(&r, i);
        r.record(i).prod_pos.store(0, Ordering::Relaxed);
        r.record(i).prod_end.store(1, Ordering::Relaxed);
    }
    r.control().tail.store(1, Ordering::Relaxed);
    assert_eq!(r.my_record(), None);
    assert_eq!(pop(&r), Err(PopError::Empty));
    // The repair still turns the dead claim into a skip entry ...
    assert_eq!(r.repair(), 1);
    // ... after which the records are settled, reusable, and the ring works.
    push(&r, b"y").unwrap();
    assert_eq!(pop(&r).unwrap(), b"y");
}

#[test]
fn runs_of_items_are_claimed_and_taken_with_one_cas_in_order() {
    let (_m, r) = ring(8, 16);
    let items: Vec<u8> = (0..10u64).flat_map(|i| i.to_le_bytes()).collect();
    // Eight fit; the run stops at the end of the ring, the next starts at 0.
    assert_eq!(r.try_push_slice(&items, 8), Ok(8));
    let mut out = vec![0u8; 5 * 8];
    assert_eq!(r.try_pop_slice(&mut out, 8), 5);
    assert_eq!(out, items[..40]);
    assert_eq!(r.try_push_slice(&items[64..], 8), Ok(2));
    // A message of another size stops a run; the general path takes it.
    r.try_push_with(12, |b| b.fill(7)).unwrap();
    // Runs do not wrap either: 5..8 up to the end, then 8..10 from slot 0.
    let mut out = vec![0u8; 16 * 8];
    assert_eq!(r.try_pop_slice(&mut out, 8), 3);
    assert_eq!(r.try_pop_slice(&mut out[24..], 8), 2);
    let want: Vec<u8> = (5..10u64).flat_map(|i| i.to_le_bytes()).collect();
    assert_eq!(out[..40], want[..]);
    assert_eq!(r.try_pop_slice(&mut out, 8), 0);
    let mut big = [0u8; 16];
    assert_eq!(r.try_pop_into(&mut big), Ok(12));
    assert_eq!(r.try_pop_slice(&mut out, 8), 0);
    assert!(r.is_empty());
    assert_eq!(
        r.try_push_slice(&[0; 17], 17),
        Err(PushError::TooLarge { len: 17, max: 16 })
    );
}

#[test]
fn a_run_claimed_by_a_dead_producer_is_skipped_slot_by_slot() {
    let (_m, r) = ring(8, 8);
    push(&r, b"a").unwrap();
    // A dead producer claimed positions 1..4 as one run and published 2 only.
    fake_dead_owner(&r, 9);
    r.record(9).prod_pos.store(1, Ordering::Relaxed);
    r.record(9).prod_end.store(4, Ordering::Relaxed);
    r.control().tail.store(4, Ordering::Relaxed);
    r.publish(2, 1, 1, 0);
    assert_eq!(pop(&r).unwrap(), b"a");
    assert_eq!(pop(&r), Err(PopError::Empty));
    // Position 1 is skipped; 2 was published and is delivered; then 3 skipped.
    assert_eq!(r.repair(), 1);
    assert_eq!(pop(&r).unwrap(), [0u8]);
    assert_eq!(r.repair(), 1);
    push(&r, b"b").unwrap();
    assert_eq!(pop(&r).unwrap(), b"b");
    assert!(r.is_empty());
}

#[test]
fn holding_two_claims_and_two_takes_marks_the_first() {
    let (_m, r) = ring(8, 8);
    let mut a = r.try_claim(1).unwrap();
    let mut b = r.try_claim(1).unwrap();
    a.buf()[0] = b'a';
    b.buf()[0] = b'b';
    let (_, kind, _) = decode(r.state(0).load(Ordering::Relaxed));
    assert_eq!(kind, WRITING, "the first claim is marked");
    b.commit();
    a.commit();
    let x = r.try_take().unwrap();
    let y = r.try_take().unwrap();
    assert_eq!((x.bytes(), y.bytes()), (&b"a"[..], &b"b"[..]));
    let (_, kind, _) = decode(r.state(0).load(Ordering::Relaxed));
    assert_eq!(kind, READING, "the first take is marked");
    drop(x);
    drop(y);
    assert_eq!(r.repair(), 0);
    assert!(r.is_empty());
    push(&r, b"c").unwrap();
    assert_eq!(pop(&r).unwrap(), b"c");
}

#[test]
fn threads_exchange_every_message_exactly_once_in_order_per_producer() {
    const PRODUCERS: u64 = 3;
    const CONSUMERS: usize = 3;
    let per = if cfg!(miri) { 100 } else { 100_000 };
    let (_m, r) = ring(16, 8);
    let done = std::sync::atomic::AtomicU64::new(0);
    let seen = std::thread::scope(|s| {
        for p in 0..PRODUCERS {
            let r = &r;
            s.spawn(move || {
                for i in 0..per {
                    // Sizes 8..24 bytes: one to three slots.
                    let len = 8 + (i % 3) as usize * 8;
                    let mut msg = vec![0u8; len];
                    msg[..8].copy_from_slice(&((p << 56) | i).to_le_bytes());
                    while let Err(e) = push(r, &msg) {
                        assert_eq!(e, PushError::Full);
                        std::thread::yield_now();
                    }
                }
            });
        }
        let handles: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let (r, done) = (&r, &done);
                s.spawn(move || {
                    let mut last = [None::<u64>; PRODUCERS as usize];
                    let mut got = Vec::new();
                    while done.load(Ordering::Relaxed) < PRODUCERS * per {
                        match pop(r) {
                            Ok(m) => {
                                let v = u64::from_le_bytes(m[..8].try_into().unwrap());
                                let (p, i) = ((v >> 56) as usize, v & ((1 << 56) - 1));
                                assert_eq!(m.len(), 8 + (i % 3) as usize * 8);
                                if let Some(prev) = last[p] {
                                    assert!(i > prev, "producer {p}: {i} after {prev}");
                                }
                                last[p] = Some(i);
                                got.push(v);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(PopError::Empty) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        all
    });
    // Every message exactly once: no loss, no duplicate.
    let mut want: Vec<u64> = (0..PRODUCERS)
        .flat_map(|p| (0..per).map(move |i| (p << 56) | i))
        .collect();
    want.sort_unstable();
    assert!(
        seen == want,
        "{} delivered, {} sent",
        seen.len(),
        want.len()
    );
    assert_eq!(pop(&r), Err(PopError::Empty));
}

#[test]
fn a_forked_child_starts_without_its_parents_nonce_or_records() {
    use crate::os::proc;
    let (_m, r) = ring(4, 8);
    push(&r, b"x").unwrap(); // fills this thread's record cache and the nonce
    let parent_record = r.my_record().unwrap();
    assert_eq!(super::records::cached_rings(), 1);
    // SAFETY: the child runs only the checks below (atomics, thread-locals and
    // this ring's memory, which no other thread touches) and `_exit`s.
    match unsafe { proc::fork() }.unwrap() {
        0 => {
            // What a grandchild would inherit through a child that never used the
            // ring: were it given its dead grandparent's pid, neither would be
            // told apart from its own by the pid.
            let fresh = !super::records::nonce_kept() && super::records::cached_rings() == 0;
            // Its record is a new one, not the parent's (whose owner is alive).
            let own = r.my_record().is_some_and(|i| i != parent_record);
            proc::exit_immediately(if fresh && own { 0 } else { 1 });
        }
        pid => assert_eq!(proc::wait(pid).unwrap(), proc::ExitStatus::Exited(0)),
    }
}

#[test]
fn a_pop_into_uninitialized_memory_writes_what_fits_and_says_the_length() {
    use crate::ring::Dest;
    use std::mem::MaybeUninit;
    let (_m, r) = ring(4, 16);
    push(&r, &[5; 12]).unwrap();
    push(&r, &[6; 3]).unwrap();
    // Longer than the memory: cut to it, the whole length returned.
    let mut small = MaybeUninit::<[u8; 8]>::uninit();
    assert_eq!(r.try_pop_into_dest(Dest::value(&mut small)), Ok(12));
    // SAFETY: 8 of the 12 bytes were written, all the array holds.
    assert_eq!(unsafe { small.assume_init() }, [5; 8]);
    // Shorter: only its bytes are written (the rest keeps what it had).
    let mut big = [MaybeUninit::new(9u8); 6];
    assert_eq!(r.try_pop_into_dest(Dest::uninit(&mut big)), Ok(3));
    // SAFETY: every element was initialized (by `new`, then by the copy).
    let big = big.map(|b| unsafe { b.assume_init() });
    assert_eq!(big, [6, 6, 6, 9, 9, 9]);
    assert_eq!(
        r.try_pop_into_dest(Dest::value(&mut small)),
        Err(PopError::Empty)
    );
}
