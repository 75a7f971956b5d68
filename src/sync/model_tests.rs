//! Model checks of the synchronization objects (STYLE rule 5): their words are the
//! shim's atomics and their sleeps the eventcount's, so under `--cfg shmproc_model`
//! shuttle explores the interleavings of their protocols and reports a lost wake-up
//! as a deadlock (see [`crate::wait`]'s model tests).
//!
//! Run: `RUSTFLAGS="--cfg shmproc_model" cargo test --release --lib model_tests`.

use super::Semaphore;
use crate::shim::model::{self, check};
use crate::shim::{AtomicU64, Ordering};
use std::sync::Arc;

/// Three threads share one unit of a semaphore, each taking and giving it back
/// twice through the blocking `acquire`: never two inside at once, every acquire
/// returns (no release's wake-up is lost), and the unit is back at the end.
#[test]
fn a_semaphore_of_one_admits_one_and_loses_no_wake_up() {
    check(|| {
        let sem = Arc::new(Semaphore::new(1).expect("an anonymous semaphore"));
        let inside = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (sem, inside) = (sem.clone(), inside.clone());
                model::spawn(move || {
                    for _ in 0..2 {
                        sem.acquire();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        sem.release().expect("below the maximum");
                    }
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Some(()));
        }
        assert_eq!(sem.value(), 1);
    });
}
