//! Queue, JoinableQueue, SimpleQueue and ByteQueue across real processes.

mod common;

use common::{TestName, Words, wait_for};
use shmproc::layout::header::{ElemType, ObjectKind, ObjectLayout};
use shmproc::queue::{
    Closed, GetError, PutBytesError, PutError, TaskDoneError, TryGetError, TryPutError,
    UNBOUNDED_MAXSIZE,
};
use shmproc::ring::mpmc::Ring;
use shmproc::segment::{CreateOptions, OpenError, OpenOptions, Segment};
use shmproc::{ByteQueue, JoinableQueue, Process, Queue, SimpleQueue};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A message from producer `p`, number `seq`: a header, a body whose length and bytes
/// derive from (p, seq), and a checksum.
fn message(p: u32, seq: u32) -> Vec<u8> {
    let body_len = (seq as usize * 37 + p as usize * 11) % 300;
    let mut m = Vec::with_capacity(16 + body_len);
    m.extend_from_slice(&p.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((0..body_len).map(|i| (i as u32 ^ seq ^ (p << 3)) as u8));
    let sum = m.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    m.extend_from_slice(&sum.to_le_bytes());
    m
}

/// Checks a message and returns (producer, seq).
fn check(m: &[u8]) -> Option<(u32, u32)> {
    if m.len() < 16 {
        return None;
    }
    let p = u32::from_le_bytes(m[0..4].try_into().ok()?);
    let seq = u32::from_le_bytes(m[4..8].try_into().ok()?);
    (message(p, seq) == m).then_some((p, seq))
}

#[test]
fn producers_times_consumers_deliver_every_message_exactly_once_in_order() {
    const P: u32 = 3;
    const C: usize = 3;
    const N: u32 = 5000;
    let q = ByteQueue::new(64, 64).unwrap();
    // seen[p * N + seq]: how many times the message was delivered.
    let seen = Words::new((P * N) as usize + 1);
    let total = (P * N) as usize;
    let mut kids = Vec::new();
    for p in 0..P {
        let q = &q;
        kids.push(
            Process::spawn(move || {
                for seq in 0..N {
                    q.put(&message(p, seq)).unwrap();
                }
            })
            .unwrap(),
        );
    }
    for _ in 0..C {
        let (q, seen) = (&q, &seen);
        kids.push(
            Process::spawn_returning(move || -> i32 {
                let mut last = [None::<u32>; P as usize];
                let mut buf = Vec::new();
                while seen.at(total).load(Ordering::SeqCst) < total as u32 {
                    match q.get_timeout_into(&mut buf) {
                        Ok(_) => {}
                        Err(TryGetError::Empty) => continue,
                        Err(_) => return 2,
                    }
                    let Some((p, seq)) = check(&buf) else {
                        return 3;
                    };
                    if last[p as usize].is_some_and(|l| seq <= l) {
                        return 4; // out of order for this producer
                    }
                    last[p as usize] = Some(seq);
                    seen.at((p * N + seq) as usize)
                        .fetch_add(1, Ordering::SeqCst);
                    seen.at(total).fetch_add(1, Ordering::SeqCst);
                }
                0
            })
            .unwrap(),
        );
    }
    for k in &mut kids {
        let status = k.join_timeout(Duration::from_secs(120)).unwrap();
        assert_eq!(status.map(|s| s.code()), Some(0));
    }
    for i in 0..total {
        assert_eq!(seen.at(i).load(Ordering::SeqCst), 1, "message {i}");
    }
    assert_eq!(q.empty(), Ok(true));
}

trait GetTimeoutInto {
    fn get_timeout_into(&self, buf: &mut Vec<u8>) -> Result<usize, TryGetError>;
}

impl GetTimeoutInto for ByteQueue {
    fn get_timeout_into(&self, buf: &mut Vec<u8>) -> Result<usize, TryGetError> {
        let m = self.get_timeout(Duration::from_millis(20))?;
        buf.clear();
        buf.extend_from_slice(&m);
        Ok(m.len())
    }
}

#[test]
fn python_semantics_put_get_timeouts_qsize_full_empty() {
    let q = Queue::<u64>::new(3).unwrap();
    assert_eq!(
        (q.empty(), q.full(), q.qsize(), q.maxsize()),
        (Ok(true), Ok(false), Ok(0), 3)
    );
    assert_eq!(q.get_nowait(), Err(TryGetError::Empty));
    for timeout in [Duration::ZERO, Duration::from_millis(100)] {
        let start = Instant::now();
        assert_eq!(q.get_timeout(timeout), Err(TryGetError::Empty));
        assert!(
            start.elapsed() >= timeout,
            "Empty after {:?} of {timeout:?}",
            start.elapsed()
        );
    }
    q.put(1).unwrap();
    q.put_nowait(2).unwrap();
    q.put_timeout(3, Duration::from_millis(10)).unwrap();
    assert_eq!((q.full(), q.qsize()), (Ok(true), Ok(3)));
    // A failed put hands the item back.
    assert_eq!(q.put_nowait(4), Err(TryPutError::Full(4)));
    let start = Instant::now();
    assert_eq!(
        q.put_timeout(5, Duration::from_millis(50))
            .unwrap_err()
            .into_inner(),
        5
    );
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        [
            q.get().unwrap(),
            q.get_nowait().unwrap(),
            q.get_timeout(Duration::ZERO).unwrap()
        ],
        [1, 2, 3]
    );
    assert_eq!(q.empty(), Ok(true));
}

#[test]
fn a_child_puts_while_the_parent_gets() {
    let q = Queue::<[u32; 3]>::new(4).unwrap();
    let mut child = Process::spawn(|| {
        for i in 0..10_000u32 {
            q.put([i, i * 2, !i]).unwrap();
        }
    })
    .unwrap();
    for i in 0..10_000u32 {
        assert_eq!(q.get().unwrap(), [i, i * 2, !i]);
    }
    assert!(child.join().unwrap().success());
}

/// A large item of the tests below: item `i` of a stream.
type Big = [u64; 512];

fn big(i: u64) -> Big {
    std::array::from_fn(|k| i * 1000 + k as u64)
}

#[test]
fn large_items_by_reference_between_processes() {
    let q = Queue::<Big>::new(4).unwrap();
    let mut child = Process::spawn_returning(|| -> i32 {
        for i in 0..200u64 {
            let item = big(i);
            if q.put_ref(&item).is_err() {
                return 1;
            }
        }
        0
    })
    .unwrap();
    let mut got: Big = [u64::MAX; 512];
    for i in 0..200u64 {
        q.get_into(&mut got).unwrap();
        assert!(got == big(i), "item {i} arrived wrong");
    }
    assert_eq!(child.join().unwrap().code(), 0);
    q.shutdown(false);
    assert_eq!(q.put_ref(&got), Err(PutError::ShutDown(())));
    assert_eq!(q.get_into(&mut got), Err(GetError::ShutDown));
    let other = Queue::<Big>::new(1).unwrap();
    other.close();
    assert_eq!(other.put_ref(&got), Err(PutError::Closed(())));
    assert_eq!(other.get_into(&mut got), Err(GetError::Closed));
}

#[test]
fn large_items_in_place_between_processes() {
    let q = Queue::<Big>::new(4).unwrap();
    let mut child = Process::spawn_returning(|| -> i32 {
        for i in 0..200u64 {
            let Ok(mut slot) = q.loan() else { return 1 };
            for (k, w) in slot.iter_mut().enumerate() {
                *w = i * 1000 + k as u64;
            }
            if i % 3 == 0 {
                // Dropped uncommitted: discarded, never seen by the consumer.
                drop(slot);
                let Ok(mut again) = q.loan() else { return 2 };
                *again = big(i);
                again.commit();
            } else {
                slot.commit();
            }
        }
        0
    })
    .unwrap();
    for i in 0..200u64 {
        let item = q.get_ref().unwrap();
        assert!(*item == big(i), "item {i} arrived wrong");
    }
    assert_eq!(child.join().unwrap().code(), 0);
    assert!(matches!(q.get_ref_nowait(), Err(TryGetError::Empty)));
    assert!(matches!(
        q.get_ref_timeout(Duration::from_millis(10)),
        Err(TryGetError::Empty)
    ));
    // A full queue: no loan now, and a held item keeps its slot until it drops.
    for _ in 0..4 {
        q.loan().unwrap().commit();
    }
    assert_eq!(q.try_loan().err(), Some(TryPutError::Full(())));
    let held = q.get_ref().unwrap();
    assert_eq!(
        q.loan_timeout(Duration::from_millis(10)).err(),
        Some(TryPutError::Full(()))
    );
    drop(held);
    q.try_loan().unwrap().commit();
    q.shutdown(false);
    assert_eq!(q.loan().err(), Some(PutError::ShutDown(())));
    let other = Queue::<Big>::new(1).unwrap();
    other.close();
    assert_eq!(other.loan().err(), Some(PutError::Closed(())));
    assert_eq!(other.get_ref().err(), Some(GetError::Closed));
}

#[test]
fn an_in_place_item_of_the_wrong_length_is_a_clear_error_and_the_next_one_arrives() {
    let name = TestName::new("inplace-len");
    let q = Queue::<u64>::create(&name, 8).unwrap();
    // A peer that publishes a 4-byte message through the ring itself.
    let seg = Segment::open_any(&name, OpenOptions::new()).unwrap();
    let l = seg.info().layout;
    // SAFETY: the payload is the queue's ring, laid out with these parameters, and
    // this handle touches it only through the ring's protocol.
    let ring = unsafe {
        Ring::attach(
            seg.payload(),
            seg.payload_len(),
            l.capacity,
            u64::from(l.slot_size),
        )
    }
    .unwrap();
    ring.try_push(&[1, 2, 3, 4]).unwrap();
    q.put(7).unwrap();
    match q.get_ref() {
        Err(GetError::Corrupt(why)) => assert!(
            why.contains("4 bytes") && why.contains("u64"),
            "unclear error: {why}"
        ),
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
    assert_eq!(*q.get_ref().unwrap(), 7);
}

#[test]
fn a_joinable_queue_counts_committed_loans_only() {
    let q = JoinableQueue::<[u8; 256]>::new(4).unwrap();
    let mut slot = q.loan().unwrap();
    slot.fill(5);
    assert_eq!(q.unfinished_tasks(), 0, "counted before the commit");
    slot.commit();
    assert_eq!(q.unfinished_tasks(), 1);
    drop(q.try_loan().unwrap());
    assert_eq!(q.unfinished_tasks(), 1, "a dropped loan counted");
    assert_eq!(*q.get_ref().unwrap(), [5; 256]);
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::from_secs(5)));
    assert!(matches!(q.get_ref_nowait(), Err(TryGetError::Empty)));
}

#[test]
fn close_affects_only_this_handle() {
    let q = Queue::<u8>::new(4).unwrap();
    let other = q.clone();
    q.close();
    assert_eq!(q.put(1), Err(PutError::Closed(1)));
    assert_eq!(q.get(), Err(GetError::Closed));
    other.put(2).unwrap();
    let mut child = Process::spawn_returning(|| -> i32 {
        // The child's copy of `other` is open, and so is the queue.
        if other.get() == Ok(2) && other.put(3).is_ok() {
            0
        } else {
            1
        }
    })
    .unwrap();
    assert_eq!(child.join().unwrap().code(), 0);
    assert_eq!(other.get(), Ok(3));
}

#[test]
fn a_closed_handle_answers_qsize_empty_and_full_with_closed() {
    let q = Queue::<u32>::new(2).unwrap();
    q.put(5).unwrap();
    let mut child = Process::spawn_returning(|| -> i32 {
        // Closing the child's copy of the handle...
        q.close();
        let answers = (q.closed(), q.qsize(), q.empty(), q.full());
        let closed = (true, Err(Closed), Err(Closed), Err(Closed));
        i32::from(answers != closed || !Closed.to_string().contains("closed"))
    })
    .unwrap();
    assert_eq!(child.join().unwrap().code(), 0);
    // ... leaves the parent's open, and the queue as it was.
    assert!(!q.closed());
    assert_eq!(
        (q.qsize(), q.empty(), q.full()),
        (Ok(1), Ok(false), Ok(false))
    );
    let s = SimpleQueue::<u8>::new(1).unwrap();
    s.close();
    assert_eq!((s.closed(), s.empty()), (true, Err(Closed)));
    let b = ByteQueue::new(2, 8).unwrap();
    b.close();
    assert_eq!(
        (b.qsize(), b.empty(), b.full()),
        (Err(Closed), Err(Closed), Err(Closed))
    );
}

#[test]
fn shutdown_wakes_blocked_getters_and_putters_in_other_processes() {
    // A getter blocked on an empty queue, and a putter blocked on a full one.
    let empty = Queue::<u64>::new(2).unwrap();
    let full = Queue::<u64>::new(2).unwrap();
    full.put(1).unwrap();
    full.put(2).unwrap();
    let mut getter =
        Process::spawn_returning(|| -> i32 { i32::from(empty.get() != Err(GetError::ShutDown)) })
            .unwrap();
    let mut putter = Process::spawn_returning(|| -> i32 {
        i32::from(full.put(3) != Err(PutError::ShutDown(3)))
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    empty.shutdown(false);
    full.shutdown(false);
    assert_eq!(getter.join().unwrap().code(), 0);
    assert_eq!(putter.join().unwrap().code(), 0);
    // The full queue's items are still there to drain, then ShutDown, even with a
    // timeout (not Empty).
    assert!(full.is_shutdown());
    assert_eq!((full.get(), full.get()), (Ok(1), Ok(2)));
    assert_eq!(
        full.get_timeout(Duration::from_millis(10)),
        Err(TryGetError::ShutDown)
    );
    assert_eq!(full.get_nowait(), Err(TryGetError::ShutDown));
    assert_eq!(full.get(), Err(GetError::ShutDown));
    assert_eq!(full.put_nowait(4), Err(TryPutError::ShutDown(4)));
    assert_eq!(full.put_many(&[5, 6]), Err(PutError::ShutDown(0)));
}

#[test]
fn shutdown_drains_or_discards_across_processes() {
    // Not immediate: another process drains what is left, then gets ShutDown.
    let q = Queue::<u32>::new(8).unwrap();
    for i in 0..3 {
        q.put(i).unwrap();
    }
    q.shutdown(false);
    let mut child = Process::spawn_returning(|| -> i32 {
        let got: Vec<_> = (0..4).map(|_| q.get()).collect();
        let want = vec![Ok(0), Ok(1), Ok(2), Err(GetError::ShutDown)];
        i32::from(got != want || q.put(9) != Err(PutError::ShutDown(9)))
    })
    .unwrap();
    assert_eq!(child.join().unwrap().code(), 0);

    // Immediate, from a child: the parent finds nothing left.
    let q = Queue::<u32>::new(8).unwrap();
    for i in 0..3 {
        q.put(i).unwrap();
    }
    let mut child = Process::spawn(|| q.shutdown(true)).unwrap();
    assert!(child.join().unwrap().success());
    assert_eq!(q.qsize(), Ok(0));
    assert_eq!(q.get(), Err(GetError::ShutDown));

    // A JoinableQueue: immediate counts the discarded items as done, so a join
    // blocked in another process returns; task_done past the count is an error.
    let jq = JoinableQueue::<u32>::new(8).unwrap();
    for i in 0..3 {
        jq.put(i).unwrap();
    }
    let mut joiner = Process::spawn(|| jq.join()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(jq.unfinished_tasks(), 3);
    jq.shutdown(true);
    assert!(joiner.join().unwrap().success());
    assert_eq!(jq.unfinished_tasks(), 0);
    assert_eq!(jq.task_done(), Err(TaskDoneError));
    assert_eq!(jq.put(1), Err(PutError::ShutDown(1)));

    // Not immediate: join still waits for task_done of what is left.
    let jq = JoinableQueue::<u32>::new(8).unwrap();
    jq.put(1).unwrap();
    jq.shutdown(false);
    assert!(!jq.join_timeout(Duration::from_millis(20)));
    let mut worker = Process::spawn_returning(|| -> i32 {
        let ok = jq.get() == Ok(1) && jq.task_done().is_ok();
        i32::from(!ok || jq.get() != Err(GetError::ShutDown))
    })
    .unwrap();
    assert_eq!(worker.join().unwrap().code(), 0);
    assert!(jq.join_timeout(Duration::from_secs(30)));

    // A byte queue too.
    let bq = ByteQueue::new(4, 16).unwrap();
    bq.put(b"left").unwrap();
    bq.shutdown(false);
    assert_eq!(bq.put(b"x"), Err(PutBytesError::ShutDown));
    assert_eq!(bq.get(), Ok(b"left".to_vec()));
    assert_eq!(bq.get(), Err(GetError::ShutDown));
}

#[test]
fn maxsize_zero_is_a_documented_default_with_a_clear_error() {
    let q = Queue::<u64>::new(0).unwrap();
    assert_eq!(q.maxsize(), UNBOUNDED_MAXSIZE);
    let mut child = Process::spawn(|| {
        let items: Vec<u64> = (0..UNBOUNDED_MAXSIZE as u64).collect();
        q.put_many(&items).unwrap();
    })
    .unwrap();
    assert!(child.join().unwrap().success());
    assert_eq!(q.full(), Ok(true));
    // A blocking put does not wait: the default ran out, and the error says so.
    let err = q.put(7).unwrap_err();
    assert_eq!(err, PutError::DefaultMaxsizeReached(7));
    let text = err.to_string();
    assert!(
        text.contains(&UNBOUNDED_MAXSIZE.to_string()) && text.contains("maxsize"),
        "{text}"
    );
    assert_eq!(
        q.put_timeout(8, Duration::from_millis(10)),
        Err(TryPutError::DefaultMaxsizeReached(8))
    );
    assert_eq!(q.get(), Ok(0));
    q.put(7).unwrap();
    // A named one says so to its openers too.
    let name = TestName::new("unbounded");
    let named = Queue::<u8>::create(&name, 0).unwrap();
    let opened = Queue::<u8>::open(&name).unwrap();
    assert_eq!(opened.maxsize(), UNBOUNDED_MAXSIZE);
    for _ in 0..UNBOUNDED_MAXSIZE {
        named.put_nowait(1).unwrap();
    }
    assert_eq!(
        opened.put_nowait(2),
        Err(TryPutError::DefaultMaxsizeReached(2))
    );
    let s = SimpleQueue::<u8>::new(0).unwrap();
    s.put(1).unwrap();
}

#[test]
fn joinable_queue_join_waits_for_every_task() {
    let q = JoinableQueue::<u32>::new(4).unwrap();
    let done = Words::new(1);
    let mut worker = Process::spawn(|| {
        for _ in 0..50 {
            let _ = q.get().unwrap();
            std::thread::sleep(Duration::from_micros(200));
            done.at(0).fetch_add(1, Ordering::SeqCst);
            q.task_done().unwrap();
        }
    })
    .unwrap();
    for i in 0..50 {
        q.put(i).unwrap();
    }
    q.join();
    assert_eq!(done.at(0).load(Ordering::SeqCst), 50);
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(worker.join().unwrap().success());
    assert_eq!(q.task_done(), Err(TaskDoneError));
    q.put(7).unwrap();
    assert!(!q.join_timeout(Duration::from_millis(20)));
    assert_eq!(q.get(), Ok(7));
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::ZERO));
}

#[test]
fn simple_queue_put_get_empty_close() {
    let q = SimpleQueue::<u16>::new(2).unwrap();
    assert_eq!(q.empty(), Ok(true));
    let mut child = Process::spawn(|| {
        for i in 0..100 {
            q.put(i).unwrap();
        }
    })
    .unwrap();
    for i in 0..100 {
        assert_eq!(q.get(), Ok(i));
    }
    child.join().unwrap();
    q.close();
    assert_eq!(q.get(), Err(GetError::Closed));
}

#[test]
fn byte_messages_of_every_size_up_to_the_largest() {
    let q = ByteQueue::new(8, 16).unwrap();
    assert_eq!(q.max_message(), 128);
    for len in [0, 1, 15, 16, 17, 40, 100, 128] {
        let msg: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
        q.put(&msg).unwrap();
        assert_eq!(q.get().unwrap(), msg, "len {len}");
    }
    let err = q.put(&[0; 129]).unwrap_err();
    assert_eq!(err, PutBytesError::TooLarge { len: 129, max: 128 });
    assert!(
        err.to_string().contains("129 bytes") && err.to_string().contains("at most 128"),
        "{err}"
    );
    // Zero-copy: loan, write in place, commit; read in place.
    let mut loan = q.loan(20).unwrap();
    loan.buf().fill(9);
    loan.commit();
    let m = q.get_ref().unwrap();
    assert_eq!(&*m, &[9u8; 20]);
    drop(m);
    // An uncommitted loan is never seen.
    drop(q.loan(5).unwrap());
    assert_eq!(q.get_nowait(), Err(TryGetError::Empty));
}

#[test]
fn batch_put_and_get() {
    let q = Queue::<u32>::new(8).unwrap();
    let items: Vec<u32> = (0..20).collect();
    assert_eq!(q.put_many_nowait(&items).unwrap(), 8);
    let mut out = Vec::new();
    assert_eq!(q.get_many_nowait(&mut out, 5).unwrap(), 5);
    assert_eq!(out, [0, 1, 2, 3, 4]);
    let mut child =
        Process::spawn(|| q.put_many(&(100..150).collect::<Vec<u32>>()).unwrap()).unwrap();
    let mut got = Vec::new();
    while got.len() < 53 {
        q.get_many(&mut got, 16).unwrap();
    }
    child.join().unwrap();
    let want: Vec<u32> = (5..8).chain(100..150).collect();
    assert_eq!(got, want);
}

#[test]
fn named_queue_wrong_type_and_wrong_kind_are_clear_errors() {
    let name = TestName::new("q");
    let q = Queue::<u64>::create(&name, 8).unwrap();
    q.put(42).unwrap();
    let again = Queue::<u64>::open(&name).unwrap();
    assert_eq!(again.get(), Ok(42));
    let err = Queue::<u32>::open(&name).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected u32 (4 bytes, align 4), found u64 (8 bytes, align 8)"),
        "{err}"
    );
    assert!(matches!(
        ByteQueue::open(&name),
        Err(OpenError::IncompatibleLayout { .. })
    ));
    assert!(matches!(
        JoinableQueue::<u64>::open(&name),
        Err(OpenError::WrongKind { .. })
    ));

    let raw = TestName::new("raw");
    let layout = ObjectLayout {
        kind: ObjectKind::Pipe,
        elem: ElemType::NONE,
        slot_size: 0,
        capacity: 0,
        payload_size: 64,
    };
    let _seg = Segment::create(&raw, &layout, CreateOptions::new(), |_, _| {}).unwrap();
    let err = Queue::<u64>::open(&raw).unwrap_err();
    assert!(
        err.to_string().contains("expected Queue, found Pipe"),
        "{err}"
    );
    // maxsize 0 is the documented default (see maxsize_zero_is_…); too large is an
    // error.
    assert!(Queue::<u64>::new(usize::MAX).is_err());
}

#[test]
fn a_named_queue_between_unrelated_handles_in_two_processes() {
    let name = TestName::new("named");
    let q = ByteQueue::create(&name, 16, 32).unwrap();
    let child_name = name.0.clone();
    let mut child = Process::spawn_returning(move || -> i32 {
        let Ok(q) = ByteQueue::open(&child_name) else {
            return 2;
        };
        for i in 0..100u32 {
            if q.put(&message(9, i)).is_err() {
                return 3;
            }
        }
        0
    })
    .unwrap();
    for i in 0..100 {
        assert_eq!(check(&q.get().unwrap()), Some((9, i)));
    }
    assert_eq!(child.join().unwrap().code(), 0);
}

/// A process that claims a slot of `q` (a loan of 8 bytes) and is killed before it
/// publishes it; returns once it is dead and reaped.
fn claim_and_die(q: &ByteQueue) {
    let claimed = Words::new(1);
    let mut victim = Process::spawn(|| {
        let mut loan = q.loan(8).unwrap();
        loan.buf().fill(1);
        claimed.at(0).store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    wait_for("the victim to claim", || {
        claimed.at(0).load(Ordering::SeqCst) == 1
    });
    victim.kill().unwrap();
    victim.join().unwrap();
}

/// A surviving producer putting messages 0..50 of producer 1.
fn put_fifty(q: &ByteQueue) -> Process {
    Process::spawn(|| {
        for i in 0..50u32 {
            q.put(&message(1, i)).unwrap();
        }
    })
    .unwrap()
}

#[test]
fn a_producer_killed_mid_put_does_not_wedge_the_queue() {
    let q = ByteQueue::new(8, 64).unwrap();
    // The victim claims a slot and dies before publishing it.
    claim_and_die(&q);
    // A survivor produces; the consumer gets past the dead slot.
    let mut producer = put_fifty(&q);
    for i in 0..50 {
        let m = q.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(check(&m), Some((1, i)));
    }
    assert!(producer.join().unwrap().success());
    assert_eq!(q.get_nowait(), Err(TryGetError::Empty));
}

/// The scheduler state of process `pid` (`/proc/PID/stat`, field 3).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn a_consumer_asleep_before_a_producer_dies_mid_put_gets_what_follows() {
    // The consumer sleeps on an empty queue with no claim pending (its sleep has no
    // timeout then); a producer claims and dies; the survivor's first message wakes
    // the consumer, which finds the dead claim, skips it and gets everything after.
    let q = ByteQueue::new(8, 64).unwrap();
    let mut consumer = Process::spawn_returning(|| {
        let all = (0..50).all(|i| q.get().is_ok_and(|m| check(&m) == Some((1, i))));
        if all { 0 } else { 1 }
    })
    .unwrap();
    let pid = consumer.pid();
    wait_for("the consumer to sleep", || proc_state(pid) == Some('S'));
    claim_and_die(&q);
    let mut producer = put_fifty(&q);
    assert!(producer.join().unwrap().success());
    let done = consumer.join_timeout(Duration::from_secs(60)).unwrap();
    if done.is_none() {
        consumer.kill().unwrap();
    }
    assert!(
        done.is_some_and(|s| s.success()),
        "the consumer did not get the survivor's 50 messages in order: {done:?}"
    );
    assert_eq!(q.get_nowait(), Err(TryGetError::Empty));
}

#[test]
fn a_consumer_killed_mid_get_does_not_wedge_the_queue() {
    let q = ByteQueue::new(8, 64).unwrap();
    let holding = Words::new(1);
    q.put(b"lost").unwrap();
    // The victim takes a message and dies while reading it in place.
    let mut victim = Process::spawn(|| {
        let _m = q.get_ref().unwrap();
        holding.at(0).store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    wait_for("the victim to take", || {
        holding.at(0).load(Ordering::SeqCst) == 1
    });
    victim.kill().unwrap();
    victim.join().unwrap();
    // Producers need the dead consumer's slot again after one lap.
    let mut producer = Process::spawn(|| {
        for i in 0..50u32 {
            q.put(&message(2, i)).unwrap();
        }
    })
    .unwrap();
    for i in 0..50 {
        let m = q.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(check(&m), Some((2, i)));
    }
    assert!(producer.join().unwrap().success());
}

#[test]
fn producers_and_consumers_killed_at_random_points_lose_at_most_their_in_flight_message() {
    const N: u32 = 20_000;
    for round in 0..4u64 {
        let q = ByteQueue::new(16, 32).unwrap();
        let seen = Words::new(2 * N as usize);
        // Producer 0 is killed mid-stream; producer 1 survives.
        let mut kids: Vec<Process> = (0..2u32)
            .map(|p| {
                let q = &q;
                Process::spawn(move || {
                    for seq in 0..N {
                        q.put(&message(p, seq)).unwrap();
                    }
                })
                .unwrap()
            })
            .collect();
        // A consumer that is killed mid-stream too.
        let doomed = {
            let (q, seen) = (&q, &seen);
            Process::spawn(move || {
                loop {
                    if let Ok(m) = q.get() {
                        if let Some((p, seq)) = check(&m) {
                            seen.at((p * N + seq) as usize)
                                .fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
            .unwrap()
        };
        std::thread::sleep(Duration::from_millis(3 + round * 4));
        kids[0].kill().unwrap();
        let mut doomed = doomed;
        doomed.kill().unwrap();
        doomed.join().unwrap();
        kids[0].join().unwrap();
        // The parent consumes the rest until the survivor is done and the queue empty.
        let mut last = [None::<u32>; 2];
        loop {
            match q.get_timeout(Duration::from_millis(200)) {
                Ok(m) => {
                    let (p, seq) = check(&m).expect("a torn message");
                    assert!(last[p as usize].is_none_or(|l| seq > l));
                    last[p as usize] = Some(seq);
                    seen.at((p * N + seq) as usize)
                        .fetch_add(1, Ordering::SeqCst);
                }
                Err(TryGetError::Empty) => {
                    if !kids[1].is_alive() && q.empty() == Ok(true) {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(kids[1].join().unwrap().success());
        let counts = |p: u32| {
            (0..N)
                .map(|s| seen.at((p * N + s) as usize).load(Ordering::SeqCst))
                .collect::<Vec<u32>>()
        };
        // Nothing twice, ever.
        for p in 0..2 {
            assert!(
                counts(p).iter().all(|&c| c <= 1),
                "duplicate from producer {p}"
            );
        }
        // The survivor's messages: all but at most the one the dead consumer held.
        let lost1 = counts(1).iter().filter(|&&c| c == 0).count();
        assert!(lost1 <= 1, "survivor lost {lost1}");
        // The killed producer's: a prefix, less at most one in flight with it and one
        // with the dead consumer.
        let c0 = counts(0);
        let delivered = c0.iter().rposition(|&c| c == 1).map_or(0, |i| i + 1);
        let holes = c0[..delivered].iter().filter(|&&c| c == 0).count();
        assert!(holes + lost1 <= 2, "holes {holes}, survivor lost {lost1}");
    }
}

#[test]
fn a_loan_moved_into_a_child_is_resolved_by_the_process_that_made_it() {
    let q = ByteQueue::new(8, 64).unwrap();
    let loan = q.loan(4).unwrap();
    // The closure (and the loan in it) is copied into the child by the fork and
    // dropped here in the parent, which made the claim: the parent turns it into a
    // skip entry, and the child's commit does nothing. Either way the ring neither
    // wedges nor delivers the slot twice.
    let mut child = Process::spawn(move || {
        let mut loan = loan;
        loan.buf().copy_from_slice(b"kid!");
        loan.commit();
    })
    .unwrap();
    assert!(child.join().unwrap().success());
    q.put(b"next").unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), b"next");
    assert_eq!(q.get_nowait(), Err(TryGetError::Empty));
}

#[test]
fn threads_of_killed_processes_moving_runs_of_items_lose_at_most_their_runs() {
    const PER_THREAD: u64 = 400_000;
    const RUN: usize = 8;
    // item = producer << 48 | thread << 40 | sequence
    let item = |p: u64, t: u64, s: u64| p << 48 | t << 40 | s;
    for round in 0..3u64 {
        let q = Queue::<u64>::new(64).unwrap();
        let slots = (2 * 2 * PER_THREAD) as usize;
        // One word per item, and after them the doomed consumer's count of runs.
        let seen = Words::new(slots + 1);
        let runs = slots;
        let index = |v: u64| {
            ((v >> 48) * 2 * PER_THREAD + ((v >> 40) & 0xFF) * PER_THREAD + (v & 0xFF_FFFF_FFFF))
                as usize
        };
        // Two producer processes of two threads each, putting runs of RUN items.
        let mut producers: Vec<Process> = (0..2u64)
            .map(|p| {
                let q = &q;
                Process::spawn(move || {
                    std::thread::scope(|s| {
                        for t in 0..2u64 {
                            s.spawn(move || {
                                let mut batch = Vec::with_capacity(RUN);
                                for seq in (0..PER_THREAD).step_by(RUN) {
                                    batch.clear();
                                    batch.extend(
                                        (seq..(seq + RUN as u64).min(PER_THREAD))
                                            .map(|s| item(p, t, s)),
                                    );
                                    q.put_many(&batch).unwrap();
                                }
                            });
                        }
                    });
                })
                .unwrap()
            })
            .collect();
        // A consumer process of two threads taking runs, killed mid-stream.
        let doomed = {
            let (q, seen) = (&q, &seen);
            Process::spawn(move || {
                std::thread::scope(|s| {
                    for _ in 0..2 {
                        s.spawn(|| {
                            let mut got = Vec::with_capacity(RUN);
                            loop {
                                got.clear();
                                if q.get_many(&mut got, RUN).is_ok() {
                                    for &v in &got {
                                        seen.at(index(v)).fetch_add(1, Ordering::SeqCst);
                                    }
                                    seen.at(runs).fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        });
                    }
                });
            })
            .unwrap()
        };
        // Mid-stream, counted rather than timed (a fixed sleep let a fast machine
        // move all 800 k of producer 0's items first): a few thousand runs in, of
        // the 200 k the producers put.
        let enough = 500 + 1000 * round as u32;
        wait_for("the doomed consumer's first runs", || {
            seen.at(runs).load(Ordering::SeqCst) >= enough
        });
        producers[0].kill().unwrap();
        let mut doomed = doomed;
        doomed.kill().unwrap();
        doomed.join().unwrap();
        producers[0].join().unwrap();
        // The parent takes the rest, in runs too, until the survivor is done.
        let mut last = [[None::<u64>; 2]; 2];
        let mut got = Vec::new();
        loop {
            got.clear();
            match q.get_many_nowait(&mut got, RUN) {
                Ok(0) => {
                    if !producers[1].is_alive() && q.empty() == Ok(true) {
                        break;
                    }
                    let _ = q.get_timeout(Duration::from_millis(1)).map(|v| got.push(v));
                }
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
            for &v in &got {
                let (p, t, s) = (
                    (v >> 48) as usize,
                    ((v >> 40) & 0xFF) as usize,
                    v & 0xFF_FFFF_FFFF,
                );
                assert!(
                    last[p][t].is_none_or(|l| s > l),
                    "producer {p} thread {t}: {s} after {last:?}"
                );
                last[p][t] = Some(s);
                seen.at(index(v)).fetch_add(1, Ordering::SeqCst);
            }
        }
        assert!(producers[1].join().unwrap().success());
        let counts: Vec<u32> = (0..slots)
            .map(|i| seen.at(i).load(Ordering::SeqCst))
            .collect();
        assert!(
            counts.iter().all(|&c| c <= 1),
            "an item was delivered twice"
        );
        // The dead consumer's threads each lose at most one run they had taken.
        let per = PER_THREAD as usize;
        let survivor_lost: usize = (2..4)
            .map(|k| {
                counts[k * per..(k + 1) * per]
                    .iter()
                    .filter(|&&c| c == 0)
                    .count()
            })
            .sum();
        assert!(survivor_lost <= 2 * RUN, "survivor lost {survivor_lost}");
        // The kill came mid-stream (else this round proves little).
        assert!(
            counts[..2 * per].contains(&0),
            "producer 0 finished before the kill"
        );
        // The dead producer's threads: each a prefix, less at most its own run in
        // flight and what the dead consumer held.
        for k in 0..2 {
            let c = &counts[k * per..(k + 1) * per];
            let delivered = c.iter().rposition(|&x| x == 1).map_or(0, |i| i + 1);
            let holes = c[..delivered].iter().filter(|&&x| x == 0).count();
            assert!(holes <= RUN + 2 * RUN, "thread {k}: {holes} holes");
        }
    }
}
