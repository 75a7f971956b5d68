//! Value, Array, RawValue and RawArray across real processes.

mod common;

use common::{Children, TestName, Words, join_or_kill, wait_for};
use shmproc::Process;
use shmproc::layout::header::ObjectKind;
use shmproc::segment::OpenError;
use shmproc::sync::AcquireError;
use shmproc::value::{Array, Pod, RawArray, RawValue, Value, Zeroable};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn a_child_doubles_values_and_arrays_and_the_parent_sees_them() {
    let num = Value::new(1.25f64).unwrap();
    let arr = Array::<i32>::from_slice(&[1, -2, 3, 40, 500]).unwrap();
    let raw_num = RawValue::new(21u16).unwrap();
    let raw_arr = RawArray::<u64>::from_slice(&[7, 8, 9]).unwrap();
    let mut child = Process::spawn_returning(|| -> i32 {
        let (Ok(mut n), Ok(mut a)) = (num.lock(), arr.lock()) else {
            return 1;
        };
        n.update(|n| *n *= 2.0);
        a.update(|a| a.iter_mut().for_each(|x| *x *= 2));
        raw_num.set(raw_num.get() * 2);
        for i in 0..raw_arr.len() {
            raw_arr.set(i, raw_arr.get(i).unwrap_or(0) * 2);
        }
        0
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    assert_eq!(num.get().unwrap(), 2.5);
    assert_eq!(arr.to_vec().unwrap(), [2, -4, 6, 80, 1000]);
    assert_eq!(raw_num.get(), 42);
    assert_eq!(raw_arr.to_vec(), [14, 16, 18]);
}

#[test]
fn new_arrays_are_zero_filled() {
    let arr = Array::<u64>::new(1000).unwrap();
    assert_eq!(arr.len(), 1000);
    assert!(!arr.is_empty());
    assert!(arr.lock().unwrap().to_vec().iter().all(|&x| x == 0));
    let raw = RawArray::<f32>::new(333).unwrap();
    assert_eq!(raw.to_vec(), vec![0.0; 333]);
    let empty = Array::<u8>::new(0).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.to_vec().unwrap(), Vec::<u8>::new());
    let named = TestName::new("zeros");
    let arr = Array::<i16>::create(&named, 17).unwrap();
    assert_eq!(arr.to_vec().unwrap(), vec![0; 17]);
}

#[test]
fn guards_copy_elements_and_values_in_and_out() {
    let arr = Array::<u32>::new(8).unwrap();
    {
        let mut a = arr.lock().unwrap();
        a.copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]).unwrap();
        a.update(|a| a.sort());
        assert_eq!(a.to_vec()[..3], [1, 2, 3]);
        assert_eq!((a.get(0), a.get(8)), (Some(1), None));
        assert!(a.set(7, 80) && !a.set(8, 0));
        assert!(a.copy_from_slice(&[1, 2]).is_err());
        assert_eq!(a.get(7), Some(80));
        a.set(7, 8);
    }
    assert_eq!(arr.to_vec().unwrap(), [1, 2, 3, 4, 5, 6, 7, 8]);
    let v = Value::new([0u8; 16]).unwrap();
    v.lock().unwrap().update(|x| x[3] = 9);
    v.set({
        let mut x = v.get().unwrap();
        x[4] = 10;
        x
    })
    .unwrap();
    assert_eq!(&v.get().unwrap()[..6], &[0, 0, 0, 9, 10, 0]);
    let raw = RawArray::<u8>::new(5).unwrap();
    raw.copy_from_slice(b"hello").unwrap();
    let mut out = [0u8; 5];
    raw.copy_to_slice(&mut out).unwrap();
    assert_eq!(&out, b"hello");
    assert_eq!(raw.get(5), None);
    // Out of range or of the wrong length: an answer, never a panic.
    assert!(!raw.set(5, 0));
    assert!(raw.copy_from_slice(b"hi").is_err());
    assert!(raw.copy_to_slice(&mut [0u8; 6]).is_err());
    assert_eq!(raw.load(5, std::sync::atomic::Ordering::SeqCst), None);
    assert!(!raw.store(9, 1, std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        raw.fetch_add(usize::MAX, 1, std::sync::atomic::Ordering::SeqCst),
        None
    );
    assert_eq!(
        raw.compare_exchange(
            5,
            0,
            1,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst
        ),
        None
    );
    assert_eq!(&raw.to_vec(), b"hello");
}

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
    tag: u32,
    pad: u32,
}

#[test]
fn user_structs_cross_processes() {
    let p = Value::new(Point {
        x: 1.0,
        y: 2.0,
        tag: 3,
        pad: 0,
    })
    .unwrap();
    let points = RawArray::<Point>::new(2).unwrap();
    let mut child = Process::spawn(|| {
        if let Ok(mut g) = p.lock() {
            g.update(|g| {
                g.x = -g.x;
                g.tag += 1;
            });
        }
        points.set(
            1,
            Point {
                x: 5.0,
                y: 6.0,
                tag: 7,
                pad: 0,
            },
        );
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    let got = p.get().unwrap();
    assert_eq!((got.x, got.y, got.tag), (-1.0, 2.0, 4));
    assert_eq!(points.get(1).map(|q| q.tag), Some(7));
    assert_eq!(points.get(0), Some(Point::zeroed()));
}

#[test]
fn increments_from_many_processes_are_exact() {
    const KIDS: usize = 4;
    const ROUNDS: u64 = 5_000;
    let locked = Value::new(0u64).unwrap();
    let atomic = RawValue::new(0u64).unwrap();
    let per_kid = RawArray::<u32>::new(KIDS).unwrap();
    let mut kids = Children(
        (0..KIDS)
            .map(|me| {
                let (locked, atomic, per_kid) = (&locked, &atomic, &per_kid);
                Process::spawn_returning(move || -> i32 {
                    for _ in 0..ROUNDS {
                        let Ok(mut n) = locked.lock_timeout(LONG) else {
                            return 1;
                        };
                        n.update(|n| *n += 1);
                        drop(n);
                        atomic.fetch_add(1, Ordering::Relaxed);
                        per_kid.fetch_add(me, 1, Ordering::Relaxed);
                    }
                    0
                })
                .unwrap()
            })
            .collect(),
    );
    assert_eq!(kids.join_all(), vec![0; KIDS]);
    assert_eq!(locked.get().unwrap(), KIDS as u64 * ROUNDS);
    assert_eq!(atomic.load(Ordering::SeqCst), KIDS as u64 * ROUNDS);
    assert_eq!(per_kid.to_vec(), vec![ROUNDS as u32; KIDS]);
    // The other atomic operations.
    assert_eq!(atomic.swap(5, Ordering::SeqCst), KIDS as u64 * ROUNDS);
    assert_eq!(
        atomic.compare_exchange(5, 6, Ordering::SeqCst, Ordering::SeqCst),
        Ok(5)
    );
    assert_eq!(
        atomic.compare_exchange(5, 7, Ordering::SeqCst, Ordering::SeqCst),
        Err(6)
    );
    assert_eq!(atomic.fetch_sub(1, Ordering::SeqCst), 6);
    atomic.store(0, Ordering::SeqCst);
    assert_eq!(atomic.fetch_sub(1, Ordering::SeqCst), 0, "wrapping");
    assert_eq!(atomic.load(Ordering::SeqCst), u64::MAX);
    let signed = RawArray::<i8>::from_slice(&[-1, 127]).unwrap();
    assert_eq!(signed.fetch_add(1, 1, Ordering::SeqCst), Some(127));
    assert_eq!(signed.load(1, Ordering::SeqCst), Some(-128));
    assert_eq!(signed.swap(0, 4, Ordering::SeqCst), Some(-1));
}

#[test]
fn opening_checks_type_length_and_lock() {
    let name = TestName::new("value");
    let v = Value::<u64>::create(&name, 7).unwrap();
    assert_eq!(v.name(), Some(&*name.0));
    let e = Value::<u32>::open(&name).unwrap_err();
    match &e {
        OpenError::IncompatibleLayout {
            what,
            expected,
            found,
            ..
        } => {
            assert_eq!(*what, "element type");
            assert!(expected.starts_with("u32"), "{expected}");
            assert!(found.starts_with("u64"), "{found}");
        }
        other => panic!("expected IncompatibleLayout, got {other}"),
    }
    let text = e.to_string();
    assert!(text.contains("u32") && text.contains("u64"), "{text}");
    let e = RawValue::<u64>::open(&name).unwrap_err();
    assert!(
        matches!(e, OpenError::IncompatibleLayout { what: "lock", .. }),
        "{e}"
    );
    assert!(matches!(
        Array::<u64>::open(&name),
        Err(OpenError::WrongKind {
            expected: ObjectKind::Array,
            found: ObjectKind::Value,
            ..
        })
    ));
    let child_name = name.0.clone();
    let mut child = Process::spawn_returning(move || -> i32 {
        let Ok(v) = Value::<u64>::open(&child_name) else {
            return 2;
        };
        match v.get() {
            Ok(7) => v.set(8).map_or(4, |()| 0),
            _ => 3,
        }
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    assert_eq!(v.get().unwrap(), 8);

    let arr_name = TestName::new("array");
    let _arr = Array::<f32>::create_from_slice(&arr_name, &[1.0, 2.0, 3.0]).unwrap();
    let opened = Array::<f32>::open(&arr_name).unwrap();
    assert_eq!(opened.len(), 3);
    assert_eq!(opened.to_vec().unwrap(), [1.0, 2.0, 3.0]);
    assert!(RawArray::<f32>::open(&arr_name).is_err());
    assert!(
        Array::<u32>::open(&arr_name).is_err(),
        "same size, other type"
    );

    let raw_name = TestName::new("rawarray");
    let _raw = RawArray::<u16>::create_from_slice(&raw_name, &[4, 5]).unwrap();
    assert_eq!(RawArray::<u16>::open(&raw_name).unwrap().to_vec(), [4, 5]);
    let raw_value = TestName::new("rawvalue");
    let _rv = RawValue::<i64>::create(&raw_value, -3).unwrap();
    assert_eq!(RawValue::<i64>::open(&raw_value).unwrap().get(), -3);
    assert!(Value::<i64>::open(&raw_value).is_err());
}

#[test]
fn a_value_whose_holder_died_reports_owner_died() {
    let v = Value::new([0u32; 4]).unwrap();
    let words = Words::new(1);
    let mut child = Process::spawn(|| {
        if let Ok(mut g) = v.lock() {
            // Half-way through an update that should keep all four equal.
            g.update(|g| {
                g[0] = 1;
                g[1] = 1;
            });
            words.at(0).store(1, Ordering::SeqCst);
            std::mem::forget(g);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    })
    .unwrap();
    wait_for("the child to lock", || {
        words.at(0).load(Ordering::SeqCst) == 1
    });
    assert!(matches!(v.try_lock(), Err(AcquireError::WouldBlock)));
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert!(matches!(
        v.lock_timeout(timeout),
        Err(AcquireError::Timeout)
    ));
    assert!(start.elapsed() >= timeout);
    child.kill().unwrap();
    assert_eq!(join_or_kill(&mut child), -9);
    // get() does not hand out a value the dead holder may have left half-written.
    assert!(matches!(v.get(), Err(AcquireError::OwnerDied(()))));
    let Err(AcquireError::OwnerDied(mut g)) = v.lock_timeout(LONG) else {
        panic!("the repair duty was lost");
    };
    assert!(!g.is_consistent());
    assert_eq!(g.get(), [1, 1, 0, 0]);
    g.set([1; 4]); // finish the update
    g.mark_consistent();
    drop(g);
    assert_eq!(v.get().unwrap(), [1; 4]);
    assert!(v.get_lock().is_consistent());
}

#[test]
fn a_value_lock_is_a_lock() {
    let v = Value::new(0u8).unwrap();
    let g = v.get_lock().acquire().unwrap();
    assert!(v.get_lock().locked());
    assert!(matches!(v.try_lock(), Err(AcquireError::WouldBlock)));
    drop(g);
    assert!(v.try_lock().is_ok());
}

#[test]
fn absurd_lengths_are_invalid_arguments_not_panics() {
    use shmproc::segment::CreateError;
    // In a child, so a panic (or an abort) would show as its exit code.
    let mut child = Process::spawn_returning(|| -> i32 {
        let max = isize::MAX as usize / 8 - 32; // u64s after a 256-byte lock
        for len in [usize::MAX, usize::MAX / 8 + 1, max + 1] {
            match Array::<u64>::new(len) {
                Err(CreateError::InvalidArgument(why)) if why.contains(&max.to_string()) => {}
                _ => return 1,
            }
        }
        if !matches!(
            RawArray::<[u64; 4]>::new(usize::MAX / 16),
            Err(CreateError::InvalidArgument(_))
        ) {
            return 2;
        }
        let Err(e) = Array::<u8>::create("shmproc-test-never-made", usize::MAX) else {
            return 3;
        };
        if !e.to_string().contains("at most") {
            return 4;
        }
        // Zero elements are fine (Python's Array('i', 0)).
        match (Array::<u64>::new(0), RawArray::<u64>::new(0)) {
            (Ok(a), Ok(r)) if a.is_empty() && r.is_empty() => 0,
            _ => 5,
        }
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
}

#[test]
fn values_and_arrays_on_one_lock_are_updated_together_across_processes() {
    use shmproc::sync::Lock;
    use shmproc::value::AccessError;
    const KIDS: usize = 4;
    const ROUNDS: i64 = 500;
    let lock = Lock::new().unwrap();
    let (from, to) = (
        Value::with_lock(10_000i64, &lock).unwrap(),
        Value::with_lock(0i64, &lock).unwrap(),
    );
    let moves = Array::<i64>::with_lock(KIDS, &lock).unwrap();
    let seen = Array::from_slice_with_lock(&[1u8, 2, 3], &lock).unwrap();
    assert_eq!(seen.to_vec().unwrap(), [1, 2, 3]);
    for l in [
        from.get_lock(),
        to.get_lock(),
        moves.get_lock(),
        seen.get_lock(),
    ] {
        assert!(l.same_lock(&lock));
    }
    assert_eq!(from.name(), None);
    // Holding one value's lock holds them all.
    {
        let _guard = from.lock().unwrap();
        assert!(lock.locked());
        assert!(matches!(to.try_lock(), Err(AcquireError::WouldBlock)));
        assert!(matches!(moves.try_lock(), Err(AcquireError::WouldBlock)));
    }
    let mut kids = Children(
        (0..KIDS)
            .map(|me| {
                let (lock, from, to, moves) = (&lock, &from, &to, &moves);
                Process::spawn_returning(move || -> i32 {
                    for _ in 0..ROUNDS {
                        let Ok(guard) = lock.acquire_timeout(LONG) else {
                            return 1;
                        };
                        // Three objects, one hold: no process sees a move half done.
                        let (Ok(a), Ok(b), Ok(mut m)) = (
                            from.get_with(&guard),
                            to.get_with(&guard),
                            moves.to_vec_with(&guard),
                        ) else {
                            return 2;
                        };
                        if a + b != 10_000 || m.iter().sum::<i64>() != b {
                            return 3;
                        }
                        m[me] += 1;
                        let done = (
                            from.set_with(&guard, a - 1),
                            to.set_with(&guard, b + 1),
                            moves.copy_from_slice_with(&guard, &m),
                        );
                        if done != (Ok(()), Ok(()), Ok(())) {
                            return 4;
                        }
                    }
                    0
                })
                .unwrap()
            })
            .collect(),
    );
    assert_eq!(kids.join_all(), vec![0; KIDS]);
    let total = KIDS as i64 * ROUNDS;
    assert_eq!(
        (from.get().unwrap(), to.get().unwrap()),
        (10_000 - total, total)
    );
    assert_eq!(moves.to_vec().unwrap(), vec![ROUNDS; KIDS]);
    // A guard of another lock is refused, and so is a slice of the wrong length.
    let other = Lock::new().unwrap();
    let guard = other.acquire().unwrap();
    assert_eq!(from.get_with(&guard), Err(AccessError::OtherLock));
    drop(guard);
    let guard = lock.acquire().unwrap();
    assert_eq!(
        moves.copy_from_slice_with(&guard, &[1]),
        Err(AccessError::Length {
            expected: KIDS,
            found: 1
        })
    );
    drop(guard);
    // The values keep the lock's segment alive after the last Lock handle is gone.
    drop(lock);
    assert_eq!(to.get().unwrap(), total);
    assert!(!to.get_lock().locked());
}
