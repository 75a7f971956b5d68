//! List across real processes: appends from five processes, a reader following a
//! growing list, writers killed under load (every element whole, no holes, the next
//! writer finishes the dead one's operation), wrong types on open.

mod common;

use common::{Children, TestName, Words, join_or_kill};
use shmproc::dict::{DictOptions, ListError};
use shmproc::segment::OpenError;
use shmproc::{List, Object, Process};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn five_processes_append_their_procnum() {
    let l = List::<u32>::new().unwrap();
    let mut children = Children(
        (0..5)
            .map(|procnum| {
                Process::spawn_returning(|| -> i32 {
                    match l.append(procnum) {
                        Ok(()) => 0,
                        Err(_) => 1,
                    }
                })
                .unwrap()
            })
            .collect(),
    );
    assert_eq!(children.join_all(), [0; 5]);
    let mut values = l.to_vec().unwrap();
    values.sort();
    assert_eq!(values, [0, 1, 2, 3, 4]);
}

#[test]
fn a_reader_follows_a_growing_list() {
    let n: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let l = List::<u64>::new().unwrap();
    let done = Words::new(1);
    let mut children = Children(vec![
        Process::spawn_returning(|| -> i32 {
            for i in 0..n {
                if l.append(i * 2).is_err() {
                    return 1;
                }
            }
            done.at(0).store(1, Ordering::SeqCst);
            0
        })
        .unwrap(),
        Process::spawn_returning(|| -> i32 {
            let mut i = 0u64;
            loop {
                let finished = done.at(0).load(Ordering::SeqCst) == 1;
                let len = l.len() as u64;
                if len > 0 {
                    i = (i * 31 + 7) % len;
                    if l.get(i) != Ok(Some(i * 2)) {
                        return 1;
                    }
                }
                if finished {
                    return 0;
                }
            }
        })
        .unwrap(),
    ]);
    assert_eq!(children.join_all(), [0, 0]);
    assert_eq!(l.len() as u64, n);
}

/// An element that names itself: a tag and a length derived from it.
fn element(tag: u32) -> Vec<u8> {
    let len = 4 + (tag % 97) as usize;
    let mut v = tag.to_le_bytes().to_vec();
    v.extend((4..len).map(|i| (tag as usize + i) as u8));
    v
}

fn is_element(v: &[u8]) -> bool {
    v.len() >= 4 && element(u32::from_le_bytes(v[..4].try_into().unwrap())) == v
}

#[test]
fn list_writers_killed_under_load_leave_a_whole_list() {
    let rounds = if cfg!(debug_assertions) { 5 } else { 10 };
    let l = List::<Vec<u8>>::create_anonymous(DictOptions::new().max_bytes(16 << 20)).unwrap();
    l.extend((0..50).map(element)).unwrap();
    let mut rng = 99u64;
    for round in 0..rounds {
        let mut children = Children(
            (0..3u32)
                .map(|w| {
                    let l = l.clone();
                    Process::spawn(move || {
                        let mut x = u64::from(round * 10 + w) + 1;
                        let mut tag = (round * 10 + w) * 1_000_000;
                        loop {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            tag += 1;
                            let len = l.len() as u64;
                            let _ = match x % 5 {
                                0 => l.append(element(tag)),
                                1 => l.insert(x % (len + 1), element(tag)),
                                2 if len > 20 => l.remove(x % len).map(drop),
                                3 if len > 20 => l.pop().map(drop),
                                _ => l.set(x % len.max(1), element(tag)).map(drop),
                            };
                        }
                    })
                    .unwrap()
                })
                .collect(),
        );
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20 + (rng >> 33) % 60));
        for child in &children.0 {
            child.kill().unwrap();
        }
        for child in &mut children.0 {
            child.join().unwrap();
        }
        // The next writer finishes whatever was cut short; then the list is whole.
        l.append(element(7)).unwrap();
        let all = l.to_vec().unwrap();
        assert_eq!(all.len(), l.len());
        for (i, v) in all.iter().enumerate() {
            assert!(is_element(v), "round {round}: element {i} torn: {v:?}");
            assert_eq!(l.get(i as u64).unwrap().as_ref(), Some(v));
        }
        assert_eq!(l.get(all.len() as u64).unwrap(), None);
    }
}

#[test]
fn opening_a_list_with_another_type_is_a_clear_error() {
    let name = TestName::new("list-types");
    let l = List::<u64>::create(&name).unwrap();
    l.append(5).unwrap();
    match List::<u32>::open(&name) {
        Err(OpenError::IncompatibleLayout { what, .. }) => assert_eq!(what, "element type"),
        other => panic!("{other:?}"),
    }
    let mut child = Process::spawn_returning(|| -> i32 {
        match List::<u64>::open(&name).map(|l| l.to_vec()) {
            Ok(Ok(v)) if v == [5] => 0,
            _ => 1,
        }
    })
    .unwrap();
    assert_eq!(join_or_kill(&mut child), 0);
    assert!(matches!(
        l.remove(3),
        Err(ListError::IndexOutOfRange { index: 3, len: 1 })
    ));
    let rows = shmproc::inspect::object_state(l.segment());
    assert!(
        rows.iter().any(|(k, v)| *k == "length" && v == "1"),
        "{rows:?}"
    );
}

#[test]
fn remove_value_and_index_of_follow_python() {
    let l = List::<String>::new().unwrap();
    for s in ["a", "b", "c", "b"] {
        l.append(s.to_string()).unwrap();
    }
    assert_eq!(l.index_of("b".to_string()).unwrap(), Some(1));
    assert_eq!(l.index_of("z".to_string()).unwrap(), None);
    // Python's l.remove("b") removes the first "b" only.
    assert!(l.remove_value("b".to_string()).unwrap());
    assert_eq!(l.to_vec().unwrap(), ["a", "c", "b"]);
    assert!(l.remove_value("b".to_string()).unwrap());
    // Where Python raises ValueError: false, the list unchanged.
    assert!(!l.remove_value("b".to_string()).unwrap());
    assert_eq!(l.to_vec().unwrap(), ["a", "c"]);
    let n = List::<u64>::new().unwrap();
    n.extend([5, 6, 5]).unwrap();
    assert!(n.remove_value(5).unwrap());
    assert_eq!(n.to_vec().unwrap(), [6, 5]);
}
