//! The serde tier (feature `serde`): any serde value through Queue and Pipe.
#![cfg(feature = "serde")]

mod common;

use serde::{Deserialize, Serialize};
use shmproc::queue::{
    Closed, GetError, PutBytesError, SerdeGetError, SerdePutError, SerdeQueue, TryPutBytesError,
};
use shmproc::{Process, pipe};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u32,
    name: String,
    tags: Vec<String>,
    payload: Option<Vec<u8>>,
}

fn job(id: u32) -> Job {
    Job {
        id,
        name: format!("job {id}"),
        tags: (0..id % 4).map(|t| format!("t{t}")).collect(),
        payload: (id % 2 == 0).then(|| vec![id as u8; id as usize % 300]),
    }
}

#[test]
fn serde_values_cross_a_queue_between_processes() {
    let q = SerdeQueue::<Job>::new(32, 512).unwrap();
    let mut child = Process::spawn(|| {
        for id in 0..200 {
            q.put(&job(id)).unwrap();
        }
    })
    .unwrap();
    for id in 0..200 {
        assert_eq!(q.get().unwrap(), job(id));
    }
    assert!(child.join().unwrap().success());
}

#[test]
fn encoding_and_decoding_errors_are_reported_at_once() {
    // A value postcard cannot encode: a sequence of unknown length.
    struct Unsized;
    impl Serialize for Unsized {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            s.serialize_seq(None)?.end()
        }
    }
    impl<'de> Deserialize<'de> for Unsized {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Unsized)
        }
    }
    let q = SerdeQueue::<Unsized>::new(4, 16).unwrap();
    assert!(matches!(q.put(&Unsized), Err(SerdePutError::Encode(_))));
    assert!(
        matches!(q.get_nowait(), Err(SerdeGetError::Get(_))),
        "nothing was put"
    );

    // Too large for the queue: the sizes are in the error.
    let small = SerdeQueue::<Vec<u8>>::new(2, 8).unwrap();
    let err = small.put(&vec![0u8; 100]).unwrap_err();
    assert!(err.to_string().contains("at most 8"), "{err}");
}

#[test]
fn serde_values_cross_a_pipe() {
    let (a, b) = pipe(true).unwrap();
    let mut child = Process::spawn(move || {
        let j: Job = b.recv_obj().unwrap();
        b.send_obj(&(j.id + 1, j.name)).unwrap();
    })
    .unwrap();
    a.send_obj(&job(41)).unwrap();
    assert_eq!(
        a.recv_obj::<(u32, String)>().unwrap(),
        (42, "job 41".to_string())
    );
    assert!(child.join().unwrap().success());
}

#[test]
fn a_named_serde_queue_checks_the_value_type() {
    let name = common::TestName::new("serde");
    let q = SerdeQueue::<Job>::create(&name, 8, 64).unwrap();
    q.put(&job(3)).unwrap();
    assert_eq!(
        SerdeQueue::<Job>::open(&name).unwrap().get().unwrap(),
        job(3)
    );
    let err = SerdeQueue::<u32>::open(&name).unwrap_err().to_string();
    assert!(
        err.contains("serde u32") && err.contains("serde::Job"),
        "{err}"
    );
}

#[test]
fn a_serde_queue_is_sized_in_values() {
    // Values of different lengths each count one: qsize and full count values.
    let q = SerdeQueue::<Vec<u8>>::new(3, 64).unwrap();
    assert_eq!((q.maxsize(), q.max_item_size()), (3, 64));
    let mut child = Process::spawn(|| {
        for len in [0usize, 30, 60] {
            q.put(&vec![1u8; len]).unwrap();
        }
    })
    .unwrap();
    assert!(child.join().unwrap().success());
    assert_eq!(
        (q.qsize(), q.full(), q.empty()),
        (Ok(3), Ok(true), Ok(false))
    );
    assert!(matches!(
        q.put_nowait(&vec![]),
        Err(SerdePutError::Put(TryPutBytesError::Full))
    ));
    assert_eq!(q.get().unwrap().len(), 0);
    assert_eq!((q.qsize(), q.full()), (Ok(2), Ok(false)));
    // An encoding longer than one value's room is refused, naming both sizes.
    let err = q.put(&vec![0u8; 100]).unwrap_err();
    assert!(
        matches!(
            err,
            SerdePutError::Put(PutBytesError::TooLarge { max: 64, .. })
        ),
        "{err}"
    );
    // Shutdown and close, as for Queue.
    q.shutdown(false);
    assert!(matches!(
        q.put(&vec![]),
        Err(SerdePutError::Put(PutBytesError::ShutDown))
    ));
    assert_eq!(q.get().unwrap().len(), 30);
    assert_eq!(q.get().unwrap().len(), 60);
    assert_eq!(q.get(), Err(SerdeGetError::Get(GetError::ShutDown)));
    q.close();
    assert_eq!(
        (q.closed(), q.qsize(), q.full()),
        (true, Err(Closed), Err(Closed))
    );
    // maxsize 0: the documented default.
    let d = SerdeQueue::<u8>::new(0, 8).unwrap();
    assert_eq!(d.maxsize(), shmproc::queue::UNBOUNDED_MAXSIZE);
}
