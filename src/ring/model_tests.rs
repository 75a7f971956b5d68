//! Model checks of the rings (STYLE rule 5), under the shuttle scheduler with
//! `--cfg shmproc_model` (see [`crate::shim`]): every atomic operation of the ring
//! code is a point where shuttle may switch threads, and a test may kill a thread
//! before any one of them, as SIGKILL kills a process at any instruction.
//!
//! Run: `RUSTFLAGS="--cfg shmproc_model" cargo test --release --lib ring::model_tests`
//! (CI does, in its own target directory). `SHMPROC_MODEL_ITERATIONS` scales the
//! number of schedules per test (default 2000).

use super::mpmc::{PopError, PushError, Ring};
use super::spsc::{FIRST, Spsc};
use crate::ring::HeapMemory;
use crate::shim::model;
use shuttle::rand::{Rng, thread_rng};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Zero-filled, 128-aligned memory for one ring, shared by the model threads.
type Mem = HeapMemory;

fn mpmc(capacity: u64) -> (Arc<Mem>, Ring) {
    let len = Ring::bytes_for(capacity, 8).unwrap();
    let mem = Arc::new(Mem::new(len).unwrap());
    // SAFETY: fresh zeroed memory of len bytes, kept alive by the Arc every thread
    // holds, used only through this ring.
    let ring = unsafe { Ring::init(mem.ptr(), len, capacity, 8) }.unwrap();
    (mem, ring)
}

/// Spawns a model thread that keeps the ring's memory alive while it runs.
fn spawn_on<T: Send + 'static>(
    mem: &Arc<Mem>,
    f: impl FnOnce() -> T + Send + 'static,
) -> shuttle::thread::JoinHandle<Option<T>> {
    let mem = mem.clone();
    model::spawn(move || {
        let _mem = mem;
        f()
    })
}

use model::{check, iterations};

fn item(producer: u64, seq: u64) -> [u8; 8] {
    (producer << 32 | seq).to_ne_bytes()
}

fn parse(bytes: [u8; 8]) -> (u64, u64) {
    let v = u64::from_ne_bytes(bytes);
    (v >> 32, v & 0xFFFF_FFFF)
}

/// Item `(producer, seq)` as a message: the 8-byte item, and with `spans` 1 to 16
/// bytes more of a pattern, so the message takes two or three 8-byte slots.
fn message(producer: u64, seq: u64, spans: bool) -> Vec<u8> {
    let mut m = item(producer, seq).to_vec();
    if spans {
        let extra = 1 + (seq * 7 + producer * 3) % 16;
        m.extend((0..extra).map(|i| (producer * 31 + seq * 7 + i) as u8));
    }
    m
}

/// The item in a received message, which must be intact.
fn check_message(bytes: &[u8]) -> (u64, u64) {
    assert!(bytes.len() >= 8, "a message of {} bytes", bytes.len());
    let (p, s) = parse(bytes[..8].try_into().unwrap());
    assert_eq!(
        bytes,
        message(p, s, bytes.len() > 8),
        "message {p}/{s} is torn"
    );
    (p, s)
}

/// Puts `msg`, yielding to the scheduler while the ring is full, and repairing it
/// (as a real wait does on its stall checks) once `stalled` says a peer is gone.
fn put(ring: &Ring, msg: &[u8], stalled: impl Fn() -> bool) {
    loop {
        match ring.try_push(msg) {
            Ok(()) => return,
            Err(PushError::Full) => {
                if stalled() {
                    ring.repair();
                }
                shuttle::thread::yield_now();
            }
            Err(e) => panic!("put: {e}"),
        }
    }
}

/// Checks that `got` (in the order one consumer received them) holds each producer's
/// items in increasing order.
fn assert_per_producer_order(got: &[(u64, u64)]) {
    let mut last = std::collections::HashMap::new();
    for &(p, s) in got {
        if let Some(prev) = last.insert(p, s) {
            assert!(s > prev, "producer {p}: item {s} after {prev}: {got:?}");
        }
    }
}

/// The kill tests are worth something only if victims do die: in most executions
/// the kill step comes before the victim's work is done.
/// Checked per test mode, over its executions under both schedulers.
fn assert_killed_some(kills: &AtomicU64, mode: &str) {
    let kills = kills.load(Ordering::Relaxed);
    assert!(
        kills as usize > iterations() / 2,
        "{mode}: only {kills} of {} executions killed their victim",
        2 * iterations()
    );
}

/// Two producers and two consumers: every item is delivered exactly once, and each
/// consumer sees each producer's items in order. Capacity 3 (not a power of two)
/// makes the ring wrap and fill within a few items.
#[test]
fn two_producers_two_consumers_deliver_every_item_once_in_order() {
    const ITEMS: u64 = 3;
    check(|| {
        let (mem, ring) = mpmc(3);
        let taken = Arc::new(AtomicU64::new(0));
        let producers: Vec<_> = (1..=2u64)
            .map(|p| {
                let mem = mem.clone();
                model::spawn(move || {
                    let _mem = mem;
                    for s in 0..ITEMS {
                        put(&ring, &item(p, s), || false);
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (mem, taken) = (mem.clone(), taken.clone());
                model::spawn(move || {
                    let _mem = mem;
                    let mut got = Vec::new();
                    while taken.load(Ordering::SeqCst) < 2 * ITEMS {
                        let mut out = [0u8; 8];
                        match ring.try_pop_into(&mut out) {
                            Ok(8) => {
                                got.push(parse(out));
                                taken.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(n) => panic!("a message of {n} bytes"),
                            Err(PopError::Empty) => shuttle::thread::yield_now(),
                            Err(e) => panic!("get: {e}"),
                        }
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap().unwrap();
        }
        let mut all = Vec::new();
        for c in consumers {
            let got = c.join().unwrap().unwrap();
            assert_per_producer_order(&got);
            all.extend(got);
        }
        all.sort_unstable();
        let want: Vec<_> = (1..=2)
            .flat_map(|p| (0..ITEMS).map(move |s| (p, s)))
            .collect();
        assert_eq!(all, want);
        assert!(ring.is_empty());
    });
}

/// What one consumer collects: it repairs the ring whenever it finds it empty once
/// `stalled` says a peer is gone (as a real wait does on its stall checks), and
/// stops when `done` says every producer is gone and a repair leaves nothing more
/// to take.
fn drain(ring: &Ring, stalled: impl Fn() -> bool, done: impl Fn() -> bool) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    let mut out = [0u8; 64];
    loop {
        match ring.try_pop_into(&mut out) {
            Ok(n) => got.push(check_message(&out[..n])),
            Err(PopError::Empty) if !done() && stalled() => {
                ring.repair();
                shuttle::thread::yield_now();
            }
            Err(PopError::Empty) if done() => {
                ring.repair();
                match ring.try_pop_into(&mut out) {
                    Ok(n) => got.push(check_message(&out[..n])),
                    Err(PopError::Empty) => return got,
                    Err(e) => panic!("get after repair: {e}"),
                }
            }
            Err(PopError::Empty) => shuttle::thread::yield_now(),
            Err(e) => panic!("get: {e}"),
        }
    }
}

/// The ring still works for everyone: a put and a get go through, and nothing is
/// left in it.
fn assert_ring_works(ring: &Ring) {
    ring.repair();
    ring.try_push(&item(9, 9)).expect("put after the kill");
    let mut out = [0u8; 8];
    assert_eq!(ring.try_pop_into(&mut out), Ok(8));
    assert_eq!(parse(out), (9, 9));
    assert!(ring.is_empty(), "slots left in use: {}", ring.len());
}

/// How the victim producer of [`a_producer_killed_at_any_step_never_wedges_the_consumer`]
/// puts its items, and where its kill window starts.
#[derive(Clone, Copy, Debug)]
enum Victim {
    /// One-slot items, one claim each.
    Single,
    /// One-slot items in runs, one claim per run (`try_push_slice`).
    Runs,
    /// Messages of two or three slots, which wrap the ring through SKIP entries.
    Spans,
    /// One-slot items, killed anywhere from its first step on: while it claims its
    /// record too.
    FromFirstStep,
}

/// A producer killed before a random one of its atomic steps never wedges the consumer:
/// the survivor's items all arrive once, intact and in order; of the victim's, every
/// put that returned arrives, nothing arrives twice, torn, or out of order; the ring
/// works afterwards and holds nothing.
#[test]
fn a_producer_killed_at_any_step_never_wedges_the_consumer() {
    for mode in [
        Victim::Single,
        Victim::Runs,
        Victim::Spans,
        Victim::FromFirstStep,
    ] {
        let kills = Arc::new(AtomicU64::new(0));
        let counter = kills.clone();
        check(move || {
            let spans = matches!(mode, Victim::Spans);
            let (mem, ring) = mpmc(if spans { 5 } else { 4 });
            let victim_done = Arc::new(Mutex::new(Vec::new()));
            let (victim_id, survivor_id) = (1, 2); // spawned in this order
            let victim = {
                let (mem, done) = (mem.clone(), victim_done.clone());
                model::spawn(move || {
                    let _mem = mem;
                    if let Victim::FromFirstStep = mode {
                        // Claiming a record scans the 128 records: ~260 steps.
                        model::kill_at(model::me(), thread_rng().gen_range(1..=400));
                    } else {
                        ring.repair(); // claims this thread's record first
                        model::kill_at(model::me(), thread_rng().gen_range(1..=60));
                    }
                    if let Victim::Runs = mode {
                        let items: Vec<u8> = (0..4).flat_map(|s| item(1, s)).collect();
                        let mut sent = 0;
                        while sent < 4 {
                            match ring.try_push_slice(&items[sent * 8..], 8) {
                                Ok(n) => {
                                    done.lock().unwrap().extend(sent as u64..(sent + n) as u64);
                                    sent += n;
                                }
                                Err(e) => panic!("put_many: {e}"),
                            }
                            shuttle::thread::yield_now();
                        }
                    } else {
                        for s in 0..4 {
                            put(&ring, &message(1, s, spans), || false);
                            done.lock().unwrap().push(s);
                        }
                    }
                })
            };
            let survivor = spawn_on(&mem, move || {
                for s in 0..3 {
                    put(&ring, &message(2, s, spans), || model::gone(victim_id));
                }
            });
            let consumer = spawn_on(&mem, move || {
                drain(
                    &ring,
                    || model::gone(victim_id),
                    || model::gone(victim_id) && model::gone(survivor_id),
                )
            });
            if victim.join().unwrap().is_none() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            survivor.join().unwrap().unwrap();
            let got = consumer.join().unwrap().unwrap();
            assert_per_producer_order(&got);
            let from = |p| got.iter().filter(move |(q, _)| *q == p).map(|&(_, s)| s);
            assert_eq!(from(2).collect::<Vec<_>>(), vec![0, 1, 2], "{mode:?}");
            let victims: Vec<u64> = from(1).collect();
            let unique: HashSet<u64> = victims.iter().copied().collect();
            assert_eq!(
                unique.len(),
                victims.len(),
                "{mode:?}: delivered twice: {victims:?}"
            );
            for s in victim_done.lock().unwrap().iter() {
                assert!(
                    victims.contains(s),
                    "{mode:?}: item {s} was put but lost: {got:?}"
                );
            }
            assert_ring_works(&ring);
        });
        assert_killed_some(&kills, &format!("{mode:?}"));
    }
}

/// A consumer killed before a random one of its atomic steps never wedges the producer
/// (the small rings need every slot back): the survivor and the victim's completed
/// gets together miss at most what the victim died holding — one message, or one run
/// of items taken with one CAS — and nothing is delivered twice or torn.
#[test]
fn a_consumer_killed_at_any_step_loses_at_most_its_take() {
    const ITEMS: u64 = 6;
    // (victim takes runs, messages span slots, capacity)
    for (runs, spans, capacity) in [(false, false, 2), (true, false, 3), (false, true, 5)] {
        let kills = Arc::new(AtomicU64::new(0));
        let counter = kills.clone();
        check(move || {
            let (mem, ring) = mpmc(capacity);
            let victim_got = Arc::new(Mutex::new(Vec::new()));
            let (victim_id, producer_id) = (1, 3); // spawned in this order
            let victim = {
                let (mem, got) = (mem.clone(), victim_got.clone());
                model::spawn(move || {
                    let _mem = mem;
                    ring.repair(); // claims this thread's record first
                    model::kill_at(model::me(), thread_rng().gen_range(1..=60));
                    let mut out = [0u8; 64];
                    loop {
                        let taken = if runs {
                            let n = ring.try_pop_slice(&mut out, 8);
                            let items = out[..n * 8].chunks(8).map(check_message);
                            got.lock().unwrap().extend(items);
                            n > 0
                        } else {
                            match ring.try_pop_into(&mut out) {
                                Ok(n) => {
                                    got.lock().unwrap().push(check_message(&out[..n]));
                                    true
                                }
                                Err(PopError::Empty) => false,
                                Err(e) => panic!("get: {e}"),
                            }
                        };
                        if !taken {
                            if model::gone(producer_id) {
                                return;
                            }
                            shuttle::thread::yield_now();
                        }
                    }
                })
            };
            let survivor = spawn_on(&mem, move || {
                drain(
                    &ring,
                    || model::gone(victim_id),
                    || model::gone(producer_id) && model::gone(victim_id),
                )
            });
            let producer = spawn_on(&mem, move || {
                for s in 0..ITEMS {
                    put(&ring, &message(1, s, spans), || model::gone(victim_id));
                }
            });
            producer.join().unwrap().unwrap();
            if victim.join().unwrap().is_none() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            let got = survivor.join().unwrap().unwrap();
            assert_per_producer_order(&got);
            let mut all: Vec<u64> = got.iter().map(|&(_, s)| s).collect();
            all.extend(victim_got.lock().unwrap().iter().map(|&(_, s)| s));
            let unique: HashSet<u64> = all.iter().copied().collect();
            assert_eq!(unique.len(), all.len(), "delivered twice: {all:?}");
            let may_lose = if runs { capacity } else { 1 };
            assert!(
                all.len() as u64 >= ITEMS - may_lose,
                "more than the victim's one take lost: {all:?}"
            );
            assert_ring_works(&ring);
        });
        assert_killed_some(&kills, &format!("runs {runs}, spans {spans}"));
    }
}

/// A producer holding two claims at once (guards: the older one is marked WRITING
/// with its record) or a consumer holding two takes (the older marked READING, its
/// span in the meta word), killed before a random one of its atomic steps: the others
/// never wedge, nothing is delivered twice or torn, and at most the two held
/// messages are lost. The guards sit in `ManuallyDrop`, so a kill leaves them as a
/// SIGKILL would (their drop would publish or release them).
#[test]
fn a_thread_holding_two_claims_or_two_takes_killed_at_any_step() {
    use std::mem::ManuallyDrop;
    for takes in [false, true] {
        let kills = Arc::new(AtomicU64::new(0));
        let counter = kills.clone();
        check(move || {
            let (mem, ring) = mpmc(if takes { 5 } else { 6 });
            let victim_log = Arc::new(Mutex::new(Vec::new()));
            let (victim_id, producer_id, consumer_id) = (1, 2, 3);
            let victim = {
                let (mem, log) = (mem.clone(), victim_log.clone());
                model::spawn(move || {
                    let _mem = mem;
                    ring.repair(); // claims this thread's record first
                    model::kill_at(model::me(), thread_rng().gen_range(1..=60));
                    if takes {
                        let mut held = Vec::new();
                        while held.len() < 2 {
                            match ring.try_take() {
                                Ok(slot) => {
                                    log.lock().unwrap().push(check_message(slot.bytes()));
                                    held.push(ManuallyDrop::new(slot));
                                }
                                Err(PopError::Empty) if model::gone(producer_id) => break,
                                Err(PopError::Empty) => shuttle::thread::yield_now(),
                                Err(e) => panic!("take: {e}"),
                            }
                        }
                        while let Some(slot) = held.pop() {
                            drop(ManuallyDrop::into_inner(slot));
                        }
                    } else {
                        let claim = |s| {
                            let mut slot = ring.try_claim(8).expect("room for 5 of 6");
                            slot.buf().copy_from_slice(&item(1, s));
                            ManuallyDrop::new(slot)
                        };
                        let (first, second) = (claim(0), claim(1));
                        ManuallyDrop::into_inner(second).commit();
                        log.lock().unwrap().push((1, 1));
                        ManuallyDrop::into_inner(first).commit();
                        log.lock().unwrap().push((1, 0));
                    }
                })
            };
            let producer = spawn_on(&mem, move || {
                // With takes, every other message spans slots, so the meta words
                // of one-slot messages that reuse those slots hold stale spans.
                for s in 0..if takes { 6 } else { 3 } {
                    let msg = message(2, s, takes && s % 2 == 0);
                    put(&ring, &msg, || model::gone(victim_id));
                }
            });
            let consumer = spawn_on(&mem, move || {
                drain(
                    &ring,
                    || model::gone(victim_id),
                    || model::gone(victim_id) && model::gone(producer_id),
                )
            });
            debug_assert_eq!(consumer_id, 3);
            if victim.join().unwrap().is_none() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            producer.join().unwrap().unwrap();
            let got = consumer.join().unwrap().unwrap();
            assert_per_producer_order(&got);
            let log = victim_log.lock().unwrap().clone();
            let mut all = got.clone();
            if takes {
                all.extend(log.iter().copied());
            }
            let unique: HashSet<(u64, u64)> = all.iter().copied().collect();
            assert_eq!(unique.len(), all.len(), "delivered twice: {all:?}");
            if takes {
                assert!(
                    all.len() >= 6 - 2,
                    "more than the two held takes lost: {all:?}"
                );
            } else {
                let from_producer = got.iter().filter(|(p, _)| *p == 2).count();
                assert_eq!(from_producer, 3, "the survivor's items: {got:?}");
                for committed in &log {
                    assert!(
                        got.contains(committed),
                        "committed {committed:?} lost: {got:?}"
                    );
                }
            }
            assert_ring_works(&ring);
        });
        assert_killed_some(&kills, if takes { "two takes" } else { "two claims" });
    }
}

/// A repairer killed before a random one of its atomic steps, while it frees a
/// message a dead consumer took and never released, leaves nothing the other
/// repairers cannot finish (its `ANON_ONE` mark is redone, each step being a CAS):
/// a producer that needs every slot of the ring back puts all its items, they all
/// arrive once and in order, the dead consumer's message never arrives, and the ring
/// works afterwards.
#[test]
fn a_repairer_killed_at_any_step_leaves_nothing_the_others_cannot_finish() {
    use std::mem::ManuallyDrop;
    let kills = Arc::new(AtomicU64::new(0));
    let counter = kills.clone();
    check(move || {
        let (mem, ring) = mpmc(3);
        // Thread ids, in spawn order.
        let (taker, repairer, producer) = (1, 2, 3);
        ring.try_push(&item(1, 0)).unwrap();
        // A consumer that takes the message and ends without releasing it.
        spawn_on(&mem, move || {
            let slot = ring.try_take().expect("the message is there");
            let _ = ManuallyDrop::new(slot);
        })
        .join()
        .unwrap()
        .unwrap();
        let doomed_repairer = spawn_on(&mem, move || {
            // Claims this thread's record (a run of no items takes nothing), so the
            // kill window covers the repair: ~270 steps to free one taken message
            // (every record's consumer intent is read).
            ring.try_pop_slice(&mut [], 8);
            model::kill_at(model::me(), thread_rng().gen_range(1..=300));
            ring.repair();
        });
        let survivor_producer = spawn_on(&mem, move || {
            // Four items through three slots: the dead consumer's slot is needed.
            // Repairs only once the doomed repairer is gone: it must be the one to
            // start freeing the taken message.
            for s in 0..4 {
                put(&ring, &item(2, s), || model::gone(repairer));
            }
        });
        let survivor_consumer = spawn_on(&mem, move || {
            drain(
                &ring,
                || model::gone(repairer),
                || model::gone(repairer) && model::gone(producer),
            )
        });
        debug_assert_eq!(taker, 1);
        if doomed_repairer.join().unwrap().is_none() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        survivor_producer.join().unwrap().unwrap();
        let got = survivor_consumer.join().unwrap().unwrap();
        assert_eq!(got, (0..4).map(|s| (2, s)).collect::<Vec<_>>());
        assert_ring_works(&ring);
    });
    assert_killed_some(&kills, "repairer");
}

/// The SPSC byte ring: a writer streams records of every size (so records pad at the
/// end of the ring) to a reader, which gets each exactly once, intact, in order.
#[test]
fn spsc_records_arrive_intact_in_order() {
    check(|| {
        let cap = 256;
        let len = Spsc::bytes_for(cap).unwrap();
        let mem = Arc::new(Mem::new(len).unwrap());
        // SAFETY: fresh zeroed memory of len bytes, kept alive by the Arc both
        // threads hold, used only through this ring.
        let ring = unsafe { Spsc::attach(mem.ptr(), len, cap) }.unwrap();
        let sizes = [0usize, 8, 40, 3, 48, 17, 33];
        assert_eq!(ring.max_fragment(), 48);
        let writer = spawn_on(&mem, move || {
            let w = ring.writer();
            for (i, &n) in sizes.iter().enumerate() {
                let msg = vec![i as u8 + 1; n];
                while !w.try_write(&msg, FIRST) {
                    shuttle::thread::yield_now();
                }
            }
        });
        let reader = spawn_on(&mem, move || {
            let r = ring.reader();
            let mut got = Vec::new();
            while got.len() < sizes.len() {
                match r.peek() {
                    Ok(Some(rec)) => {
                        let mut v = Vec::new();
                        r.append_to(&rec, &mut v);
                        got.push(v);
                        r.consume(&rec);
                    }
                    Ok(None) => shuttle::thread::yield_now(),
                    Err(e) => panic!("peek: {e}"),
                }
            }
            got
        });
        writer.join().unwrap().unwrap();
        let got = reader.join().unwrap().unwrap();
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(got[i], vec![i as u8 + 1; n], "record {i}");
        }
        drop(mem);
    });
}
