//! The object skeleton: every object gets the same constructors and segment controls
//! (`create_with` a mode, `open_with`, `open_or_create`, `persist`) from `Object`,
//! across real processes.

mod common;

use common::TestName;
use shmproc::segment::{CreateOptions, OpenError, OpenOptions, OpenOrCreateError, Segment};
use shmproc::sync::{Barrier, Event, Lock, Semaphore};
use shmproc::value::{Array, ArrayInit, Value};
use shmproc::{Object, Process};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn exactly_one_of_racing_processes_creates_and_all_share_it() {
    let name = TestName::new("obj-race");
    let children: Vec<Process> = (0..6)
        .map(|_| {
            let name = name.0.clone();
            Process::spawn_returning(move || -> i32 {
                match Semaphore::open_or_create(&name, 0) {
                    Ok((sem, created)) => {
                        let _ = sem.release();
                        // Keep the name for the parent: the creator's drop unlinks it.
                        sem.persist();
                        i32::from(created)
                    }
                    Err(e) => {
                        eprintln!("open_or_create: {e}");
                        2
                    }
                }
            })
            .unwrap()
        })
        .collect();
    let mut created = 0;
    for mut child in children {
        let code = child.join().unwrap().code();
        assert!(code == 0 || code == 1, "child failed: {code}");
        created += code;
    }
    assert_eq!(created, 1);
    let sem = Semaphore::open(&name).unwrap();
    assert_eq!(sem.value(), 6);
}

#[test]
fn create_with_applies_the_mode_and_persist_keeps_the_name() {
    let name = TestName::new("obj-mode");
    let lock = Lock::create_with(&name, (), CreateOptions::new().mode(0o640)).unwrap();
    let mode = std::fs::metadata(name.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let clone = lock.clone();
    clone.persist();
    drop(lock);
    drop(clone);
    assert!(std::path::Path::new(&name.path()).exists());
    // Opened again: the same object, still usable.
    let again = Lock::open_with(&name, OpenOptions::new().timeout(Duration::from_secs(5))).unwrap();
    assert!(!again.locked());
    drop(again);
    Segment::remove(&name).unwrap();
}

#[test]
fn open_or_create_and_open_with_name_both_sides_of_a_mismatch() {
    let name = TestName::new("obj-kind");
    let (_event, created) = Event::open_or_create(&name, ()).unwrap();
    assert!(created);
    match Lock::open_with(&name, OpenOptions::new()) {
        Err(OpenError::WrongKind {
            expected, found, ..
        }) => {
            assert_eq!(
                (expected.to_string(), found.to_string()),
                ("Lock".into(), "Event".into())
            );
        }
        other => panic!("{other:?}"),
    }
    match Barrier::open_or_create(&name, 3) {
        Err(OpenOrCreateError::Open(OpenError::WrongKind { .. })) => {}
        other => panic!("{other:?}"),
    }

    let values = TestName::new("obj-type");
    let (_v, _) = Value::<u64>::open_or_create(&values, 7).unwrap();
    let err = Value::<u32>::open_or_create(&values, 7).unwrap_err();
    assert!(
        err.to_string().contains("u32") && err.to_string().contains("u64"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_errors_through_every_constructor() {
    let name = TestName::new("obj-args");
    assert!(Barrier::create_anonymous(0).is_err());
    assert!(Barrier::create_with(&name, 0, CreateOptions::new()).is_err());
    assert!(matches!(
        Barrier::open_or_create(&name, 0),
        Err(OpenOrCreateError::Create(_))
    ));
    assert!(!std::path::Path::new(&name.path()).exists());
    let arr = Array::<u16>::create_anonymous(ArrayInit::Copy(&[1, 2, 3])).unwrap();
    assert_eq!(arr.to_vec().unwrap(), [1, 2, 3]);
}

#[test]
fn queues_and_pipes_share_the_skeleton() {
    use shmproc::{ByteQueue, Connection, Queue};
    let name = TestName::new("obj-queue");
    let q = Queue::<u32>::create_with(&name, 8, CreateOptions::new().mode(0o640)).unwrap();
    let mode = std::fs::metadata(name.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // An opener of another item type or another queue flavour is told both sides.
    let err = Queue::<u64>::open(&name).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::IncompatibleLayout {
                what: "element type",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(ByteQueue::open(&name).is_err());
    let (again, created) = Queue::<u32>::open_or_create(&name, 8).unwrap();
    assert!(!created);
    q.put(7).unwrap();
    assert_eq!(again.get().unwrap(), 7);

    // A named pipe: the creator holds the first end, an opener (here a child) the second.
    let pipe = TestName::new("obj-pipe");
    let (first, created) = Connection::open_or_create(&pipe, (4096, true)).unwrap();
    assert!(created);
    let child_name = pipe.0.clone();
    let mut child = Process::spawn_returning(move || -> i32 {
        let Ok((second, created)) = Connection::open_or_create(&child_name, (4096, true)) else {
            return 1;
        };
        if created {
            return 2;
        }
        match second.recv::<u64>() {
            Ok(v) if second.send(&(v + 1)).is_ok() => 0,
            _ => 3,
        }
    })
    .unwrap();
    first.send(&41u64).unwrap();
    assert_eq!(first.recv::<u64>().unwrap(), 42);
    assert_eq!(child.join().unwrap().code(), 0);
}
